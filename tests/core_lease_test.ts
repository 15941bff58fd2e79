/**
 * The decision core in heat mode `drying-lease` (lib/core.ts), driven directly
 * with explicit `now`: refusal on unsupported firmware, heat by the lease
 * frame, every OFF leaves drying, the lease variant of the push table,
 * stop-gap-start renewal, and a lease that ended unrenewed.
 */
import assert from "node:assert/strict";
import {
  buildStatus,
  type CoreConfig,
  type CoreEvent,
  type CoreState,
  decide,
  type Decision,
  initialState,
  type ReplyEffect,
} from "../lib/core.ts";
import {
  buildDryingLeaseFrame,
  DRYING_LEASE_OFF_FRAME,
  DRYING_RENEWAL_GAP_MS,
  DRYING_STOP_FRAME,
  parseDeviceFrame,
} from "../lib/protocol.ts";

const HOUR = 3_600_000;
const FACTS = {
  url: "ws://dev/ws",
  startedIso: "x",
  connectedIso: "y",
  logWriteFailures: 0,
  firmwareProblem: null,
};

function settingsFrame(settings: Record<string, unknown>): string {
  return JSON.stringify({
    wifi: { ssid: "w" },
    settings: {
      fw_version: "V1.0.3",
      work_on: 0,
      work_mode: 2,
      set_temp: 40,
      isrunning: 0,
      ...settings,
    },
  });
}

class Core {
  state: CoreState;
  constructor(config: Partial<CoreConfig> = {}) {
    this.state = initialState({
      heatMode: "drying-lease",
      leaseHours: 1,
      readbackIntervalMs: 0,
      ...config,
    });
  }
  at(now: number, event: CoreEvent): Decision {
    const decision = decide(this.state, event, now);
    this.state = decision.state;
    return decision;
  }
  frame(now: number, settings: Record<string, unknown>): Decision {
    const { report, dropped } = parseDeviceFrame(settingsFrame(settings));
    return this.at(now, { type: "frame", report, dropped });
  }
  connect(now: number, settings: Record<string, unknown> = {}): Decision {
    this.at(now, { type: "link_open" });
    return this.frame(now, settings);
  }
  set(now: number, value: number): Decision {
    return this.at(now, { type: "set_target", client: "cli", value });
  }
  beat(now: number): Decision {
    return this.at(now, { type: "heartbeat", client: "klipper", ready: true });
  }
}

function sends(decision: Decision): string[] {
  return decision.effects.flatMap((e) => e.type === "send" ? [e.frame] : []);
}

function reply(decision: Decision): ReplyEffect {
  const r = decision.effects.find((e): e is ReplyEffect => e.type === "reply");
  assert.ok(r, "a reply");
  return r;
}

const RUNNING = { work_on: 1, work_mode: 3, isrunning: 1 };

/** A core heating at 45 °C through a lease started at t=1000, with Klipper beating. */
function heating(): Core {
  const core = new Core({ failsafeTimeoutMs: 10 * HOUR });
  core.connect(0);
  core.beat(500);
  assert.deepEqual(sends(core.set(1000, 45)), [buildDryingLeaseFrame(45, 1)]);
  return core;
}

Deno.test("lease: heat is refused (lease_unavailable) on V1.0.0 and before any connect frame", () => {
  const early = new Core();
  const r0 = reply(early.set(0, 45));
  assert.equal(r0.ok ? "" : r0.code, "lease_unavailable");
  const core = new Core();
  core.connect(0, { fw_version: "V1.0.0", work_mode: 2 });
  const d = core.set(10, 45);
  const r = reply(d);
  assert.equal(r.ok, false);
  assert.equal(!r.ok && r.code, "lease_unavailable");
  assert.match(!r.ok ? r.message : "", /V1\.0\.0 is not one of V1\.0\.1, V1\.0\.2, V1\.0\.3/);
  assert.deepEqual(sends(d), []);
  assert.equal(core.state.target, 0);
  assert.equal(buildStatus(core.state, 10, FACTS).lease.unavailable, true);
  assert.equal(reply(core.set(11, 0)).ok, true, "off is never refused");
});

Deno.test("lease: heat is sent as the lease frame on V1.0.3; status reports it", () => {
  const core = heating();
  const status = buildStatus(core.state, 3000, FACTS);
  assert.equal(status.heat_mode, "drying-lease");
  assert.deepEqual(status.lease, { hours: 1, started_age: 2, renewals: 0, unavailable: false });
  const always = initialState();
  assert.equal(buildStatus(always, 0, FACTS).heat_mode, "always-on");
});

Deno.test("lease: every OFF leaves drying (target 0, failsafe, controller gone, fault, stop, button)", () => {
  assert.deepEqual(sends(heating().set(2000, 0)), [DRYING_LEASE_OFF_FRAME], "target 0");
  const silent = new Core();
  silent.connect(0);
  silent.beat(0);
  silent.set(100, 45);
  assert.deepEqual(
    sends(silent.at(10_100, { type: "tick" })),
    [DRYING_LEASE_OFF_FRAME],
    "failsafe",
  );
  assert.deepEqual(
    sends(heating().at(2000, { type: "controller_gone", client: "klipper" })),
    [DRYING_LEASE_OFF_FRAME],
    "controller gone",
  );
  const faulted = heating();
  const f = faulted.frame(2000, { ...RUNNING, ptc_sensor_status: 2 });
  assert.deepEqual(sends(f), [DRYING_LEASE_OFF_FRAME], "fault");
  assert.deepEqual(
    sends(heating().at(2000, { type: "stop", reason: "SIGTERM" })),
    [DRYING_LEASE_OFF_FRAME],
    "stop",
  );
  const button = heating();
  const b = button.frame(2000, { work_on: 0, work_mode: 3, isrunning: 0 });
  assert.equal(button.state.target, 0, "button off adopted");
  assert.deepEqual(sends(b), [], "device already off: nothing to write");
  assert.equal(button.state.lease.startedAt, null);
});

Deno.test("lease: our own running lease push is not enforced; a foreign run with target 0 is", () => {
  const core = heating();
  assert.deepEqual(sends(core.frame(2000, RUNNING)), []);
  assert.equal(core.state.target, 45);
  const idle = new Core();
  idle.connect(0);
  assert.deepEqual(sends(idle.frame(100, RUNNING)), [DRYING_LEASE_OFF_FRAME]);
  const auto = heating();
  assert.deepEqual(sends(auto.frame(2000, { work_on: 1, work_mode: 1 })), [
    buildDryingLeaseFrame(45, 1),
  ], "auto pressed: enforced");
});

Deno.test("lease: renewal at half the lease: stop, gap, start; our own isrunning:0 push ignored", () => {
  const core = heating();
  const half = 1000 + HOUR / 2;
  assert.equal(core.beat(half - 1).wakeAt, half);
  const stop = core.beat(half);
  assert.deepEqual(sends(stop), [DRYING_STOP_FRAME]);
  assert.equal(stop.wakeAt, half + DRYING_RENEWAL_GAP_MS);
  const own = core.frame(half + 300, { work_on: 1, work_mode: 3, isrunning: 0 });
  assert.deepEqual(sends(own), []);
  assert.equal(core.state.target, 45, "own stop push is not a lease end");
  assert.deepEqual(sends(core.at(half + 999, { type: "tick" })), []);
  assert.deepEqual(sends(core.at(half + DRYING_RENEWAL_GAP_MS, { type: "tick" })), [
    buildDryingLeaseFrame(45, 1),
  ]);
  assert.equal(core.state.lease.renewals, 1);
  assert.equal(core.state.lease.startedAt, half + DRYING_RENEWAL_GAP_MS);
  assert.equal(core.beat(half + 2000).wakeAt, half + DRYING_RENEWAL_GAP_MS + HOUR / 2);
});

Deno.test("lease: a lease that ended outside a renewal while heat is wanted is adopted as 0, loudly", () => {
  const core = heating();
  const d = core.frame(1000 + HOUR, { work_on: 1, work_mode: 3, isrunning: 0 });
  assert.equal(core.state.target, 0);
  assert.match(core.state.note ?? "", /drying lease ended at the device without a renewal/);
  assert.ok(d.effects.some((e) => e.type === "log" && e.level === "error"));
  assert.deepEqual(sends(d), [DRYING_LEASE_OFF_FRAME], "leaves drying with work_on false");
});

Deno.test("lease: the failsafe is unchanged (deadline from heat-on and ready heartbeats)", () => {
  const core = new Core();
  core.connect(0);
  core.beat(0);
  core.set(100, 45);
  core.beat(5000);
  assert.deepEqual(sends(core.at(14_999, { type: "tick" })), []);
  assert.deepEqual(sends(core.at(15_000, { type: "tick" })), [DRYING_LEASE_OFF_FRAME]);
  assert.equal(core.state.trip, "controller silent for more than 10 s");
});
