import assert from "node:assert/strict";
import { Bridge, type BridgeOptions, type BridgeStatus } from "../lib/bridge.ts";
import { Logger } from "../lib/log.ts";
import { buildOnFrame, OFF_FRAME } from "../lib/protocol.ts";
import { connectFrame, FAKE_SECRETS, FakeDevice, type FakeDeviceOptions } from "./fake_device.ts";
import { delay, until } from "./wait.ts";

const FAST_LINK = { watchdogMs: 600, keepaliveMs: 300, connectTimeoutMs: 1000, tickMs: 50 };
const FAST_BACKOFF = { initialMs: 40, maxMs: 200, factor: 2 };

interface Rig {
  device: FakeDevice;
  bridge: Bridge;
  logs: string[];
  statuses: BridgeStatus[];
  [Symbol.asyncDispose](): Promise<void>;
}

function rig(
  deviceOptions: FakeDeviceOptions = {},
  bridgeOptions: Partial<BridgeOptions> = {},
): Rig {
  const device = new FakeDevice(deviceOptions);
  const logs: string[] = [];
  const bridge = new Bridge({
    url: device.url,
    logger: new Logger("debug", (line) => logs.push(line)),
    linkTimings: FAST_LINK,
    backoff: FAST_BACKOFF,
    failsafeTimeoutMs: 60_000,
    ...bridgeOptions,
  });
  const statuses: BridgeStatus[] = [];
  bridge.subscribe((status) => statuses.push(status));
  bridge.start();
  return {
    device,
    bridge,
    logs,
    statuses,
    async [Symbol.asyncDispose]() {
      await bridge.stop("test over", 200);
      await device.close();
      const everything = logs.join("\n") + JSON.stringify(statuses);
      for (const secret of FAKE_SECRETS) assert.ok(!everything.includes(secret), secret);
    },
  };
}

const client = { client: "test" };

Deno.test("asserts OFF on connect, because the device persists work_on", async () => {
  await using r = rig({ connectFrame: connectFrame(1, 50) });
  await r.device.waitFor((t) => t === OFF_FRAME);
  await until(() => r.bridge.status().device.work_on === true);
  assert.ok(r.logs.some((l) => l.includes("differs from desired state on connect")));
});

Deno.test("target changes are sent as one ON frame; 0 sends OFF", async () => {
  await using r = rig();
  await until(() => r.bridge.status().connected);
  const from = r.device.received.length;
  assert.deepEqual(r.bridge.setTarget(44.6, client), { ok: true, target: 45 });
  await r.device.waitFor((t) => t === buildOnFrame(45), 2000, from);
  r.bridge.setTarget(0, client);
  await r.device.waitFor((t) => t === OFF_FRAME, 2000, from);
  assert.equal(r.bridge.status().target, 0);
});

Deno.test("out-of-range targets are rejected and the desired state is kept", async () => {
  await using r = rig();
  r.bridge.setTarget(40, client);
  for (const bad of [61, 300, -1, NaN, "45"]) {
    const check = r.bridge.setTarget(bad, client);
    assert.equal(check.ok, false);
  }
  assert.equal(r.bridge.status().target, 40);
  assert.equal(r.bridge.maxTarget, 60);
});

Deno.test("desired state is re-sent after the device drops the link", async () => {
  await using r = rig();
  r.bridge.setTarget(42, client);
  await r.device.waitFor((t) => t === buildOnFrame(42));
  const from = r.device.received.length;
  r.device.dropAll();
  await r.device.waitFor((t) => t === buildOnFrame(42), 3000, from);
  assert.equal(r.device.connections, 2);
  assert.equal(r.bridge.status().link.drops, 1);
});

Deno.test("status gives the start and the connect time in UTC ISO 8601, the connect time anew on reconnect", async () => {
  const before = Date.now();
  await using r = rig();
  await until(() => r.bridge.status().connected);
  const iso = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
  const first = r.bridge.status().since;
  assert.match(first.started, iso);
  assert.match(first.connected!, iso);
  const started = Date.parse(first.started);
  assert.ok(before <= started && started <= Date.parse(first.connected!), JSON.stringify(first));
  assert.ok(Date.parse(first.connected!) <= Date.now());
  await delay(5);
  r.device.dropAll();
  await until(() => r.bridge.status().since.connected === null);
  await until(() => r.bridge.status().connected);
  const second = r.bridge.status().since;
  assert.equal(second.started, first.started);
  assert.ok(Date.parse(second.connected!) > Date.parse(first.connected!), JSON.stringify(second));
});

Deno.test("the watchdog reconnects a link that goes silent", async () => {
  await using r = rig();
  await until(() => r.bridge.status().connected);
  r.device.silent = true;
  await until(() => r.device.connections >= 2, 3000);
  assert.ok(r.logs.some((l) => l.includes("watchdog")));
  r.device.silent = false;
  await until(() => r.bridge.status().temperature !== null);
});

Deno.test("a keepalive frame is sent when the bridge has nothing else to say", async () => {
  await using r = rig();
  await r.device.waitFor((t) => t === "{}", 2000);
});

Deno.test("garbage frames are survived and the last good temperature is kept", async () => {
  await using r = rig({ telemetryMs: 0, temperature: 31 });
  await until(() => r.bridge.status().connected);
  r.device.sendAll('{"settings":{"warehouse_temper":31}}');
  await until(() => r.bridge.status().temperature === 31);
  const junk = [
    "not json",
    "null",
    '"string"',
    "1e308",
    '{"settings":{"warehouse_temper":1e308}}',
    '{"settings":{"warehouse_temper":"hot"}}',
    '{"settings":null}',
    "x".repeat(1024 * 1024),
  ];
  for (const frame of junk) r.device.sendAll(frame);
  for (const socket of r.device.sockets) socket.send(new Uint8Array([0xff, 0x00, 0x13]));
  r.device.sendAll('{"settings":{"warehouse_temper":1e308}}');
  await until(() => r.bridge.status().link.dropped_frames >= junk.length + 1, 3000);
  const status = r.bridge.status();
  assert.equal(status.temperature, 31);
  assert.equal(status.connected, true);
});

Deno.test("temperature becomes null when the link is down", async () => {
  await using r = rig({}, { linkTimings: { ...FAST_LINK, watchdogMs: 400 } });
  await until(() => r.bridge.status().temperature === 25);
  await r.device.close();
  await until(() => !r.bridge.status().connected);
  assert.equal(r.bridge.status().temperature, null);
  assert.notEqual(r.bridge.status().temperature_age, null);
});

Deno.test("failsafe turns the heat off when no controller ever heartbeats", async () => {
  await using r = rig({}, { failsafeTimeoutMs: 300 });
  const requested = performance.now();
  r.bridge.setTarget(45, client);
  await r.device.waitFor((t) => t === buildOnFrame(45));
  const off = await r.device.waitFor((t) => t === OFF_FRAME, 2000);
  assert.ok(off.at - requested >= 300, `tripped after ${off.at - requested} ms`);
  const status = r.bridge.status();
  assert.equal(status.target, 0);
  assert.equal(status.failsafe.tripped, true);
  assert.match(status.failsafe.reason ?? "", /without a live controller/);
  assert.ok(r.logs.some((l) => l.includes("failsafe")));
});

Deno.test("failsafe never trips while the controller heartbeats, and trips when it hangs", async () => {
  await using r = rig({}, { failsafeTimeoutMs: 300 });
  r.bridge.heartbeat(client, true);
  r.bridge.setTarget(40, client);
  const beat = setInterval(() => r.bridge.heartbeat(client, true), 50);
  await delay(1000);
  clearInterval(beat);
  assert.equal(r.bridge.status().target, 40);
  assert.equal(r.bridge.status().failsafe.controller, true);
  const hungAt = performance.now();
  await until(() => r.bridge.status().failsafe.tripped, 2000);
  assert.ok(performance.now() - hungAt >= 250);
  assert.match(r.bridge.status().failsafe.reason ?? "", /controller silent/);
  assert.equal(r.bridge.setTarget(35, client).ok, true);
  assert.equal(r.bridge.status().failsafe.tripped, false);
});

Deno.test("a button press that turns the device off is followed, not fought", async () => {
  await using r = rig();
  r.bridge.setTarget(45, client);
  await r.device.waitFor((t) => t === buildOnFrame(45));
  const from = r.device.received.length;
  r.device.sendAll('{"settings":{"work_on":0,"work_mode":2,"set_temp":45,"warehouse_temper":30}}');
  await until(() => r.bridge.status().target === 0);
  assert.match(r.bridge.status().note ?? "", /switched off at the device/);
  await delay(200);
  assert.ok(!r.device.received.slice(from).some((x) => x.text === buildOnFrame(45)));
});

Deno.test("a button press that turns it on becomes the target, under the failsafe", async () => {
  await using r = rig({}, { failsafeTimeoutMs: 400 });
  await until(() => r.bridge.status().connected);
  r.device.sendAll('{"settings":{"work_on":1,"work_mode":2,"set_temp":38,"warehouse_temper":30}}');
  await until(() => r.bridge.status().target === 38);
  assert.match(r.bridge.status().note ?? "", /switched on at the device/);
  await r.device.waitFor((t) => t === OFF_FRAME && r.bridge.status().failsafe.tripped, 2000);
});

Deno.test("a fault push lists the fault and the heat stays off", async () => {
  await using r = rig();
  r.bridge.setTarget(45, client);
  await r.device.waitFor((t) => t === buildOnFrame(45));
  r.device.sendAll('{"settings":{"work_on":0,"work_mode":2,"set_temp":45,"ptc_sensor_status":2}}');
  await until(() => r.bridge.status().faults.includes("ptc_sensor_open"));
  assert.equal(r.bridge.status().target, 0);
  assert.match(r.bridge.status().note ?? "", /fault ptc_sensor_open/);
  assert.ok(r.logs.some((l) => l.includes("ERROR device fault fault=ptc_sensor_open")));
  r.device.sendAll('{"settings":{"work_on":0,"work_mode":2,"set_temp":45}}');
  await until(() => r.bridge.status().faults.length === 0);
});

Deno.test("stop sends OFF before closing", async () => {
  const device = new FakeDevice();
  const bridge = new Bridge({
    url: device.url,
    logger: new Logger("error", () => {}),
    linkTimings: FAST_LINK,
    backoff: FAST_BACKOFF,
  });
  bridge.start();
  bridge.setTarget(50, client);
  await device.waitFor((t) => t === buildOnFrame(50));
  const from = device.received.length;
  await bridge.stop("SIGTERM");
  await device.waitFor((t) => t === OFF_FRAME, 1000, from);
  await device.close();
});

Deno.test("stop waits a bounded time for an unreachable device", async () => {
  const bridge = new Bridge({
    url: "ws://127.0.0.1:9/ws",
    logger: new Logger("error", () => {}),
    linkTimings: FAST_LINK,
    backoff: FAST_BACKOFF,
  });
  bridge.start();
  bridge.setTarget(50, client);
  const started = performance.now();
  await bridge.stop("SIGTERM", 300);
  const took = performance.now() - started;
  assert.ok(took >= 290 && took < 1500, `stop took ${took} ms`);
});

Deno.test("backoff is bounded while the device is unreachable", async () => {
  const logs: string[] = [];
  const bridge = new Bridge({
    url: "ws://127.0.0.1:9/ws",
    logger: new Logger("debug", (line) => logs.push(line)),
    linkTimings: FAST_LINK,
    backoff: FAST_BACKOFF,
  });
  bridge.start();
  await delay(1500);
  await bridge.stop("test", 0);
  const delays = logs.filter((l) => l.includes("reconnecting")).map((l) =>
    Number(/in_ms=(\d+)/.exec(l)?.[1])
  );
  assert.ok(delays.length >= 6, `only ${delays.length} attempts`);
  assert.ok(delays[0] <= 40);
  assert.ok(Math.max(...delays) <= 200);
});

Deno.test("hazard 1: a logger whose every write fails: the bridge still connects, heats and stops", async () => {
  const device = new FakeDevice({ connectFrame: connectFrame(1, 50) });
  const logger = new Logger("debug", () => {
    throw new Error("No space left on device (os error 28)");
  });
  const bridge = new Bridge({
    url: device.url,
    logger,
    linkTimings: FAST_LINK,
    backoff: FAST_BACKOFF,
  });
  try {
    bridge.start();
    await device.waitFor((t) => t === OFF_FRAME, 3000);
    await until(() => bridge.status().connected);
    assert.equal(bridge.setTarget(45, client).ok, true);
    await device.waitFor((t) => t === buildOnFrame(45));
    let from = device.received.length;
    bridge.off(client);
    await device.waitFor((t) => t === OFF_FRAME, 2000, from);
    bridge.setTarget(40, client);
    await device.waitFor((t) => t === buildOnFrame(40));
    assert.ok(bridge.status().log_write_failures > 0);
    from = device.received.length;
    await bridge.stop("SIGTERM");
    await device.waitFor((t) => t === OFF_FRAME, 1000, from);
  } finally {
    await bridge.stop("test over", 0);
    await device.close();
  }
});

Deno.test("hazard 6: read-back over a second connection corrects the device, one at a time", async () => {
  await using r = rig({}, { readbackIntervalMs: 300 });
  await until(() => r.bridge.status().connected);
  let mostSockets = 0;
  const sampler = setInterval(() => mostSockets = Math.max(mostSockets, r.device.sockets.size), 5);
  // What the device would show a new connection: heating, set by someone else.
  r.device.connectFrame = connectFrame(1, 55);
  const from = r.device.received.length;
  await r.device.waitFor((t) => t === OFF_FRAME, 3000, from);
  await until(() => r.bridge.status().readback.corrections >= 1);
  r.device.connectFrame = connectFrame(0, 55);
  await until(() => r.bridge.status().readback.last === "match", 3000);
  clearInterval(sampler);
  assert.ok(r.device.connections >= 3, `${r.device.connections} connections`);
  assert.ok(mostSockets <= 2, `never more than the link and one read-back (${mostSockets})`);
  assert.equal(r.bridge.status().target, 0);
});
