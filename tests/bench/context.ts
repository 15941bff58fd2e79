/**
 * What the bench runner hands each measure: the run's configuration, the
 * report to write into, the machine, and the shape of a measure.
 */

import type { Simulator } from "../../lib/simulator/mod.ts";
import type { RunningBridge } from "./proc.ts";
import type { BenchClient } from "./socket_client.ts";
import type { Report } from "./report.ts";
import { GROWTH_LIMIT } from "./reconnect_memory.ts";

/** Targets of issue 6 (and issue 12 where marked). */
export const TARGET = {
  /** p99 of command and telemetry latency, ms. */
  latencyP99Ms: 5,
  /** p99 from a dropped link to the desired state re-sent, ms. */
  reconnectP99Ms: 500,
  /** p99 from the controller gone to the device off, ms. */
  controllerGoneOffMs: 1000,
  /** Bridge RSS over a bare Deno's. */
  rssRatio: 1.25,
  /** Bridge over the I/O floor (same WebSocket and socket I/O), RSS and CPU. */
  ioFloorRatio: 1.25,
  /** Bridge CPU at 2 Hz telemetry + 1 Hz heartbeat, % of one core. */
  cpuPercent: 0.2,
  /** CPU of the Klipper extra per message, µs. */
  extraUsPerMessage: 50,
  /** Issue 12: status notifications per second to a subscriber under a flood. */
  statusPerS: 10,
  /** Issue 12: age of the newest state at delivery under a flood, ms. */
  statusAgeMs: 100,
  /** Issue 12: log bytes per day under a fault every second. */
  logBytesPerDay: 1_000_000,
  /** Issue 12: RSS and heap after the last mark over after the first. */
  memoryGrowthRatio: GROWTH_LIMIT,
  /** Issue 12: fds after the last mark minus after the first (a leak is one per reconnect). */
  fdGrowth: 2,
} as const;

/** Frames or changes excluded from the front of each latency series. */
export const WARMUP = 20;

/** Counts and durations of one run (results.json `config`, with the sections). */
export interface BenchConfig {
  /** Command section: target changes. */
  commands: number;
  /** Telemetry section: frames. */
  frames: number;
  /** Reconnect section: link drops. */
  drops: number;
  /** Flood section: seconds of flood. */
  floodS: number;
  /** Flood section: frames the device sends per second. */
  floodRate: number;
  /** Footprint section: seconds at 2 Hz telemetry. */
  longS: number;
  /** aarch64 section: seconds at 2 Hz telemetry under qemu. */
  armS: number;
  /** Footprint: seconds after start before the first sample. */
  settleS: number;
  /** Telemetry rate of the simulated device, Hz. */
  telemetryHz: number;
  /** Klipper section: iterations of each timed call. */
  pythonIterations: number;
  /** Logs section: seconds of a fault every second. */
  logS: number;
  /** Memory section: reconnects of the last mark (the first is a tenth). */
  reconnects: number;
}

/** Reads a positive number from the environment; throws saying what is wrong. */
function envNumber(
  env: (name: string) => string | undefined,
  name: string,
  fallback: number,
): number {
  const raw = env(name);
  if (raw === undefined || raw.trim() === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`${name} must be a positive number, got '${raw}'`);
  }
  return value;
}

/** The configuration for `--quick` (small counts) or from the PB_BENCH_* environment. */
export function benchConfig(
  quick: boolean,
  env: (name: string) => string | undefined = (name) => Deno.env.get(name),
): BenchConfig {
  const num = (name: string, fallback: number) => envNumber(env, name, fallback);
  return {
    commands: quick ? 100 : Math.round(num("PB_BENCH_COMMANDS", 1000)),
    frames: quick ? 100 : Math.round(num("PB_BENCH_FRAMES", 1000)),
    drops: quick ? 10 : Math.round(num("PB_BENCH_DROPS", 100)),
    floodS: quick ? 3 : num("PB_BENCH_FLOOD_S", 10),
    floodRate: Math.round(num("PB_BENCH_FLOOD_RATE", 50_000)),
    longS: quick ? 10 : num("PB_BENCH_LONG_S", 60),
    armS: quick ? 10 : num("PB_BENCH_ARM_S", 30),
    settleS: 3,
    telemetryHz: 2,
    pythonIterations: quick ? 2000 : 20_000,
    logS: quick ? 15 : num("PB_BENCH_LOG_S", 150),
    reconnects: quick ? 500 : Math.round(num("PB_BENCH_RECONNECTS", 5000)),
  };
}

/** What the runner passes to every measure. */
export interface BenchContext {
  /** Counts and durations of this run. */
  readonly config: BenchConfig;
  /** Where rows, targets and figures go. */
  readonly report: Report;
  /** The machine as results.json describes it. */
  readonly machine: Record<string, unknown>;
  /** Clock ticks per second of /proc/PID/stat. */
  readonly ticksPerS: number;
  /** Prints a progress line (stderr). */
  progress(message: string): void;
  /**
   * A status object of the real bridge, taken by the first measure that runs
   * one (the Klipper measure prices the extra's handling of it); null until then.
   */
  sampleStatus: unknown;
}

/** Keeps the bridge's status in `ctx.sampleStatus` unless one is kept already. */
export async function captureStatus(ctx: BenchContext, client: BenchClient): Promise<void> {
  if (ctx.sampleStatus !== null) return;
  ctx.sampleStatus = (await client.request("status")).message.result;
}

/** A measure on the bridge the runner shares (started with a subscribed controller). */
export type BridgeRun = (ctx: BenchContext, sim: Simulator, bridge: RunningBridge) => Promise<void>;

/** A measure that starts its own bridges against the simulator the runner shares. */
export type SimulatorRun = (ctx: BenchContext, sim: Simulator) => Promise<void>;

/** A measure that starts everything it needs. */
export type OwnRun = (ctx: BenchContext) => Promise<void>;

/**
 * One section of the bench: its name in `--only`, its title (table section
 * of a failure, results.json key of the error), and what the runner gives it.
 */
export type Measure =
  | { section: string; title: string; uses: "bridge"; run: BridgeRun }
  | { section: string; title: string; uses: "simulator"; run: SimulatorRun }
  | { section: string; title: string; uses: "own"; run: OwnRun };
