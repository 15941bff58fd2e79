"""The real Klipper extra as the subscriber of a flood benchmark.

Loads klipper/panda_bridge.py with the shipped config into the stand-in
printer (tests/klipper/klipper_standin.py), points it at a running bridge's
socket and runs the stand-in reactor for SECONDS, as klippy would.  Prints
"ready" once the extra is connected, then at the end one JSON object: status
notifications handled, temperature readings passed to the heater, CPU time
of this process (the reactor and the extra), and every time the extra lost
its link to the bridge.

Usage: python3 klipper_subscriber.py SOCKET SECONDS
"""
import json, os, resource, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from klipper_cost import load_printer  # noqa: E402


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main():
    path, seconds = sys.argv[1], float(sys.argv[2])
    printer = load_printer(path)
    reactor = printer.reactor
    printer.connect()
    extra = printer.lookup_object('panda_bridge')
    counts = {'statuses': 0, 'readings': 0}
    drops = []
    # (monotonic s, wall clock ms, temperature): the wall clock dates each
    # state against the bench's send times
    arrivals = []
    handle_status = extra._handle_status

    def counting_status(st, eventtime):
        counts['statuses'] += 1
        arrivals.append((time.monotonic(), round(1000. * time.time(), 2),
                         st.get('temperature')))
        handle_status(st, eventtime)
    extra._handle_status = counting_status
    link = extra.link
    drop = link.drop

    def recording_drop(reason, alarm=None):
        if link.state not in ('closed', 'dead'):
            drops.append({'t': round(time.monotonic() - started, 3),
                          'reason': reason})
        drop(reason, alarm)
    link.drop = recording_drop
    started = time.monotonic()
    if not reactor.run_until(lambda: link.linked
                             and counts['statuses'] > 0, 10.):
        raise SystemExit('the extra did not connect to %s' % (path,))
    callback = extra.callback

    def counting_reading(read_time, temp):
        counts['readings'] += 1
        callback(read_time, temp)
    extra.callback = counting_reading
    counts['statuses'] = 0
    del arrivals[:]
    print('ready', flush=True)
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    reactor.pause(wall0 + seconds)
    cpu, wall = cpu_seconds() - cpu0, time.monotonic() - wall0
    gaps = sorted(1000. * (b[0] - a[0])
                  for a, b in zip(arrivals, arrivals[1:]))
    # Statuses in the busiest whole second of the run
    per_second = {}
    for at, _, _ in arrivals:
        second = int(at - wall0)
        per_second[second] = per_second.get(second, 0) + 1
    busiest = max(per_second.values()) if per_second else 0
    print(json.dumps({
        'status_gap_ms': {
            'p50': round(gaps[len(gaps) // 2], 1) if gaps else None,
            'p99': round(gaps[int(len(gaps) * .99)], 1) if gaps else None,
            'max': round(gaps[-1], 1) if gaps else None},
        'statuses_busiest_second': busiest,
        'deliveries': [(ms, temp) for _, ms, temp in arrivals],
        'seconds': round(wall, 3),
        'statuses': counts['statuses'],
        'readings': counts['readings'],
        'cpu_seconds': round(cpu, 4),
        'cpu_percent': round(100. * cpu / wall, 2),
        'us_per_status': round(1e6 * cpu / max(1, counts['statuses']), 1),
        'connected_at_end': link.linked,
        'link_drops': drops,
        'shutdown': printer.shutdown_msg,
    }), flush=True)


if __name__ == '__main__':
    main()
