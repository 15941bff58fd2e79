/**
 * Real subprocesses of `main.ts` for tests, run with the shipped permission
 * set (`-P=bridge`), so the tests prove that set suffices.
 */

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const CONFIG = new URL("../deno.json", import.meta.url).pathname;

/** Arguments that run `main.ts` the way `deno task start` does (plus `denoFlags`). */
export function mainArgs(args: string[], denoFlags: string[] = []): string[] {
  return ["run", ...denoFlags, "-P=bridge", "--config", CONFIG, MAIN, ...args];
}

/** The result of a short CLI run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `main.ts` with `args` to completion. */
export async function runCli(args: string[]): Promise<CliResult> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: mainArgs(args),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** A long-running `main.ts` process whose output is collected as it comes. */
export class MainProcess {
  readonly child: Deno.ChildProcess;
  stdout = "";
  stderr = "";
  #pumps: Promise<void>;

  /** Starts `main.ts` with `args`; `denoFlags` go to `deno run` (e.g. `--inspect`). */
  constructor(args: string[], denoFlags: string[] = []) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: mainArgs(args, denoFlags),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const pump = async (stream: ReadableStream<Uint8Array>, key: "stdout" | "stderr") => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) this[key] += decoder.decode(chunk, { stream: true });
    };
    this.#pumps = Promise.all([
      pump(this.child.stdout, "stdout"),
      pump(this.child.stderr, "stderr"),
    ]).then(() => {});
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

  /** Sends `signal` and resolves with the exit status once output is drained. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    try {
      this.child.kill(signal);
    } catch {
      // Already exited.
    }
    return await this.exited();
  }

  /** Resolves with the exit status once the process ended and output is drained. */
  async exited(): Promise<Deno.CommandStatus> {
    const status = await this.child.status;
    await this.#pumps;
    return status;
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
