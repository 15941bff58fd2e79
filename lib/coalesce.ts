/**
 * How often a subscriber gets a status notification: at most one per
 * {@link STATUS_MIN_GAP_MS} while only readings change (the newest state
 * wins), at once when something that matters changes. Pure; the socket API
 * keeps one timer per subscriber for the pending status.
 */
import type { BridgeStatus } from "./status.ts";

/**
 * Least time between two ordinary notifications to one subscriber. Ten of
 * these gaps are 1050 ms: however late one notification is delivered and
 * the next on time (up to 50 ms of delivery jitter), no second holds 11.
 */
export const STATUS_MIN_GAP_MS = 105;

/**
 * The part of a status whose change is sent at once: the link, the target,
 * faults, the failsafe, controllers, what the device last reported of its
 * settings, a firmware problem, the lease. Readings and ages are not in it.
 */
export function urgentPart(status: BridgeStatus): string {
  return JSON.stringify([
    status.connected,
    status.target,
    status.faults,
    status.note,
    status.failsafe.tripped,
    status.failsafe.reason,
    status.failsafe.controller,
    status.failsafe.controllers,
    status.device.work_on,
    status.device.work_mode,
    status.device.set_temp,
    status.firmware_problem,
    status.lease?.state ?? null,
    status.lease?.unavailable ?? null,
  ]);
}

/** What a subscriber was last sent. */
export interface LastSent {
  /** Monotonic time of the last notification, or null before the first. */
  at: number | null;
  /** Its {@link urgentPart}. */
  urgent: string | null;
}

/**
 * When a status with urgent part `urgent`, produced at `now`, goes out: `now`
 * when it is the first or something urgent changed, else once the gap since
 * the last notification has passed (the newest pending status goes then).
 */
export function sendAt(
  last: LastSent,
  urgent: string,
  now: number,
  gapMs = STATUS_MIN_GAP_MS,
): number {
  if (last.at === null || urgent !== last.urgent) return now;
  return Math.max(now, last.at + gapMs);
}
