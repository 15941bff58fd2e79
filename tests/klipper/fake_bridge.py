"""A fake panda-breath bridge for unit tests: a real AF_UNIX listening
socket driven by the stand-in reactor, speaking the README's socket API."""
import json, os, socket


def status(**changes):
    st = {
        "connected": True, "temperature": 25, "temperature_age": 0.1,
        "target": 0, "heating": False,
        "device": {"work_on": False, "work_mode": 2, "set_temp": 0,
                   "firmware": "V1.0.3", "reported_age": 1.0},
        "faults": [], "note": None,
        "failsafe": {"timeout": 10, "controller": True,
                     "controller_age": 0.5, "tripped": False,
                     "reason": None},
        "since": {"connected": None, "started": None},
        "link": {"connects": 1, "drops": 0, "dropped_frames": 0},
        "bridge": "fake",
    }
    st.update(changes)
    return st


class Conn:
    def __init__(self, bridge, sock):
        self.bridge = bridge
        self.sock = sock
        self.buffer = b''
        self.subscribed = False
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
    def __init__(self, reactor, path):
        self.reactor = reactor
        self.path = path
        self.requests = []        # (monotonic receive time, method, params)
        self.conns = []
        self.replies = {}         # method -> reply override (dict or None)
        self.status = status()
        self.listener = None
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
            os.unlink(self.path)

    def _accept(self, eventtime):
        sock, _ = self.listener.accept()
        sock.setblocking(False)
        self.conns.append(Conn(self, sock))

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
        result = {'hello': {'protocol': 1, 'bridge': 'fake',
                            'failsafe_timeout': 10, 'max_target': 60},
                  'heartbeat': {'failsafe_timeout': 10},
                  'subscribe': {'subscribed': True}}.get(method)
        if method in ('set_target', 'off'):
            target = round(params.get('target', 0)) if params else 0
            result = {'target': target}
            self.status = dict(self.status, target=target,
                               heating=target > 0)
        conn.send({'id': msg['id'], 'result': result})
        if method == 'subscribe':
            conn.subscribed = True
            conn.send({'method': 'status', 'params': self.status})
        elif method in ('set_target', 'off'):
            self.notify()

    def methods(self, name, since=0.):
        return [(t, p) for t, m, p in self.requests
                if m == name and t >= since]

    def targets(self):
        return [p['target'] for t, m, p in self.requests if m == 'set_target']

    # Notifications
    def notify(self, **changes):
        self.status = dict(self.status, **changes)
        for conn in self.conns:
            if conn.subscribed:
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
