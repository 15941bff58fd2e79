/**
 * Device frames for the measures: telemetry frames with a distinct
 * temperature each (so a status can be matched to its frame), the desired
 * state as the device receives it, and the simulated device itself.
 */

import { Simulator } from "../../lib/simulator/mod.ts";
import { type BenchClient, notificationTemperature } from "./socket_client.ts";

/** A telemetry frame carrying `temperature`. */
export function telemetryFrame(temperature: number): string {
  return `{"settings":{"warehouse_temper":${temperature}}}`;
}

/** Frame temperatures wrap after this many frames, below the shipped max_temp (60 °C). */
export const TEMPERATURE_WRAP = 40_000;

/** A distinct temperature for frame `k` (20.000, 20.001, … 59.999, then again). */
export function temperatureOf(k: number): number {
  return (20_000 + (k % TEMPERATURE_WRAP)) / 1000;
}

/**
 * Frames handled, from the temperature of the last one the bridge reports,
 * when `sent` frames were sent in order; null if it is none of theirs.
 */
export function handledFrom(temperature: unknown, sent: number): number | null {
  if (typeof temperature !== "number" || sent === 0) return null;
  const kmod = Math.round(temperature * 1000) - 20_000;
  if (kmod < 0 || kmod >= TEMPERATURE_WRAP) return null;
  const last = sent - 1;
  return last - (((last - kmod) % TEMPERATURE_WRAP) + TEMPERATURE_WRAP) % TEMPERATURE_WRAP + 1;
}

function settingsOf(frame: unknown): Record<string, unknown> | undefined {
  if (typeof frame !== "object" || frame === null) return undefined;
  const settings = (frame as Record<string, unknown>).settings;
  return typeof settings === "object" && settings !== null
    ? settings as Record<string, unknown>
    : undefined;
}

/** Whether `frame`, written to the device, sets `target` (0: off). */
export function isDesiredStateFrame(frame: unknown, target: number): boolean {
  const settings = settingsOf(frame);
  if (!settings) return false;
  return target === 0
    ? settings.work_on === false
    : settings.work_on === true && settings.set_temp === target;
}

/** Runs `use` with a started simulated device sending telemetry at `telemetryHz`. */
export async function withSimulator<T>(
  telemetryHz: number,
  use: (sim: Simulator) => Promise<T>,
): Promise<T> {
  const sim = new Simulator({ telemetryIntervalMs: 1000 / telemetryHz });
  await sim.start();
  try {
    return await use(sim);
  } finally {
    await sim.stop();
  }
}

/**
 * Matches status notifications to frames by their distinct temperature
 * (`key` is where a line carries it: the bridge's status, or the I/O floor's
 * copy of the frame).
 */
export class TelemetryMatcher {
  /** Latencies of matched frames, ms. */
  readonly latencies: number[] = [];
  /** Frames whose notification did not come within the timeout. */
  lost = 0;
  #pending = new Map<number, { sentAt: number; resolve: (ms: number | null) => void }>();

  /** Listens to `client`'s notifications (replacing its `onNotification`). */
  constructor(client: BenchClient, key = '"temperature":') {
    client.onNotification = (line, at) => {
      const temperature = notificationTemperature(line, key);
      if (typeof temperature !== "number") return;
      const pending = this.#pending.get(temperature);
      if (!pending) return;
      this.#pending.delete(temperature);
      pending.resolve(at - pending.sentAt);
    };
  }

  /**
   * Expects a notification for the frame carrying `temperature`, sent at
   * `sentAt`; resolves with its latency in ms (also kept in `latencies`), or
   * null after `timeoutMs` (counted in `lost`).
   */
  expect(temperature: number, sentAt: number, timeoutMs = 2000): Promise<number | null> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(null), timeoutMs);
      const finish = (ms: number | null) => {
        clearTimeout(timer);
        this.#pending.delete(temperature);
        if (ms === null) this.lost++;
        else this.latencies.push(ms);
        resolve(ms);
      };
      this.#pending.set(temperature, { sentAt, resolve: finish });
    });
  }

  /** Sends frame `k` to every client of `sim` and expects its notification. */
  send(sim: Simulator, k: number): Promise<number | null> {
    const temperature = temperatureOf(k);
    const done = this.expect(temperature, performance.now());
    sim.sendTextToAll(telemetryFrame(temperature));
    return done;
  }
}
