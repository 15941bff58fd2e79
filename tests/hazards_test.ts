/**
 * Issue 9's hazards end to end: `panda-breath run` as a real subprocess with
 * the shipped permission set, a real device stand-in (the simulator or the
 * scripted fake device) on a real WebSocket, real Unix-socket clients and the
 * real CLI. Each test fails on the bridge before the decision core.
 */
import assert from "node:assert/strict";
import { ApiClient } from "../lib/api_client.ts";
import type { BridgeStatus } from "../lib/bridge.ts";
import { buildOnFrame, OFF_FRAME } from "../lib/protocol.ts";
import { Simulator, SIMULATOR_SECRETS } from "../lib/simulator/mod.ts";
import { connectFrame, FAKE_SECRETS, FakeDevice } from "./fake_device.ts";
import { mainArgs, runCli, startBridge, tempSocketPath, waitForSocket } from "./process.ts";
import { delay, until } from "./wait.ts";

async function status(socket: string): Promise<BridgeStatus> {
  const result = await runCli(["status", "--json", "--socket", socket]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout);
}

function assertNoSecrets(text: string): void {
  for (const secret of [...FAKE_SECRETS, ...SIMULATOR_SECRETS]) {
    assert.ok(!text.includes(secret), "a secret reached the bridge's output");
  }
}

/** Settings frames (not the `{}` keepalive) a simulator received from index `from`. */
function writes(sim: Simulator, from: number): string[] {
  return sim.received.slice(from).map((r) => r.text).filter((t) => t !== "{}");
}

Deno.test("hazard 1: with stderr on /dev/full the bridge starts, and off and SIGTERM still send OFF", async () => {
  const device = new FakeDevice();
  const { path, cleanup } = await tempSocketPath();
  // stdout piped, stderr (the log) on a device whose every write fails with ENOSPC.
  const child = new Deno.Command("sh", {
    args: [
      "-c",
      'exec "$0" "$@" 2>/dev/full',
      Deno.execPath(),
      ...mainArgs(["run", "--host", device.address, "--socket", path, "--log-level", "debug"]),
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await waitForSocket(path, 15_000);
    await until(async () => (await status(path)).connected, 5000, "the device link");
    const set = await runCli(["set", "45", "--socket", path]);
    assert.equal(set.code, 0, set.stderr);
    await device.waitFor((t) => t === buildOnFrame(45));
    let from = device.received.length;
    assert.equal((await runCli(["off", "--socket", path])).code, 0);
    await device.waitFor((t) => t === OFF_FRAME, 2000, from);
    const seen = await status(path);
    assert.equal(seen.target, 0);
    assert.ok(seen.log_write_failures > 0, `log_write_failures ${seen.log_write_failures}`);
    assert.equal((await runCli(["set", "40", "--socket", path])).code, 0);
    await device.waitFor((t) => t === buildOnFrame(40));
    from = device.received.length;
    child.kill("SIGTERM");
    const exit = await child.status;
    assert.equal(exit.code, 0);
    await device.waitFor((t) => t === OFF_FRAME, 2000, from);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await child.status;
    await device.close();
    await cleanup();
  }
});

Deno.test("hazard 6: another client's silent write to the device is corrected by read-back", async () => {
  const sim = new Simulator({ telemetryIntervalMs: 200 });
  await sim.start();
  const { bridge, socket, cleanup } = await startBridge(`127.0.0.1:${sim.port}`, [
    "--readback-interval",
    "1",
  ]);
  try {
    await until(async () => (await status(socket)).connected, 5000, "connected");
    // The device's web page or the phone app switches it on: the device pushes nothing.
    const other = new WebSocket(sim.url);
    await new Promise((resolve, reject) => {
      other.onopen = resolve;
      other.onerror = () => reject(new Error("cannot reach the simulator"));
    });
    const closed = new Promise((resolve) => other.onclose = resolve);
    other.send(buildOnFrame(55));
    await until(() => sim.state.work_on, 2000, "the other client's write");
    const wroteAt = performance.now();
    other.close();
    await closed;
    await until(() => !sim.state.work_on, 6000, "the read-back correcting it");
    const correctedMs = performance.now() - wroteAt;
    const seen = await status(socket);
    assert.equal(seen.target, 0);
    assert.ok(seen.readback.corrections >= 1, JSON.stringify(seen.readback));
    assert.ok(correctedMs < 5000, `corrected after ${Math.round(correctedMs)} ms`);
    assert.match(bridge.stderr, /read-back: device state differs/);
    // One main link and at most one read-back at a time: never near the 7-socket limit.
    assert.ok(sim.clientCount <= 2, `${sim.clientCount} clients`);
  } finally {
    await cleanup();
    await sim.stop();
  }
  assertNoSecrets(bridge.stdout + bridge.stderr);
});

Deno.test("hazard 7: a connect frame without wifi/sta/ap from a device that resumed heating is not adopted", async () => {
  const roots = JSON.stringify({
    settings: { fw_version: "V1.0.4", work_on: 1, work_mode: 2, set_temp: 50, isrunning: 0 },
  });
  const device = new FakeDevice({ connectFrame: roots });
  const { bridge, socket, cleanup } = await startBridge(device.address);
  try {
    await device.waitFor((t) => t === OFF_FRAME, 5000);
    await delay(1000);
    assert.ok(!device.received.some((r) => r.text.includes('"work_on":true')), "no ON frame");
    const seen = await status(socket);
    assert.equal(seen.target, 0, "the device's resumed heat was not adopted");
    assert.match(bridge.stderr, /differs from desired state on connect/);
  } finally {
    await cleanup();
    await device.close();
  }
});

Deno.test("hazard 5: a latched fault, then `panda-breath set 45`: exit 1 naming the fault, no ON frame", async () => {
  const sim = new Simulator({ telemetryIntervalMs: 200 });
  await sim.start();
  const { bridge, socket, cleanup } = await startBridge(`127.0.0.1:${sim.port}`);
  try {
    await until(async () => (await status(socket)).connected, 5000, "connected");
    sim.injectFault("ptc_sensor_open");
    await until(async () => (await status(socket)).faults.includes("ptc_sensor_open"), 3000);
    const from = sim.received.length;
    const set = await runCli(["set", "45", "--socket", socket]);
    assert.equal(set.code, 1, set.stdout + set.stderr);
    assert.match(set.stderr, /^panda-breath: device_fault: device fault latched: ptc_sensor_open/m);
    assert.doesNotMatch(set.stderr, /Run 'panda-breath set --help'/);
    // Not on a reconnect either.
    sim.abortClients();
    await until(async () => (await status(socket)).link.connects >= 2, 5000, "reconnected");
    await delay(2500); // past the connect-assert bound
    assert.ok(!writes(sim, from).some((t) => t.includes('"work_on":true')), "no ON frame");
    assert.equal(sim.state.work_on, false);
    assert.equal((await runCli(["off", "--socket", socket])).code, 0, "off is never refused");
  } finally {
    await cleanup();
    await sim.stop();
  }
  assertNoSecrets(bridge.stderr);
});

Deno.test("hazard 8: the controller's socket closed while heating: OFF within 1 s", async () => {
  const sim = new Simulator({ telemetryIntervalMs: 200 });
  await sim.start();
  // A 600 s failsafe: only the closed connection can explain a fast OFF.
  const { socket, cleanup } = await startBridge(`127.0.0.1:${sim.port}`, [
    "--failsafe-timeout",
    "600",
  ]);
  try {
    const klipper = await ApiClient.connect(socket);
    await klipper.request("hello", { client: "klipper", controller: true, ready: true });
    await klipper.request("heartbeat", { ready: true });
    await klipper.request("set_target", { target: 45 });
    await until(() => sim.state.work_on && sim.state.set_temp === 45, 5000, "heating");
    const closedAt = performance.now();
    await klipper.close();
    await until(() => !sim.state.work_on, 2000, "OFF after the close");
    const offMs = performance.now() - closedAt;
    assert.ok(offMs <= 1000, `OFF ${Math.round(offMs)} ms after the close`);
    const seen = await status(socket);
    assert.equal(seen.failsafe.tripped, true);
    assert.match(seen.failsafe.reason ?? "", /disconnected while heating/);
  } finally {
    await cleanup();
    await sim.stop();
  }
});

Deno.test("hazard 10: an unchanged state is not rewritten on connect or reconnect", async () => {
  const device = new FakeDevice({ connectFrame: connectFrame(0, 40) });
  const { socket, cleanup } = await startBridge(device.address);
  try {
    await until(async () => (await status(socket)).connected, 5000, "connected");
    await delay(2500); // past the connect-assert bound
    assert.deepEqual(device.received.filter((r) => r.text !== "{}"), [], "nothing written");
    const klipper = await ApiClient.connect(socket);
    await klipper.request("hello", { client: "klipper", controller: true, ready: true });
    await klipper.request("heartbeat", { ready: true });
    const beat = setInterval(
      () => klipper.request("heartbeat", { ready: true }).catch(() => {}),
      500,
    );
    try {
      await klipper.request("set_target", { target: 45 });
      await device.waitFor((t) => t === buildOnFrame(45));
      // The device persisted the write: its next connect frame says so.
      device.connectFrame = connectFrame(1, 45);
      const from = device.received.length;
      device.dropAll();
      await until(async () => (await status(socket)).link.connects === 2, 5000, "reconnected");
      await delay(2500);
      const written = device.received.slice(from).filter((r) => r.text !== "{}");
      assert.deepEqual(written, [], "no settings frame after a matching connect frame");
      const seen = await status(socket);
      assert.equal(seen.target, 45);
      assert.equal(seen.link.skipped_writes, 2);
    } finally {
      clearInterval(beat);
      await klipper.close();
    }
  } finally {
    await cleanup();
    await device.close();
  }
});

Deno.test("hazard 10: an uncaught error sends OFF, is logged, and exits non-zero", async () => {
  const device = new FakeDevice();
  const { bridge, socket, cleanup } = await startBridge(device.address, [], [
    "--inspect=127.0.0.1:0",
  ]);
  try {
    assert.equal((await runCli(["set", "45", "--socket", socket])).code, 0);
    await device.waitFor((t) => t === buildOnFrame(45));
    const from = device.received.length;
    // An error thrown where nothing catches it, inside the running bridge.
    const url = (await bridge.waitFor(/Debugger listening on (ws:\/\/\S+)/))[1];
    const inspector = new WebSocket(url);
    await new Promise((resolve) => inspector.onopen = resolve);
    const closed = new Promise((resolve) => inspector.onclose = resolve);
    inspector.send(JSON.stringify({
      id: 1,
      method: "Runtime.evaluate",
      params: { expression: 'setTimeout(() => { throw new Error("injected fault"); }, 0); 1' },
    }));
    await bridge.waitFor(/bridge exited after an unexpected error/, 10_000);
    // With the inspector on, the process waits for the debugger to go before it ends.
    inspector.close();
    await closed;
    const exit = await Promise.race([bridge.exited(), delay(10_000).then(() => null)]);
    assert.ok(exit, `the bridge exited instead of limping on\n${bridge.stderr}`);
    assert.equal(exit.code, 70, bridge.stderr);
    await device.waitFor((t) => t === OFF_FRAME, 1000, from);
    assert.match(bridge.stderr, /ERROR unexpected error: heater OFF sent.* error="injected fault"/);
    assert.doesNotMatch(bridge.stderr, /keeps running/);
  } finally {
    await cleanup();
    await device.close();
  }
});
