/**
 * The drying lease (`--heat-mode drying-lease`) in the pure decision core:
 * heat through a drying run the bridge renews, so a device whose bridge is
 * gone stops by itself when the run ends (docs/safety.md, "Making the device
 * stop by itself"). Every time is an explicit `now`.
 */
import assert from "node:assert/strict";
import {
  buildStatus,
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

const RENEW_MS = 1_800_000;
const FACTS = {
  url: "ws://dev/ws",
  startedIso: "x",
  connectedIso: "y",
  logWriteFailures: 0,
  firmwareProblem: null,
};

function block(settings: Record<string, unknown>): string {
  return JSON.stringify({
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

/** The core in lease mode, with a ready controller and a connected device. */
class LeaseCore {
  state: CoreState = initialState({
    heatMode: "drying_lease",
    leaseHours: 1,
    leaseRenewMs: RENEW_MS,
  });
  sent: string[] = [];
  last!: Decision;

  at(now: number, event: CoreEvent): Decision {
    this.last = decide(this.state, event, now);
    this.state = this.last.state;
    for (const e of this.last.effects) if (e.type === "send") this.sent.push(e.frame);
    return this.last;
  }

  frame(now: number, settings: Record<string, unknown>): Decision {
    const { report, dropped } = parseDeviceFrame(block(settings));
    return this.at(now, { type: "frame", report, dropped });
  }

  connect(now: number, settings: Record<string, unknown> = {}): void {
    this.at(now, { type: "link_open" });
    this.frame(now, settings);
    this.at(now, { type: "hello", client: "k", params: { controller: true, ready: true } });
  }

  beat(now: number): void {
    this.at(now, { type: "heartbeat", client: "k", ready: true });
  }

  /** Runs the core's wake-ups (as the shell's timer does) up to `until`, heartbeating. */
  runUntil(until: number, from: number): void {
    let now = from;
    while (now < until) {
      now = Math.min(until, now + 500);
      this.beat(now);
      this.at(now, { type: "tick" });
    }
  }
}

function reply(decision: Decision): ReplyEffect {
  const r = decision.effects.find((e): e is ReplyEffect => e.type === "reply");
  assert.ok(r, "a reply");
  return r;
}

Deno.test("lease: heat is a stop, the control-task gap, then one drying-run frame at the target", () => {
  const core = new LeaseCore();
  core.connect(0);
  const set = core.at(10, { type: "set_target", client: "k", value: 45 });
  assert.deepEqual(reply(set), { type: "reply", ok: true, result: { target: 45 } });
  assert.deepEqual(core.sent, [DRYING_STOP_FRAME]);
  assert.equal(set.wakeAt, 10 + DRYING_RENEWAL_GAP_MS);
  core.at(10 + DRYING_RENEWAL_GAP_MS, { type: "tick" });
  assert.deepEqual(core.sent, [DRYING_STOP_FRAME, buildDryingLeaseFrame(45, 1)]);
  const status = buildStatus(core.state, 2000, FACTS);
  assert.equal(status.heat_mode, "drying-lease");
  assert.equal(status.lease?.hours, 1);
  assert.equal(status.lease?.renewals, 0);
});

Deno.test("lease: renewed at half the lease by stop, gap, start; our own stop's push is not an end", () => {
  const core = new LeaseCore();
  core.connect(0);
  core.at(0, { type: "set_target", client: "k", value: 45 });
  const started = DRYING_RENEWAL_GAP_MS;
  core.runUntil(started + RENEW_MS, 0);
  assert.equal(core.sent.at(-1), DRYING_STOP_FRAME, "renewal begins with a stop");
  // The device may push the stopped run (drying mode, not running): ignored as our own.
  core.frame(started + RENEW_MS + 100, { work_on: 1, work_mode: 3, isrunning: 0 });
  assert.equal(core.state.target, 45);
  core.runUntil(started + RENEW_MS + DRYING_RENEWAL_GAP_MS, started + RENEW_MS);
  assert.equal(core.sent.at(-1), buildDryingLeaseFrame(45, 1), "then a fresh run");
  assert.equal(core.state.lease.renewals, 1);
});

Deno.test("lease: a run that ended by itself while heat is wanted is adopted as off, loudly", () => {
  const core = new LeaseCore();
  core.connect(0);
  core.at(0, { type: "set_target", client: "k", value: 45 });
  core.runUntil(DRYING_RENEWAL_GAP_MS + 5000, 0);
  core.frame(DRYING_RENEWAL_GAP_MS + 6000, { work_on: 1, work_mode: 3, isrunning: 0 });
  assert.equal(core.state.target, 0);
  assert.match(core.state.note ?? "", /drying lease ran out/);
  assert.equal(core.sent.at(-1), DRYING_LEASE_OFF_FRAME);
});

Deno.test("lease: every way to off leaves drying (target 0, failsafe, controller gone, fault, stop)", () => {
  const heating = () => {
    const core = new LeaseCore();
    core.connect(0);
    core.at(0, { type: "set_target", client: "k", value: 45 });
    core.runUntil(DRYING_RENEWAL_GAP_MS, 0);
    assert.equal(core.sent.at(-1), buildDryingLeaseFrame(45, 1));
    return core;
  };
  const now = DRYING_RENEWAL_GAP_MS + 10;
  const cases: [string, (core: LeaseCore) => void][] = [
    ["off", (c) => c.at(now, { type: "off", client: "k" })],
    ["controller gone", (c) => c.at(now, { type: "controller_gone", client: "k" })],
    ["failsafe", (c) => c.at(now + 60_000, { type: "tick" })],
    ["fault", (c) => c.frame(now, { work_on: 0, work_mode: 3, ptc_sensor_status: 2 })],
    ["stop", (c) => c.at(now, { type: "stop", reason: "test" })],
  ];
  for (const [name, act] of cases) {
    const core = heating();
    act(core);
    if (name === "fault") {
      // The firmware itself forced the heater off and ended the run: nothing to rewrite.
      assert.equal(core.state.device.workOn, false);
    } else {
      assert.equal(core.sent.at(-1), DRYING_LEASE_OFF_FRAME, `${name}: lease-off frame`);
    }
    assert.equal(core.state.target, 0, `${name}: target 0`);
    const count = core.sent.length;
    core.runUntil(now + 70_000, now + 60_000);
    assert.ok(
      !core.sent.slice(count).some((f) => f.includes('"isrunning":1')),
      `${name}: no lease restarted`,
    );
    assert.equal(core.state.lease.startAt, null, `${name}: no lease start pending`);
  }
});

Deno.test("lease: refused with lease_unavailable on V1.0.0, unknown firmware, or before a connect frame", () => {
  for (const firmware of ["V1.0.0", "V1.0.4", null]) {
    const core = new LeaseCore();
    if (firmware === null) {
      core.at(0, { type: "hello", client: "k", params: { controller: true, ready: true } });
    } else {
      core.connect(0, { fw_version: firmware });
    }
    const set = core.at(10, { type: "set_target", client: "k", value: 45 });
    const r = reply(set);
    assert.equal(r.ok, false, `${firmware}: refused`);
    if (!r.ok) assert.equal(r.code, "lease_unavailable");
    assert.equal(core.state.target, 0);
    assert.ok(!core.sent.some((f) => f.includes('"isrunning":1')), `${firmware}: no run started`);
    assert.ok(buildStatus(core.state, 20, FACTS).lease?.unavailable, "status says why");
  }
});

Deno.test("lease: a reconnect to a run this bridge started is not rewritten; a renewal due meanwhile runs", () => {
  const core = new LeaseCore();
  core.connect(0);
  core.at(0, { type: "set_target", client: "k", value: 45 });
  core.runUntil(DRYING_RENEWAL_GAP_MS, 0);
  const before = core.sent.length;
  core.at(5000, { type: "link_down", reason: "wifi" });
  core.at(6000, { type: "link_open" });
  core.frame(6000, { work_on: 1, work_mode: 3, isrunning: 1 });
  assert.equal(core.sent.length, before, "nothing rewritten");
  // Wi-Fi gone past the renewal: when the link is back the renewal runs at once.
  core.at(7000, { type: "link_down", reason: "wifi" });
  const back = DRYING_RENEWAL_GAP_MS + RENEW_MS + 1000;
  core.runUntil(back, 7000); // Klipper keeps heartbeating; nothing can be sent meanwhile
  assert.equal(core.sent.length, before, "no renewal without a link");
  core.at(back, { type: "link_open" });
  core.frame(back, { work_on: 1, work_mode: 3, isrunning: 1 });
  assert.equal(core.sent.at(-1), DRYING_STOP_FRAME, "the overdue renewal starts");
});

Deno.test("lease: a drying or always-on push that is not our run is enforced (a fresh lease)", () => {
  const core = new LeaseCore();
  core.connect(0);
  core.at(0, { type: "set_target", client: "k", value: 45 });
  core.runUntil(DRYING_RENEWAL_GAP_MS, 0);
  const n = core.sent.length;
  core.frame(DRYING_RENEWAL_GAP_MS + 100, { work_on: 1, work_mode: 1 }); // auto pressed
  assert.equal(core.sent[n], DRYING_STOP_FRAME, "enforced: our lease restarted");
  assert.equal(core.state.target, 45);
});
