import assert from "node:assert/strict";
import {
  computeAcceptKey,
  encodeCloseFrame,
  encodeFrame,
  encodeTextFrame,
  type HttpRequest,
  Opcode,
  parseFrame,
  type WsCloseInfo,
  type WsConnection,
  WsServer,
  type WsServerOptions,
} from "../lib/ws_server.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Runs `body` against a listening server and always closes it afterwards. */
async function withServer(
  options: WsServerOptions,
  body: (server: WsServer, url: string) => Promise<void>,
): Promise<void> {
  const server = new WsServer({ hostname: "127.0.0.1", port: 0, ...options });
  server.listen();
  try {
    await body(server, `ws://127.0.0.1:${server.port}/ws`);
  } finally {
    await server.close();
  }
}

interface TestClient {
  socket: WebSocket;
  opened: Promise<void>;
  closed: Promise<CloseEvent>;
  nextMessage: () => Promise<string | ArrayBuffer>;
}

function openClient(url: string, protocols?: string | string[]): TestClient {
  const socket = new WebSocket(url, protocols);
  socket.binaryType = "arraybuffer";
  const queue: (string | ArrayBuffer)[] = [];
  const waiters: ((message: string | ArrayBuffer) => void)[] = [];
  socket.onmessage = (event) => {
    const waiter = waiters.shift();
    if (waiter) waiter(event.data);
    else queue.push(event.data);
  };
  socket.onerror = () => {};
  const opened = new Promise<void>((resolve) => socket.addEventListener("open", () => resolve()));
  const closed = new Promise<CloseEvent>((resolve) =>
    socket.addEventListener("close", (event) => resolve(event))
  );
  const nextMessage = () => {
    const queued = queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise<string | ArrayBuffer>((resolve) => waiters.push(resolve));
  };
  return { socket, opened, closed, nextMessage };
}

async function closeClient(client: TestClient): Promise<void> {
  if (client.socket.readyState < WebSocket.CLOSING) client.socket.close();
  await client.closed;
}

/** Resolves with the first value `next` produces, or rejects after `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A hand-driven TCP client for byte-level tests. */
class RawClient {
  buffer: Uint8Array = new Uint8Array();
  private constructor(readonly conn: Deno.TcpConn) {}

  static async connect(port: number): Promise<RawClient> {
    return new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  async write(bytes: Uint8Array | string): Promise<void> {
    const data = typeof bytes === "string" ? encoder.encode(bytes) : bytes;
    let written = 0;
    while (written < data.length) written += await this.conn.write(data.subarray(written));
  }

  /** Reads more bytes into the buffer; false on EOF or error. */
  async fill(): Promise<boolean> {
    const chunk = new Uint8Array(4096);
    let count: number | null;
    try {
      count = await this.conn.read(chunk);
    } catch {
      return false;
    }
    if (count === null) return false;
    const joined = new Uint8Array(this.buffer.length + count);
    joined.set(this.buffer);
    joined.set(chunk.subarray(0, count), this.buffer.length);
    this.buffer = joined;
    return true;
  }

  /** Reads an HTTP response head; returns it as text and keeps what follows buffered. */
  async readHead(): Promise<string> {
    while (true) {
      const text = decoder.decode(this.buffer);
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        this.buffer = this.buffer.subarray(encoder.encode(text.slice(0, end + 4)).length);
        return text.slice(0, end);
      }
      if (!await this.fill()) throw new Error("EOF before response head");
    }
  }

  /** Reads everything until the server closes. */
  async readToEnd(): Promise<string> {
    while (await this.fill());
    return decoder.decode(this.buffer);
  }

  async readFrame(): Promise<{ opcode: number; payload: Uint8Array } | null> {
    while (true) {
      const frame = parseFrame(this.buffer);
      if (frame) {
        this.buffer = this.buffer.subarray(frame.length);
        return frame;
      }
      if (!await this.fill()) return null;
    }
  }

  async handshake(path = "/ws", extra = ""): Promise<string> {
    const key = btoa("0123456789abcdef");
    await this.write(
      `GET ${path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`,
    );
    return await this.readHead();
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

/** Deno reports a dropped connection as 1006 or, without any close frame, as 0. */
function isAbnormalClose(event: CloseEvent): boolean {
  return event.code === 1006 || event.code === 0;
}

function closeCode(frame: { payload: Uint8Array }): number {
  return new DataView(frame.payload.buffer, frame.payload.byteOffset).getUint16(0);
}

Deno.test("computeAcceptKey matches the RFC 6455 example", async () => {
  assert.equal(
    await computeAcceptKey("dGhlIHNhbXBsZSBub25jZQ=="),
    "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
  );
});

Deno.test("handshake negotiates chat and exchanges text both ways", async () => {
  const received: string[] = [];
  await withServer({
    protocols: ["chat"],
    onConnection: (conn) => {
      conn.send("hello");
      conn.onMessage = (data) => {
        received.push(data as string);
        conn.send(`echo:${data}`);
      };
    },
  }, async (_server, url) => {
    const client = openClient(url, "chat");
    await client.opened;
    assert.equal(client.socket.protocol, "chat");
    assert.equal(await client.nextMessage(), "hello");
    client.socket.send("héllo wörld");
    assert.equal(await client.nextMessage(), "echo:héllo wörld");
    assert.deepEqual(received, ["héllo wörld"]);
    await closeClient(client);
  });
});

Deno.test("handshake without a subprotocol offers none back", async () => {
  await withServer({ protocols: ["chat"] }, async (server, url) => {
    const client = openClient(url);
    await client.opened;
    assert.equal(client.socket.protocol, "");
    assert.equal(server.connections.length, 1);
    assert.equal(server.connections[0].protocol, "");
    await closeClient(client);
  });
});

Deno.test("binary frames both ways", async () => {
  await withServer({
    onConnection: (conn) => {
      conn.onMessage = (data) => {
        assert.ok(data instanceof Uint8Array);
        conn.sendBinary(data.map((byte) => byte + 1));
      };
    },
  }, async (_server, url) => {
    const client = openClient(url);
    await client.opened;
    client.socket.send(new Uint8Array([1, 2, 255]));
    const reply = await client.nextMessage();
    assert.ok(reply instanceof ArrayBuffer);
    assert.deepEqual([...new Uint8Array(reply)], [2, 3, 0]);
    await closeClient(client);
  });
});

Deno.test("frames split byte by byte and fragmented messages are reassembled", async () => {
  const received: (string | Uint8Array)[] = [];
  await withServer({
    onConnection: (conn) => conn.onMessage = (data) => received.push(data),
  }, async (server) => {
    const raw = await RawClient.connect(server.port);
    try {
      assert.match(await raw.handshake(), /^HTTP\/1\.1 101 /);
      for (const byte of encodeFrame(Opcode.text, "split", { mask: true })) {
        await raw.write(new Uint8Array([byte]));
      }
      await raw.write(encodeFrame(Opcode.text, "frag", { fin: false, mask: true }));
      await raw.write(encodeFrame(Opcode.ping, "p", { mask: true }));
      await raw.write(encodeFrame(Opcode.continuation, "men", { fin: false, mask: true }));
      await raw.write(encodeFrame(Opcode.continuation, "ted", { mask: true }));
      await raw.write(encodeCloseFrame(1000, "", { mask: true }));
      const reply = await raw.readFrame();
      assert.equal(reply?.opcode, Opcode.close, "a ping is not answered by default");
      assert.equal(closeCode(reply!), 1000);
    } finally {
      raw.close();
    }
  });
  assert.deepEqual(received, ["split", "fragmented"]);
});

Deno.test("ignoreContinuation delivers frames alone and drops continuations", async () => {
  const received: (string | Uint8Array)[] = [];
  await withServer({
    ignoreContinuation: true,
    answerPings: true,
    onConnection: (conn) => conn.onMessage = (data) => received.push(data),
  }, async (server) => {
    const raw = await RawClient.connect(server.port);
    try {
      await raw.handshake();
      await raw.write(encodeFrame(Opcode.text, '{"a":', { fin: false, mask: true }));
      await raw.write(encodeFrame(Opcode.continuation, "1}", { mask: true }));
      await raw.write(encodeFrame(Opcode.ping, "are you there", { mask: true }));
      const pong = await raw.readFrame();
      assert.equal(pong?.opcode, Opcode.pong);
      assert.equal(decoder.decode(pong!.payload), "are you there");
    } finally {
      raw.close();
    }
  });
  assert.deepEqual(received, ['{"a":']);
});

Deno.test("oversize frame closes with 1009", async () => {
  let serverSide: WsCloseInfo | undefined;
  await withServer({
    maxFrameBytes: 1024,
    onConnection: (conn) => conn.onClose = (info) => serverSide = info,
  }, async (_server, url) => {
    const client = openClient(url);
    await client.opened;
    client.socket.send("x".repeat(5000));
    const event = await within(client.closed, 3000, "close");
    assert.equal(event.code, 1009);
  });
  assert.equal(serverSide?.code, 1009);
});

Deno.test("unmasked client frame is a protocol error (1002)", async () => {
  await withServer({}, async (server) => {
    const raw = await RawClient.connect(server.port);
    try {
      await raw.handshake();
      await raw.write(encodeTextFrame("not masked"));
      const frame = await raw.readFrame();
      assert.equal(frame?.opcode, Opcode.close);
      assert.equal(closeCode(frame!), 1002);
      assert.equal(await raw.readFrame(), null);
    } finally {
      raw.close();
    }
  });
});

Deno.test("abort drops TCP without a close frame; the client sees an abnormal close", async () => {
  let serverSide: WsCloseInfo | undefined;
  await withServer({
    onConnection: (conn) => conn.onClose = (info) => serverSide = info,
  }, async (server, url) => {
    const client = openClient(url);
    await client.opened;
    server.connections[0].abort();
    const event = await within(client.closed, 3000, "close");
    assert.equal(event.wasClean, false);
    assert.ok(isAbnormalClose(event), `code ${event.code}`);
  });
  assert.deepEqual(serverSide, { code: 1006, reason: "", clean: false });
});

Deno.test("close sends a close frame with code and reason", async () => {
  let serverSide: WsCloseInfo | undefined;
  await withServer({
    onConnection: (conn) => conn.onClose = (info) => serverSide = info,
  }, async (server, url) => {
    const client = openClient(url);
    await client.opened;
    await server.connections[0].close(4000, "bye");
    const event = await within(client.closed, 3000, "close");
    assert.equal(event.code, 4000);
    assert.equal(event.reason, "bye");
  });
  assert.equal(serverSide?.code, 4000);
});

Deno.test("client close is answered and reported clean", async () => {
  let resolveClose: (info: WsCloseInfo) => void = () => {};
  const serverClosed = new Promise<WsCloseInfo>((resolve) => resolveClose = resolve);
  await withServer({
    onConnection: (conn) => conn.onClose = resolveClose,
  }, async (server, url) => {
    const client = openClient(url);
    await client.opened;
    client.socket.close(4001, "done");
    const event = await within(client.closed, 3000, "close");
    assert.equal(event.code, 4001);
    assert.deepEqual(await serverClosed, { code: 4001, reason: "done", clean: true });
    assert.equal(server.connections.length, 0);
  });
});

Deno.test("sendRaw writes merged frames and frames sent on connect share the 101 write", async () => {
  await withServer({
    onConnection: (conn) => conn.send("greeting"),
  }, async (server) => {
    const raw = await RawClient.connect(server.port);
    try {
      await raw.handshake();
      assert.equal(decoder.decode((await raw.readFrame())!.payload), "greeting");
      const merged = new Uint8Array([...encodeTextFrame("one"), ...encodeTextFrame("two")]);
      await server.connections[0].sendRaw(merged);
      assert.equal(decoder.decode((await raw.readFrame())!.payload), "one");
      assert.equal(decoder.decode((await raw.readFrame())!.payload), "two");
    } finally {
      raw.close();
    }
  });
});

Deno.test("non-WebSocket requests get the handler's answer", async () => {
  const seen: HttpRequest[] = [];
  await withServer({
    onHttpRequest: (request) => {
      seen.push(request);
      return {
        status: 200,
        headers: { "Content-Type": "text/plain" },
        body: `${request.method} ${request.path} ${request.query.get("q")} ${
          decoder.decode(request.body)
        }`,
      };
    },
    onUpgradeRequest: (request) =>
      request.headers.get("x-refuse") ? { status: 503, body: "busy" } : undefined,
  }, async (server) => {
    const base = `http://127.0.0.1:${server.port}`;
    const get = await fetch(`${base}/page?q=1`);
    assert.equal(get.status, 200);
    assert.equal(await get.text(), "GET /page 1 ");
    const post = await fetch(`${base}/x?q=2`, { method: "POST", body: "payload" });
    assert.equal(await post.text(), "POST /x 2 payload");
    const raw = await RawClient.connect(server.port);
    try {
      assert.match(await raw.handshake("/ws", "X-Refuse: 1\r\n"), /^HTTP\/1\.1 503 /);
    } finally {
      raw.close();
    }
  });
  assert.equal(seen.length, 2);
});

Deno.test("malformed HTTP is answered with 4xx and the server keeps working", async () => {
  await withServer({
    onHttpRequest: () => ({ status: 200, body: "alive" }),
  }, async (server) => {
    const cases: [string, RegExp][] = [
      ["garbage\r\n\r\n", / 400 /],
      ["GET / HTTP/1.1\r\nno colon here\r\n\r\n", / 400 /],
      ["GET / HTTP/1.1\r\n" + "X-Big: " + "a".repeat(9000) + "\r\n\r\n", / 431 /],
      ["GET / HTTP/1.1\r\nContent-Length: -4\r\n\r\n", / 400 /],
      ["GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", / 426 /],
      [
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n",
        / 400 /,
      ],
      ["\x00\x01\x02\xff\r\n\r\n", / 400 /],
    ];
    for (const [request, expected] of cases) {
      const raw = await RawClient.connect(server.port);
      try {
        await raw.write(request);
        assert.match((await raw.readToEnd()).split("\r\n")[0], expected, JSON.stringify(request));
      } finally {
        raw.close();
      }
    }
    const early = await RawClient.connect(server.port);
    await early.write("GET / HT");
    early.close();
    const response = await fetch(`http://127.0.0.1:${server.port}/`);
    assert.equal(await response.text(), "alive");
  });
});

Deno.test("close refuses connections; listen again reuses the port", async () => {
  const server = new WsServer({ port: 0 });
  server.listen();
  const port = server.port;
  const client = openClient(`ws://127.0.0.1:${port}/ws`);
  await client.opened;
  await server.close();
  assert.ok(isAbnormalClose(await within(client.closed, 3000, "close")));
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }));
  server.listen();
  try {
    assert.equal(server.port, port);
    const again = openClient(`ws://127.0.0.1:${port}/ws`);
    await again.opened;
    await closeClient(again);
  } finally {
    await server.close();
  }
});

Deno.test("maxSockets evicts the socket that least recently received data", async () => {
  const evicted: (WsConnection | null)[] = [];
  let received = 0;
  await withServer({
    maxSockets: 3,
    onConnection: (conn) => conn.onMessage = () => received++,
    onEvict: (_addr, connection) => evicted.push(connection),
  }, async (server, url) => {
    const clients: TestClient[] = [];
    for (let i = 0; i < 3; i++) {
      clients.push(openClient(url));
      await clients[i].opened;
    }
    const listenOnly = server.connections[0];
    clients[1].socket.send("{}");
    clients[2].socket.send("{}");
    while (received < 2) await new Promise((resolve) => setTimeout(resolve, 10));
    const fourth = openClient(url);
    await fourth.opened;
    const firstClosed = await within(
      Promise.race(clients.map((client, index) => client.closed.then(() => index))),
      3000,
      "an eviction",
    );
    assert.equal(firstClosed, 0);
    assert.deepEqual(evicted, [listenOnly]);
    await Promise.all([...clients, fourth].map(closeClient));
  });
});
