"""Stand-in for the parts of Klipper that klipper/panda_bridge.py touches.

Written from reading Klipper's source (upstream and the Snapmaker U1 fork at
/work/.mirror); no Klipper code is copied.  Each class names the Klipper file
whose behaviour it reproduces.  Where the two trees differ, the stricter
behaviour is used and the difference noted.
"""
import ast, configparser, math, os, re, select, time, types

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))


def load_extra():
    """Import klipper/panda_bridge.py the way klippy imports extras."""
    path = os.path.join(REPO, 'klipper', 'panda_bridge.py')
    mod = types.ModuleType('extras.panda_bridge')
    mod.__file__ = path
    with open(path) as f:   # compiled here: no __pycache__ in klipper/
        exec(compile(f.read(), path, 'exec'), mod.__dict__)
    return mod


class CommandError(Exception):
    """gcode.py: CommandError (printer.command_error)."""


ConfigError = configparser.Error  # configfile.py: error = configparser.Error


class PauseInCallback(Exception):
    """A module paused inside a reactor callback where that is not allowed."""


######################################################################
# klippy/reactor.py
######################################################################

class Timer:
    def __init__(self, callback, waketime):
        self.callback = callback
        self.waketime = waketime
        self.running = False


class FdHandler:
    def __init__(self, fd, read_callback, write_callback):
        self.fd = fd
        self.read_callback = read_callback
        self.write_callback = write_callback


class Reactor:
    """PollReactor: real fds through select.poll, timers on time.monotonic.

    pause() runs the loop until the waketime; tests use it as the main loop.
    Modules must not pause inside their own callbacks (get_status, shutdown
    handlers, fd and timer callbacks); the stand-in raises if they do.
    """
    NOW = 0.
    NEVER = 9999999999999999.

    def __init__(self):
        self.monotonic = time.monotonic
        self._timers = []
        self._fds = {}
        self._poll = select.poll()
        self._depth = 0
        self.stopped = False   # a hung/killed klippy: nothing dispatches

    # Timers
    def register_timer(self, callback, waketime=NEVER):
        timer = Timer(callback, waketime)
        self._timers = self._timers + [timer]
        return timer

    def unregister_timer(self, timer):
        timer.waketime = self.NEVER
        self._timers = [t for t in self._timers if t is not timer]

    def update_timer(self, timer, waketime):
        # upstream ignores an update made from the timer's own callback (the
        # callback's return value decides); the U1 fork then overwrites it
        # with the return value too, so both behave the same
        if timer.running:
            return
        timer.waketime = waketime

    # File descriptors: POLLIN|POLLHUP -> read callback, POLLOUT -> write
    def register_fd(self, fd, read_callback, write_callback=None):
        hdl = FdHandler(fd, read_callback, write_callback)
        self._fds[fd] = hdl
        self._poll.register(fd, select.POLLIN | select.POLLHUP)
        return hdl

    def unregister_fd(self, hdl):
        self._poll.unregister(hdl.fd)
        del self._fds[hdl.fd]

    def set_fd_wake(self, hdl, is_readable=True, is_writeable=False):
        flags = select.POLLHUP
        if is_readable:
            flags |= select.POLLIN
        if is_writeable:
            flags |= select.POLLOUT
        self._poll.modify(hdl.fd, flags)

    # Dispatch
    def _run_timers(self, eventtime):
        for t in self._timers:
            if eventtime >= t.waketime:
                t.waketime = self.NEVER
                t.running = True
                try:
                    t.waketime = t.callback(eventtime)
                finally:
                    t.running = False

    def _run_once(self, waketime):
        self._depth += 1
        try:
            self._run_timers(self.monotonic())
            next_timer = min([t.waketime for t in self._timers] + [waketime])
            timeout = max(0., min(1., next_timer - self.monotonic()))
            events = self._poll.poll(int(math.ceil(timeout * 1000.)))
            eventtime = self.monotonic()
            for fd, event in events:
                # The U1 fork indexes its fd table directly, so an fd
                # unregistered earlier in the same batch raises KeyError
                # (upstream falls back to a dummy handler); be strict here
                if event & (select.POLLIN | select.POLLHUP):
                    self._fds[fd].read_callback(eventtime)
                if event & select.POLLOUT:
                    self._fds[fd].write_callback(eventtime)
            self._run_timers(self.monotonic())
        finally:
            self._depth -= 1

    def pause(self, waketime):
        if self._depth:
            raise PauseInCallback("reactor.pause() called from a callback")
        while True:
            now = self.monotonic()
            if now >= waketime:
                return now
            if self.stopped:
                time.sleep(min(.05, waketime - now))
            else:
                self._run_once(waketime)

    def run_until(self, predicate, timeout):
        """Run the loop until predicate() is true; False on timeout."""
        end = self.monotonic() + timeout
        while not predicate():
            if self.monotonic() >= end:
                return False
            self.pause(min(end, self.monotonic() + .01))
        return True

    def assert_no_pause(self):
        reactor = self

        class NoPause:
            def __enter__(self):
                reactor._depth += 1

            def __exit__(self, *args):
                reactor._depth -= 1
        return NoPause()


######################################################################
# klippy/configfile.py
######################################################################

class sentinel:
    pass


def parse_config(text):
    """configfile.py: everything after '#' is dropped, then RawConfigParser
    with strict=False and inline ';'/'#' comments."""
    lines = [line.split('#', 1)[0] for line in text.split('\n')]
    fileconfig = configparser.RawConfigParser(
        strict=False, inline_comment_prefixes=(';', '#'))
    fileconfig.read_string('\n'.join(lines))
    return fileconfig


class ConfigWrapper:
    error = ConfigError

    def __init__(self, printer, fileconfig, access, section):
        self.printer = printer
        self.fileconfig = fileconfig
        self.access = access
        self.section = section

    def get_printer(self):
        return self.printer

    def get_name(self):
        return self.section

    def _get(self, parser, option, default, minval=None, maxval=None,
             above=None, below=None):
        # ConfigWrapper._get_wrapper: missing -> default or error; parse
        # failure -> "Unable to parse"; then the bound checks in this order
        if not self.fileconfig.has_option(self.section, option):
            if default is not sentinel:
                if default is not None:
                    self.access[(self.section.lower(), option.lower())] = 1
                return default
            raise ConfigError("Option '%s' in section '%s' must be specified"
                              % (option, self.section))
        try:
            v = parser(self.section, option)
        except Exception:
            raise ConfigError("Unable to parse option '%s' in section '%s'"
                              % (option, self.section))
        self.access[(self.section.lower(), option.lower())] = 1
        for bad, what, limit in ((minval is not None and v < minval,
                                  "have minimum of", minval),
                                 (maxval is not None and v > maxval,
                                  "have maximum of", maxval),
                                 (above is not None and v <= above,
                                  "be above", above),
                                 (below is not None and v >= below,
                                  "be below", below)):
            if bad:
                raise ConfigError("Option '%s' in section '%s' must %s %s"
                                  % (option, self.section, what, limit))
        return v

    def get(self, option, default=sentinel):
        return self._get(self.fileconfig.get, option, default)

    def getint(self, option, default=sentinel, minval=None, maxval=None):
        return self._get(self.fileconfig.getint, option, default,
                         minval, maxval)

    def getfloat(self, option, default=sentinel, minval=None, maxval=None,
                 above=None, below=None):
        return self._get(self.fileconfig.getfloat, option, default,
                         minval, maxval, above, below)

    def getboolean(self, option, default=sentinel):
        return self._get(self.fileconfig.getboolean, option, default)

    def getchoice(self, option, choices, default=sentinel):
        if isinstance(choices, list):
            choices = {c: c for c in choices}
        c = self.get(option, default)
        if c not in choices:
            raise ConfigError("Choice '%s' for option '%s' in section '%s'"
                              " is not a valid choice"
                              % (c, option, self.section))
        return choices[c]

    def getsection(self, section):
        return ConfigWrapper(self.printer, self.fileconfig, self.access,
                             section)

    def has_section(self, section):
        return self.fileconfig.has_section(section)

    def get_prefix_sections(self, prefix):
        return [self.getsection(s) for s in self.fileconfig.sections()
                if s.startswith(prefix)]

    def get_prefix_options(self, prefix):
        return [o for o in self.fileconfig.options(self.section)
                if o.startswith(prefix)]


######################################################################
# klippy/gcode.py
######################################################################

class GCodeCommand:
    error = CommandError

    def __init__(self, gcode, command, params):
        self.gcode = gcode
        self.command = command
        self.params = params

    def get_command_parameters(self):
        return self.params

    def get(self, name, default=sentinel):
        if name not in self.params:
            if default is sentinel:
                raise CommandError("Error on '%s': missing %s"
                                   % (self.command, name))
            return default
        return self.params[name]

    def get_float(self, name, default=sentinel, minval=None, maxval=None,
                  above=None, below=None):
        v = self.get(name, default)
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise CommandError("Unable to parse '%s' as a float" % (v,))
        if ((minval is not None and v < minval)
                or (maxval is not None and v > maxval)
                or (above is not None and v <= above)
                or (below is not None and v >= below)):
            raise CommandError("Error on '%s': %s out of range"
                               % (self.command, name))
        return v

    def respond_info(self, msg):
        self.gcode.respond_info(msg)

    def respond_raw(self, msg):
        self.gcode.respond_raw(msg)


class GCode:
    """Console output capture and a small command dispatcher: traditional
    commands take letter params (M141 S45), extended ones KEY=VALUE with
    optional quotes (gcode.py: _process_commands/_get_extended_params)."""
    error = CommandError
    extended_r = re.compile(r'(\S+?)=("[^"]*"|\'[^\']*\'|\S*)')

    def __init__(self):
        self.output = []
        self.commands = {}
        self.mux = {}

    def register_command(self, cmd, func, when_not_ready=False, desc=None):
        self.commands[cmd.upper()] = func

    def register_mux_command(self, cmd, key, value, func, desc=None):
        prev_key, values = self.mux.setdefault(cmd, (key, {}))
        values[value] = func
        self.commands[cmd] = lambda gcmd: self._mux(cmd, gcmd)

    def _mux(self, cmd, gcmd):
        key, values = self.mux[cmd]
        value = gcmd.get(key, None)
        if value not in values:
            raise CommandError("The value '%s' is not valid for %s"
                               % (value, key))
        values[value](gcmd)

    def respond_raw(self, msg):
        self.output.append(msg)

    def respond_info(self, msg, log=True):
        lines = [l.strip() for l in msg.strip().split('\n')]
        self.respond_raw("// " + "\n// ".join(lines))

    def run_script(self, script):
        """gcode.py run_script_from_command: errors raise CommandError."""
        for line in script.split('\n'):
            line = line.split(';', 1)[0].strip()
            if not line:
                continue
            parts = line.split(None, 1)
            cmd = parts[0].upper()
            rest = parts[1] if len(parts) > 1 else ''
            if re.match(r'^[A-Z]\d+$', cmd):
                params = {w[0].upper(): w[1:] for w in rest.split()}
            else:
                params = {k.upper(): v.strip('"\'') for k, v
                          in self.extended_r.findall(rest)}
            if cmd not in self.commands:
                raise CommandError("Unknown command:\"%s\"" % (cmd,))
            self.commands[cmd](GCodeCommand(self, cmd, params))


######################################################################
# klippy/pins.py
######################################################################

class PinsError(Exception):
    """pins.py: error (klippy reports it like a config error)."""


class PrinterPins:
    error = PinsError

    def __init__(self):
        self.chips = {}
        self.active_pins = {}

    def register_chip(self, chip_name, chip):
        chip_name = chip_name.strip()
        if chip_name in self.chips:
            raise PinsError("Duplicate chip name '%s'" % (chip_name,))
        self.chips[chip_name] = chip

    def parse_pin(self, pin_desc, can_invert=False, can_pullup=False):
        desc = pin_desc.strip()
        pullup = invert = 0
        if can_pullup and desc[:1] in '^~':
            pullup = -1 if desc[0] == '~' else 1
            desc = desc[1:].strip()
        if can_invert and desc.startswith('!'):
            invert = 1
            desc = desc[1:].strip()
        chip_name, pin = 'mcu', desc
        if ':' in desc:
            chip_name, pin = [s.strip() for s in desc.split(':', 1)]
        if chip_name not in self.chips:
            raise PinsError("Unknown pin chip name '%s'" % (chip_name,))
        if any(c in pin for c in '^~!:') or ''.join(pin.split()) != pin:
            raise PinsError("Invalid pin description '%s'" % (pin_desc,))
        return {'chip': self.chips[chip_name], 'chip_name': chip_name,
                'pin': pin, 'invert': invert, 'pullup': pullup}

    def lookup_pin(self, pin_desc, can_invert=False, can_pullup=False,
                   share_type=None):
        params = self.parse_pin(pin_desc, can_invert, can_pullup)
        share_name = "%s:%s" % (params['chip_name'], params['pin'])
        if share_name in self.active_pins:
            share = self.active_pins[share_name]
            if share_type is None or share_type != share['share_type']:
                raise PinsError("pin %s used multiple times in config"
                                % (params['pin'],))
            return share
        params['share_type'] = share_type
        self.active_pins[share_name] = params
        return params

    def setup_pin(self, pin_type, pin_desc):
        can_invert = pin_type in ['endstop', 'digital_out', 'pwm']
        can_pullup = pin_type in ['endstop']
        params = self.lookup_pin(pin_desc, can_invert, can_pullup)
        return params['chip'].setup_pin(pin_type, params)


######################################################################
# klippy/mcu.py
######################################################################

class MCU:
    """Only estimated_print_time: print time runs at the host clock's rate
    from another origin (positive, as after an MCU connect), so it differs
    from reactor time."""
    PRINT_TIME_OFFSET = 1234.5

    def estimated_print_time(self, eventtime):
        return eventtime + self.PRINT_TIME_OFFSET


######################################################################
# klippy/extras/heaters.py
######################################################################

MAX_HEAT_TIME = 7.0      # U1 fork; upstream 3.0
MIN_PWM_CHANGE = 0.05


class ControlBangBang:
    """heaters.py ControlBangBang (control: watermark)."""

    def __init__(self, heater, config):
        self.heater = heater
        self.max_delta = config.getfloat('max_delta', 2.0, above=0.)
        self.heating = False

    def temperature_update(self, read_time, temp, target_temp):
        if self.heating and temp >= target_temp + self.max_delta:
            self.heating = False
        elif not self.heating and temp <= target_temp - self.max_delta:
            self.heating = True
        self.heater.set_pwm(read_time,
                            self.heater.max_power if self.heating else 0.)

    def check_busy(self, eventtime, smoothed_temp, target_temp):
        return smoothed_temp < target_temp - self.max_delta


class Heater:
    """heaters.py Heater.  U1 fork behaviour by default (it calls
    sensor.set_read_tolerance and treats readings older than 5 s as stale);
    set FLAVOUR = 'upstream' for 7 s and no set_read_tolerance."""
    FLAVOUR = 'u1'

    def __init__(self, config, sensor):
        self.printer = config.get_printer()
        self.name = config.get_name()
        self.short_name = self.name.split()[-1]
        self.sensor = sensor
        self.min_temp = config.getfloat('min_temp', minval=-273.15)
        self.max_temp = config.getfloat('max_temp', above=self.min_temp)
        sensor.setup_minmax(self.min_temp, self.max_temp)
        sensor.setup_callback(self.temperature_callback)
        if self.FLAVOUR == 'u1':
            sensor.set_read_tolerance(0.45, 0.15)
            self.stale_time = 5.
        else:
            self.stale_time = 7.
        self.pwm_delay = sensor.get_report_time_delta()
        self.min_extrude_temp = config.getfloat(
            'min_extrude_temp', 170., minval=self.min_temp,
            maxval=self.max_temp)
        self.max_power = config.getfloat('max_power', 1., above=0., maxval=1.)
        self.smooth_time = config.getfloat('smooth_time', 1., above=0.)
        self.last_temp = self.smoothed_temp = self.target_temp = 0.
        self.last_temp_time = 0.
        self.next_pwm_time = 0.
        self.last_pwm_value = 0.
        self.pwm_calls = []
        self.is_shutdown = False
        # control: pid (ControlPID) is left out; the extra needs watermark
        self.control = config.getchoice(
            'control', {'watermark': ControlBangBang})(self, config)
        ppins = self.printer.lookup_object('pins')
        self.mcu_pwm = ppins.setup_pin('pwm', config.get('heater_pin'))
        # pwm_cycle_time must not exceed the sensor's report time
        cycle = config.getfloat('pwm_cycle_time', 0.100, above=0.,
                                maxval=self.pwm_delay)
        self.mcu_pwm.setup_cycle_time(cycle)
        self.mcu_pwm.setup_max_duration(MAX_HEAT_TIME)
        self.printer.load_object(config, "verify_heater %s"
                                 % (self.short_name,))
        gcode = self.printer.lookup_object('gcode')
        gcode.register_mux_command("SET_HEATER_TEMPERATURE", "HEATER",
                                   self.short_name,
                                   self.cmd_SET_HEATER_TEMPERATURE)
        self.printer.register_event_handler("klippy:shutdown",
                                            self._handle_shutdown)

    def _handle_shutdown(self):
        self.is_shutdown = True

    def set_pwm(self, read_time, value):
        # Heater.set_pwm: forced to 0 without a target or in shutdown; a
        # change smaller than 5% of max_power is suppressed until
        # next_pwm_time, and always while the output is off
        if self.target_temp <= 0. or self.is_shutdown:
            value = 0.
        if ((read_time < self.next_pwm_time or not self.last_pwm_value)
                and abs(value - self.last_pwm_value) < MIN_PWM_CHANGE):
            return
        pwm_time = read_time + self.pwm_delay
        self.next_pwm_time = pwm_time + 0.5 * MAX_HEAT_TIME
        self.last_pwm_value = value
        self.pwm_calls.append((pwm_time, value))
        self.mcu_pwm.set_pwm(pwm_time, value)

    def temperature_callback(self, read_time, temp):
        time_diff = read_time - self.last_temp_time
        self.last_temp = temp
        self.last_temp_time = read_time
        self.control.temperature_update(read_time, temp, self.target_temp)
        adj = min(time_diff / self.smooth_time, 1.)
        self.smoothed_temp += (temp - self.smoothed_temp) * adj

    def set_temp(self, degrees):
        if degrees and (degrees < self.min_temp or degrees > self.max_temp):
            # the U1 fork prefixes the short name
            raise self.printer.command_error(
                "%sRequested temperature (%.1f) out of range (%.1f:%.1f)"
                % (self.short_name + ': ' if self.FLAVOUR == 'u1' else '',
                   degrees, self.min_temp, self.max_temp))
        self.target_temp = degrees

    def alter_target(self, target_temp):
        if target_temp:
            target_temp = max(self.min_temp, min(self.max_temp, target_temp))
        self.target_temp = target_temp

    def set_control(self, control):
        old, self.control = self.control, control
        self.target_temp = 0.
        return old

    def get_temp(self, eventtime):
        # Readings older than the stale time report 0 degrees
        print_time = self.mcu_pwm.get_mcu().estimated_print_time(eventtime)
        if self.last_temp_time < print_time - self.stale_time:
            return 0., self.target_temp
        return self.smoothed_temp, self.target_temp

    def check_busy(self, eventtime):
        return self.control.check_busy(eventtime, self.smoothed_temp,
                                       self.target_temp)

    def get_status(self, eventtime):
        return {'temperature': round(self.smoothed_temp, 2),
                'target': self.target_temp, 'power': self.last_pwm_value}

    def cmd_SET_HEATER_TEMPERATURE(self, gcmd):
        temp = gcmd.get_float('TARGET', 0.)
        self.printer.lookup_object('heaters').set_temperature(self, temp)


class PrinterHeaters:
    """heaters.py PrinterHeaters."""

    def __init__(self, config):
        self.printer = config.get_printer()
        self.sensor_factories = {}
        self.heaters = {}
        self.available_sensors = []
        self.gcode_ids = {}
        gcode = self.printer.lookup_object('gcode')
        gcode.register_command("TURN_OFF_HEATERS", self.cmd_TURN_OFF_HEATERS)
        gcode.register_command("TEMPERATURE_WAIT", self.cmd_TEMPERATURE_WAIT)

    def add_sensor_factory(self, sensor_type, factory):
        self.sensor_factories[sensor_type] = factory

    def setup_sensor(self, config):
        sensor_type = config.get('sensor_type')
        if sensor_type not in self.sensor_factories:
            raise self.printer.config_error(
                "Unknown temperature sensor '%s'" % (sensor_type,))
        return self.sensor_factories[sensor_type](config)

    def setup_heater(self, config):
        name = config.get_name().split()[-1]
        if name in self.heaters:
            raise config.error("Heater %s already registered" % (name,))
        sensor = self.setup_sensor(config)
        self.heaters[name] = heater = Heater(config, sensor)
        self.available_sensors.append(config.get_name())
        gcode_id = config.get('gcode_id', None)
        if gcode_id is not None:
            if gcode_id in self.gcode_ids:
                raise self.printer.config_error(
                    "G-Code sensor id %s already registered" % (gcode_id,))
            self.gcode_ids[gcode_id] = heater
        return heater

    def lookup_heater(self, name):
        if name not in self.heaters:
            raise self.printer.config_error("Unknown heater '%s'" % (name,))
        return self.heaters[name]

    def turn_off_all_heaters(self, print_time=0.):
        for heater in self.heaters.values():
            heater.set_temp(0.)

    def cmd_TURN_OFF_HEATERS(self, gcmd):
        self.turn_off_all_heaters()

    def set_temperature(self, heater, temp, wait=False):
        heater.set_temp(temp)

    def cmd_TEMPERATURE_WAIT(self, gcmd):
        # U1 fork: a plain command that accepts names in available_sensors
        # (full section names such as "heater_generic panda_breath")
        name = gcmd.get('SENSOR')
        if name not in self.available_sensors:
            raise gcmd.error("Unknown sensor '%s'" % (name,))
        min_temp = gcmd.get_float('MINIMUM', float('-inf'))
        max_temp = gcmd.get_float('MAXIMUM', float('inf'), above=min_temp)
        if min_temp == float('-inf') and max_temp == float('inf'):
            raise gcmd.error("Error on 'TEMPERATURE_WAIT': missing MINIMUM"
                             " or MAXIMUM.")
        heater = self.heaters[name.split()[-1]]
        reactor = self.printer.get_reactor()
        eventtime = reactor.monotonic()
        while not self.printer.is_shutdown():
            temp, target = heater.get_temp(eventtime)
            if min_temp <= temp <= max_temp:
                return
            eventtime = reactor.pause(eventtime + 1.)


class VerifyHeater:
    """verify_heater.py: only its options (defaults and bounds)."""

    def __init__(self, config):
        self.hysteresis = config.getfloat('hysteresis', 5., minval=0.)
        self.max_error = config.getfloat('max_error', 120., minval=0.)
        self.heating_gain = config.getfloat('heating_gain', 2., above=0.)
        self.check_gain_time = config.getfloat('check_gain_time', 20.,
                                               minval=1.)


class GCodeMacro:
    """gcode_macro.py: options, and rendering when jinja2 is installed (the
    template environment uses '{' '}' for expressions)."""

    def __init__(self, config):
        self.printer = config.get_printer()
        self.name = config.get_name().split()[1].upper()
        self.script = config.get('gcode')
        config.get('description', 'G-Code macro')
        self.variables = {o[len('variable_'):]: ast.literal_eval(config.get(o))
                          for o in config.get_prefix_options('variable_')}
        self.printer.lookup_object('gcode').register_command(self.name,
                                                             self.cmd)

    def render(self, params):
        import jinja2
        env = jinja2.Environment('{%', '%}', '{', '}')
        context = dict(self.variables)
        context['params'] = params
        context['printer'] = self.printer.status_wrapper()
        gcode = self.printer.lookup_object('gcode')
        context['action_respond_info'] = (
            lambda msg: gcode.respond_info(msg) or "")
        return env.from_string(self.script).render(context)

    def cmd(self, gcmd):
        gcode = self.printer.lookup_object('gcode')
        gcode.run_script(self.render(gcmd.get_command_parameters()))


######################################################################
# klippy/klippy.py
######################################################################

class Placeholder:
    def __init__(self, config):
        pass


MESSAGE_READY = "Printer is ready"
MESSAGE_STARTUP = "Printer is not ready"
MESSAGE_RESTART = 'Once the underlying issue is corrected, use the "RESTART"'


class FirmwarePandaBreath:
    """The Snapmaker U1 extended firmware's own in-process module
    (klippy/extras/panda_breath.py), present only when a test says so."""

    def __init__(self, config):
        for option in ('firmware', 'host', 'port'):
            config.get(option, None)


class Printer:
    """klippy.py Printer: objects, events, state, shutdown and config
    loading (_read_config loads sections in file order, then checks unused
    options; _connect sends klippy:connect, then klippy:ready).

    Klipper catches config errors in _connect and stays in an error state
    with its reactor running (until RESTART); connect() does the same and
    then re-raises the error so that tests can assert on it.
    start_args as klippy.py main() builds them ('debugoutput' in batch
    mode).  firmware_modules: extra module names this "klippy/extras/" has,
    e.g. ('panda_breath',) for the U1 extended firmware."""
    config_error = ConfigError
    command_error = CommandError

    def __init__(self, config_text, start_args=None, firmware_modules=()):
        self.reactor = Reactor()
        self.start_args = start_args or {}
        self.firmware_modules = firmware_modules
        self.event_handlers = {}
        self.objects = {}
        self.state_message = MESSAGE_STARTUP
        self.in_shutdown_state = False
        self.shutdown_msg = None
        self.config_text = config_text
        self.access = {}
        self.objects['gcode'] = GCode()
        self.objects['pins'] = PrinterPins()
        self.objects['mcu'] = MCU()
        self.extra = load_extra()

    def get_reactor(self):
        return self.reactor

    def get_start_args(self):
        return self.start_args

    def get_state_message(self):
        if self.state_message == MESSAGE_READY:
            category = "ready"
        elif self.state_message == MESSAGE_STARTUP:
            category = "startup"
        elif self.in_shutdown_state:
            category = "shutdown"
        else:
            category = "error"
        return self.state_message, category

    def _set_state(self, msg):
        if self.state_message in (MESSAGE_READY, MESSAGE_STARTUP):
            self.state_message = msg

    def is_shutdown(self):
        return self.in_shutdown_state

    def add_object(self, name, obj):
        if name in self.objects:
            raise self.config_error("Printer object '%s' already created"
                                    % (name,))
        self.objects[name] = obj

    def lookup_object(self, name, default=sentinel):
        if name in self.objects:
            return self.objects[name]
        if default is sentinel:
            raise self.config_error("Unknown config object '%s'" % (name,))
        return default

    def load_object(self, config, section, default=sentinel):
        if section in self.objects:
            return self.objects[section]
        module = section.split()[0]
        sconfig = config.getsection(section)
        if module == 'panda_bridge':
            obj = self.extra.load_config(sconfig)
        elif module == 'heaters':
            obj = PrinterHeaters(sconfig)
        elif module == 'heater_generic':
            obj = self.load_object(config, 'heaters').setup_heater(sconfig)
        elif module == 'temperature_sensor':
            obj = self.load_object(config, 'heaters').setup_sensor(sconfig)
        elif module == 'verify_heater':
            obj = VerifyHeater(sconfig)
        elif module == 'gcode_macro':
            obj = GCodeMacro(sconfig)
        elif module in ('pid_calibrate',):
            obj = Placeholder(sconfig)
        elif module in self.firmware_modules and module == 'panda_breath':
            obj = FirmwarePandaBreath(sconfig)
        elif default is not sentinel:
            return default
        else:
            raise self.config_error("Unable to load module '%s'" % (section,))
        self.objects[section] = obj
        return obj

    def register_event_handler(self, event, callback):
        self.event_handlers.setdefault(event, []).append(callback)

    def send_event(self, event, *params):
        return [cb(*params) for cb in self.event_handlers.get(event, [])]

    def _read_config(self):
        fileconfig = parse_config(self.config_text)
        config = ConfigWrapper(self, fileconfig, self.access, 'printer')
        for section_config in config.get_prefix_sections(''):
            self.load_object(config, section_config.get_name(), None)
        for section in fileconfig.sections():
            if section.lower() not in self.objects and not any(
                    s == section.lower() for s, o in self.access):
                raise ConfigError("Section '%s' is not a valid config"
                                  " section" % (section.lower(),))
            for option in fileconfig.options(section):
                if (section.lower(), option.lower()) not in self.access:
                    raise ConfigError("Option '%s' is not valid in section"
                                      " '%s'" % (option, section.lower()))

    def connect(self, ready=True, identify_time=0.):
        """_connect: the config, klippy:mcu_identify (the MCU handshake
        pauses, so timers run for identify_time), klippy:connect, then
        klippy:ready unless ready=False (call ready() later)."""
        try:
            self._read_config()
            if identify_time:
                self.reactor.pause(self.reactor.monotonic() + identify_time)
            for cb in self.event_handlers.get("klippy:connect", []):
                if self.state_message is not MESSAGE_STARTUP:
                    return
                cb()
        except (ConfigError, PinsError) as e:
            self._set_state("%s\n%s" % (e, MESSAGE_RESTART))
            raise
        if ready:
            self.ready()

    def ready(self):
        self._set_state(MESSAGE_READY)
        with self.reactor.assert_no_pause():
            for cb in self.event_handlers.get("klippy:ready", []):
                if self.state_message is not MESSAGE_READY:
                    return
                cb()

    def invoke_shutdown(self, msg, details={}):
        # Shutdown handlers may not pause.  Klipper only logs exceptions
        # from them; here they propagate so that tests see them.
        if self.in_shutdown_state:
            return
        self.in_shutdown_state = True
        self.shutdown_msg = msg
        self._set_state(msg)
        with self.reactor.assert_no_pause():
            for cb in self.event_handlers.get("klippy:shutdown", []):
                cb()

    def disconnect(self):
        """klippy.py run(): after the reactor stops, klippy:disconnect."""
        self.send_event("klippy:disconnect")

    def status_wrapper(self):
        eventtime = self.reactor.monotonic()
        return {name: obj.get_status(eventtime)
                for name, obj in self.objects.items()
                if hasattr(obj, 'get_status')}


def panda_bridge_config(socket_path, host='127.0.0.1', extra='',
                        max_temp=60, options=''):
    """printer.cfg text with the two panda_bridge sections, for the tests;
    options: more lines for [panda_bridge], extra: more sections."""
    return ("[panda_bridge]\nhost: %s\nsocket: %s\n%s\n"
            "[heater_generic panda_breath]\nheater_pin: panda_bridge:heater\n"
            "sensor_type: panda_bridge\ncontrol: watermark\nmin_temp: 0\n"
            "max_temp: %s\ngcode_id: C\n%s"
            % (host, socket_path, options, max_temp, extra))
