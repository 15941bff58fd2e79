/**
 * The bridge's decision core: every heater policy in one pure function.
 *
 * {@link decide} takes the core's state, one event (the device link opened, a
 * frame arrived, a client asked for heat, a controller heartbeated or went
 * away, a read-back came back, a timer fired...) and the time `now`, and
 * returns the next state, the effects to perform and when to wake it up
 * next. No I/O and no clock reads here: lib/bridge.ts is the thin shell that
 * owns the sockets and timers and performs the effects — sends first, then
 * replies and notifications, then logs — so nothing that actuates the heater
 * can depend on a log line.
 *
 * The rules (README, "How it behaves"; CONTRACT "Failsafe and controller rules"):
 * - Failsafe: heat is switched off at max(last ready heartbeat, moment heat
 *   was switched on from 0) + timeout. Only heartbeats with `ready: true` from
 *   a controller give credit; repeated `set_target` does not extend it.
 * - Controllers: when no ready controller is left — its connection closed,
 *   or it heartbeats `ready: false` — while heat is on, OFF at once.
 * - Device pushes follow {@link PUSH_POLICY}: adopt, or enforce at once.
 * - Fault interlock: while a device fault is latched, heat is refused
 *   (`device_fault`) and only OFF is ever asserted; unknown codes are faults.
 * - Connect: the first settings block after a link opens is the connect
 *   frame, whatever its roots; the desired state is written only if it
 *   differs, and asserted anyway when no connect frame came in time.
 * - Read-back: a periodic fresh connect frame; a mismatch is corrected.
 *
 * @module
 */

import type { LogLevel } from "./log.ts";
import {
  ALWAYS_ON_MODE,
  buildDesiredStateFrame,
  buildDryingLeaseFrame,
  DEFAULT_MAX_TARGET,
  type DeviceReport,
  DRYING_LEASE_FIRMWARE,
  DRYING_LEASE_OFF_FRAME,
  DRYING_RENEWAL_GAP_MS,
  DRYING_STOP_FRAME,
  dryingLeaseSupported,
  FAULT_DESCRIPTIONS,
  type FaultName,
  validateTarget,
} from "./protocol.ts";
import { API_PROTOCOL_VERSION, VERSION } from "./version.ts";

// ---------------------------------------------------------------------------
// Configuration and state
// ---------------------------------------------------------------------------

/** Fixed settings of the core. All durations in milliseconds. */
export interface CoreConfig {
  /** Heat goes off when no ready controller heartbeated for this long. */
  failsafeTimeoutMs: number;
  /** Highest target accepted, in °C. */
  maxTarget: number;
  /** A temperature older than this is reported as unknown. */
  staleAfterMs: number;
  /** The desired state is asserted this long after a link opens if no connect frame came. */
  connectAssertMs: number;
  /** Period of the read-back (a fresh connect frame on a short extra connection); 0 disables. */
  readbackIntervalMs: number;
  /**
   * `always-on` heats in always-on mode; `drying-lease` heats through a drying
   * run of {@link CoreConfig.leaseHours} that the bridge renews at half-time, so
   * the device stops by itself when the bridge is gone (docs/safety.md).
   */
  heatMode: HeatMode;
  /** Length of one drying lease in whole hours (1-12). */
  leaseHours: number;
}

/** How the bridge heats: see {@link CoreConfig.heatMode}. */
export type HeatMode = "always-on" | "drying-lease";

/** The heat modes, as `--heat-mode` spells them. */
export const HEAT_MODES: readonly HeatMode[] = ["always-on", "drying-lease"];

/** Defaults of {@link CoreConfig}. */
export const CORE_DEFAULTS: Readonly<CoreConfig> = {
  failsafeTimeoutMs: 10_000,
  maxTarget: DEFAULT_MAX_TARGET,
  staleAfterMs: 5_000,
  connectAssertMs: 2_000,
  readbackIntervalMs: 60_000,
  heatMode: "always-on",
  leaseHours: 1,
};

/** The drying lease's state (heat mode `drying-lease` only). */
export interface LeaseState {
  /** When the running lease was last (re)started by the bridge; null while none. */
  startedAt: number | null;
  renewals: number;
  /** During a renewal: when the start frame follows the stop frame; else null. */
  renewStartAt: number | null;
  /** Until then an `isrunning: 0` push is our own renewal's stop, not an end. */
  ignoreEndUntil: number | null;
}

/** One controller connection, by its client label. */
export interface ControllerState {
  /** The name it gave in `hello` (`client`), if any. */
  name: string | null;
  /** Its latest readiness (Klipper's `klippy:ready` .. shutdown/disconnect). */
  ready: boolean;
  /** When it last heartbeated with `ready: true`, or null. */
  lastReadyAt: number | null;
}

/** What the device last reported about itself. */
export interface DeviceState {
  workOn: boolean | null;
  workMode: number | null;
  setTemp: number | null;
  firmware: string | null;
  dryingRunning: boolean | null;
  /** When a settings block (connect frame, push or read-back) last came. */
  reportedAt: number | null;
  temperature: number | null;
  temperatureAt: number | null;
}

/** The state of the main device link. */
export interface LinkState {
  open: boolean;
  openedAt: number | null;
  /** The first settings block on this link (the connect frame) was seen. */
  connectSeen: boolean;
  /** A settings frame was written on this link. */
  wroteSinceOpen: boolean;
  /** When the desired state is asserted if no connect frame came; null once done. */
  assertAt: number | null;
  connects: number;
  drops: number;
  droppedFrames: number;
  /** Settings frames (ON/OFF) written to the device. */
  writes: number;
  /** Connect frames that already matched the desired state: nothing written. */
  skippedWrites: number;
}

/** The read-back's state. */
export interface ReadbackState {
  /** When the next read-back is due; null while the link is down or disabled. */
  dueAt: number | null;
  inFlight: boolean;
  startedAt: number | null;
  lastAt: number | null;
  /** `match`, `corrected`, `stale`, `mismatch (link down)` or `failed: ...`. */
  last: string | null;
  count: number;
  failures: number;
  corrections: number;
}

/** Everything the core knows. Plain data: copied, never shared. */
export interface CoreState {
  config: CoreConfig;
  running: boolean;
  /** The desired target in °C; 0 = off. */
  target: number;
  /** When heat was switched on from 0 (request or adopted push); null while off. */
  heatOnAt: number | null;
  controllers: Record<string, ControllerState>;
  /** Why the failsafe last turned the heat off; null once heat is requested again. */
  trip: string | null;
  note: string | null;
  faults: FaultName[];
  device: DeviceState;
  link: LinkState;
  readback: ReadbackState;
  /** When a settings frame was last written; null if never. */
  lastWriteAt: number | null;
  /** When a settings block last came on the main link; null if never. */
  lastLinkReportAt: number | null;
  lease: LeaseState;
}

/** The core's state before anything happened: off, no link, no controller. */
export function initialState(config: Partial<CoreConfig> = {}): CoreState {
  return {
    config: { ...CORE_DEFAULTS, ...config },
    running: true,
    target: 0,
    heatOnAt: null,
    controllers: {},
    trip: null,
    note: null,
    faults: [],
    device: {
      workOn: null,
      workMode: null,
      setTemp: null,
      firmware: null,
      dryingRunning: null,
      reportedAt: null,
      temperature: null,
      temperatureAt: null,
    },
    link: {
      open: false,
      openedAt: null,
      connectSeen: false,
      wroteSinceOpen: false,
      assertAt: null,
      connects: 0,
      drops: 0,
      droppedFrames: 0,
      writes: 0,
      skippedWrites: 0,
    },
    readback: {
      dueAt: null,
      inFlight: false,
      startedAt: null,
      lastAt: null,
      last: null,
      count: 0,
      failures: 0,
      corrections: 0,
    },
    lastWriteAt: null,
    lastLinkReportAt: null,
    lease: { startedAt: null, renewals: 0, renewStartAt: null, ignoreEndUntil: null },
  };
}

// ---------------------------------------------------------------------------
// Events and effects
// ---------------------------------------------------------------------------

/** Something that happened, fed to {@link decide}. `client` is a connection's label. */
export type CoreEvent =
  | { type: "link_open" }
  | { type: "frame"; report: DeviceReport | null; dropped: string[] }
  | { type: "link_down"; reason: string }
  | { type: "hello"; client: string; params: Record<string, unknown> }
  | { type: "set_target"; client: string; value: unknown }
  | { type: "off"; client: string }
  | { type: "heartbeat"; client: string; ready: unknown }
  | { type: "controller_gone"; client: string }
  | { type: "readback"; report: DeviceReport | null; error: string | null }
  | { type: "tick" }
  | { type: "stop"; reason: string };

/** Error codes the core replies with (a subset of the socket API's). */
export type CoreErrorCode =
  | "invalid_params"
  | "out_of_range"
  | "device_fault"
  | "lease_unavailable"
  | "invalid_request";

/** The answer to a request event. */
export type ReplyEffect =
  | { type: "reply"; ok: true; result: Record<string, unknown> }
  | { type: "reply"; ok: false; code: CoreErrorCode; message: string };

/** What the shell must do, in this order: send, reply, notify, readback, log. */
export type Effect =
  | { type: "send"; frame: string; target: number; reason: string }
  | ReplyEffect
  | { type: "notify" }
  | { type: "readback" }
  | {
    type: "log";
    level: LogLevel;
    message: string;
    fields: Record<string, unknown>;
    /** Rate limit: at most one line per `intervalMs` for `key`. */
    limit?: { key: string; intervalMs: number };
  };

/** The outcome of one event. */
export interface Decision {
  state: CoreState;
  /** Ordered: every `send` first, then replies, notify, readback, logs last. */
  effects: Effect[];
  /** When to feed the next `tick`; null when nothing is due. */
  wakeAt: number | null;
}

const EFFECT_ORDER: Record<Effect["type"], number> = {
  send: 0,
  reply: 1,
  notify: 2,
  readback: 3,
  log: 4,
};

/** Sorts effects into the order the shell performs them (stable within a kind). */
export function orderEffects(effects: readonly Effect[]): Effect[] {
  return effects
    .map((effect, index) => ({ effect, index }))
    .sort((a, b) => EFFECT_ORDER[a.effect.type] - EFFECT_ORDER[b.effect.type] || a.index - b.index)
    .map(({ effect }) => effect);
}

// ---------------------------------------------------------------------------
// The push policy table
// ---------------------------------------------------------------------------

/** Every kind of device push (a settings block after the connect frame). */
export type PushKind =
  | "off"
  | "fault"
  | "drying_end"
  | "always_on"
  | "always_on_out_of_range"
  | "auto"
  | "drying"
  | "unknown_mode"
  | "on_while_faulted";

/** What the bridge does with a push: adopt a target, or enforce its desired state now. */
export type PushRule =
  | { action: "adopt"; target: "off" | "set_temp"; why: string }
  | { action: "enforce"; why: string };

/**
 * The one push policy. Adopting a target tells Klipper (status) and puts it
 * under the failsafe; enforcing sends the desired state at once. Modes the
 * bridge does not drive (auto, drying, unknown), out-of-range targets and
 * heat while a fault is latched are never left running.
 */
export const PUSH_POLICY: Readonly<Record<PushKind, PushRule>> = {
  off: { action: "adopt", target: "off", why: "heater switched off at the device (button)" },
  fault: { action: "adopt", target: "off", why: "device switched the heater off: fault" },
  drying_end: { action: "adopt", target: "off", why: "drying run ended at the device" },
  always_on: { action: "adopt", target: "set_temp", why: "heater switched on at the device" },
  always_on_out_of_range: { action: "enforce", why: "always-on target above max_target" },
  auto: { action: "enforce", why: "auto mode is not driven by the bridge" },
  drying: { action: "enforce", why: "drying runs are not driven by the bridge" },
  unknown_mode: { action: "enforce", why: "unknown work mode" },
  on_while_faulted: { action: "enforce", why: "switched on while a device fault is latched" },
};

type ModeMeaning = "auto" | "always_on" | "drying" | "unknown";

/** What `work_mode` means on `firmware` (V1.0.0 numbers modes differently; 2 is always-on). */
export function modeMeaning(mode: number | null, firmware: string | null): ModeMeaning {
  if (mode === ALWAYS_ON_MODE) return "always_on";
  const legacy = firmware === "V1.0.0";
  if (mode === 1) return legacy ? "drying" : "auto";
  if (mode === 3) return legacy ? "auto" : "drying";
  return "unknown";
}

/** Classifies a push from the device's merged state and the latched faults. */
export function classifyPush(
  device: Pick<DeviceState, "workOn" | "workMode" | "setTemp" | "firmware" | "dryingRunning">,
  faults: readonly FaultName[],
  maxTarget: number,
): PushKind {
  if (device.workOn !== true) return faults.length > 0 ? "fault" : "off";
  if (faults.length > 0) return "on_while_faulted";
  switch (modeMeaning(device.workMode, device.firmware)) {
    case "always_on":
      return device.setTemp !== null && device.setTemp >= 1 && device.setTemp <= maxTarget
        ? "always_on"
        : "always_on_out_of_range";
    case "drying":
      return device.dryingRunning === false ? "drying_end" : "drying";
    case "auto":
      return "auto";
    default:
      return "unknown_mode";
  }
}

/** Whether the device's reported state is the desired `target` (0: off). */
export function deviceMatches(
  device: Pick<DeviceState, "workOn" | "workMode" | "setTemp" | "dryingRunning">,
  target: number,
): boolean {
  if (target === 0) return device.workOn === false;
  return device.workOn === true && device.workMode === ALWAYS_ON_MODE &&
    device.setTemp === target && device.dryingRunning !== true;
}

/**
 * Whether the device's reported state is the desired `target` in heat mode
 * `drying-lease`: off is `work_on` false with no run; heat is a drying run.
 */
export function deviceMatchesLease(
  device: Pick<DeviceState, "workOn" | "workMode" | "firmware" | "dryingRunning">,
  target: number,
): boolean {
  if (target === 0) return device.workOn === false && device.dryingRunning !== true;
  return device.workOn === true && modeMeaning(device.workMode, device.firmware) === "drying" &&
    device.dryingRunning === true;
}

function matchesDesired(s: CoreState, target: number): boolean {
  return s.config.heatMode === "drying-lease"
    ? deviceMatchesLease(s.device, target)
    : deviceMatches(s.device, target);
}

/** Why heat is refused in heat mode `drying-lease` now, or null when a lease can run. */
export function leaseUnavailable(state: CoreState): string | null {
  if (state.config.heatMode !== "drying-lease") return null;
  const firmware = state.device.firmware;
  if (firmware === null) {
    return "drying lease unavailable: the device's firmware is not known yet (no connect " +
      "frame); heat is refused in --heat-mode drying-lease until the device reports it";
  }
  if (!dryingLeaseSupported(firmware)) {
    return `drying lease unavailable: device firmware ${firmware} is not one of ` +
      `${DRYING_LEASE_FIRMWARE.join(", ")}; heat is refused (use --heat-mode always-on)`;
  }
  return null;
}

/** When the running lease is renewed (half the lease after its start); null if none. */
export function leaseRenewAt(state: CoreState): number | null {
  const lease = state.lease;
  if (
    state.config.heatMode !== "drying-lease" || lease.startedAt === null ||
    lease.renewStartAt !== null || state.target === 0
  ) return null;
  return lease.startedAt + state.config.leaseHours * 3_600_000 / 2;
}

// ---------------------------------------------------------------------------
// Derived values
// ---------------------------------------------------------------------------

function anyReadyController(state: CoreState): boolean {
  return Object.values(state.controllers).some((c) => c.ready);
}

/** The last `ready: true` heartbeat of a connected controller, or null. */
export function lastReadyHeartbeat(state: CoreState): number | null {
  let last: number | null = null;
  for (const controller of Object.values(state.controllers)) {
    if (controller.lastReadyAt !== null && (last === null || controller.lastReadyAt > last)) {
      last = controller.lastReadyAt;
    }
  }
  return last;
}

/** When the failsafe turns the heat off; null while off. */
export function failsafeDeadline(state: CoreState): number | null {
  if (state.target === 0 || state.heatOnAt === null) return null;
  const lastReady = lastReadyHeartbeat(state);
  return Math.max(state.heatOnAt, lastReady ?? -Infinity) + state.config.failsafeTimeoutMs;
}

function faultText(faults: readonly FaultName[]): string {
  return faults.map((f) => `${f} (${FAULT_DESCRIPTIONS[f] ?? "unknown fault"})`).join(", ");
}

const MODE_NAMES: Record<Exclude<ModeMeaning, "unknown">, string> = {
  auto: "auto",
  always_on: "always-on",
  drying: "drying",
};

function modeName(device: DeviceState): string {
  const meaning = modeMeaning(device.workMode, device.firmware);
  return meaning === "unknown" ? `unknown mode ${device.workMode ?? "?"}` : MODE_NAMES[meaning];
}

function seconds(ms: number): number {
  return ms / 1000;
}

// ---------------------------------------------------------------------------
// decide
// ---------------------------------------------------------------------------

/** Collects one decision's effects. */
class Step {
  readonly s: CoreState;
  readonly now: number;
  readonly effects: Effect[] = [];
  #notify = false;

  constructor(state: CoreState, now: number) {
    this.s = state;
    this.now = now;
  }

  log(
    level: LogLevel,
    message: string,
    fields: Record<string, unknown> = {},
    limit?: { key: string; intervalMs: number },
  ): void {
    this.effects.push(
      limit ? { type: "log", level, message, fields, limit } : {
        type: "log",
        level,
        message,
        fields,
      },
    );
  }

  reply(result: Record<string, unknown>): void {
    this.effects.push({ type: "reply", ok: true, result });
  }

  refuse(code: CoreErrorCode, message: string): void {
    this.effects.push({ type: "reply", ok: false, code, message });
  }

  notify(): void {
    this.#notify = true;
  }

  /**
   * Writes the desired state, if the link is open (a link that opens later
   * compares and asserts it). While a fault is latched only OFF is written.
   */
  sendDesired(reason: string): boolean {
    const s = this.s;
    if (!s.link.open || !s.running) return false;
    let target = s.faults.length > 0 ? 0 : s.target;
    let frame: string;
    if (s.config.heatMode === "drying-lease") {
      // Heat only through a lease on supported firmware; every OFF leaves drying.
      if (leaseUnavailable(s) !== null) target = 0;
      frame = target === 0
        ? DRYING_LEASE_OFF_FRAME
        : buildDryingLeaseFrame(target, s.config.leaseHours);
      s.lease.startedAt = target === 0 ? null : this.now;
      s.lease.renewStartAt = null;
    } else {
      frame = buildDesiredStateFrame(target);
    }
    this.effects.push({ type: "send", frame, target, reason });
    s.link.writes++;
    s.link.wroteSinceOpen = true;
    s.lastWriteAt = this.now;
    return true;
  }

  /** Changes the desired target; heat switched on from 0 starts the failsafe clock. */
  setTarget(target: number, why: string): void {
    const s = this.s;
    const previous = s.target;
    s.target = target;
    if (target === 0) {
      s.heatOnAt = null;
      s.lease.startedAt = null;
    } else if (previous === 0) s.heatOnAt = this.now;
    if (target !== previous) {
      this.log("info", "target changed", { from: previous, to: target, why });
    }
    this.notify();
  }

  /** Turns the heat off on the failsafe's behalf, at once. */
  trip(reason: string): void {
    const s = this.s;
    const was = s.target;
    s.trip = reason;
    s.note = `failsafe turned the heater off: ${reason}`;
    this.setTarget(0, "failsafe");
    this.sendDesired("failsafe");
    this.log("warn", "failsafe: turning heater off", { reason, target_was: was });
  }

  finish(): Effect[] {
    if (this.#notify) this.effects.push({ type: "notify" });
    return orderEffects(this.effects);
  }
}

/**
 * The core: applies `event` at time `now` (monotonic milliseconds) to
 * `state`. Pure: `state` is not modified; the result holds a new state.
 */
export function decide(state: CoreState, event: CoreEvent, now: number): Decision {
  const step = new Step(structuredClone(state), now);
  // A deadline that passed is honoured before anything else: a late heartbeat
  // (a frozen process, a slow event loop) cannot rescue an expired failsafe.
  checkFailsafe(step);
  handle(step, event);
  checkFailsafe(step);
  checkConnectAssert(step);
  checkLease(step);
  checkReadback(step);
  return { state: step.s, effects: step.finish(), wakeAt: nextWake(step.s) };
}

function handle(step: Step, event: CoreEvent): void {
  switch (event.type) {
    case "link_open":
      return onLinkOpen(step);
    case "frame":
      return onFrame(step, event.report, event.dropped);
    case "link_down":
      return onLinkDown(step, event.reason);
    case "hello":
      return onHello(step, event.client, event.params);
    case "set_target":
      return onSetTarget(step, event.client, event.value);
    case "off":
      return onSetTarget(step, event.client, 0);
    case "heartbeat":
      return onHeartbeat(step, event.client, event.ready);
    case "controller_gone":
      return onControllerGone(step, event.client);
    case "readback":
      return onReadback(step, event.report, event.error);
    case "tick":
      return;
    case "stop":
      return onStop(step, event.reason);
  }
}

function checkFailsafe(step: Step): void {
  const s = step.s;
  const deadline = failsafeDeadline(s);
  if (deadline === null || step.now < deadline) return;
  const lastReady = lastReadyHeartbeat(s);
  const timeout = seconds(s.config.failsafeTimeoutMs);
  step.trip(
    lastReady !== null && s.heatOnAt !== null && lastReady >= s.heatOnAt
      ? `controller silent for more than ${timeout} s`
      : `heat requested without a live controller for ${timeout} s`,
  );
}

function checkConnectAssert(step: Step): void {
  const link = step.s.link;
  if (!link.open || link.connectSeen || link.assertAt === null || step.now < link.assertAt) return;
  link.assertAt = null;
  if (link.wroteSinceOpen) return;
  step.sendDesired("no connect frame");
  step.log("warn", "no settings frame since connecting; asserting the desired state", {
    waited_ms: step.s.config.connectAssertMs,
    target: step.s.target,
  });
}

/**
 * Lease renewal at half-time: the stop frame, then after DRYING_RENEWAL_GAP_MS
 * the start frame (a re-sent start alone may not restart the timer). Our own
 * `isrunning: 0` push inside that window is not a lease end.
 */
function checkLease(step: Step): void {
  const s = step.s;
  const lease = s.lease;
  if (s.config.heatMode !== "drying-lease") return;
  if (!s.running || !s.link.open || s.target === 0) {
    lease.renewStartAt = null;
    return;
  }
  if (lease.renewStartAt !== null) {
    if (step.now < lease.renewStartAt) return;
    lease.renewStartAt = null;
    if (step.sendDesired("lease renewal")) {
      lease.renewals++;
      lease.ignoreEndUntil = step.now + DRYING_RENEWAL_GAP_MS;
      step.log("info", "drying lease renewed", {
        target: s.target,
        hours: s.config.leaseHours,
        renewals: lease.renewals,
      });
      step.notify();
    }
    return;
  }
  const renewAt = leaseRenewAt(s);
  if (renewAt === null || step.now < renewAt) return;
  step.effects.push({
    type: "send",
    frame: DRYING_STOP_FRAME,
    target: s.target,
    reason: "lease renewal (stop)",
  });
  s.link.writes++;
  s.link.wroteSinceOpen = true;
  s.lastWriteAt = step.now;
  lease.renewStartAt = step.now + DRYING_RENEWAL_GAP_MS;
  lease.ignoreEndUntil = lease.renewStartAt + DRYING_RENEWAL_GAP_MS;
}

function checkReadback(step: Step): void {
  const s = step.s;
  const rb = s.readback;
  if (!s.running || !s.link.open || rb.inFlight || rb.dueAt === null || step.now < rb.dueAt) {
    return;
  }
  rb.inFlight = true;
  rb.startedAt = step.now;
  rb.dueAt = null;
  step.effects.push({ type: "readback" });
}

function nextWake(s: CoreState): number | null {
  const candidates = [failsafeDeadline(s)];
  if (s.link.open && !s.link.connectSeen) candidates.push(s.link.assertAt);
  if (s.running && s.link.open && !s.readback.inFlight) candidates.push(s.readback.dueAt);
  if (s.running && s.link.open && s.target > 0) {
    candidates.push(s.lease.renewStartAt ?? leaseRenewAt(s));
  }
  const due = candidates.filter((t): t is number => t !== null);
  return due.length === 0 ? null : Math.min(...due);
}

// --- link -----------------------------------------------------------------

function onLinkOpen(step: Step): void {
  const { s, now } = step;
  s.link.open = true;
  s.link.openedAt = now;
  s.link.connectSeen = false;
  s.link.wroteSinceOpen = false;
  s.link.assertAt = now + s.config.connectAssertMs;
  s.link.connects++;
  s.readback.dueAt = s.config.readbackIntervalMs > 0 ? now + s.config.readbackIntervalMs : null;
  step.log("info", "device connected", { target: s.target });
  step.notify();
}

function onLinkDown(step: Step, reason: string): void {
  const s = step.s;
  if (!s.link.open) return;
  s.link.open = false;
  s.link.connectSeen = false;
  s.link.assertAt = null;
  s.link.drops++;
  s.readback.dueAt = null;
  step.log(s.running ? "warn" : "debug", "device link down", { reason });
  step.notify();
}

function recordSettings(s: CoreState, report: DeviceReport, now: number): void {
  const d = s.device;
  if (report.workOn !== undefined) d.workOn = report.workOn;
  if (report.workMode !== undefined) d.workMode = report.workMode;
  if (report.setTemp !== undefined) d.setTemp = report.setTemp;
  if (report.firmware !== undefined) d.firmware = report.firmware;
  if (report.dryingRunning !== undefined) d.dryingRunning = report.dryingRunning;
  if (report.isSettingsBlock) d.reportedAt = now;
}

/**
 * Applies the report's fault fields. Fault fields are sent only while
 * non-zero, so a whole settings block without one clears it. A fault that
 * latches while heat is on drops the target to 0 (the interlock); returns
 * whether it did, so the caller enforces OFF.
 */
function applyFaults(step: Step, report: DeviceReport, wholeBlock: boolean): boolean {
  const s = step.s;
  const next = new Set<FaultName>(wholeBlock ? [] : s.faults);
  for (const [name, active] of Object.entries(report.faults ?? {})) {
    if (active) next.add(name as FaultName);
    else next.delete(name as FaultName);
  }
  const latched = [...next].filter((f) => !s.faults.includes(f));
  const cleared = s.faults.filter((f) => !next.has(f));
  if (latched.length === 0 && cleared.length === 0) return false;
  s.faults = [...next];
  step.notify();
  for (const fault of latched) {
    step.log("error", "device fault", { fault, meaning: FAULT_DESCRIPTIONS[fault] });
  }
  for (const fault of cleared) step.log("info", "device fault cleared", { fault });
  if (latched.length === 0 || s.target === 0) return false;
  s.note = `device switched the heater off: fault ${s.faults.join(", ")}`;
  step.setTarget(0, "device fault");
  step.log("warn", "device fault latched while heating: heater off", { faults: s.faults });
  return true;
}

function onFrame(step: Step, report: DeviceReport | null, dropped: string[]): void {
  const s = step.s;
  if (dropped.length > 0) {
    s.link.droppedFrames++;
    step.log("debug", "dropped device data", { reason: dropped.join("; ") }, {
      key: "dropped-frame",
      intervalMs: 10_000,
    });
  }
  if (!report || !s.link.open) return;
  step.notify();
  if (report.temperature !== undefined) {
    s.device.temperature = report.temperature;
    s.device.temperatureAt = step.now;
  }
  recordSettings(s, report, step.now);
  if (!report.isSettingsBlock) {
    // A fault field outside a settings block (no known firmware does this): same interlock.
    if (report.faults && applyFaults(step, report, false)) step.sendDesired("device fault");
    return;
  }
  s.lastLinkReportAt = step.now;
  const interlocked = applyFaults(step, report, true);
  if (!s.running) return;
  if (!s.link.connectSeen) {
    s.link.connectSeen = true;
    s.link.assertAt = null;
    onConnectFrame(step, interlocked);
  } else {
    onPush(step);
  }
}

/** Compare before writing: an unchanged state is not rewritten to the device's flash. */
function onConnectFrame(step: Step, interlocked: boolean): void {
  const s = step.s;
  const d = s.device;
  const fields = {
    device_work_on: d.workOn,
    device_work_mode: d.workMode,
    device_set_temp: d.setTemp,
    target: s.target,
  };
  if (matchesDesired(s, s.target)) {
    s.link.skippedWrites++;
    step.log("info", "device state matches the desired state on connect; nothing written", fields);
  } else if (s.link.wroteSinceOpen && !interlocked) {
    // The connect frame predates what was already written on this link.
    step.log("debug", "connect frame predates a write on this link", fields);
  } else {
    step.sendDesired("connect");
    step.log("info", "device state differs from desired state on connect; asserting", fields);
  }
}

function onPush(step: Step): void {
  const s = step.s;
  const d = s.device;
  const kind = classifyPush(d, s.faults, s.config.maxTarget);
  if (s.config.heatMode === "drying-lease" && onLeasePush(step, kind)) return;
  const rule = PUSH_POLICY[kind];
  const fields = {
    push: kind,
    policy: rule.action,
    device_work_on: d.workOn,
    device_work_mode: d.workMode,
    device_set_temp: d.setTemp,
  };
  if (rule.action === "adopt") {
    const adopted = rule.target === "off" ? 0 : d.setTemp!;
    if (adopted !== s.target) {
      s.note = adopted === 0
        ? (kind === "fault"
          ? `device switched the heater off: fault ${s.faults.join(", ")}`
          : rule.why)
        : `${rule.why} (${adopted} °C); the failsafe applies`;
      if (adopted > 0) s.trip = null;
      step.setTarget(adopted, `device push (${kind})`);
      step.log("warn", s.note, { ...fields, target: adopted });
    }
    // A push adopted as 0 may leave the device "on" in a mode that does not heat
    // (drying ended): the desired state is then written so the device agrees.
    if (!matchesDesired(s, s.target)) step.sendDesired(`device push (${kind})`);
    return;
  }
  const desired = s.target === 0
    ? "off"
    : `${s.target} °C ${s.config.heatMode === "drying-lease" ? "drying lease" : "always-on"}`;
  const detail = kind === "always_on_out_of_range"
    ? `at ${d.setTemp} °C, above max_target ${s.config.maxTarget} °C`
    : kind === "on_while_faulted"
    ? `while fault ${s.faults.join(", ")} is latched`
    : `in ${modeName(d)} mode`;
  s.note =
    `device switched on at the device ${detail}; the bridge enforced its desired state (${desired})`;
  step.sendDesired(`device push (${kind})`);
  step.log("warn", s.note, { ...fields, target: s.target });
  step.notify();
}

/**
 * The lease variant of the push table; returns whether the push was handled.
 * A drying push that is our own running lease is not enforced; our own
 * renewal stop is ignored; a lease that ended while heat is wanted is
 * adopted as 0, loudly. Everything else goes through {@link PUSH_POLICY}.
 */
function onLeasePush(step: Step, kind: PushKind): boolean {
  const s = step.s;
  const lease = s.lease;
  if (kind === "drying" && s.target > 0 && lease.startedAt !== null) {
    step.log("debug", "device push: our own drying lease is running", { target: s.target });
    return true;
  }
  if (
    kind === "drying_end" && lease.ignoreEndUntil !== null && step.now <= lease.ignoreEndUntil
  ) {
    step.log("debug", "device push: our own lease renewal stopped the run; ignored");
    return true;
  }
  if (kind === "drying_end" && s.target > 0) {
    const was = s.target;
    lease.startedAt = null;
    s.note = `drying lease ended at the device without a renewal (bridge late or ` +
      `stopped?); heater off, target ${was} °C dropped to 0: set it again`;
    step.setTarget(0, "drying lease ended");
    step.sendDesired("drying lease ended");
    step.log("error", s.note, { push: kind, target_was: was });
    return true;
  }
  return false;
}

// --- requests -------------------------------------------------------------

function clientName(s: CoreState, client: string): string {
  const name = s.controllers[client]?.name;
  return name ? `${client} (${name})` : client;
}

function onHello(step: Step, client: string, params: Record<string, unknown>): void {
  const s = step.s;
  const { client: name, controller, ready } = params;
  if (
    (name !== undefined && typeof name !== "string") ||
    (controller !== undefined && typeof controller !== "boolean") ||
    (ready !== undefined && typeof ready !== "boolean")
  ) {
    step.refuse(
      "invalid_params",
      "hello params: client must be a string, controller and ready booleans",
    );
    return;
  }
  if (controller === true) {
    const known = s.controllers[client];
    s.controllers[client] = {
      name: typeof name === "string" ? name.slice(0, 64) : known?.name ?? null,
      ready: ready === true,
      lastReadyAt: known?.lastReadyAt ?? null,
    };
    if (!known) {
      step.log("info", "controller connected", {
        client: clientName(s, client),
        ready: ready === true,
      });
    }
    if (ready !== true) enforceNotReady(step, client);
    step.notify();
  }
  step.reply({
    protocol: API_PROTOCOL_VERSION,
    bridge: VERSION,
    failsafe_timeout: seconds(s.config.failsafeTimeoutMs),
    max_target: s.config.maxTarget,
    fault_descriptions: { ...FAULT_DESCRIPTIONS },
  });
}

function onSetTarget(step: Step, client: string, value: unknown): void {
  const s = step.s;
  const check = validateTarget(value, s.config.maxTarget);
  if (!check.ok) {
    step.refuse(check.code, check.message);
    step.log("info", "rejected target", { client: clientName(s, client), reason: check.message });
    return;
  }
  if (!s.running) {
    if (check.target === 0) step.reply({ target: 0 });
    else step.refuse("invalid_request", "the bridge is stopping; the heater is off");
    return;
  }
  if (check.target > 0 && s.faults.length > 0) {
    const message = `device fault latched: ${faultText(s.faults)}; heat is refused until the ` +
      "device reports the fault cleared";
    step.refuse("device_fault", message);
    step.log("warn", "refused heat: device fault latched", {
      client: clientName(s, client),
      target: check.target,
      faults: s.faults,
    });
    return;
  }
  const unavailable = check.target > 0 ? leaseUnavailable(s) : null;
  if (unavailable !== null) {
    step.refuse("lease_unavailable", unavailable);
    step.log("warn", "refused heat: drying lease unavailable", {
      client: clientName(s, client),
      target: check.target,
      firmware: s.device.firmware,
    });
    return;
  }
  s.trip = null;
  s.note = null;
  step.setTarget(check.target, `requested by ${clientName(s, client)}`);
  // A request is always written, even when unchanged: `off` is the user's way to be sure.
  if (!step.sendDesired("request")) {
    step.log("debug", "device link down: the desired state is asserted on connect", {
      target: check.target,
    });
  }
  step.reply({ target: check.target });
}

/** A controller that is not ready while heat is on and nobody ready is left: OFF now. */
function enforceNotReady(step: Step, client: string): void {
  const s = step.s;
  if (s.target > 0 && !anyReadyController(s)) {
    step.trip(`controller ${clientName(s, client)} reports Klipper is not ready`);
  }
}

function onHeartbeat(step: Step, client: string, ready: unknown): void {
  const s = step.s;
  if (typeof ready !== "boolean") {
    step.refuse("invalid_params", "heartbeat needs params {ready: true|false} (socket API v2)");
    return;
  }
  const known = s.controllers[client];
  const controller: ControllerState = known ?? { name: null, ready, lastReadyAt: null };
  s.controllers[client] = controller;
  if (!known) step.log("info", "controller connected", { client: clientName(s, client), ready });
  else if (known.ready !== ready) {
    step.log("info", ready ? "controller ready" : "controller not ready", {
      client: clientName(s, client),
    });
  }
  if (!known || known.ready !== ready) step.notify();
  controller.ready = ready;
  if (ready) controller.lastReadyAt = step.now;
  else enforceNotReady(step, client);
  step.reply({ failsafe_timeout: seconds(s.config.failsafeTimeoutMs) });
}

function onControllerGone(step: Step, client: string): void {
  const s = step.s;
  const gone = s.controllers[client];
  if (!gone) return;
  const label = clientName(s, client);
  delete s.controllers[client];
  step.log("info", "controller disconnected", { client: label });
  step.notify();
  if (s.target > 0 && !anyReadyController(s)) {
    step.trip(`controller ${label} disconnected while heating`);
  }
}

// --- read-back ------------------------------------------------------------

function onReadback(step: Step, report: DeviceReport | null, error: string | null): void {
  const s = step.s;
  const rb = s.readback;
  const startedAt = rb.startedAt ?? step.now;
  rb.inFlight = false;
  rb.lastAt = step.now;
  rb.dueAt = s.link.open && s.config.readbackIntervalMs > 0
    ? step.now + s.config.readbackIntervalMs
    : null;
  step.notify();
  if (!report || !report.isSettingsBlock) {
    rb.failures++;
    rb.last = `failed: ${error ?? "no settings in the connect frame"}`;
    step.log("warn", "read-back failed", { reason: error ?? "no settings in the connect frame" }, {
      key: "readback-failed",
      intervalMs: 600_000,
    });
    return;
  }
  rb.count++;
  // What was written or reported on the main link since the read-back began is newer.
  const newer = (at: number | null) => at !== null && at >= startedAt;
  if (newer(s.lastWriteAt) || newer(s.lastLinkReportAt)) {
    rb.last = "stale";
    step.log("debug", "read-back predates a newer write or report; ignored");
    return;
  }
  recordSettings(s, report, step.now);
  applyFaults(step, report, true);
  const d = s.device;
  if (matchesDesired(s, s.target)) {
    rb.last = "match";
    step.log("debug", "read-back: device state matches the desired state");
    return;
  }
  const fields = {
    device_work_on: d.workOn,
    device_work_mode: d.workMode,
    device_set_temp: d.setTemp,
    target: s.target,
  };
  if (!step.sendDesired("read-back")) {
    rb.last = "mismatch (link down)";
    step.log("warn", "read-back: device state differs; asserted when the link is back", fields);
    return;
  }
  rb.corrections++;
  rb.last = "corrected";
  s.note = `device state was changed outside the bridge (another client?); the bridge ` +
    `corrected it (${s.target === 0 ? "off" : `${s.target} °C`})`;
  step.log(
    "warn",
    "read-back: device state differs from the desired state (changed by another client?); correcting",
    fields,
  );
}

// --- stop -----------------------------------------------------------------

function onStop(step: Step, reason: string): void {
  const s = step.s;
  if (!s.running) return;
  const was = s.target;
  s.target = 0;
  s.heatOnAt = null;
  s.note = `bridge stopped: ${reason}`;
  s.readback.dueAt = null;
  // OFF is written whatever the link state: the shell waits a bounded time for a link.
  const off = s.config.heatMode === "drying-lease"
    ? DRYING_LEASE_OFF_FRAME
    : buildDesiredStateFrame(0);
  s.lease.startedAt = null;
  s.lease.renewStartAt = null;
  step.effects.push({ type: "send", frame: off, target: 0, reason: "stop" });
  s.link.writes++;
  s.lastWriteAt = step.now;
  s.running = false;
  step.log("info", "bridge stopping: heater off", { reason, target_was: was });
  step.notify();
}

// ---------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------

/** What the device last reported about itself. */
export interface DeviceStatus {
  work_on: boolean | null;
  work_mode: number | null;
  set_temp: number | null;
  firmware: string | null;
  /** Seconds since the device last reported its settings. */
  reported_age: number | null;
}

/** The failsafe's view: is anyone in control? */
export interface FailsafeStatus {
  timeout: number;
  /** A ready controller is connected and heartbeated within the timeout. */
  controller: boolean;
  /** Seconds since the last ready heartbeat of a connected controller. */
  controller_age: number | null;
  /** Connected controller connections (ready or not). */
  controllers: number;
  /** Seconds until the failsafe turns the heat off; null while off. */
  remaining: number | null;
  tripped: boolean;
  reason: string | null;
}

/** The read-back's view. */
export interface ReadbackStatus {
  /** Seconds between read-backs; 0 = disabled. */
  interval: number;
  count: number;
  failures: number;
  corrections: number;
  /** Seconds since the last read-back finished. */
  last_age: number | null;
  last: string | null;
}

/** The drying lease's view. */
export interface LeaseStatus {
  /** Lease length in hours (`--lease-hours`). */
  hours: number;
  /** Seconds since the running lease was (re)started; null while none. */
  started_age: number | null;
  renewals: number;
  /** Heat is refused now: the device's firmware does not support the lease (or is unknown). */
  unavailable: boolean;
}

/** The bridge's status, as served on the socket API (see README). */
export interface BridgeStatus {
  connected: boolean;
  temperature: number | null;
  temperature_age: number | null;
  target: number;
  heating: boolean;
  max_target: number;
  device: DeviceStatus;
  faults: FaultName[];
  note: string | null;
  failsafe: FailsafeStatus;
  readback: ReadbackStatus;
  /** `always-on` or `drying-lease` (`--heat-mode`). */
  heat_mode: HeatMode;
  /** The drying lease (meaningful in heat mode `drying-lease`). */
  lease: LeaseStatus;
  since: { started: string; connected: string | null };
  link: {
    url: string;
    connects: number;
    drops: number;
    dropped_frames: number;
    writes: number;
    skipped_writes: number;
  };
  /** Log lines dropped because the log could not be written (e.g. a full disk). */
  log_write_failures: number;
  /** Why the device at the address cannot be driven (e.g. DragonBreath firmware), or null. */
  firmware_problem: string | null;
  bridge: string;
}

/** What only the shell knows: wall-clock times, the URL, the logger's counter. */
export interface ShellFacts {
  url: string;
  startedIso: string;
  connectedIso: string | null;
  logWriteFailures: number;
  firmwareProblem: string | null;
}

function age(now: number, at: number | null): number | null {
  return at === null ? null : Math.round((now - at) / 100) / 10;
}

/** The status at `now`: a pure function of the core state and the shell's facts. */
export function buildStatus(s: CoreState, now: number, facts: ShellFacts): BridgeStatus {
  const d = s.device;
  const temperatureAge = d.temperatureAt === null ? null : now - d.temperatureAt;
  const fresh = s.link.open && temperatureAge !== null && temperatureAge <= s.config.staleAfterMs;
  const lastReady = lastReadyHeartbeat(s);
  const deadline = failsafeDeadline(s);
  const live = Object.values(s.controllers).some((c) =>
    c.ready && c.lastReadyAt !== null && now - c.lastReadyAt <= s.config.failsafeTimeoutMs
  );
  return {
    connected: s.link.open,
    temperature: fresh ? d.temperature : null,
    temperature_age: age(now, d.temperatureAt),
    target: s.target,
    heating: s.target > 0,
    max_target: s.config.maxTarget,
    device: {
      work_on: d.workOn,
      work_mode: d.workMode,
      set_temp: d.setTemp,
      firmware: d.firmware,
      reported_age: age(now, d.reportedAt),
    },
    faults: [...s.faults],
    note: s.note,
    failsafe: {
      timeout: seconds(s.config.failsafeTimeoutMs),
      controller: live,
      controller_age: age(now, lastReady),
      controllers: Object.keys(s.controllers).length,
      remaining: deadline === null ? null : Math.max(0, Math.round((deadline - now) / 100) / 10),
      tripped: s.trip !== null,
      reason: s.trip,
    },
    readback: {
      interval: seconds(s.config.readbackIntervalMs),
      count: s.readback.count,
      failures: s.readback.failures,
      corrections: s.readback.corrections,
      last_age: age(now, s.readback.lastAt),
      last: s.readback.last,
    },
    heat_mode: s.config.heatMode,
    lease: {
      hours: s.config.leaseHours,
      started_age: age(now, s.lease.startedAt),
      renewals: s.lease.renewals,
      unavailable: leaseUnavailable(s) !== null,
    },
    since: { started: facts.startedIso, connected: s.link.open ? facts.connectedIso : null },
    link: {
      url: facts.url,
      connects: s.link.connects,
      drops: s.link.drops,
      dropped_frames: s.link.droppedFrames,
      writes: s.link.writes,
      skipped_writes: s.link.skippedWrites,
    },
    log_write_failures: facts.logWriteFailures,
    firmware_problem: facts.firmwareProblem,
    bridge: VERSION,
  };
}
