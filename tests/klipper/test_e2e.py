"""End to end: the real simulator and bridge (deno) with the extra driven by
the Klipper stand-in's reactor, over socket API v2 (CONTRACT.md).  Skipped
when deno is not on PATH."""
import json, os, re, shutil, signal, socket, subprocess, sys, tempfile
import time
import unittest, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import klipper_standin as ks  # noqa: E402

DENO = shutil.which('deno')
START_TIMEOUT = 60.
FAILSAFE = 2
OFF = {"settings": {"work_on": False}}
SET = "SET_HEATER_TEMPERATURE HEATER=panda_breath TARGET=%s"
LATENCIES = []
MEASURES = {}


def on_frame(target):
    return {"settings": {"work_mode": 2, "set_temp": target, "temp": target,
                         "isrunning": 0, "work_on": True}}


def now_ms():
    return time.time() * 1000.


@unittest.skipIf(DENO is None, "deno is not on PATH")
class SimulatorBridge:
    """The real simulator and bridge (deno) and the stand-in klippy: a
    mixin for the end-to-end test cases here and in test_correction.py and
    test_macros.py."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='pbe2e', dir='/tmp')
        self.sock = os.path.join(self.dir, 'bridge.sock')
        self.procs = []
        self.printer = None
        self.sim = self.spawn('sim', ['simulate', '--port', '0', '--hostname',
                                      '127.0.0.1', '--speed', '20'])
        self.port = self.wait_port()
        self.bridge = self.start_bridge()

    def tearDown(self):
        if self.printer is not None:
            self.printer.disconnect()
        for proc, name in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    # Processes
    def spawn(self, name, args):
        out = open(os.path.join(self.dir, name + '.log'), 'ab')
        proc = subprocess.Popen([DENO, 'run', '-P=bridge', 'main.ts'] + args,
                                cwd=ks.REPO, stdout=out,
                                stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        out.close()
        self.procs.append((proc, name))
        return proc

    def logs(self):
        text = []
        for name in ('sim', 'bridge'):
            path = os.path.join(self.dir, name + '.log')
            if os.path.exists(path):
                with open(path, errors='replace') as f:
                    text.append("--- %s ---\n%s" % (name, f.read()[-3000:]))
        return '\n'.join(text)

    def wait_port(self):
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end:
            path = os.path.join(self.dir, 'sim.log')
            with open(path, errors='replace') as f:
                m = re.search(r'listening on ws://[^:\s]+:(\d+)/ws', f.read())
            if m:
                return int(m.group(1))
            self.assertIsNone(self.sim.poll(), self.logs())
            time.sleep(.05)
        self.fail("simulator did not start\n" + self.logs())

    def start_bridge(self):
        proc = self.spawn('bridge', [
            'run', '--host', '127.0.0.1:%d' % (self.port,),
            '--socket', self.sock, '--failsafe-timeout', str(FAILSAFE),
            '--log-level', 'debug'])
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end:
            self.assertIsNone(proc.poll(), self.logs())
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.sock)
                return proc
            except OSError:
                self.idle(.05)
            finally:
                probe.close()
        self.fail("bridge socket did not appear\n" + self.logs())

    def idle(self, seconds):
        # keeps the stand-in klippy running while waiting, if there is one
        if self.printer is None:
            time.sleep(seconds)
        else:
            self.reactor.pause(self.reactor.monotonic() + seconds)

    # Simulator control
    def sim_call(self, path, method='GET'):
        req = urllib.request.Request('http://127.0.0.1:%d/sim/%s'
                                     % (self.port, path), method=method)
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def frames_since(self, t_ms, frame):
        return [r['at'] for r in self.sim_call('state')['received']
                if r['at'] >= t_ms - 1 and r['frame'] == frame]

    # Klipper side
    def start_klipper(self, max_temp=60, config=None, objects=None,
                      wait=None):
        """The stand-in klippy with config (default: the two sections for
        this bridge), more objects, until the device's readings arrive
        (waiting with wait, default self.wait)."""
        self.printer = ks.Printer(config or ks.panda_bridge_config(
            self.sock, host='127.0.0.1:%d' % (self.port,), max_temp=max_temp))
        self.printer.objects.update(objects or {})
        self.reactor = self.printer.get_reactor()
        self.gcode = self.printer.lookup_object('gcode')
        self.printer.connect()
        self.pb = self.printer.lookup_object('panda_bridge')
        self.heater = self.printer.lookup_object('heaters').lookup_heater(
            'panda_breath')
        (wait or self.wait)(lambda: self.pb.get_status(0)['device_connected']
                            and self.heater.last_temp_time, 15.)

    def wait(self, predicate, timeout, step=.05, each_step=None):
        """Runs klippy until predicate() holds (each_step() after every
        step), or fails after timeout seconds."""
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                self.fail("timed out\n%s\n--- console ---\n%s"
                          % (self.logs(), '\n'.join(self.gcode.output)))
            self.reactor.pause(self.reactor.monotonic() + step)
            if each_step is not None:
                each_step()

    def console(self, pattern):
        return [m for m in self.gcode.output if re.search(pattern, m)]

    def cli(self, *args):
        """The real CLI, while the stand-in klippy keeps running."""
        proc = subprocess.Popen(
            [DENO, 'run', '-P=bridge', 'main.ts'] + list(args)
            + ['--socket', self.sock], cwd=ks.REPO, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append((proc, 'cli'))
        self.wait(lambda: proc.poll() is not None, START_TIMEOUT)
        out = proc.communicate()[0].decode(errors='replace')
        return proc.returncode, out

    def heat_frames_since(self, t_ms):
        return [r['at'] for r in self.sim_call('state')['received']
                if r['at'] >= t_ms - 1
                and r['frame'].get('settings', {}).get('work_on') is True]

    def set_and_measure(self, script, frame):
        t_ms = now_ms()
        self.gcode.run_script(script)
        self.wait(lambda: self.frames_since(t_ms, frame), 2.)
        latency = self.frames_since(t_ms, frame)[0] - t_ms
        LATENCIES.append(latency)
        self.assertLess(latency, 100., "target took %.1f ms" % (latency,))
        return latency


class EndToEnd(SimulatorBridge, unittest.TestCase):
    def test_target_reaches_device_within_100ms(self):
        self.start_klipper()
        for target in (45, 50, 45):
            self.set_and_measure("SET_HEATER_TEMPERATURE HEATER=panda_breath"
                                 " TARGET=%d" % (target,), on_frame(target))
        state = self.sim_call('state')
        self.assertTrue(state['work_on'])
        self.assertEqual(state['set_temp'], 45)

    def test_temperature_reaches_heater(self):
        self.start_klipper()
        start = self.heater.last_temp
        self.gcode.run_script("SET_HEATER_TEMPERATURE HEATER=panda_breath"
                              " TARGET=45")
        self.wait(lambda: self.heater.last_temp >= start + 3, 30.)
        sim_temp = self.sim_call('state')['temperature']
        self.assertLessEqual(abs(self.heater.last_temp - sim_temp), 1.5)
        temp, target = self.heater.get_temp(self.reactor.monotonic())
        self.assertGreater(temp, start)
        self.assertEqual(target, 45.)

    def test_turn_off_and_shutdown_send_off(self):
        self.start_klipper()
        self.set_and_measure("SET_HEATER_TEMPERATURE HEATER=panda_breath"
                             " TARGET=45", on_frame(45))
        self.set_and_measure("TURN_OFF_HEATERS", OFF)
        self.set_and_measure("SET_HEATER_TEMPERATURE HEATER=panda_breath"
                             " TARGET=40", on_frame(40))
        t_ms = now_ms()
        self.printer.invoke_shutdown("test shutdown")
        self.wait(lambda: self.frames_since(t_ms, OFF), 2.)
        self.assertLess(self.frames_since(t_ms, OFF)[0] - t_ms, 100.)
        self.assertFalse(self.sim_call('state')['work_on'])

    def test_bridge_killed_and_restarted(self):
        self.start_klipper()
        self.set_and_measure("SET_HEATER_TEMPERATURE HEATER=panda_breath"
                             " TARGET=45", on_frame(45))
        self.bridge.send_signal(signal.SIGKILL)
        self.bridge.wait()
        self.wait(lambda: not self.pb.get_status(0)['connected'], 3.)
        t_ms = now_ms()
        self.bridge = self.start_bridge()
        self.wait(lambda: self.frames_since(t_ms, on_frame(45)), 20.)
        MEASURES['bridge restart -> target at device'] = '%.0f ms' % (
            self.frames_since(t_ms, on_frame(45))[0] - t_ms)
        self.wait(lambda: self.pb.get_status(0)['device_connected'], 5.)
        self.assertTrue(self.sim_call('state')['work_on'])
        self.assertEqual(self.heater.target_temp, 45.)

    def test_hung_klippy_trips_failsafe(self):
        self.start_klipper()
        self.set_and_measure("SET_HEATER_TEMPERATURE HEATER=panda_breath"
                             " TARGET=45", on_frame(45))
        hang_ms = now_ms()
        end = time.monotonic() + FAILSAFE + 5.
        while not self.frames_since(hang_ms, OFF):
            self.assertLess(time.monotonic(), end, self.logs())
            time.sleep(.1)
        off_after = self.frames_since(hang_ms, OFF)[0] - hang_ms
        MEASURES['klippy hung -> OFF at device'] = (
            '%.0f ms (failsafe %d s)' % (off_after, FAILSAFE))
        self.assertGreater(off_after, (FAILSAFE - 1) * 1000.)
        self.assertLess(off_after, (FAILSAFE + 1.5) * 1000.)
        # klippy resumes: the bridge's decision is adopted, not undone
        self.wait(lambda: self.heater.target_temp == 0., 3.)
        self.assertEqual(len(self.console('^!! Panda Breath: failsafe')), 1)
        resumed_ms = now_ms()
        self.reactor.pause(self.reactor.monotonic() + 2.)
        self.assertEqual(self.frames_since(resumed_ms, on_frame(45)), [])

    def test_hazard5_fault_while_heating_shuts_klipper_down(self):
        self.start_klipper()
        self.set_and_measure(SET % 45, on_frame(45))
        self.sim_call('fault?kind=ptc_sensor_open', 'POST')
        self.wait(self.printer.is_shutdown, 5.)
        self.assertRegex(self.printer.shutdown_msg,
                         r'^Panda Breath fault: .*PTC.*open')
        self.wait(lambda: not self.sim_call('state')['work_on'], 3.)

    def test_hazard5_fault_without_target_refuses_heat_until_cleared(self):
        self.start_klipper()
        self.sim_call('fault?kind=chamber_sensor_short', 'POST')
        self.wait(lambda: self.console(
            r'^!! Panda Breath fault: chamber temperature sensor short'), 5.)
        self.assertFalse(self.printer.is_shutdown())
        self.assertIn('chamber_sensor_short', self.pb.get_status(0)['faults'])
        t_ms = now_ms()
        with self.assertRaisesRegex(ks.CommandError, '^Panda Breath fault'):
            self.gcode.run_script(SET % 45)
        self.assertEqual(self.heater.target_temp, 0.)
        self.reactor.pause(self.reactor.monotonic() + 1.)
        self.assertEqual(self.heat_frames_since(t_ms), [])
        # The device reports a cleared fault only in its next connect frame
        self.sim_call('fault?kind=clear', 'POST')
        self.sim_call('reboot?down_ms=300', 'POST')
        self.wait(lambda: not self.pb.get_status(0)['faults'], 20.)
        # one alarm line (the refused command's own "!!" echo aside)
        self.assertEqual(len(self.console(
            '^!! Panda Breath fault: .*until it clears')), 1)
        self.set_and_measure(SET % 45, on_frame(45))

    def test_hazard3_m112_then_cli_set_and_button_push_end_off(self):
        self.start_klipper()
        self.set_and_measure(SET % 45, on_frame(45))
        t_ms = now_ms()
        self.printer.invoke_shutdown("Shutdown due to M112 command")
        self.wait(lambda: self.frames_since(t_ms, OFF), 2.)
        self.assertLess(self.frames_since(t_ms, OFF)[0] - t_ms, 100.)
        # A CLI set: whatever the bridge makes of it, heat ends within 1 s
        t_cli = now_ms()
        self.cli('set', '50')
        self.reactor.pause(self.reactor.monotonic() + 1.5)
        for on in self.heat_frames_since(t_cli):
            off = [t for t in self.frames_since(on, OFF) if t >= on]
            self.assertTrue(off, "heat left on after the CLI set\n"
                            + self.logs())
            MEASURES['shut-down klippy: CLI set -> OFF at device'] = (
                '%.0f ms' % (off[0] - on,))
            self.assertLess(off[0] - on, 1000.)
        self.assertFalse(self.sim_call('state')['work_on'])
        # The device's always-on button: the same
        t_btn = now_ms()
        self.sim_call('button?action=always_on', 'POST')
        self.wait(lambda: self.frames_since(t_btn, OFF), 3.)
        off_ms = self.frames_since(t_btn, OFF)[0] - t_btn
        MEASURES['shut-down klippy: button -> OFF at device'] = (
            '%.0f ms' % (off_ms,))
        self.assertLess(off_ms, 1000.)
        self.reactor.pause(self.reactor.monotonic() + 1.)
        self.assertFalse(self.sim_call('state')['work_on'])
        self.assertEqual(self.heater.target_temp, 45.)   # Klipper's, unused

    def test_hazard9_max_temp_above_max_target_is_refused_in_klipper(self):
        self.start_klipper(max_temp=80)
        self.assertTrue(self.console(
            r"max_temp 80\.0 of \[heater_generic panda_breath\] is above the"
            r" bridge's max_target 60\.0"))
        t_ms = now_ms()
        with self.assertRaisesRegex(ks.CommandError,
                                    r"above the bridge's max_target"):
            self.gcode.run_script(SET % 65)
        self.assertEqual(self.heater.target_temp, 0.)
        self.assertFalse(self.printer.is_shutdown())
        self.reactor.pause(self.reactor.monotonic() + 1.5)
        self.assertEqual(self.heat_frames_since(t_ms), [])
        self.set_and_measure(SET % 60, on_frame(60))

    def test_button_on_device_is_mirrored(self):
        self.start_klipper()
        self.set_and_measure("SET_HEATER_TEMPERATURE HEATER=panda_breath"
                             " TARGET=45", on_frame(45))
        t_ms = now_ms()
        self.sim_call('button?action=power', 'POST')
        self.wait(lambda: self.heater.target_temp == 0., 5.)
        self.assertTrue(self.console('target is now 0.*button'))
        self.reactor.pause(self.reactor.monotonic() + 1.5)
        self.assertEqual(self.frames_since(t_ms, on_frame(45)), [])


def tearDownModule():
    if LATENCIES:
        sys.stderr.write("\ntarget -> device latency: n=%d min=%.1f ms"
                         " median=%.1f ms max=%.1f ms\n"
                         % (len(LATENCIES), min(LATENCIES),
                            sorted(LATENCIES)[len(LATENCIES) // 2],
                            max(LATENCIES)))
    for name, value in sorted(MEASURES.items()):
        sys.stderr.write("%s: %s\n" % (name, value))


if __name__ == '__main__':
    unittest.main()
