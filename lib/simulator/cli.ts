/**
 * `panda-breath simulate`: one {@link Simulator} in the foreground, for trying the bridge
 * without a device (and for the Klipper end-to-end tests, which start it this way).
 *
 * @module
 */

import { Simulator } from "./simulator.ts";

/** Options of {@link runSimulatorCli}. */
export interface SimulatorCliOptions {
  /** Port (0 picks a free one). */
  port: number;
  /** Interface to listen on. */
  hostname: string;
  /** Thermal-model speed-up. */
  speed?: number;
  /** How far the device's sensor reads below the chamber (°C, default 0). */
  sensorBiasC?: number;
  /** Telemetry interval in ms. */
  interval?: number;
  /** JSON file for the persisted settings. */
  stateFile?: string;
}

/**
 * Runs a simulator until SIGINT/SIGTERM or `signal`: prints `listening on ws://HOST:PORT/ws`
 * to stdout once, then one stderr line per received frame or event (never the secrets).
 */
export async function runSimulatorCli(
  opts: SimulatorCliOptions,
  signal?: AbortSignal,
): Promise<void> {
  const simulator = new Simulator({
    hostname: opts.hostname,
    port: opts.port,
    speed: opts.speed,
    sensorBiasC: opts.sensorBiasC,
    telemetryIntervalMs: opts.interval,
    stateFile: opts.stateFile,
    log: (line) => console.error(`[simulator] ${line}`),
  });
  await simulator.start();
  try {
    console.log(`listening on ${simulator.url}`);
    await waitForShutdown(signal);
  } finally {
    await simulator.stop();
  }
}

function waitForShutdown(signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  return new Promise((resolve) => {
    const finish = () => {
      for (const name of signals) Deno.removeSignalListener(name, finish);
      signal?.removeEventListener("abort", finish);
      resolve();
    };
    for (const name of signals) Deno.addSignalListener(name, finish);
    signal?.addEventListener("abort", finish, { once: true });
  });
}
