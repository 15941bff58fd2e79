# BIQU Panda Breath chamber heater, through the panda-breath bridge
#
# [panda_bridge] provides "sensor_type: panda_bridge" and the pin chip
# "panda_bridge" for one [heater_generic panda_breath] section after it.
# BridgeLink is the Unix-socket connection to the bridge (a separate service
# that talks to the device), one JSON object per line (README "Socket API");
# PandaBridge is the heater's sensor, pin, target and status.
#
# Heater safety: the heartbeat tells the bridge whether Klipper is ready
# (between klippy:ready and a shutdown or disconnect); only a ready Klipper
# keeps heat alive.  While not ready this module answers any target the
# bridge reports with "off".
import errno, json, logging, math, os, pwd, socket, struct

API_PROTOCOL = 2
REPORT_TIME = .5
HEARTBEAT_TIME = 1.
RETRY_MIN_TIME, RETRY_MAX_TIME = .5, 5.
MAX_LINE = 64 * 1024
MAX_SEND_BUFFER = 256 * 1024
BAD_INPUT_LOG_TIME = 60.
MAX_SOCKET_PATH = 107
DEFAULT_SOCKET = '/run/panda-breath/bridge.sock'
SOCKET_DIRS = ('/tmp', '/run', '/var/run')  # where the bridge may listen
UNKNOWN_STATUS = {'device_connected': False, 'temperature': None,
                  'device_temperature': None, 'device_work_on': None,
                  'firmware': None, 'note': None, 'failsafe_tripped': False}
# work_mode meanings (lib/protocol.ts WORK_MODE_NAMES; V1.0.0 swaps 1 and 3)
WORK_MODES = {1: 'auto', 2: 'always-on', 3: 'drying'}
WORK_MODES_V100 = {1: 'drying', 2: 'always-on', 3: 'auto'}
TARGET_METHODS = ('set_target', 'off')
HEAT_MODES = ('always-on', 'drying-lease')  # the bridge's --heat-mode
PIN_HINT = ("write 'heater_pin: panda_bridge:heater' in"
            " [heater_generic panda_breath]")
# Sections and objects of the U1 extended firmware's own integration
BUILTIN_NAMES = ('panda_breath', 'dragonbreath')
BUILTIN_MSG = (
    "[panda_bridge] cannot run together with the firmware's built-in Panda"
    " Breath integration ([%s] is loaded): two controllers must never drive"
    " one device.  On the Snapmaker U1 open the web UI's Firmware Config ->"
    " chamber heater (PandaBreath / DragonBreath Chamber Heater) -> Disabled,"
    " then restart Klipper.  On other hosts remove the [%s] section of the"
    " other Panda Breath module.")
SENSOR_HINT = ("write the full section name of another temperature sensor,"
               " e.g. 'sensor: temperature_sensor chamber'")
# Temperature correction (README "Temperature correction").  Klipper works on
# the user's scale, the device on its own: user = device + temperature_offset.
OFFSET_LIMIT = 10.
MIN_DEVICE_TARGET = 1.  # a lower positive target would round to "off"
BIAS_GAIN = .5  # sensor: the outer loop's smoothing of the bias
UNSEEN = object()

def field(obj, key, kind):
    value = obj.get(key) if isinstance(obj, dict) else None
    if kind is float:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value))
        return float(value) if ok else None
    return value if isinstance(value, kind) else None

def corrected(device_temp, offset):
    """The device's reading on the user's scale (None stays None)."""
    return None if device_temp is None else device_temp + offset

def user_target(device_target, offset):
    """A target the device holds, on the user's scale (off stays off)."""
    if device_target is None:
        return None
    return device_target + offset if device_target > 0. else 0.

def device_target(target, offset, max_target=None):
    """The target to send the device for a Klipper target; raises
    ValueError (the reason) when the device cannot be sent it."""
    if target <= 0.:
        return 0.
    device = target - offset
    if max_target is not None and device > max_target:
        raise ValueError("above the bridge's max_target (%.1f)"
                         % (max_target,))
    if device < MIN_DEVICE_TARGET:
        raise ValueError("below %.0f at the device, which would turn it off"
                         % (MIN_DEVICE_TARGET,))
    return device

def device_mode(device):
    """The device's reported mode in words: off, always-on, auto, drying,
    mode N (unknown number) or None (not reported)."""
    work_on = field(device, 'work_on', bool)
    if not work_on:
        return None if work_on is None else 'off'
    mode = field(device, 'work_mode', int)
    names = (WORK_MODES_V100 if field(device, 'firmware', str) == 'V1.0.0'
             else WORK_MODES)
    return names.get(mode, 'mode %s' % (mode,))

def steered_target(target, bias, max_above, max_target=None):
    """The device target that brings the other sensor to target when it
    reads bias above the device's sensor: whole degrees, at least 1, at
    most max_target and target + max_above (off stays off)."""
    if target <= 0.:
        return 0.
    high = target + max_above
    if max_target is not None:
        high = min(high, max_target)
    return float(max(MIN_DEVICE_TARGET,
                     min(math.floor(high), math.floor(target - bias + .5))))

def user_name(uid):
    try:
        return "%s (uid %d)" % (pwd.getpwuid(uid).pw_name, uid)
    except KeyError:
        return "uid %d" % (uid,)

class BridgeLink:
    # The client end of the bridge's socket, as Klipper's
    # webhooks.ClientConnection: reactor fd callbacks, a send buffer drained
    # on write wake, lines split from partial reads; reconnects with backoff.
    # Until hello is answered only hello goes out.  The owner gets
    # _link_up, _link_down, _reply, _refused and _handle_status.
    def __init__(self, config, owner):
        self.reactor = config.get_printer().get_reactor()
        self.owner = owner
        self.path = path = config.get('socket', DEFAULT_SOCKET)
        if not os.path.isabs(path):
            raise config.error("socket: '%s' in [panda_bridge] must be an"
                               " absolute path such as %s"
                               % (path, DEFAULT_SOCKET))
        if not any(os.path.normpath(path).startswith(d + '/')
                   for d in SOCKET_DIRS):
            raise config.error(
                "socket: '%s' in [panda_bridge] is outside /tmp, /run and"
                " /var/run, where the bridge can create its socket; write"
                " 'socket: %s' (the installed default) or another path there,"
                " the same as the bridge's --socket" % (path, DEFAULT_SOCKET))
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise config.error("socket: in [panda_bridge] is longer than %d"
                               " bytes, too long for a Unix socket; choose a"
                               " shorter path (the same for the bridge)"
                               % (MAX_SOCKET_PATH,))
        user = config.get('bridge_user', None)
        try:
            self.bridge_uid = (
                os.getuid() if user is None else
                int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid)
        except KeyError:
            raise config.error("bridge_user: '%s' in [panda_bridge] is not a"
                               " user on this host; write the user name or"
                               " uid the bridge service runs as" % (user,))
        self.state = 'closed'  # connecting, open, dead (to close) or closed
        self.linked = False    # open, and hello answered
        self.sock = self.fd_handle = self.retry_timer = None
        self.partial = self.send_buffer = b''
        self.write_wake = False
        self.pending = {}
        self.next_id = self.bad_count = 0
        self.bad_log_time = -BAD_INPUT_LOG_TIME
        self.retry_time = RETRY_MIN_TIME
    def start(self):
        self.retry_timer = self.reactor.register_timer(self._retry_event,
                                                       self.reactor.NOW)
    def close(self):
        # klippy:disconnect: what is buffered (the off) goes out first
        if self.state == 'open' and self.send_buffer:
            self._handle_write()
        self._close()
        self.reactor.update_timer(self.retry_timer, self.reactor.NEVER)
    def waiting(self, *methods):
        return any(m in methods for m in self.pending.values())
    def request(self, method, params=None):
        if self.state != 'open' or not (self.linked or method == 'hello'):
            return
        self.next_id += 1
        msg = {'id': self.next_id, 'method': method}
        if params is not None:
            msg['params'] = params
        self.pending[self.next_id] = method
        self.send_buffer += json.dumps(msg).encode() + b'\n'
        if len(self.send_buffer) > MAX_SEND_BUFFER:
            self.drop("the bridge stopped reading")
        elif not self.write_wake:
            self._handle_write()
    def drop(self, reason, alarm=None):
        if self.state in ('closed', 'dead'):
            return
        # Closed from the retry timer, never inside an fd callback: the U1
        # fork's reactor has no fallback for an fd unregistered mid-dispatch
        self.state = 'dead'
        self.linked = False
        self.reactor.set_fd_wake(self.fd_handle, False, False)
        self.reactor.update_timer(self.retry_timer, self.reactor.NOW)
        self.pending.clear()
        self.send_buffer = b''
        self.owner._link_down(reason, alarm)
    def _close(self):
        if self.fd_handle is not None:
            self.reactor.unregister_fd(self.fd_handle)
            self.sock.close()
            self.sock = self.fd_handle = None
        self.state = 'closed'
        self.linked = self.write_wake = False
        self.partial = self.send_buffer = b''
        self.pending.clear()
    def _retry_event(self, eventtime):
        if self.state == 'dead':
            self._close()
        elif self.state == 'closed':
            self._connect(eventtime)
        if self.state == 'closed':
            delay = self.retry_time
            self.retry_time = min(2. * delay, RETRY_MAX_TIME)
            return eventtime + delay
        return eventtime if self.state == 'dead' else self.reactor.NEVER
    def _connect(self, eventtime):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            err = sock.connect_ex(self.path)
        except OSError as e:
            err = e.errno
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.owner._link_down("cannot reach the bridge at %s: %s (is the"
                                  " panda-breath bridge running?)"
                                  % (self.path, os.strerror(err)))
            return
        self.sock = sock
        self.fd_handle = self.reactor.register_fd(
            sock.fileno(), self._handle_read, self._handle_write)
        self.state = 'connecting'
        if err:
            self.reactor.set_fd_wake(self.fd_handle, True, True)
        else:
            self._connected()
    def _connected(self):
        # Completion of a non-blocking connect (a hang-up counts as readable)
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.drop("cannot reach the bridge at %s: %s"
                      % (self.path, os.strerror(err)))
            return
        # Only the bridge's user (or root) may feed temperatures and targets
        pid, uid, gid = struct.unpack('3i', self.sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i')))
        if uid not in (0, self.bridge_uid):
            allowed = "root"
            if self.bridge_uid:
                allowed += " or " + user_name(self.bridge_uid)
            self.drop("refused the process at %s (pid %d): it runs as %s,"
                      " not as %s; if the bridge runs as that user, write"
                      " 'bridge_user: %d' in [panda_bridge]"
                      % (self.path, pid, user_name(uid), allowed, uid),
                      alarm=False)
            return
        self.state = 'open'
        self.reactor.set_fd_wake(self.fd_handle, True, False)
        self.request('hello', {'client': 'klipper', 'controller': True,
                               'ready': self.owner._is_ready()})
    def _io_ready(self):
        # Either fd event may complete a non-blocking connect
        if self.state == 'connecting':
            self._connected()
            return False
        return self.state == 'open'
    def _handle_write(self, eventtime=None):
        if not self._io_ready():
            return
        try:
            sent = self.sock.send(self.send_buffer)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as e:
            self.drop("lost the bridge connection: %s" % (e,))
            return
        self.send_buffer = self.send_buffer[sent:]
        if bool(self.send_buffer) != self.write_wake:
            self.write_wake = not self.write_wake
            self.reactor.set_fd_wake(self.fd_handle, True, self.write_wake)
    def _handle_read(self, eventtime):
        if not self._io_ready():
            return
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.drop("lost the bridge connection: %s" % (e,))
            return
        if not data:
            self.drop("the bridge closed the connection")
            return
        lines = (self.partial + data).split(b'\n')
        self.partial = lines.pop()
        if max([len(line) for line in lines] + [len(self.partial)]) > MAX_LINE:
            self.drop("the bridge sent a line over 64 KiB")
            return
        for line in lines:
            if self.state == 'open' and line.strip():
                self._process_line(line, eventtime)
    def _process_line(self, line, eventtime):
        try:
            msg = json.loads(line)
            if not isinstance(msg, dict):
                raise ValueError("not a JSON object")
            if msg.get('id') is not None:
                self._handle_reply(msg, eventtime)
            elif msg.get('method') == 'status':
                self.owner._handle_status(msg['params'], eventtime)
        except Exception:
            self.bad_count += 1
            if eventtime >= self.bad_log_time + BAD_INPUT_LOG_TIME:
                logging.exception("panda_bridge: ignored bad input from the"
                                  " bridge (%d in %.0f s): %r", self.bad_count,
                                  BAD_INPUT_LOG_TIME, line[:200])
                self.bad_count = 0
                self.bad_log_time = eventtime
    def _handle_reply(self, msg, eventtime):
        method = self.pending.pop(msg['id'], None)
        if method is None:
            return
        if msg.get('error') is not None:
            error = (field(msg, 'error', dict) or {}).get('message',
                                                          msg['error'])
            logging.warning("panda_bridge: %s failed: %s", method, error)
            if method == 'hello':
                self.drop("the bridge refused hello: %s" % (error,))
            else:
                self.owner._refused(method, error)
        elif method != 'hello':
            self.owner._reply(method, msg)
        elif msg['result'].get('protocol') != API_PROTOCOL:
            self.drop("the bridge speaks protocol %s, this module expects"
                      " %d; install matching versions of the bridge and"
                      " panda_bridge.py" % (msg['result'].get('protocol'),
                                            API_PROTOCOL))
        else:
            self.retry_time = RETRY_MIN_TIME
            self.linked = True
            logging.info("panda_bridge: connected to the bridge at %s",
                         self.path)
            self.owner._link_up(msg['result'], eventtime)

class PandaBridge:
    def __init__(self, config):
        self.printer = printer = config.get_printer()
        self.reactor = printer.get_reactor()
        self.gcode = printer.lookup_object('gcode')
        self.mcu = printer.lookup_object('mcu')
        for name in BUILTIN_NAMES:
            if config.has_section(name):
                raise config.error(BUILTIN_MSG % (name, name))
        self.host = config.get('host', None)
        # Read by the bridge's service at start (panda-breath-launch)
        self.heat_mode = config.getchoice(
            'heat_mode', {m: m for m in HEAT_MODES}, 'always-on')
        config.getint('lease_hours', 1, minval=1, maxval=12)
        self.offset = config.getfloat('temperature_offset', 0.,
                                      minval=-OFFSET_LIMIT,
                                      maxval=OFFSET_LIMIT)
        # sensor: an outer loop steering the device's target (README)
        self.sensor_name = config.get('sensor', None)
        self.sensor_interval = config.getfloat('sensor_interval', 30.,
                                               minval=1., maxval=600.)
        self.sensor_max_above = config.getfloat('sensor_max_above', 10.,
                                                minval=0., maxval=30.)
        self.sensor_stale_time = config.getfloat('sensor_stale_time', 60.,
                                                 minval=1., maxval=3600.)
        self.link = BridgeLink(config, self)
        self.sensor = self.sensor_changed = self.sensor_fresh = None
        self.sensor_value = UNSEEN
        self.bias = self.sensor_error = None
        self.bias_sum, self.bias_count = 0., 0
        self.sensor_alarm = False   # the "!!" fallback line was printed
        self.heater_name = self.heater = self.callback = None
        self.min_temp = self.max_temp = self.power = 0.
        self.pin_ready = self.ready = self.max_target_warned = False
        self.link_error = self.heat_mode_warned = self.max_target = None
        self.fault_descriptions = {}
        # What was last sent (both scales); the bridge's target as last known
        self.requested = self.device_requested = self.bridge_target = None
        self.device_link = self.status_time = None
        self.status, self.bridge_status = dict(UNKNOWN_STATUS), {}
        self.faults = []
        pheaters = printer.load_object(config, 'heaters')
        pheaters.add_sensor_factory('panda_bridge', self._setup_sensor)
        printer.lookup_object('pins').register_chip('panda_bridge', self)
        printer.register_event_handler('klippy:connect', self._handle_connect)
        self.gcode.register_command(
            'PANDA_BRIDGE_WAIT', self.cmd_PANDA_BRIDGE_WAIT,
            desc=self.cmd_PANDA_BRIDGE_WAIT_help)
        # Batch mode (klippy.py -o): never reach the real device
        if printer.get_start_args().get('debugoutput') is not None:
            return
        printer.register_event_handler('klippy:ready', self._handle_ready)
        printer.register_event_handler('klippy:shutdown',
                                       self._handle_shutdown)
        printer.register_event_handler('klippy:disconnect',
                                       self._handle_disconnect)
        timer = self.reactor.register_timer
        self.heartbeat_timer = timer(self._heartbeat_event)
        self.steer_timer = timer(lambda e: self._sensor_step(
            self._steer, e, self.sensor_interval))
        self.poll_timer = timer(lambda e: self._sensor_step(
            self._poll_sensor, e, REPORT_TIME))
        # Connect from startup on, so that "off" is enforced in Klipper's
        # startup and error states too
        self.link.start()
    # Sensor interface (sensor_type: panda_bridge)
    def _setup_sensor(self, config):
        name = config.get_name()
        if self.heater_name is not None:
            raise config.error("[%s]: only one heater can use sensor_type:"
                               " panda_bridge; [heater_generic %s] already"
                               " does" % (name, self.heater_name))
        if not name.startswith('heater_generic '):
            raise config.error("[%s]: sensor_type: panda_bridge is only for a"
                               " [heater_generic panda_breath] section"
                               % (name,))
        pin = [s.strip() for s in config.get('heater_pin', '').split(':')]
        if pin != ['panda_bridge', 'heater']:
            raise config.error("[%s]: with sensor_type: panda_bridge, %s"
                               % (name, PIN_HINT))
        self.heater_name = name.split()[-1]
        return self
    def setup_minmax(self, min_temp, max_temp):
        self.min_temp, self.max_temp = min_temp, max_temp
    def setup_callback(self, callback):
        self.callback = callback
    def get_report_time_delta(self):
        return REPORT_TIME
    def set_read_tolerance(self, read_time_tol, min_update_ratio):
        pass
    # Chip and pin interface (heater_pin: panda_bridge:heater)
    def setup_pin(self, pin_type, pin_params):
        if (pin_type != 'pwm' or pin_params['pin'] != 'heater'
            or pin_params['invert']):
            raise self.printer.config_error(
                "Pin '%s' is not valid on chip panda_bridge: %s"
                % (pin_params['pin'], PIN_HINT))
        if self.heater_name is None or self.pin_ready:
            raise self.printer.config_error(
                "panda_bridge:heater can only be the heater_pin of the one"
                " [heater_generic] section with sensor_type: panda_bridge")
        self.pin_ready = True
        return self
    def get_mcu(self):
        return self.mcu
    def setup_max_duration(self, max_duration):
        pass
    def setup_cycle_time(self, cycle_time, hardware_pwm=False):
        pass
    def set_pwm(self, print_time, value, min_time_interval=None):
        self.power = value  # only shown in status: the device regulates
    # Klippy events
    def _handle_connect(self):
        for name in BUILTIN_NAMES:
            if self.printer.lookup_object(name, None) is not None:
                raise self.printer.config_error(BUILTIN_MSG % (name, name))
        if self.heater_name is None:
            raise self.printer.config_error(
                "[panda_bridge] needs a [heater_generic panda_breath] section"
                " after it with sensor_type: panda_bridge and"
                " heater_pin: panda_bridge:heater")
        pheaters = self.printer.lookup_object('heaters')
        self.heater = heater = pheaters.lookup_heater(self.heater_name)
        # Heater calls set_pwm only from temperature callbacks, suppressing
        # repeats, but every target request (SET_HEATER_TEMPERATURE,
        # TURN_OFF_HEATERS, idle_timeout, macros) goes through set_temp: the
        # bridge's limits are checked before the target changes, then the
        # target is sent, even when unchanged (without this wrap a target
        # waits for the heartbeat: ~1 s in real klippy, not ~1 ms).  The
        # heartbeat timer catches alter_target and set_control (PID_CALIBRATE).
        orig_set_temp = heater.set_temp
        def set_temp(degrees):
            self._check_target(degrees)
            orig_set_temp(degrees)
            self._send_target(degrees)
        heater.set_temp = set_temp
        if self.sensor_name is None:
            return
        obj = self.printer.lookup_object(self.sensor_name, None)
        why = ("is not a Klipper object" if obj is None else
               "is the Panda Breath heater itself" if obj is heater else None)
        if why is None:
            st = (obj.get_status(self.reactor.monotonic())
                  if hasattr(obj, 'get_status') else None)
            if not isinstance(st, dict) or 'temperature' not in st:
                why = "reports no temperature"
        if why is not None:
            raise self.printer.config_error("sensor: '%s' in [panda_bridge]"
                                            " %s; %s" % (self.sensor_name,
                                                         why, SENSOR_HINT))
        self.sensor = obj
    def _handle_ready(self):
        self.ready = True
        if self.sensor is not None:
            now = self.reactor.monotonic()
            self.reactor.update_timer(self.poll_timer, now)
            self.reactor.update_timer(self.steer_timer,
                                      now + self.sensor_interval)
        self._heartbeat()
        self._send_target(self._klipper_target())
    def _handle_shutdown(self):
        self.ready = False
        self.requested = self.device_requested = self.power = 0.
        self.link.request('off')
        self._heartbeat()
    def _handle_disconnect(self):
        self._handle_shutdown()
        self.link.close()
        self.status, self.bridge_status = dict(UNKNOWN_STATUS), {}
        for timer in (self.poll_timer, self.steer_timer):
            self.reactor.update_timer(timer, self.reactor.NEVER)
    def _is_ready(self):
        return self.ready and not self.printer.is_shutdown()
    def _klipper_target(self):
        if self.heater is None:
            return 0.
        return self.heater.get_temp(self.reactor.monotonic())[1]
    def _fault_text(self, fault):
        return self.fault_descriptions.get(fault, fault)
    def _report(self, msg, alarm):
        if alarm:
            self.gcode.respond_raw("!! Panda Breath: " + msg)
        else:
            self.gcode.respond_info("Panda Breath: " + msg)
    # Targets
    def _check_target(self, degrees):
        if degrees <= 0.:
            return
        if self.faults:
            raise self.printer.command_error(
                "Panda Breath fault: %s; the heater stays off until the fault"
                " clears" % (self._fault_text(self.faults[0]),))
        try:
            device_target(degrees, self.offset, self.max_target)
        except ValueError as e:
            at_device = ""
            if self.offset:
                at_device = (" is %.1f at the device (temperature_offset"
                             " %.1f)," % (degrees - self.offset, self.offset))
            raise self.printer.command_error(
                "Requested temperature (%.1f)%s %s for [heater_generic %s]"
                % (degrees, at_device, e, self.heater_name))
    def _device_target(self, target):
        # What the device is sent for Klipper's target.  With sensor: steered
        # (bounded) while that sensor is fresh, else the device's own scale.
        # Without, unchecked: a target set around set_temp (alter_target)
        # that the bridge cannot take is refused by it and Klipper takes the
        # bridge's back (_refused)
        if self.sensor is None:
            return max(0., target - self.offset) if target > 0. else 0.
        bias = self.offset   # the device's reading + offset, as without
        if self.sensor_fresh and self.bias is not None:
            bias = self.bias
        return steered_target(target, bias, self.sensor_max_above,
                              self.max_target)
    def _user_target(self, device):
        # The bridge's target on Klipper's scale: Klipper's own while the
        # bridge holds what was sent for it
        if device is not None and device == self.device_requested:
            return self.requested
        if (self.sensor is not None and self.requested
            and self.device_requested):
            # steered: the mapping in use
            return user_target(device, self.requested - self.device_requested)
        return user_target(device, self.offset)
    def _send_target(self, target):
        if not self._is_ready():
            self._enforce_off()
            return
        self.requested = target
        self.device_requested = self._device_target(target)
        self.link.request('set_target', {'target': self.device_requested})
    def _enforce_off(self):
        if self.link.waiting('off'):
            return False
        self.requested = self.device_requested = 0.
        self.link.request('off')
        return True
    def _heartbeat(self):
        self.link.request('heartbeat', {'ready': self._is_ready()})
    def _heartbeat_event(self, eventtime):
        if self.link.state != 'open':
            return self.reactor.NEVER
        self._heartbeat()
        if not self._is_ready():
            if self.bridge_target:
                self._enforce_off()
        elif self._klipper_target() != self.requested:
            self._send_target(self._klipper_target())
        return eventtime + HEARTBEAT_TIME
    # The bridge link (BridgeLink calls these)
    def _link_up(self, result, eventtime):
        if self.link_error is not None:
            self._report("bridge connected", False)
        self.link_error = None
        self.max_target = field(result, 'max_target', float)
        descriptions = field(result, 'fault_descriptions', dict) or {}
        self.fault_descriptions = {k: v for k, v in descriptions.items()
                                   if isinstance(v, str)}
        highest = (None if self.max_target is None
                   else self.max_target + self.offset)
        if (highest is not None and self.max_temp > highest
            and not self.max_target_warned):
            self.max_target_warned = True
            self._report("max_temp %.1f of [heater_generic %s] is above the"
                         " bridge's max_target %.1f%s; targets above %.1f will"
                         " be refused" % (
                             self.max_temp, self.heater_name, self.max_target,
                             " (temperature_offset %.1f)" % (self.offset,)
                             if self.offset else "", highest), False)
        self.link.request('subscribe')
        self._heartbeat()
        self._send_target(self._klipper_target())
        self.reactor.update_timer(self.heartbeat_timer,
                                  eventtime + HEARTBEAT_TIME)
    def _link_down(self, reason, alarm=None):
        self.status, self.bridge_status = dict(UNKNOWN_STATUS), {}
        self.device_link = self.bridge_target = None
        if reason != self.link_error:
            logging.info("panda_bridge: %s", reason)
            target = self._klipper_target()
            if alarm is None and target > 0.:
                self._report("%s while the chamber target is %.0f"
                             % (reason, target), True)
            else:
                self._report(reason, False)
        self.link_error = reason
    def _reply(self, method, msg):
        if method in TARGET_METHODS:
            self.bridge_target = field(msg['result'], 'target', float)
    def _refused(self, method, error):
        if method != 'set_target':
            self._report("bridge refused %s: %s" % (method, error), False)
            return
        # Klipper takes the bridge's target back so that the two never
        # disagree; a later request still outstanding decides instead
        if self.link.waiting(*TARGET_METHODS):
            return
        self.device_requested = self.bridge_target or 0.
        self.requested = target = user_target(self.device_requested,
                                              self.offset)
        if self.heater is not None and self._is_ready():
            self.heater.alter_target(target)
        self._report("the bridge refused the target: %s; the target is %.0f"
                     % (error, target), True)
    def _handle_status(self, st, eventtime):
        device, failsafe = st.get('device'), st.get('failsafe')
        connected = st.get('connected') is True
        raw = field(st, 'temperature', float) if connected else None
        target, note = field(st, 'target', float), field(st, 'note', str)
        tripped = field(failsafe, 'tripped', bool) is True
        self.status_time = eventtime
        running = field(st, 'heat_mode', str)
        if running not in (None, self.heat_mode, self.heat_mode_warned):
            self.heat_mode_warned = running
            self._report("heat_mode: %s in [panda_bridge], but the bridge runs"
                         " %s: restart panda-breath to apply it"
                         % (self.heat_mode, running), False)
        self.bridge_status = st
        self.status = {
            'device_connected': connected, 'device_temperature': raw,
            'temperature': corrected(raw, self.offset),
            'note': note, 'failsafe_tripped': tripped,
            'device_work_on': field(device, 'work_on', bool),
            'firmware': field(device, 'firmware', str)}
        heating = self._klipper_target() > 0.
        if connected and self.device_link == 'lost':
            self._report("device reachable again", False)
        elif not connected and self.device_link is True:
            self._report("the bridge lost the device (%s)"
                         % (note or self.host,), heating)
        self.device_link = connected or ('lost' if self.device_link else None)
        self._handle_faults(st.get('faults'), heating)
        if self.sensor is not None:
            temp = self._update_sensor(raw)
            self.status['temperature'] = temp if raw is not None else None
        temp = self.status['temperature']
        if temp is not None and self.callback is not None:
            if not self.min_temp <= temp <= self.max_temp:
                self.printer.invoke_shutdown(
                    "Panda Breath chamber temperature %.1f outside min_temp/"
                    "max_temp %.1f:%.1f of [heater_generic %s]"
                    % (temp, self.min_temp, self.max_temp, self.heater_name))
            self.callback(self.mcu.estimated_print_time(eventtime), temp)
        changed = target is not None and target != self.bridge_target
        if target is not None:
            self.bridge_target = target
        if not self._is_ready():
            if target and self._enforce_off():
                self._report("Klipper is not ready: turned off the target %.0f"
                             " set outside Klipper" % (target,), False)
            return
        if (not changed or self.heater is None
            or self.link.waiting(*TARGET_METHODS)):
            return
        # The bridge changed the target itself (failsafe, button, a CLI set):
        # adopt it, on Klipper's scale, without sending it back
        user = self._user_target(target)
        self.requested, self.device_requested = user, target
        self.heater.alter_target(user)
        if tripped and not target:
            self._report("failsafe turned the heater off: %s"
                         % (field(failsafe, 'reason', str) or note,), True)
        else:
            self._report("target is now %.0f, set outside Klipper: %s"
                         % (user, note or "by the bridge"), False)
    def _handle_faults(self, faults, heating):
        faults = [f for f in (faults if isinstance(faults, list) else [])
                  if isinstance(f, str)]
        new = [f for f in faults if f not in self.faults]
        if self.faults and not faults:
            self._report("device fault cleared", False)
        self.faults = faults
        if new and heating and self._is_ready():
            # As any Klipper heater whose sensor fails
            self.printer.invoke_shutdown("Panda Breath fault: %s" % (
                ", ".join(self._fault_text(f) for f in new),))
            return
        for fault in new:
            self.gcode.respond_raw("!! Panda Breath fault: %s; the heater"
                                   " stays off until it clears"
                                   % (self._fault_text(fault),))
    # sensor: the outer loop
    def _sensor_step(self, step, eventtime, interval):
        try:
            step(eventtime)
        except Exception:
            # Never leave heat on after a failure in the loop
            logging.exception("panda_bridge: the sensor loop failed")
            if self.heater is not None:
                self.heater.alter_target(0.)
            self._send_target(0.)
            self._report("the sensor loop failed (see klippy.log): the heater"
                         " is off", True)
        return eventtime + interval
    def _read_sensor(self, eventtime):
        # The other sensor's reading while fresh (its value changed within
        # sensor_stale_time), else None
        try:
            value = field(self.sensor.get_status(eventtime), 'temperature',
                          float)
            self.sensor_error = None
        except Exception as e:
            if str(e) != self.sensor_error:
                logging.exception("panda_bridge: reading %s failed",
                                  self.sensor_name)
            value, self.sensor_error = None, str(e)
        if value is None:
            self.sensor_value = None
            return None
        if value != self.sensor_value:
            if self.sensor_value is not UNSEEN:
                self.sensor_changed = eventtime
            self.sensor_value = value
        if (self.sensor_changed is None
            or eventtime - self.sensor_changed > self.sensor_stale_time):
            return None
        return value
    def _poll_sensor(self, eventtime):
        # Every REPORT_TIME, whatever the bridge sends: the other sensor's
        # freshness, and the fallback to the device's own sensor and back
        external = self._read_sensor(eventtime)
        fresh = external is not None
        was, self.sensor_fresh = self.sensor_fresh, fresh
        if fresh and self.sensor_alarm:
            self.sensor_alarm = False
            self._report("%s reads again (%.1f): steering the device's target"
                         " on it" % (self.sensor_name, external), False)
        elif not fresh and not self.sensor_alarm and (
                was or self._klipper_target() > 0.):
            self.sensor_alarm = True
            why = self.sensor_error or (
                "no reading" if self.sensor_value is None else
                "no new reading for %.0f s" % (self.sensor_stale_time,))
            self._report("%s is stale (%s): the heater falls back to the"
                         " device's own sensor (temperature_offset %.1f)"
                         % (self.sensor_name, why, self.offset), True)
        if fresh != bool(was):
            self._steer_to()
    def _update_sensor(self, raw):
        # From each status: the temperature Klipper sees, the bias samples
        if not self.sensor_fresh:
            return corrected(raw, self.offset)
        if raw is not None:
            self.bias_sum += self.sensor_value - raw
            self.bias_count += 1
        return self.sensor_value
    def _steer(self, eventtime):
        if self.bias_count:
            sample = self.bias_sum / self.bias_count
            self.bias = sample if self.bias is None else (
                self.bias + BIAS_GAIN * (sample - self.bias))
            self.bias_sum, self.bias_count = 0., 0
        self._steer_to()
    def _steer_to(self):
        target = self._klipper_target()
        if (self._is_ready() and self.link.linked and target > 0.
            and self._device_target(target) != self.device_requested):
            self._send_target(target)
    def get_status(self, eventtime):
        st = self.bridge_status if self.link.linked else {}
        since = (None if self.status_time is None
                 else max(0., eventtime - self.status_time))
        def aged(obj, key, left=False):
            # an age (or with left, a remaining time) the bridge reported,
            # as of now
            value = field(obj, key, float)
            if value is None or since is None:
                return None
            return round(max(0., value - since) if left else value + since, 1)
        failsafe, lease = st.get('failsafe'), st.get('lease')
        linked = self.link.linked
        return dict(self.status, **{
            'connected': linked, 'host': self.host, 'power': self.power,
            'faults': list(self.faults) if linked else [],
            'fault_descriptions': [self._fault_text(f) for f in self.faults]
                                  if linked else [],
            'target': self._user_target(self.bridge_target),
            'device_target': self.bridge_target,
            'temperature_offset': self.offset,
            'status_age': None if since is None else round(since, 1),
            'temperature_age': aged(st, 'temperature_age'),
            'mode': device_mode(st.get('device')),
            'mode_age': aged(st.get('device'), 'reported_age'),
            'heat_mode': field(st, 'heat_mode', str),
            'failsafe': {
                'tripped': self.status['failsafe_tripped'],
                'reason': field(failsafe, 'reason', str),
                'remaining': aged(failsafe, 'remaining', True),
                'controller_age': aged(failsafe, 'controller_age')},
            'drying_remaining': aged(lease, 'remaining', True),
            'temperature_source': (
                'sensor' if self.sensor is not None and self.sensor_fresh
                else 'device'),
            'sensor': None if self.sensor is None else {
                'name': self.sensor_name,
                'temperature': field({'t': self.sensor_value}, 't', float),
                'fresh': bool(self.sensor_fresh),
                'age': None if self.sensor_changed is None
                       else round(eventtime - self.sensor_changed, 1),
                'bias': None if self.bias is None else round(self.bias, 2)},
            'lease_state': field(lease, 'state', str)})

    # PANDA_BRIDGE_WAIT: TEMPERATURE_WAIT for the chamber, with a timeout
    cmd_PANDA_BRIDGE_WAIT_help = ("Wait until the chamber reaches MINIMUM=<C>;"
                                  " TIMEOUT=<s> (0: no limit) then goes on")
    def cmd_PANDA_BRIDGE_WAIT(self, gcmd):
        minimum = gcmd.get_float('MINIMUM')
        timeout = gcmd.get_float('TIMEOUT', 0., minval=0.)
        if self.heater is None or self.printer.get_start_args().get(
                'debugoutput') is not None:
            return
        toolhead = self.printer.lookup_object('toolhead')
        eventtime = start = self.reactor.monotonic()
        # As heaters.py waits: a pause per second, the toolhead's print time
        # kept current (idle_timeout counts the wait as activity)
        while not self.printer.is_shutdown():
            temp, target = self.heater.get_temp(eventtime)
            if temp >= minimum:
                return
            if not target:
                gcmd.respond_raw(
                    "!! Panda Breath: the chamber heater was turned off while"
                    " waiting for %.1f C (chamber at %.1f C); going on"
                    % (minimum, temp))
                return
            if timeout and eventtime - start >= timeout:
                gcmd.respond_raw(
                    "!! Panda Breath: chamber at %.1f C, not %.1f C after"
                    " %.0f s; going on without waiting longer"
                    % (temp, minimum, timeout))
                return
            toolhead.get_last_move_time()
            eventtime = self.reactor.pause(eventtime + 1.)

def load_config(config):
    return PandaBridge(config)
