/**
 * Shared machinery of the fault-injection suite: the bridge as a real
 * subprocess (`-P=bridge`) with a socket-API client whose lines are
 * scanned for secrets, leak bounds, a
 * wrong-state clock, and the per-run ledger that `zz_summary_test.ts` turns
 * into the summary table and `results.latest.json`.
 *
 * `deno test` runs each test file in its own isolate of one process, so the
 * ledger and every captured output are appended to files in a run
 * directory keyed by the test process's pid.
 */
import { FAKE_SECRETS } from "../fake_device.ts";
import { SIMULATOR_SECRETS } from "../../lib/simulator/mod.ts";
import { MainProcess, Subprocess, tempSocketPath, waitForSocket } from "../process.ts";
import { alive } from "../procfs.ts";
import { type ApiMessage, SocketClient } from "../socket_client.ts";

/** Soak mode: longer loops and more frames (env PANDA_BRIDGE_SOAK=1). */
export const SOAK = Deno.env.get("PANDA_BRIDGE_SOAK") === "1";

/** Every secret a device ever sends in its connect frame, from both device stand-ins. */
export const ALL_SECRETS: readonly string[] = [...SIMULATOR_SECRETS, ...FAKE_SECRETS];

/** Start time of this process (clock ticks since boot): with the pid, names this run. */
const PROCESS_START = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ")[19];

/** Where this run's ledger and captured output live (one per `deno test` process). */
export const RUN_DIR = `/tmp/pb-faults-run-${Deno.pid}-${PROCESS_START}`;
Deno.mkdirSync(RUN_DIR, { recursive: true });

const encoder = new TextEncoder();

import { delay, until } from "../wait.ts";
export { delay, until };

// ---------------------------------------------------------------------------
// Captured output and the secret scan
// ---------------------------------------------------------------------------

/** Appends `text` (a process's output, a status JSON, an error) to this run's capture. */
export function capture(label: string, text: string): void {
  if (text === "") return;
  Deno.writeFileSync(
    `${RUN_DIR}/captured.txt`,
    encoder.encode(`\n===== ${label}\n${text}\n`),
    { append: true },
  );
}

/** The secrets found in `text` (empty when clean). */
export function secretsIn(text: string): string[] {
  return ALL_SECRETS.filter((secret) => text.includes(secret));
}

/** Bytes of socket-API traffic scanned for secrets in this isolate. */
export const socketScan = { lines: 0, bytes: 0 };

function scanSocketLine(line: string): void {
  socketScan.lines++;
  socketScan.bytes += line.length;
  if (secretsIn(line).length > 0) capture("socket line carrying a secret", line);
}

// ---------------------------------------------------------------------------
// The ledger
// ---------------------------------------------------------------------------

/** One scenario's outcome, as in the summary table. */
export interface ScenarioRecord {
  /** The scenario's name. */
  scenario: string;
  /** Its group (device, socket, process, security...). */
  group: string;
  /** Faults injected. */
  faults_injected: number;
  /** Faults the system came through. */
  faults_survived: number;
  /** Desired-state checks that failed at the end of the scenario (must be 0). */
  mismatches: number;
  /** Longest time the device stayed in a wrong state after a recovery, ms (null: n/a). */
  max_wrong_state_ms: number | null;
  /** How long the scenario ran, ms. */
  duration_ms: number;
  /** Measured figures (fd/RSS start/end, counts), free-form. */
  figures: Record<string, number | string | boolean | null>;
  /** Whether the scenario passed. */
  passed: boolean;
  /** Why it failed (first 500 characters). */
  error?: string;
}

/** Counts one scenario: faults in, faults survived, mismatches, wrong-state time. */
export class Scenario {
  /** The scenario's name. */
  readonly name: string;
  /** Its group. */
  readonly group: string;
  /** Faults injected so far. */
  injected = 0;
  /** Faults survived so far. */
  survived = 0;
  /** Failed end-of-scenario checks so far. */
  mismatches = 0;
  /** Longest wrong-state time after a recovery, ms (null: none measured). */
  maxWrongMs: number | null = null;
  /** Measured figures for the summary. */
  readonly figures: ScenarioRecord["figures"] = {};
  readonly #started = performance.now();
  readonly #mismatchNotes: string[] = [];

  /** A scenario `name` in `group`, nothing counted yet. */
  constructor(group: string, name: string) {
    this.group = group;
    this.name = name;
  }

  /** Counts `n` injected faults. */
  inject(n = 1): void {
    this.injected += n;
  }

  /** Counts `n` faults the system came through (process alive, state recovered). */
  survive(n = 1): void {
    this.survived += n;
  }

  /** Records a wrong-state interval after recovery. */
  wrongFor(ms: number): void {
    this.maxWrongMs = Math.max(this.maxWrongMs ?? 0, Math.round(ms));
  }

  /** Checks one end-of-scenario invariant; a failure is counted and reported. */
  expect(ok: boolean, what: string): void {
    if (!ok) {
      this.mismatches++;
      this.#mismatchNotes.push(what);
    }
  }

  /** Throws when any invariant failed. */
  assertClean(): void {
    if (this.mismatches > 0) {
      throw new Error(`${this.name}: desired-state mismatches: ${this.#mismatchNotes.join("; ")}`);
    }
    if (this.survived !== this.injected) {
      throw new Error(`${this.name}: ${this.injected} faults injected, ${this.survived} survived`);
    }
  }

  /** The ledger entry. */
  record(passed: boolean, error?: string): ScenarioRecord {
    return {
      scenario: this.name,
      group: this.group,
      faults_injected: this.injected,
      faults_survived: this.survived,
      mismatches: this.mismatches,
      max_wrong_state_ms: this.maxWrongMs,
      duration_ms: Math.round(performance.now() - this.#started),
      figures: this.figures,
      passed,
      ...(error ? { error: error.slice(0, 500) } : {}),
    };
  }
}

function writeRecord(record: ScenarioRecord): void {
  Deno.writeFileSync(
    `${RUN_DIR}/ledger.jsonl`,
    encoder.encode(JSON.stringify(record) + "\n"),
    { append: true },
  );
}

/** Reads every record of this run. */
export function readLedger(): ScenarioRecord[] {
  let text = "";
  try {
    text = Deno.readTextFileSync(`${RUN_DIR}/ledger.jsonl`);
  } catch {
    return [];
  }
  return text.split("\n").filter((line) => line !== "").map((line) => JSON.parse(line));
}

/** Options of {@link scenarioTest}. */
export interface ScenarioTestOptions {
  /** Skip unless in soak mode. */
  soakOnly?: boolean;
}

/**
 * Registers a Deno test for one scenario; whatever happens, its record goes
 * to the ledger. Sanitizers are off: scenarios own subprocesses and servers
 * and close them in `finally` blocks; leaks are measured on the bridge.
 */
export function scenarioTest(
  group: string,
  name: string,
  body: (s: Scenario) => Promise<void>,
  options: ScenarioTestOptions = {},
): void {
  Deno.test({
    name: `[${group}] ${name}`,
    ignore: options.soakOnly === true && !SOAK,
    sanitizeOps: false,
    sanitizeResources: false,
    sanitizeExit: false,
    fn: async () => {
      const scenario = new Scenario(group, name);
      try {
        await body(scenario);
        scenario.assertClean();
        writeRecord(scenario.record(true));
      } catch (error) {
        writeRecord(scenario.record(false, (error as Error).message));
        throw error;
      }
    },
  });
}

// ---------------------------------------------------------------------------
// Leak bounds
// ---------------------------------------------------------------------------

/**
 * "Flat": end minus start (both taken after a warm-up and a quiet second)
 * within these bounds.
 * - fds: 3 — the device socket that may be mid-reconnect at the instant of
 *   a sample, one closing, and one the runtime opens lazily; a leak of one
 *   per flap or client would be hundreds.
 * - JS heap after a forced full GC: 512 KiB — what the program retains; a
 *   leak of 100 bytes per telemetry frame over 10^5 frames, or of 2.5 KiB
 *   per flap over 200 flaps, would exceed it.
 * - RSS: 40 MiB — RSS also holds what V8 and malloc keep reserved: under
 *   connection churn V8 grows its young generation (two semi-spaces of up
 *   to 16 MiB) and shrinks it later, and malloc keeps arenas (8 MiB slack).
 *   Measured in-process over 10^4 fast flaps, the heap in use after GC
 *   stayed at 3.8 MiB while RSS rose by up to 38 MiB and fell back. RSS is
 *   the coarse guard, the heap figure the exact one.
 */
export const FLAT_TOLERANCE = { fds: 3, rssKiB: 40 * 1024, heapBytes: 512 * 1024 } as const;

// ---------------------------------------------------------------------------
// The bridge under test
// ---------------------------------------------------------------------------

/** What a scenario needs of a running `main.ts`. */
export type RunningMain = Pick<MainProcess, "child" | "stdout" | "stderr" | "stop" | "exited">;

/** Options of {@link BridgeProcess.start}. */
export interface BridgeStartOptions {
  /** `--host` value. */
  host: string;
  /** Socket path (default: a fresh one under /tmp). */
  socket?: string;
  /** `--failsafe-timeout` in seconds (default 600). */
  failsafeTimeout?: number;
  /** `--log-level` (default debug). */
  logLevel?: string;
  /** More `run` arguments. */
  extraArgs?: string[];
  /** Do not wait for the socket (for runs expected to fail). */
  noWait?: boolean;
  /** Run with the V8 inspector, for {@link BridgeProcess.heapAfterGc}. */
  inspect?: boolean;
}

/** `panda-breath run` as a subprocess with the shipped permission set. */
export class BridgeProcess {
  /** The `main.ts` subprocess. */
  readonly process: RunningMain;
  /** Its socket path. */
  readonly socket: string;
  /** Names it in the capture. */
  readonly label: string;
  #cleanup: (() => Promise<void>) | null;
  #captured = false;
  #inspector: WebSocket | null = null;
  #inspectorId = 0;

  private constructor(
    process: RunningMain,
    socket: string,
    label: string,
    cleanup: (() => Promise<void>) | null,
  ) {
    this.process = process;
    this.socket = socket;
    this.label = label;
    this.#cleanup = cleanup;
  }

  /** Starts a bridge and waits until its socket accepts connections. */
  static async start(options: BridgeStartOptions, label = "bridge"): Promise<BridgeProcess> {
    let socket = options.socket;
    let cleanup: (() => Promise<void>) | null = null;
    if (!socket) {
      const temp = await tempSocketPath();
      socket = temp.path;
      cleanup = temp.cleanup;
    }
    const args = [
      "run",
      "--host",
      options.host,
      "--socket",
      socket,
      "--failsafe-timeout",
      String(options.failsafeTimeout ?? 600),
      "--log-level",
      options.logLevel ?? "debug",
      ...(options.extraArgs ?? []),
    ];
    // The V8 inspector lets a scenario force a full GC in the bridge and read its JS heap,
    // which tells a leak from V8 sizing its heap.
    const process = new MainProcess(args, options.inspect ? ["--inspect=127.0.0.1:0"] : []);
    const bridge = new BridgeProcess(process, socket, label, cleanup);
    if (!options.noWait) {
      try {
        await waitForSocket(socket, 15_000);
      } catch (error) {
        await bridge.kill("SIGKILL");
        throw new Error(`${(error as Error).message}\nstderr:\n${process.stderr}`);
      }
    }
    return bridge;
  }

  /** The process id. */
  get pid(): number {
    return this.process.child.pid;
  }

  /** Whether the process is still running. */
  get alive(): boolean {
    return alive(this.pid);
  }

  /** A new socket-API connection; every line it reads is scanned for secrets. */
  connect(keepNotifications?: number): Promise<SocketClient> {
    return SocketClient.connect(this.socket, { keepNotifications, onLine: scanSocketLine });
  }

  /** One-shot status over a fresh connection. */
  async status(): Promise<ApiMessage> {
    const api = await this.connect();
    try {
      return await api.status();
    } finally {
      await api.close();
    }
  }

  /**
   * The bridge's JS heap in bytes right after a forced full GC (through the
   * inspector; start with `inspect: true`). Unlike RSS it does not include
   * what V8 keeps reserved, so it shows a leak of retained objects exactly.
   */
  async heapAfterGc(): Promise<number> {
    if (!this.#inspector) {
      const url = this.process.stderr.match(/Debugger listening on (ws:\/\/\S+)/)?.[1];
      if (!url) throw new Error("bridge not started with inspect: true");
      const ws = new WebSocket(url);
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error("cannot reach the bridge's inspector"));
      });
      this.#inspector = ws;
    }
    const ws = this.#inspector;
    const call = (method: string) =>
      new Promise<ApiMessage>((resolve) => {
        const id = ++this.#inspectorId;
        const onMessage = (event: MessageEvent) => {
          const message = JSON.parse(event.data);
          if (message.id !== id) return;
          ws.removeEventListener("message", onMessage);
          resolve(message);
        };
        ws.addEventListener("message", onMessage);
        ws.send(JSON.stringify({ id, method, params: {} }));
      });
    await call("HeapProfiler.collectGarbage");
    await call("HeapProfiler.collectGarbage");
    const usage = await call("Runtime.getHeapUsage");
    return usage.result.usedSize as number;
  }

  /** Sends `signal`, waits for exit, captures output. */
  async kill(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    const status = await this.process.stop(signal);
    this.#capture();
    return status;
  }

  /** Waits for the exit (after an external signal), captures output. */
  async exited(): Promise<Deno.CommandStatus> {
    const status = await this.process.exited();
    this.#capture();
    return status;
  }

  /** Kills if still running and removes the temporary socket directory. */
  async dispose(): Promise<void> {
    if (this.#inspector) {
      const ws = this.#inspector;
      this.#inspector = null;
      const closed = new Promise((resolve) => ws.onclose = resolve);
      ws.close();
      await closed;
    }
    if (this.alive) await this.kill("SIGKILL");
    else this.#capture();
    await this.#cleanup?.();
  }

  #capture(): void {
    if (this.#captured) return;
    this.#captured = true;
    capture(`${this.label} pid ${this.pid} stdout`, this.process.stdout);
    capture(`${this.label} pid ${this.pid} stderr`, this.process.stderr);
  }
}

// ---------------------------------------------------------------------------
// Wrong-state clock
// ---------------------------------------------------------------------------

/**
 * Measures, from the moment a recovery starts (the device is reachable again,
 * the bridge restarted...), how long the device keeps a state other than the
 * desired one; waits for it to hold `settleMs`.
 */
export async function timeToDesired(
  matches: () => boolean,
  timeoutMs: number,
  what: string,
  settleMs = 300,
): Promise<number> {
  const started = performance.now();
  let matchedAt: number | null = null;
  let wrongUntil = 0;
  while (true) {
    const now = performance.now();
    if (matches()) {
      matchedAt ??= now;
      if (now - matchedAt >= settleMs) return wrongUntil;
    } else {
      matchedAt = null;
      wrongUntil = now - started;
    }
    if (now - started > timeoutMs) {
      throw new Error(`device not in the desired state (${what}) within ${timeoutMs} ms`);
    }
    await delay(5);
  }
}

/** A device's heating state as the invariant sees it. */
export interface HeatState {
  /** The device's work_on flag. */
  work_on: boolean;
  /** Its target, °C. */
  set_temp: number;
  /** Its mode (2: always-on), when known. */
  work_mode?: number;
}

/** Whether a device state is the desired target (0: off; else always-on at target). */
export function isDesired(state: HeatState, target: number): boolean {
  if (target === 0) return state.work_on === false;
  return state.work_on === true && state.set_temp === target &&
    (state.work_mode === undefined || state.work_mode === 2);
}

// ---------------------------------------------------------------------------
// Helper subprocesses
// ---------------------------------------------------------------------------

/** Python 3 for the helpers and the Klipper side (env PYTHON overrides). */
export const PYTHON: string = Deno.env.get("PYTHON") ?? "python3";

/**
 * A helper subprocess (stdin piped, stdout lines collected) whose output
 * goes to this run's capture for the secret scan when it is stopped.
 */
export class LineProcess extends Subprocess {
  /** Names the process in the capture. */
  readonly label: string;

  /** Starts `command args`. */
  constructor(command: string, args: string[], label: string, env?: Record<string, string>) {
    super(command, args, { env, stdin: true });
    this.label = label;
  }

  /** Stops like {@link Subprocess.stop}, then captures the output. */
  override async stop(
    signal: Deno.Signal = "SIGTERM",
    graceMs?: number,
  ): Promise<Deno.CommandStatus> {
    const status = await super.stop(signal, graceMs);
    capture(`${this.label} pid ${this.pid} stdout`, this.stdout);
    capture(`${this.label} pid ${this.pid} stderr`, this.stderr);
    return status;
  }
}

/** tests/faults/rst_proxy.py: a proxy whose client connections end with a bare RST. */
export class RstProxy {
  /** The proxy subprocess. */
  readonly process: LineProcess;
  /** The port it listens on. */
  readonly port: number;

  private constructor(process: LineProcess, port: number) {
    this.process = process;
    this.port = port;
  }

  /** Starts a proxy in front of 127.0.0.1:`upstreamPort`. */
  static async start(upstreamPort: number): Promise<RstProxy> {
    const script = new URL("./rst_proxy.py", import.meta.url).pathname;
    const process = new LineProcess(PYTHON, [script, String(upstreamPort)], "rst_proxy");
    const match = await process.waitLine(/^listening (\d+)$/);
    return new RstProxy(process, Number(match[1]));
  }

  /** Its `host:port`, for `--host`. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Resets every client connection; resolves with how many. */
  async reset(): Promise<number> {
    const from = this.process.lines.length;
    await this.process.send("rst");
    const match = await this.process.waitLine(/^reset (\d+)$/, 5000, from);
    return Number(match[1]);
  }

  /** Stops the proxy. */
  async close(): Promise<void> {
    await this.process.stop("SIGTERM");
  }
}
