/**
 * How much dearer the same small piece of work is right after the process
 * slept than back to back, on this machine. At the device's 2 Hz every event
 * the bridge handles comes after an idle gap, so this figure, not the
 * bridge's code alone, decides how its CPU compares with the I/O floor's:
 * each builtin and function an event touches pays it, and the bridge parses,
 * decides and encodes where the floor only copies bytes.
 */

import { sleep } from "./proc.ts";
import { telemetryFrame } from "./frames.ts";
import { rounded, summarize } from "./stats.ts";

/** What {@link measureColdCache} found (results.json `footprint.cold_cache`). */
export interface ColdCacheResult {
  /** Idle gap before each cold run, ms. */
  gap_ms: number;
  /** Median of the work run back to back, µs. */
  warm_us: number;
  /** Median of the work run once after each idle gap, µs. */
  cold_us: number;
  /** `cold_us / warm_us`. */
  ratio: number;
}

const encoder = new TextEncoder();
const status = {
  connected: true,
  temperature: 0,
  target: 45,
  heater: { on: true, mode: "always-on" },
  failsafe: { armed: true, remaining_s: 10 },
  padding: "x".repeat(500),
};

/** One device frame's builtins: parse the frame, encode a status line. */
function frameWork(k: number): number {
  const frame = JSON.parse(telemetryFrame(20 + k / 1000));
  status.temperature = frame.settings.warehouse_temper;
  return encoder.encode(JSON.stringify({ method: "status", params: status }) + "\n").length;
}

function timedUs(k: number): number {
  const start = performance.now();
  frameWork(k);
  return (performance.now() - start) * 1000;
}

/**
 * The median time of {@link frameWork} back to back (`warmRuns` times, after
 * as many untimed runs to compile it) and once after each of `coldRuns`
 * sleeps of `gapMs`; run while nothing else in this process is busy.
 */
export async function measureColdCache(
  coldRuns = 40,
  gapMs = 100,
  warmRuns = 2000,
): Promise<ColdCacheResult> {
  for (let k = 0; k < warmRuns; k++) frameWork(k);
  const warm: number[] = [];
  for (let k = 0; k < warmRuns; k++) warm.push(timedUs(k));
  const cold: number[] = [];
  for (let k = 0; k < coldRuns; k++) {
    await sleep(gapMs);
    cold.push(timedUs(k));
  }
  const warmUs = summarize(warm).p50;
  const coldUs = summarize(cold).p50;
  return rounded({ gap_ms: gapMs, warm_us: warmUs, cold_us: coldUs, ratio: coldUs / warmUs }, 2);
}
