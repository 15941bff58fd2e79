/**
 * Byte-level tests: the test tree's frame codec (tests/faults/ws_frames.ts), the raw
 * device that uses it, and the simulator's WebSocket route as a raw TCP client sees it.
 */
import assert from "node:assert/strict";
import {
  closeCode,
  computeAcceptKey,
  encodeCloseFrame,
  encodeFrame,
  encodeTextFrame,
  Opcode,
  parseFrame,
} from "./faults/ws_frames.ts";
import { RawDevice } from "./faults/raw_device.ts";
import { Simulator, type SimulatorOptions } from "../lib/simulator/mod.ts";
import { delay, until } from "./wait.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Runs `body` against a started simulator and always stops it. */
async function withSimulator(
  options: SimulatorOptions,
  body: (sim: Simulator, url: string) => Promise<void>,
): Promise<void> {
  const sim = new Simulator({ telemetryIntervalMs: 1000, rebootDownMs: 200, ...options });
  await sim.start();
  try {
    await body(sim, sim.url);
  } finally {
    await sim.stop();
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

/** Resolves with `promise`, or rejects after `ms`. */
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

  /** Reads until the first response head is complete (or the server closes). */
  async readStatusLine(): Promise<string> {
    while (!decoder.decode(this.buffer).includes("\r\n") && await this.fill());
    return decoder.decode(this.buffer).split("\r\n")[0];
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

// ---- The codec ----

Deno.test("computeAcceptKey matches the RFC 6455 example", async () => {
  assert.equal(
    await computeAcceptKey("dGhlIHNhbXBsZSBub25jZQ=="),
    "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
  );
});

Deno.test("codec: frames of every length class round-trip, masked or not; incomplete is null", () => {
  for (const size of [0, 125, 126, 65535, 65536]) {
    const payload = new Uint8Array(size).map((_, i) => i % 251);
    for (const mask of [false, true]) {
      const bytes = encodeFrame(Opcode.binary, payload, { mask });
      assert.equal(parseFrame(bytes.subarray(0, bytes.length - 1)), null, `${size} cut`);
      const frame = parseFrame(bytes);
      assert.ok(frame, `${size}`);
      assert.deepEqual([frame.fin, frame.opcode, frame.length], [
        true,
        Opcode.binary,
        bytes.length,
      ]);
      assert.deepEqual(frame.payload, payload);
    }
  }
  const fragment = parseFrame(encodeFrame(Opcode.text, "frag", { fin: false }));
  assert.equal(fragment?.fin, false);
  const close = parseFrame(encodeCloseFrame(4000, "bye", { mask: true }))!;
  assert.equal(close.opcode, Opcode.close);
  assert.equal(closeCode(close), 4000);
  assert.equal(decoder.decode(close.payload.subarray(2)), "bye");
  assert.equal(closeCode(parseFrame(encodeCloseFrame())!), undefined);
  assert.deepEqual(parseFrame(encodeTextFrame("héllo"))?.payload, encoder.encode("héllo"));
});

Deno.test("raw frames merged and split on the wire reach the client", async () => {
  const device = new RawDevice({
    behavior: async (session) => {
      if (!(await session.upgrade())) return;
      const merged = new Uint8Array([
        ...encodeTextFrame('{"printer":{"state":2}}'),
        ...encodeTextFrame('{"printer":{"state":3}}'),
      ]);
      await session.write(merged);
      const split = encodeFrame(Opcode.text, '{"printer":{"state":4}}');
      await session.write(split.subarray(0, 5));
      await delay(30);
      await session.write(split.subarray(5));
      await session.sendText('{"printer":{"state":5}}');
      await session.startReading();
    },
  });
  try {
    const client = openClient(`ws://${device.address}/ws`);
    const states: number[] = [];
    client.socket.onmessage = (event) => {
      const printer = JSON.parse(event.data).printer ?? {};
      if ("state" in printer && !("name" in printer)) states.push(printer.state);
    };
    await until(() => states.includes(5), 2000, "the last frame");
    assert.deepEqual(states, [2, 3, 4, 5]);
    device.abortAll();
    assert.equal((await within(client.closed, 2000, "abort")).wasClean, false);
  } finally {
    await device.close();
  }
});

// ---- The simulator's WebSocket route, byte by byte ----

Deno.test("handshake negotiates chat and text reaches the device both ways", async () => {
  await withSimulator({}, async (sim, url) => {
    const client = openClient(url, "chat");
    await client.opened;
    assert.equal(client.socket.protocol, "chat");
    assert.ok(JSON.parse(await client.nextMessage() as string).wifi, "the connect frame");
    const seen = sim.waitForFrame((_frame, entry) => entry.text === "héllo wörld");
    client.socket.send("héllo wörld");
    assert.equal((await seen).text, "héllo wörld");
    await closeClient(client);
  });
});

Deno.test("handshake without a subprotocol offers none back", async () => {
  await withSimulator({}, async (sim, url) => {
    const client = openClient(url);
    await client.opened;
    assert.equal(client.socket.protocol, "");
    assert.equal(sim.clientCount, 1);
    await closeClient(client);
  });
});

Deno.test("binary frames are read as UTF-8 JSON writes", async () => {
  await withSimulator({}, async (sim, url) => {
    const client = openClient(url);
    await client.opened;
    const seen = sim.waitForFrame((_frame, entry) => entry.text.includes("37"));
    client.socket.send(encoder.encode('{"settings":{"set_temp":37}}'));
    await seen;
    assert.equal(sim.state.set_temp, 37);
    await closeClient(client);
  });
});

Deno.test("a frame split byte by byte reaches the device; a client close is answered", async () => {
  await withSimulator({}, async (sim) => {
    const raw = await RawClient.connect(sim.port);
    try {
      assert.match(await raw.handshake(), /^HTTP\/1\.1 101 /);
      const connect = await raw.readFrame();
      assert.equal(connect?.opcode, Opcode.text, "the connect frame");
      const seen = sim.waitForFrame((_frame, entry) => entry.text === "split");
      for (const byte of encodeFrame(Opcode.text, "split", { mask: true })) {
        await raw.write(new Uint8Array([byte]));
      }
      await seen;
      await raw.write(encodeCloseFrame(1000, "", { mask: true }));
      let reply = await raw.readFrame();
      while (reply && reply.opcode !== Opcode.close) reply = await raw.readFrame();
      assert.equal(reply?.opcode, Opcode.close);
      assert.equal(closeCode(reply!), 1000);
    } finally {
      raw.close();
    }
  });
});

Deno.test("oversize frame closes with 1009", async () => {
  const lines: string[] = [];
  await withSimulator({ maxFrameBytes: 1024, log: (line) => lines.push(line) }, async (_s, url) => {
    const client = openClient(url);
    await client.opened;
    client.socket.send("x".repeat(5000));
    const event = await within(client.closed, 3000, "close");
    assert.equal(event.code, 1009);
  });
  assert.ok(lines.some((line) => /frame of 5000 bytes .* too big/.test(line)), lines.join("\n"));
});

Deno.test("abortClients drops TCP without a close frame; the client sees an abnormal close", async () => {
  await withSimulator({}, async (sim, url) => {
    const client = openClient(url);
    await client.opened;
    sim.abortClients();
    const event = await within(client.closed, 3000, "close");
    assert.equal(event.wasClean, false);
    assert.ok(isAbnormalClose(event), `code ${event.code}`);
  });
});

Deno.test("client close is answered and reported clean", async () => {
  const lines: string[] = [];
  await withSimulator({ log: (line) => lines.push(line) }, async (sim, url) => {
    const client = openClient(url);
    await client.opened;
    client.socket.close(4001, "done");
    const event = await within(client.closed, 3000, "close");
    assert.equal(event.code, 4001);
    await until(() => sim.clientCount === 0, 2000, "the simulator to see the close");
    await until(() => lines.some((line) => / \(4001\)$/.test(line)), 2000, "the disconnect log");
  });
});

Deno.test("refused upgrades and non-WebSocket requests get plain HTTP answers", async () => {
  await withSimulator({}, async (sim) => {
    const base = `http://127.0.0.1:${sim.port}`;
    const page = await fetch(`${base}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /Panda Breath simulator/);
    const post = await fetch(`${base}/sim/temperature?value=30`, { method: "POST", body: "x" });
    assert.equal((await post.json()).temperature, 30);
    sim.refuseUpgrades(503);
    const raw = await RawClient.connect(sim.port);
    try {
      assert.match(await raw.handshake("/ws"), /^HTTP\/1\.1 503 /);
    } finally {
      raw.close();
    }
  });
});

Deno.test("malformed HTTP is answered with 4xx and the simulator keeps working", async () => {
  await withSimulator({}, async (sim) => {
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
      const raw = await RawClient.connect(sim.port);
      try {
        await raw.write(request);
        assert.match(await raw.readStatusLine(), expected, JSON.stringify(request));
      } finally {
        raw.close();
      }
    }
    const early = await RawClient.connect(sim.port);
    await early.write("GET / HT");
    early.close();
    const response = await fetch(`http://127.0.0.1:${sim.port}/sim/state`);
    assert.equal(response.status, 200);
    await response.body?.cancel();
  });
});

Deno.test("maxSockets evicts the socket that least recently received data, with a close frame", async () => {
  const lines: string[] = [];
  await withSimulator({ maxSockets: 3, log: (line) => lines.push(line) }, async (sim, url) => {
    const clients: TestClient[] = [];
    for (let i = 0; i < 3; i++) {
      clients.push(openClient(url));
      await clients[i].opened;
    }
    for (const i of [1, 2]) {
      const seen = sim.waitForFrame((_frame, entry) => entry.text === `{"n":${i}}`);
      clients[i].socket.send(`{"n":${i}}`);
      await seen;
    }
    const fourth = openClient(url);
    await fourth.opened;
    const firstClosed = await within(
      Promise.race(clients.map((client, index) => client.closed.then(() => index))),
      3000,
      "an eviction",
    );
    assert.equal(firstClosed, 0);
    const event = await clients[0].closed;
    assert.deepEqual([event.code, event.reason], [1001, "socket limit"]);
    assert.equal(lines.filter((line) => line.startsWith("evicted ")).length, 1);
    await Promise.all([...clients, fourth].map(closeClient));
  });
});
