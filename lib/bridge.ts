/**
 * The bridge's thin shell: owns the device link, the read-back, the timer
 * and the status listeners; turns what happens into events for the pure
 * decision core (lib/core.ts) and performs the effects it returns, in this
 * order: sends to the device first, then replies and status notifications,
 * then the read-back, then log lines. Nothing that actuates the heater
 * depends on logging, and the logger never throws.
 *
 * @module
 */

import type { BackoffOptions } from "./backoff.ts";
import {
  CORE_DEFAULTS,
  type CoreErrorCode,
  type CoreEvent,
  type CoreState,
  decide,
  type Effect,
  type HeatMode,
  initialState,
  offFrame,
  type ReplyEffect,
} from "./core.ts";
import { DeviceLink, type LinkTimings } from "./device_link.ts";
import { type FirmwareProbe, firmwareProblem, probeFirmware } from "./firmware_probe.ts";
import { isoTime } from "./iso_time.ts";
import type { Logger } from "./log.ts";
import { KEEPALIVE_FRAME, parseDeviceFrame } from "./protocol.ts";
import { readBack, READBACK_TIMEOUT_MS, type ReadbackResult } from "./readback.ts";

import { type BridgeStatus, buildStatus } from "./status.ts";

export type { BridgeStatus, DeviceStatus, FailsafeStatus, ReadbackStatus } from "./status.ts";

/** Settings of a {@link Bridge}; an unset core setting takes its {@link CORE_DEFAULTS} value. */
export interface BridgeOptions {
  /** Device WebSocket URL, e.g. `ws://PandaBreath.local:80/ws`. */
  url: string;
  /** Where the bridge logs. */
  logger: Logger;
  /** Heat is switched off when no ready controller heartbeated for this long. */
  failsafeTimeoutMs?: number;
  /** Highest target accepted, in °C. */
  maxTarget?: number;
  /** A temperature older than this is reported as unknown. */
  staleAfterMs?: number;
  /** The desired state is asserted this long after connecting if no connect frame came. */
  connectAssertMs?: number;
  /** Period of the read-back; 0 disables it. */
  readbackIntervalMs?: number;
  /** `always-on` (default) or `drying-lease` (see lib/core.ts). */
  heatMode?: HeatMode;
  /** Drying lease length in whole hours, 1-12 (default 1). */
  leaseHours?: number;
  /** Device seconds per bridge second for the lease clock (tests with the simulator's speed). */
  leaseTimeScale?: number;
  /** Bound on one read-back's wait for its connect frame. */
  readbackTimeoutMs?: number;
  /** Overrides of the device link's timings (lib/device_link.ts). */
  linkTimings?: Partial<LinkTimings>;
  /** The device link's reconnect backoff. */
  backoff?: BackoffOptions;
  /** Shortest time between two firmware probes after failed connects. */
  probeIntervalMs?: number;
  /** Time between connection attempts to a device found to run other firmware. */
  foreignFirmwareRetryMs?: number;
  /** Tells which firmware answers at the device's address (tests may replace it). */
  probe?: (address: string) => Promise<FirmwareProbe>;
}

/** Who asked for a change, for the failsafe and the log. */
export interface RequestSource {
  /** A short label for the log, e.g. `socket#3`; also the controller's identity. */
  client: string;
}

/** A target request's outcome, as the socket API answers it. */
export type TargetResult =
  | { ok: true; target: number }
  | { ok: false; code: CoreErrorCode; message: string };

/** Called with the reply to a request, after the sends and before notifications and logs. */
export type Respond = (reply: ReplyEffect) => void;

/**
 * The bridge: a device link, a read-back, a timer and listeners around the
 * decision core. The desired state (off, or on at a target) and every
 * policy live in the core; this class only does what the core says.
 */
export class Bridge {
  #logger: Logger;
  #link: DeviceLink;
  #state: CoreState;
  #readbackTimeoutMs: number;
  #startedIso = isoTime();
  #connectedIso: string | null = null;
  #listeners = new Set<(status: BridgeStatus) => void>();
  #wake: ReturnType<typeof setTimeout> | undefined;
  /** When the armed {@link #wake} timer fires. */
  #wakeArmedFor: number | null = null;
  #readback: Promise<void> | null = null;
  #started = false;
  /** Nesting of {@link #dispatch} (a send that fails reports the link down at once). */
  #depth = 0;
  /** The wake-up time of the latest decision. */
  #wakeAt: number | null = null;
  #probe: (address: string) => Promise<FirmwareProbe>;

  /** A bridge to the device at `options.url`; call {@link start}. */
  constructor(options: BridgeOptions) {
    this.#logger = options.logger;
    this.#readbackTimeoutMs = options.readbackTimeoutMs ?? READBACK_TIMEOUT_MS;
    this.#probe = options.probe ?? probeFirmware;
    this.#state = initialState({
      failsafeTimeoutMs: options.failsafeTimeoutMs ?? CORE_DEFAULTS.failsafeTimeoutMs,
      maxTarget: options.maxTarget ?? CORE_DEFAULTS.maxTarget,
      staleAfterMs: options.staleAfterMs ?? CORE_DEFAULTS.staleAfterMs,
      connectAssertMs: options.connectAssertMs ?? CORE_DEFAULTS.connectAssertMs,
      readbackIntervalMs: options.readbackIntervalMs ?? CORE_DEFAULTS.readbackIntervalMs,
      heatMode: options.heatMode ?? CORE_DEFAULTS.heatMode,
      leaseHours: options.leaseHours ?? CORE_DEFAULTS.leaseHours,
      leaseTimeScale: options.leaseTimeScale ?? CORE_DEFAULTS.leaseTimeScale,
      probeIntervalMs: options.probeIntervalMs ?? CORE_DEFAULTS.probeIntervalMs,
      foreignFirmwareRetryMs: options.foreignFirmwareRetryMs ??
        CORE_DEFAULTS.foreignFirmwareRetryMs,
    });
    this.#link = new DeviceLink({
      url: options.url,
      logger: options.logger,
      timings: options.linkTimings,
      backoff: options.backoff,
      handlers: {
        onOpen: () => {
          this.#connectedIso = isoTime();
          this.#dispatch({ type: "link_open" });
        },
        onFrame: (data) => {
          const { report, dropped } = parseDeviceFrame(data);
          this.#dispatch({ type: "frame", report, dropped });
        },
        onDown: (reason) => this.#dispatch({ type: "link_down", reason }),
        onConnectFailed: (reason) => this.#dispatch({ type: "connect_failed", reason }),
      },
    });
  }

  /** The highest target accepted, in °C. */
  get maxTarget(): number {
    return this.#state.config.maxTarget;
  }

  /** The failsafe timeout in seconds. */
  get failsafeTimeout(): number {
    return this.#state.config.failsafeTimeoutMs / 1000;
  }

  /** The desired target in °C (0 = off). */
  get target(): number {
    return this.#state.target;
  }

  /** The core's current state (a snapshot for tests and diagnostics; do not modify). */
  get coreState(): Readonly<CoreState> {
    return this.#state;
  }

  /** Starts the device link. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#link.start();
    this.#logger.info("bridge started", {
      device: this.#link.url,
      failsafe_timeout_s: this.failsafeTimeout,
      max_target: this.maxTarget,
      readback_interval_s: this.#state.config.readbackIntervalMs / 1000,
      heat_mode: this.#state.config.heatMode,
      ...(this.#state.config.heatMode === "drying-lease"
        ? { lease_hours: this.#state.config.leaseHours }
        : {}),
    });
  }

  /**
   * Turns the heater off and stops: nobody will be in control once the
   * bridge is gone. OFF is written first; if the link is down, waits up to
   * `offTimeoutMs` for one to deliver it.
   */
  async stop(reason: string, offTimeoutMs = 3000): Promise<void> {
    if (!this.#started || !this.#state.running) return;
    const { delivered: sent } = this.#dispatch({ type: "stop", reason });
    this.#disarm();
    const delivered = sent || await this.#waitForLinkToSendOff(offTimeoutMs);
    if (delivered) this.#logger.info("heater off sent before exit", { reason });
    else this.#logger.error("could not send OFF before exit: device unreachable", { reason });
    // A read-back in flight ends by itself (bounded); the link does not wait for it.
    await this.#link.stop();
    if (this.#state.link.open) this.#dispatch({ type: "link_down", reason: "bridge stopped" });
    this.#disarm();
    this.#listeners.clear();
  }

  /**
   * Sends OFF on the link now, bypassing the core: the last resort when the
   * process is about to die from an unexpected error. Never throws.
   */
  emergencyOff(): boolean {
    try {
      return this.#link.send(offFrame(this.#state.config));
    } catch {
      return false;
    }
  }

  #waitForLinkToSendOff(timeoutMs: number): Promise<boolean> {
    if (timeoutMs <= 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      const started = performance.now();
      const poll = setInterval(() => {
        if (this.#link.connected && this.#link.send(offFrame(this.#state.config))) {
          clearInterval(poll);
          resolve(true);
        } else if (performance.now() - started >= timeoutMs) {
          clearInterval(poll);
          resolve(false);
        }
      }, 25);
    });
  }

  /** Calls `listener` with the status on every telemetry frame and state change. */
  subscribe(listener: (status: BridgeStatus) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Feeds a request event to the core; `respond` gets the reply after the
   * sends and before notifications and logs. Also returns the reply.
   */
  request(event: CoreEvent, respond?: Respond): ReplyEffect | null {
    let reply: ReplyEffect | null = null;
    this.#dispatch(event, (r) => {
      reply = r;
      respond?.(r);
    });
    return reply;
  }

  /**
   * Sets the desired target (0 = off). Rejects values outside 0..maxTarget
   * and heat while a device fault is latched, never wraps.
   */
  setTarget(value: unknown, source: RequestSource): TargetResult {
    return targetResult(this.request({ type: "set_target", client: source.client, value }));
  }

  /** Turns the heater off; never refused. */
  off(source: RequestSource): TargetResult {
    return targetResult(this.request({ type: "off", client: source.client }));
  }

  /** A controller's heartbeat with Klipper's readiness; only `ready: true` is proof of control. */
  heartbeat(source: RequestSource, ready: unknown): ReplyEffect | null {
    return this.request({ type: "heartbeat", client: source.client, ready });
  }

  /** A controller's connection closed. */
  controllerGone(source: RequestSource): void {
    this.#dispatch({ type: "controller_gone", client: source.client });
  }

  /** The current status (see README, "Status object"). */
  status(): BridgeStatus {
    return buildStatus(this.#state, performance.now(), {
      url: this.#link.url,
      startedIso: this.#startedIso,
      connectedIso: this.#connectedIso,
      logWriteFailures: this.#logger.writeFailures,
    });
  }

  /**
   * Asks the address which firmware answers there (bounded: one short HTTP
   * request) and feeds the answer to the core, which decides what it means.
   * It never actuates anything.
   */
  #startProbe(): void {
    const url = this.#link.url;
    this.#probe(url).then(
      (probe) => this.#dispatch({ type: "firmware_probe", problem: firmwareProblem(url, probe) }),
      () => this.#dispatch({ type: "firmware_probe", problem: null }),
    );
  }

  /**
   * Runs one event through the core and performs its effects in order;
   * `delivered` says whether every send reached an open link.
   */
  #dispatch(event: CoreEvent, respond?: Respond): { effects: Effect[]; delivered: boolean } {
    const now = performance.now();
    const decision = decide(this.#state, event, now);
    this.#state = decision.state;
    this.#wakeAt = decision.wakeAt;
    this.#depth++;
    try {
      return this.#perform(decision.effects, now, respond);
    } finally {
      this.#depth--;
    }
  }

  #perform(
    effects: Effect[],
    now: number,
    respond?: Respond,
  ): { effects: Effect[]; delivered: boolean } {
    // 1. Actuation. A failed send drops the link; the next connect asserts the state.
    let delivered = true;
    for (const effect of effects) {
      if (effect.type === "send" && !this.#link.send(effect.frame)) delivered = false;
    }
    // 2. Replies and notifications.
    for (const effect of effects) {
      if (effect.type === "reply") respond?.(effect);
    }
    if (effects.some((e) => e.type === "notify")) this.#emit();
    // 3. Read-back, firmware probe, link pacing (I/O that actuates nothing).
    for (const effect of effects) {
      if (effect.type === "readback") this.#startReadback();
      else if (effect.type === "probe") this.#startProbe();
      else if (effect.type === "link_retry") this.#link.setRetryFloor(effect.floorMs);
    }
    // 4. The wake-up (of the latest state: a nested event may have changed it), then logs.
    if (this.#depth === 1) this.#arm(this.#wakeAt, now);
    for (const effect of effects) {
      if (effect.type !== "log") continue;
      if (effect.limit) {
        this.#logger.limited(
          effect.limit.key,
          effect.limit.intervalMs,
          effect.level,
          effect.message,
          effect.fields,
        );
      } else {
        this.#logger.log(effect.level, effect.message, effect.fields);
      }
    }
    return { effects, delivered };
  }

  /**
   * Makes sure a tick comes by `wakeAt`. A timer already due earlier is kept
   * (the early tick re-arms), so the timer is not replaced on every frame:
   * creating a timer per device frame grows Deno's heap (measured: about
   * 6 bytes per frame that are never given back).
   */
  #arm(wakeAt: number | null, now: number): void {
    if (!this.#started || wakeAt === null) return;
    if (this.#wake !== undefined && this.#wakeArmedFor !== null && this.#wakeArmedFor <= wakeAt) {
      return;
    }
    this.#disarm();
    this.#wakeArmedFor = wakeAt;
    this.#wake = setTimeout(() => {
      this.#wake = undefined;
      this.#wakeArmedFor = null;
      this.#dispatch({ type: "tick" });
    }, Math.max(0, wakeAt - now) + 1);
  }

  #disarm(): void {
    clearTimeout(this.#wake);
    this.#wake = undefined;
    this.#wakeArmedFor = null;
  }

  #startReadback(): void {
    if (this.#readback) return;
    // The main link becomes the device's most recently used socket (see lib/readback.ts).
    this.#link.send(KEEPALIVE_FRAME);
    this.#readback = readBack(this.#link.url, this.#readbackTimeoutMs)
      .then((result: ReadbackResult) => {
        this.#readback = null;
        this.#dispatch({ type: "readback", report: result.report, error: result.error });
      });
  }

  #emit(): void {
    if (this.#listeners.size === 0) return;
    const status = this.status();
    const failures: string[] = [];
    for (const listener of this.#listeners) {
      try {
        listener(status);
      } catch (error) {
        failures.push((error as Error).message);
      }
    }
    for (const error of failures) this.#logger.error("status listener failed", { error });
  }
}

function targetResult(reply: ReplyEffect | null): TargetResult {
  if (reply === null) return { ok: false, code: "invalid_request", message: "no reply" };
  if (!reply.ok) return { ok: false, code: reply.code, message: reply.message };
  return { ok: true, target: reply.result.target as number };
}
