/**
 * Processes for the benchmarks: the bridge (`main.ts run` with the shipped
 * permission set, natively or under qemu-aarch64) and the bare-Deno baseline.
 */

import { mainArgs, Subprocess, waitForSocket } from "../process.ts";
import { BenchClient } from "./socket_client.ts";

const IDLE = new URL("./idle.ts", import.meta.url).pathname;
const IO_FLOOR = new URL("./io_floor.ts", import.meta.url).pathname;
const CONFIG = new URL("../../deno.json", import.meta.url).pathname;
const OUTPUT_TAIL_BYTES = 64 * 1024;

/** How to start Deno: natively, or an arm64 Deno under qemu-aarch64. */
export interface DenoRunner {
  /** Shown in the table, e.g. "x86_64" or "aarch64 (qemu, emulated)". */
  label: string;
  command: string;
  /** Arguments before Deno's own (e.g. qemu's `-L SYSROOT DENO`). */
  prefix: string[];
  env?: Record<string, string>;
  /** Start-up allowance, ms. */
  startTimeoutMs: number;
}

/** The Deno running this bench. */
export const NATIVE: DenoRunner = {
  label: Deno.build.arch,
  command: Deno.execPath(),
  prefix: [],
  startTimeoutMs: 15_000,
};

/**
 * A bench child process: a {@link Subprocess} that keeps only the last 64 KiB
 * of each stream and is stopped with SIGTERM, then SIGKILL after `graceMs`.
 */
export class Proc extends Subprocess {
  /** Starts `command args`. */
  constructor(command: string, args: string[], env?: Record<string, string>) {
    super(command, args, { env, keepChars: OUTPUT_TAIL_BYTES });
  }

  /** Resolves when `pattern` appears in stdout or stderr. */
  async waitForOutput(pattern: RegExp, timeoutMs: number): Promise<void> {
    await this.waitFor(pattern, timeoutMs);
  }

  /** SIGTERM (or `signal`), then SIGKILL after `graceMs`; resolves once it exited. */
  override async stop(
    signal: Deno.Signal = "SIGTERM",
    graceMs = 5000,
  ): Promise<Deno.CommandStatus> {
    return await super.stop(signal, graceMs);
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A running bridge with a controller client connected (like the Klipper extra). */
export interface RunningBridge {
  proc: Proc;
  client: BenchClient;
  socket: string;
  /** ms from spawn until the socket accepted connections. */
  socketReadyMs: number;
  /** ms from spawn until the bridge reported the device connected. */
  connectedMs: number;
  stop(): Promise<void>;
}

/**
 * Starts `main.ts run --host 127.0.0.1:PORT` with `-P=bridge`, connects a
 * client that says hello, subscribes (unless `subscribe` is false) and
 * heartbeats every second, and waits until the bridge reports the device
 * connected.
 */
export async function startBridge(
  runner: DenoRunner,
  devicePort: number,
  subscribe = true,
): Promise<RunningBridge> {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "pb-bench-" });
  const socket = `${dir}/bridge.sock`;
  const spawnedAt = performance.now();
  const proc = new Proc(runner.command, [
    ...runner.prefix,
    ...mainArgs(["run", "--host", `127.0.0.1:${devicePort}`, "--socket", socket]),
  ], runner.env);
  const cleanup = async () => {
    await proc.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await waitForSocket(socket, runner.startTimeoutMs);
    const socketReadyMs = performance.now() - spawnedAt;
    const client = await BenchClient.connect(socket);
    await client.actAsController(subscribe);
    const deadline = performance.now() + runner.startTimeoutMs;
    while (true) {
      const { message } = await client.request("status");
      if ((message.result as { connected: boolean }).connected) break;
      if (performance.now() > deadline) throw new Error("the bridge did not reach the device");
      await sleep(20);
    }
    const connectedMs = performance.now() - spawnedAt;
    return {
      proc,
      client,
      socket,
      socketReadyMs,
      connectedMs,
      stop: async () => {
        await client.close();
        await cleanup();
      },
    };
  } catch (error) {
    await cleanup();
    throw new Error(`${(error as Error).message}\nbridge output:\n${proc.output}`);
  }
}

/** Starts the bare-Deno baseline (tests/bench/idle.ts) and waits for it to be up. */
export async function startIdle(runner: DenoRunner): Promise<Proc> {
  const proc = new Proc(
    runner.command,
    [...runner.prefix, "run", "--config", CONFIG, IDLE],
    runner.env,
  );
  await proc.waitForOutput(/idle ready/, runner.startTimeoutMs);
  return proc;
}

/**
 * Starts the I/O-floor reference (tests/bench/io_floor.ts) with the bridge's
 * permission set, with the device link's watchdog timer when `watchdog`, and
 * connects a controller client to it.
 */
export async function startIoFloor(
  runner: DenoRunner,
  devicePort: number,
  watchdog = false,
): Promise<{ proc: Proc; client: BenchClient; stop(): Promise<void> }> {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "pb-bench-floor-" });
  const socket = `${dir}/floor.sock`;
  const proc = new Proc(runner.command, [
    ...runner.prefix,
    "run",
    "-P=bridge",
    "--config",
    CONFIG,
    IO_FLOOR,
    "--host",
    `127.0.0.1:${devicePort}`,
    "--socket",
    socket,
    ...(watchdog ? ["--watchdog"] : []),
  ], runner.env);
  const cleanup = async () => {
    await proc.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await waitForSocket(socket, runner.startTimeoutMs);
    const client = await BenchClient.connect(socket);
    await client.actAsController();
    return {
      proc,
      client,
      stop: async () => {
        await client.close();
        await cleanup();
      },
    };
  } catch (error) {
    await cleanup();
    throw new Error(`${(error as Error).message}\nio_floor output:\n${proc.output}`);
  }
}

/** Runs each benchmarked program once so that their start-up is not a first compile. */
export async function warmCache(runner: DenoRunner): Promise<void> {
  const warmUps = [
    mainArgs(["--version"]),
    ["run", "--config", CONFIG, IDLE, "--once"],
    ["run", "-P=bridge", "--config", CONFIG, IO_FLOOR, "--once"],
  ];
  for (const args of warmUps) {
    const out = await new Deno.Command(runner.command, {
      args: [...runner.prefix, ...args],
      env: runner.env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`warm-up failed: ${new TextDecoder().decode(out.stderr).slice(-2000)}`);
    }
  }
}
