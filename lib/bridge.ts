import type { BackoffOptions } from "./backoff.ts";
import { DeviceLink, type LinkTimings } from "./device_link.ts";
import type { Logger } from "./log.ts";
import {
  ALWAYS_ON_MODE,
  buildDesiredStateFrame,
  DEFAULT_MAX_TARGET,
  type DeviceReport,
  FAULT_DESCRIPTIONS,
  type FaultName,
  parseDeviceFrame,
  type TargetCheck,
  validateTarget,
  WORK_MODE_NAMES,
} from "./protocol.ts";
import { VERSION } from "./version.ts";

/** Settings of a {@link Bridge}. */
export interface BridgeOptions {
  /** Device WebSocket URL, e.g. `ws://PandaBreath.local:80/ws`. */
  url: string;
  logger: Logger;
  /** Heat is switched off when no controller heartbeated for this long. */
  failsafeTimeoutMs?: number;
  /** Highest target accepted, in °C. */
  maxTarget?: number;
  /** A temperature older than this is reported as unknown. */
  staleAfterMs?: number;
  linkTimings?: Partial<LinkTimings>;
  backoff?: BackoffOptions;
}

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
  controller: boolean;
  controller_age: number | null;
  tripped: boolean;
  reason: string | null;
}

/** The bridge's status, as served on the socket API (see README). */
export interface BridgeStatus {
  connected: boolean;
  temperature: number | null;
  temperature_age: number | null;
  target: number;
  heating: boolean;
  device: DeviceStatus;
  faults: FaultName[];
  note: string | null;
  failsafe: FailsafeStatus;
  since: { started: string; connected: string | null };
  link: { url: string; connects: number; drops: number; dropped_frames: number };
  bridge: string;
}

/** Who asked for a change, for the failsafe and the log. */
export interface RequestSource {
  /** A short label for the log, e.g. `socket#3`. */
  client: string;
}

/** Defaults of {@link BridgeOptions}. */
export const BRIDGE_DEFAULTS = {
  failsafeTimeoutMs: 10_000,
  maxTarget: DEFAULT_MAX_TARGET,
  staleAfterMs: 5_000,
} as const;

function seconds(ms: number | null): number | null {
  return ms === null ? null : Math.round(ms / 100) / 10;
}

/**
 * The bridge's heart: owns the desired state (off, or on at a target),
 * asserts it on every (re)connect and change, tracks what the device
 * reports, and turns the heater off when nobody is in control.
 */
export class Bridge {
  #logger: Logger;
  #link: DeviceLink;
  #failsafeTimeoutMs: number;
  #maxTarget: number;
  #staleAfterMs: number;
  #startedAt = new Date();

  #target = 0;
  #heatRequestedAt = 0;
  #lastHeartbeatAt: number | null = null;
  #failsafeTimer: ReturnType<typeof setTimeout> | undefined;
  #tripReason: string | null = null;

  #temperature: number | null = null;
  #temperatureAt = 0;
  #device: Omit<DeviceStatus, "reported_age"> = {
    work_on: null,
    work_mode: null,
    set_temp: null,
    firmware: null,
  };
  #deviceReportedAt: number | null = null;
  #faults = new Set<FaultName>();
  #note: string | null = null;
  #connectedSince: Date | null = null;
  #droppedFrames = 0;
  #listeners = new Set<(status: BridgeStatus) => void>();
  #running = false;

  /** A bridge to the device at `options.url`; call {@link start}. */
  constructor(options: BridgeOptions) {
    this.#logger = options.logger;
    this.#failsafeTimeoutMs = options.failsafeTimeoutMs ?? BRIDGE_DEFAULTS.failsafeTimeoutMs;
    this.#maxTarget = options.maxTarget ?? BRIDGE_DEFAULTS.maxTarget;
    this.#staleAfterMs = options.staleAfterMs ?? BRIDGE_DEFAULTS.staleAfterMs;
    this.#link = new DeviceLink({
      url: options.url,
      logger: options.logger,
      timings: options.linkTimings,
      backoff: options.backoff,
      handlers: {
        onOpen: () => this.#onLinkOpen(),
        onFrame: (data) => this.#onFrame(data),
        onDown: (reason) => this.#onLinkDown(reason),
      },
    });
  }

  /** The highest target accepted, in °C. */
  get maxTarget(): number {
    return this.#maxTarget;
  }

  /** The failsafe timeout in seconds. */
  get failsafeTimeout(): number {
    return this.#failsafeTimeoutMs / 1000;
  }

  /** The desired target in °C (0 = off). */
  get target(): number {
    return this.#target;
  }

  /** Starts the device link. */
  start(): void {
    this.#running = true;
    this.#logger.info("bridge started", {
      device: this.#link.url,
      failsafe_timeout_s: this.failsafeTimeout,
      max_target: this.#maxTarget,
    });
    this.#link.start();
  }

  /**
   * Turns the heater off and stops: nobody will be in control once the
   * bridge is gone. Waits up to `offTimeoutMs` for a link to deliver OFF.
   */
  async stop(reason: string, offTimeoutMs = 3000): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    clearTimeout(this.#failsafeTimer);
    this.#target = 0;
    this.#note = `bridge stopped: ${reason}`;
    const delivered = this.#link.send(buildDesiredStateFrame(0)) ||
      await this.#waitForLinkToSendOff(offTimeoutMs);
    if (delivered) this.#logger.info("heater off sent before exit", { reason });
    else this.#logger.error("could not send OFF before exit: device unreachable", { reason });
    await this.#link.stop();
    this.#listeners.clear();
  }

  #waitForLinkToSendOff(timeoutMs: number): Promise<boolean> {
    if (timeoutMs <= 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      const started = performance.now();
      const poll = setInterval(() => {
        if (this.#link.connected && this.#link.send(buildDesiredStateFrame(0))) {
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
   * Sets the desired target (0 = off). Rejects values outside 0..maxTarget
   * with a clear error, never wraps. Heat requested starts the failsafe clock.
   */
  setTarget(value: unknown, source: RequestSource): TargetCheck {
    const check = validateTarget(value, this.#maxTarget);
    if (!check.ok) {
      this.#logger.info("rejected target", { client: source.client, reason: check.message });
      return check;
    }
    this.#tripReason = null;
    this.#note = null;
    this.#applyTarget(check.target, `requested by ${source.client}`);
    return check;
  }

  /** Records a controller's heartbeat, proof that someone is in control. */
  heartbeat(): void {
    this.#lastHeartbeatAt = performance.now();
  }

  /** The current status (see README, "Status object"). */
  status(): BridgeStatus {
    const now = performance.now();
    const connected = this.#link.connected;
    const temperatureAge = this.#temperatureAt ? now - this.#temperatureAt : null;
    const fresh = connected && temperatureAge !== null && temperatureAge <= this.#staleAfterMs;
    const controllerAge = this.#lastHeartbeatAt === null ? null : now - this.#lastHeartbeatAt;
    return {
      connected,
      temperature: fresh ? this.#temperature : null,
      temperature_age: seconds(temperatureAge),
      target: this.#target,
      heating: this.#target > 0,
      device: {
        ...this.#device,
        reported_age: seconds(
          this.#deviceReportedAt === null ? null : now - this.#deviceReportedAt,
        ),
      },
      faults: [...this.#faults],
      note: this.#note,
      failsafe: {
        timeout: this.failsafeTimeout,
        controller: controllerAge !== null && controllerAge <= this.#failsafeTimeoutMs,
        controller_age: seconds(controllerAge),
        tripped: this.#tripReason !== null,
        reason: this.#tripReason,
      },
      since: {
        started: this.#startedAt.toISOString(),
        connected: connected && this.#connectedSince ? this.#connectedSince.toISOString() : null,
      },
      link: {
        url: this.#link.url,
        connects: this.#link.stats.connects,
        drops: this.#link.stats.drops,
        dropped_frames: this.#droppedFrames,
      },
      bridge: VERSION,
    };
  }

  #applyTarget(target: number, why: string): void {
    const previous = this.#target;
    this.#target = target;
    if (target > 0) this.#heatRequestedAt = performance.now();
    if (target !== previous) {
      this.#logger.info("target changed", { from: previous, to: target, why });
    }
    this.#armFailsafe();
    this.#sendDesiredState();
    this.#emit();
  }

  #sendDesiredState(): void {
    if (!this.#running) return;
    if (this.#link.send(buildDesiredStateFrame(this.#target))) {
      this.#logger.debug("desired state sent", { target: this.#target });
    }
  }

  #failsafeDeadline(): number {
    const lastSign = Math.max(this.#heatRequestedAt, this.#lastHeartbeatAt ?? 0);
    return lastSign + this.#failsafeTimeoutMs;
  }

  #armFailsafe(): void {
    clearTimeout(this.#failsafeTimer);
    this.#failsafeTimer = undefined;
    if (this.#target === 0 || !this.#running) return;
    const wait = Math.max(0, this.#failsafeDeadline() - performance.now());
    this.#failsafeTimer = setTimeout(() => this.#checkFailsafe(), wait + 1);
  }

  #checkFailsafe(): void {
    if (this.#target === 0) return;
    if (performance.now() < this.#failsafeDeadline()) {
      this.#armFailsafe();
      return;
    }
    const reason = this.#lastHeartbeatAt !== null && this.#lastHeartbeatAt >= this.#heatRequestedAt
      ? `controller silent for more than ${this.failsafeTimeout} s`
      : `heat requested without a live controller for ${this.failsafeTimeout} s`;
    this.#tripReason = reason;
    this.#note = `failsafe turned the heater off: ${reason}`;
    this.#logger.warn("failsafe: turning heater off", { reason, target_was: this.#target });
    this.#applyTarget(0, "failsafe");
  }

  #onLinkOpen(): void {
    this.#connectedSince = new Date();
    this.#logger.info("device connected", { url: this.#link.url, target: this.#target });
    this.#sendDesiredState();
    this.#emit();
  }

  #onLinkDown(reason: string): void {
    this.#logger.warn("device link down", { reason });
    this.#emit();
  }

  #onFrame(data: string | Uint8Array): void {
    const { report, dropped } = parseDeviceFrame(data);
    if (dropped.length > 0) {
      this.#droppedFrames++;
      this.#logger.limited("dropped-frame", 10_000, "debug", "dropped device data", {
        reason: dropped.join("; "),
      });
    }
    if (!report) return;
    if (report.temperature !== undefined) {
      this.#temperature = report.temperature;
      this.#temperatureAt = performance.now();
    }
    this.#recordDeviceState(report);
    if (report.isConnectFrame) this.#noteConnectState(report);
    else if (report.isSettingsBlock) this.#followDevicePush(report);
    this.#emit();
  }

  #recordDeviceState(report: DeviceReport): void {
    const device = this.#device;
    if (report.workOn !== undefined) device.work_on = report.workOn;
    if (report.workMode !== undefined) device.work_mode = report.workMode;
    if (report.setTemp !== undefined) device.set_temp = report.setTemp;
    if (report.firmware !== undefined) device.firmware = report.firmware;
    if (report.isSettingsBlock) {
      this.#deviceReportedAt = performance.now();
      this.#updateFaults(report, true);
    } else if (report.faults) {
      this.#updateFaults(report, false);
    }
  }

  /** Fault fields are sent only while non-zero: a settings block without one clears it. */
  #updateFaults(report: DeviceReport, wholeBlock: boolean): void {
    const next = wholeBlock ? new Set<FaultName>() : new Set(this.#faults);
    for (const [name, active] of Object.entries(report.faults ?? {})) {
      if (active) next.add(name as FaultName);
      else next.delete(name as FaultName);
    }
    for (const name of next) {
      if (!this.#faults.has(name)) {
        this.#logger.error("device fault", { fault: name, meaning: FAULT_DESCRIPTIONS[name] });
      }
    }
    for (const name of this.#faults) {
      if (!next.has(name)) this.#logger.info("device fault cleared", { fault: name });
    }
    this.#faults = next;
  }

  #noteConnectState(report: DeviceReport): void {
    const heating = report.workOn === true;
    if (heating !== this.#target > 0 || (heating && report.setTemp !== this.#target)) {
      this.#logger.info("device state differs from desired state on connect; asserting", {
        device_work_on: report.workOn,
        device_set_temp: report.setTemp,
        target: this.#target,
      });
    }
  }

  /**
   * A settings push comes only from a button, the end of a drying run or a
   * fault. The bridge follows it instead of fighting it: switched off at the
   * device means off; switched on (always-on) means heat at the device's
   * target, under the failsafe like any other request.
   */
  #followDevicePush(report: DeviceReport): void {
    if (report.workOn === false && this.#target > 0) {
      const faults = [...this.#faults];
      this.#note = faults.length > 0
        ? `device switched the heater off: fault ${faults.join(", ")}`
        : "heater switched off at the device (button)";
      this.#logger.warn(this.#note);
      this.#applyTarget(0, "device push");
    } else if (report.workOn === true && this.#target === 0) {
      const mode = report.workMode ?? this.#device.work_mode;
      const setTemp = report.setTemp ?? this.#device.set_temp;
      if (
        mode === ALWAYS_ON_MODE && setTemp !== null && setTemp >= 1 && setTemp <= this.#maxTarget
      ) {
        this.#note = `heater switched on at the device (${setTemp} °C); the failsafe applies`;
        this.#logger.warn(this.#note);
        this.#applyTarget(setTemp, "device push");
      } else {
        const modeName = mode === null ? "unknown" : WORK_MODE_NAMES[mode] ?? `mode ${mode}`;
        this.#note = `device switched on at the device in ${modeName} mode; ` +
          "the bridge asserts its desired state (off) on the next reconnect";
        this.#logger.warn(this.#note);
      }
    }
  }

  #emit(): void {
    if (this.#listeners.size === 0) return;
    const status = this.status();
    for (const listener of this.#listeners) {
      try {
        listener(status);
      } catch (error) {
        this.#logger.error("status listener failed", { error: (error as Error).message });
      }
    }
  }
}
