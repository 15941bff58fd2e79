"""Temperature correction (temperature_offset, sensor:) and the readable
status of printer.panda_bridge: pure arithmetic, the extra against the
Klipper stand-in and a fake bridge, and end to end with the real simulator
and bridge (skipped without deno)."""
import os, sys, unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import klipper_standin as ks  # noqa: E402
from test_panda_bridge import Base, SET  # noqa: E402

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


if __name__ == '__main__':
    unittest.main()
