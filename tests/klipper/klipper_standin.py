"""Stand-in for the parts of Klipper that klipper/panda_bridge.py touches.

Written from reading Klipper's source (upstream and the Snapmaker U1 fork at
/work/.mirror); no Klipper code is copied.  Each class names the Klipper file
whose behaviour it reproduces.  Where the two trees differ, the stricter
behaviour is used and the difference noted.
"""
import ast, configparser, copy, json, math, os, re, select, shlex, time
import traceback, types

try:
    import jinja2  # Klipper's macro engine (python3-jinja2)
except ImportError:
    jinja2 = None

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


CommandError.__module__ = 'gcode'  # as klippy names it in macro errors


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
                    self.access[(self.section.lower(), option.lower())] = \
                        default
                return default
            raise ConfigError("Option '%s' in section '%s' must be specified"
                              % (option, self.section))
        try:
            v = parser(self.section, option)
        except Exception:
            raise ConfigError("Unable to parse option '%s' in section '%s'"
                              % (option, self.section))
        self.access[(self.section.lower(), option.lower())] = v
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
    """gcode.py GCodeCommand: params as parsed, the raw parameter text for
    rawparams and the extended-command parser."""
    error = CommandError

    def __init__(self, gcode, command, commandline, params):
        self.gcode = gcode
        self.command = command
        self.commandline = commandline
        self.params = params

    def get_command(self):
        return self.command

    def get_commandline(self):
        return self.commandline

    def get_command_parameters(self):
        return self.params

    def get_raw_command_parameters(self):
        # the text after the command name (one separating space dropped)
        start = len(self.command)
        if self.commandline[:start].upper() != self.command:
            start += self.commandline.upper().find(self.command)
        if self.commandline[start:start + 1].isspace():
            start += 1
        return self.commandline[start:]

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


class GCodeMutex:
    """reactor.py ReactorMutex: only test() (held or not); see GCode."""

    def __init__(self, gcode):
        self.gcode = gcode

    def test(self):
        return self.gcode.mutex_held > 0


class GCode:
    """Console output capture and the dispatcher of gcode.py: every line is
    split with its args_r regex (a traditional command such as M191 S45 gets
    upper-cased letter params), commands that are not traditional re-parse
    their raw parameters shlex-style as KEY=VALUE (_get_extended_params).
    An error is answered with a "!!" line and re-raised, at every level, as
    run_script_from_command does.  Unknown commands raise (Klipper only
    answers "Unknown command" for them), to catch typos in macros.

    run_script holds the G-code mutex (idle_timeout tests it); the stand-in
    has no greenlets, so a delayed_gcode that fires while it is held waits
    for it by retrying (Klipper blocks on the mutex)."""
    error = CommandError
    args_r = re.compile('([A-Z_]+|[A-Z*])')

    def __init__(self):
        self.output = []
        self.commands = {}
        self.mux = {}
        self.mutex_held = 0

    @staticmethod
    def is_traditional_gcode(cmd):
        try:
            cmd = cmd.upper().split()[0]
            float(cmd[1:])
            return cmd[0].isupper() and cmd[1].isdigit()
        except (ValueError, IndexError):
            return False

    def register_command(self, cmd, func, when_not_ready=False, desc=None):
        if func is None:
            return self.commands.pop(cmd, None)
        if cmd in self.commands:
            raise ConfigError("gcode command %s already registered" % (cmd,))
        if not self.is_traditional_gcode(cmd):
            orig = func
            func = lambda gcmd: orig(self._extended_params(gcmd))
        self.commands[cmd] = func

    def register_mux_command(self, cmd, key, value, func, desc=None):
        if cmd not in self.mux:
            self.register_command(cmd, lambda gcmd: self._mux(cmd, gcmd))
            self.mux[cmd] = (key, {})
        prev_key, values = self.mux[cmd]
        if prev_key != key:
            raise ConfigError("mux command %s %s %s may have only one key"
                              " (%s)" % (cmd, key, value, prev_key))
        if value in values:
            raise ConfigError("mux command %s %s %s already registered"
                              % (cmd, key, value))
        values[value] = func

    def _mux(self, cmd, gcmd):
        key, values = self.mux[cmd]
        value = gcmd.get(key, None)
        if value not in values:
            raise CommandError("The value '%s' is not valid for %s"
                               % (value, key))
        values[value](gcmd)

    def _extended_params(self, gcmd):
        lexer = shlex.shlex(gcmd.get_raw_command_parameters(), posix=True)
        lexer.whitespace_split = True
        lexer.commenters = '#;'
        try:
            pairs = [arg.split('=', 1) for arg in lexer]
            params = {k.upper(): v for k, v in pairs}
        except ValueError:
            raise CommandError("Malformed command '%s'"
                               % (gcmd.get_commandline(),))
        gcmd.params.clear()
        gcmd.params.update(params)
        return gcmd

    def get_mutex(self):
        return GCodeMutex(self)

    def respond_raw(self, msg):
        self.output.append(msg)

    def respond_info(self, msg, log=True):
        lines = [l.strip() for l in msg.strip().split('\n')]
        self.respond_raw("// " + "\n// ".join(lines))

    def _respond_error(self, msg):
        lines = msg.strip().split('\n')
        if len(lines) > 1:
            self.respond_info('\n'.join(lines))
        self.respond_raw('!! %s' % (lines[0].strip(),))

    def _process_commands(self, lines):
        for line in lines:
            line = origline = line.strip()
            if ';' in line:
                line = line[:line.index(';')]
            parts = self.args_r.split(line.upper())
            cmd = ''.join(parts[:3]).strip()
            if not cmd:
                continue
            params = {parts[i]: parts[i + 1].strip()
                      for i in range(1, len(parts), 2)}
            gcmd = GCodeCommand(self, cmd, origline, params)
            try:
                if cmd not in self.commands:
                    raise CommandError('Unknown command:"%s"' % (cmd,))
                self.commands[cmd](gcmd)
            except CommandError as e:
                self._respond_error(str(e))
                raise

    def run_script_from_command(self, script):
        """gcode.py: errors answer "!!" and raise CommandError."""
        self._process_commands(script.split('\n'))

    def run_script(self, script):
        """gcode.py run_script: as run_script_from_command, holding the
        G-code mutex."""
        self.mutex_held += 1
        try:
            self._process_commands(script.split('\n'))
        finally:
            self.mutex_held -= 1


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


class StandinSensor:
    """A sensor and its heater pin for a heater that is not the Panda Breath
    (a bed in tests): sensor_type: standin, heater_pin: standin:<name>.
    report(temp) delivers a reading now (print time as the extra uses)."""

    def __init__(self, printer, config):
        self.printer = printer
        self.callback = None
        self.pwm = 0.

    # sensor
    def setup_minmax(self, min_temp, max_temp):
        pass

    def setup_callback(self, callback):
        self.callback = callback

    def set_read_tolerance(self, read_time_tol, min_update_ratio):
        pass

    def get_report_time_delta(self):
        return .3

    def report(self, temp):
        mcu = self.printer.lookup_object('mcu')
        now = self.printer.get_reactor().monotonic()
        self.callback(mcu.estimated_print_time(now), temp)

    # pin
    def setup_cycle_time(self, cycle_time, hardware_pwm=False):
        pass

    def setup_max_duration(self, max_duration):
        pass

    def get_mcu(self):
        return self.printer.lookup_object('mcu')

    def set_pwm(self, print_time, value):
        self.pwm = value


class StandinChip:
    def __init__(self, printer):
        self.printer = printer
        self.sensors = []

    def sensor(self, config):
        self.sensors.append(StandinSensor(self.printer, config))
        return self.sensors[-1]

    def setup_pin(self, pin_type, pin_params):
        return self.sensors[-1]


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
        chip = StandinChip(self.printer)
        self.add_sensor_factory('standin', chip.sensor)
        self.printer.lookup_object('pins').register_chip('standin', chip)
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

    def get_status(self, eventtime):
        return {'available_heaters': [
                    h.name for h in self.heaters.values()],
                'available_sensors': list(self.available_sensors)}

    def turn_off_all_heaters(self, print_time=0.):
        for heater in self.heaters.values():
            heater.set_temp(0.)

    def cmd_TURN_OFF_HEATERS(self, gcmd):
        self.turn_off_all_heaters()

    def set_temperature(self, heater, temp, wait=False):
        # the toolhead's lookahead callback: with nothing queued it syncs
        # print time, which idle_timeout counts as activity
        self.printer.lookup_object('toolhead').get_last_move_time()
        heater.set_temp(temp)
        if wait and temp:
            self._wait_for_temperature(heater)

    def _wait_for_temperature(self, heater):
        # M109/M190: wait while check_busy (skipped in batch mode)
        if self.printer.get_start_args().get('debugoutput') is not None:
            return
        toolhead = self.printer.lookup_object('toolhead')
        reactor = self.printer.get_reactor()
        eventtime = reactor.monotonic()
        while not self.printer.is_shutdown() and heater.check_busy(eventtime):
            toolhead.get_last_move_time()
            eventtime = reactor.pause(eventtime + 1.)

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
        if self.printer.get_start_args().get('debugoutput') is not None:
            return
        heater = self.heaters[name.split()[-1]]
        toolhead = self.printer.lookup_object('toolhead')
        reactor = self.printer.get_reactor()
        eventtime = reactor.monotonic()
        while not self.printer.is_shutdown():
            temp, target = heater.get_temp(eventtime)
            if min_temp <= temp <= max_temp:
                return
            toolhead.get_last_move_time()
            eventtime = reactor.pause(eventtime + 1.)


class VerifyHeater:
    """verify_heater.py: only its options (defaults and bounds)."""

    def __init__(self, config):
        self.hysteresis = config.getfloat('hysteresis', 5., minval=0.)
        self.max_error = config.getfloat('max_error', 120., minval=0.)
        self.heating_gain = config.getfloat('heating_gain', 2., above=0.)
        self.check_gain_time = config.getfloat('check_gain_time', 20.,
                                               minval=1.)


######################################################################
# klippy/extras/heater_bed.py
######################################################################

class PrinterHeaterBed:
    """heater_bed.py: a heater with gcode id B, M140 and M190."""

    def __init__(self, config):
        self.printer = config.get_printer()
        pheaters = self.printer.load_object(config, 'heaters')
        self.heater = pheaters.setup_heater(config)
        self.get_status = self.heater.get_status
        gcode = self.printer.lookup_object('gcode')
        gcode.register_command("M140", self.cmd_M140)
        gcode.register_command("M190", self.cmd_M190)

    def cmd_M140(self, gcmd, wait=False):
        temp = gcmd.get_float('S', 0.)
        pheaters = self.printer.lookup_object('heaters')
        pheaters.set_temperature(self.heater, temp, wait)

    def cmd_M190(self, gcmd):
        self.cmd_M140(gcmd, wait=True)


######################################################################
# klippy/toolhead.py, klippy/extras/idle_timeout.py, print_stats.py
######################################################################

BUFFER_TIME_START = 0.250


class ToolHead:
    """toolhead.py, only what idle_timeout and macros see: with nothing
    queued, get_last_move_time() resyncs print_time to
    estimated_print_time + BUFFER_TIME_START and sends
    toolhead:sync_print_time (that is what makes idle_timeout "Printing");
    check_busy; status with print_time and estimated_print_time.  move()
    stands in for queued moves (print_time advances by their duration).
    M84 (stepper_enable.py) is a no-op here."""

    def __init__(self, printer):
        self.printer = printer
        self.reactor = printer.get_reactor()
        self.mcu = printer.lookup_object('mcu')
        self.print_time = 0.
        printer.lookup_object('gcode').register_command('M84', lambda g: None)

    def get_last_move_time(self):
        curtime = self.reactor.monotonic()
        est_print_time = self.mcu.estimated_print_time(curtime)
        min_print_time = est_print_time + BUFFER_TIME_START
        if min_print_time > self.print_time:
            self.print_time = min_print_time
            self.printer.send_event("toolhead:sync_print_time", curtime,
                                    est_print_time, self.print_time)
        return self.print_time

    def move(self, duration):
        self.get_last_move_time()
        self.print_time += duration

    def check_busy(self, eventtime):
        est_print_time = self.mcu.estimated_print_time(eventtime)
        return self.print_time, est_print_time, True

    def get_status(self, eventtime):
        return {'print_time': self.print_time,
                'estimated_print_time': self.mcu.estimated_print_time(
                    eventtime)}


IDLE_GCODE = """
{% if 'heaters' in printer %}
   TURN_OFF_HEATERS
{% endif %}
M84
"""
READY_TIMEOUT = .500
PIN_MIN_TIME = 0.100


class IdleTimeout:
    """idle_timeout.py: Idle -> Printing on toolhead:sync_print_time,
    Printing -> Ready once the toolhead is done, Ready -> the idle gcode
    (TURN_OFF_HEATERS, M84) once it was idle for the timeout, unless the
    G-code mutex is held.  SET_IDLE_TIMEOUT; status as upstream (the U1
    fork leaves idle_timeout out of the status: macros must read the
    configured value from printer.configfile.settings)."""

    def __init__(self, config):
        self.printer = config.get_printer()
        self.reactor = self.printer.get_reactor()
        self.gcode = self.printer.lookup_object('gcode')
        self.toolhead = self.timeout_timer = None
        self.printer.register_event_handler("klippy:ready", self.handle_ready)
        self.idle_timeout = config.getfloat('timeout', 600., above=0.)
        macros = self.printer.load_object(config, 'gcode_macro')
        self.idle_gcode = macros.load_template(config, 'gcode', IDLE_GCODE)
        self.gcode.register_command('SET_IDLE_TIMEOUT',
                                    self.cmd_SET_IDLE_TIMEOUT)
        self.state = "Idle"
        self.last_print_start_systime = 0.
        self.fired = 0   # times the idle gcode ran (for tests)

    def get_status(self, eventtime):
        printing_time = 0.
        if self.state == "Printing":
            printing_time = eventtime - self.last_print_start_systime
        return {"state": self.state, "printing_time": printing_time,
                "idle_timeout": self.idle_timeout}

    def handle_ready(self):
        self.toolhead = self.printer.lookup_object('toolhead')
        self.timeout_timer = self.reactor.register_timer(self.timeout_handler)
        self.printer.register_event_handler("toolhead:sync_print_time",
                                            self.handle_sync_print_time)

    def transition_idle_state(self, eventtime):
        self.state = "Printing"
        self.fired += 1
        try:
            self.gcode.run_script(self.idle_gcode.render())
        except Exception:
            self.state = "Ready"
            return eventtime + 1.
        self.toolhead.get_last_move_time()
        self.state = "Idle"
        return self.reactor.NEVER

    def check_idle_timeout(self, eventtime):
        print_time, est_print_time, lookahead_empty = self.toolhead.check_busy(
            eventtime)
        idle_time = est_print_time - print_time
        if not lookahead_empty or idle_time < 1.:
            return eventtime + self.idle_timeout
        if idle_time < self.idle_timeout:
            return eventtime + self.idle_timeout - idle_time
        if self.gcode.get_mutex().test():
            return eventtime + 1.
        return self.transition_idle_state(eventtime)

    def timeout_handler(self, eventtime):
        if self.printer.is_shutdown():
            return self.reactor.NEVER
        if self.state == "Ready":
            return self.check_idle_timeout(eventtime)
        print_time, est_print_time, lookahead_empty = self.toolhead.check_busy(
            eventtime)
        buffer_time = min(2., print_time - est_print_time)
        if not lookahead_empty:
            return eventtime + READY_TIMEOUT + max(0., buffer_time)
        if buffer_time > -READY_TIMEOUT:
            return eventtime + READY_TIMEOUT + buffer_time
        if self.gcode.get_mutex().test():
            return eventtime + READY_TIMEOUT
        self.state = "Ready"
        return eventtime + self.idle_timeout

    def handle_sync_print_time(self, curtime, print_time, est_print_time):
        if self.state == "Printing":
            return
        self.state = "Printing"
        self.last_print_start_systime = curtime
        check_time = READY_TIMEOUT + print_time - est_print_time
        self.reactor.update_timer(self.timeout_timer, curtime + check_time)

    def cmd_SET_IDLE_TIMEOUT(self, gcmd):
        timeout = gcmd.get_float('TIMEOUT', self.idle_timeout, above=0.)
        self.idle_timeout = timeout
        gcmd.respond_info("idle_timeout: Timeout set to %.2f s" % (timeout,))
        if self.state == "Ready":
            checktime = self.reactor.monotonic() + timeout
            self.reactor.update_timer(self.timeout_timer, checktime)


class PrintStats:
    """print_stats.py: the state (standby, printing, paused, complete,
    cancelled, error) that virtual_sdcard drives; tests call note_start(),
    note_pause(), note_complete(), note_cancel() as virtual_sdcard and
    pause_resume do."""

    def __init__(self, config):
        self.state = "standby"
        self.started = False

    def note_start(self):
        self.state = "printing"
        self.started = True

    def note_pause(self):
        if self.state != "error":
            self.state = "paused"

    def _finish(self, state):
        if self.started:
            self.state = state
            self.started = False

    def note_complete(self):
        self._finish("complete")

    def note_cancel(self):
        self._finish("cancelled")

    def get_status(self, eventtime):
        return {'state': self.state, 'filename': '', 'message': ''}


class PrinterConfigStatus:
    """configfile.py get_status: settings holds every option a module read,
    parsed, and the default for options it read with one (the stand-in
    builds it when asked; Klipper builds it once after loading)."""

    def __init__(self, printer):
        self.printer = printer

    def get_status(self, eventtime):
        settings = {}
        for (section, option), value in self.printer.access.items():
            settings.setdefault(section, {})[option] = value
        return {'settings': settings}


######################################################################
# klippy/extras/gcode_macro.py, delayed_gcode.py
######################################################################

class GetStatusWrapper:
    """gcode_macro.py GetStatusWrapper: printer[name] is a deep copy of
    that object's get_status() (KeyError when it has none), cached for one
    rendering; 'name' in printer."""

    def __init__(self, printer, eventtime=None):
        self.printer = printer
        self.eventtime = eventtime
        self.cache = {}

    def __getitem__(self, val):
        sval = str(val).strip()
        if sval in self.cache:
            return self.cache[sval]
        po = self.printer.lookup_object(sval, None)
        if po is None or not hasattr(po, 'get_status'):
            raise KeyError(val)
        reactor = self.printer.get_reactor()
        if self.eventtime is None:
            self.eventtime = reactor.monotonic()
        with reactor.assert_no_pause():
            sts = po.get_status(self.eventtime)
        self.cache[sval] = res = copy.deepcopy(sts)
        return res

    def __contains__(self, val):
        try:
            self.__getitem__(val)
        except KeyError:
            return False
        return True


class TemplateWrapper:
    """gcode_macro.py TemplateWrapper: a syntax error is a config error;
    a rendering error (action_raise_error too) is a G-code error
    "Error evaluating '<section>:<option>': <exception>"."""

    def __init__(self, printer, env, name, script):
        self.printer = printer
        self.name = name
        self.gcode = printer.lookup_object('gcode')
        self.create_template_context = printer.lookup_object(
            'gcode_macro').create_template_context
        if env is None:   # no jinja2: loads, but cannot render
            self.template = None
            return
        try:
            self.template = env.from_string(script)
        except Exception as e:
            raise ConfigError("Error loading template '%s': %s" % (
                name, traceback.format_exception_only(type(e), e)[-1]))

    def render(self, context=None):
        if self.template is None:
            raise CommandError("Error evaluating '%s': jinja2 is not"
                               " installed" % (self.name,))
        if context is None:
            context = self.create_template_context()
        try:
            return str(self.template.render(context))
        except Exception as e:
            raise CommandError("Error evaluating '%s': %s" % (
                self.name, traceback.format_exception_only(type(e), e)[-1]))

    def run_gcode_from_command(self, context=None):
        self.gcode.run_script_from_command(self.render(context))


class PrinterGCodeMacro:
    """gcode_macro.py PrinterGCodeMacro: the Jinja2 environment ('{' '}'
    for expressions) and the template context."""

    def __init__(self, config):
        self.printer = config.get_printer()
        self.env = None
        if jinja2 is not None:
            self.env = jinja2.Environment('{%', '%}', '{', '}')

    def load_template(self, config, option, default=None):
        name = "%s:%s" % (config.get_name(), option)
        if default is None:
            script = config.get(option)
        else:
            script = config.get(option, default)
        return TemplateWrapper(self.printer, self.env, name, script)

    def _action_emergency_stop(self, msg="action_emergency_stop"):
        self.printer.invoke_shutdown("Shutdown due to %s" % (msg,))
        return ""

    def _action_respond_info(self, msg):
        self.printer.lookup_object('gcode').respond_info(msg)
        return ""

    def _action_raise_error(self, msg):
        raise self.printer.command_error(msg)

    def create_template_context(self, eventtime=None):
        return {
            'printer': GetStatusWrapper(self.printer, eventtime),
            'action_emergency_stop': self._action_emergency_stop,
            'action_respond_info': self._action_respond_info,
            'action_raise_error': self._action_raise_error,
        }


class GCodeMacro:
    """gcode_macro.py GCodeMacro: variable_<name> options (Python literals
    that JSON can hold), SET_GCODE_VARIABLE MACRO= VARIABLE= VALUE=, the
    status (its variables), params/rawparams, no recursion.  rename_existing
    is not supported here."""

    def __init__(self, config):
        if len(config.get_name().split()) > 2:
            raise config.error("Name of section '%s' contains illegal"
                               " whitespace" % (config.get_name(),))
        name = config.get_name().split()[1]
        self.alias = name.upper()
        self.printer = printer = config.get_printer()
        macros = printer.load_object(config, 'gcode_macro')
        self.template = macros.load_template(config, 'gcode')
        self.gcode = printer.lookup_object('gcode')
        if config.get('rename_existing', None) is not None:
            raise config.error("rename_existing: not in the stand-in")
        config.get('description', 'G-Code macro')
        self.gcode.register_command(self.alias, self.cmd)
        self.gcode.register_mux_command("SET_GCODE_VARIABLE", "MACRO", name,
                                        self.cmd_SET_GCODE_VARIABLE)
        self.in_script = False
        self.variables = {}
        for option in config.get_prefix_options('variable_'):
            try:
                literal = ast.literal_eval(config.get(option))
                json.dumps(literal, separators=(',', ':'))
                self.variables[option[len('variable_'):]] = literal
            except (SyntaxError, TypeError, ValueError) as e:
                raise config.error(
                    "Option '%s' in section '%s' is not a valid literal: %s"
                    % (option, config.get_name(), e))

    def get_status(self, eventtime):
        return self.variables

    def cmd_SET_GCODE_VARIABLE(self, gcmd):
        variable = gcmd.get('VARIABLE')
        value = gcmd.get('VALUE')
        if variable not in self.variables:
            raise gcmd.error("Unknown gcode_macro variable '%s'"
                             % (variable,))
        try:
            literal = ast.literal_eval(value)
            json.dumps(literal, separators=(',', ':'))
        except (SyntaxError, TypeError, ValueError) as e:
            raise gcmd.error("Unable to parse '%s' as a literal: %s"
                             % (value, e))
        variables = dict(self.variables)
        variables[variable] = literal
        self.variables = variables

    def cmd(self, gcmd):
        if self.in_script:
            raise gcmd.error("Macro %s called recursively" % (self.alias,))
        kwparams = dict(self.variables)
        kwparams.update(self.template.create_template_context())
        kwparams['params'] = gcmd.get_command_parameters()
        kwparams['rawparams'] = gcmd.get_raw_command_parameters()
        self.in_script = True
        try:
            self.template.run_gcode_from_command(kwparams)
        finally:
            self.in_script = False


class DelayedGcode:
    """delayed_gcode.py: a template run by a reactor timer from
    klippy:ready (initial_duration) or UPDATE_DELAYED_GCODE ID= DURATION=
    (0 cancels); from inside its own script the new duration is a repeat.
    Errors in the script are only logged.  While the G-code mutex is held
    the run waits (see GCode)."""

    def __init__(self, config):
        self.printer = config.get_printer()
        self.reactor = self.printer.get_reactor()
        self.name = config.get_name().split()[1]
        self.gcode = self.printer.lookup_object('gcode')
        macros = self.printer.load_object(config, 'gcode_macro')
        self.timer_gcode = macros.load_template(config, 'gcode')
        self.duration = config.getfloat('initial_duration', 0., minval=0.)
        self.timer_handler = None
        self.inside_timer = self.repeat = False
        self.errors = []
        self.printer.register_event_handler("klippy:ready", self._handle_ready)
        self.gcode.register_mux_command("UPDATE_DELAYED_GCODE", "ID",
                                        self.name,
                                        self.cmd_UPDATE_DELAYED_GCODE)

    def _handle_ready(self):
        waketime = self.reactor.NEVER
        if self.duration:
            waketime = self.reactor.monotonic() + self.duration
        self.timer_handler = self.reactor.register_timer(
            self._gcode_timer_event, waketime)

    def _gcode_timer_event(self, eventtime):
        if self.gcode.get_mutex().test():
            return eventtime + .05   # Klipper: blocks on the mutex
        self.inside_timer = True
        try:
            self.gcode.run_script(self.timer_gcode.render())
        except Exception as e:   # Klipper: logging.exception
            self.errors.append(e)
        nextwake = self.reactor.NEVER
        if self.repeat:
            nextwake = eventtime + self.duration
        self.inside_timer = self.repeat = False
        return nextwake

    def cmd_UPDATE_DELAYED_GCODE(self, gcmd):
        self.duration = gcmd.get_float('DURATION', minval=0.)
        if self.inside_timer:
            self.repeat = (self.duration != 0.)
        else:
            waketime = self.reactor.NEVER
            if self.duration:
                waketime = self.reactor.monotonic() + self.duration
            self.reactor.update_timer(self.timer_handler, waketime)


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
        self.objects['configfile'] = PrinterConfigStatus(self)
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
        elif section == 'gcode_macro':
            obj = PrinterGCodeMacro(sconfig)
        elif module == 'gcode_macro':
            obj = GCodeMacro(sconfig)
        elif module == 'delayed_gcode':
            obj = DelayedGcode(sconfig)
        elif section == 'idle_timeout':
            obj = IdleTimeout(sconfig)
        elif section == 'print_stats':
            obj = PrintStats(sconfig)
        elif section == 'heater_bed':
            obj = PrinterHeaterBed(sconfig)
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
        # toolhead.py: the toolhead always loads idle_timeout
        self.objects['toolhead'] = ToolHead(self)
        self.load_object(config, 'idle_timeout')
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

def panda_bridge_config(socket_path, host='127.0.0.1', extra='',
                        max_temp=60, options=''):
    """printer.cfg text with the two panda_bridge sections, for the tests;
    options: more lines for [panda_bridge], extra: more sections."""
    return ("[panda_bridge]\nhost: %s\nsocket: %s\n%s\n"
            "[heater_generic panda_breath]\nheater_pin: panda_bridge:heater\n"
            "sensor_type: panda_bridge\ncontrol: watermark\nmin_temp: 0\n"
            "max_temp: %s\ngcode_id: C\n%s"
            % (host, socket_path, options, max_temp, extra))
