"""klipper/panda_bridge.py inside REAL klippy, against the fake bridge.

Not part of CI: needs the real-Klipper harness (/work/shared/tools/
klipper-harness, built by its build.sh; Klipper itself never enters this
repository).  For each harness given, starts the Linux-process MCU and klippy
with the shipped klipper/panda_bridge.cfg and the fake bridge
(tests/klipper/fake_bridge.py, socket API v2) as its own process, then:

  latency     SET_HEATER_TEMPERATURE over klippy's API socket -> set_target
              at the bridge, N commands (p50/p99/max)
  m112        M112, then a bridge-side target (a CLI set) and an always-on
              button push: each answered with off (time), heartbeats ready
              false
  max_target  max_temp 80 with the bridge's max_target 60: TARGET=65 is
              refused, Klipper's target unchanged, the printer still ready
  batch       klippy.py -o /dev/null -d klipper.dict -i file.gcode with a
              heating G-code file: the bridge sees no connection
  errors      klippy left in its startup-error state by a bad section: a
              bridge-side target is answered with off; a [panda_breath]
              section (the U1 firmware's integration) is refused with the
              Firmware Config steps

Usage: python3 klipper_real.py [--count N] HARNESS_DIR [HARNESS_DIR...]
(e.g. /tmp/klipper-harness /tmp/klipper-harness-u1).  Prints one JSON object
per harness; exit 1 if any check failed.
"""
import argparse, json, os, re, shutil, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EXTRA = os.path.join(REPO, 'klipper', 'panda_bridge.py')
sys.path.insert(0, os.path.join(REPO, 'tests', 'klipper'))
from fake_bridge import FakeBridgeProcess  # noqa: E402

SET = "SET_HEATER_TEMPERATURE HEATER=panda_breath TARGET=%s"


def harness_env(harness):
    env = {}
    with open(os.path.join(harness, 'harness.env')) as f:
        for line in f:
            m = re.match(r'^(\w+)=\$\{\w+:-(.*)\}$', line.strip())
            if m:
                env[m.group(1)] = m.group(2)
    return env


class Run:
    """One klippy (and its MCU) started by the harness's start.sh."""

    def __init__(self, harness, work, name, max_temp=60, max_target=60):
        self.harness = harness
        self.henv = harness_env(harness)
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, 'bridge.sock')
        self.uds = os.path.join(self.dir, 'klippy.sock')
        self.tty = os.path.join(self.dir, 'mcu_tty')
        self.cfg = write_config(self.dir, self.tty, self.sock, max_temp,
                                self.is_u1())
        self.bridge = FakeBridgeProcess(self.sock, [
            '--max-target', str(max_target), '--push', '.5'])
        self.env = dict(os.environ, KLIPPER_DIR=self.henv['KLIPPER_DIR'],
                        PRINTER_CFG=self.cfg, EXTRAS=EXTRA,
                        KLIPPY_UDS=self.uds, MCU_TTY=self.tty,
                        RUN_DIR=os.path.join(self.dir, 'run'))
        out = subprocess.run([os.path.join(harness, 'start.sh')],
                             env=self.env, capture_output=True, text=True)
        if out.returncode:
            self.stop()
            raise RuntimeError("start.sh failed:\n" + out.stderr[-3000:])
        sys.path.insert(0, harness)
        import api
        self.api = api
        self.conn = api._Conn(self.uds, time.monotonic() + 3600.)

    def is_u1(self):
        return self.henv.get('PRIVATE_HOME') == '1'

    def call(self, method, params=None):
        return self.conn.request(method, params or {})

    def gcode(self, script):
        return self.call('gcode/script', {'script': script})

    def state(self):
        return self.call('info')['result']['state']

    def target(self):
        res = self.call('objects/query', {'objects': {
            'heater_generic panda_breath': ['target']}})
        return res['result']['status']['heater_generic panda_breath'][
            'target']

    def log(self):
        with open(os.path.join(self.dir, 'run', 'klippy.log'),
                  errors='replace') as f:
            return f.read()

    def stop(self):
        if getattr(self, 'conn', None) is not None:
            self.conn.close()
        subprocess.run([os.path.join(self.harness, 'stop.sh')],
                       env=self.env, capture_output=True)
        self.bridge.stop()


def write_config(directory, tty, sock, max_temp, u1):
    with open(os.path.join(REPO, 'klipper', 'panda_bridge.cfg')) as f:
        fragment = f.read()
    fragment = re.sub(r'(?m)^socket: .*$', 'socket: ' + sock, fragment)
    fragment = re.sub(r'(?m)^host: .*$', 'host: 127.0.0.1', fragment)
    fragment = re.sub(r'(?m)^max_temp: .*$', 'max_temp: %s' % (max_temp,),
                      fragment)
    with open(os.path.join(directory, 'panda_bridge.cfg'), 'w') as f:
        f.write(fragment)
    path = os.path.join(directory, 'printer.cfg')
    with open(path, 'w') as f:
        f.write("[mcu]\nserial: %s\n\n[printer]\nkinematics: none\n"
                "max_velocity: 100\nmax_accel: 100\n%s\n"
                "[include panda_bridge.cfg]\n"
                % (tty, "max_logical_extruder_num: 32\n"
                   "max_physical_extruder_num: 4\n" if u1 else ""))
    return path


def wait(predicate, timeout, step=.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


def ready_seen(bridge):
    return bridge.command('requests')['ready']


def check_latency(harness, work, count):
    run = Run(harness, work, 'latency')
    try:
        wait(lambda: any(m == 'set_target' for t, m, p in
                         run.bridge.requests()), 10.)
        latencies = []
        for i in range(count):
            target = 40 + i % 2
            seen = len(run.bridge.requests())
            t0 = time.monotonic()
            reply = run.gcode(SET % (target,))
            assert 'result' in reply, reply
            got = wait(lambda: [t for t, m, p in run.bridge.requests()[seen:]
                                if m == 'set_target'
                                and p == {'target': target}], 2.)
            assert got, "set_target %d never arrived" % (target,)
            latencies.append((got[0] - t0) * 1000.)
        latencies.sort()
        n = len(latencies)
        return {'n': n, 'p50_ms': round(latencies[n // 2], 2),
                'p99_ms': round(latencies[min(n - 1, int(n * .99))], 2),
                'max_ms': round(latencies[-1], 2),
                'ok': latencies[int(n * .99) - 1] < 100.}
    finally:
        run.stop()


def off_within(run, push, what):
    seen = len(run.bridge.requests())
    t0 = time.monotonic()
    push()
    got = wait(lambda: [t for t, m, p in run.bridge.requests()[seen:]
                        if m == 'off' and t >= t0], 3.)
    if not got:
        return {what: None}
    run.bridge.notify(target=0, heating=False)
    return {what: round((got[0] - t0) * 1000., 1)}


def check_m112(harness, work):
    run = Run(harness, work, 'm112')
    try:
        run.gcode(SET % 45)
        assert wait(lambda: True in ready_seen(run.bridge), 3.)
        res = {}
        seen = len(run.bridge.requests())
        t0 = time.monotonic()
        run.gcode("M112")
        got = wait(lambda: [t for t, m, p in run.bridge.requests()[seen:]
                            if m == 'off'], 3.)
        res['m112_to_off_ms'] = got and round((got[0] - t0) * 1000., 1)
        run.bridge.notify(target=0, heating=False)
        time.sleep(.5)
        res['state'] = run.state()
        res.update(off_within(run, lambda: run.bridge.notify(
            target=50, heating=True, note="target 50 set by cli"),
            'cli_set_to_off_ms'))
        time.sleep(.5)
        res.update(off_within(run, lambda: run.bridge.notify(
            target=40, heating=True, device={'work_on': True, 'work_mode': 2,
                                             'set_temp': 40},
            note="heater switched on at the device (40 C)"),
            'button_to_off_ms'))
        time.sleep(1.2)
        res['ready_after'] = ready_seen(run.bridge)
        res['ok'] = (res['state'] == 'shutdown'
                     and all(res[k] is not None and res[k] < 1000. for k in
                             ('m112_to_off_ms', 'cli_set_to_off_ms',
                              'button_to_off_ms'))
                     and res['ready_after'] == [False])
        return res
    finally:
        run.stop()


def check_max_target(harness, work):
    run = Run(harness, work, 'max_target', max_temp=80, max_target=60)
    try:
        run.gcode(SET % 40)
        wait(lambda: any(p == {'target': 40} for t, m, p in
                         run.bridge.requests()), 3.)
        reply = run.gcode(SET % 65)
        time.sleep(1.2)
        targets = [p['target'] for t, m, p in run.bridge.requests()
                   if m == 'set_target']
        res = {'reply_error': reply.get('error', {}).get('message'),
               'state': run.state(), 'klipper_target': run.target(),
               'sent_65': 65 in targets,
               'warned': "above the bridge's max_target 60.0" in run.log()}
        res['ok'] = (bool(res['reply_error'])
                     and "max_target" in res['reply_error']
                     and res['state'] == 'ready'
                     and res['klipper_target'] == 40. and not res['sent_65']
                     and res['warned'])
        return res
    finally:
        run.stop()


class Klippy:
    """klippy.py run directly (no MCU needed for what it checks), with the
    extra linked into klippy/extras for as long as this runs."""

    def __init__(self, harness, directory):
        henv = harness_env(harness)
        kdir = henv['KLIPPER_DIR']
        self.link = os.path.join(kdir, 'klippy', 'extras', 'panda_bridge.py')
        self.made_link = not os.path.lexists(self.link)
        if self.made_link:
            os.symlink(EXTRA, self.link)
        self.dict = os.path.join(kdir, 'out', 'klipper.dict')
        self.args = [henv['KLIPPY_PYTHON'],
                     os.path.join(kdir, 'klippy', 'klippy.py')]
        if henv.get('PRIVATE_HOME') == '1':   # the U1 fork: as start.sh
            self.args += ['-u', 'root']
            home = os.path.join(directory, 'home')
            os.makedirs(os.path.join(home, 'lava', 'printer_data', 'logs'))
            self.args = ['unshare', '-m', '--propagation', 'private', '--',
                         'sh', '-c', 'mount --bind "$0" /home && cd /home/lava'
                         ' && HOME=/home/lava exec "$@"', home] + self.args

    def close(self):
        if self.made_link:
            os.unlink(self.link)
            self.made_link = False


def check_batch(harness, work):
    d = os.path.join(work, 'batch')
    os.makedirs(d)
    sock = os.path.join(d, 'bridge.sock')
    u1 = harness_env(harness).get('PRIVATE_HOME') == '1'
    cfg = write_config(d, os.path.join(d, 'no_tty'), sock, 60, u1)
    gfile = os.path.join(d, 'job.gcode')
    with open(gfile, 'w') as f:
        f.write("%s\nM141 S50\nG4 P2000\nTURN_OFF_HEATERS\n" % (SET % 45,))
    bridge = FakeBridgeProcess(sock)
    klippy = Klippy(harness, d)
    try:
        out = subprocess.run(klippy.args + [
            cfg, '-o', '/dev/null', '-d', klippy.dict, '-i', gfile,
            '-l', os.path.join(d, 'klippy.log')], capture_output=True,
            text=True, timeout=120)
        time.sleep(.5)
        r = bridge.command('requests')
        with open(os.path.join(d, 'klippy.log'), errors='replace') as f:
            log = f.read()
        res = {'exit': out.returncode, 'accepted': r['accepted'],
               'requests': len(r['requests']),
               'job_done': 'Exiting (print time 2.' in log}
        res['ok'] = (res['accepted'] == 0 and res['requests'] == 0
                     and out.returncode == 0 and res['job_done'])
        if not res['ok']:
            res['log_tail'] = log[-1500:]
        return res
    finally:
        bridge.stop()
        klippy.close()


def check_errors(harness, work):
    """klippy in its error state (no MCU needed: the config fails first)."""
    res = {}
    u1 = harness_env(harness).get('PRIVATE_HOME') == '1'
    for name, head, tail in (
            ('startup_error', '', '[no_such_module]\nx: 1\n'),
            ('firmware_integration', '[panda_breath]\nhost: 10.0.0.9\n\n',
             '')):
        d = os.path.join(work, name)
        os.makedirs(d)
        sock, uds = os.path.join(d, 'bridge.sock'), os.path.join(d, 'k.sock')
        cfg = write_config(d, os.path.join(d, 'no_tty'), sock, 60, u1)
        with open(cfg) as f:
            text = f.read()
        with open(cfg, 'w') as f:
            f.write(head + text + tail)
        bridge = FakeBridgeProcess(sock)
        klippy = Klippy(harness, d)
        proc = subprocess.Popen(klippy.args + [
            cfg, '-a', uds, '-I', os.path.join(d, 'tty'),
            '-l', os.path.join(d, 'klippy.log')], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            sys.path.insert(0, harness)
            import api
            state = wait(lambda: info_state(api, uds), 30., .2)
            r = {'state': state and state[0]}
            if name == 'startup_error':
                hello = wait(lambda: [p for t, m, p in bridge.requests()
                                      if m == 'hello'], 10., .05)
                r['hello_ready'] = hello and hello[0].get('ready')
                time.sleep(1.5)     # past the connect's own off
                r.update(off_within(_Only(bridge), lambda: bridge.notify(
                    target=50, heating=True, note="target 50 set by cli"),
                    'cli_set_to_off_ms'))
                time.sleep(1.2)
                r['ready_after'] = ready_seen(bridge)
                r['ok'] = (r['state'] == 'error' and r['hello_ready'] is False
                           and r['cli_set_to_off_ms'] is not None
                           and r['cli_set_to_off_ms'] < 1000.
                           and r['ready_after'] == [False])
            else:
                message = state and state[1] or ''
                r['message'] = message[:200] + '...'
                r['ok'] = (r['state'] == 'error' and bool(re.search(
                    r'Firmware Config -> chamber heater .*-> Disabled',
                    message)))
            res[name] = r
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            bridge.stop()
            klippy.close()
    res['ok'] = all(r['ok'] for r in res.values())
    return res


class _Only:
    """off_within() needs only .bridge"""

    def __init__(self, bridge):
        self.bridge = bridge


def info_state(api, uds):
    try:
        reply, _ = api.call('info', {}, uds, timeout=2)
    except api.HarnessError:
        return None
    res = reply.get('result') or {}
    if res.get('state') in (None, 'startup'):
        return None
    return res['state'], res.get('state_message', '')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--count', type=int, default=100)
    ap.add_argument('harness', nargs='+')
    args = ap.parse_args()
    ok = True
    for harness in args.harness:
        work = tempfile.mkdtemp(prefix='pb-real-', dir='/tmp')
        try:
            res = {'harness': harness,
                   'klipper': harness_env(harness)['KLIPPER_DIR'],
                   'latency': check_latency(harness, work, args.count),
                   'm112': check_m112(harness, work),
                   'max_target': check_max_target(harness, work),
                   'batch': check_batch(harness, work),
                   'errors': check_errors(harness, work)}
            res['ok'] = all(res[k]['ok'] for k in
                            ('latency', 'm112', 'max_target', 'batch',
                             'errors'))
            ok = ok and res['ok']
            print(json.dumps(res), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
