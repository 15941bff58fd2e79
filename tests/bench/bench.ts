/**
 * `deno task bench`: latency, footprint and cost of the bridge and the
 * Klipper extra on this machine (issue 6). Not part of `deno task test`.
 *
 * Runs real processes on loopback: the bridge is `main.ts run` with the
 * shipped permission set (`-P=bridge`) as a subprocess; the simulated device
 * (lib/simulator.ts) and the socket client live in this process, so send and
 * receive times are read from the same clock. Prints one table to stdout
 * (progress goes to stderr) and writes the same figures, with the machine
 * described, to tests/bench/results.json.
 *
 * This file is the runner: each section is a module of its own (command.ts,
 * telemetry.ts, … logs.ts) that gets a {@link BenchContext} and adds its
 * rows, targets and figures to the context's report.
 *
 * Options:
 *   --only=LIST   comma-separated sections: command, telemetry, reconnect, failsafe,
 *                 flood, footprint, instructions, klipper, aarch64, memory, logs
 *                 (default: all)
 *   --quick       small counts and short runs (a smoke test of the bench)
 *   --out=PATH    where to write the JSON (default tests/bench/results.json;
 *                 a run with --only or --quick writes only when --out is given)
 *
 * Environment:
 *   PB_BENCH_LONG_S     footprint (and instructions) run at 2 Hz telemetry, seconds (default 60)
 *   PB_BENCH_ARM_S      the same under qemu-aarch64, seconds (default 30)
 *   PB_BENCH_ARM_DENO   arm64 deno binary (default /tmp/arm64deno/package/deno)
 *   PB_BENCH_QEMU       qemu-aarch64 (default: found on PATH)
 *   PB_BENCH_ARM_SYSROOT  aarch64 libraries for qemu -L (default /usr/aarch64-linux-gnu)
 *   PB_BENCH_RECONNECTS  memory section: reconnects of the last mark (default 5000,
 *                       first mark a tenth of it; --quick: 500)
 *   PB_BENCH_LOG_S      logs section: seconds of a fault every second (default 150)
 *   PB_BENCH_COMMANDS, PB_BENCH_FRAMES, PB_BENCH_DROPS, PB_BENCH_FLOOD_S, PB_BENCH_FLOOD_RATE
 *                       counts of sections 1-4 (defaults 1000, 1000, 100, 10 s,
 *                       50000 frames/s)
 *
 * @module
 */

import { parseArgs } from "node:util";
import { clockTicksPerSecond } from "../procfs.ts";
import { NATIVE, startBridge, warmCache } from "./proc.ts";
import {
  type BenchConfig,
  benchConfig,
  type BenchContext,
  captureStatus,
  type Measure,
} from "./context.ts";
import { withSimulator } from "./frames.ts";
import { type Check, formatTable, Report, type Row } from "./report.ts";
import { describeMachine } from "./machine.ts";
import { benchCommand } from "./command.ts";
import { benchTelemetry } from "./telemetry.ts";
import { benchReconnect } from "./reconnect.ts";
import { benchFailsafe } from "./failsafe.ts";
import { benchFlood } from "./flood.ts";
import { benchFootprint } from "./footprint.ts";
import { benchInstructions } from "./instructions.ts";
import { benchKlipper } from "./klipper.ts";
import { benchArm } from "./aarch64.ts";
import { benchMemory } from "./memory.ts";
import { benchLogs } from "./logs.ts";

/**
 * Every measure, in the order of the table. The runner runs the ones on the
 * shared bridge first, then the ones on the shared simulator, then the rest:
 * keep them in that order here.
 */
export const MEASURES: readonly Measure[] = [
  { section: "command", title: "1 command", uses: "bridge", run: benchCommand },
  { section: "telemetry", title: "2 telemetry", uses: "bridge", run: benchTelemetry },
  { section: "reconnect", title: "3 reconnect", uses: "bridge", run: benchReconnect },
  { section: "failsafe", title: "3b failsafe", uses: "simulator", run: benchFailsafe },
  { section: "flood", title: "4 flood", uses: "own", run: benchFlood },
  { section: "footprint", title: "5 footprint", uses: "own", run: benchFootprint },
  { section: "instructions", title: "5b instructions", uses: "own", run: benchInstructions },
  { section: "klipper", title: "6 klipper extra", uses: "own", run: benchKlipper },
  { section: "aarch64", title: "7 aarch64", uses: "own", run: benchArm },
  { section: "memory", title: "8 memory", uses: "own", run: benchMemory },
  { section: "logs", title: "9 logs", uses: "own", run: benchLogs },
];

const DEFAULT_OUT = new URL("./results.json", import.meta.url).pathname;

/** The command line of `deno task bench`. */
export interface BenchOptions {
  /** Sections to run (`--only`), in the order given; undefined: all. */
  only?: string[];
  /** `--quick`: small counts and short runs. */
  quick: boolean;
  /** `--out`: where to write the JSON. */
  out?: string;
}

/** Parses the options; throws on an unknown option or section. */
export function parseBenchArgs(
  args: string[],
  measures: readonly Measure[] = MEASURES,
): BenchOptions {
  const { values } = parseArgs({
    args,
    options: {
      only: { type: "string" },
      quick: { type: "boolean", default: false },
      out: { type: "string" },
    },
  });
  const only = values.only?.split(",").map((s) => s.trim()).filter(Boolean);
  const sections = measures.map((m) => m.section);
  for (const name of only ?? []) {
    if (!sections.includes(name)) {
      throw new Error(`unknown section '${name}'; sections: ${sections.join(", ")}`);
    }
  }
  return { only, quick: values.quick ?? false, out: values.out };
}

/** What a run found: the shape of results.json. */
export interface BenchReport {
  /** The machine (describeMachine). */
  machine: Record<string, unknown>;
  /** Counts and durations, the sections run, quick or not, and the run's seconds. */
  config: BenchConfig & { sections: readonly string[]; quick: boolean; bench_seconds: number };
  /** Every target checked. */
  targets: Check[];
  /** Each measure's figures under its key. */
  results: Record<string, unknown>;
  /** The printed table. */
  table: Row[];
}

function printProgress(message: string): void {
  console.error(`[bench] ${message}`);
}

/** Runs one measure; a failure becomes an error row and an `error` result under its title. */
async function runMeasure(ctx: BenchContext, title: string, run: () => Promise<void>) {
  try {
    await run();
  } catch (error) {
    const message = (error as Error).message.split("\n")[0];
    ctx.progress(`${title} FAILED: ${(error as Error).stack ?? error}`);
    ctx.report.row(title, "error", `FAILED: ${message}`);
    ctx.report.result(title, { error: (error as Error).message });
  }
}

/**
 * Runs the selected measures of `measures` with `config` and returns what
 * they found; `progress` gets the progress lines (default: stderr).
 */
export async function runBench(
  options: BenchOptions,
  config: BenchConfig,
  measures: readonly Measure[] = MEASURES,
  progress: (message: string) => void = printProgress,
): Promise<BenchReport> {
  const began = performance.now();
  const machine = await describeMachine();
  const ctx: BenchContext = {
    config,
    report: new Report(),
    machine,
    ticksPerS: await clockTicksPerSecond(),
    progress,
    sampleStatus: null,
  };
  progress(`machine: ${JSON.stringify(machine)}`);
  const selected = measures.filter((m) => !options.only || options.only.includes(m.section));
  const onBridge = selected.flatMap((m) => m.uses === "bridge" ? [m] : []);
  const onSimulator = selected.flatMap((m) => m.uses === "simulator" ? [m] : []);
  if (onBridge.length || onSimulator.length) {
    await warmCache(NATIVE);
    await withSimulator(config.telemetryHz, async (sim) => {
      const bridge = await startBridge(NATIVE, sim.port);
      try {
        await captureStatus(ctx, bridge.client);
        for (const m of onBridge) await runMeasure(ctx, m.title, () => m.run(ctx, sim, bridge));
      } finally {
        await bridge.stop();
      }
      for (const m of onSimulator) await runMeasure(ctx, m.title, () => m.run(ctx, sim));
    });
  }
  for (const m of selected) {
    if (m.uses === "own") await runMeasure(ctx, m.title, () => m.run(ctx));
  }
  return {
    machine,
    config: {
      ...config,
      sections: options.only ?? measures.map((m) => m.section),
      quick: options.quick,
      bench_seconds: Math.round((performance.now() - began) / 100) / 10,
    },
    targets: ctx.report.checks,
    results: ctx.report.results,
    table: ctx.report.rows,
  };
}

/** "N of M targets met (missed: …); bench took S s". */
export function summaryLine(report: BenchReport): string {
  const missed = report.targets.filter((c) => !c.met).map((c) => c.name);
  return `${report.targets.length - missed.length} of ${report.targets.length} targets met` +
    (missed.length ? ` (missed: ${missed.join(", ")})` : "") +
    `; bench took ${report.config.bench_seconds} s`;
}

async function main(args: string[]): Promise<number> {
  let options: BenchOptions;
  let config: BenchConfig;
  try {
    options = parseBenchArgs(args);
    config = benchConfig(options.quick);
  } catch (error) {
    console.error(`bench: ${(error as Error).message}`);
    return 2;
  }
  const report = await runBench(options, config);
  for (const line of formatTable(report.table, report.machine)) console.log(line);
  console.log(summaryLine(report));
  const partial = options.only !== undefined || options.quick;
  const out = options.out ?? (partial ? undefined : DEFAULT_OUT);
  if (out) {
    await Deno.writeTextFile(out, JSON.stringify(report, null, 2) + "\n");
    console.log(`results written to ${out}`);
  } else {
    console.log("partial run (--only/--quick): results.json not written (use --out=PATH)");
  }
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
