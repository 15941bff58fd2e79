/**
 * Bench section `instructions`: the footprint's steady traffic (telemetry at
 * 2 Hz, a controller heartbeat every second) with the bridge, the I/O floor
 * and the floor with the link's watchdog timer each run under valgrind's
 * callgrind, which counts the instructions they execute (every thread, JIT
 * code included). On a VM the CPU rows of the footprint swing from run to
 * run with what an idle gap costs there; an instruction count does not, so
 * this is the repeatable measure of the bridge's own work per event. No
 * target: the targets are CPU time. Skipped, saying why, without valgrind.
 */

import { type DenoRunner, NATIVE, sleep, startBridge, startIoFloor } from "./proc.ts";
import type { OwnRun } from "./context.ts";
import { telemetryFrame, temperatureOf, withSimulator } from "./frames.ts";
import { fmt } from "./report.ts";
import { HEARTBEAT_MS } from "./socket_client.ts";

/** JIT warm-up under callgrind before counting, s. */
const SETTLE_S = 10;

/** Deno under callgrind; the process keeps its pid (valgrind runs in place). */
const CALLGRIND: DenoRunner = {
  label: `${NATIVE.label} under callgrind`,
  command: "valgrind",
  prefix: [
    "--tool=callgrind",
    "--callgrind-out-file=/dev/null",
    "--smc-check=all-non-file",
    NATIVE.command,
  ],
  startTimeoutMs: 240_000,
};

/** What {@link benchInstructions} found (results.json `instructions`). */
export interface InstructionsResult {
  /** Seconds counted. */
  seconds: number;
  /** Events a second: device frames and heartbeats. */
  events_per_s: number;
  /** Instructions a second of each process. */
  per_s: { bridge: number; io_floor: number; io_floor_watchdog: number };
  /** The same per event. */
  per_event: { bridge: number; io_floor: number; io_floor_watchdog: number };
}

/** Instructions `pid` has executed so far, all threads (`callgrind_control -e`). */
async function instructionsOf(pid: number): Promise<number> {
  const out = await new Deno.Command("callgrind_control", {
    args: ["-e", String(pid)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const threads = [...text.matchAll(/^\s*Th\s+\d+\s+([\d,]+)/gm)];
  if (!out.success || threads.length === 0) {
    throw new Error(`callgrind_control -e ${pid} gave no counts: ${text.trim().slice(0, 300)}`);
  }
  return threads.reduce((sum, m) => sum + Number(m[1].replaceAll(",", "")), 0);
}

/** Why callgrind cannot run here, or null. */
async function missingCallgrind(): Promise<string | null> {
  for (const tool of ["valgrind", "callgrind_control"]) {
    try {
      const out = await new Deno.Command(tool, {
        args: ["--version"],
        stdout: "null",
        stderr: "null",
      })
        .output();
      if (!out.success) return `${tool} --version failed`;
    } catch {
      return `${tool} is not installed (Debian: apt-get install valgrind)`;
    }
  }
  return null;
}

/** Instructions per second and per event of the bridge and the I/O floor, under callgrind. */
export const benchInstructions: OwnRun = async (ctx): Promise<void> => {
  const section = "5b instructions (callgrind)";
  const missing = await missingCallgrind();
  if (missing !== null) {
    ctx.progress(`instructions: skipped: ${missing}`);
    ctx.report.result("instructions", { skipped: missing });
    ctx.report.row(section, "instructions under callgrind", `SKIPPED: ${missing}`);
    return;
  }
  const seconds = ctx.config.longS;
  ctx.progress(`instructions: bridge and I/O floor under callgrind, ${seconds} s at 2 Hz`);
  const result = await withSimulator(ctx.config.telemetryHz, async (sim) => {
    sim.silence(true);
    let k = 0;
    const ticker = setInterval(
      () => sim.sendTextToAll(telemetryFrame(temperatureOf(k++))),
      1000 / ctx.config.telemetryHz,
    );
    const started: { stop(): Promise<void> }[] = [];
    try {
      // One at a time: three Deno start-ups under callgrind at once starve a small machine.
      const bridge = await startBridge(CALLGRIND, sim.port);
      started.push(bridge);
      const floor = await startIoFloor(CALLGRIND, sim.port);
      started.push(floor);
      const watchdogFloor = await startIoFloor(CALLGRIND, sim.port, true);
      started.push(watchdogFloor);
      await sleep(SETTLE_S * 1000);
      const pids = [bridge.proc.pid, floor.proc.pid, watchdogFloor.proc.pid];
      const before = await Promise.all(pids.map(instructionsOf));
      const startedAt = performance.now();
      await sleep(seconds * 1000);
      const after = await Promise.all(pids.map(instructionsOf));
      const s = (performance.now() - startedAt) / 1000;
      const events = ctx.config.telemetryHz + 1000 / HEARTBEAT_MS;
      const [b, f, w] = after.map((n, i) => (n - before[i]) / s);
      const round = (x: number) => Math.round(x);
      return {
        seconds: Math.round(s * 10) / 10,
        events_per_s: events,
        per_s: { bridge: round(b), io_floor: round(f), io_floor_watchdog: round(w) },
        per_event: {
          bridge: round(b / events),
          io_floor: round(f / events),
          io_floor_watchdog: round(w / events),
        },
      } satisfies InstructionsResult;
    } finally {
      clearInterval(ticker);
      await Promise.all(started.map((p) => p.stop()));
    }
  });
  ctx.report.result("instructions", result);
  const kilo = (n: number) => `${fmt(n / 1000, 0)} k`;
  const { per_s: perS, per_event: perEvent } = result;
  ctx.report.row(
    section,
    `instructions a second at 2 Hz + 1 Hz heartbeat (${fmt(result.seconds, 0)} s)`,
    `bridge ${kilo(perS.bridge)}, I/O floor ${kilo(perS.io_floor)}, with the watchdog timer ${
      kilo(perS.io_floor_watchdog)
    }`,
  );
  ctx.report.row(
    section,
    `instructions per event (${fmt(result.events_per_s, 0)} a second)`,
    `bridge ${kilo(perEvent.bridge)}, I/O floor ${kilo(perEvent.io_floor)} = ${
      fmt(perS.bridge / perS.io_floor, 1)
    }× (vs the floor with the watchdog timer: ${fmt(perS.bridge / perS.io_floor_watchdog, 1)}×)`,
  );
};
