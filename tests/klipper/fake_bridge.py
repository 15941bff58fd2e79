"""A fake panda-breath bridge: a real AF_UNIX listening socket driven by the
stand-in reactor, speaking socket API v2 (CONTRACT.md, README "Socket API").

In a test: FakeBridge(reactor, path) shares the test's reactor.  As its own
process (for real klippy, or to run as another user):
    python3 fake_bridge.py PATH [--max-target C] [--push S] [--unsolicited]
reads one JSON command per line on stdin and answers one JSON line on
stdout (FakeBridgeProcess below drives it):
    {"cmd": "notify", "changes": {...}}   change the status and push it
    {"cmd": "requests"}                   every request so far, connections
                                          accepted, each live one's ready
    {"cmd": "reply", "method": M, "reply": {...} | null}   override replies
    {"cmd": "quit"}
"""
import json, os, re, shutil, socket, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))

PROTOCOL = 2


def bridge_fault_descriptions():
    """lib/protocol.ts FAULT_DESCRIPTIONS, which the real bridge's hello
    sends: read from there, never restated."""
    with open(os.path.join(HERE, '..', '..', 'lib', 'protocol.ts')) as f:
        block = re.search(r'\nexport const FAULT_DESCRIPTIONS\b.*?\{(.*?)'
                          r'\n\};', f.read(), re.S).group(1)
    return dict(re.findall(r'(\w+):\s*"([^"]*)"', block))


def status(**changes):
    st = {
        "connected": True, "temperature": 25, "temperature_age": 0.1,
        "target": 0, "target_set": False,
        "device": {"work_on": False, "work_mode": 2, "set_temp": 0,
                   "firmware": "V1.0.3", "reported_age": 1.0},
        "faults": [], "note": None,
        "failsafe": {"timeout": 10, "controller": True,
                     "controller_age": 0.5, "tripped": False,
                     "reason": None, "controllers": 1},
        "since": {"connected": None, "started": None},
        "link": {"connects": 1, "drops": 0, "dropped_frames": 0},
        "bridge": "fake",
    }
    st.update(changes)
    return st


def error(code, message):
    return {'error': {'code': code, 'message': message}}


class Conn:
    def __init__(self, bridge, sock):
        self.bridge = bridge
        self.sock = sock
        self.buffer = b''
        self.subscribed = False
        self.controller = False
        self.ready = None         # the last heartbeat's ready
        self.closed = False
        self.hdl = bridge.reactor.register_fd(sock.fileno(), self.read)

    def read(self, eventtime):
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b''
        if not data:
            self.close()
            return
        lines = (self.buffer + data).split(b'\n')
        self.buffer = lines.pop()
        for line in lines:
            self.bridge.handle(self, json.loads(line), eventtime)

    def send(self, data):
        if not self.closed:
            if not isinstance(data, bytes):
                data = json.dumps(data).encode() + b'\n'
            try:
                self.sock.setblocking(True)
                self.sock.sendall(data)
                self.sock.setblocking(False)
            except OSError:
                self.close()

    def close(self):
        if not self.closed:
            self.closed = True
            self.bridge.reactor.unregister_fd(self.hdl)
            self.sock.close()


class FakeBridge:
    """unsolicited: push status to every connection, subscribed or not, and
    greet each new one with a status line (an impostor)."""

    def __init__(self, reactor, path, max_target=60, unsolicited=False):
        self.reactor = reactor
        self.path = path
        self.max_target = max_target
        self.unsolicited = unsolicited
        self.protocol = PROTOCOL
        self.fault_descriptions = bridge_fault_descriptions()
        self.requests = []        # (monotonic receive time, method, params)
        self.conns = []
        self.accepted = 0
        self.replies = {}         # method -> reply override (dict or None)
        self.status = status()
        self.listener = None
        self.push_interval = 0
        self.push_timer = reactor.register_timer(self._push_event)
        self.listen()

    # Listening socket
    def listen(self):
        if os.path.exists(self.path):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        sock.listen(8)
        sock.setblocking(False)
        self.listener = sock
        self.listen_hdl = self.reactor.register_fd(sock.fileno(),
                                                   self._accept)

    def stop(self):
        """The bridge process goes away: connections and socket file."""
        for conn in self.conns:
            conn.close()
        self.conns = []
        if self.listener is not None:
            self.reactor.unregister_fd(self.listen_hdl)
            self.listener.close()
            self.listener = None
            if os.path.exists(self.path):
                os.unlink(self.path)

    def _accept(self, eventtime):
        sock, _ = self.listener.accept()
        sock.setblocking(False)
        conn = Conn(self, sock)
        self.conns.append(conn)
        self.accepted += 1
        if self.unsolicited:
            conn.send({'method': 'status', 'params': self.status})

    # Requests
    def handle(self, conn, msg, eventtime):
        method = msg.get('method')
        params = msg.get('params', {})
        self.requests.append((eventtime, method, params))
        if method in self.replies:
            reply = self.replies[method]
            if reply is not None:
                conn.send(dict(reply, id=msg['id']))
            return
        reply = self._reply(conn, method, params)
        conn.send(dict(reply, id=msg['id']))
        if method == 'subscribe':
            conn.subscribed = True
            conn.send({'method': 'status', 'params': self.status})
        elif method in ('set_target', 'off') and 'result' in reply:
            self.notify()

    def _reply(self, conn, method, params):
        if method == 'hello':
            conn.controller = conn.controller or params.get('controller')
            return {'result': {
                'protocol': self.protocol, 'bridge': 'fake',
                'failsafe_timeout': 10, 'max_target': self.max_target,
                'fault_descriptions': self.fault_descriptions}}
        if method == 'heartbeat':
            if not isinstance(params.get('ready'), bool):
                return error('invalid_params', 'heartbeat needs params.ready'
                             ' (true or false)')
            conn.controller, conn.ready = True, params['ready']
            return {'result': {'failsafe_timeout': 10}}
        if method == 'subscribe':
            return {'result': {'subscribed': True}}
        if method == 'status':
            return {'result': self.status}
        if method not in ('set_target', 'off'):
            return error('unknown_method', "unknown method '%s'" % (method,))
        target = 0 if method == 'off' else params.get('target')
        if not isinstance(target, (int, float)) or isinstance(target, bool):
            return error('invalid_params', 'target must be a number')
        if not 0 <= target <= self.max_target:
            return error('out_of_range', 'target %g outside 0..%g'
                         % (target, self.max_target))
        if target > 0 and self.status['faults']:
            return error('device_fault', 'device fault latched (%s): heat'
                         ' refused' % (', '.join(self.status['faults']),))
        target = round(target)
        self.status = dict(self.status, target=target, target_set=target > 0)
        return {'result': {'target': target}}

    def methods(self, name, since=0.):
        return [(t, p) for t, m, p in self.requests
                if m == name and t >= since]

    def targets(self):
        return [p['target'] for t, m, p in self.requests if m == 'set_target']

    # Bridge-side changes, as the real bridge reports them
    def cli_set(self, target):
        """`panda-breath set TARGET` from a shell: not a controller."""
        self.notify(target=target, target_set=target > 0,
                    note="target %d set by cli" % (target,))

    def button_on(self, set_temp):
        """Always-on pressed at the device with set_temp in range: adopted."""
        self.notify(target=set_temp, target_set=True,
                    device=dict(self.status['device'], work_on=True,
                                set_temp=set_temp),
                    note="heater switched on at the device (%d C); the"
                         " failsafe applies" % (set_temp,))

    # Notifications
    def notify(self, **changes):
        self.status = dict(self.status, **changes)
        for conn in self.conns:
            if conn.subscribed or self.unsolicited:
                conn.send({'method': 'status', 'params': self.status})

    def send_raw(self, data):
        for conn in self.conns:
            if conn.subscribed:
                conn.send(data)

    def push_every(self, interval):
        """Push the status periodically, as the bridge does every ~500 ms."""
        self.push_interval = interval
        self.reactor.update_timer(self.push_timer, self.reactor.NOW
                                  if interval else self.reactor.NEVER)

    def _push_event(self, eventtime):
        self.notify()
        return eventtime + self.push_interval

    def live_conns(self):
        self.conns = [c for c in self.conns if not c.closed]
        return self.conns


class FakeBridgeProcess:
    """fake_bridge.py as a child process (optionally as another user)."""

    def __init__(self, path, args=(), user=None):
        python = sys.executable
        if user is not None:   # another user may not reach this python
            python = shutil.which('python3', path='/usr/bin:/bin') or python
        self.proc = subprocess.Popen(
            [python, os.path.abspath(__file__), path] + list(args),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, user=user)
        if self._read() != {'listening': path}:
            raise RuntimeError("fake bridge did not start")

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("fake bridge exited (%s)" % (self.proc.poll(),))
        return json.loads(line)

    def command(self, cmd, **args):
        self.proc.stdin.write(json.dumps(dict(args, cmd=cmd)).encode()
                              + b'\n')
        self.proc.stdin.flush()
        return self._read()

    def notify(self, **changes):
        return self.command('notify', changes=changes)

    def requests(self):
        """[(time.monotonic() at receipt, method, params)]"""
        return [tuple(r) for r in self.command('requests')['requests']]

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.command('quit')
            except (OSError, RuntimeError, ValueError):
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


def main():
    import argparse
    sys.path.insert(0, HERE)
    import klipper_standin
    ap = argparse.ArgumentParser()
    ap.add_argument('path')
    ap.add_argument('--max-target', type=float, default=60)
    ap.add_argument('--push', type=float, default=0)
    ap.add_argument('--unsolicited', action='store_true')
    args = ap.parse_args()
    reactor = klipper_standin.Reactor()
    bridge = FakeBridge(reactor, args.path, args.max_target, args.unsolicited)
    if args.push:
        bridge.push_every(args.push)
    out = sys.stdout
    state = {'partial': b'', 'quit': False}

    def answer(msg):
        out.write(json.dumps(msg) + '\n')
        out.flush()

    def command(msg):
        cmd = msg.get('cmd')
        if cmd == 'notify':
            bridge.notify(**msg['changes'])
            answer({'ok': True})
        elif cmd == 'requests':
            answer({'requests': bridge.requests, 'accepted': bridge.accepted,
                    'ready': [c.ready for c in bridge.live_conns()]})
        elif cmd == 'reply':
            if msg.get('reply', 0) == 0:
                bridge.replies.pop(msg['method'], None)
            else:
                bridge.replies[msg['method']] = msg['reply']
            answer({'ok': True})
        elif cmd == 'quit':
            state['quit'] = True
            answer({'ok': True})
        else:
            answer({'error': 'unknown command %r' % (cmd,)})

    def read_stdin(eventtime):
        data = os.read(sys.stdin.fileno(), 65536)
        if not data:
            state['quit'] = True
            return
        lines = (state['partial'] + data).split(b'\n')
        state['partial'] = lines.pop()
        for line in lines:
            if line.strip():
                command(json.loads(line))
    reactor.register_fd(sys.stdin.fileno(), read_stdin)
    answer({'listening': args.path})
    while not state['quit']:
        reactor.pause(reactor.monotonic() + .05)
    bridge.stop()


if __name__ == '__main__':
    main()
