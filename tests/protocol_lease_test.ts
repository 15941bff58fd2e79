/**
 * The drying-lease frames: pure checks, then what they do to the simulated device (which
 * models only the protocol facts, with pessimistic defaults for the unknowns).
 */
import assert from "node:assert/strict";
import {
  buildDryingLeaseDesiredFrame,
  buildDryingLeaseFrame,
  buildOnFrame,
  DRYING_LEASE_MAX_HOURS,
  DRYING_LEASE_OFF_FRAME,
  DRYING_RENEWAL_GAP_MS,
  DRYING_STOP_FRAME,
  dryingLeaseSupported,
  hasDryingFields,
  OFF_FRAME,
  parseDeviceFrame,
} from "../lib/protocol.ts";
import { Simulator, type SimulatorOptions } from "../lib/simulator/mod.ts";
import { delay, until } from "./wait.ts";

Deno.test("lease frame: the documented drying start, every key in one frame", () => {
  const text = buildDryingLeaseFrame(45, 1);
  assert.equal(
    text,
    '{"settings":{"work_mode":3,"filament_temp":45,"filament_timer":1,' +
      '"filament_drying_mode":3,"isrunning":1,"work_on":true}}',
  );
  assert.deepEqual(JSON.parse(buildDryingLeaseFrame(60, 12)).settings, {
    work_mode: 3,
    filament_temp: 60,
    filament_timer: 12,
    filament_drying_mode: 3,
    isrunning: 1,
    work_on: true,
  });
  assert.equal(typeof JSON.parse(text).settings.work_on, "boolean", "work_on only as boolean");
});

Deno.test("parser: the drying fields a lease is verified by (connect frame), range-checked", () => {
  const frame = (extra: Record<string, unknown>) =>
    JSON.stringify({
      settings: { work_on: 1, work_mode: 3, isrunning: 1, ...extra },
    });
  const full = parseDeviceFrame(
    frame({ remaining_seconds: 3594, custom_temp: 45, custom_timer: 1 }),
  );
  assert.equal(full.report?.remainingSeconds, 3594);
  assert.equal(full.report?.customTemp, 45);
  assert.equal(full.report?.customTimer, 1);
  assert.equal(hasDryingFields(full.report!), true);
  const missing = parseDeviceFrame(frame({ custom_temp: 45, custom_timer: 1 }));
  assert.equal(hasDryingFields(missing.report!), false, "no remaining_seconds");
  const bad = parseDeviceFrame(
    frame({ remaining_seconds: -1, custom_temp: 300, custom_timer: 1.5 }),
  );
  assert.equal(bad.report?.remainingSeconds, undefined);
  assert.equal(bad.report?.customTemp, undefined);
  assert.equal(bad.report?.customTimer, undefined);
  assert.equal(bad.dropped.length, 3, bad.dropped.join("; "));
  assert.equal(hasDryingFields(bad.report!), false);
});

Deno.test("lease frame: whole-degree targets and whole hours 1-12 only", () => {
  for (const target of [0, -1, 45.5, 256, NaN, Infinity]) {
    assert.throws(() => buildDryingLeaseFrame(target, 1), RangeError, `target ${target}`);
  }
  for (const hours of [0, 0.5, 1.5, -1, DRYING_LEASE_MAX_HOURS + 1, NaN]) {
    assert.throws(() => buildDryingLeaseFrame(45, hours), RangeError, `hours ${hours}`);
  }
  assert.equal(DRYING_LEASE_MAX_HOURS, 12);
});

Deno.test("lease off leaves drying: isrunning 0 with work_on false; desired 0 maps to it", () => {
  assert.deepEqual(JSON.parse(DRYING_LEASE_OFF_FRAME), {
    settings: { isrunning: 0, work_on: false },
  });
  assert.deepEqual(JSON.parse(DRYING_STOP_FRAME), { settings: { isrunning: 0 } });
  assert.equal(buildDryingLeaseDesiredFrame(0, 1), DRYING_LEASE_OFF_FRAME);
  assert.equal(buildDryingLeaseDesiredFrame(50, 2), buildDryingLeaseFrame(50, 2));
});

Deno.test("lease only on firmware whose web UI shows the drying frame (V1.0.1-V1.0.3)", () => {
  for (const fw of ["V1.0.1", "V1.0.2", "V1.0.3"]) assert.ok(dryingLeaseSupported(fw), fw);
  for (const fw of [undefined, "", "V1.0.0", "V1.0.4", "v1.0.3", "V1.0.3 ", "V1.1.0", "x"]) {
    assert.ok(!dryingLeaseSupported(fw), String(fw));
  }
});

/** A device client sending frames and reading the connect frame. */
type Settings = Record<string, number | string>;

async function open(
  sim: Simulator,
): Promise<{ ws: WebSocket; connect: { settings: Settings } }> {
  const ws = new WebSocket(sim.url);
  const connect = await new Promise<{ settings: Settings }>((resolve, reject) => {
    ws.onmessage = (event) => resolve(JSON.parse(event.data));
    ws.onerror = () => reject(new Error("cannot connect"));
  });
  ws.onmessage = null;
  return { ws, connect };
}

async function close(ws: WebSocket): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return;
  const closed = new Promise((resolve) => ws.addEventListener("close", resolve));
  ws.close();
  await closed;
}

async function send(sim: Simulator, ws: WebSocket, text: string): Promise<void> {
  const seen = sim.waitForFrame((_frame, entry) => entry.text === text);
  ws.send(text);
  await seen;
}

/** The connect frame's settings of a fresh connection: the only read-back there is. */
async function readBack(sim: Simulator): Promise<Settings> {
  const { ws, connect } = await open(sim);
  await close(ws);
  return connect.settings;
}

async function withDevice(
  options: SimulatorOptions,
  body: (sim: Simulator, ws: WebSocket) => Promise<void>,
): Promise<void> {
  const sim = new Simulator({ telemetryIntervalMs: 100, rebootDownMs: 100, ...options });
  await sim.start();
  const { ws } = await open(sim);
  try {
    await body(sim, ws);
  } finally {
    await close(ws);
    await sim.stop();
  }
}

Deno.test("device: the lease starts a run at the target for N hours, verifiable by read-back", async () => {
  await withDevice({}, async (sim, ws) => {
    await send(sim, ws, buildDryingLeaseFrame(45, 2));
    assert.deepEqual([sim.state.drying, sim.state.heating], [true, true]);
    const settings = await readBack(sim);
    assert.deepEqual(
      [settings.work_on, settings.work_mode, settings.isrunning],
      [1, 3, 1],
    );
    assert.deepEqual([settings.custom_temp, settings.custom_timer], [45, 2]);
    const remaining = Number(settings.remaining_seconds);
    assert.ok(remaining > 7190 && remaining <= 7200, `${remaining}`);
  });
});

Deno.test("device: with the bridge gone, the lease ends by itself and the heater stays off", async () => {
  await withDevice({ speed: 7200 }, async (sim, ws) => {
    await send(sim, ws, buildDryingLeaseFrame(45, 1));
    assert.equal(sim.state.heating, true);
    await close(ws);
    await until(() => !sim.state.drying, 3000, "the run's end");
    assert.equal(sim.state.heating, false);
    await delay(300);
    assert.equal(sim.state.heating, false, "nothing restarts it");
    const settings = await readBack(sim);
    assert.deepEqual([settings.isrunning, settings.remaining_seconds], [0, 0]);
  });
});

Deno.test("device: renewal by stop, gap, start restarts the timer; a mere re-send does not (default)", async () => {
  await withDevice({ speed: 100 }, async (sim, ws) => {
    const lease = buildDryingLeaseFrame(45, 2);
    await send(sim, ws, lease);
    await delay(2000);
    await send(sim, ws, lease);
    const resent = Number((await readBack(sim)).remaining_seconds);
    assert.ok(resent < 7100, `a re-send is not a renewal: ${resent}`);
    await send(sim, ws, DRYING_STOP_FRAME);
    await delay(DRYING_RENEWAL_GAP_MS);
    await send(sim, ws, lease);
    const renewed = Number((await readBack(sim)).remaining_seconds);
    assert.ok(renewed > 7150, `stop, gap, start renews: ${renewed}`);
    assert.equal(sim.state.heating, true);
  });
});

Deno.test("device: the stop without the gap may be missed (control task polls every 500 ms)", async () => {
  await withDevice({ speed: 100 }, async (sim, ws) => {
    const lease = buildDryingLeaseFrame(45, 2);
    await send(sim, ws, lease);
    await delay(2000);
    await send(sim, ws, DRYING_STOP_FRAME);
    await send(sim, ws, lease);
    const remaining = Number((await readBack(sim)).remaining_seconds);
    assert.ok(remaining < 7100, `not renewed: ${remaining}`);
  });
});

Deno.test("device: leaving the lease with the lease-off frame leaves no run; OFF alone leaves a paused one", async () => {
  await withDevice({}, async (sim, ws) => {
    await send(sim, ws, buildDryingLeaseFrame(45, 2));
    await send(sim, ws, OFF_FRAME);
    assert.equal(sim.state.heating, false);
    await send(sim, ws, '{"settings":{"work_on":true}}');
    assert.equal(sim.state.heating, true, "a paused run resumes on work_on");
    await send(sim, ws, DRYING_LEASE_OFF_FRAME);
    assert.equal(sim.state.heating, false);
    await until(() => !sim.state.drying, 2000, "the stop");
    await send(sim, ws, '{"settings":{"work_on":true}}');
    assert.equal(sim.state.heating, false, "no run left to resume");
  });
});

Deno.test("device: always-on after a lease (the ON frame's isrunning 0) ends the run", async () => {
  await withDevice({}, async (sim, ws) => {
    await send(sim, ws, buildDryingLeaseFrame(45, 2));
    await send(sim, ws, buildOnFrame(40));
    await until(() => !sim.state.drying, 2000, "the stop");
    assert.deepEqual([sim.state.work_mode, sim.state.set_temp, sim.state.heating], [2, 40, true]);
    assert.equal((await readBack(sim)).isrunning, 0);
  });
});

Deno.test("device V1.0.0: the lease frame selects auto, not drying (why the lease is refused there)", async () => {
  await withDevice({ fwVersion: "V1.0.0" }, async (sim, ws) => {
    assert.ok(!dryingLeaseSupported(String((await readBack(sim)).fw_version)));
    await send(sim, ws, buildDryingLeaseFrame(45, 2));
    assert.deepEqual([sim.state.work_mode, sim.state.drying], [3, false]);
  });
});
