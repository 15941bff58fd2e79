import assert from "node:assert/strict";
import { ApiClient, ApiError } from "../lib/api_client.ts";
import { SocketClient } from "./socket_client.ts";
import { type ApiLimits, ApiServer, SocketInUseError } from "../lib/api_server.ts";
import { Bridge, type BridgeStatus } from "../lib/bridge.ts";
import { LineSplitter } from "../lib/lines.ts";
import { Logger } from "../lib/log.ts";
import { buildOnFrame, FAULT_DESCRIPTIONS, OFF_FRAME } from "../lib/protocol.ts";
import { FakeDevice } from "./fake_device.ts";
import { until } from "./wait.ts";

interface Rig {
  device: FakeDevice;
  bridge: Bridge;
  server: ApiServer;
  path: string;
  logs: string[];
  [Symbol.asyncDispose](): Promise<void>;
}

async function rig(limits: Partial<ApiLimits> = {}, failsafeTimeoutMs = 60_000): Promise<Rig> {
  const device = new FakeDevice();
  const logs: string[] = [];
  const logger = new Logger("debug", (line) => logs.push(line));
  const bridge = new Bridge({
    url: device.url,
    logger,
    failsafeTimeoutMs,
    backoff: { initialMs: 40, maxMs: 200, factor: 2 },
  });
  const dir = await Deno.makeTempDir({ prefix: "pb-api-" });
  const path = `${dir}/bridge.sock`;
  const server = await ApiServer.listen({ path, bridge, logger, limits });
  bridge.start();
  return {
    device,
    bridge,
    server,
    path,
    logs,
    async [Symbol.asyncDispose]() {
      await server.close();
      await bridge.stop("test over", 200);
      await device.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A raw line-level connection, for what ApiClient would never send. */
function rawClient(path: string, reads = true): Promise<SocketClient> {
  return SocketClient.connect(path, { inbox: reads, reads, keepNotifications: 0 });
}

Deno.test("socket is created with mode 0660 and removed on close", async () => {
  const r = await rig();
  const info = await Deno.lstat(r.path);
  assert.ok(info.isSocket);
  assert.equal(info.mode! & 0o777, 0o660);
  await r[Symbol.asyncDispose]().catch(() => {});
  await assert.rejects(Deno.lstat(r.path), Deno.errors.NotFound);
});

Deno.test("hello, status, set_target, off over the socket", async () => {
  await using r = await rig();
  const client = await ApiClient.connect(r.path);
  try {
    const hello = await client.request("hello", { client: "test" }) as Record<string, unknown>;
    assert.equal(hello.protocol, 2);
    assert.equal(hello.max_target, 60);
    assert.equal(hello.failsafe_timeout, 60);
    assert.deepEqual(hello.fault_descriptions, FAULT_DESCRIPTIONS);
    assert.deepEqual(await client.request("set_target", { target: 39.5 }), { target: 40 });
    await r.device.waitFor((t) => t === buildOnFrame(40));
    const status = await client.request("status") as BridgeStatus;
    assert.equal(status.target, 40);
    assert.equal(status.target_set, true);
    assert.deepEqual(await client.request("off"), { target: 0 });
    assert.equal((await client.request("status") as BridgeStatus).target, 0);
  } finally {
    await client.close();
  }
});

Deno.test("bad requests get errors with codes, and the connection stays usable", async () => {
  await using r = await rig();
  const raw = await rawClient(r.path);
  const cases: [string, string][] = [
    ["not json\n", "parse_error"],
    ["[1,2]\n", "parse_error"],
    ['{"method":"status"}\n', "invalid_request"],
    ['{"id":1}\n', "invalid_request"],
    ['{"id":{},"method":"status"}\n', "invalid_request"],
    ['{"id":2,"method":"explode"}\n', "unknown_method"],
    ['{"id":3,"method":"set_target","params":{"target":"45"}}\n', "invalid_params"],
    ['{"id":4,"method":"set_target"}\n', "invalid_params"],
    ['{"id":5,"method":"set_target","params":{"target":61}}\n', "out_of_range"],
    ['{"id":6,"method":"set_target","params":{"target":-5}}\n', "out_of_range"],
    ['{"id":7,"method":"status","params":[1]}\n', "invalid_params"],
  ];
  for (const [request, code] of cases) {
    await raw.write(request);
    const reply = await raw.nextLine();
    assert.equal((reply?.error as { code: string })?.code, code, request);
  }
  await raw.write(new Uint8Array([0xff, 0xfe, 0x0a]));
  assert.equal(((await raw.nextLine())?.error as { code: string }).code, "parse_error");
  await raw.write('{"id":"x","method":"status"}\n');
  assert.equal((await raw.nextLine())?.id, "x");
  assert.equal(r.bridge.target, 0);
  await raw.close();
});

Deno.test("requests split across writes and merged in one write are all answered", async () => {
  await using r = await rig();
  const raw = await rawClient(r.path);
  await raw.write('{"id":1,"meth');
  await new Promise((resolve) => setTimeout(resolve, 20));
  await raw.write('od":"hello"}\n{"id":2,"method":"status"}\n{"id":3,');
  await raw.write('"method":"off"}\n');
  assert.deepEqual([
    (await raw.nextLine())?.id,
    (await raw.nextLine())?.id,
    (await raw.nextLine())?.id,
  ], [
    1,
    2,
    3,
  ]);
  await raw.close();
});

Deno.test("an oversized line gets line_too_long and the connection is closed", async () => {
  await using r = await rig({ maxLineBytes: 1024 });
  const raw = await rawClient(r.path);
  await raw.write("x".repeat(4096));
  const reply = await raw.nextLine();
  assert.equal((reply?.error as { code: string }).code, "line_too_long");
  assert.equal(await raw.nextLine(), null);
  await raw.close();
  const client = await ApiClient.connect(r.path);
  assert.equal((await client.request("hello") as { protocol: number }).protocol, 2);
  await client.close();
});

Deno.test("subscribe pushes a status at once and on every telemetry frame", async () => {
  await using r = await rig();
  const client = await ApiClient.connect(r.path);
  const received: { at: number; status: BridgeStatus }[] = [];
  await client.subscribe((status) => received.push({ at: performance.now(), status }));
  await new Promise((resolve) => setTimeout(resolve, 600));
  await client.close();
  assert.ok(received.length >= 5, `${received.length} notifications in 600 ms`);
  assert.ok(received.some(({ status }) => status.temperature === 25));
});

Deno.test("the server listens to the bridge's statuses only while a client is subscribed", async () => {
  await using r = await rig();
  const subscribe = r.bridge.subscribe.bind(r.bridge);
  let listening = 0;
  r.bridge.subscribe = (listener) => {
    listening++;
    const unsubscribe = subscribe(listener);
    return () => {
      listening--;
      unsubscribe();
    };
  };
  const plain = await ApiClient.connect(r.path);
  await plain.request("status");
  assert.equal(listening, 0, "a client that does not subscribe costs no status per frame");
  const first = await ApiClient.connect(r.path);
  const second = await ApiClient.connect(r.path);
  await first.subscribe(() => {});
  await second.subscribe(() => {});
  assert.equal(listening, 1, "one listener for all subscribers");
  await first.close();
  await second.close();
  await until(() => listening === 0, 2000, "the listener gone with the last subscriber");
  const again = await ApiClient.connect(r.path);
  const temperatures: (number | null)[] = [];
  await again.subscribe((status) => temperatures.push(status.temperature));
  r.device.temperature = 31;
  await until(() => temperatures.includes(31), 3000, "telemetry reaches a new subscriber");
  assert.equal(listening, 1);
  await again.close();
  await plain.close();
});

Deno.test("a reply to set_target is followed only by statuses that reflect it", async () => {
  await using r = await rig();
  const client = await ApiClient.connect(r.path);
  let replied = false;
  const afterReply: number[] = [];
  await client.subscribe((status) => {
    if (replied) afterReply.push(status.target);
  });
  await client.request("set_target", { target: 33 });
  replied = true;
  await new Promise((resolve) => setTimeout(resolve, 300));
  await client.close();
  assert.ok(afterReply.length > 0);
  assert.ok(afterReply.every((target) => target === 33));
});

Deno.test("heartbeat makes a controller; its disconnect is logged", async () => {
  await using r = await rig();
  const client = await ApiClient.connect(r.path);
  assert.deepEqual(await client.request("heartbeat", { ready: true }), { failsafe_timeout: 60 });
  assert.equal(r.bridge.status().failsafe.controller, true);
  assert.equal(r.bridge.status().failsafe.controllers, 1);
  await client.close();
  await until(() => r.bridge.status().failsafe.controllers === 0, 2000, "the controller gone");
  assert.equal(r.bridge.status().failsafe.controller, false);
  assert.ok(r.logs.some((l) => l.includes("controller disconnected")));
});

Deno.test("API v2: heartbeat needs {ready}; a not-ready controller is no one in control", async () => {
  await using r = await rig();
  const client = await ApiClient.connect(r.path);
  await assert.rejects(
    client.request("heartbeat"),
    (error: Error) => error instanceof ApiError && error.code === "invalid_params",
  );
  await assert.rejects(client.request("heartbeat", { ready: "yes" }), ApiError);
  assert.equal(r.bridge.status().failsafe.controllers, 0, "an invalid heartbeat makes nothing");
  const hello = await client.hello({ client: "klipper", controller: true, ready: false });
  assert.equal(hello.protocol, 2);
  assert.equal(r.bridge.status().failsafe.controllers, 1);
  assert.deepEqual(await client.heartbeat(false), { failsafe_timeout: 60 });
  assert.equal(r.bridge.status().failsafe.controller, false);
  await client.heartbeat(true);
  assert.equal(r.bridge.status().failsafe.controller, true);
  await client.close();
});

Deno.test("hazard 8: the controller's socket closed while heating turns the heat off within 1 s", async () => {
  await using r = await rig(); // a 60 s failsafe: only the close can explain a fast OFF
  const klipper = await ApiClient.connect(r.path);
  await klipper.hello({ client: "klipper", controller: true, ready: true });
  await klipper.heartbeat(true);
  await klipper.request("set_target", { target: 45 });
  await r.device.waitFor((t) => t === buildOnFrame(45));
  const from = r.device.received.length;
  const closedAt = performance.now();
  await klipper.close();
  const off = await r.device.waitFor((t) => t === OFF_FRAME, 2000, from);
  assert.ok(off.at - closedAt <= 1000, `OFF ${Math.round(off.at - closedAt)} ms after the close`);
  const status = r.bridge.status();
  assert.equal(status.target, 0);
  assert.equal(status.failsafe.tripped, true);
  assert.match(status.failsafe.reason ?? "", /klipper\) disconnected while heating/);
});

Deno.test("hazard 5: with a device fault latched set_target answers device_fault and sends nothing", async () => {
  await using r = await rig();
  const client = await ApiClient.connect(r.path);
  await until(() => r.bridge.status().connected);
  r.device.sendAll('{"settings":{"work_on":0,"work_mode":2,"set_temp":45,"ptc_sensor_status":1}}');
  await until(() => r.bridge.status().faults.includes("ptc_sensor_short"));
  const from = r.device.received.length;
  await assert.rejects(
    client.request("set_target", { target: 45 }),
    (error: Error) =>
      error instanceof ApiError && error.code === "device_fault" &&
      /ptc_sensor_short/.test(error.message),
  );
  assert.deepEqual(await client.request("off"), { target: 0 });
  await r.device.waitFor((t) => t === OFF_FRAME, 2000, from);
  assert.ok(!r.device.received.slice(from).some((x) => x.text.includes('"work_on":true')));
  await client.close();
});

Deno.test("a client that never reads is cut off; others keep getting status", async () => {
  await using r = await rig({ maxQueuedBytes: 32 * 1024 });
  const lazy = await rawClient(r.path, false);
  await lazy.write('{"id":1,"method":"subscribe"}\n');
  const reader = await ApiClient.connect(r.path);
  let count = 0;
  await reader.subscribe(() => count++);
  // Settings changes go out at once (readings alone are coalesced to 10 per second).
  for (let i = 0; i < 3000 && r.server.clientCount > 1; i++) {
    r.device.sendAll(`{"settings":{"work_on":0,"set_temp":${30 + i % 2}}}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  assert.equal(r.server.clientCount, 1);
  assert.ok(r.logs.some((l) => l.includes("cut off")));
  const before = count;
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.ok(count > before);
  await lazy.close();
  await reader.close();
});

Deno.test("clients beyond the cap are refused with a reason", async () => {
  await using r = await rig({ maxClients: 3 });
  const held = await Promise.all([1, 2, 3].map(() => rawClient(r.path)));
  await new Promise((resolve) => setTimeout(resolve, 50));
  const extra = await rawClient(r.path);
  assert.equal(((await extra.nextLine())?.error as { code: string }).code, "too_many_clients");
  await extra.close();
  await Promise.all(held.map((c) => c.close()));
});

Deno.test("a live bridge on the socket path refuses a second one", async () => {
  await using r = await rig();
  await assert.rejects(
    ApiServer.listen({ path: r.path, bridge: r.bridge, logger: new Logger("error", () => {}) }),
    (error: Error) => error instanceof SocketInUseError && /already running/.test(error.message),
  );
  const client = await ApiClient.connect(r.path);
  assert.equal((await client.request("hello") as { protocol: number }).protocol, 2);
  await client.close();
});

Deno.test("a stale socket file is replaced; a regular file is not", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pb-stale-" });
  const path = `${dir}/bridge.sock`;
  // A process that bound the socket and died leaves the file behind.
  const bind = `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(path)})`;
  assert.equal((await new Deno.Command("python3", { args: ["-c", bind] }).output()).code, 0);
  assert.ok((await Deno.lstat(path)).isSocket);
  const logs: string[] = [];
  const logger = new Logger("info", (line) => logs.push(line));
  const bridge = new Bridge({ url: "ws://127.0.0.1:9/ws", logger });
  const server = await ApiServer.listen({ path, bridge, logger });
  assert.ok(logs.some((l) => l.includes("replacing stale socket")));
  await server.close();
  await Deno.writeTextFile(path, "precious");
  await assert.rejects(
    ApiServer.listen({ path, bridge, logger }),
    /exists and is not a socket/,
  );
  assert.equal(await Deno.readTextFile(path), "precious");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("ApiClient surfaces error replies as ApiError", async () => {
  await using r = await rig();
  const client = await ApiClient.connect(r.path);
  await assert.rejects(
    client.request("set_target", { target: 99 }),
    (error: Error) => error instanceof ApiError && error.code === "out_of_range",
  );
  await client.close();
});

Deno.test("subscribe's reply is followed at once by the status, even in a burst", async () => {
  await using r = await rig();
  const raw = await rawClient(r.path);
  await raw.write(
    '{"id":1,"method":"hello"}\n{"id":2,"method":"subscribe"}\n' +
      '{"id":3,"method":"set_target","params":{"target":33}}\n',
  );
  const lines = [
    await raw.nextLine(),
    await raw.nextLine(),
    await raw.nextLine(),
    await raw.nextLine(),
  ];
  // A reply comes right after the decision's sends, before its status notification.
  assert.deepEqual(lines.map((l) => l?.id ?? l?.method), [1, 2, "status", 3]);
  assert.equal((lines[2]?.params as BridgeStatus).target, 0);
  assert.deepEqual(lines[3]?.result, { target: 33 });
  const next = await raw.nextLine();
  assert.equal(next?.method, "status");
  assert.equal((next?.params as BridgeStatus).target, 33);
  await raw.close();
});

Deno.test("a burst of device frames does not cut off a client that reads", async () => {
  await using r = await rig({ maxQueuedBytes: 16 * 1024 });
  const client = await ApiClient.connect(r.path);
  const seen: number[] = [];
  await client.subscribe((status) => {
    if (status.temperature !== null) seen.push(status.temperature);
  });
  // One burst far larger than the queue cap, all handled in a few event-loop turns.
  const burst = Array.from(
    { length: 2000 },
    (_, i) => `{"settings":{"warehouse_temper":${i % 90}}}`,
  );
  for (const socket of r.device.sockets) for (const frame of burst) socket.send(frame);
  r.device.temperature = 42; // the device's telemetry goes on with the newest reading
  r.device.sendAll('{"settings":{"warehouse_temper":42}}');
  await until(() => seen.at(-1) === 42, 5000, "the newest status");
  assert.equal(r.server.clientCount, 1, "the reading client is still connected");
  assert.ok(!r.logs.some((l) => l.includes("cut off")));
  await client.close();
});

Deno.test("replies that fill the socket's buffer arrive whole and in order once the client reads", async () => {
  await using r = await rig();
  const conn = await Deno.connect({ transport: "unix", path: r.path });
  const count = 400; // ~300 KiB of status replies: more than a Unix socket buffers
  const requests = Array.from({ length: count }, (_, i) => `{"id":${i + 1},"method":"status"}\n`);
  await conn.write(new TextEncoder().encode(requests.join("")));
  await new Promise((resolve) => setTimeout(resolve, 300)); // the server's writes back up
  const decoder = new TextDecoder();
  const splitter = new LineSplitter(64 * 1024);
  const buffer = new Uint8Array(64 * 1024);
  const ids: number[] = [];
  while (ids.length < count) {
    const n = await conn.read(buffer);
    if (n === null) break;
    const lines = splitter.push(buffer.subarray(0, n));
    assert.ok(lines !== null, "a reply line is oversized");
    for (const line of lines) ids.push(JSON.parse(decoder.decode(line)).id);
  }
  conn.close();
  assert.deepEqual(ids, Array.from({ length: count }, (_, i) => i + 1));
});
