/**
 * Bench section `logs`: bytes the bridge logs while the device faults every
 * second — a fault (the PTC sensor open) pushed, cleared half a second later
 * and the link dropped,
 * so the bridge sees every fault, every clear and every reconnect. The first
 * minute holds each line once; after it, only the repeat counts, so the
 * steady rate is taken from the time after the first repeat window.
 */
import { Simulator } from "../../lib/simulator/mod.ts";
import { REPEAT_WINDOW_MS } from "../../lib/log.ts";
import { mainArgs } from "../process.ts";
import { type DenoRunner, sleep } from "./proc.ts";

/** What {@link measureLogVolume} found. */
export interface LogVolume {
  seconds: number;
  faults: number;
  bytes: number;
  lines: number;
  /** Bytes per hour after the first repeat window (from all of it when the run is shorter). */
  steady_bytes_per_hour: number;
  /** The same, for a day. */
  steady_bytes_per_day: number;
  /** Whether the run outlasted the first repeat window (else the rate overstates the steady one). */
  steady: boolean;
  /** A few lines of the log, to show what it says. */
  sample: string[];
}

/** Runs a bridge for `seconds` beside a simulated device that faults every second. */
export async function measureLogVolume(runner: DenoRunner, seconds: number): Promise<LogVolume> {
  const sim = new Simulator({ telemetryIntervalMs: 500 });
  await sim.start();
  const dir = await Deno.makeTempDir({ prefix: "pb-bench-logs-" });
  const child = new Deno.Command(runner.command, {
    args: [
      ...runner.prefix,
      ...mainArgs(["run", "--host", `127.0.0.1:${sim.port}`, "--socket", `${dir}/bridge.sock`]),
    ],
    env: runner.env,
    cwd: new URL("../../", import.meta.url).pathname,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const chunks: { at: number; text: string }[] = [];
  const decoder = new TextDecoder();
  const pump = (async () => {
    for await (const chunk of child.stderr) {
      chunks.push({ at: performance.now(), text: decoder.decode(chunk, { stream: true }) });
    }
  })();
  let faults = 0;
  try {
    await sleep(2000);
    const started = performance.now();
    while (performance.now() - started < seconds * 1000) {
      sim.injectFault("ptc_sensor_open");
      faults++;
      await sleep(500);
      sim.clearFaults();
      sim.abortClients();
      await sleep(500);
    }
    const ended = performance.now();
    const steadyFrom = started + REPEAT_WINDOW_MS + 1000;
    const steady = ended - steadyFrom > 30_000;
    const window = chunks.filter((c) => c.at >= (steady ? steadyFrom : started) && c.at <= ended);
    const windowBytes = window.reduce((n, c) => n + new TextEncoder().encode(c.text).length, 0);
    const windowS = (ended - (steady ? steadyFrom : started)) / 1000;
    const text = chunks.filter((c) => c.at >= started).map((c) => c.text).join("");
    const perHour = Math.round((windowBytes / windowS) * 3600);
    return {
      seconds: Math.round((ended - started) / 100) / 10,
      faults,
      bytes: new TextEncoder().encode(text).length,
      lines: text.split("\n").filter(Boolean).length,
      steady_bytes_per_hour: perHour,
      steady_bytes_per_day: perHour * 24,
      steady,
      sample: text.split("\n").filter(Boolean).slice(-6).map((l) => l.slice(0, 200)),
    };
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await pump;
    await sim.stop();
    await Deno.remove(dir, { recursive: true });
  }
}
