/**
 * The status object of the socket API (README, "Status object"): what the
 * core's state means to a client, built by one pure function from the state,
 * the time and the few facts only the shell knows. Its fields are a public
 * interface: the Klipper extra, `panda-breath status` and Moonraker users
 * read them.
 *
 * @module
 */

import {
  type CoreState,
  failsafeDeadline,
  type HeatMode,
  lastReadyHeartbeat,
  type LeasePhase,
  leaseUnavailable,
} from "./core.ts";
import type { FaultName } from "./protocol.ts";
import { VERSION } from "./version.ts";

/** What the device last reported about itself. */
export interface DeviceStatus {
  /** `work_on`: the heater is switched on; null before the first report. */
  work_on: boolean | null;
  /** `work_mode` as reported (2 is always-on). */
  work_mode: number | null;
  /** The device's own target, °C. */
  set_temp: number | null;
  /** The firmware version, e.g. `V1.0.3`. */
  firmware: string | null;
  /** Seconds since the device last reported its settings. */
  reported_age: number | null;
}

/** The failsafe's view: is anyone in control? */
export interface FailsafeStatus {
  /** The failsafe timeout, seconds (`--failsafe-timeout`). */
  timeout: number;
  /** A ready controller is connected and heartbeated within the timeout. */
  controller: boolean;
  /** Seconds since the last ready heartbeat of a connected controller. */
  controller_age: number | null;
  /** Connected controller connections (ready or not). */
  controllers: number;
  /** Seconds until the failsafe turns the heat off; null while off. */
  remaining: number | null;
  /** The failsafe turned the heat off; cleared by the next accepted `set_target` or `off`. */
  tripped: boolean;
  /** Why the failsafe tripped; null when it did not. */
  reason: string | null;
}

/** The read-back's view. */
export interface ReadbackStatus {
  /** Seconds between read-backs; 0 = disabled. */
  interval: number;
  /** Read-backs that returned a settings block. */
  count: number;
  /** Read-backs that returned nothing usable. */
  failures: number;
  /** Read-backs that found a state the bridge did not choose and put it right. */
  corrections: number;
  /** Seconds since the last read-back finished. */
  last_age: number | null;
  /**
   * `match`, `corrected`, `stale`, `mismatch (link down)` or `failed: <reason>`; null before the
   * first.
   */
  last: string | null;
}

/** The drying lease's view (heat mode `drying-lease`). */
export interface LeaseStatus {
  /** Lease length in hours (`--lease-hours`). */
  hours: number;
  /** `none`, `stopping` (renewal gap), `starting` (verification pending) or `running`. */
  state: LeasePhase;
  /** Seconds until the device's run ends by itself; null without a lease. */
  remaining: number | null;
  /** Seconds since the device last confirmed the lease; null if never. */
  last_verified_age: number | null;
  /** Lease renewals sent since the bridge started. */
  renewals: number;
  /** Failed verifications in a row (one retry, then the lease is given up). */
  verify_failures: number;
  /** Why heat is refused now (firmware, missing fields, a given-up lease); null while usable. */
  unavailable: string | null;
}

/** The bridge's status, as served on the socket API (see README). */
export interface BridgeStatus {
  /** The WebSocket to the device is up. */
  connected: boolean;
  /** Chamber °C; null when unknown, older than the stale limit (5 s) or the link is down. */
  temperature: number | null;
  /** Seconds since the last temperature reading; null if none. */
  temperature_age: number | null;
  /** The desired target in whole °C; 0 = off. */
  target: number;
  /** `target > 0`: the bridge wants the heater on, at `target`. */
  target_set: boolean;
  /** The highest target accepted, °C (`--max-target`). */
  max_target: number;
  /** What the device last reported about itself. */
  device: DeviceStatus;
  /** Latched device faults; heat is refused while the list is not empty. */
  faults: FaultName[];
  /** Why the state last changed without a request (button, fault, failsafe...); else null. */
  note: string | null;
  /** The failsafe's view. */
  failsafe: FailsafeStatus;
  /** The read-back's view. */
  readback: ReadbackStatus;
  /** `always-on` or `drying-lease` (`--heat-mode`). */
  heat_mode: HeatMode;
  /** The drying lease; null in heat mode `always-on`. */
  lease: LeaseStatus | null;
  /** ISO times: when the bridge started, and since when the link is up (null while down). */
  since: { started: string; connected: string | null };
  /**
   * The device link: its URL and counters (`writes`: ON/OFF frames written; `skipped_writes`:
   * connects whose connect frame already matched).
   */
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
  /** The bridge's version. */
  bridge: string;
}

/** What only the shell knows: wall-clock times, the URL, the logger's counter. */
export interface ShellFacts {
  /** The device's WebSocket URL. */
  url: string;
  /** When the bridge started (ISO 8601). */
  startedIso: string;
  /** When the link last opened (ISO 8601); null if never. */
  connectedIso: string | null;
  /** Log lines dropped because the log could not be written. */
  logWriteFailures: number;
}

function seconds(ms: number): number {
  return ms / 1000;
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
    target_set: s.target > 0,
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
    lease: s.config.heatMode !== "drying-lease" ? null : {
      hours: s.config.leaseHours,
      state: s.lease.phase,
      remaining: (s.lease.phase !== "starting" && s.lease.phase !== "running") ||
          s.lease.endsAt === null
        ? null
        : Math.max(0, Math.round((s.lease.endsAt - now) / 100) / 10),
      last_verified_age: age(now, s.lease.verifiedAt),
      renewals: s.lease.renewals,
      verify_failures: s.lease.failures,
      unavailable: leaseUnavailable(s),
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
    firmware_problem: s.firmwareProblem,
    bridge: VERSION,
  };
}
