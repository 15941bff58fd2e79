"""Temperature correction (temperature_offset, sensor:) and the readable
status of printer.panda_bridge: pure arithmetic, the extra against the
Klipper stand-in and a fake bridge, and end to end with the real simulator
and bridge (skipped without deno)."""
import os, sys, time, unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import klipper_standin as ks  # noqa: E402
from fake_bridge import FakeBridge  # noqa: E402
from test_panda_bridge import Base, SET  # noqa: E402
import test_e2e  # noqa: E402

pb = ks.load_extra()


class TestOffsetArithmetic(unittest.TestCase):
    def test_reading_is_raised_by_the_offset(self):
        self.assertEqual(pb.corrected(30., 5.), 35.)
        self.assertEqual(pb.corrected(30., -2.5), 27.5)
        self.assertIsNone(pb.corrected(None, 5.))

    def test_target_is_converted_back_for_the_device(self):
        self.assertEqual(pb.device_target(45., 5.), 40.)
        self.assertEqual(pb.device_target(45., -5.), 50.)
        self.assertEqual(pb.device_target(45., 0.), 45.)
        self.assertEqual(pb.device_target(0., 5.), 0.)
        self.assertEqual(pb.device_target(0., -5.), 0.)

    def test_round_trip(self):
        for offset in (-10., -4.5, 0., 3., 10.):
            for target in (0., 12., 40., 45.5, 55.):
                device = pb.device_target(target, offset)
                self.assertEqual(pb.user_target(device, offset), target)
        self.assertIsNone(pb.user_target(None, 5.))
        self.assertEqual(pb.user_target(0., 5.), 0.)

    def test_max_target_applies_after_conversion(self):
        self.assertEqual(pb.device_target(65., 5., 60.), 60.)
        with self.assertRaisesRegex(ValueError, r"above the bridge's"
                                    r" max_target \(60\.0\)"):
            pb.device_target(56., -5., 60.)
        self.assertEqual(pb.device_target(55., -5., 60.), 60.)

    def test_positive_target_never_becomes_off(self):
        with self.assertRaisesRegex(ValueError, "would turn it off"):
            pb.device_target(5., 5.)
        with self.assertRaisesRegex(ValueError, "would turn it off"):
            pb.device_target(5.9, 5.)
        self.assertEqual(pb.device_target(6., 5.), 1.)

    def test_mode_in_words(self):
        self.assertEqual(pb.device_mode({'work_on': False, 'work_mode': 2}),
                         'off')
        self.assertEqual(pb.device_mode({'work_on': True, 'work_mode': 2}),
                         'always-on')
        self.assertEqual(pb.device_mode({'work_on': True, 'work_mode': 3}),
                         'drying')
        self.assertEqual(pb.device_mode({'work_on': True, 'work_mode': 3,
                                         'firmware': 'V1.0.0'}), 'auto')
        self.assertEqual(pb.device_mode({'work_on': True, 'work_mode': 9}),
                         'mode 9')
        self.assertIsNone(pb.device_mode({'work_on': None}))
        self.assertIsNone(pb.device_mode(None))


class OffsetBase(Base):
    def start_offset(self, offset, max_temp=60, **kw):
        self.start(ks.panda_bridge_config(
            self.path, max_temp=max_temp,
            options='temperature_offset: %s\n' % (offset,)), **kw)


class TestOffset(OffsetBase):
    def test_klipper_sees_the_corrected_reading(self):
        self.start_offset(5)
        self.bridge.notify(temperature=30)
        self.wait_for(lambda: self.heater.last_temp == 35.)
        status = self.pb.get_status(self.reactor.monotonic())
        self.assertEqual(status['temperature'], 35.)
        self.assertEqual(status['device_temperature'], 30.)
        self.assertEqual(status['temperature_offset'], 5.)

    def test_target_sent_on_the_device_scale(self):
        self.start_offset(5)
        self.run_gcode(SET % 45)
        self.wait_for(lambda: self.bridge.targets()[-1] == 40)
        self.wait_for(lambda: self.pb.bridge_target == 40)
        status = self.pb.get_status(self.reactor.monotonic())
        self.assertEqual((status['target'], status['device_target']),
                         (45., 40.))
        self.assertEqual(self.heater.target_temp, 45.)
        self.run_for(1.5)   # the heartbeat backstop agrees: nothing re-sent
        self.assertEqual(self.bridge.targets()[-1], 40)
        self.run_gcode("TURN_OFF_HEATERS")
        self.wait_for(lambda: self.bridge.targets()[-1] == 0)

    def test_max_target_checked_after_conversion(self):
        self.start_offset(-5)
        count = len(self.bridge.targets())
        with self.assertRaisesRegex(
                ks.CommandError, r"^Requested temperature \(58\.0\) is 63\.0"
                r" at the device \(temperature_offset -5\.0\), above the"
                r" bridge's max_target \(60\.0\) for \[heater_generic"
                r" panda_breath\]$"):
            self.run_gcode(SET % 58)
        self.assertEqual(self.heater.target_temp, 0.)
        self.run_for(1.2)
        self.assertEqual(len(self.bridge.targets()), count)
        self.run_gcode(SET % 55)
        self.wait_for(lambda: self.bridge.targets()[-1] == 60)

    def test_positive_target_that_would_be_off_is_refused(self):
        self.start_offset(8)
        with self.assertRaisesRegex(
                ks.CommandError, r"\(5\.0\) is -3\.0 at the device"
                r" \(temperature_offset 8\.0\), below 1 at the device"):
            self.run_gcode(SET % 5)
        self.assertEqual(self.heater.target_temp, 0.)
        self.assertEqual(self.bridge.targets(), [0])

    def test_target_set_outside_klipper_converted_back(self):
        self.start_offset(5)
        self.bridge.cli_set(40)
        self.wait_for(lambda: self.heater.target_temp == 45.)
        self.assertTrue(self.console(r'^// Panda Breath: target is now 45, set'
                                     r' outside Klipper'))
        self.run_for(1.5)   # adopted, not sent back
        self.assertEqual(self.bridge.targets(), [0])
        self.assertEqual(self.pb.get_status(0)['target'], 45.)

    def test_range_check_on_the_corrected_reading(self):
        self.start_offset(10)
        self.bridge.notify(temperature=51)
        self.wait_for(self.printer.is_shutdown)
        self.assertRegex(self.printer.shutdown_msg,
                         r'temperature 61\.0 outside min_temp/max_temp')

    def test_max_temp_warning_counts_the_offset(self):
        self.start_offset(-5)
        self.assertTrue(self.console(
            r"max_temp 60\.0 .* above the bridge's max_target 60\.0"
            r" \(temperature_offset -5\.0\); targets above 55\.0 will be"
            r" refused"))

    def test_offset_bounds(self):
        for value in ('10.5', '-11'):
            self.assertConfigError(ks.panda_bridge_config(
                self.path, options='temperature_offset: %s\n' % (value,)),
                r"Option 'temperature_offset' in section 'panda_bridge'"
                r" must have (minimum|maximum) of")
            self.printer = None


class TestReadableStatus(OffsetBase):
    def test_fields_and_ages(self):
        self.start_offset(3)
        self.bridge.notify(
            temperature=40, temperature_age=2.0,
            device={'work_on': True, 'work_mode': 2, 'set_temp': 42,
                    'firmware': 'V1.0.3', 'reported_age': 10.0},
            failsafe={'tripped': False, 'reason': None, 'remaining': 9.0,
                      'controller_age': .5},
            heat_mode='drying-lease',
            lease={'state': 'running', 'remaining': 3600.0})
        self.wait_for(lambda: self.pb.get_status(0)['mode'] == 'always-on')
        self.run_for(1.)
        st = self.pb.get_status(self.reactor.monotonic())
        self.assertEqual(st['temperature'], 43.)
        self.assertEqual(st['device_temperature'], 40.)
        self.assertGreaterEqual(st['status_age'], 1.)
        self.assertLess(st['status_age'], 2.)
        self.assertAlmostEqual(st['temperature_age'], 2. + st['status_age'],
                               delta=.11)
        self.assertAlmostEqual(st['mode_age'], 10. + st['status_age'],
                               delta=.11)
        self.assertEqual(st['heat_mode'], 'drying-lease')
        self.assertEqual(st['lease_state'], 'running')
        self.assertAlmostEqual(st['drying_remaining'],
                               3600. - st['status_age'], delta=.11)
        self.assertAlmostEqual(st['failsafe']['remaining'],
                               9. - st['status_age'], delta=.11)
        self.assertFalse(st['failsafe']['tripped'])

    def test_faults_and_failsafe_in_words(self):
        self.start_offset(0)
        self.bridge.notify(faults=['chamber_sensor_open'],
                           failsafe={'tripped': True,
                                     'reason': 'no heartbeat for 10 s'})
        self.wait_for(lambda: self.pb.get_status(0)['faults'])
        st = self.pb.get_status(0)
        self.assertEqual(st['fault_descriptions'],
                         ['chamber temperature sensor open circuit'])
        self.assertEqual(st['failsafe']['reason'], 'no heartbeat for 10 s')
        self.assertTrue(st['failsafe']['tripped'])

    def test_nothing_known_without_the_bridge(self):
        self.start_offset(0)
        self.bridge.stop()
        self.wait_for(lambda: not self.pb.get_status(0)['connected'])
        st = self.pb.get_status(self.reactor.monotonic())
        for key in ('temperature', 'device_temperature', 'target',
                    'device_target', 'temperature_age', 'mode',
                    'drying_remaining'):
            self.assertIsNone(st[key], key)
        self.assertIsNotNone(st['status_age'])


class TestSteeredArithmetic(unittest.TestCase):
    def test_bias_moves_the_device_target(self):
        # the other sensor reads 6 above the device: the device is sent 39
        self.assertEqual(pb.steered_target(45., 6., 10.), 39.)
        self.assertEqual(pb.steered_target(45., 5.6, 10.), 39.)
        self.assertEqual(pb.steered_target(45., -3., 10.), 48.)
        self.assertEqual(pb.steered_target(0., 6., 10.), 0.)

    def test_bounds(self):
        self.assertEqual(pb.steered_target(45., -20., 10.), 55.)
        self.assertEqual(pb.steered_target(45., -20., 10., 50.), 50.)
        self.assertEqual(pb.steered_target(55., -8., 10., 60.), 60.)
        self.assertEqual(pb.steered_target(45., -20., 2.5), 47.)
        self.assertEqual(pb.steered_target(5., 30., 10.), 1.)
        for bias in (-40., -7.3, 0., 4.4, 40.):
            for target in (1., 20., 45., 60.):
                t = pb.steered_target(target, bias, 10., 60.)
                self.assertTrue(1. <= t <= min(60., target + 10.),
                                (target, bias, t))
                self.assertEqual(t, round(t))


class FakeSensor:
    """A Klipper temperature object, e.g. [temperature_sensor chamber]."""

    def __init__(self, temp=0.):
        self.temp = temp
        self.error = None

    def get_status(self, eventtime):
        if self.error is not None:
            raise self.error
        return {'temperature': self.temp}


SENSOR_OPTIONS = ("sensor: temperature_sensor chamber\nsensor_interval: 1\n"
                  "sensor_stale_time: 2\n")


class SensorBase(Base):
    def start_sensor(self, options=SENSOR_OPTIONS, temp=30.):
        self.sensor = FakeSensor(temp)
        self.sensor_base = temp
        self.wiggle = 0
        self.printer = ks.Printer(ks.panda_bridge_config(
            self.path, options=options))
        self.printer.objects['temperature_sensor chamber'] = self.sensor
        self.reactor = self.printer.get_reactor()
        self.gcode = self.printer.lookup_object('gcode')
        self.bridge = FakeBridge(self.reactor, self.path)
        self.printer.connect()
        self.pb = self.printer.lookup_object('panda_bridge')
        self.heater = self.printer.lookup_object('heaters').lookup_heater(
            'panda_breath')
        self.wait_for(lambda: self.pb.bridge_target is not None)
        self.bridge.push_every(.2)

    def tick_sensor(self, seconds, temp=None, step=.25):
        # a live sensor: its value changes a little at every reading
        if temp is not None:
            self.sensor_base = temp
        end = self.reactor.monotonic() + seconds
        while self.reactor.monotonic() < end:
            self.wiggle = (self.wiggle + 1) % 7
            self.sensor.temp = self.sensor_base + .001 * self.wiggle
            self.run_for(step)


class TestSensorConfig(SensorBase):
    def check(self, name, pattern, obj=None):
        self.printer = ks.Printer(ks.panda_bridge_config(
            self.path, options="sensor: %s\n" % (name,)))
        if obj is not None:
            self.printer.objects[name] = obj
        self.reactor = self.printer.get_reactor()
        with self.assertRaises(ks.ConfigError) as cm:
            self.printer.connect()
        self.assertRegex(str(cm.exception), pattern)
        self.printer = None

    def test_missing_object(self):
        self.check('temperature_sensor nope', r"^sensor: 'temperature_sensor"
                   r" nope' in \[panda_bridge\] is not a Klipper object;"
                   r" write the full section name of another temperature"
                   r" sensor, e.g. 'sensor: temperature_sensor chamber'$")

    def test_not_the_heater_itself(self):
        self.check('heater_generic panda_breath', r"is the Panda Breath"
                   r" heater itself")

    def test_object_without_temperature(self):
        self.check('fan', r"^sensor: 'fan' in \[panda_bridge\] reports no"
                   r" temperature", obj=type('Fan', (), {
                       'get_status': lambda self, e: {'speed': 0.}})())

    def test_option_bounds(self):
        for option, value in (('sensor_interval', '0.5'),
                              ('sensor_max_above', '31'),
                              ('sensor_stale_time', '0')):
            self.assertConfigError(ks.panda_bridge_config(
                self.path, options='%s: %s\n' % (option, value)),
                r"Option '%s' in section 'panda_bridge' must" % (option,))
            self.printer = None


class TestSensorLoop(SensorBase):
    def test_klipper_sees_the_other_sensor(self):
        self.start_sensor(options=SENSOR_OPTIONS
                          + "temperature_offset: 4\n")
        self.bridge.notify(temperature=40)
        self.tick_sensor(1., 46.)
        self.wait_for(lambda: abs(self.heater.last_temp - 46.) < .05)
        st = self.pb.get_status(self.reactor.monotonic())
        self.assertEqual(st['temperature_source'], 'sensor')
        self.assertEqual(st['device_temperature'], 40.)
        self.assertTrue(st['sensor']['fresh'])
        self.assertLess(st['sensor']['age'], 1.)

    def test_target_steered_by_the_bias(self):
        self.start_sensor()
        self.bridge.notify(temperature=40)
        self.tick_sensor(1.5, 46.)      # bias 6 measured over an interval
        t0 = self.reactor.monotonic()
        self.run_gcode(SET % 45)
        self.wait_for(lambda: self.bridge.methods('set_target', t0), .1)
        self.assertEqual(self.bridge.targets()[-1], 39)
        self.tick_sensor(3., 46.)
        self.assertEqual(self.bridge.targets()[-1], 39)
        st = self.pb.get_status(self.reactor.monotonic())
        self.assertEqual((st['target'], st['device_target']), (45., 39.))
        self.assertAlmostEqual(st['sensor']['bias'], 6., delta=.05)
        # off goes out at once, never waiting for the loop
        t0 = self.reactor.monotonic()
        self.run_gcode("TURN_OFF_HEATERS")
        self.wait_for(lambda: self.bridge.methods('set_target', t0), .1)
        self.assertEqual(self.bridge.targets()[-1], 0)
        self.tick_sensor(2.5, 46.)
        self.assertEqual(self.bridge.targets()[-1], 0)

    def test_bounds_never_crossed(self):
        self.start_sensor(options=SENSOR_OPTIONS + "sensor_max_above: 7\n")
        self.bridge.notify(temperature=40)
        self.run_gcode(SET % 45)
        self.tick_sensor(4., 25.)       # reads 15 below the device
        self.assertEqual(self.bridge.targets()[-1], 52)
        self.run_gcode(SET % 56)
        self.tick_sensor(2., 25.)
        self.assertEqual(self.bridge.targets()[-1], 60)   # max_target
        self.assertTrue(all(t <= 60 for t in self.bridge.targets()))

    def test_stale_sensor_falls_back_and_resumes(self):
        self.start_sensor(options=SENSOR_OPTIONS
                          + "temperature_offset: 5\n")
        self.bridge.notify(temperature=40)
        self.tick_sensor(1.5, 47.)      # bias 7
        self.run_gcode(SET % 45)
        self.tick_sensor(1.)
        self.assertEqual(self.bridge.targets()[-1], 38)
        # the sensor stops updating: after sensor_stale_time, one !! line,
        # the device's own reading + offset, and the target on its scale
        self.run_for(3.)
        lines = self.console(r'^!! Panda Breath: temperature_sensor chamber'
                             r' is stale \(no new reading for 2 s\): the'
                             r' heater falls back to the device.s own sensor'
                             r' \(temperature_offset 5\.0\)$')
        self.assertEqual(len(lines), 1)
        self.wait_for(lambda: self.heater.last_temp == 45.)
        self.assertEqual(self.bridge.targets()[-1], 40)
        self.assertEqual(self.pb.get_status(0)['temperature_source'],
                         'device')
        self.run_for(2.)
        self.assertEqual(len(self.console(r"^!! .* is stale")), 1,
                         self.gcode.output)
        # fresh again: a // line, steering resumes
        self.tick_sensor(2.5, 47.)
        self.assertEqual(len(self.console(
            r'^// Panda Breath: temperature_sensor chamber reads again')), 1,
            self.gcode.output)
        self.assertEqual(self.bridge.targets()[-1], 38)

    def test_none_or_failing_sensor_falls_back_at_once(self):
        self.start_sensor()
        self.bridge.notify(temperature=40)
        self.tick_sensor(1.5, 46.)
        self.run_gcode(SET % 45)
        self.tick_sensor(.5)
        self.sensor.temp = None
        self.wait_for(lambda: self.console(r'^!! .* is stale \(no reading\)'))
        self.wait_for(lambda: self.bridge.targets()[-1] == 45)
        self.tick_sensor(1., 46.)
        self.sensor.error = OSError("i2c bus error")
        self.wait_for(lambda: self.console(r'^!! .* is stale \(i2c bus'
                                           r' error\)'))
        self.wait_for(lambda: self.heater.last_temp == 40.)
        self.assertFalse(self.printer.is_shutdown())
        self.assertEqual(self.heater.target_temp, 45.)

    def test_target_set_outside_klipper_uses_the_steered_mapping(self):
        self.start_sensor()
        self.bridge.notify(temperature=40)
        self.tick_sensor(1.5, 46.)
        self.run_gcode(SET % 45)
        self.wait_for(lambda: self.bridge.status['target'] == 39)
        count = len(self.bridge.targets())
        self.bridge.cli_set(42)         # device 42 = 48 on the sensor's scale
        self.wait_for(lambda: self.heater.target_temp == 48.)
        self.tick_sensor(2.5, 46.)      # the loop agrees: nothing re-sent
        self.assertEqual(len(self.bridge.targets()), count)
        self.assertEqual(self.pb.get_status(0)['target'], 48.)

    def test_timers_stop_at_disconnect(self):
        self.start_sensor()
        self.printer.disconnect()
        self.assertEqual(self.pb.poll_timer.waketime, self.reactor.NEVER)
        self.assertEqual(self.pb.steer_timer.waketime, self.reactor.NEVER)
        self.printer = None

    def test_exception_in_the_loop_turns_the_heater_off(self):
        self.start_sensor()
        self.bridge.notify(temperature=40)
        self.tick_sensor(1.5, 46.)
        self.run_gcode(SET % 45)
        self.wait_for(lambda: self.bridge.status['target'] == 39)

        def broken(eventtime):
            raise ZeroDivisionError("a bug")
        self.pb._steer = broken
        self.tick_sensor(1.5, 46.)
        self.assertEqual(self.bridge.status['target'], 0)
        self.assertEqual(self.heater.target_temp, 0.)
        self.assertTrue(self.console(r'^!! Panda Breath: the sensor loop'
                                     r' failed'))


MEASURES = {}


class SimSensor(FakeSensor):
    """The simulator's true chamber temperature (its second sensor), read by
    the test between reactor pauses, as a [temperature_sensor chamber].
    /sim/state rounds it to 0.1 C, steadier than any live sensor: a noise of
    up to 0.02 C keeps it changing as a real one does."""
    step = 0


class TestEndToEnd(test_e2e.SimulatorBridge, unittest.TestCase):
    """End to end: the real simulator and bridge, as test_e2e.py."""

    def start_correction(self, bias, options):
        self.sim_call('sensor_bias?value=%s' % (bias,), 'POST')
        self.sensor = SimSensor(None)
        self.frozen = False
        self.samples = []
        self.start_klipper(
            config=ks.panda_bridge_config(
                self.sock, host='127.0.0.1:%d' % (self.port,),
                options=options),
            objects={'temperature_sensor chamber': self.sensor},
            wait=self.follow)

    def follow(self, predicate, timeout):
        """Runs klippy, feeding the second sensor from the simulator."""
        self.wait(predicate, timeout, step=.25, each_step=self.feed_sensor)

    def feed_sensor(self):
        state = self.sim_call('state')
        if not self.frozen:
            self.sensor.step = (self.sensor.step + 1) % 5
            self.sensor.temp = (state['temperature']
                                + .01 * (self.sensor.step - 2))
        self.samples.append((time.monotonic(), state['temperature'],
                             state['set_temp'] if state['work_on']
                             else 0, self.heater.last_temp))

    def run_for_s(self, seconds):
        end = time.monotonic() + seconds
        self.follow(lambda: time.monotonic() >= end, seconds + 5.)

    def device_targets(self):
        return [r['frame']['settings']['set_temp']
                for r in self.sim_call('state')['received']
                if 'set_temp' in r['frame'].get('settings', {})]

    def steady(self, target, seconds, what):
        t0 = time.monotonic()
        self.run_for_s(seconds)
        temps = [t for at, t, s, k in self.samples if at >= t0]
        error = max(abs(t - target) for t in temps)
        MEASURES[what] = ('max |chamber - %g| = %.2f C over %.0f s (n=%d)'
                          % (target, error, seconds, len(temps)))
        self.assertLessEqual(error, 1., MEASURES[what])
        return temps

    def test_offset_end_to_end(self):
        self.start_correction(6, "temperature_offset: 6\n")
        self.gcode.run_script(SET % 45)
        self.follow(lambda: self.sim_call('state')['set_temp'] == 39, 2.)
        self.follow(lambda: self.sim_call('state')['temperature'] >= 44.5,
                    90.)
        self.steady(45, 10., 'temperature_offset 6, sensor bias 6')
        state = self.sim_call('state')
        self.assertLessEqual(abs(self.heater.last_temp
                                 - state['temperature']), 1.5)
        st = self.pb.get_status(self.reactor.monotonic())
        self.assertEqual((st['target'], st['device_target']), (45., 39.))
        self.assertEqual(st['device_temperature'] + 6., st['temperature'])
        # as the device last reported it (it never confirms writes)
        self.assertIn(st['mode'], ('off', 'always-on'))
        self.assertIsNotNone(st['mode_age'])
        self.assertLess(st['temperature_age'], 1.5)
        self.assertLess(st['status_age'], 1.)

    def test_outer_loop_steady_state_bounds_and_fallback(self):
        self.start_correction(7, "sensor: temperature_sensor chamber\n"
                              "sensor_interval: 1\nsensor_stale_time: 4\n"
                              "sensor_max_above: 10\ntemperature_offset: 5\n")
        self.gcode.run_script(SET % 45)
        self.follow(lambda: self.sim_call('state')['temperature'] >= 44.5,
                    90.)
        self.run_for_s(3.)
        temps = self.steady(45, 15., 'sensor: outer loop, sensor bias 7')
        self.assertEqual(self.sim_call('state')['set_temp'], 38)
        self.assertLessEqual(abs(self.heater.last_temp - temps[-1]), .3)
        st = self.pb.get_status(self.reactor.monotonic())
        self.assertEqual(st['temperature_source'], 'sensor')
        self.assertAlmostEqual(st['sensor']['bias'], 7., delta=.6)
        # the second sensor stops updating: fallback to the device's own
        # reading + 5, its target 45 - 5 = 40 (the chamber drifts to 47)
        self.frozen = True
        self.follow(lambda: self.console(r'^!! Panda Breath: temperature_'
                                         r'sensor chamber is stale'), 8.)
        self.follow(lambda: self.sim_call('state')['set_temp'] == 40, 2.)
        self.run_for_s(3.)
        device = self.pb.get_status(0)['device_temperature']
        self.assertEqual(self.heater.last_temp, device + 5.)
        self.frozen = False
        self.follow(lambda: self.console(r'^// Panda Breath: temperature_'
                                         r'sensor chamber reads again'), 5.)
        self.follow(lambda: self.sim_call('state')['set_temp'] == 38, 3.)
        self.assertEqual(len(self.console(r'is stale')), 1)
        self.follow(lambda: abs(self.sim_call('state')['temperature'] - 45)
                    <= .5, 60.)
        self.steady(45, 10., 'sensor: after the fallback')
        targets = self.device_targets()
        MEASURES['sensor: device targets sent'] = (
            'max %d, all %s' % (max(targets), sorted(set(targets))))
        self.assertTrue(all(1 <= t <= 55 for t in targets), targets)
        self.gcode.run_script("TURN_OFF_HEATERS")
        self.follow(lambda: not self.sim_call('state')['work_on'], 1.)


def tearDownModule():
    for name, value in sorted(MEASURES.items()):
        sys.stderr.write("%s: %s\n" % (name, value))


if __name__ == '__main__':
    unittest.main()
