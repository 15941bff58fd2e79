/**
 * Subprocesses for the tests and the benchmarks: one wrapper
 * ({@link Subprocess}) that keeps a process's output as it comes, waits for a
 * line, writes to its stdin, and stops it with a signal; and `main.ts` run the
 * way `deno task start` does, with the shipped permission set (`-P=bridge`)
 * and V8 flags, so the tests prove that set suffices and run what ships.
 */
import { V8_FLAGS_ARG } from "../lib/permissions.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const CONFIG = new URL("../deno.json", import.meta.url).pathname;
const encoder = new TextEncoder();
/** How much of the interleaved output {@link Subprocess.output} keeps. */
const OUTPUT_CHARS = 4000;

/** Arguments that run `main.ts` the way `deno task start` does (plus `denoFlags`). */
export function mainArgs(args: string[], denoFlags: string[] = []): string[] {
  return ["run", ...denoFlags, "-P=bridge", V8_FLAGS_ARG, "--config", CONFIG, MAIN, ...args];
}

/** The result of a short run. */
export interface CliResult {
  /** The exit code. */
  code: number;
  /** Everything written to stdout. */
  stdout: string;
  /** Everything written to stderr. */
  stderr: string;
}

/** Options of {@link runToEnd}. */
export interface RunOptions {
  /** Environment variables to set. */
  env?: Record<string, string>;
  /** Start from an empty environment (only `env`). */
  clearEnv?: boolean;
  /** Working directory. */
  cwd?: string;
  /** Kill the process after this many ms (it then fails). */
  timeoutMs?: number;
}

/** Runs `command args` to completion, stdin closed, and returns its output. */
export async function runToEnd(
  command: string,
  args: string[],
  options: RunOptions = {},
): Promise<CliResult> {
  const output = await new Deno.Command(command, {
    args,
    env: options.env,
    clearEnv: options.clearEnv,
    cwd: options.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: options.timeoutMs === undefined ? undefined : AbortSignal.timeout(options.timeoutMs),
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Runs `main.ts` with `args` to completion. */
export function runCli(args: string[], options: RunOptions = {}): Promise<CliResult> {
  return runToEnd(Deno.execPath(), mainArgs(args), options);
}

/** Options of {@link Subprocess}. */
export interface SubprocessOptions {
  /** Environment variables to set. */
  env?: Record<string, string>;
  /** Pipe stdin, for {@link Subprocess.send} (default: stdin closed). */
  stdin?: boolean;
  /**
   * Keep only about the last this many characters of each stream, for
   * long-running processes (default: everything; {@link Subprocess.lines}
   * then holds every stdout line).
   */
  keepChars?: number;
}

/** A long-running process whose output is collected as it comes. */
export class Subprocess {
  /** The Deno child process. */
  readonly child: Deno.ChildProcess;
  /** stdout so far (its tail with `keepChars`). */
  stdout = "";
  /** stderr so far (its tail with `keepChars`). */
  stderr = "";
  /** Complete stdout lines so far (without `keepChars`). */
  readonly lines: string[] = [];
  #partialLine = "";
  #interleaved = "";
  #keepChars: number | undefined;
  #stdin: WritableStreamDefaultWriter<Uint8Array> | null = null;
  #pumps: Promise<void>;

  /** Starts `command args`. */
  constructor(command: string, args: string[], options: SubprocessOptions = {}) {
    this.#keepChars = options.keepChars;
    this.child = new Deno.Command(command, {
      args,
      env: options.env,
      stdin: options.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (options.stdin) this.#stdin = this.child.stdin.getWriter();
    const pump = async (stream: ReadableStream<Uint8Array>, key: "stdout" | "stderr") => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) this.#append(key, decoder.decode(chunk, { stream: true }));
    };
    this.#pumps = Promise.all([
      pump(this.child.stdout, "stdout"),
      pump(this.child.stderr, "stderr"),
    ]).then(() => {});
  }

  #append(key: "stdout" | "stderr", text: string): void {
    this[key] += text;
    this.#interleaved += text;
    if (this.#interleaved.length > 2 * OUTPUT_CHARS) {
      this.#interleaved = this.#interleaved.slice(-OUTPUT_CHARS);
    }
    const keep = this.#keepChars;
    if (keep !== undefined) {
      if (this[key].length > 2 * keep) this[key] = this[key].slice(-keep);
      return;
    }
    if (key !== "stdout") return;
    const parts = (this.#partialLine + text).split("\n");
    this.#partialLine = parts.pop()!;
    this.lines.push(...parts);
  }

  /** The process id. */
  get pid(): number {
    return this.child.pid;
  }

  /** The last 4000 characters of stdout and stderr as they came, interleaved. */
  get output(): string {
    return this.#interleaved.slice(-OUTPUT_CHARS);
  }

  /** Resolves when `pattern` appears in stdout or stderr; returns the match. */
  async waitFor(pattern: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      const match = this.stdout.match(pattern) ?? this.stderr.match(pattern);
      if (match) return match;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error(`no ${pattern} within ${timeoutMs} ms; stderr:\n${this.stderr}`);
  }

  /** Resolves with the first stdout line at index `from` or later that matches `pattern`. */
  async waitLine(pattern: RegExp, timeoutMs = 10_000, from = 0): Promise<RegExpMatchArray> {
    const deadline = performance.now() + timeoutMs;
    let checked = from;
    while (true) {
      for (; checked < this.lines.length; checked++) {
        const match = this.lines[checked].match(pattern);
        if (match) return match;
      }
      if (performance.now() > deadline) {
        throw new Error(`no line ${pattern} within ${timeoutMs} ms; stderr:\n${this.stderr}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Writes one line to stdin (start with `stdin: true`). */
  async send(line: string): Promise<void> {
    if (!this.#stdin) throw new Error("started without stdin: true");
    await this.#stdin.write(encoder.encode(line + "\n"));
  }

  /**
   * Closes stdin, sends `signal` (SIGKILL after `graceMs`, if given) and
   * resolves with the exit status once output is drained.
   */
  async stop(signal: Deno.Signal = "SIGTERM", graceMs?: number): Promise<Deno.CommandStatus> {
    try {
      await this.#stdin?.close();
    } catch {
      // Already closed.
    }
    try {
      this.child.kill(signal);
    } catch {
      // Already exited.
    }
    const timer = graceMs === undefined ? undefined : setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // Exited meanwhile.
      }
    }, graceMs);
    try {
      return await this.exited();
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resolves with the exit status once the process ended and output is drained. */
  async exited(): Promise<Deno.CommandStatus> {
    const status = await this.child.status;
    await this.#pumps;
    return status;
  }
}

/** A long-running `main.ts` process (with `-P=bridge`). */
export class MainProcess extends Subprocess {
  /** Starts `main.ts` with `args`; `denoFlags` go to `deno run` (e.g. `--inspect`). */
  constructor(args: string[], denoFlags: string[] = []) {
    super(Deno.execPath(), mainArgs(args, denoFlags));
  }
}

/** Resolves once `path` is a socket that accepts connections. */
export async function waitForSocket(path: string, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    try {
      const conn = await Deno.connect({ transport: "unix", path });
      conn.close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
  throw new Error(`socket ${path} not ready within ${timeoutMs} ms`);
}

/** A fresh socket path under /tmp (inside the bridge's permitted directories). */
export async function tempSocketPath(): Promise<{ path: string; cleanup(): Promise<void> }> {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "pb-test-" });
  return {
    path: `${dir}/bridge.sock`,
    cleanup: () => Deno.remove(dir, { recursive: true }).catch(() => {}),
  };
}

/** A bridge subprocess on a fresh socket; `extra` are more `run` options. */
export async function startBridge(
  host: string,
  extra: string[] = [],
  denoFlags: string[] = [],
): Promise<{ bridge: MainProcess; socket: string; cleanup(): Promise<void> }> {
  const { path, cleanup } = await tempSocketPath();
  const bridge = new MainProcess(
    ["run", "--host", host, "--socket", path, "--log-level", "debug", ...extra],
    denoFlags,
  );
  try {
    await waitForSocket(path, 15_000);
  } catch (error) {
    await bridge.stop("SIGKILL");
    throw new Error(`${(error as Error).message}\n${bridge.stderr}`);
  }
  return {
    bridge,
    socket: path,
    cleanup: async () => {
      await bridge.stop("SIGKILL");
      await cleanup();
    },
  };
}
