/**
 * The closest this environment gets to the Snapmaker U1: the bridge's
 * end-to-end smoke run by the aarch64 Deno under qemu-aarch64, with the
 * permission flags the compiled binary embeds. Needs DENO_ARM64 (the path
 * of the arm64 `deno` from npm; .ci/run sets it), qemu-aarch64 and the
 * aarch64 C library; skipped with the reason when one is missing.
 */
import assert from "node:assert/strict";
import { ApiClient } from "../../lib/api_client.ts";
import { compileFlags } from "../../lib/compile.ts";
import { buildOnFrame, OFF_FRAME } from "../../lib/protocol.ts";
import { tempSocketPath, waitForSocket } from "../process.ts";
import { missingTools, reportSkip, which } from "../tools.ts";

const DENO_ARM64 = Deno.env.get("DENO_ARM64");
const QEMU_ROOT = "/usr/aarch64-linux-gnu";
const ROOT = new URL("../../", import.meta.url).pathname;

/** Why this machine cannot run the aarch64 smoke test, or null. */
function skipReason(): string | null {
  if (!DENO_ARM64) {
    return "DENO_ARM64 is not set (the path of the arm64 deno from the npm package " +
      "@deno/linux-arm64-glibc; .ci/run sets it)";
  }
  if (!which(DENO_ARM64)) return `DENO_ARM64=${DENO_ARM64} is not an executable file`;
  const tools = missingTools(["qemu-aarch64"]);
  if (tools) return tools;
  try {
    Deno.statSync(`${QEMU_ROOT}/lib/ld-linux-aarch64.so.1`);
  } catch {
    return `${QEMU_ROOT}/lib/ld-linux-aarch64.so.1 not found (Debian package: libc6-arm64-cross)`;
  }
  return null;
}

const SKIP = skipReason();
if (SKIP) reportSkip(SKIP);

interface SimState {
  temperature: number;
  work_on: boolean;
  received: { at: number; frame: unknown }[];
}

async function aarch64Process(args: string[]): Promise<{
  child: Deno.ChildProcess;
  output: () => string;
}> {
  // The binary's flags: permission set and V8 flags.
  const flags = compileFlags(await Deno.readTextFile(`${ROOT}deno.json`));
  const child = new Deno.Command("qemu-aarch64", {
    args: ["-L", QEMU_ROOT, DENO_ARM64!, "run", ...flags, `${ROOT}main.ts`, ...args],
    env: { DENO_DIR: Deno.env.get("DENO_DIR") ?? `${ROOT}.cache/deno-dir-aarch64` },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  };
  pump(child.stdout);
  pump(child.stderr);
  return { child, output: () => text };
}

async function until<T>(probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`not reached within ${timeoutMs} ms`);
}

Deno.test({
  name: "aarch64 (qemu): set a target, see the ON frame and a rising temperature, turn it off",
  ignore: SKIP !== null,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const version = await new Deno.Command("qemu-aarch64", {
      args: ["-L", QEMU_ROOT, DENO_ARM64!, "--version"],
      stdout: "piped",
    }).output();
    assert.match(new TextDecoder().decode(version.stdout), /aarch64-unknown-linux-gnu/);

    const simulator = await aarch64Process([
      "simulate",
      "--port",
      "0",
      "--hostname",
      "127.0.0.1",
      "--speed",
      "40",
    ]);
    const { path, cleanup } = await tempSocketPath();
    let bridge: Awaited<ReturnType<typeof aarch64Process>> | undefined;
    try {
      const address = await until(
        () => Promise.resolve(/listening on ws:\/\/([\d.]+:\d+)\/ws/.exec(simulator.output())?.[1]),
        120_000,
      );
      const state = async () =>
        await (await fetch(`http://${address}/sim/state`)).json() as SimState;
      bridge = await aarch64Process(["run", "--host", address, "--socket", path]);
      await waitForSocket(path, 120_000);
      const client = await ApiClient.connect(path);
      try {
        await client.request("heartbeat", { ready: true });
        const startTemp = (await state()).temperature;
        const sentAt = Date.now();
        await client.request("set_target", { target: 45 });
        const on = await until(async () => {
          const frames = (await state()).received;
          return frames.find((f) => f.at >= sentAt && JSON.stringify(f.frame) === buildOnFrame(45));
        }, 20_000);
        console.log(`ON frame reached the simulated device ${on.at - sentAt} ms after set_target`);
        const heartbeat = setInterval(
          () => client.request("heartbeat", { ready: true }).catch(() => {}),
          1000,
        );
        try {
          const risen = await until(async () => {
            const { temperature } = await state();
            return temperature >= startTemp + 2 ? temperature : undefined;
          }, 60_000);
          console.log(`temperature rose from ${startTemp} to ${risen} °C under aarch64`);
          await client.request("off");
          await until(async () => {
            const { received, work_on } = await state();
            const off = received.some((f) => JSON.stringify(f.frame) === OFF_FRAME);
            return off && !work_on ? true : undefined;
          }, 20_000);
        } finally {
          clearInterval(heartbeat);
        }
      } finally {
        await client.close();
      }
      bridge.child.kill("SIGTERM");
      assert.equal((await bridge.child.status).code, 0, bridge.output());
    } finally {
      try {
        bridge?.child.kill("SIGKILL");
      } catch { /* exited */ }
      simulator.child.kill("SIGTERM");
      await simulator.child.status;
      await cleanup();
    }
  },
});
