"""CPU cost of klipper/panda_bridge.py inside Klipper's reactor.

Loads the real extra with the shipped klipper/panda_bridge.cfg into the
stand-in printer (tests/klipper/klipper_standin.py), lets it connect to the
fake bridge (tests/klipper/fake_bridge.py) over a real Unix socket, then
drives the extra's own callbacks by hand and times them:

  telemetry      a status notification arrives (recv, split, JSON, status,
                 heater temperature callback)
  target send    Heater.set_temp as SET_HEATER_TEMPERATURE calls it (the
                 extra's wrapper: range check, JSON request, send)
  target reply   the bridge's reply to set_target
  heartbeat      the 1 s heartbeat timer (request) and its reply
  get_status     printer.panda_bridge as web UIs and macros query it

Prints one JSON object.  Times are per call, in microseconds: wall time
(perf_counter_ns, p50/p99/mean) and CPU time (process_time_ns, mean), each
with the timing overhead measured and subtracted.
"""
import argparse, json, os, re, shutil, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, 'tests', 'klipper'))

import klipper_standin as standin  # noqa: E402
from fake_bridge import FakeBridge, status as fake_status  # noqa: E402

perf_ns = time.perf_counter_ns
cpu_ns = time.process_time_ns


class Timer:
    """Collects per-call wall and CPU times of one operation."""

    def __init__(self, overhead=(0, 0)):
        self.wall = []
        self.cpu = 0
        self.overhead = overhead

    def run(self, fn, *args):
        c0 = cpu_ns()
        t0 = perf_ns()
        result = fn(*args)
        t1 = perf_ns()
        c1 = cpu_ns()
        self.wall.append(t1 - t0)
        self.cpu += c1 - c0
        return result

    def summary(self):
        wall = sorted(self.wall)
        n = len(wall)
        wall_over, cpu_over = self.overhead

        def us(ns):
            return round(max(ns - wall_over, 0) / 1000., 2)
        return {
            'n': n,
            'p50_us': us(wall[n // 2]),
            'p99_us': us(wall[min(n - 1, int(n * .99))]),
            'mean_us': us(sum(wall) / n),
            'cpu_mean_us': round(max(self.cpu / n - cpu_over, 0) / 1000., 2),
        }


def timing_overhead(n=20000):
    t = Timer()
    for _ in range(n):
        t.run(int)
    wall = sorted(t.wall)
    return wall[n // 2], t.cpu / n


def load_printer(path):
    with open(os.path.join(REPO, 'klipper', 'panda_bridge.cfg')) as f:
        cfg = f.read()
    cfg, count = re.subn(r'(?m)^socket: .*$', 'socket: ' + path, cfg)
    if count != 1:
        raise SystemExit("klipper/panda_bridge.cfg has no 'socket:' line")
    return standin.Printer(cfg)


def drain(sock):
    """The extra's requests waiting on the bridge side, parsed."""
    data = b''
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return [json.loads(line) for line in data.split(b'\n') if line.strip()]


def encode(msg):
    return (json.dumps(msg, separators=(',', ':')) + '\n').encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--status-file', help='a status object from the real'
                    ' bridge (JSON); default: the fake bridge\'s')
    ap.add_argument('--iterations', type=int, default=20000)
    args = ap.parse_args()
    n = args.iterations
    if args.status_file:
        with open(args.status_file) as f:
            base_status = json.load(f)
    else:
        base_status = fake_status()
    base_status = dict(base_status, connected=True, faults=[], note=None)

    tmp = tempfile.mkdtemp(prefix='pb-bench-')
    try:
        print(json.dumps(measure(os.path.join(tmp, 'b.sock'), n,
                                 base_status)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(path, n, base_status):
    printer = load_printer(path)
    reactor = printer.reactor
    bridge = FakeBridge(reactor, path)
    printer.connect()
    extra = printer.lookup_object('panda_bridge')
    heater = printer.lookup_object('heaters').lookup_heater('panda_breath')
    ok = reactor.run_until(
        lambda: (extra.link.linked and bridge.live_conns()
                 and bridge.conns[0].subscribed
                 and not extra.link.pending), 5.)
    if not ok:
        raise SystemExit('the extra did not connect to the fake bridge')
    # From here on the bench is the bridge: the connection leaves the reactor
    # and the extra's callbacks are called directly, as the reactor would.
    conn = bridge.conns[0]
    reactor.unregister_fd(conn.hdl)
    peer = conn.sock
    peer.setblocking(False)
    drain(peer)
    now = reactor.monotonic
    overhead = timing_overhead()

    def status_line(target, i):
        temp = 20. + (i % 100) / 10.
        return encode({'method': 'status', 'params': dict(
            base_status, temperature=temp, target=target,
            target_set=target > 0)})

    # Telemetry at a steady target (no change to follow)
    telemetry = Timer(overhead)
    lines = [status_line(extra.bridge_target or 0, i) for i in range(100)]
    for i in range(n):
        peer.sendall(lines[i % 100])
        telemetry.run(extra.link._handle_read, now())

    # Target changes: request, reply, then the status the bridge sends
    send, reply, after = Timer(overhead), Timer(overhead), Timer(overhead)
    for i in range(n // 4):
        target = 40. if i % 2 else 41.
        send.run(heater.set_temp, target)
        (request,) = drain(peer)
        assert request['method'] == 'set_target', request
        peer.sendall(encode({'id': request['id'],
                             'result': {'target': round(target)}}))
        reply.run(extra.link._handle_read, now())
        peer.sendall(status_line(round(target), i))
        after.run(extra.link._handle_read, now())
    if extra.bridge_target != 41 and extra.bridge_target != 40:
        raise SystemExit('the extra did not take the replies: %r'
                         % (extra.bridge_target,))

    # Heartbeats (every second in Klipper)
    beat, beat_reply = Timer(overhead), Timer(overhead)
    for i in range(n // 4):
        beat.run(extra._heartbeat_event, now())
        (request,) = drain(peer)
        assert request['method'] == 'heartbeat', request
        peer.sendall(encode({'id': request['id'],
                             'result': {'failsafe_timeout': 10}}))
        beat_reply.run(extra.link._handle_read, now())

    get_status = Timer(overhead)
    for i in range(n):
        get_status.run(extra.get_status, now())

    if not extra.link.linked or printer.is_shutdown():
        raise SystemExit('the extra lost its link during the benchmark')
    result = {
        'python': sys.version.split()[0],
        'iterations': n,
        'timing_overhead_ns': {'wall': overhead[0], 'cpu': round(overhead[1])},
        'telemetry': telemetry.summary(),
        'target_send': send.summary(),
        'target_reply': reply.summary(),
        'target_status': after.summary(),
        'heartbeat_send': beat.summary(),
        'heartbeat_reply': beat_reply.summary(),
        'get_status': get_status.summary(),
    }
    per_change = sum(result[k]['cpu_mean_us'] for k in
                     ('target_send', 'target_reply', 'target_status'))
    per_second = (2 * result['telemetry']['cpu_mean_us']
                  + result['heartbeat_send']['cpu_mean_us']
                  + result['heartbeat_reply']['cpu_mean_us'])
    result['target_change_total_cpu_us'] = round(per_change, 2)
    result['steady_cpu_us_per_s'] = round(per_second, 2)
    result['steady_cpu_percent'] = round(per_second / 1e4, 4)
    conn.closed = True
    peer.close()
    bridge.stop()
    return result


if __name__ == '__main__':
    main()
