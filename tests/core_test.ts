/**
 * The pure decision core (lib/core.ts), driven directly with explicit `now`
 * values: one named test per bridge-side hazard of issue 9 (1, 3-10; 2 is
 * supervision, outside the bridge), then the failsafe timing rules.
 */
import assert from "node:assert/strict";
import {
  classifyPush,
  copyState,
  type CoreConfig,
  type CoreEvent,
  decide,
  type Decision,
  type Effect,
  orderEffects,
  PUSH_POLICY,
  type PushKind,
} from "../lib/core.ts";
import { buildStatus } from "../lib/status.ts";
import { buildOnFrame, FAULT_DESCRIPTIONS, OFF_FRAME, parseDeviceFrame } from "../lib/protocol.ts";
import { assertOrdered, CoreDriver, logs, replyOf, sends, settingsFrame } from "./core_driver.ts";

const TIMEOUT = 10_000;
const CONFIG: CoreConfig = {
  failsafeTimeoutMs: TIMEOUT,
  maxTarget: 60,
  staleAfterMs: 5_000,
  connectAssertMs: 2_000,
  readbackIntervalMs: 60_000,
  heatMode: "always-on",
  leaseHours: 1,
  leaseTimeScale: 1,
  probeIntervalMs: 60_000,
  foreignFirmwareRetryMs: 300_000,
};

const FACTS = {
  url: "ws://dev/ws",
  startedIso: "x",
  connectedIso: "y",
  logWriteFailures: 0,
  firmwareProblem: null,
};

/** The wifi/sta/ap roots of known connect frames. */
const CONNECT_ROOTS = {
  wifi: { ssid: "w", password: "core-test-secret" },
  sta: {},
  ap: { password: "p" },
};

/** Drives the core through events, keeping every decision. */
class Core extends CoreDriver {
  constructor(config: Partial<CoreConfig> = {}) {
    super({ ...CONFIG, ...config });
  }

  frame(now: number, text: string): Decision {
    const { report, dropped } = parseDeviceFrame(text);
    return this.at(now, { type: "frame", report, dropped });
  }

  /** Link open and the connect frame (off at 40 °C unless given). */
  connect(now: number, settings: Record<string, unknown> = {}): Decision {
    this.at(now, { type: "link_open" });
    return this.frame(now, settingsFrame(settings, CONNECT_ROOTS));
  }

  set(now: number, value: unknown, client = "cli"): Decision {
    return this.at(now, { type: "set_target", client, value });
  }

  beat(now: number, ready: boolean, client = "klipper"): Decision {
    return this.at(now, { type: "heartbeat", client, ready });
  }

  /** Every frame sent since decision `from`. */
  sentSince(from = 0): string[] {
    return this.decisions.slice(from).flatMap(sends);
  }
}

// ---------------------------------------------------------------------------
// Purity
// ---------------------------------------------------------------------------

/** Connected at 0 with the device off, Klipper beating, Klipper asking 45 °C at 10. */
function klipperHeating(): Core {
  const core = new Core();
  core.connect(0);
  core.beat(0, true);
  core.set(10, 45, "klipper");
  return core;
}

Deno.test("decide is pure: the input state is untouched and equal inputs give equal outputs", () => {
  const core = new Core();
  core.connect(0);
  core.beat(100, true);
  const before = structuredClone(core.state);
  const event: CoreEvent = { type: "set_target", client: "klipper", value: 45 };
  const a = decide(core.state, event, 200);
  const b = decide(core.state, event, 200);
  assert.deepEqual(core.state, before);
  assert.deepEqual(a, b);
  assert.equal(a.state.target, 45);
  assert.equal(core.state.target, 0);
});

Deno.test("copyState shares no object with the state it copies, in every part", () => {
  const core = new Core();
  core.connect(0);
  core.beat(100, true);
  core.set(200, 45, "klipper");
  const state = core.state;
  const copy = copyState(state);
  assert.deepEqual(copy, state);
  // Walks both side by side: an object added to CoreState later that the
  // copy does not spread is shared, and fails here.
  const walk = (a: unknown, b: unknown, path: string) => {
    if (typeof a !== "object" || a === null) return;
    assert.notEqual(a, b, `${path} is shared between the state and its copy`);
    for (const key of Object.keys(a)) {
      walk(
        (a as Record<string, unknown>)[key],
        (b as Record<string, unknown>)[key],
        `${path}.${key}`,
      );
    }
  };
  walk(copy, state, "state");
  assert.ok(Object.keys(state.controllers).length > 0 && state.faults !== undefined);
});

// ---------------------------------------------------------------------------
// Hazard rows
// ---------------------------------------------------------------------------

Deno.test("hazard 1: every decision puts its sends before replies, notifications and logs", () => {
  const core = new Core();
  core.connect(0, { work_on: 1, set_temp: 50 });
  core.beat(10, true);
  core.set(20, 45, "klipper");
  core.frame(30, settingsFrame({ work_on: 1, work_mode: 3, isrunning: 1 }));
  core.frame(40, settingsFrame({ work_on: 0, ptc_sensor_status: 2 }));
  core.set(50, 45);
  core.frame(60, settingsFrame({ work_on: 0 }));
  core.set(70, 45, "klipper");
  core.at(80, { type: "controller_gone", client: "klipper" });
  core.set(90, 30);
  core.at(90 + TIMEOUT, { type: "tick" });
  core.at(90 + TIMEOUT + 1, { type: "stop", reason: "SIGTERM" });
  let withSendAndLog = 0;
  for (const [i, decision] of core.decisions.entries()) {
    assertOrdered(decision, `decision ${i}`);
    if (sends(decision).length > 0 && logs(decision).length > 0) withSendAndLog++;
  }
  // The paths that logged before acting in the old bridge: set_target, trip, connect assert.
  assert.ok(withSendAndLog >= 6, `${withSendAndLog} decisions both send and log`);
});

Deno.test("hazard 1: an off request is a send effect that needs no log to happen", () => {
  const core = new Core();
  core.connect(0);
  core.set(10, 45);
  const off = core.at(20, { type: "off", client: "cli" });
  assert.equal(off.effects[0].type, "send");
  assert.deepEqual(sends(off), [OFF_FRAME]);
  assert.deepEqual(replyOf(off), { type: "reply", ok: true, result: { target: 0 } });
});

Deno.test("hazard 3: a not-ready controller gives no credit and its heartbeat turns outside heat off", () => {
  const core = new Core();
  core.connect(0);
  core.beat(100, true);
  core.beat(1_100, false); // Klipper shut down (M112): still heartbeating, not ready.
  assert.equal(buildStatus(core.state, 1_100, FACTS).failsafe.controller, false);
  assert.equal(buildStatus(core.state, 1_100, FACTS).failsafe.controllers, 1);
  // Heat from outside: the CLI...
  assert.equal(replyOf(core.set(1_500, 45)).ok, true);
  const beat = core.beat(2_100, false);
  assert.deepEqual(sends(beat), [OFF_FRAME]);
  assert.equal(core.state.target, 0);
  assert.match(core.state.trip ?? "", /not ready/);
  // ...and the always-on button: adopted, then off at the next not-ready heartbeat.
  core.frame(2_500, settingsFrame({ work_on: 1, set_temp: 40 }));
  assert.equal(core.state.target, 40);
  assert.deepEqual(sends(core.beat(3_100, false)), [OFF_FRAME]);
  assert.equal(core.state.target, 0);
});

Deno.test("hazard 3: between connect and ready (hello ready false) nobody keeps heat alive", () => {
  const core = new Core();
  core.connect(0);
  const hello = core.at(10, {
    type: "hello",
    client: "klipper",
    params: { client: "klipper", controller: true, ready: false },
  });
  assert.equal(replyOf(hello).ok, true);
  core.set(20, 45);
  // Not-ready heartbeats never extend the deadline: the failsafe trips at heat-on + timeout
  // even if a heartbeat was somehow not answered with OFF.
  assert.equal(core.state.controllers.klipper.lastReadyAt, null);
  const trip = core.at(20 + TIMEOUT, { type: "tick" });
  assert.deepEqual(sends(trip), [OFF_FRAME]);
  assert.match(core.state.trip ?? "", /without a live controller/);
});

Deno.test("hazard 4: always-on push with set_temp above max_target is enforced at once", () => {
  const core = new Core();
  core.connect(0);
  const push = core.frame(5_000, settingsFrame({ work_on: 1, work_mode: 2, set_temp: 90 }));
  assert.deepEqual(sends(push), [OFF_FRAME]);
  assert.equal(core.state.target, 0);
  assert.match(core.state.note ?? "", /90 °C, above max_target 60/);
});

Deno.test("hazard 4: auto, drying and unknown-mode pushes are enforced at once, heating or not", () => {
  for (const target of [0, 45]) {
    for (const mode of [{ work_mode: 1 }, { work_mode: 3, isrunning: 1 }, { work_mode: 7 }]) {
      const core = new Core();
      core.connect(0);
      core.beat(0, true);
      if (target > 0) core.set(10, target, "klipper");
      const push = core.frame(100, settingsFrame({ work_on: 1, set_temp: 55, ...mode }));
      const expected = target === 0 ? OFF_FRAME : buildOnFrame(target);
      assert.deepEqual(sends(push), [expected], JSON.stringify({ target, mode }));
      assert.equal(core.state.target, target);
    }
  }
});

Deno.test("hazard 4: the push policy table: every push kind adopts or enforces as listed", () => {
  const cases: [PushKind, Record<string, unknown>, string[], number][] = [
    // kind, push settings, frames sent, target after (the bridge heats at 45 before)
    ["off", { work_on: 0 }, [], 0],
    ["fault", { work_on: 0, warehouse_sensor_status: 1 }, [], 0],
    ["drying_end", { work_on: 1, work_mode: 3, isrunning: 0 }, [OFF_FRAME], 0],
    ["always_on", { work_on: 1, work_mode: 2, set_temp: 50 }, [], 50],
    ["always_on_out_of_range", { work_on: 1, set_temp: 61 }, [buildOnFrame(45)], 45],
    ["auto", { work_on: 1, work_mode: 1 }, [buildOnFrame(45)], 45],
    ["drying", { work_on: 1, work_mode: 3, isrunning: 1 }, [buildOnFrame(45)], 45],
    ["unknown_mode", { work_on: 1, work_mode: 9 }, [buildOnFrame(45)], 45],
  ];
  const covered = new Set<PushKind>();
  for (const [kind, settings, frames, targetAfter] of cases) {
    const core = klipperHeating();
    const push = core.frame(100, settingsFrame(settings));
    const pushLog = push.effects.find((e) => e.type === "log" && e.fields.push === kind);
    if (kind !== "fault") assert.ok(pushLog || frames.length === 0, kind);
    assert.equal(
      classifyPush(core.state.device, core.state.faults, 60),
      kind === "fault" ? "fault" : kind,
    );
    assert.deepEqual(sends(push), frames, kind);
    assert.equal(core.state.target, targetAfter, kind);
    covered.add(kind);
  }
  // Heat pushed while a fault is latched: enforced (OFF).
  const core = new Core();
  core.connect(0, { ptc_sensor_status: 1 });
  const push = core.frame(100, settingsFrame({ work_on: 1, ptc_sensor_status: 1 }));
  assert.equal(classifyPush(core.state.device, core.state.faults, 60), "on_while_faulted");
  assert.deepEqual(sends(push), [OFF_FRAME]);
  covered.add("on_while_faulted");
  assert.deepEqual([...covered].sort(), Object.keys(PUSH_POLICY).sort(), "every row tested");
  for (const [kind, rule] of Object.entries(PUSH_POLICY)) {
    const adopt = ["off", "fault", "drying_end", "always_on"].includes(kind);
    assert.equal(rule.action, adopt ? "adopt" : "enforce", kind);
  }
});

Deno.test("hazard 4: an adopted always-on push is under the failsafe and told to Klipper", () => {
  const core = new Core();
  core.connect(0);
  const push = core.frame(1_000, settingsFrame({ work_on: 1, set_temp: 38 }));
  assert.ok(push.effects.some((e) => e.type === "notify"));
  assert.equal(buildStatus(core.state, 1_000, FACTS).target, 38);
  assert.match(core.state.note ?? "", /switched on at the device \(38 °C\); the failsafe applies/);
  assert.equal(push.wakeAt, 1_000 + TIMEOUT);
  assert.deepEqual(sends(core.at(1_000 + TIMEOUT - 1, { type: "tick" })), []);
  assert.deepEqual(sends(core.at(1_000 + TIMEOUT, { type: "tick" })), [OFF_FRAME]);
});

Deno.test("hazard 5: heat is refused with device_fault while a fault is latched; 0 never is", () => {
  const core = new Core();
  core.connect(0);
  core.frame(100, settingsFrame({ work_on: 0, ptc_sensor_status: 2 }));
  assert.deepEqual(core.state.faults, ["ptc_sensor_open"]);
  const refused = core.set(200, 45);
  const reply = replyOf(refused);
  assert.equal(reply.ok, false);
  assert.equal(!reply.ok && reply.code, "device_fault");
  assert.match(!reply.ok ? reply.message : "", /ptc_sensor_open \(heater \(PTC\) temperature/);
  assert.deepEqual(sends(refused), []);
  assert.equal(core.state.target, 0);
  const off = core.at(300, { type: "off", client: "cli" });
  assert.deepEqual(replyOf(off), { type: "reply", ok: true, result: { target: 0 } });
  assert.deepEqual(sends(off), [OFF_FRAME]);
  // Cleared by a settings block without the field: heat is accepted again.
  core.frame(400, settingsFrame({ work_on: 0 }));
  assert.deepEqual(core.state.faults, []);
  assert.equal(replyOf(core.set(500, 45)).ok, true);
});

Deno.test("hazard 5: a reconnect whose connect frame reports a fault never asserts ON", () => {
  const core = klipperHeating();
  core.at(500, { type: "link_down", reason: "test" });
  const from = core.decisions.length;
  core.connect(1_000, { work_on: 1, set_temp: 45, warehouse_sensor_status: 2 });
  core.at(1_000 + CONFIG.connectAssertMs, { type: "tick" });
  assert.deepEqual(core.sentSince(from), [OFF_FRAME]);
  assert.equal(core.state.target, 0);
  assert.match(core.state.note ?? "", /fault chamber_sensor_open/);
});

Deno.test("hazard 5: a fault latched while heating drops the target and enforces OFF", () => {
  const core = klipperHeating();
  // A fault field outside a settings block (no known firmware): the same interlock.
  const fault = core.frame(100, '{"settings":{"ptc_heater_status":1}}');
  assert.deepEqual(sends(fault), [OFF_FRAME]);
  assert.equal(core.state.target, 0);
  assert.ok(fault.effects.some((e) => e.type === "log" && e.level === "error"));
});

Deno.test("hazard 6: a read-back showing heat the bridge did not ask for is corrected", () => {
  const core = new Core({ readbackIntervalMs: 5_000 });
  core.connect(0);
  const due = core.at(5_000, { type: "tick" });
  assert.ok(due.effects.some((e) => e.type === "readback"));
  // Another client (web page, phone app) switched it on; the device pushed nothing.
  const { report } = parseDeviceFrame(settingsFrame({ work_on: 1, set_temp: 55 }, CONNECT_ROOTS));
  const back = core.at(5_200, { type: "readback", report, error: null });
  assert.deepEqual(sends(back), [OFF_FRAME]);
  assert.equal(core.state.target, 0);
  assert.equal(core.state.readback.corrections, 1);
  assert.match(core.state.note ?? "", /changed outside the bridge/);
  // The same when heating: a different set_temp is put back.
  core.beat(5_300, true);
  core.set(5_400, 45, "klipper");
  core.at(10_200, { type: "tick" });
  const other = parseDeviceFrame(settingsFrame({ work_on: 1, set_temp: 30 }, CONNECT_ROOTS)).report;
  assert.deepEqual(sends(core.at(10_300, { type: "readback", report: other, error: null })), [
    buildOnFrame(45),
  ]);
});

Deno.test("hazard 6: read-backs run with the link up only, one at a time, every interval", () => {
  const core = new Core({ readbackIntervalMs: 5_000 });
  assert.equal(core.at(0, { type: "tick" }).wakeAt, null);
  core.connect(0);
  assert.equal(core.decisions.at(-1)!.wakeAt, 5_000);
  const started = core.at(5_000, { type: "tick" });
  assert.equal(started.effects.filter((e) => e.type === "readback").length, 1);
  // In flight: no second one, however late.
  assert.ok(!core.at(20_000, { type: "tick" }).effects.some((e) => e.type === "readback"));
  const match = parseDeviceFrame(settingsFrame({ work_on: 0 }, CONNECT_ROOTS)).report;
  const back = core.at(20_100, { type: "readback", report: match, error: null });
  assert.deepEqual(sends(back), [], "a matching read-back writes nothing");
  assert.equal(core.state.readback.last, "match");
  assert.equal(back.wakeAt, 25_100);
  core.at(21_000, { type: "link_down", reason: "test" });
  assert.equal(core.decisions.at(-1)!.wakeAt, null);
  assert.ok(!core.at(30_000, { type: "tick" }).effects.some((e) => e.type === "readback"));
  const off = new Core({ readbackIntervalMs: 0 });
  off.connect(0);
  assert.ok(!off.at(1e9, { type: "tick" }).effects.some((e) => e.type === "readback"));
});

Deno.test("hazard 6: a read-back older than a write is not acted on", () => {
  const core = new Core({ readbackIntervalMs: 5_000 });
  core.connect(0);
  core.at(5_000, { type: "tick" });
  core.beat(5_010, true);
  core.set(5_020, 45, "klipper"); // written after the read-back connection opened
  const old = parseDeviceFrame(settingsFrame({ work_on: 0 }, CONNECT_ROOTS)).report;
  const back = core.at(5_100, { type: "readback", report: old, error: null });
  assert.deepEqual(sends(back), []);
  assert.equal(core.state.readback.last, "stale");
  assert.equal(core.state.target, 45);
  const failed = core.at(10_200, { type: "tick" });
  assert.ok(failed.effects.some((e) => e.type === "readback"));
  core.at(13_200, { type: "readback", report: null, error: "no frame within 3000 ms" });
  assert.equal(core.state.readback.failures, 1);
  assert.match(core.state.readback.last ?? "", /failed: no frame/);
});

Deno.test("hazard 7: the first settings frame after link_open is the connect frame, whatever its roots", () => {
  const core = new Core();
  core.at(0, { type: "link_open" });
  // A device that resumed heating after a power cycle; its connect frame has no wifi/sta/ap.
  const frame = core.frame(20, settingsFrame({ fw_version: "V1.0.4", work_on: 1, set_temp: 50 }));
  assert.equal(parseDeviceFrame(settingsFrame({ work_on: 1 })).report?.isConnectFrame, false);
  assert.deepEqual(sends(frame), [OFF_FRAME], "OFF asserted");
  assert.equal(core.state.target, 0, "not adopted as a button push");
  assert.ok(logs(frame).some((l) => /differs from desired state on connect/.test(l)));
  // Temperature frames before it do not count.
  const other = new Core();
  other.at(0, { type: "link_open" });
  other.frame(10, '{"settings":{"warehouse_temper":30}}');
  assert.equal(other.state.link.connectSeen, false);
  assert.deepEqual(sends(other.frame(20, settingsFrame({ work_on: 1, set_temp: 50 }))), [
    OFF_FRAME,
  ]);
});

Deno.test("hazard 7: the desired state is asserted within connectAssertMs if no connect frame comes", () => {
  const core = new Core();
  const open = core.at(0, { type: "link_open" });
  assert.deepEqual(sends(open), [], "compare before writing: nothing yet");
  assert.equal(open.wakeAt, CONFIG.connectAssertMs);
  assert.deepEqual(sends(core.at(CONFIG.connectAssertMs - 1, { type: "tick" })), []);
  assert.deepEqual(sends(core.at(CONFIG.connectAssertMs, { type: "tick" })), [OFF_FRAME]);
  // A late connect frame that shows the pre-write state is not a reason to write again.
  assert.deepEqual(sends(core.frame(2_500, settingsFrame({ work_on: 1 }, CONNECT_ROOTS))), []);
});

Deno.test("hazard 8: the last ready controller's connection closing while heating is OFF at once", () => {
  const core = new Core();
  core.connect(0);
  core.beat(100, true);
  core.set(200, 45, "klipper");
  const gone = core.at(300, { type: "controller_gone", client: "klipper" });
  assert.deepEqual(sends(gone), [OFF_FRAME]);
  assert.equal(core.state.target, 0);
  assert.match(core.state.trip ?? "", /controller klipper disconnected while heating/);
  // With heat off, a controller leaving changes nothing.
  core.beat(400, true, "k2");
  assert.deepEqual(sends(core.at(500, { type: "controller_gone", client: "k2" })), []);
});

Deno.test("hazard 8: another ready controller keeps the heat when one closes", () => {
  const core = new Core();
  core.connect(0);
  core.beat(100, true, "a");
  core.beat(100, true, "b");
  core.set(200, 45, "a");
  assert.deepEqual(sends(core.at(300, { type: "controller_gone", client: "a" })), []);
  assert.equal(core.state.target, 45);
  assert.deepEqual(sends(core.beat(400, false, "b")), [OFF_FRAME], "last ready one not ready");
});

Deno.test("hazard 8: repeated set_target does not extend the failsafe deadline", () => {
  const core = new Core();
  core.connect(0);
  core.set(1_000, 45);
  for (let t = 2_000; t < 1_000 + TIMEOUT; t += 1_000) {
    const again = core.set(t, 45 + (t % 2_000 === 0 ? 0 : 1));
    assert.equal(again.wakeAt, 1_000 + TIMEOUT, `at ${t}`);
  }
  assert.deepEqual(sends(core.at(1_000 + TIMEOUT, { type: "tick" })), [OFF_FRAME]);
});

Deno.test("hazard 9: hello gives max_target and fault descriptions; above it is refused", () => {
  const core = new Core({ maxTarget: 60 });
  const hello = replyOf(core.at(0, {
    type: "hello",
    client: "klipper",
    params: { client: "klipper", controller: true, ready: true },
  }));
  assert.ok(hello.ok);
  assert.equal(hello.result.protocol, 2);
  assert.equal(hello.result.max_target, 60);
  assert.equal(hello.result.failsafe_timeout, 10);
  assert.deepEqual(hello.result.fault_descriptions, FAULT_DESCRIPTIONS);
  core.connect(0);
  core.beat(0, true);
  core.set(10, 50, "klipper");
  const refused = core.set(20, 65, "klipper");
  assert.deepEqual(sends(refused), []);
  const reply = replyOf(refused);
  assert.equal(!reply.ok && reply.code, "out_of_range");
  assert.equal(core.state.target, 50, "the bridge's target is kept for Klipper to re-adopt");
  const bad = replyOf(core.at(30, { type: "hello", client: "x", params: { ready: "yes" } }));
  assert.equal(!bad.ok && bad.code, "invalid_params");
  const beat = replyOf(core.at(30, { type: "heartbeat", client: "x", ready: undefined }));
  assert.equal(!beat.ok && beat.code, "invalid_params", "heartbeat needs {ready}");
});

Deno.test("hazard 10: unknown non-zero fault codes latch a fault and refuse heat", () => {
  const core = new Core();
  core.connect(0, { ptc_sensor_status: 7 });
  assert.deepEqual(core.state.faults, ["ptc_sensor_unknown"]);
  const reply = replyOf(core.set(100, 45));
  assert.equal(!reply.ok && reply.code, "device_fault");
  assert.match(!reply.ok ? reply.message : "", /unknown fault code/);
});

Deno.test("hazard 10: a connect frame that already matches writes nothing (no flash rewrite)", () => {
  const core = new Core();
  assert.deepEqual(sends(core.connect(0, { work_on: 0 })), []);
  core.beat(100, true);
  core.set(200, 45, "klipper");
  for (let i = 1; i <= 5; i++) {
    core.at(i * 1_000, { type: "link_down", reason: "test" });
    const from = core.decisions.length;
    core.connect(i * 1_000 + 100, { work_on: 1, work_mode: 2, set_temp: 45 });
    core.beat(i * 1_000 + 200, true);
    core.at(i * 1_000 + 100 + CONFIG.connectAssertMs, { type: "tick" });
    assert.deepEqual(core.sentSince(from), [], `reconnect ${i}`);
  }
  assert.equal(core.state.link.skippedWrites, 6);
  // Anything different is written at once: another set_temp, another mode, a drying run.
  for (const differs of [{ set_temp: 44 }, { work_mode: 1 }, { work_mode: 2, isrunning: 1 }]) {
    core.at(10_000, { type: "link_down", reason: "test" });
    const d = core.connect(10_100, { work_on: 1, set_temp: 45, ...differs });
    assert.deepEqual(sends(d), [buildOnFrame(45)], JSON.stringify(differs));
  }
});

// ---------------------------------------------------------------------------
// Failsafe timing rules
// ---------------------------------------------------------------------------

Deno.test("failsafe: without a ready heartbeat the deadline is heat-on + timeout", () => {
  const core = new Core();
  core.connect(0);
  const set = core.set(1_000, 45);
  assert.equal(set.wakeAt, 1_000 + TIMEOUT);
  assert.equal(buildStatus(core.state, 4_000, FACTS).failsafe.remaining, 7);
  assert.deepEqual(sends(core.at(1_000 + TIMEOUT - 1, { type: "tick" })), []);
  const trip = core.at(1_000 + TIMEOUT, { type: "tick" });
  assert.deepEqual(sends(trip), [OFF_FRAME]);
  const status = buildStatus(core.state, 1_000 + TIMEOUT, FACTS);
  assert.equal(status.failsafe.tripped, true);
  assert.equal(status.failsafe.reason, "heat requested without a live controller for 10 s");
  assert.equal(
    status.note,
    "failsafe turned the heater off: heat requested without a live controller for 10 s",
  );
  assert.equal(trip.wakeAt, CONFIG.readbackIntervalMs, "only the next read-back is due");
});

Deno.test("failsafe: ready heartbeats move the deadline to the last one + timeout", () => {
  const core = new Core();
  core.connect(0);
  core.beat(0, true);
  core.set(500, 45, "klipper");
  for (let t = 1_000; t <= 30_000; t += 1_000) core.beat(t, true);
  assert.equal(core.state.target, 45);
  assert.equal(core.decisions.at(-1)!.wakeAt, 30_000 + TIMEOUT);
  assert.equal(buildStatus(core.state, 30_500, FACTS).failsafe.controller, true);
  assert.equal(buildStatus(core.state, 30_500, FACTS).failsafe.controller_age, 0.5);
  // The controller hangs (its connection stays open).
  assert.deepEqual(sends(core.at(30_000 + TIMEOUT - 1, { type: "tick" })), []);
  assert.deepEqual(sends(core.at(30_000 + TIMEOUT, { type: "tick" })), [OFF_FRAME]);
  assert.equal(core.state.trip, "controller silent for more than 10 s");
  // The next request clears the trip and starts a new heat-on clock.
  core.set(50_000, 40, "klipper");
  assert.equal(core.state.trip, null);
  assert.equal(core.decisions.at(-1)!.wakeAt, 50_000 + TIMEOUT);
});

Deno.test("failsafe: a ready heartbeat after the deadline passed does not rescue it", () => {
  const core = new Core();
  core.connect(0);
  core.beat(0, true);
  core.set(0, 45, "klipper");
  // The bridge was frozen (SIGSTOP) past the deadline; the first event after is a heartbeat.
  const late = core.beat(TIMEOUT + 5_000, true);
  assert.deepEqual(sends(late), [OFF_FRAME]);
  assert.equal(core.state.target, 0);
  assert.equal(replyOf(late).ok, true, "the heartbeat itself is still answered");
});

Deno.test("failsafe: a heartbeat before heat-on gives no credit beyond heat-on + timeout", () => {
  const core = new Core();
  core.connect(0);
  core.beat(0, true); // then the controller hangs
  core.set(8_000, 45, "cli");
  assert.equal(core.decisions.at(-1)!.wakeAt, 8_000 + TIMEOUT);
  core.at(8_000 + TIMEOUT, { type: "tick" });
  assert.equal(core.state.trip, "heat requested without a live controller for 10 s");
});

Deno.test("stop sends OFF whatever the link state and refuses heat afterwards", () => {
  const core = klipperHeating();
  core.at(20, { type: "link_down", reason: "test" });
  const stop = core.at(30, { type: "stop", reason: "SIGTERM" });
  assert.deepEqual(sends(stop), [OFF_FRAME]);
  assert.equal(core.state.note, "bridge stopped: SIGTERM");
  const after = replyOf(core.set(40, 45, "klipper"));
  assert.equal(after.ok, false);
  assert.deepEqual(replyOf(core.at(50, { type: "off", client: "cli" })).ok, true);
  core.connect(60, { work_on: 1, set_temp: 45 });
  assert.equal(core.state.target, 0);
});

Deno.test("status: controllers, read-back and link counters", () => {
  const core = new Core({ readbackIntervalMs: 1_000 });
  core.connect(0, { work_on: 0 });
  core.beat(0, true, "a");
  core.at(0, { type: "hello", client: "b", params: { controller: true, ready: false } });
  core.frame(100, '{"settings":{"warehouse_temper":31}}');
  const status = buildStatus(core.state, 200, { ...FACTS, logWriteFailures: 3 });
  assert.equal(status.connected, true);
  assert.equal(status.temperature, 31);
  assert.equal(status.failsafe.controllers, 2);
  assert.equal(status.failsafe.controller, true);
  assert.equal(status.failsafe.remaining, null);
  assert.equal(status.readback.interval, 1);
  assert.equal(status.link.skipped_writes, 1);
  assert.equal(status.link.writes, 0);
  assert.equal(status.log_write_failures, 3);
  assert.equal(status.max_target, 60);
  assert.equal(status.since.connected, "y");
  const stale = buildStatus(core.state, 100 + CONFIG.staleAfterMs + 1, FACTS);
  assert.equal(stale.temperature, null);
  assert.ok(!JSON.stringify(core.state).includes("core-test-secret"), "no secret in state");
});

Deno.test("orderEffects: sends, replies, notify, I/O, logs; stable within a kind; a new array", () => {
  const log = (message: string): Effect => ({ type: "log", level: "info", message, fields: {} });
  const send = (frame: string): Effect => ({ type: "send", frame, target: 0, reason: "test" });
  const mixed: Effect[] = [
    log("a"),
    { type: "notify" },
    send("1"),
    { type: "readback" },
    { type: "reply", ok: true, result: {} },
    send("2"),
    log("b"),
  ];
  const sorted = orderEffects(mixed);
  assert.deepEqual(
    sorted.map((e) => e.type === "send" ? e.frame : e.type === "log" ? e.message : e.type),
    ["1", "2", "reply", "notify", "readback", "a", "b"],
  );
  const ordered = orderEffects(sorted);
  assert.deepEqual(ordered, sorted, "already in order: unchanged");
  assert.notEqual(ordered, sorted, "still a new array");
  assert.deepEqual(orderEffects([]), []);
});
