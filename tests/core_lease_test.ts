/**
 * The decision core in heat mode `drying-lease` (lib/core.ts), and its
 * DragonBreath rules, driven directly with explicit `now`: every rule of the
 * procedure in docs/safety.md ("Making the device stop by itself") as a
 * table or a short scenario. No I/O, no clock.
 */
import assert from "node:assert/strict";
import {
  type CoreConfig,
  type CoreEvent,
  decide,
  type Decision,
  initialState,
  LEASE_OVERSHOOT_C,
  LEASE_OVERSHOOT_S,
  LEASE_PUSH_POLICY,
  LEASE_VERIFY_DELAY_MS,
  type LeasePushKind,
} from "../lib/core.ts";
import { buildStatus } from "../lib/status.ts";
import {
  buildDesiredStateFrame,
  buildDryingLeaseFrame,
  DRYING_LEASE_OFF_FRAME,
  DRYING_RENEWAL_GAP_MS,
  DRYING_STOP_FRAME,
  OFF_FRAME,
  parseDeviceFrame,
} from "../lib/protocol.ts";
import { CoreDriver, has, logs, replyOf, sends, settingsFrame } from "./core_driver.ts";

const HOUR = 3_600_000;
const HALF = HOUR / 2;
const FACTS = { url: "ws://dev/ws", startedIso: "x", connectedIso: "y", logWriteFailures: 0 };
const START_45 = buildDryingLeaseFrame(45, 1);

/** A settings block as the simulator and V1.0.3 send it; `roots` adds wifi (connect frames). */
function leaseSettingsFrame(settings: Record<string, unknown>, roots = true): string {
  return settingsFrame(
    { remaining_seconds: 0, custom_temp: 50, custom_timer: 6, ...settings },
    roots ? { wifi: { ssid: "w" } } : {},
  );
}

/** What the device reports while our 45 °C / 1 h lease runs with `remaining` seconds left. */
function leaseRunning(remaining: number, target = 45): Record<string, unknown> {
  return {
    work_on: 1,
    work_mode: 3,
    isrunning: 1,
    remaining_seconds: remaining,
    custom_temp: target,
    custom_timer: 1,
  };
}

const LEASE_FRAMES = new Set([DRYING_LEASE_OFF_FRAME, DRYING_STOP_FRAME]);

/** A core in heat mode `drying-lease`; every frame it sends must be a lease frame. */
class Core extends CoreDriver {
  constructor(config: Partial<CoreConfig> = {}) {
    super({
      heatMode: "drying-lease",
      leaseHours: 1,
      readbackIntervalMs: 0,
      failsafeTimeoutMs: 10 * HOUR,
      ...config,
    });
  }
  override at(now: number, event: CoreEvent): Decision {
    const decision = super.at(now, event);
    for (const frame of sends(decision)) {
      assert.ok(
        LEASE_FRAMES.has(frame) || /"filament_drying_mode":3,"isrunning":1/.test(frame),
        `only lease frames in drying-lease mode, got ${frame}`,
      );
      assert.notEqual(frame, OFF_FRAME, "never a bare work_on:false that leaves a paused run");
    }
    return decision;
  }
  frame(now: number, settings: Record<string, unknown>, roots = false): Decision {
    const { report, dropped } = parseDeviceFrame(leaseSettingsFrame(settings, roots));
    return this.at(now, { type: "frame", report, dropped });
  }
  temperature(now: number, celsius: number): Decision {
    const { report, dropped } = parseDeviceFrame(
      JSON.stringify({ settings: { warehouse_temper: celsius } }),
    );
    return this.at(now, { type: "frame", report, dropped });
  }
  connect(now: number, settings: Record<string, unknown> = {}): Decision {
    this.at(now, { type: "link_open" });
    return this.frame(now, settings, true);
  }
  readback(now: number, settings: Record<string, unknown> | null, error = "timeout"): Decision {
    const report = settings === null ? null : parseDeviceFrame(leaseSettingsFrame(settings)).report;
    return this.at(now, { type: "readback", report, error: settings === null ? error : null });
  }
  tick(now: number): Decision {
    return this.at(now, { type: "tick" });
  }
  set(now: number, value: number): Decision {
    return this.at(now, { type: "set_target", client: "cli", value });
  }
  beat(now: number): Decision {
    return this.at(now, { type: "heartbeat", client: "klipper", ready: true });
  }
  status(now: number) {
    return buildStatus(this.state, now, FACTS);
  }
}

/** Connected at 0 (device off), Klipper beating, 45 °C requested at 1000: the start is sent. */
function started(config: Partial<CoreConfig> = {}): Core {
  const core = new Core(config);
  core.connect(0);
  core.beat(500);
  assert.deepEqual(sends(core.set(1000, 45)), [START_45]);
  return core;
}

/** As {@link started}, and verified by the read-back at 2500. */
function heating(config: Partial<CoreConfig> = {}): Core {
  const core = started(config);
  const verify = core.tick(1000 + LEASE_VERIFY_DELAY_MS);
  assert.ok(has(verify, "readback"), "verification read-back");
  // 1.55 s after the start; the device rounds up.
  core.readback(1000 + LEASE_VERIFY_DELAY_MS + 50, leaseRunning(3599));
  assert.equal(core.state.lease.phase, "running");
  return core;
}

// ---------------------------------------------------------------------------
// Refusal
// ---------------------------------------------------------------------------

Deno.test("lease refusal: unknown firmware, V1.0.0, V1.0.4, or no drying fields -> lease_unavailable, nothing sent", () => {
  const cases: [string, Record<string, unknown> | null, RegExp][] = [
    ["no connect frame yet", null, /firmware is not known yet/],
    ["V1.0.0", { fw_version: "V1.0.0" }, /V1\.0\.0 is not one of V1\.0\.1, V1\.0\.2, V1\.0\.3/],
    ["V1.0.4", { fw_version: "V1.0.4" }, /V1\.0\.4 is not one of/],
    ["garbage version", { fw_version: "dragon 2" }, /dragon 2 is not one of/],
    [
      "no remaining_seconds",
      { remaining_seconds: undefined },
      /lacks the drying fields \(isrunning, remaining_seconds, custom_temp, custom_timer\)/,
    ],
    ["no custom_timer", { custom_timer: undefined }, /lacks the drying fields/],
  ];
  for (const [what, connect, reason] of cases) {
    const core = new Core();
    if (connect) core.connect(0, connect);
    const d = core.set(10, 45);
    const r = replyOf(d);
    assert.equal(r.ok ? "ok" : r.code, "lease_unavailable", what);
    assert.match(!r.ok ? r.message : "", reason, what);
    assert.match(!r.ok ? r.message : "", /never falls back to always-on/, what);
    assert.deepEqual(sends(d), [], what);
    assert.equal(core.state.target, 0, what);
    assert.match(core.status(10).lease?.unavailable ?? "", reason, what);
    const off = core.set(11, 0);
    assert.equal(replyOf(off).ok, true, `${what}: off is never refused`);
  }
});

Deno.test("lease refusal: a reconnect whose connect frame shows unsupported firmware drops heat to 0, loudly", () => {
  const core = heating();
  core.at(5000, { type: "link_down", reason: "ota" });
  const d = core.connect(6000, { ...leaseRunning(3000), fw_version: "V1.0.4" });
  assert.equal(core.state.target, 0);
  assert.deepEqual(sends(d), [DRYING_LEASE_OFF_FRAME]);
  assert.match(core.state.note ?? "", /V1\.0\.4 is not one of/);
  assert.ok(logs(d, "error").length > 0);
});

// ---------------------------------------------------------------------------
// Start and verification
// ---------------------------------------------------------------------------

Deno.test("lease start: the lease frame, then a read-back >= 1 s later verifies it (even with read-back disabled)", () => {
  const core = started({ readbackIntervalMs: 0 });
  assert.equal(core.state.lease.phase, "starting");
  assert.equal(core.beat(1200).wakeAt, 1000 + LEASE_VERIFY_DELAY_MS);
  assert.ok(LEASE_VERIFY_DELAY_MS >= 1000);
  assert.equal(has(core.tick(1000 + LEASE_VERIFY_DELAY_MS - 1), "readback"), false);
  assert.equal(has(core.tick(1000 + LEASE_VERIFY_DELAY_MS), "readback"), true);
  const verified = core.readback(2600, leaseRunning(3598));
  assert.deepEqual(sends(verified), []);
  assert.equal(core.state.lease.phase, "running");
  const status = core.status(3600);
  assert.equal(status.heat_mode, "drying-lease");
  assert.equal(status.lease?.state, "running");
  assert.equal(status.lease?.last_verified_age, 1);
  assert.equal(status.lease?.remaining, 3597);
  assert.equal(status.lease?.unavailable, null);
  assert.equal(status.readback.last, "lease verified");
});

Deno.test("lease verification: each mismatch is caught (table)", () => {
  const bad: [string, Record<string, unknown>][] = [
    ["not running", { ...leaseRunning(3598), isrunning: 0 }],
    ["work_on off", { ...leaseRunning(3598), work_on: 0 }],
    ["always-on mode", { ...leaseRunning(3598), work_mode: 2 }],
    ["other temperature", { ...leaseRunning(3598), custom_temp: 55 }],
    ["other hours", { ...leaseRunning(3598), custom_timer: 12 }],
    ["timer not restarted", leaseRunning(1800)],
    ["more than a lease", leaseRunning(3601)],
  ];
  for (const [what, report] of bad) {
    const core = started();
    core.tick(2500);
    const d = core.readback(2550, report);
    assert.equal(core.state.lease.failures, 1, what);
    assert.deepEqual(sends(d), [DRYING_LEASE_OFF_FRAME], `${what}: retried (stop first)`);
    assert.equal(core.state.target, 45, `${what}: first failure is retried`);
  }
});

Deno.test("lease verification: failure is retried once (stop, gap, start); a second failure gives up: off, lease_unavailable", () => {
  const core = started();
  core.tick(2500);
  assert.deepEqual(sends(core.readback(2550, leaseRunning(1800))), [DRYING_LEASE_OFF_FRAME]);
  assert.equal(core.state.lease.phase, "stopping");
  assert.deepEqual(sends(core.tick(2550 + DRYING_RENEWAL_GAP_MS - 1)), []);
  assert.deepEqual(sends(core.tick(2550 + DRYING_RENEWAL_GAP_MS)), [START_45]);
  const again = 2550 + DRYING_RENEWAL_GAP_MS + LEASE_VERIFY_DELAY_MS;
  assert.ok(has(core.tick(again), "readback"));
  const giveUp = core.readback(again + 50, leaseRunning(1790));
  assert.deepEqual(sends(giveUp), [DRYING_LEASE_OFF_FRAME]);
  assert.equal(core.state.target, 0);
  assert.ok(logs(giveUp, "error").length > 0);
  assert.match(core.state.note ?? "", /drying lease unavailable: the device did not confirm/);
  const refused = replyOf(core.set(again + 100, 45));
  assert.equal(refused.ok ? "ok" : refused.code, "lease_unavailable");
  assert.match(!refused.ok ? refused.message : "", /did not confirm the drying lease twice/);
  assert.match(core.status(again + 100).lease?.unavailable ?? "", /remaining_seconds 1790/);
  assert.equal(core.state.config.heatMode, "drying-lease", "never switched to always-on");
});

Deno.test("lease verification: a failed read-back is read again once, then the lease is given up", () => {
  const core = started();
  core.tick(2500);
  const first = core.readback(5500, null, "no frame within 3000 ms");
  assert.deepEqual(sends(first), [], "no rewrite for a read-back that could not read");
  assert.equal(core.state.lease.failures, 1);
  assert.ok(has(core.tick(5500 + LEASE_VERIFY_DELAY_MS), "readback"));
  const second = core.readback(9000, null, "no frame within 3000 ms");
  assert.deepEqual(sends(second), [DRYING_LEASE_OFF_FRAME]);
  assert.equal(core.state.target, 0);
  assert.match(core.state.lease.unavailable ?? "", /read-back failed/);
});

Deno.test("lease verification: a success resets the failure count (one retry per start)", () => {
  const core = started();
  core.tick(2500);
  core.readback(2550, leaseRunning(1800));
  core.tick(3550);
  core.tick(5050);
  core.readback(5100, leaseRunning(3598));
  assert.equal(core.state.lease.phase, "running");
  assert.equal(core.state.lease.failures, 0);
});

// ---------------------------------------------------------------------------
// Renewal
// ---------------------------------------------------------------------------

Deno.test("lease renewal at half the lease: stop, gap >= DRYING_RENEWAL_GAP_MS, start, verified again", () => {
  const core = heating();
  const half = 1000 + HALF;
  assert.equal(core.beat(half - 1).wakeAt, half);
  const stop = core.beat(half);
  assert.deepEqual(sends(stop), [DRYING_STOP_FRAME], "renewal stops with isrunning 0 only");
  assert.equal(stop.wakeAt, half + DRYING_RENEWAL_GAP_MS);
  assert.equal(core.status(half).lease?.state, "stopping");
  assert.deepEqual(sends(core.tick(half + DRYING_RENEWAL_GAP_MS - 1)), []);
  assert.deepEqual(sends(core.tick(half + DRYING_RENEWAL_GAP_MS)), [START_45]);
  assert.equal(core.state.lease.renewals, 1);
  assert.equal(core.state.lease.phase, "starting");
  const verifyAt = half + DRYING_RENEWAL_GAP_MS + LEASE_VERIFY_DELAY_MS;
  assert.ok(has(core.tick(verifyAt), "readback"));
  core.readback(verifyAt + 20, leaseRunning(3599));
  assert.equal(core.state.lease.phase, "running");
  assert.equal(core.beat(verifyAt + 30).wakeAt, half + DRYING_RENEWAL_GAP_MS + HALF);
  assert.equal(core.status(verifyAt + 30).lease?.renewals, 1);
});

Deno.test("lease renewal: our own isrunning:0 push inside the renewal window is ignored", () => {
  const core = heating();
  const half = 1000 + HALF;
  core.beat(half);
  const own = core.frame(half + 300, { work_on: 1, work_mode: 3, isrunning: 0, custom_temp: 45 });
  assert.deepEqual(sends(own), []);
  assert.equal(core.state.target, 45, "not a lease end");
  core.tick(half + DRYING_RENEWAL_GAP_MS);
  const late = core.frame(half + DRYING_RENEWAL_GAP_MS + 500, {
    work_on: 1,
    work_mode: 3,
    isrunning: 0,
  });
  assert.deepEqual(sends(late), [], "still inside the window after the start");
  assert.equal(core.state.target, 45);
});

Deno.test("lease renewal: re-timed from remaining_seconds when the device's run ends sooner", () => {
  const early = heating({ readbackIntervalMs: 60_000 });
  // A periodic read-back 10 min in shows 40 min left, not 50 (the device counts faster?).
  assert.ok(has(early.tick(601_000), "readback"));
  early.readback(601_100, leaseRunning(2400));
  const renewAt = 601_100 + 2_400_000 - HALF;
  assert.ok(renewAt < 1000 + HALF);
  assert.equal(early.beat(renewAt - 10).wakeAt, renewAt);
  assert.deepEqual(sends(early.beat(renewAt)), [DRYING_STOP_FRAME]);

  const late = heating({ readbackIntervalMs: 60_000 });
  late.tick(601_000);
  const now = late.readback(601_100, leaseRunning(1200));
  assert.deepEqual(sends(now), [DRYING_STOP_FRAME], "less than half left: renewed at once");
});

Deno.test("lease renewal: the lease clock follows leaseTimeScale (tests at simulator speed)", () => {
  const core = new Core({ leaseTimeScale: 600 });
  core.connect(0);
  core.set(0, 45);
  core.tick(LEASE_VERIFY_DELAY_MS);
  // 1.5 s at speed 600 is 900 device seconds: 2700 left is right, 1800 is not.
  core.readback(LEASE_VERIFY_DELAY_MS + 10, leaseRunning(2700));
  assert.equal(core.state.lease.phase, "running");
  assert.deepEqual(sends(core.tick(3000)), [DRYING_STOP_FRAME], "half of 6 s");
});

// ---------------------------------------------------------------------------
// A lease that ended before its renewal
// ---------------------------------------------------------------------------

Deno.test("lease ended before renewal while target > 0 -> adopt 0 with a loud note (push, reconnect, read-back)", () => {
  const ended = { work_on: 1, work_mode: 3, isrunning: 0, remaining_seconds: 0 };
  const push = heating();
  const d = push.frame(1000 + HOUR, ended);
  assert.equal(push.state.target, 0);
  assert.match(push.state.note ?? "", /drying lease ended at the device without a renewal/);
  assert.ok(logs(d, "error").length > 0);
  assert.deepEqual(sends(d), [DRYING_LEASE_OFF_FRAME], "leaves drying with work_on false");

  const reconnect = heating();
  reconnect.at(10_000, { type: "link_down", reason: "wifi" });
  const r = reconnect.connect(1000 + HOUR + 5000, ended);
  assert.equal(reconnect.state.target, 0, "not restarted after the device stopped by itself");
  assert.deepEqual(sends(r), [DRYING_LEASE_OFF_FRAME]);
  assert.match(reconnect.state.note ?? "", /ended at the device without a renewal/);

  const readback = heating({ readbackIntervalMs: 60_000 });
  readback.tick(1000 + 60_000);
  const rb = readback.readback(1000 + 60_100, ended);
  assert.equal(readback.state.target, 0);
  assert.deepEqual(sends(rb), [DRYING_LEASE_OFF_FRAME]);
});

Deno.test("lease: a reconnect finding our lease still running writes nothing and re-times the renewal", () => {
  const core = heating();
  core.at(10_000, { type: "link_down", reason: "wifi" });
  const d = core.connect(20_000, leaseRunning(3000));
  assert.deepEqual(sends(d), [], "no flash rewrite");
  assert.equal(core.state.link.skippedWrites, 2, "the first connect and this one");
  assert.equal(core.state.lease.phase, "running");
  assert.equal(core.beat(20_001).wakeAt, 20_000 + 3000 * 1000 - HALF);
});

// ---------------------------------------------------------------------------
// OFF always leaves drying
// ---------------------------------------------------------------------------

Deno.test("lease OFF: target 0, failsafe, controller gone, adopted button off, fault, stop, give-up -> DRYING_LEASE_OFF_FRAME", () => {
  assert.deepEqual(sends(heating().set(5000, 0)), [DRYING_LEASE_OFF_FRAME], "target 0");

  const silent = new Core({ failsafeTimeoutMs: 10_000 });
  silent.connect(0);
  silent.beat(0);
  silent.set(100, 45);
  assert.deepEqual(sends(silent.tick(10_099)), []);
  assert.deepEqual(sends(silent.tick(10_100)), [DRYING_LEASE_OFF_FRAME], "failsafe");
  assert.ok(silent.state.trip);

  assert.deepEqual(
    sends(heating().at(5000, { type: "controller_gone", client: "klipper" })),
    [DRYING_LEASE_OFF_FRAME],
    "controller gone",
  );
  const notReady = heating();
  assert.deepEqual(
    sends(notReady.at(5000, { type: "heartbeat", client: "klipper", ready: false })),
    [DRYING_LEASE_OFF_FRAME],
    "controller not ready",
  );

  const button = heating();
  const b = button.frame(5000, { work_on: 0, work_mode: 3, isrunning: 0 });
  assert.equal(button.state.target, 0, "button off adopted");
  assert.deepEqual(sends(b), [DRYING_LEASE_OFF_FRAME], "adopted button off leaves drying");

  const paused = heating();
  const p = paused.frame(5000, { work_on: 0, work_mode: 3, isrunning: 1 });
  assert.deepEqual(sends(p), [DRYING_LEASE_OFF_FRAME], "a paused run is not left behind");

  const faulted = heating();
  const f = faulted.frame(5000, { ...leaseRunning(3000), work_on: 0, ptc_sensor_status: 2 });
  assert.deepEqual(sends(f), [DRYING_LEASE_OFF_FRAME], "fault");
  assert.equal(faulted.state.target, 0);
  const refused = replyOf(faulted.set(5100, 45));
  assert.equal(refused.ok ? "ok" : refused.code, "device_fault", "interlock unchanged");

  assert.deepEqual(
    sends(heating().at(5000, { type: "stop", reason: "SIGTERM" })),
    [DRYING_LEASE_OFF_FRAME],
    "stop",
  );
  const stopDown = heating();
  stopDown.at(5000, { type: "link_down", reason: "x" });
  assert.deepEqual(
    sends(stopDown.at(5100, { type: "stop", reason: "SIGTERM" })),
    [DRYING_LEASE_OFF_FRAME],
    "stop with the link down (the shell waits for a link)",
  );
});

Deno.test("lease OFF on connect: compare before writing; a paused run is not left behind", () => {
  const off = new Core();
  assert.deepEqual(sends(off.connect(0, { work_on: 0, isrunning: 0 })), [], "already off");
  assert.equal(off.state.link.skippedWrites, 1);
  const paused = new Core();
  assert.deepEqual(sends(paused.connect(0, { work_on: 0, work_mode: 3, isrunning: 1 })), [
    DRYING_LEASE_OFF_FRAME,
  ]);
  const alwaysOn = new Core();
  assert.deepEqual(sends(alwaysOn.connect(0, { work_on: 1, work_mode: 2, set_temp: 50 })), [
    DRYING_LEASE_OFF_FRAME,
  ]);
});

// ---------------------------------------------------------------------------
// The push policy table, lease variant
// ---------------------------------------------------------------------------

Deno.test("lease push table: every kind keeps, adopts or enforces as LEASE_PUSH_POLICY says", () => {
  type Case = {
    kind: LeasePushKind;
    core: () => Core;
    push: Record<string, unknown>;
    target: number;
    sent: string[];
    at?: number;
  };
  const idle = () => {
    const core = new Core();
    core.connect(0);
    return core;
  };
  const renewing = () => {
    const core = heating();
    core.beat(1000 + HALF);
    return core;
  };
  const cases: Case[] = [
    { kind: "own_lease", core: heating, push: leaseRunning(3000), target: 45, sent: [] },
    {
      kind: "own_renewal_stop",
      core: renewing,
      push: { ...leaseRunning(0), isrunning: 0 },
      target: 45,
      sent: [],
      at: 1000 + HALF + 200,
    },
    {
      kind: "lease_ended",
      core: heating,
      push: { ...leaseRunning(0), isrunning: 0 },
      target: 0,
      sent: [DRYING_LEASE_OFF_FRAME],
    },
    { kind: "off", core: heating, push: { work_on: 0 }, target: 0, sent: [DRYING_LEASE_OFF_FRAME] },
    {
      kind: "fault",
      core: heating,
      push: { work_on: 0, warehouse_sensor_status: 1 },
      target: 0,
      sent: [DRYING_LEASE_OFF_FRAME],
    },
    {
      kind: "drying_end",
      core: idle,
      push: { work_on: 1, work_mode: 3, isrunning: 0 },
      target: 0,
      sent: [DRYING_LEASE_OFF_FRAME],
    },
    {
      kind: "always_on",
      core: heating,
      push: { work_on: 1, work_mode: 2, set_temp: 40 },
      target: 45,
      sent: [DRYING_LEASE_OFF_FRAME],
    },
    {
      kind: "always_on_out_of_range",
      core: idle,
      push: { work_on: 1, work_mode: 2, set_temp: 90 },
      target: 0,
      sent: [DRYING_LEASE_OFF_FRAME],
    },
    {
      kind: "auto",
      core: heating,
      push: { work_on: 1, work_mode: 1 },
      target: 45,
      sent: [DRYING_LEASE_OFF_FRAME],
    },
    {
      kind: "drying",
      core: heating,
      push: { ...leaseRunning(40000), custom_temp: 55, custom_timer: 12 },
      target: 45,
      sent: [DRYING_LEASE_OFF_FRAME],
    },
    {
      kind: "drying",
      core: idle,
      push: leaseRunning(3000),
      target: 0,
      sent: [DRYING_LEASE_OFF_FRAME],
    },
    {
      kind: "unknown_mode",
      core: heating,
      push: { work_on: 1, work_mode: 9 },
      target: 45,
      sent: [DRYING_LEASE_OFF_FRAME],
    },
    {
      kind: "on_while_faulted",
      core: () => {
        const core = idle();
        core.frame(10, { work_on: 0, ptc_sensor_status: 1 });
        return core;
      },
      push: { ...leaseRunning(3000), ptc_sensor_status: 1 },
      target: 0,
      sent: [DRYING_LEASE_OFF_FRAME],
    },
  ];
  const covered = new Set<LeasePushKind>();
  for (const c of cases) {
    const core = c.core();
    const d = core.frame(c.at ?? 5000, c.push);
    const rule = LEASE_PUSH_POLICY[c.kind];
    const logged = d.effects.some((e) =>
      e.type === "log" && (e.fields as { push?: string }).push === c.kind
    ) || (c.kind === "lease_ended" && logs(d, "error").length > 0);
    assert.ok(logged, `${c.kind}: classified as such`);
    assert.equal(core.state.target, c.target, `${c.kind}: target`);
    assert.deepEqual(sends(d), c.sent, `${c.kind}: ${rule.action}`);
    if (rule.action === "keep") assert.deepEqual(sends(d), [], `${c.kind}: keep sends nothing`);
    covered.add(c.kind);
  }
  assert.deepEqual(
    [...covered].sort(),
    Object.keys(LEASE_PUSH_POLICY).sort(),
    "every kind of the table is exercised",
  );
});

Deno.test("lease push: an enforced always-on press restarts the lease after the gap (nothing heats in always-on meanwhile)", () => {
  const core = heating();
  const d = core.frame(5000, { work_on: 1, work_mode: 2, set_temp: 40 });
  assert.deepEqual(sends(d), [DRYING_LEASE_OFF_FRAME], "off first: work_on false in the gap");
  assert.match(core.state.note ?? "", /enforced its desired state \(45 °C drying lease\)/);
  assert.deepEqual(sends(core.tick(5000 + DRYING_RENEWAL_GAP_MS)), [START_45]);
});

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

Deno.test("lease requests: the same target again is no rewrite; a new target restarts after the gap; off-then-on waits the gap", () => {
  const same = heating();
  const again = same.set(5000, 45);
  assert.equal(replyOf(again).ok, true);
  assert.deepEqual(sends(again), [], "no flash rewrite for the lease already running");

  const change = heating();
  assert.deepEqual(sends(change.set(5000, 50)), [DRYING_LEASE_OFF_FRAME]);
  assert.deepEqual(sends(change.tick(5000 + DRYING_RENEWAL_GAP_MS)), [
    buildDryingLeaseFrame(50, 1),
  ]);

  const flick = heating();
  assert.deepEqual(sends(flick.set(5000, 0)), [DRYING_LEASE_OFF_FRAME]);
  assert.deepEqual(sends(flick.set(5200, 45)), [], "the stop must last the gap first");
  assert.equal(flick.beat(5300).wakeAt, 5000 + DRYING_RENEWAL_GAP_MS);
  assert.deepEqual(sends(flick.tick(5000 + DRYING_RENEWAL_GAP_MS)), [START_45]);
});

Deno.test("lease requests: the failsafe and controller rules are unchanged", () => {
  const core = new Core({ failsafeTimeoutMs: 10_000 });
  core.connect(0);
  core.beat(0);
  core.set(100, 45);
  core.beat(5000);
  assert.deepEqual(sends(core.tick(14_999)), []);
  assert.deepEqual(sends(core.tick(15_000)), [DRYING_LEASE_OFF_FRAME]);
  assert.equal(core.state.trip, "controller silent for more than 10 s");
});

// ---------------------------------------------------------------------------
// Overshoot guard
// ---------------------------------------------------------------------------

Deno.test("lease overshoot guard: above target + margin without cooling for the window -> given up; cooling is fine", () => {
  const windowMs = LEASE_OVERSHOOT_S * 1000;
  const over = heating();
  over.temperature(10_000, 45 + LEASE_OVERSHOOT_C + 1);
  over.temperature(10_000 + windowMs - 1, 52);
  assert.equal(over.state.target, 45);
  const d = over.temperature(10_000 + windowMs, 53);
  assert.equal(over.state.target, 0);
  assert.deepEqual(sends(d), [DRYING_LEASE_OFF_FRAME]);
  assert.match(over.state.lease.unavailable ?? "", /drying does not regulate/);

  const cooling = heating();
  cooling.temperature(10_000, 60);
  cooling.temperature(10_000 + windowMs, 57);
  cooling.temperature(10_000 + 2 * windowMs, 54);
  assert.equal(cooling.state.target, 45, "a chamber cooling toward a lowered target");
  assert.equal(cooling.state.lease.unavailable, null);

  const near = heating();
  near.temperature(10_000, 45 + LEASE_OVERSHOOT_C);
  near.temperature(10_000 + 2 * windowMs, 45 + LEASE_OVERSHOOT_C);
  assert.equal(near.state.target, 45, "within the margin");
});

// ---------------------------------------------------------------------------
// Status and always-on
// ---------------------------------------------------------------------------

Deno.test("always-on mode is unchanged: no lease in status, always-on frames", () => {
  const state = initialState();
  const status = buildStatus(state, 0, FACTS);
  assert.equal(status.heat_mode, "always-on");
  assert.equal(status.lease, null);
  let s = decide(state, { type: "link_open" }, 0).state;
  const { report } = parseDeviceFrame(leaseSettingsFrame({}));
  s = decide(s, { type: "frame", report, dropped: [] }, 0).state;
  const d = decide(s, { type: "set_target", client: "cli", value: 45 }, 10);
  assert.deepEqual(sends(d), [buildDesiredStateFrame(45)]);
});

// ---------------------------------------------------------------------------
// DragonBreath
// ---------------------------------------------------------------------------

const PROBLEM =
  "the Panda Breath at ws://dev/ws runs DragonBreath firmware 2.1.0, which has no /ws";

Deno.test("DragonBreath: an HTTP answer that is not an upgrade asks for one probe; at most one per interval", () => {
  let s = initialState();
  const step = (event: CoreEvent, now: number) => {
    const d = decide(s, event, now);
    s = d.state;
    return d;
  };
  const failed = (now: number, reason = "Invalid status code: 404") =>
    step({ type: "connect_failed", reason }, now);
  assert.ok(has(failed(0), "probe"), "a 404 to the upgrade: probe at once");
  assert.equal(has(failed(500), "probe"), false, "one probe in flight");
  step({ type: "firmware_probe", problem: null }, 800);
  assert.equal(has(failed(30_000), "probe"), false, "not again within the interval");
  assert.ok(has(failed(60_000), "probe"), "again after the interval");
});

Deno.test("DragonBreath: plain connect failures probe only after several in a row", () => {
  let s = initialState();
  const failed = (now: number) => {
    const d = decide(s, { type: "connect_failed", reason: "tcp connect error" }, now);
    s = d.state;
    return has(d, "probe");
  };
  assert.deepEqual([failed(0), failed(1000), failed(2000)], [false, false, true]);
  s = decide(s, { type: "firmware_probe", problem: null }, 2100).state;
  s = decide(s, { type: "link_open" }, 3000).state;
  assert.equal(s.probe.connectFailures, 0, "a link resets the count");
});

Deno.test("DragonBreath: the probe's answer is recorded once, shown in status, and slows the link", () => {
  let s = initialState();
  s = decide(s, { type: "connect_failed", reason: "Invalid status code: 404" }, 0).state;
  const found = decide(s, { type: "firmware_probe", problem: PROBLEM }, 100);
  s = found.state;
  assert.deepEqual(
    found.effects.filter((e) => e.type === "link_retry"),
    [{ type: "link_retry", floorMs: 300_000 }],
  );
  assert.deepEqual(logs(found, "error"), [PROBLEM], "one clear error");
  assert.ok(has(found, "notify"));
  assert.equal(buildStatus(s, 200, FACTS).firmware_problem, PROBLEM);
  assert.deepEqual(sends(found), [], "nothing actuated");

  s = decide(s, { type: "connect_failed", reason: "Invalid status code: 404" }, 60_100).state;
  const same = decide(s, { type: "firmware_probe", problem: PROBLEM }, 60_200);
  s = same.state;
  assert.deepEqual(logs(same, "error"), [], "not logged again");
  assert.equal(has(same, "link_retry"), false);

  const back = decide(s, { type: "link_open" }, 400_000);
  assert.equal(buildStatus(back.state, 400_000, FACTS).firmware_problem, null);
  assert.deepEqual(
    back.effects.filter((e) => e.type === "link_retry"),
    [{ type: "link_retry", floorMs: 0 }],
    "stock firmware again: normal backoff",
  );
});

Deno.test("DragonBreath: a probe answer after stop, or while the link is up, is not recorded", () => {
  let s = initialState();
  s = decide(s, { type: "stop", reason: "SIGTERM" }, 0).state;
  assert.equal(
    decide(s, { type: "connect_failed", reason: "Invalid status code: 404" }, 1).effects
      .some((e) => e.type === "probe"),
    false,
  );
  assert.equal(
    decide(s, { type: "firmware_probe", problem: PROBLEM }, 2).state.firmwareProblem,
    null,
  );
  let up = decide(initialState(), { type: "link_open" }, 0).state;
  up = decide(up, { type: "firmware_probe", problem: PROBLEM }, 10).state;
  assert.equal(up.firmwareProblem, null);
});

Deno.test("DragonBreath: heat is refused while detected, and a target set before is turned off", () => {
  let s = initialState({ failsafeTimeoutMs: 10 * HOUR });
  s = decide(s, { type: "set_target", client: "cli", value: 45 }, 0).state;
  assert.equal(s.target, 45, "desired while the link is down");
  s = decide(s, { type: "connect_failed", reason: "Invalid status code: 404" }, 10).state;
  const found = decide(s, { type: "firmware_probe", problem: PROBLEM }, 20);
  s = found.state;
  assert.equal(s.target, 0, "a stock firmware flashed back must not start heating");
  assert.match(buildStatus(s, 30, FACTS).note ?? "", /firmware the bridge cannot drive/);

  const refused = decide(s, { type: "set_target", client: "cli", value: 40 }, 40);
  assert.deepEqual(replyOf(refused), {
    type: "reply",
    ok: false,
    code: "unsupported_firmware",
    message: `${PROBLEM}; heat is refused`,
  });
  assert.equal(refused.state.target, 0);
  const off = decide(s, { type: "set_target", client: "cli", value: 0 }, 50);
  assert.equal(replyOf(off).ok, true, "off is never refused");

  const back = decide(s, { type: "link_open" }, 400_000).state;
  const again = decide(back, { type: "set_target", client: "cli", value: 40 }, 400_010);
  assert.equal(replyOf(again).ok, true, "stock firmware again: heat accepted");
});
