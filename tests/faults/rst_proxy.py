"""A TCP proxy that can end its client connections with a real TCP reset.

Deno closes a TCP connection with shutdown(SHUT_WR) first, so a FIN always
precedes any RST and no Deno server can produce a bare reset.  This proxy
sits between the bridge and a Deno device and, on the command "rst" on
stdin, closes every client connection with SO_LINGER {on, 0}: the kernel
sends RST and nothing else.  One thread, non-blocking sockets, so a close
takes effect at once.

Usage: python3 rst_proxy.py UPSTREAM_PORT
Prints "listening PORT" once, then "reset N" after each "rst" command.
"""
import selectors, socket, struct, sys

LINGER_RESET = struct.pack('ii', 1, 0)


def main():
    upstream_port = int(sys.argv[1])
    sel = selectors.DefaultSelector()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(('127.0.0.1', 0))
    server.listen(64)
    server.setblocking(False)
    sel.register(server, selectors.EVENT_READ, 'accept')
    sel.register(sys.stdin, selectors.EVENT_READ, 'command')
    peers = {}   # socket -> its partner
    clients = set()

    def drop(sock, reset=False):
        partner = peers.pop(sock, None)
        clients.discard(sock)
        for s, rst in ((sock, reset), (partner, False)):
            if s is None:
                continue
            peers.pop(s, None)
            clients.discard(s)
            try:
                sel.unregister(s)
            except (KeyError, ValueError):
                pass
            try:
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 LINGER_RESET)
                s.close()
            except OSError:
                pass

    print('listening %d' % server.getsockname()[1], flush=True)
    while True:
        for key, _ in sel.select():
            if key.data == 'accept':
                try:
                    client, _ = server.accept()
                except OSError:
                    continue
                try:
                    upstream = socket.create_connection(
                        ('127.0.0.1', upstream_port), timeout=2)
                except OSError:
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      LINGER_RESET)
                    client.close()
                    continue
                for s in (client, upstream):
                    s.setblocking(False)
                    sel.register(s, selectors.EVENT_READ, 'data')
                peers[client], peers[upstream] = upstream, client
                clients.add(client)
            elif key.data == 'command':
                line = sys.stdin.readline()
                if not line:
                    return
                if line.strip() == 'rst':
                    victims = list(clients)
                    for client in victims:
                        drop(client, reset=True)
                    print('reset %d' % len(victims), flush=True)
            else:
                sock = key.fileobj
                if sock not in peers:
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b''
                if not data:
                    drop(sock)
                    continue
                try:
                    peers[sock].setblocking(True)
                    peers[sock].sendall(data)
                    peers[sock].setblocking(False)
                except OSError:
                    drop(sock)


if __name__ == '__main__':
    main()
