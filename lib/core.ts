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
 * - Heat mode `drying-lease` (opt-in): heat runs as a drying run of whole
 *   hours that the bridge renews at half-time (stop, gap, start, verified by
 *   read-back), so the device stops by itself when the bridge is gone; only on
 *   firmware whose connect frame supports it; every OFF leaves drying; any
 *   failure turns the heat off and refuses it (`lease_unavailable`), never a
 *   silent fallback to always-on. The procedure: docs/safety.md.
 * - Other firmware: connection attempts that fail make the shell probe what
 *   answers (at most once a probe interval); DragonBreath is recorded, shown
 *   in status and the link retries slowly.
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
  hasDryingFields,
  keepReported,
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
  /**
   * Device seconds per bridge second for the lease clock (default 1). Only for
   * tests against the simulator's `speed`, whose drying timer runs that much faster.
   */
  leaseTimeScale: number;
  /** Shortest time between two firmware probes after failed connects. */
  probeIntervalMs: number;
  /** Time between connection attempts to a device found to run other firmware. */
  foreignFirmwareRetryMs: number;
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
  leaseTimeScale: 1,
  probeIntervalMs: 60_000,
  foreignFirmwareRetryMs: 300_000,
};

/** A lease's start is verified by a read-back this long after it was sent (≥ 1 s: two slow polls). */
export const LEASE_VERIFY_DELAY_MS = 1500;

/** Slack of the `remaining_seconds` check, in bridge seconds (frame transit, a poll). */
export const LEASE_VERIFY_SLACK_S = 5;

/** Overshoot guard: a chamber this far above the target while leased... */
export const LEASE_OVERSHOOT_C = 5;

/** ...for this many device seconds without cooling means drying does not regulate. */
export const LEASE_OVERSHOOT_S = 300;

/** Consecutive failed connects (of any kind) after which the firmware is probed. */
export const CONNECT_FAILURES_BEFORE_PROBE = 3;

/** Connect failures that mean an HTTP server answered without upgrading (probe at once). */
const NOT_AN_UPGRADE = /status code|unexpected (response|status)|upgrade/i;

/**
 * Where the bridge's drying lease is: `none`; `stopping` (the stop frame was
 * sent, the start follows after the gap); `starting` (the start frame was
 * sent, its read-back verification is pending); `running` (verified).
 */
export type LeasePhase = "none" | "stopping" | "starting" | "running";

/** The drying lease's state (heat mode `drying-lease` only). */
export interface LeaseState {
  /** Where the lease is: see {@link LeasePhase}. */
  phase: LeasePhase;
  /** The target of the lease being started or run (0: none). */
  target: number;
  /** When the last start frame was sent; null if none. */
  sentAt: number | null;
  /** Phase `stopping`: when the start frame follows the stop frame. */
  startAt: number | null;
  /** Phase `starting`: when the verification read-back is due; null once it is under way. */
  verifyAt: number | null;
  /** The current stop-gap-start is a renewal (counted when its start is sent). */
  renewing: boolean;
  /** When the device last confirmed the lease (a verification or a matching connect frame). */
  verifiedAt: number | null;
  /** When the device's run ends by itself (from `remaining_seconds`, else the start). */
  endsAt: number | null;
  /** Consecutive failed verifications (one retry, then the lease is given up). */
  failures: number;
  /** Renewals sent since the bridge started. */
  renewals: number;
  /** Until then an `isrunning: 0` push is our own renewal's stop, not an end. */
  ignoreEndUntil: number | null;
  /** When `isrunning: 0` was last written (a stop, or the lease-off frame); null if never. */
  stoppedAt: number | null;
  /** Why the lease was given up for this session (heat refused); null while usable. */
  unavailable: string | null;
  /** Overshoot guard: since when, and from which reading, the chamber is above target + margin. */
  overSince: number | null;
  /** The reading when the window at `overSince` began, °C; null when not over. */
  overFrom: number | null;
}

/** The firmware probe's state (DragonBreath detection). */
export interface ProbeState {
  /** Failed connects in a row (reset when a link opens). */
  connectFailures: number;
  /** When the last probe was asked for; null if never. */
  lastAt: number | null;
  /** A probe was asked for and its answer has not come yet. */
  inFlight: boolean;
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
  /** `work_on`: the heater is switched on; null before the first report. */
  workOn: boolean | null;
  /** `work_mode` as sent; its meaning depends on the firmware ({@link modeMeaning}). */
  workMode: number | null;
  /** `set_temp`: the device's own target, °C. */
  setTemp: number | null;
  /** The firmware version string, e.g. `V1.0.3`. */
  firmware: string | null;
  /** `isrunning`: a drying run is active. */
  dryingRunning: boolean | null;
  /** `remaining_seconds`: device seconds left of the drying run (connect frames only). */
  remainingSeconds: number | null;
  /** `custom_temp`: the stored custom drying temperature, °C. */
  customTemp: number | null;
  /** `custom_timer`: the stored custom drying length, hours. */
  customTimer: number | null;
  /** The latest connect frame (or read-back) carried every drying field; null before one. */
  dryingFields: boolean | null;
  /** When a settings block (connect frame, push or read-back) last came. */
  reportedAt: number | null;
  /** The last chamber reading, °C; null before the first one. */
  temperature: number | null;
  /** When `temperature` arrived; null before the first reading. */
  temperatureAt: number | null;
}

/** The state of the main device link. */
export interface LinkState {
  /** The main WebSocket to the device is open. */
  open: boolean;
  /** When the link last opened; null if never. */
  openedAt: number | null;
  /** The first settings block on this link (the connect frame) was seen. */
  connectSeen: boolean;
  /** A settings frame was written on this link. */
  wroteSinceOpen: boolean;
  /** When the desired state is asserted if no connect frame came; null once done. */
  assertAt: number | null;
  /** Times the link opened. */
  connects: number;
  /** Times an open link went down. */
  drops: number;
  /** Device frames with unusable data (dropped whole or in part). */
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
  /** A read-back is under way (asked of the shell, no result yet). */
  inFlight: boolean;
  /** When the latest read-back was started; null if never. */
  startedAt: number | null;
  /** When the latest read-back finished; null if never. */
  lastAt: number | null;
  /** `match`, `corrected`, `stale`, `mismatch (link down)` or `failed: ...`. */
  last: string | null;
  /** Read-backs that returned a settings block (stale ones included). */
  count: number;
  /** Read-backs that returned no settings block (error, timeout). */
  failures: number;
  /** Read-backs that found a state the bridge did not choose and put it right. */
  corrections: number;
}

/** Everything the core knows. Plain data: copied, never shared. */
export interface CoreState {
  /** The fixed settings. */
  config: CoreConfig;
  /** False once the bridge is stopping: heat is refused, only OFF is written. */
  running: boolean;
  /** The desired target in °C; 0 = off. */
  target: number;
  /** When heat was switched on from 0 (request or adopted push); null while off. */
  heatOnAt: number | null;
  /** Controller connections by client label (see {@link ControllerState}). */
  controllers: Record<string, ControllerState>;
  /** Why the failsafe last turned the heat off; null once heat is requested again. */
  trip: string | null;
  /**
   * Why the state last changed without a request (button, fault, failsafe, correction); cleared by
   * the next accepted `set_target` or `off`.
   */
  note: string | null;
  /** The latched device faults; heat is refused while any is latched. */
  faults: FaultName[];
  /** What the device last reported. */
  device: DeviceState;
  /** The main device link. */
  link: LinkState;
  /** The periodic read-back. */
  readback: ReadbackState;
  /** When a settings frame was last written; null if never. */
  lastWriteAt: number | null;
  /** When a settings block last came on the main link; null if never. */
  lastLinkReportAt: number | null;
  /** The drying lease (heat mode `drying-lease`). */
  lease: LeaseState;
  /** The firmware probe after failed connects. */
  probe: ProbeState;
  /** Why the device at the address cannot be driven (e.g. DragonBreath firmware), or null. */
  firmwareProblem: string | null;
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
      remainingSeconds: null,
      customTemp: null,
      customTimer: null,
      dryingFields: null,
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
    lease: {
      phase: "none",
      target: 0,
      sentAt: null,
      startAt: null,
      verifyAt: null,
      renewing: false,
      verifiedAt: null,
      endsAt: null,
      failures: 0,
      renewals: 0,
      ignoreEndUntil: null,
      stoppedAt: null,
      unavailable: null,
      overSince: null,
      overFrom: null,
    },
    probe: { connectFailures: 0, lastAt: null, inFlight: false },
    firmwareProblem: null,
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
  | { type: "stop"; reason: string }
  | { type: "connect_failed"; reason: string }
  | { type: "firmware_probe"; problem: string | null };

/** Error codes the core replies with (a subset of the socket API's). */
export type CoreErrorCode =
  | "invalid_params"
  | "out_of_range"
  | "device_fault"
  | "lease_unavailable"
  | "unsupported_firmware"
  | "invalid_request";

/** The answer to a request event. */
export type ReplyEffect =
  | { type: "reply"; ok: true; result: Record<string, unknown> }
  | { type: "reply"; ok: false; code: CoreErrorCode; message: string };

/** What the shell must do, in this order: send, reply, notify, readback/probe/link_retry, log. */
export type Effect =
  | { type: "send"; frame: string; target: number; reason: string }
  | ReplyEffect
  | { type: "notify" }
  | { type: "readback" }
  /** Ask which firmware answers at the address (lib/firmware_probe.ts), then feed `firmware_probe`. */
  | { type: "probe" }
  /** Wait at least `floorMs` between connection attempts from now on (0: backoff alone). */
  | { type: "link_retry"; floorMs: number }
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
  /** The next state. */
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
  probe: 3,
  link_retry: 3,
  log: 4,
};

/** Sorts effects into the order the shell performs them (stable within a kind). */
export function orderEffects(effects: readonly Effect[]): Effect[] {
  if (isOrdered(effects)) return [...effects];
  return effects
    .map((effect, index) => ({ effect, index }))
    .sort((a, b) => EFFECT_ORDER[a.effect.type] - EFFECT_ORDER[b.effect.type] || a.index - b.index)
    .map(({ effect }) => effect);
}

/** Whether `effects` are already in {@link EFFECT_ORDER} (the common case: one or two effects). */
function isOrdered(effects: readonly Effect[]): boolean {
  for (let i = 1; i < effects.length; i++) {
    if (EFFECT_ORDER[effects[i - 1].type] > EFFECT_ORDER[effects[i].type]) return false;
  }
  return true;
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

/** What a device `work_mode` number means (see {@link modeMeaning}). */
export type ModeMeaning = "auto" | "always_on" | "drying" | "unknown";

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

/** The device fields that tell whether it runs a drying lease. */
export type LeaseDeviceView = Pick<
  DeviceState,
  "workOn" | "workMode" | "firmware" | "dryingRunning" | "customTemp" | "customTimer"
>;

/**
 * Whether the device's reported state is the desired `target` in heat mode
 * `drying-lease`: off is `work_on` false with no run; heat is a running
 * drying run of ours (see {@link ownLeaseRun}).
 */
export function deviceMatchesLease(
  device: LeaseDeviceView,
  target: number,
  hours: number,
): boolean {
  if (target === 0) return device.workOn === false && device.dryingRunning !== true;
  return ownLeaseRun(device, target, hours);
}

/**
 * Whether the device runs the drying run a lease of `target` °C for `hours`
 * would: on, drying mode, running, with our custom temperature and hours.
 */
export function ownLeaseRun(
  device: LeaseDeviceView,
  target: number,
  hours: number,
): boolean {
  return device.workOn === true && modeMeaning(device.workMode, device.firmware) === "drying" &&
    device.dryingRunning === true && device.customTemp === target && device.customTimer === hours;
}

function matchesDesired(s: CoreState, target: number): boolean {
  return s.config.heatMode === "drying-lease"
    ? deviceMatchesLease(s.device, target, s.config.leaseHours)
    : deviceMatches(s.device, target);
}

/** Length of one lease on the bridge's clock, in ms. */
export function leaseMs(config: CoreConfig): number {
  return config.leaseHours * 3_600_000 / config.leaseTimeScale;
}

/** Device seconds (e.g. `remaining_seconds`) on the bridge's clock, in ms. */
function deviceMs(config: CoreConfig, seconds: number): number {
  return seconds * 1000 / config.leaseTimeScale;
}

/**
 * Why the device cannot run a drying lease by what it reported (null: it
 * can): its connect frame must show a firmware of {@link DRYING_LEASE_FIRMWARE}
 * and every drying field the lease is verified by.
 */
export function leaseCapability(
  device: Pick<DeviceState, "firmware" | "dryingFields">,
): string | null {
  if (device.firmware === null || device.dryingFields === null) {
    return "the device's firmware is not known yet (no connect frame)";
  }
  if (!dryingLeaseSupported(device.firmware)) {
    return `device firmware ${device.firmware} is not one of ${DRYING_LEASE_FIRMWARE.join(", ")}`;
  }
  if (!device.dryingFields) {
    return "the device's connect frame lacks the drying fields (isrunning, remaining_seconds, " +
      "custom_temp, custom_timer), so a lease could not be verified";
  }
  return null;
}

/**
 * Why heat is refused in heat mode `drying-lease` now (the session's
 * given-up lease, or the device's capability); null when a lease can run,
 * and always null in heat mode `always-on`.
 */
export function leaseUnavailable(state: CoreState): string | null {
  if (state.config.heatMode !== "drying-lease") return null;
  const reason = state.lease.unavailable ?? leaseCapability(state.device);
  return reason === null ? null : `drying lease unavailable: ${reason}`;
}

/**
 * When the running lease is renewed: half a lease after its start, earlier if
 * the device's `remaining_seconds` says its run ends sooner; null if none.
 */
export function leaseRenewAt(state: CoreState): number | null {
  const lease = state.lease;
  if (
    state.config.heatMode !== "drying-lease" || lease.phase !== "running" ||
    lease.sentAt === null || state.target === 0
  ) return null;
  const half = leaseMs(state.config) / 2;
  const bySend = lease.sentAt + half;
  return lease.endsAt === null ? bySend : Math.min(bySend, lease.endsAt - half);
}

/**
 * What went wrong when a read-back `elapsedMs` after the start frame does
 * not show the lease of `target` °C (null: verified). `remaining_seconds`
 * must lie within `hours·3600 − elapsed − slack ..  hours·3600` device seconds.
 */
export function leaseMismatch(
  device: DeviceState,
  target: number,
  config: CoreConfig,
  elapsedMs: number,
): string | null {
  const hours = config.leaseHours;
  const problems: string[] = [];
  if (device.workOn !== true) problems.push("work_on is not on");
  if (modeMeaning(device.workMode, device.firmware) !== "drying") {
    problems.push(`work_mode ${device.workMode ?? "?"} is not drying`);
  }
  if (device.dryingRunning !== true) problems.push("isrunning is not 1");
  if (device.customTemp !== target) {
    problems.push(`custom_temp ${device.customTemp ?? "?"} is not ${target}`);
  }
  if (device.customTimer !== hours) {
    problems.push(`custom_timer ${device.customTimer ?? "?"} is not ${hours}`);
  }
  const full = hours * 3600;
  const scale = config.leaseTimeScale;
  const lowest = full - (elapsedMs / 1000) * scale - LEASE_VERIFY_SLACK_S * scale;
  const remaining = device.remainingSeconds;
  if (remaining === null || remaining > full || remaining < lowest) {
    problems.push(
      `remaining_seconds ${remaining ?? "?"} is outside ${
        Math.max(0, Math.floor(lowest))
      }..${full}`,
    );
  }
  return problems.length === 0 ? null : problems.join(", ");
}

/** Every kind of device push in heat mode `drying-lease`. */
export type LeasePushKind =
  | Exclude<PushKind, "drying_end">
  | "own_lease"
  | "own_renewal_stop"
  | "lease_ended"
  | "drying_end";

/** What the bridge does with a push in heat mode `drying-lease`. */
export type LeasePushRule = PushRule | { action: "keep"; why: string };

/**
 * The lease variant of {@link PUSH_POLICY}: a push showing our own lease (or
 * our own renewal's stop) is fine; a lease that ended unrenewed while heat is
 * wanted, a button off, a fault or a drying end are adopted as 0 (and the
 * device leaves drying); everything else, including always-on pressed, is
 * enforced at once.
 */
export const LEASE_PUSH_POLICY: Readonly<Record<LeasePushKind, LeasePushRule>> = {
  own_lease: { action: "keep", why: "our own drying lease is running" },
  own_renewal_stop: { action: "keep", why: "our own lease renewal stopped the run" },
  lease_ended: {
    action: "adopt",
    target: "off",
    why: "drying lease ended at the device without a renewal (bridge late or stopped?)",
  },
  off: PUSH_POLICY.off,
  fault: PUSH_POLICY.fault,
  drying_end: PUSH_POLICY.drying_end,
  always_on: { action: "enforce", why: "the bridge heats through a drying lease, not always-on" },
  always_on_out_of_range: PUSH_POLICY.always_on_out_of_range,
  auto: PUSH_POLICY.auto,
  drying: { action: "enforce", why: "a drying run that is not the bridge's lease" },
  unknown_mode: PUSH_POLICY.unknown_mode,
  on_while_faulted: PUSH_POLICY.on_while_faulted,
};

/** Classifies a push in heat mode `drying-lease` (see {@link LEASE_PUSH_POLICY}). */
export function classifyLeasePush(state: CoreState, now: number): LeasePushKind {
  const d = state.device;
  const lease = state.lease;
  const kind = classifyPush(d, state.faults, state.config.maxTarget);
  const ours = state.target > 0 && lease.target === state.target &&
    lease.phase !== "none";
  if (kind === "drying" && ours && ownLeaseRun(d, state.target, state.config.leaseHours)) {
    return "own_lease";
  }
  if (kind === "drying_end") {
    if (
      ours && (lease.phase === "stopping" ||
        (lease.ignoreEndUntil !== null && now <= lease.ignoreEndUntil))
    ) return "own_renewal_stop";
    if (ours && lease.phase === "running") return "lease_ended";
  }
  return kind;
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

/** How each {@link ModeMeaning} is written for people (logs, `panda-breath doctor`). */
export const MODE_NAMES: Readonly<Record<ModeMeaning, string>> = {
  auto: "auto",
  always_on: "always-on",
  drying: "drying",
  unknown: "unknown",
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

  /** Emits one settings frame and counts it as a write. */
  write(frame: string, target: number, reason: string): void {
    const s = this.s;
    this.effects.push({ type: "send", frame, target, reason });
    s.link.writes++;
    s.link.wroteSinceOpen = true;
    s.lastWriteAt = this.now;
  }

  /**
   * Writes the desired state, if the link is open (a link that opens later
   * compares and asserts it). While a fault is latched only OFF is written.
   * In heat mode `drying-lease` heat is (re)started as a lease, and OFF is
   * always {@link DRYING_LEASE_OFF_FRAME}, which leaves drying.
   */
  sendDesired(reason: string): boolean {
    const s = this.s;
    if (!s.link.open || !s.running) return false;
    const target = s.faults.length > 0 ? 0 : s.target;
    if (s.config.heatMode !== "drying-lease") {
      this.write(buildDesiredStateFrame(target), target, reason);
      return true;
    }
    if (target === 0 || leaseUnavailable(s) !== null) {
      this.write(DRYING_LEASE_OFF_FRAME, 0, reason);
      endLease(s, this.now);
      return true;
    }
    beginLease(this, target, reason, false);
    return true;
  }

  /** Changes the desired target; heat switched on from 0 starts the failsafe clock. */
  setTarget(target: number, why: string): void {
    const s = this.s;
    const previous = s.target;
    s.target = target;
    if (target === 0) s.heatOnAt = null;
    else if (previous === 0) s.heatOnAt = this.now;
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
 * A copy of `state` that shares no object with it: {@link decide} copies
 * the state on every event, device frames included, so this spreads each
 * part by hand (every field below `CoreState` is a primitive, except the
 * controllers and the faults list). `structuredClone` or a generic deep copy
 * was most of the bridge's own CPU time at 2 Hz.
 */
export function copyState(state: CoreState): CoreState {
  const controllers: Record<string, ControllerState> = {};
  for (const client of Object.keys(state.controllers)) {
    controllers[client] = { ...state.controllers[client] };
  }
  return {
    ...state,
    config: { ...state.config },
    controllers,
    faults: [...state.faults],
    device: { ...state.device },
    link: { ...state.link },
    readback: { ...state.readback },
    lease: { ...state.lease },
    probe: { ...state.probe },
  };
}

/**
 * The core: applies `event` at time `now` (monotonic milliseconds) to
 * `state`. Pure: `state` is not modified; the result holds a new state.
 */
export function decide(state: CoreState, event: CoreEvent, now: number): Decision {
  const step = new Step(copyState(state), now);
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

/** One kind of {@link CoreEvent}. */
type EventOf<T extends CoreEvent["type"]> = Extract<CoreEvent, { type: T }>;

/** What the core does with each kind of event. */
const HANDLERS: { [T in CoreEvent["type"]]: (step: Step, event: EventOf<T>) => void } = {
  link_open: onLinkOpen,
  frame: onFrame,
  link_down: onLinkDown,
  hello: onHello,
  set_target: onSetTarget,
  off: (step, { client }) => onSetTarget(step, { client, value: 0 }),
  heartbeat: onHeartbeat,
  controller_gone: onControllerGone,
  readback: onReadback,
  tick: () => {},
  stop: onStop,
  connect_failed: onConnectFailed,
  firmware_probe: onFirmwareProbe,
};

function handle(step: Step, event: CoreEvent): void {
  (HANDLERS[event.type] as (step: Step, event: CoreEvent) => void)(step, event);
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

// --- drying lease -----------------------------------------------------------

/** The OFF frame of a heat mode: in `drying-lease`, one that also leaves drying. */
export function offFrame(config: Pick<CoreConfig, "heatMode">): string {
  return config.heatMode === "drying-lease" ? DRYING_LEASE_OFF_FRAME : buildDesiredStateFrame(0);
}

/** Forgets the lease after the lease-off frame was written (it stopped any run). */
function endLease(s: CoreState, now: number): void {
  const lease = s.lease;
  lease.phase = "none";
  lease.target = 0;
  lease.sentAt = null;
  lease.startAt = null;
  lease.verifyAt = null;
  lease.renewing = false;
  lease.endsAt = null;
  lease.failures = 0;
  lease.ignoreEndUntil = null;
  lease.stoppedAt = now;
  lease.overSince = null;
  lease.overFrom = null;
}

/** Whether the device may have a run going (a start of ours, or one it reported since our last stop). */
function runMayBeActive(s: CoreState): boolean {
  const lease = s.lease;
  if (lease.phase === "starting" || lease.phase === "running") return true;
  const d = s.device;
  return d.dryingRunning === true &&
    (lease.stoppedAt === null || (d.reportedAt !== null && d.reportedAt > lease.stoppedAt));
}

/**
 * (Re)starts a lease of `target` °C: at once when no run can be active, else
 * stop, gap of {@link DRYING_RENEWAL_GAP_MS}, start (a start sent onto a
 * running run may neither restart its timer nor take the new values). A
 * renewal stops with {@link DRYING_STOP_FRAME}; any other restart with
 * {@link DRYING_LEASE_OFF_FRAME}, so nothing heats in another mode during the gap.
 */
function beginLease(step: Step, target: number, reason: string, renewal: boolean): void {
  const s = step.s;
  const lease = s.lease;
  lease.target = target;
  lease.overSince = null;
  lease.overFrom = null;
  // Link down: the next connect frame is compared and the lease (re)started from there.
  if (!s.link.open || !s.running) return;
  if (lease.phase === "stopping") {
    if (!renewal) lease.renewing = false;
    return; // the start follows at startAt, with the current target
  }
  lease.renewing = renewal;
  const sinceStop = lease.stoppedAt === null ? Infinity : step.now - lease.stoppedAt;
  if (runMayBeActive(s) || sinceStop < DRYING_RENEWAL_GAP_MS) {
    if (runMayBeActive(s)) {
      step.write(renewal ? DRYING_STOP_FRAME : DRYING_LEASE_OFF_FRAME, target, `${reason} (stop)`);
      lease.stoppedAt = step.now;
    }
    lease.phase = "stopping";
    lease.startAt = lease.stoppedAt! + DRYING_RENEWAL_GAP_MS;
    lease.verifyAt = null;
    lease.ignoreEndUntil = lease.startAt + DRYING_RENEWAL_GAP_MS;
    return;
  }
  sendLeaseStart(step, reason);
}

/** Sends the lease's start frame; a read-back verifies it {@link LEASE_VERIFY_DELAY_MS} later. */
function sendLeaseStart(step: Step, reason: string): void {
  const s = step.s;
  const lease = s.lease;
  step.write(buildDryingLeaseFrame(lease.target, s.config.leaseHours), lease.target, reason);
  if (lease.renewing) {
    lease.renewals++;
    step.log("info", "drying lease renewed", {
      target: lease.target,
      hours: s.config.leaseHours,
      renewals: lease.renewals,
    });
  }
  lease.renewing = false;
  lease.phase = "starting";
  lease.sentAt = step.now;
  lease.startAt = null;
  lease.verifyAt = step.now + LEASE_VERIFY_DELAY_MS;
  lease.endsAt = step.now + leaseMs(s.config);
  step.notify();
}

/** The device confirmed the lease: renewals are timed from what it reported. */
function confirmLease(step: Step, message: string): void {
  const s = step.s;
  const lease = s.lease;
  const remaining = s.device.remainingSeconds ?? 0;
  lease.phase = "running";
  lease.verifiedAt = step.now;
  lease.failures = 0;
  lease.endsAt = step.now + deviceMs(s.config, remaining);
  step.log("info", message, { target: lease.target, remaining_s: remaining });
  step.notify();
}

/** A verification failed: retried once (restart, or read again), then the lease is given up. */
function verificationFailed(step: Step, problem: string, restart: boolean): void {
  const s = step.s;
  const lease = s.lease;
  lease.failures++;
  if (lease.failures >= 2) {
    giveUpLease(step, `the device did not confirm the drying lease twice in a row (${problem})`);
    return;
  }
  step.log("warn", "drying lease not confirmed by read-back; retrying once", { problem });
  if (restart) beginLease(step, lease.target, "lease retry", false);
  else lease.verifyAt = step.now + LEASE_VERIFY_DELAY_MS;
}

/**
 * Gives the lease up for the session: heater off (leaving drying), heat
 * refused with `lease_unavailable` — never a silent switch to always-on.
 */
function giveUpLease(step: Step, reason: string): void {
  const s = step.s;
  const was = s.target;
  s.lease.unavailable = reason;
  s.note = `drying lease unavailable: ${reason}; heater off, heat refused until the bridge ` +
    "restarts (or run it with --heat-mode always-on)";
  if (was > 0) step.setTarget(0, "drying lease unavailable");
  step.sendDesired("drying lease unavailable");
  step.log("error", s.note, { target_was: was });
  step.notify();
}

/** The device's run ended while heat was wanted and no renewal was under way: adopt 0, loudly. */
function leaseEnded(step: Step): void {
  const s = step.s;
  const was = s.target;
  s.note = `drying lease ended at the device without a renewal (bridge late or stopped?); ` +
    `heater off, target ${was} °C dropped to 0: set it again`;
  step.setTarget(0, "drying lease ended");
  step.sendDesired("drying lease ended");
  step.log("error", s.note, { target_was: was });
}

/**
 * The lease's timers: the start after a stop's gap, the verification
 * read-back, the renewal at half-time, and the overshoot guard.
 */
function checkLease(step: Step): void {
  const s = step.s;
  const lease = s.lease;
  if (s.config.heatMode !== "drying-lease" || !s.running || !s.link.open) return;
  // On a new link, nothing is timed until the connect frame was compared (or the state asserted).
  if (!s.link.connectSeen && !s.link.wroteSinceOpen) return;
  if (lease.phase === "stopping" && lease.startAt !== null && step.now >= lease.startAt) {
    if (s.target > 0 && s.faults.length === 0 && leaseUnavailable(s) === null) {
      lease.target = s.target;
      sendLeaseStart(step, lease.renewing ? "lease renewal" : "lease start");
    } else {
      // Heat is no longer wanted: whatever turned it off wrote (or will assert) the OFF.
      lease.phase = "none";
      lease.startAt = null;
      lease.renewing = false;
    }
  }
  if (
    lease.phase === "starting" && lease.verifyAt !== null && step.now >= lease.verifyAt &&
    !s.readback.inFlight
  ) {
    lease.verifyAt = null;
    startReadback(step);
  }
  const renewAt = leaseRenewAt(s);
  if (renewAt !== null && step.now >= renewAt) {
    beginLease(step, s.target, "lease renewal", true);
  }
  checkOvershoot(step);
}

/**
 * The overshoot guard (drying may not regulate): a chamber more than
 * {@link LEASE_OVERSHOOT_C} above the target that does not cool for
 * {@link LEASE_OVERSHOOT_S} device seconds while leased gives the lease up.
 */
function checkOvershoot(step: Step): void {
  const s = step.s;
  const lease = s.lease;
  const d = s.device;
  const leased = s.target > 0 && (lease.phase === "starting" || lease.phase === "running");
  const fresh = d.temperature !== null && d.temperatureAt !== null &&
    step.now - d.temperatureAt <= s.config.staleAfterMs;
  if (!leased || !fresh || d.temperature! <= s.target + LEASE_OVERSHOOT_C) {
    lease.overSince = null;
    lease.overFrom = null;
    return;
  }
  const t = d.temperature!;
  if (lease.overSince === null || lease.overFrom === null) {
    lease.overSince = step.now;
    lease.overFrom = t;
    return;
  }
  if (step.now - lease.overSince < deviceMs(s.config, LEASE_OVERSHOOT_S)) return;
  if (t < lease.overFrom) {
    // Cooling (e.g. the target was lowered): watch the next window.
    lease.overSince = step.now;
    lease.overFrom = t;
    return;
  }
  giveUpLease(
    step,
    `the chamber stayed above the target ${s.target} °C + ${LEASE_OVERSHOOT_C} °C without ` +
      `cooling (${lease.overFrom} -> ${t} °C over ${LEASE_OVERSHOOT_S / 60} min): drying ` +
      "does not regulate on this device",
  );
}

/** Starts a read-back (one at a time, link up only). */
function startReadback(step: Step): void {
  const rb = step.s.readback;
  rb.inFlight = true;
  rb.startedAt = step.now;
  rb.dueAt = null;
  step.effects.push({ type: "readback" });
}

function checkReadback(step: Step): void {
  const s = step.s;
  const rb = s.readback;
  if (!s.running || !s.link.open || rb.inFlight || rb.dueAt === null || step.now < rb.dueAt) {
    return;
  }
  startReadback(step);
}

function nextWake(s: CoreState): number | null {
  let due = failsafeDeadline(s);
  if (s.link.open && !s.link.connectSeen) due = earlier(due, s.link.assertAt);
  if (s.running && s.link.open && !s.readback.inFlight) due = earlier(due, s.readback.dueAt);
  if (s.running && s.link.open && s.config.heatMode === "drying-lease") {
    const lease = s.lease;
    if (lease.phase === "stopping") due = earlier(due, lease.startAt);
    if (lease.phase === "starting" && !s.readback.inFlight) due = earlier(due, lease.verifyAt);
    due = earlier(due, leaseRenewAt(s));
  }
  return due;
}

/** The earlier of two optional times (null: none). */
function earlier(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  return b === null ? a : Math.min(a, b);
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
  s.probe.connectFailures = 0;
  step.log("info", "device connected", { target: s.target });
  if (s.firmwareProblem !== null) {
    s.firmwareProblem = null;
    step.effects.push({ type: "link_retry", floorMs: 0 });
    step.log("info", "the device speaks the stock protocol again");
  }
  step.notify();
}

// --- other firmware (DragonBreath) ------------------------------------------

/**
 * A connection attempt failed before the WebSocket opened. An HTTP answer
 * that is not an upgrade (or several failures in a row) asks the shell to
 * probe which firmware answers — at most once per probe interval.
 */
function onConnectFailed(step: Step, { reason }: EventOf<"connect_failed">): void {
  const s = step.s;
  const probe = s.probe;
  probe.connectFailures++;
  if (!s.running || probe.inFlight) return;
  if (!NOT_AN_UPGRADE.test(reason) && probe.connectFailures < CONNECT_FAILURES_BEFORE_PROBE) return;
  if (probe.lastAt !== null && step.now - probe.lastAt < s.config.probeIntervalMs) return;
  probe.lastAt = step.now;
  probe.inFlight = true;
  step.effects.push({ type: "probe" });
}

/**
 * The probe's answer: `problem` is the one clear error for a firmware the
 * bridge cannot drive (lib/firmware_probe.ts, firmwareProblem), or null. It
 * is logged once, shown in status, and the link retries only slowly.
 */
function onFirmwareProbe(step: Step, { problem }: EventOf<"firmware_probe">): void {
  const s = step.s;
  s.probe.inFlight = false;
  if (!s.running || s.link.open || problem === null || problem === s.firmwareProblem) return;
  s.firmwareProblem = problem;
  step.effects.push({ type: "link_retry", floorMs: s.config.foreignFirmwareRetryMs });
  step.log("error", problem, { retry_every_s: seconds(s.config.foreignFirmwareRetryMs) });
  // A stock firmware flashed back later must not start heating by surprise.
  if (s.target > 0) step.trip("the device runs firmware the bridge cannot drive");
  step.notify();
}

function onLinkDown(step: Step, { reason }: EventOf<"link_down">): void {
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

/** What the core keeps of every settings report (see {@link keepReported}). */
const KEPT_SETTINGS = [
  "workOn",
  "workMode",
  "setTemp",
  "firmware",
  "dryingRunning",
  "remainingSeconds",
  "customTemp",
  "customTimer",
] as const;

function recordSettings(s: CoreState, report: DeviceReport, now: number): void {
  keepReported(s.device, report, KEPT_SETTINGS);
  if (report.isSettingsBlock) s.device.reportedAt = now;
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

function onFrame(step: Step, { report, dropped }: EventOf<"frame">): void {
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
    // A lease is judged by connect frames (and read-backs): they carry every field.
    s.device.dryingFields = hasDryingFields(report);
    if (s.config.heatMode === "drying-lease") onLeaseConnectFrame(step, interlocked);
    else onConnectFrame(step, interlocked);
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

/** The log fields of a push: what it was, what the policy did, what the device said. */
function pushFields(
  push: string,
  policy: string,
  d: DeviceState,
  more: Record<string, unknown>,
): Record<string, unknown> {
  return { push, policy, device_work_on: d.workOn, device_work_mode: d.workMode, ...more };
}

function onPush(step: Step): void {
  const s = step.s;
  const d = s.device;
  if (s.config.heatMode === "drying-lease") return onLeasePush(step);
  const kind = classifyPush(d, s.faults, s.config.maxTarget);
  const rule = PUSH_POLICY[kind];
  const fields = pushFields(kind, rule.action, d, { device_set_temp: d.setTemp });
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
  enforcePush(step, kind, fields);
}

/** Enforce now: the desired state is sent at once, with a note saying what was overridden. */
function enforcePush(step: Step, kind: PushKind, fields: Record<string, unknown>): void {
  const s = step.s;
  const d = s.device;
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
 * A push in heat mode `drying-lease`, by {@link LEASE_PUSH_POLICY}: our own
 * lease or renewal stop is kept; an unrenewed end while heat is wanted is
 * adopted as 0, loudly; other adopted OFFs leave drying
 * ({@link DRYING_LEASE_OFF_FRAME}, so a paused run is never left behind);
 * everything else is enforced at once.
 */
function onLeasePush(step: Step): void {
  const s = step.s;
  const d = s.device;
  const kind = classifyLeasePush(s, step.now);
  const rule = LEASE_PUSH_POLICY[kind];
  const fields = pushFields(kind, rule.action, d, { device_running: d.dryingRunning });
  if (rule.action === "keep") {
    step.log("debug", `device push: ${rule.why}`, fields);
    return;
  }
  if (kind === "lease_ended") return leaseEnded(step);
  if (rule.action === "adopt") {
    const was = s.target;
    if (was !== 0) {
      s.note = kind === "fault"
        ? `device switched the heater off: fault ${s.faults.join(", ")}`
        : rule.why;
      step.setTarget(0, `device push (${kind})`);
      step.log("warn", s.note, { ...fields, target: 0 });
    } else {
      step.log("debug", `device push: ${rule.why}`, { ...fields, target: 0 });
    }
    // Every OFF leaves drying; a fault (its interlock already dropped the target) too.
    if (was !== 0 || kind === "fault" || !deviceMatchesLease(d, 0, s.config.leaseHours)) {
      step.sendDesired(`device push (${kind})`);
    }
    return;
  }
  enforcePush(step, kind as PushKind, fields);
}

/** Compare before writing, in heat mode `drying-lease` (see docs/safety.md). */
function onLeaseConnectFrame(step: Step, interlocked: boolean): void {
  const s = step.s;
  const d = s.device;
  const lease = s.lease;
  const hours = s.config.leaseHours;
  const fields = {
    device_work_on: d.workOn,
    device_work_mode: d.workMode,
    device_running: d.dryingRunning,
    device_remaining_s: d.remainingSeconds,
    lease: lease.phase,
    target: s.target,
  };
  const refusal = leaseUnavailable(s);
  if (s.target > 0 && refusal !== null) {
    const was = s.target;
    s.note = `${refusal}; heater off, target ${was} °C dropped to 0`;
    step.setTarget(0, "drying lease unavailable");
    step.log("error", s.note, fields);
  }
  if (s.link.wroteSinceOpen && !interlocked) {
    step.log("debug", "connect frame predates a write on this link", fields);
    return;
  }
  if (s.target === 0) {
    if (deviceMatchesLease(d, 0, hours)) {
      s.link.skippedWrites++;
      step.log(
        "info",
        "device state matches the desired state on connect; nothing written",
        fields,
      );
    } else {
      step.sendDesired("connect");
      step.log("info", "device state differs from desired state on connect; asserting", fields);
    }
    return;
  }
  const remaining = d.remainingSeconds ?? 0;
  if (
    lease.phase !== "stopping" && ownLeaseRun(d, s.target, hours) && remaining > 0 &&
    remaining <= hours * 3600
  ) {
    // Our lease survived the link's absence: nothing rewritten, renewals timed from the device.
    s.link.skippedWrites++;
    lease.target = s.target;
    lease.sentAt = step.now - deviceMs(s.config, hours * 3600 - remaining);
    confirmLease(step, "device runs our drying lease on connect; nothing written");
    return;
  }
  if (lease.phase === "running" && d.dryingRunning !== true) return leaseEnded(step);
  if (lease.phase === "stopping" && d.dryingRunning !== true) {
    step.log("debug", "connect frame during a lease restart; the start follows", fields);
    return;
  }
  if (lease.phase === "stopping") lease.phase = "none"; // the stop was lost: stop again
  step.sendDesired("connect");
  step.log("info", "device state differs from desired state on connect; asserting", fields);
}

// --- requests -------------------------------------------------------------

function clientName(s: CoreState, client: string): string {
  const name = s.controllers[client]?.name;
  return name ? `${client} (${name})` : client;
}

function onHello(step: Step, { client, params }: EventOf<"hello">): void {
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

function onSetTarget(step: Step, { client, value }: { client: string; value: unknown }): void {
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
  if (check.target > 0 && s.firmwareProblem !== null) {
    step.refuse("unsupported_firmware", `${s.firmwareProblem}; heat is refused`);
    step.log("warn", "refused heat: the device runs firmware the bridge cannot drive", {
      client: clientName(s, client),
      target: check.target,
    });
    return;
  }
  const unavailable = check.target > 0 ? leaseUnavailable(s) : null;
  if (unavailable !== null) {
    step.refuse(
      "lease_unavailable",
      `${unavailable}; heat is refused (the bridge never falls back to always-on by itself: ` +
        "run it with --heat-mode always-on to heat without the lease)",
    );
    step.log("warn", "refused heat: drying lease unavailable", {
      client: clientName(s, client),
      target: check.target,
      firmware: s.device.firmware,
    });
    return;
  }
  s.trip = null;
  s.note = null;
  const lease = s.lease;
  const leased = s.config.heatMode === "drying-lease" && check.target > 0 &&
    check.target === s.target && lease.target === s.target && lease.phase !== "none";
  step.setTarget(check.target, `requested by ${clientName(s, client)}`);
  if (leased) {
    // The same heat again: the lease already running (or starting) is that; no flash rewrite.
    step.reply({ target: check.target });
    return;
  }
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

function onHeartbeat(step: Step, { client, ready }: EventOf<"heartbeat">): void {
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

function onControllerGone(step: Step, { client }: EventOf<"controller_gone">): void {
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

function onReadback(step: Step, { report, error }: EventOf<"readback">): void {
  const s = step.s;
  const rb = s.readback;
  const startedAt = rb.startedAt ?? step.now;
  rb.inFlight = false;
  rb.lastAt = step.now;
  rb.dueAt = s.link.open && s.config.readbackIntervalMs > 0
    ? step.now + s.config.readbackIntervalMs
    : null;
  step.notify();
  const lease = s.lease;
  const leaseMode = s.config.heatMode === "drying-lease";
  // The verification read-back of a lease start: the one started after verifyAt.
  const verifying = leaseMode && lease.phase === "starting" && lease.verifyAt === null &&
    lease.sentAt !== null && startedAt - lease.sentAt >= 1000;
  if (!report || !report.isSettingsBlock) {
    const reason = error ?? "no settings in the connect frame";
    rb.failures++;
    rb.last = `failed: ${reason}`;
    step.log("warn", "read-back failed", { reason }, {
      key: "readback-failed",
      intervalMs: 600_000,
    });
    if (verifying) verificationFailed(step, `read-back failed: ${reason}`, false);
    return;
  }
  rb.count++;
  // What was written or reported on the main link since the read-back began is newer.
  const newer = (at: number | null) => at !== null && at >= startedAt;
  if (newer(s.lastWriteAt) || newer(s.lastLinkReportAt)) {
    rb.last = "stale";
    step.log("debug", "read-back predates a newer write or report; ignored");
    if (verifying) lease.verifyAt = step.now + LEASE_VERIFY_DELAY_MS; // read again, unhurried
    return;
  }
  recordSettings(s, report, step.now);
  if (leaseMode) s.device.dryingFields = hasDryingFields(report);
  applyFaults(step, report, true);
  if (leaseMode && onLeaseReadback(step, verifying)) return;
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

/**
 * A read-back in heat mode `drying-lease` while a lease is wanted; returns
 * whether it was handled (else the generic comparison runs). It verifies a
 * start (retry once, then give up), re-times renewals from the device's
 * `remaining_seconds`, adopts an unrenewed end as 0, and restarts a lease
 * another client changed.
 */
function onLeaseReadback(step: Step, verifying: boolean): boolean {
  const s = step.s;
  const d = s.device;
  const lease = s.lease;
  const rb = s.readback;
  const refusal = leaseUnavailable(s);
  if (refusal !== null && s.target > 0) {
    const was = s.target;
    s.note = `${refusal}; heater off, target ${was} °C dropped to 0`;
    step.setTarget(0, "drying lease unavailable");
    step.sendDesired("drying lease unavailable");
    step.log("error", s.note, {});
    return true;
  }
  if (s.target === 0 || lease.phase === "none") return false;
  if (lease.phase === "stopping") {
    rb.last = "lease restart in progress";
    return true;
  }
  if (lease.phase === "starting") {
    if (!verifying) {
      rb.last = "before the lease's verification";
      return true;
    }
    const mismatch = leaseMismatch(d, lease.target, s.config, step.now - lease.sentAt!);
    if (mismatch === null) {
      rb.last = "lease verified";
      confirmLease(step, "drying lease verified by read-back");
    } else {
      rb.last = `lease not confirmed: ${mismatch}`;
      verificationFailed(step, mismatch, true);
    }
    return true;
  }
  const remaining = d.remainingSeconds ?? 0;
  const hours = s.config.leaseHours;
  if (ownLeaseRun(d, s.target, hours) && remaining > 0 && remaining <= hours * 3600) {
    rb.last = "match";
    confirmLease(step, "read-back: our drying lease is running");
    return true;
  }
  if (d.workOn === true && modeMeaning(d.workMode, d.firmware) === "drying" && !d.dryingRunning) {
    rb.last = "lease ended";
    leaseEnded(step);
    return true;
  }
  rb.corrections++;
  rb.last = "corrected";
  s.note = `device state was changed outside the bridge (another client?); the bridge ` +
    `restarted its drying lease (${s.target} °C)`;
  step.log("warn", "read-back: the drying lease was changed by another client?; restarting it", {
    device_work_on: d.workOn,
    device_work_mode: d.workMode,
    device_running: d.dryingRunning,
    device_custom_temp: d.customTemp,
    device_custom_timer: d.customTimer,
    device_remaining_s: d.remainingSeconds,
  });
  beginLease(step, s.target, "read-back", false);
  return true;
}

// --- stop -----------------------------------------------------------------

function onStop(step: Step, { reason }: EventOf<"stop">): void {
  const s = step.s;
  if (!s.running) return;
  const was = s.target;
  s.target = 0;
  s.heatOnAt = null;
  s.note = `bridge stopped: ${reason}`;
  s.readback.dueAt = null;
  // OFF is written whatever the link state: the shell waits a bounded time for a link.
  step.effects.push({ type: "send", frame: offFrame(s.config), target: 0, reason: "stop" });
  if (s.config.heatMode === "drying-lease") endLease(s, step.now);
  s.link.writes++;
  s.lastWriteAt = step.now;
  s.running = false;
  step.log("info", "bridge stopping: heater off", { reason, target_was: was });
  step.notify();
}
