"""The shipped fragment's macros (klipper/panda_bridge.cfg) in the Klipper
stand-in with Jinja2 rendering as Klipper does, against the fake bridge on a
real Unix socket: filament drying (PANDA_BRIDGE_DRY, PANDA_BRIDGE_DRY_STOP)
and the slicer chamber commands (M141, M191, PANDA_BRIDGE_WAIT), including
the README's start G-code.  Times are the stand-in reactor's: drying runs
use fractional HOURS and a 1 s tick (the macro's own variable)."""
import os, re, shutil, sys, tempfile, time, unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import klipper_standin as ks  # noqa: E402
from fake_bridge import FakeBridge  # noqa: E402
import test_e2e as e2e  # noqa: E402

SHIPPED_CFG = os.path.join(ks.REPO, 'klipper', 'panda_bridge.cfg')
README = os.path.join(ks.REPO, 'README.md')
DRY = 'gcode_macro PANDA_BRIDGE_DRY'
BED = ("[heater_bed]\nheater_pin: standin:bed\nsensor_type: standin\n"
       "control: watermark\nmin_temp: 0\nmax_temp: 120\n")


def shipped(socket_path, extra=''):
    with open(SHIPPED_CFG) as f:
        text = f.read()
    text, n = re.subn(r'(?m)^socket: .*$', 'socket: ' + socket_path, text)
    assert n == 1
    return text + '\n' + extra


@unittest.skipIf(ks.jinja2 is None, "jinja2 (Klipper's macro engine,"
                 " python3-jinja2) is not installed")
class Base(unittest.TestCase):
    EXTRA = "[print_stats]\n[idle_timeout]\ntimeout: 2\n"

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='pbm', dir='/tmp')
        self.path = os.path.join(self.dir, 'bridge.sock')
        self.printer = self.bridge = None

    def tearDown(self):
        if self.printer is not None:
            self.printer.disconnect()
        if self.bridge is not None:
            self.bridge.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, extra=None, max_target=60, chamber=25):
        self.printer = ks.Printer(shipped(self.path, self.EXTRA if extra is None
                                          else extra))
        self.reactor = self.printer.get_reactor()
        self.gcode = self.printer.lookup_object('gcode')
        self.bridge = FakeBridge(self.reactor, self.path, max_target)
        self.printer.connect()
        self.pb = self.printer.lookup_object('panda_bridge')
        self.heater = self.printer.lookup_object('heaters').lookup_heater(
            'panda_breath')
        self.idle = self.printer.lookup_object('idle_timeout')
        self.stats = self.printer.lookup_object('print_stats', None)
        self.wait_for(lambda: self.pb.bridge_target is not None)
        self.bridge.push_every(.5)
        self.set_chamber(chamber)

    def set_chamber(self, temp):
        """The chamber reads temp, and the heater's smoothed temperature
        (smooth_time 1 s, what macros see) has caught up."""
        self.bridge.notify(temperature=temp)
        self.wait_for(lambda: abs(self.heater.smoothed_temp - temp) < .1, 5.)

    def wait_for(self, predicate, timeout=2., msg=None):
        self.assertTrue(self.reactor.run_until(predicate, timeout),
                        msg or '\n'.join(self.gcode.output[-10:]))

    def run_for(self, seconds):
        self.reactor.pause(self.reactor.monotonic() + seconds)

    def at(self, seconds, func):
        """Run func from a reactor timer after seconds (while a command
        waits)."""
        self.reactor.register_timer(lambda e: func() or self.reactor.NEVER,
                                    self.reactor.monotonic() + seconds)

    def run_gcode(self, script):
        self.gcode.run_script(script)

    def console(self, pattern):
        return [m for m in self.gcode.output if re.search(pattern, m)]

    def dry(self):
        return self.printer.lookup_object(DRY).variables

    def target(self):
        return self.heater.target_temp


class TestDrying(Base):
    def test_idle_timeout_cuts_a_plain_target_off(self):
        # the control for the next test: a 2 s idle timeout turns the
        # chamber off when only SET_HEATER_TEMPERATURE set it
        self.start()
        self.run_gcode("M141 S45")
        self.wait_for(lambda: self.bridge.targets()[-1] == 45)
        self.wait_for(lambda: self.idle.fired == 1, 4.)
        self.assertEqual(self.target(), 0.)
        self.wait_for(lambda: self.bridge.targets()[-1] == 0)

    def test_idle_timeout_kept_off_then_ends_by_itself(self):
        self.start()
        t0 = self.reactor.monotonic()
        self.run_gcode("PANDA_BRIDGE_DRY TEMP=45 HOURS=0.0015")  # 5.4 s
        self.wait_for(lambda: self.bridge.targets()[-1] == 45)
        self.assertTrue(self.console(
            r'^// Panda Breath: drying at 45 C for 0\.00 h'))
        self.assertAlmostEqual(self.idle.idle_timeout, 5.4 + 2., places=3)
        self.assertEqual(self.dry()['temp'], 45.)
        self.assertEqual(self.dry()['remaining_minutes'], 1)
        self.run_for(4.)   # twice the configured idle timeout
        self.assertEqual(self.idle.fired, 0)
        self.assertEqual(self.target(), 45.)
        self.wait_for(lambda: self.dry()['temp'] == 0, 3.)
        self.assertGreater(self.reactor.monotonic() - t0, 5.3)
        self.assertLess(self.reactor.monotonic() - t0, 6.5)
        self.assertEqual(self.target(), 0.)
        self.wait_for(lambda: self.bridge.targets()[-1] == 0)
        self.assertEqual(self.idle.idle_timeout, 2.)
        self.assertEqual(self.dry()['remaining_minutes'], 0)
        self.assertTrue(self.console('drying finished; chamber heater off'))
        self.assertEqual(self.idle.fired, 0)
        # once the run ended, the configured idle timeout applies again
        self.wait_for(lambda: self.idle.fired == 1, 4.)

    def test_remaining_minutes_counts_down(self):
        self.start()
        self.run_gcode("SET_GCODE_VARIABLE MACRO=PANDA_BRIDGE_DRY"
                       " VARIABLE=tick VALUE=1")
        self.run_gcode("PANDA_BRIDGE_DRY TEMP=40 HOURS=0.0175")   # 63 s
        self.assertEqual(self.dry()['remaining_minutes'], 2)
        self.wait_for(lambda: self.dry()['remaining_minutes'] == 1, 6.)
        self.assertEqual(self.dry()['temp'], 40.)
        self.assertEqual(self.target(), 40.)
        self.run_gcode("PANDA_BRIDGE_DRY_STOP")

    def test_stop_ends_it_at_once(self):
        self.start()
        self.run_gcode("PANDA_BRIDGE_DRY TEMP=50 HOURS=2")
        self.wait_for(lambda: self.bridge.targets()[-1] == 50)
        self.assertEqual(self.idle.idle_timeout, 7200. + 2.)
        tick = self.printer.lookup_object(
            'delayed_gcode PANDA_BRIDGE_DRY_TICK')
        self.assertLess(tick.timer_handler.waketime, self.reactor.NEVER)
        t0 = time.monotonic()
        self.run_gcode("PANDA_BRIDGE_DRY_STOP")
        self.assertEqual(self.target(), 0.)
        self.wait_for(lambda: self.bridge.targets()[-1] == 0)
        self.assertLess(self.bridge.methods('set_target')[-1][0] - t0, .1)
        self.assertEqual(self.idle.idle_timeout, 2.)
        self.assertEqual(self.dry()['temp'], 0)
        self.assertEqual(tick.timer_handler.waketime, self.reactor.NEVER)
        self.assertTrue(self.console('^// Panda Breath: drying stopped'))
        # a second stop changes nothing (and leaves other targets alone)
        self.run_gcode("M141 S30")
        self.run_gcode("PANDA_BRIDGE_DRY_STOP")
        self.assertTrue(self.console('^// Panda Breath: not drying'))
        self.assertEqual(self.target(), 30.)

    def assertRefused(self, script, pattern):
        before = (self.target(), self.idle.idle_timeout, dict(self.dry()))
        count = len(self.bridge.targets())
        with self.assertRaises(ks.CommandError) as cm:
            self.run_gcode(script)
        self.assertRegex(str(cm.exception), pattern)
        self.assertTrue(self.console('^!! .*' + pattern))
        self.run_for(.3)
        self.assertEqual((self.target(), self.idle.idle_timeout,
                          dict(self.dry())), before)
        self.assertEqual(len(self.bridge.targets()), count)

    def test_refused_while_printing_or_paused(self):
        self.start()
        self.stats.note_start()
        self.assertRefused("PANDA_BRIDGE_DRY TEMP=45 HOURS=1",
                           r"PANDA_BRIDGE_DRY: refused while a print is"
                           r" printing")
        self.stats.note_pause()
        self.assertRefused("PANDA_BRIDGE_DRY TEMP=45 HOURS=1",
                           "refused while a print is paused")
        self.stats.note_complete()
        self.run_gcode("PANDA_BRIDGE_DRY TEMP=45 HOURS=1")
        self.assertEqual(self.target(), 45.)
        self.run_gcode("PANDA_BRIDGE_DRY_STOP")

    def test_bounds(self):
        self.start()
        for script, pattern in (
                ("PANDA_BRIDGE_DRY HOURS=1", r"TEMP= must be above 0 and at"
                 r" most 60 \(max_temp of \[heater_generic panda_breath\]\)"),
                ("PANDA_BRIDGE_DRY TEMP=0 HOURS=1", "TEMP=0 must be above 0"),
                ("PANDA_BRIDGE_DRY TEMP=61 HOURS=1", "TEMP=61 must be above"),
                ("PANDA_BRIDGE_DRY TEMP=hot HOURS=1", "TEMP=hot must be"),
                ("PANDA_BRIDGE_DRY TEMP=45", "HOURS= must be above 0 and at"
                 " most 24"),
                ("PANDA_BRIDGE_DRY TEMP=45 HOURS=0", "HOURS=0 must be"),
                ("PANDA_BRIDGE_DRY TEMP=45 HOURS=24.5", "HOURS=24.5 must be"),
                ("PANDA_BRIDGE_DRY TEMP=45 HOURS=-1", "HOURS=-1 must be")):
            with self.subTest(script=script):
                self.assertRefused(script, pattern)
        # the limits themselves are allowed
        self.run_gcode("PANDA_BRIDGE_DRY TEMP=60 HOURS=24")
        self.assertEqual(self.idle.idle_timeout, 24 * 3600. + 2.)
        self.run_gcode("PANDA_BRIDGE_DRY_STOP")

    def test_max_temp_follows_the_heater(self):
        self.start(extra=self.EXTRA)
        self.printer.disconnect()
        self.bridge.stop()
        self.printer = ks.Printer(shipped(self.path, self.EXTRA).replace(
            'max_temp: 60', 'max_temp: 50'))
        self.reactor = self.printer.get_reactor()
        self.gcode = self.printer.lookup_object('gcode')
        self.bridge = FakeBridge(self.reactor, self.path)
        self.printer.connect()
        with self.assertRaisesRegex(ks.CommandError, "at most 50"):
            self.run_gcode("PANDA_BRIDGE_DRY TEMP=55 HOURS=1")

    def test_heater_refusal_starts_nothing(self):
        # the bridge's max_target (40) refuses 50 before the target changes
        self.start(max_target=40)
        with self.assertRaisesRegex(ks.CommandError, "above the bridge's"
                                    " max_target"):
            self.run_gcode("PANDA_BRIDGE_DRY TEMP=50 HOURS=1")
        self.assertEqual(self.target(), 0.)
        self.assertEqual(self.idle.idle_timeout, 2.)
        self.assertEqual(self.dry()['temp'], 0)
        self.assertFalse(self.console('drying at'))

    def tick_every_second(self):
        self.run_gcode("SET_GCODE_VARIABLE MACRO=PANDA_BRIDGE_DRY"
                       " VARIABLE=tick VALUE=1")

    def test_turn_off_heaters_ends_it(self):
        self.start()
        self.tick_every_second()
        self.run_gcode("PANDA_BRIDGE_DRY TEMP=45 HOURS=1")
        self.run_gcode("TURN_OFF_HEATERS")
        self.wait_for(lambda: self.dry()['temp'] == 0, 1.5)
        self.assertTrue(self.console('drying ended, the chamber target was'
                                     ' changed to 0 C'))
        self.assertEqual(self.target(), 0.)
        self.assertEqual(self.idle.idle_timeout, 2.)

    def test_another_target_takes_over(self):
        self.start()
        self.tick_every_second()
        self.run_gcode("PANDA_BRIDGE_DRY TEMP=45 HOURS=1")
        self.run_gcode("M141 S38")
        self.wait_for(lambda: self.dry()['temp'] == 0, 1.5)
        self.assertTrue(self.console('changed to 38 C'))
        self.assertEqual(self.target(), 38.)
        self.assertEqual(self.bridge.targets()[-1], 38)
        self.assertEqual(self.idle.idle_timeout, 2.)

    def test_failsafe_off_ends_it(self):
        # the bridge turns the heater off itself (its failsafe): Klipper
        # takes the target over, and the drying run ends
        self.start()
        self.tick_every_second()
        self.run_gcode("PANDA_BRIDGE_DRY TEMP=45 HOURS=1")
        self.wait_for(lambda: self.pb.bridge_target == 45)
        self.bridge.notify(target=0, note="failsafe: test", failsafe=dict(
            self.bridge.status['failsafe'], tripped=True, reason="test"))
        self.wait_for(lambda: self.dry()['temp'] == 0, 2.)
        self.assertEqual(self.target(), 0.)
        self.assertEqual(self.idle.idle_timeout, 2.)

    def test_a_print_starting_ends_it_keeping_the_chamber(self):
        self.start()
        self.tick_every_second()
        self.run_gcode("PANDA_BRIDGE_DRY TEMP=45 HOURS=0.001")   # 3.6 s
        self.stats.note_start()
        self.printer.lookup_object('toolhead').move(10.)   # printing
        self.wait_for(lambda: self.dry()['temp'] == 0, 1.5)
        self.assertTrue(self.console('drying ended, a print started'))
        self.run_for(3.)
        self.assertEqual(self.target(), 45.)   # not turned off at its end
        self.assertFalse(self.console('drying finished'))
        self.assertEqual(self.idle.idle_timeout, 2.)

    def test_without_idle_timeout_section_restores_600(self):
        self.start(extra="[print_stats]\n")
        self.assertEqual(self.idle.idle_timeout, 600.)
        self.run_gcode("PANDA_BRIDGE_DRY TEMP=45 HOURS=0.5")
        self.assertEqual(self.idle.idle_timeout, 1800. + 600.)
        self.run_gcode("PANDA_BRIDGE_DRY_STOP")
        self.assertEqual(self.idle.idle_timeout, 600.)

    def test_without_print_stats(self):
        self.start(extra="")
        self.run_gcode("PANDA_BRIDGE_DRY TEMP=45 HOURS=0.0005")   # 1.8 s
        self.wait_for(lambda: self.dry()['temp'] == 0, 3.)
        self.assertEqual(self.target(), 0.)

    def test_restart_mid_drying_turns_off(self):
        # Klipper restarts: the heater goes off (the extra's shutdown path)
        # and a new klippy starts with the macro's variables at their
        # defaults and the configured idle timeout
        self.start()
        self.run_gcode("PANDA_BRIDGE_DRY TEMP=45 HOURS=1")
        self.wait_for(lambda: self.bridge.targets()[-1] == 45)
        t0 = time.monotonic()
        self.printer.disconnect()
        self.wait_for(lambda: self.bridge.status['target'] == 0, 1.)
        self.assertTrue(self.bridge.methods('off', t0))
        self.printer = None
        self.bridge.stop()
        self.bridge = None
        self.start()
        self.assertEqual(self.dry()['temp'], 0)
        self.assertEqual(self.idle.idle_timeout, 2.)
        self.assertEqual(self.target(), 0.)


class TestChamberCommands(Base):
    EXTRA = "[print_stats]\n" + BED

    def set_var(self, macro, name, value):
        self.run_gcode("SET_GCODE_VARIABLE MACRO=%s VARIABLE=%s VALUE=%s"
                       % (macro, name, value))

    def bed(self):
        return self.printer.lookup_object('heaters').lookup_heater(
            'heater_bed')

    def test_s_and_r(self):
        self.start(chamber=50)
        for script, target in (("M141 S40", 40), ("M141 R35", 35),
                               ("M141", 0), ("M191 R30", 30),
                               ("M191 S0", 0)):
            with self.subTest(script=script):
                self.run_gcode(script)
                self.assertEqual(self.target(), target)
                self.wait_for(lambda: self.bridge.targets()[-1] == target)

    def test_never_waits_to_cool(self):
        self.start(chamber=50)
        t0 = self.reactor.monotonic()
        self.run_gcode("M191 S45")
        self.assertLess(self.reactor.monotonic() - t0, .2)
        self.assertEqual(self.target(), 45.)
        t0 = self.reactor.monotonic()
        self.run_gcode("M191 R40")
        self.assertLess(self.reactor.monotonic() - t0, .2)
        self.assertEqual(self.target(), 40.)

    def test_stale_reading_is_not_warm(self):
        # the bridge lost the device: no readings for 5 s, the heater reads
        # 0 (as TEMPERATURE_WAIT sees it), though its status still shows 50
        self.start(chamber=50)
        self.bridge.notify(connected=False)
        self.run_for(5.5)
        self.assertAlmostEqual(self.printer.lookup_object(
            'heater_generic panda_breath').get_status(0)['temperature'], 50.,
            delta=.2)
        self.set_var('M191', 'timeout', 1)
        self.run_gcode("M191 S45")
        self.assertTrue(self.console('^!! Panda Breath: chamber at 0.0 C,'
                                     ' not 44.0 C after 1 s'))

    def test_waits_until_within_margin(self):
        self.start()
        self.at(1.5, lambda: self.bridge.notify(temperature=45))
        t0 = self.reactor.monotonic()
        self.run_gcode("M191 S45")
        self.assertGreater(self.reactor.monotonic() - t0, 1.4)
        self.assertLess(self.reactor.monotonic() - t0, 6.)
        self.assertFalse(self.console('^!!'))

    def test_timeout_goes_on_with_a_warning(self):
        self.start()
        self.set_var('M191', 'timeout', 2)
        t0 = self.reactor.monotonic()
        self.run_gcode("M191 S45")
        elapsed = self.reactor.monotonic() - t0
        self.assertGreater(elapsed, 1.9)
        self.assertLess(elapsed, 3.5)
        self.assertEqual(self.console('^!!'), [
            "!! Panda Breath: chamber at 25.0 C, not 44.0 C after 2 s; going"
            " on without waiting longer"])
        self.assertEqual(self.target(), 45.)   # still heating
        # the idle timeout counted the wait as activity
        self.assertEqual(self.idle.fired, 0)

    def test_heater_turned_off_while_waiting(self):
        self.start()
        self.at(1., lambda: self.run_gcode("TURN_OFF_HEATERS"))
        self.run_gcode("M191 S45")
        self.assertTrue(self.console(
            r"^!! Panda Breath: the chamber heater was turned off while"
            r" waiting for 44\.0 C \(chamber at 25\.0 C\); going on"))

    def test_shutdown_ends_the_wait(self):
        self.start()
        self.at(1., lambda: self.printer.invoke_shutdown("test shutdown"))
        t0 = self.reactor.monotonic()
        self.run_gcode("M191 S45")
        self.assertLess(self.reactor.monotonic() - t0, 2.5)

    def test_bed_assist(self):
        self.start()
        sensor = self.bed().sensor
        self.reactor.register_timer(
            lambda e: sensor.report(30.) or e + .3, self.reactor.NOW)
        seen = []
        self.at(1., lambda: seen.append(self.bed().target_temp))
        self.at(1.5, lambda: self.bridge.notify(temperature=45))
        # off by default
        self.run_gcode("M191 S45")
        self.assertEqual(seen, [0.])
        self.run_gcode("M141 S0")
        self.set_chamber(25)
        self.set_var('M191', 'bed_temp', 90)
        self.at(1., lambda: seen.append(self.bed().target_temp))
        self.at(1.5, lambda: self.bridge.notify(temperature=45))
        self.run_gcode("M191 S45")
        self.assertEqual(seen, [0., 90.])
        self.assertEqual(self.bed().target_temp, 0.)   # previous target back
        # a bed already hotter is left alone
        self.run_gcode("M141 S0")
        self.set_chamber(25)
        self.run_gcode("M140 S100")
        self.at(1., lambda: seen.append(self.bed().target_temp))
        self.at(1.5, lambda: self.bridge.notify(temperature=45))
        self.run_gcode("M191 S45")
        self.assertEqual(seen, [0., 90., 100.])
        self.assertEqual(self.bed().target_temp, 100.)
        # and a chamber already warm does not touch the bed
        self.run_gcode("M140 S0")
        self.run_gcode("M191 S40")
        self.assertEqual(self.bed().target_temp, 0.)

    def test_bed_assist_without_a_bed(self):
        self.start(extra="")
        self.set_var('M191', 'bed_temp', 90)
        self.set_var('M191', 'timeout', 1)
        self.run_gcode("M191 S45")
        self.assertTrue(self.console('^!! Panda Breath: chamber at 25.0 C'))

    def test_orca_inserted_lines(self):
        # GCodeWriter::set_chamber_temperature writes these before the
        # machine start G-code and after the end G-code
        self.start()
        self.at(1., lambda: self.bridge.notify(temperature=45))
        self.run_gcode("M191 S45 ;set chamber_temperature and wait for it"
                       " to be reached")
        self.assertEqual(self.target(), 45.)
        self.run_gcode("M141 S0;set chamber_temperature")
        self.assertEqual(self.target(), 0.)

    def test_readme_start_gcode(self):
        with open(README) as f:
            text = f.read()
        m = re.search(r'<!-- start-gcode: test_macros -->\s*```gcode\n(.*?)'
                      r'```', text, re.S)
        self.assertIsNotNone(m, "README lost the tested start G-code block")
        # what the slicer substitutes (PLA-ish bed, an ABS chamber)
        values = {'[bed_temperature_initial_layer_single]': '60',
                  '[chamber_temperature]': '45',
                  '{chamber_temperature[0]}': '45'}
        script = m.group(1)
        for key, value in values.items():
            script = script.replace(key, value)
        self.assertNotRegex(script, r'\[[a-z_]+\]|\{[a-z_]+',
                            "a placeholder the test does not fill")
        self.start()
        sensor = self.bed().sensor
        self.reactor.register_timer(
            lambda e: sensor.report(60. if self.bed().target_temp else 25.)
            or e + .3, self.reactor.NOW)
        self.at(2., lambda: self.bridge.notify(temperature=45))
        t0 = self.reactor.monotonic()
        self.run_gcode(script)
        self.assertGreater(self.reactor.monotonic() - t0, 1.9)
        self.assertEqual(self.target(), 45.)
        self.assertEqual(self.bed().target_temp, 60.)
        self.assertFalse(self.console('^!!'))


@unittest.skipIf(e2e.DENO is None, "deno is not on PATH")
@unittest.skipIf(ks.jinja2 is None, "jinja2 is not installed")
class WithSimulator(e2e.SimulatorBridge, unittest.TestCase):
    """The macros against the real bridge and simulator (deno), as
    test_e2e.py runs them: what the device receives."""

    def start_shipped(self):
        self.start_klipper(config=shipped(self.sock, "[print_stats]\n"
                                          "[idle_timeout]\ntimeout: 2\n"))

    def test_drying_on_the_device(self):
        self.start_shipped()
        t_ms = e2e.now_ms()
        self.gcode.run_script("PANDA_BRIDGE_DRY TEMP=45 HOURS=0.001")  # 3.6 s
        self.wait(lambda: self.frames_since(t_ms, e2e.on_frame(45)), 2.)
        # past the 2 s idle timeout the device is still heating
        self.reactor.pause(self.reactor.monotonic() + 2.5)
        self.assertEqual(self.frames_since(t_ms, e2e.OFF), [])
        self.assertTrue(self.sim_call('state')['work_on'])
        self.wait(lambda: self.frames_since(t_ms, e2e.OFF), 3.)
        off_after = (self.frames_since(t_ms, e2e.OFF)[0] - t_ms) / 1000.
        self.assertGreater(off_after, 3.4)
        self.assertLess(off_after, 5.)
        self.assertTrue(self.console('drying finished'))

    def test_m191_timeout_on_the_device(self):
        self.start_shipped()
        self.gcode.run_script("SET_GCODE_VARIABLE MACRO=M191 VARIABLE=timeout"
                              " VALUE=2")
        t_ms = e2e.now_ms()
        self.gcode.run_script("M191 S60")
        self.assertTrue(self.frames_since(t_ms, e2e.on_frame(60)))
        self.assertTrue(self.console('^!! Panda Breath: chamber at .* not'
                                     ' 59.0 C after 2 s'))
        self.gcode.run_script("M141 S0")
        self.wait(lambda: self.frames_since(t_ms, e2e.OFF), 2.)


if __name__ == '__main__':
    unittest.main()
