"""Unit tests for klipper/panda_bridge.py against the Klipper stand-in and a
fake bridge on a real Unix socket."""
import logging, os, re, shutil, sys, tempfile, time, unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import klipper_standin as ks  # noqa: E402
from fake_bridge import FakeBridge, FakeBridgeProcess  # noqa: E402
from fake_bridge import status as fake_status  # noqa: E402

SHIPPED_CFG = os.path.join(ks.REPO, 'klipper', 'panda_bridge.cfg')
SET = "SET_HEATER_TEMPERATURE HEATER=panda_breath TARGET=%s"

try:
    import jinja2  # noqa: F401  (Klipper's macro engine)
    HAVE_JINJA2 = True
except ImportError:
    HAVE_JINJA2 = False


class Base(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='pbt', dir='/tmp')
        self.path = os.path.join(self.dir, 'bridge.sock')
        self.printer = self.bridge = None

    def tearDown(self):
        if self.printer is not None and self.pb_loaded():
            self.printer.disconnect()
        if self.bridge is not None:
            self.bridge.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def pb_loaded(self):
        return 'panda_bridge' in self.printer.objects

    def start(self, config=None, bridge=True, wait=True, start_args=None,
              max_target=60, ready=True):
        self.printer = ks.Printer(config or ks.panda_bridge_config(self.path),
                                  start_args)
        self.reactor = self.printer.get_reactor()
        self.gcode = self.printer.lookup_object('gcode')
        if bridge:
            self.bridge = FakeBridge(self.reactor, self.path, max_target)
        self.printer.connect(ready=ready)
        self.pb = self.printer.lookup_object('panda_bridge')
        self.heater = self.printer.lookup_object('heaters').lookup_heater(
            'panda_breath')
        if bridge and wait:
            self.wait_for(lambda: self.pb.bridge_target is not None)

    def wait_for(self, predicate, timeout=2., msg=None):
        self.assertTrue(self.reactor.run_until(predicate, timeout), msg)

    def run_for(self, seconds):
        self.reactor.pause(self.reactor.monotonic() + seconds)

    def console(self, pattern):
        return [m for m in self.gcode.output if re.search(pattern, m)]

    def run_gcode(self, script):
        self.gcode.run_script(script)

    def off_after(self, t0, timeout=2.):
        """Seconds from t0 until the bridge received an 'off'."""
        self.wait_for(lambda: self.bridge.methods('off', t0), timeout,
                      "no off within %.1f s" % (timeout,))
        return self.bridge.methods('off', t0)[0][0] - t0

    def load(self, text, **kw):
        self.printer = ks.Printer(text, **kw)
        self.reactor = self.printer.get_reactor()
        self.printer.connect()

    def assertConfigError(self, text, pattern, **kw):
        with self.assertRaises((ks.ConfigError, ks.PinsError)) as cm:
            self.load(text, **kw)
        self.assertRegex(str(cm.exception), pattern)


class TestTarget(Base):
    def test_target_reaches_bridge_within_100ms(self):
        self.start()
        for script, target in (
                ("SET_HEATER_TEMPERATURE HEATER=panda_breath TARGET=45", 45),
                ("SET_HEATER_TEMPERATURE HEATER=panda_breath TARGET=45", 45),
                ("TURN_OFF_HEATERS", 0), ("TURN_OFF_HEATERS", 0)):
            self.run_for(.2)
            count = len(self.bridge.methods('set_target'))
            t0 = time.monotonic()
            self.run_gcode(script)
            self.wait_for(lambda: len(self.bridge.methods('set_target'))
                          > count)
            when, params = self.bridge.methods('set_target')[-1]
            self.assertEqual(params, {'target': target})
            self.assertLess(when - t0, .1)
        # unchanged targets were still sent each time
        self.assertEqual(self.bridge.targets()[-4:], [45, 45, 0, 0])

    def test_range_check_runs_first(self):
        self.start()
        count = len(self.bridge.targets())
        with self.assertRaises(ks.CommandError):
            self.run_gcode("SET_HEATER_TEMPERATURE HEATER=panda_breath"
                           " TARGET=70")
        self.run_for(1.2)
        self.assertEqual(len(self.bridge.targets()), count)
        self.assertEqual(self.heater.target_temp, 0.)

    def test_backstop_catches_alter_target(self):
        self.start()
        self.heater.alter_target(40.)
        self.wait_for(lambda: 40 in self.bridge.targets(), 1.5)
        self.heater.set_control(self.heater.control)  # PID_CALIBRATE's path
        self.wait_for(lambda: self.bridge.targets()[-1] == 0, 1.5)

    def test_target_sent_on_connect(self):
        self.start()
        self.assertEqual([m for t, m, p in self.bridge.requests][:4],
                         ['hello', 'subscribe', 'heartbeat', 'set_target'])
        self.assertEqual(self.bridge.targets(), [0])


class TestTemperature(Base):
    def test_temperature_reaches_heater_in_print_time(self):
        self.start()
        self.bridge.notify(temperature=31)
        self.wait_for(lambda: self.heater.last_temp == 31)
        mcu = self.printer.lookup_object('mcu')
        now = mcu.estimated_print_time(self.reactor.monotonic())
        self.assertAlmostEqual(self.heater.last_temp_time, now, delta=.2)
        self.assertEqual(self.pb.get_status(0)['temperature'], 31)

    def test_heater_pwm_is_recorded_as_power(self):
        self.start()
        self.run_gcode("SET_HEATER_TEMPERATURE HEATER=panda_breath TARGET=45")
        self.bridge.notify(temperature=30)
        self.wait_for(lambda: self.pb.get_status(0)['power'] == 1.)
        self.assertEqual(self.heater.pwm_calls[-1][1], 1.)
        self.run_gcode("TURN_OFF_HEATERS")
        self.bridge.notify(temperature=31)
        self.wait_for(lambda: self.pb.get_status(0)['power'] == 0.)

    def test_null_or_disconnected_reports_nothing(self):
        self.start()
        self.bridge.notify(temperature=31)
        self.wait_for(lambda: self.heater.last_temp == 31)
        last = self.heater.last_temp_time
        self.bridge.notify(temperature=None)
        self.bridge.notify(temperature=33, connected=False)
        self.run_for(.3)
        self.assertEqual(self.heater.last_temp_time, last)
        self.assertEqual(self.heater.last_temp, 31)
        status = self.pb.get_status(0)
        self.assertIsNone(status['temperature'])
        self.assertFalse(status['device_connected'])
        self.assertEqual(len(self.console('lost the device')), 1)

    def test_steady_temperature_stays_fresh_and_never_replays(self):
        self.start()
        self.bridge.notify(temperature=31)
        self.bridge.push_every(.5)
        self.run_for(self.heater.stale_time + 1.5)
        self.assertGreater(self.heater.get_temp(self.reactor.monotonic())[0],
                           30.)
        self.bridge.push_every(0)
        self.run_for(self.heater.stale_time + .5)
        self.assertEqual(self.heater.get_temp(self.reactor.monotonic())[0],
                         0.)

    def test_out_of_range_reading_shuts_down(self):
        self.start()
        self.run_gcode("SET_HEATER_TEMPERATURE HEATER=panda_breath TARGET=45")
        self.bridge.notify(temperature=75)
        self.wait_for(lambda: self.printer.is_shutdown())
        self.assertIn('outside min_temp/max_temp', self.printer.shutdown_msg)
        self.wait_for(lambda: self.bridge.methods('off'))


class TestConnection(Base):
    def test_heartbeat_every_second(self):
        self.start()
        self.run_for(3.6)
        times = [t for t, p in self.bridge.methods('heartbeat')]
        self.assertGreaterEqual(len(times), 4)
        for a, b in zip(times, times[1:]):
            self.assertAlmostEqual(b - a, 1., delta=.25)

    def test_reconnect_with_backoff_and_resend_target(self):
        self.start()
        self.printer.extra.RETRY_MAX_TIME = 2.
        attempts = []
        orig_connect = self.pb.link._connect

        def connect(eventtime):
            attempts.append(eventtime)
            orig_connect(eventtime)
        self.pb.link._connect = connect
        self.run_gcode("SET_HEATER_TEMPERATURE HEATER=panda_breath TARGET=45")
        self.bridge.stop()
        self.wait_for(lambda: not self.pb.get_status(0)['connected'])
        self.run_for(6.)
        gaps = [b - a for a, b in zip(attempts, attempts[1:])]
        for gap, expected in zip(gaps, [1., 2., 2.]):
            self.assertAlmostEqual(gap, expected, delta=.25)
        self.assertLessEqual(len(self.console('bridge')), 3)
        start = self.reactor.monotonic()
        self.bridge.listen()
        self.wait_for(lambda: self.bridge.methods('set_target', start), 2.5)
        self.assertEqual(
            [m for t, m, p in self.bridge.requests if t >= start][:4],
            ['hello', 'subscribe', 'heartbeat', 'set_target'])
        self.assertEqual(self.bridge.targets()[-1], 45)
        self.assertTrue(self.console('bridge connected'))

    def test_bridge_absent_at_startup(self):
        self.start(bridge=False)
        self.run_for(2.)
        self.assertEqual(len(self.console('cannot reach the bridge')), 1)
        self.bridge = FakeBridge(self.reactor, self.path)
        self.wait_for(lambda: self.bridge.targets(), 6.)

    def test_shutdown_sends_off_and_stays_off(self):
        self.start()
        self.run_gcode("SET_HEATER_TEMPERATURE HEATER=panda_breath TARGET=45")
        self.printer.invoke_shutdown("test shutdown")
        self.wait_for(lambda: self.bridge.methods('off'), .1)
        start = self.reactor.monotonic()
        self.run_for(1.5)
        self.assertEqual(self.heater.target_temp, 45.)
        self.assertFalse([p for t, p in self.bridge.methods('set_target',
                                                            start)
                          if p['target']])
        self.assertTrue(self.bridge.methods('heartbeat', start))

    def test_disconnect_sends_off_and_closes(self):
        self.start()
        self.run_gcode("SET_HEATER_TEMPERATURE HEATER=panda_breath TARGET=45")
        fd = self.pb.link.fd_handle.fd
        self.printer.disconnect()
        self.assertIsNone(self.pb.link.sock)
        self.assertNotIn(fd, self.reactor._fds)
        self.wait_for(lambda: self.bridge.methods('off'), .1)
        self.wait_for(lambda: not self.bridge.live_conns())
        self.run_for(1.5)
        self.assertEqual(len(self.bridge.conns), 0)

    def test_write_blocked_then_bridge_closes(self):
        self.start()
        conn = self.bridge.live_conns()[0]
        self.reactor.set_fd_wake(conn.hdl, False, False)
        for i in range(5000):
            self.heater.set_temp(45.)
            if self.pb.link.write_wake:
                break
        self.assertTrue(self.pb.link.write_wake)
        self.run_for(.1)
        conn.close()
        self.wait_for(lambda: self.pb.link.state == 'open'
                      and len(self.bridge.live_conns()) == 1, 3.)

    def test_bridge_not_reading_is_dropped(self):
        self.start()
        conn = self.bridge.live_conns()[0]
        self.reactor.set_fd_wake(conn.hdl, False, False)
        for i in range(20000):
            self.heater.set_temp(45.)
        self.assertTrue(self.console('stopped reading'))
        self.wait_for(lambda: len(self.bridge.conns) == 2
                      and self.pb.link.state == 'open', 3.)

    def test_status_keys_and_no_pause(self):
        self.start()
        with self.reactor.assert_no_pause():
            status = self.pb.get_status(self.reactor.monotonic())
        self.assertEqual(set(status), {
            'connected', 'device_connected', 'temperature', 'target',
            'device_work_on', 'faults', 'firmware', 'host', 'note',
            'failsafe_tripped', 'power', 'device_temperature',
            'device_target', 'temperature_offset', 'status_age',
            'temperature_age', 'mode', 'mode_age', 'heat_mode', 'failsafe',
            'drying_remaining', 'lease_state', 'fault_descriptions',
            'temperature_source', 'sensor'})
        self.assertTrue(status['connected'])
        self.assertEqual(status['host'], '127.0.0.1')
        self.assertEqual(status['firmware'], 'V1.0.3')


class TestBridgeMessages(Base):
    def test_fault_printed_once_per_occurrence(self):
        self.start()
        for i in range(3):
            self.bridge.notify(faults=['chamber_sensor_short'])
        self.run_for(.3)
        lines = self.console(r'^!! Panda Breath fault: chamber temperature'
                             r' sensor short circuit; the heater stays off'
                             r' until it clears$')
        self.assertEqual(len(lines), 1)
        self.bridge.notify(faults=[])
        self.bridge.notify(faults=['chamber_sensor_short', 'heater_no_heat'])
        self.run_for(.3)
        self.assertEqual(len(self.console('^!! Panda Breath fault')), 3)
        self.assertEqual(self.pb.get_status(0)['faults'],
                         ['chamber_sensor_short', 'heater_no_heat'])

    def test_bridge_side_change_is_mirrored_without_echo(self):
        self.start()
        self.run_gcode("SET_HEATER_TEMPERATURE HEATER=panda_breath TARGET=45")
        self.wait_for(lambda: self.pb.bridge_target == 45)
        start = self.reactor.monotonic()
        self.bridge.notify(target=30, note="heater switched on at the device"
                           " (30 C); the failsafe applies")
        self.wait_for(lambda: self.heater.target_temp == 30)
        self.run_for(1.5)
        self.assertEqual(self.bridge.methods('set_target', start), [])
        self.assertEqual(len(self.console('target is now 30.*switched on')),
                         1)

    def test_failsafe_trip_is_mirrored_as_error_line(self):
        self.start()
        self.run_gcode("SET_HEATER_TEMPERATURE HEATER=panda_breath TARGET=45")
        self.wait_for(lambda: self.pb.bridge_target == 45)
        self.bridge.notify(target=0, failsafe={
            'timeout': 10, 'controller': False, 'controller_age': 11,
            'tripped': True, 'reason': 'controller silent for more than 10 s'})
        self.wait_for(lambda: self.heater.target_temp == 0)
        self.assertEqual(len(self.console(
            '^!! Panda Breath: failsafe.*controller silent')), 1)
        self.assertTrue(self.pb.get_status(0)['failsafe_tripped'])

    def test_no_mirroring_while_set_target_outstanding(self):
        self.start()
        self.bridge.replies['set_target'] = None
        self.run_gcode("SET_HEATER_TEMPERATURE HEATER=panda_breath TARGET=45")
        self.bridge.notify(target=0)
        self.run_for(.3)
        self.assertEqual(self.heater.target_temp, 45.)

    def test_error_reply_shown_on_console(self):
        self.start()
        self.bridge.replies['set_target'] = {'error': {
            'code': 'out_of_range', 'message': 'target 55 above maximum 50'}}
        with self.assertLogs(level='WARNING') as logs:
            self.run_gcode("SET_HEATER_TEMPERATURE HEATER=panda_breath"
                           " TARGET=55")
            self.wait_for(lambda: self.console(
                '^!! Panda Breath: the bridge refused the target: target 55'
                ' above maximum 50; the target is 0$'))
        self.assertIn('set_target failed', logs.output[0])
        self.assertEqual(self.pb.link.state, 'open')

    def test_partial_lines(self):
        self.start()
        line = (b'{"method":"status","params":{"connected":true,'
                b'"temperature":37,"target":0}}\n')
        for chunk in (line[:10], line[10:40], line[40:]):
            self.assertNotEqual(self.heater.last_temp, 37)
            self.bridge.send_raw(chunk)
            self.run_for(.05)
        self.assertEqual(self.heater.last_temp, 37)

    def test_garbage_is_ignored_and_logged_rate_limited(self):
        self.start()
        sock = self.pb.link.sock
        garbage = [b'not json', b'[1,2]', b'"text"', b'\xff\xfe',
                   b'{"method":"status","params":5}',
                   b'{"method":"status"}',
                   b'{"method":"status","params":{"connected":true,'
                   b'"temperature":"hot","faults":"x","device":3}}',
                   b'{"id":[1],"result":{}}', b'{"id":1,"result":"x"}',
                   b'[' * 5000 + b']' * 5000, b'{"method":"other"}']
        with self.assertLogs(level='WARNING') as logs:
            logging.warning("start")
            for g in garbage:
                self.bridge.send_raw(g + b'\n')
            self.run_for(.3)
        self.assertEqual(len([r for r in logs.output if 'bad input' in r]), 1)
        self.assertIs(self.pb.link.sock, sock)
        self.bridge.notify(temperature=29)
        self.wait_for(lambda: self.heater.last_temp == 29)

    def test_oversize_line_drops_connection(self):
        self.start()
        self.bridge.send_raw(b'x' * (70 * 1024))
        self.wait_for(lambda: self.console('over 64 KiB'))
        self.wait_for(lambda: self.pb.link.state == 'open'
                      and len(self.bridge.live_conns()) == 1, 3.)
        self.bridge.send_raw(b'{' + b' ' * (65 * 1024) + b'}\n')
        self.wait_for(lambda: len(self.console('over 64 KiB')) == 2)


class TestConfig(Base):
    def test_heat_mode_and_lease_hours_are_the_services(self):
        # Read by panda-breath-launch; the extra checks them and says when
        # the running bridge differs (the service was not restarted)
        self.assertConfigError(
            ks.panda_bridge_config(self.path, options='heat_mode: lease\n'),
            r"heat_mode")
        self.assertConfigError(
            ks.panda_bridge_config(self.path, options='lease_hours: 13\n'),
            r"lease_hours")
        self.start(ks.panda_bridge_config(
            self.path, options='heat_mode: drying-lease\nlease_hours: 3\n'))
        self.bridge.notify(heat_mode='always-on')
        self.wait_for(lambda: self.console(r"restart panda-breath"))
        self.bridge.notify(heat_mode='always-on')
        self.run_for(.3)
        self.assertEqual(len(self.console(
            r"heat_mode: drying-lease in \[panda_bridge\], but the bridge runs"
            r" always-on: restart panda-breath to apply it")), 1)

    def test_wrong_pin_name(self):
        self.assertConfigError(
            (ks.panda_bridge_config(self.path)).replace('panda_bridge:heater',
                                            'panda_bridge:fan'),
            r"heater_pin: panda_bridge:heater")

    def test_chip_rejects_other_pins(self):
        self.start(bridge=False)
        pins = self.printer.lookup_object('pins')
        for pin_type, desc in (('pwm', 'panda_bridge:fan'),
                               ('pwm', '!panda_bridge:heater'),
                               ('digital_out', 'panda_bridge:heater')):
            params = pins.parse_pin(desc, can_invert=True)
            with self.assertRaisesRegex(ks.ConfigError,
                                        r"heater_pin: panda_bridge:heater"):
                self.pb.setup_pin(pin_type, params)
        with self.assertRaisesRegex(ks.ConfigError, r"only be the heater_pin"):
            self.pb.setup_pin('pwm', pins.parse_pin('panda_bridge:heater'))

    def test_second_heater(self):
        self.assertConfigError(
            ks.panda_bridge_config(self.path) + """
[heater_generic chamber2]
heater_pin: panda_bridge:heater
sensor_type: panda_bridge
control: watermark
min_temp: 0
max_temp: 60
""", r"only one heater can use sensor_type: panda_bridge.*"
     r"\[heater_generic panda_breath\] already does")

    def test_sensor_only_for_heater_generic(self):
        self.assertConfigError(
            "[panda_bridge]\n[temperature_sensor chamber]\n"
            "sensor_type: panda_bridge\n",
            r"only for a \[heater_generic panda_breath\]")

    def test_bad_socket_paths(self):
        self.assertConfigError(
            ks.panda_bridge_config('panda_bridge.sock'), r"must be an absolute path")
        self.assertConfigError(
            ks.panda_bridge_config('/tmp/' + 'x' * 110), r"too long for a Unix socket")

    def test_panda_bridge_after_heater(self):
        text = ks.panda_bridge_config(self.path)
        head, heater = text.split('[heater_generic')
        self.assertConfigError('[heater_generic' + heater + head,
                               r"Unknown temperature sensor 'panda_bridge'")

    def test_heater_missing(self):
        self.assertConfigError("[panda_bridge]\n",
                               r"needs a \[heater_generic panda_breath\]")

    def test_unknown_option_rejected(self):
        self.assertConfigError(
            (ks.panda_bridge_config(self.path)).replace('host:', 'hots:'),
            r"Option 'hots' is not valid in section 'panda_bridge'")

    def test_upstream_heater(self):
        ks.Heater.FLAVOUR = 'upstream'
        try:
            self.start()
            self.bridge.notify(temperature=33)
            self.wait_for(lambda: self.heater.last_temp == 33)
        finally:
            ks.Heater.FLAVOUR = 'u1'


class TestShippedConfig(Base):
    def shipped(self):
        with open(SHIPPED_CFG) as f:
            text = f.read()
        text, n = re.subn(r'(?m)^socket: .*$', 'socket: ' + self.path, text)
        self.assertEqual(n, 1)
        return text

    def test_loads_in_order_with_tuned_verify_heater(self):
        text = self.shipped()
        self.assertLess(text.index('[panda_bridge]'),
                        text.index('[heater_generic panda_breath]'))
        self.start(text)
        vh = self.printer.lookup_object('verify_heater panda_breath')
        self.assertEqual(self.heater.min_temp, 0.)
        self.assertEqual(self.heater.max_temp, 60.)
        self.assertIsInstance(self.heater.control, ks.ControlBangBang)
        self.assertGreaterEqual(vh.check_gain_time, 300.)
        self.assertLessEqual(vh.heating_gain, 1.)
        self.assertEqual(self.pb.host, 'PandaBreath.local')

    @unittest.skipUnless(HAVE_JINJA2, "jinja2 (Klipper's macro engine)"
                         " is not installed")
    def test_macros(self):
        self.start(self.shipped())
        self.run_gcode("M141 S40")
        self.wait_for(lambda: self.bridge.targets()[-1] == 40)
        self.run_gcode("M141 S0")
        self.wait_for(lambda: self.bridge.targets()[-1] == 0)
        self.bridge.notify(temperature=25)
        self.bridge.push_every(.5)
        warm = self.reactor.register_timer(
            lambda e: self.bridge.notify(temperature=40) or self.reactor.NEVER,
            self.reactor.monotonic() + 1.5)
        t0 = self.reactor.monotonic()
        self.run_gcode("M191 S40")
        self.assertGreater(self.reactor.monotonic() - t0, 1.4)
        self.assertLess(self.reactor.monotonic() - t0, 5.)
        self.assertEqual(self.bridge.targets()[-1], 40)
        self.reactor.unregister_timer(warm)
        self.run_gcode("PANDA_BRIDGE_PREHEAT TARGET=35")
        self.wait_for(lambda: self.bridge.targets()[-1] == 35)
        self.assertTrue(self.console('preheating the chamber to 35 C'))
        self.run_gcode("PANDA_BRIDGE_PREHEAT TARGET=38 WAIT=1")
        self.wait_for(lambda: self.bridge.targets()[-1] == 38)
        self.assertEqual(self.heater.target_temp, 38.)


class TestHazard3NotReadyEnforcesOff(Base):
    """Issue 9 hazard 3: a Klipper that is shut down (M112, MCU error,
    runaway), not ready yet, or in its startup-error state controls
    nothing: every heartbeat says so, and any target the bridge reports
    (a CLI set, the device's always-on button) is answered with off."""

    def shut_down_while_heating(self, msg="Shutdown due to M112 command"):
        self.start()
        self.run_gcode(SET % 45)
        self.wait_for(lambda: self.pb.bridge_target == 45)
        t_shutdown = self.reactor.monotonic()
        self.printer.invoke_shutdown(msg)
        self.wait_for(lambda: self.bridge.status['target'] == 0, .5)
        self.run_for(.3)
        return t_shutdown

    def test_hazard3_shutdown_then_cli_set_is_answered_with_off(self):
        self.shut_down_while_heating()
        t0 = self.reactor.monotonic()
        self.bridge.cli_set(50)
        self.assertLess(self.off_after(t0), 1.)
        self.wait_for(lambda: self.bridge.status['target'] == 0)
        self.assertEqual(len(self.console(
            '^// Panda Breath: Klipper is not ready: turned off the target'
            ' 50 set outside Klipper$')), 1)

    def test_hazard3_m112_then_cli_set_and_button_push_are_answered_with_off(
            self):
        t_shutdown = self.shut_down_while_heating()
        for push in (lambda: self.bridge.cli_set(50),
                     lambda: self.bridge.button_on(40)):
            self.run_for(.5)
            t0 = self.reactor.monotonic()
            push()
            self.assertLess(self.off_after(t0), 1.)
            self.wait_for(lambda: self.bridge.status['target'] == 0)
        self.assertEqual({p['ready'] for t, p in
                          self.bridge.methods('heartbeat', t_shutdown)},
                         {False})

    def test_hazard3_mcu_error_shutdown_then_button_push_is_answered_with_off(
            self):
        self.shut_down_while_heating("MCU 'mcu' shutdown: Timer too close")
        t0 = self.reactor.monotonic()
        self.bridge.button_on(40)
        self.assertLess(self.off_after(t0), 1.)

    def test_hazard3_heartbeats_say_ready_only_while_ready(self):
        self.start(ready=False)         # klippy:connect done, not ready yet
        self.assertEqual(self.bridge.methods('hello')[0][1],
                         {'client': 'klipper', 'controller': True,
                          'ready': False})
        self.run_for(1.3)
        beats = self.bridge.methods('heartbeat')
        self.assertGreaterEqual(len(beats), 2)
        self.assertEqual([p for t, p in beats], [{'ready': False}] * len(beats))
        self.assertEqual(self.bridge.targets(), [])
        t0 = self.reactor.monotonic()
        self.printer.ready()
        self.wait_for(lambda: self.bridge.methods('heartbeat', t0), .2)
        self.assertEqual(self.bridge.methods('heartbeat', t0)[0][1],
                         {'ready': True})
        self.run_for(1.3)
        self.assertEqual({p['ready'] for t, p in
                          self.bridge.methods('heartbeat', t0)}, {True})
        self.assertTrue(self.bridge.live_conns()[0].ready)
        t1 = self.reactor.monotonic()
        self.printer.invoke_shutdown("MCU 'mcu' shutdown: Timer too close")
        self.wait_for(lambda: self.bridge.methods('heartbeat', t1), .2)
        self.run_for(1.3)
        self.assertEqual({p['ready'] for t, p in
                          self.bridge.methods('heartbeat', t1)}, {False})
        self.assertFalse(self.bridge.live_conns()[0].ready)

    def test_hazard3_before_ready_bridge_target_is_answered_with_off(self):
        self.start(ready=False)
        for push in (lambda: self.bridge.cli_set(45),
                     lambda: self.bridge.button_on(40)):
            t0 = self.reactor.monotonic()
            push()
            self.assertLess(self.off_after(t0), 1.)
            self.wait_for(lambda: self.bridge.status['target'] == 0)
        self.assertEqual(self.heater.target_temp, 0.)

    def test_hazard3_startup_error_state_enforces_off(self):
        # A config error after [panda_bridge] has loaded: klippy stays in
        # its error state, reactor running, until RESTART
        self.printer = ks.Printer(ks.panda_bridge_config(
            self.path, extra='[no_such_module]\nx: 1\n'))
        self.reactor = self.printer.get_reactor()
        self.gcode = self.printer.lookup_object('gcode')
        self.bridge = FakeBridge(self.reactor, self.path)
        with self.assertRaisesRegex(ks.ConfigError, 'no_such_module'):
            self.printer.connect()
        self.assertEqual(self.printer.get_state_message()[1], 'error')
        self.wait_for(lambda: self.bridge.methods('heartbeat'))
        self.assertFalse(self.bridge.methods('hello')[0][1]['ready'])
        t0 = self.reactor.monotonic()
        self.bridge.button_on(45)
        self.assertLess(self.off_after(t0), 1.)
        self.run_for(1.2)
        self.assertEqual({p['ready'] for t, p in
                          self.bridge.methods('heartbeat')}, {False})
        self.assertEqual(self.bridge.targets(), [])

    def test_hazard3_off_is_repeated_from_the_heartbeat_timer(self):
        # A bridge that keeps its target after off: the heartbeat timer
        # repeats off every second, without any further status
        self.shut_down_while_heating()
        self.bridge.replies['off'] = {'result': {'target': 50}}
        t0 = self.reactor.monotonic()
        self.bridge.cli_set(50)
        self.wait_for(lambda: len(self.bridge.methods('off', t0)) >= 3, 3.5)
        times = [t for t, p in self.bridge.methods('off', t0)]
        self.assertLess(times[0] - t0, 1.)
        for a, b in zip(times, times[1:]):
            self.assertLess(b - a, 1.3)


class TestHazard9TargetAgreement(Base):
    """Issue 9 hazard 9: Klipper's target and the bridge's never disagree
    for more than a second."""

    def test_hazard9_max_temp_above_max_target_refuses_before_klipper_changes(
            self):
        self.start(ks.panda_bridge_config(self.path, max_temp=80))
        self.run_gcode(SET % 40)
        self.wait_for(lambda: self.pb.bridge_target == 40)
        count = len(self.bridge.targets())
        with self.assertRaisesRegex(
                ks.CommandError, r"^Requested temperature \(65\.0\) above the"
                r" bridge's max_target \(60\.0\) for \[heater_generic"
                r" panda_breath\]$"):
            self.run_gcode(SET % 65)
        self.assertEqual(self.heater.target_temp, 40.)
        self.assertFalse(self.printer.is_shutdown())
        self.run_for(1.2)
        self.assertEqual(len(self.bridge.targets()), count)
        self.assertEqual(self.heater.target_temp, 40.)
        self.run_gcode(SET % 60)
        self.wait_for(lambda: self.bridge.targets()[-1] == 60)

    def test_hazard9_max_temp_above_max_target_is_warned_once(self):
        warning = (r"^// Panda Breath: max_temp 80\.0 of \[heater_generic"
                   r" panda_breath\] is above the bridge's max_target 60\.0;"
                   r" targets above 60\.0 will be refused$")
        self.start(ks.panda_bridge_config(self.path, max_temp=80))
        self.assertEqual(len(self.console(warning)), 1)
        self.bridge.stop()
        self.wait_for(lambda: not self.pb.get_status(0)['connected'])
        self.bridge.listen()
        self.wait_for(lambda: len(self.bridge.methods('hello')) == 2, 3.)
        self.run_for(.2)
        self.assertEqual(len(self.console(warning)), 1)

    def test_hazard9_no_warning_when_max_temp_is_within_max_target(self):
        self.start()
        self.assertFalse(self.console('max_target'))

    def test_hazard9_refused_request_readopts_bridge_target(self):
        self.start()
        self.run_gcode(SET % 40)
        self.wait_for(lambda: self.pb.bridge_target == 40)
        self.bridge.replies['set_target'] = {'error': {
            'code': 'device_fault', 'message': 'device fault latched'}}
        t0 = self.reactor.monotonic()
        self.run_gcode(SET % 45)
        self.wait_for(lambda: self.heater.target_temp == 40., 1.)
        self.assertLess(self.reactor.monotonic() - t0, 1.)
        self.assertEqual(len(self.console(
            '^!! Panda Breath: the bridge refused the target: device fault'
            ' latched; the target is 40$')), 1)
        self.run_for(1.5)     # agreed: nothing re-sent, nothing changed
        self.assertEqual(len(self.bridge.methods('set_target', t0)), 1)
        self.assertEqual(self.heater.target_temp, 40.)

    def test_hazard9_later_request_decides_after_a_refusal(self):
        self.start()
        self.bridge.max_target = 50   # the bridge now refuses 55
        self.run_gcode(SET % 55)
        self.run_gcode(SET % 45)
        self.wait_for(lambda: self.pb.bridge_target == 45)
        self.run_for(1.2)
        self.assertEqual(self.heater.target_temp, 45.)
        self.assertEqual(self.bridge.status['target'], 45)

    def test_hazard9_bridge_restarted_with_lower_max_target(self):
        self.start()
        self.run_gcode(SET % 45)
        self.wait_for(lambda: self.pb.bridge_target == 45)
        self.bridge.stop()
        self.wait_for(lambda: not self.pb.get_status(0)['connected'])
        self.bridge.max_target = 40
        self.bridge.status = fake_status()
        self.bridge.listen()
        # Klipper's 45 is refused on reconnect: Klipper takes the bridge's 0
        self.wait_for(lambda: self.heater.target_temp == 0., 3.)
        self.assertTrue(self.console(r'^!! Panda Breath: the bridge refused'
                                     r' the target: target 45 outside 0\.\.40'))
        with self.assertRaisesRegex(ks.CommandError, 'max_target'):
            self.run_gcode(SET % 45)
        self.run_gcode(SET % 40)
        self.wait_for(lambda: self.bridge.status['target'] == 40)


class TestHazard5FaultInterlock(Base):
    """Issue 9 hazard 5: a device fault while heating shuts Klipper down
    naming it; without a target it is one !! line and heat is refused until
    the fault clears."""

    def test_hazard5_fault_with_target_shuts_down_naming_it(self):
        self.start()
        self.run_gcode(SET % 45)
        self.wait_for(lambda: self.pb.bridge_target == 45)
        self.bridge.notify(faults=['ptc_sensor_open'], target=0)
        self.wait_for(self.printer.is_shutdown)
        self.assertEqual(self.printer.shutdown_msg, "Panda Breath fault:"
                         " heater (PTC) temperature sensor open circuit")
        self.wait_for(lambda: self.bridge.methods('off'))
        self.wait_for(lambda: not self.bridge.live_conns()[0].ready)

    def test_hazard5_fault_without_target_is_one_line_and_refuses_heat(self):
        self.start()
        self.bridge.notify(faults=['chamber_sensor_open'])
        self.bridge.notify(faults=['chamber_sensor_open'])
        self.run_for(.3)
        self.assertEqual(len(self.console(
            '^!! Panda Breath fault: chamber temperature sensor open circuit;'
            ' the heater stays off until it clears$')), 1)
        self.assertFalse(self.printer.is_shutdown())
        count = len(self.bridge.targets())
        with self.assertRaisesRegex(
                ks.CommandError, '^Panda Breath fault: chamber temperature'
                ' sensor open circuit; the heater stays off until the fault'
                ' clears$'):
            self.run_gcode(SET % 40)
        self.assertEqual(self.heater.target_temp, 0.)
        self.run_gcode("TURN_OFF_HEATERS")    # off is never refused
        self.run_for(.2)
        self.assertEqual(self.bridge.targets()[count:], [0])
        self.bridge.notify(faults=[])
        self.wait_for(lambda: self.console('^// Panda Breath: device fault'
                                           ' cleared$'))
        self.run_gcode(SET % 40)
        self.wait_for(lambda: self.bridge.targets()[-1] == 40)

    def test_hazard5_fault_texts_come_from_hello_else_the_raw_name(self):
        self.start(wait=False)
        self.bridge.fault_descriptions = {
            'ptc_sensor_short': 'PTC sensor shorted (from the bridge)'}
        self.wait_for(lambda: self.pb.bridge_target is not None)
        self.bridge.notify(faults=['ptc_sensor_short', 'fault_code_7'])
        self.run_for(.3)
        self.assertTrue(self.console(
            r'^!! Panda Breath fault: PTC sensor shorted \(from the bridge\)'))
        self.assertTrue(self.console('^!! Panda Breath fault: fault_code_7;'))


class TestHazard10Lesser(Base):
    """Issue 9 hazard 10: batch mode is inert; losing the bridge or the
    device with a target set is an error line."""

    def test_hazard10_batch_mode_never_connects(self):
        self.start(start_args={'debugoutput': '/dev/null'}, wait=False)
        self.assertIn('panda_bridge',
                      self.printer.lookup_object('pins').chips)
        self.run_gcode(SET % 45)      # as a G-code file would
        self.assertEqual(self.heater.target_temp, 45.)
        self.run_for(2.)
        self.assertEqual(self.bridge.accepted, 0)
        self.assertEqual(self.bridge.requests, [])
        self.assertIsNone(self.pb.link.sock)

    def test_hazard10_bridge_lost_with_target_is_an_error_line(self):
        self.start()
        self.run_gcode(SET % 45)
        self.wait_for(lambda: self.pb.bridge_target == 45)
        self.bridge.stop()
        self.wait_for(lambda: self.console(
            '^!! Panda Breath: the bridge closed the connection while the'
            ' chamber target is 45$'))

    def test_hazard10_bridge_lost_without_target_is_info(self):
        self.start()
        self.bridge.stop()
        self.wait_for(lambda: self.console(
            '^// Panda Breath: the bridge closed the connection$'))
        self.run_for(1.)
        self.assertFalse(self.console('^!!'))

    def test_hazard10_device_lost_with_target_is_an_error_line(self):
        self.start()
        self.run_gcode(SET % 45)
        self.wait_for(lambda: self.pb.bridge_target == 45)
        self.bridge.notify(connected=False, note='device link down')
        self.wait_for(lambda: self.console(
            r'^!! Panda Breath: the bridge lost the device \(device link'
            r' down\)$'))


class TestApiV2(Base):
    def test_nothing_but_hello_until_the_protocol_is_known(self):
        self.start(wait=False)
        self.bridge.protocol = 1
        self.run_gcode(SET % 45)
        self.wait_for(lambda: self.console(
            'the bridge speaks protocol 1, this module expects 2; install'
            ' matching versions'), 3.)
        self.run_for(2.)
        self.assertEqual({m for t, m, p in self.bridge.requests}, {'hello'})
        self.assertEqual(len(self.console('speaks protocol')), 1)
        self.assertGreaterEqual(self.bridge.accepted, 2)   # retried

    def test_nothing_but_hello_while_hello_is_unanswered(self):
        self.start(wait=False, ready=False)
        self.bridge.replies['hello'] = None
        self.wait_for(lambda: self.bridge.methods('hello'))
        self.printer.ready()
        self.run_gcode(SET % 45)
        self.printer.invoke_shutdown("Shutdown due to M112 command")
        self.run_for(1.5)
        self.assertEqual([m for t, m, p in self.bridge.requests], ['hello'])
        self.assertFalse(self.pb.get_status(0)['connected'])

    def test_heartbeat_without_ready_is_refused_by_the_fake(self):
        # The fake enforces the contract the extra is tested against
        self.start()
        reply = self.bridge._reply(self.bridge.live_conns()[0], 'heartbeat',
                                   {})
        self.assertEqual(reply['error']['code'], 'invalid_params')


class TestIssue10Install(Base):
    """Issue 10 items 2 and 5: the socket the installer uses, the bridge's
    user on the other end, and never two controllers for one device."""

    def test_default_socket_is_the_installed_one(self):
        text = ks.panda_bridge_config(self.path).replace(
            'socket: %s\n' % (self.path,), '')
        self.start(text, bridge=False)
        self.assertEqual(self.pb.link.path, '/run/panda-breath/bridge.sock')
        with open(SHIPPED_CFG) as f:
            self.assertIn('\nsocket: /run/panda-breath/bridge.sock\n',
                          f.read())

    def test_socket_outside_the_bridges_directories_is_a_config_error(self):
        for path in ('/home/pi/bridge.sock', '/tmp/../etc/bridge.sock',
                     '/runner/bridge.sock'):
            self.assertConfigError(
                ks.panda_bridge_config(path),
                r"^socket: '%s' in \[panda_bridge\] is outside /tmp, /run and"
                r" /var/run, where the bridge can create its socket; write"
                r" 'socket: /run/panda-breath/bridge\.sock'" % (re.escape(
                    path),))
        for path in ('/var/run/pb.sock', '/run/panda-breath/bridge.sock'):
            self.load(ks.panda_bridge_config(path))
            self.printer.disconnect()

    def test_unknown_bridge_user_is_a_config_error(self):
        self.assertConfigError(
            ks.panda_bridge_config(self.path, options='bridge_user: no_such_'
                                   'user_x\n'),
            r"bridge_user: 'no_such_user_x' in \[panda_bridge\] is not a user")

    def impostor(self, options=''):
        """A bridge run by another user; root can only be that by
        starting one as nobody."""
        if os.getuid() == 0:
            os.chmod(self.dir, 0o777)
            self.proc = FakeBridgeProcess(self.path, ['--unsolicited',
                                                      '--push', '.2'],
                                          user=65534)
            self.addCleanup(self.proc.stop)
            self.start(ks.panda_bridge_config(self.path, options=options),
                       bridge=False)
        else:
            self.start(ks.panda_bridge_config(
                self.path, options='bridge_user: 65534\n'), bridge=False)
            self.bridge = FakeBridge(self.reactor, self.path,
                                     unsolicited=True)
            self.bridge.push_every(.2)

    def test_peer_of_another_user_is_refused(self):
        self.impostor()
        attempts = []
        connect = self.pb.link._connect
        self.pb.link._connect = lambda e: attempts.append(e) or connect(e)
        self.run_gcode(SET % 45)
        self.wait_for(lambda: len(attempts) >= 3, 6.)
        lines = self.console('refused the process at %s' % (self.path,))
        self.assertEqual(len(lines), 1, self.gcode.output)
        self.assertRegex(lines[0], r"^// Panda Breath: refused the process at"
                         r" \S+ \(pid \d+\): it runs as \S+ \(uid \d+\), not"
                         r" as root.*; if the bridge runs as that user, write"
                         r" 'bridge_user: \d+' in \[panda_bridge\]$")
        self.assertFalse(self.console('^!!'))
        self.assertEqual(self.heater.last_temp_time, 0.)  # never fed
        self.assertNotEqual(self.pb.link.state, 'open')

    @unittest.skipUnless(os.getuid() == 0, "needs root to run as nobody")
    def test_bridge_user_accepts_that_user(self):
        self.impostor(options='bridge_user: nobody\n')
        self.wait_for(lambda: self.heater.last_temp == 25, 3.)
        self.assertEqual(self.pb.link.state, 'open')
        requests = self.proc.requests()
        self.assertEqual([r[1] for r in requests][:4],
                         ['hello', 'subscribe', 'heartbeat', 'set_target'])

    def test_firmware_integration_section_is_a_config_error(self):
        cfg = ks.panda_bridge_config(self.path)
        for section in ('panda_breath', 'dragonbreath'):
            other = '[%s]\nhost: 192.168.1.20\n' % (section,)
            for text in (other + cfg, cfg + other):
                self.assertConfigError(
                    text, r"^\[panda_bridge\] cannot run together with the"
                    r" firmware's built-in Panda Breath integration \(\[%s\]"
                    r" is loaded\): two controllers must never drive one"
                    r" device\.  On the Snapmaker U1 open the web UI's"
                    r" Firmware Config -> chamber heater \(PandaBreath /"
                    r" DragonBreath Chamber Heater\) -> Disabled" % (section,),
                    firmware_modules=('panda_breath',))

    def test_firmware_integration_object_is_a_config_error(self):
        # The firmware's module loaded by another of its sections
        self.printer = ks.Printer(ks.panda_bridge_config(self.path))
        self.printer.add_object('panda_breath', object())
        with self.assertRaisesRegex(ks.ConfigError, r"\(\[panda_breath\] is"
                                    r" loaded\).*-> Disabled"):
            self.printer.connect()


if __name__ == '__main__':
    unittest.main()
