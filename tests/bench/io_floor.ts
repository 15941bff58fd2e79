/**
 * A reference for the footprint benchmark: the least a Deno process can do
 * for the bridge's steady traffic. It holds a WebSocket to the device and
 * serves the Unix socket, answers every request with an empty result, and
 * writes one status-sized line (the frame's text, padded) to subscribers per
 * device frame. No parsing of frames, no status object, no timers, no
 * reconnects, no logging.
 *
 * With `--watchdog`, it also keeps the one timer the bridge cannot do
 * without: the device link's liveness watchdog, armed as lib/device_link.ts
 * arms it (due when no frame came for the watchdog period, re-armed when it
 * fires). The footprint bench runs it both ways, to tell what that timer
 * costs on the machine from what the bridge's own work per event costs.
 *
 * Usage: deno run -P=bridge io_floor.ts --host HOST:PORT --socket PATH [--watchdog]
 * (arguments are read by hand: node:util alone adds ~1.5 MiB of RSS).
 * `--once` exits at once (cache warm-up).
 */

import type { LinkTimings } from "../../lib/device_link.ts";

if (Deno.args.includes("--once")) Deno.exit(0);

function arg(name: string): string {
  const index = Deno.args.indexOf(name);
  if (index === -1 || index + 1 >= Deno.args.length) throw new Error(`missing ${name}`);
  return Deno.args[index + 1];
}

const encoder = new TextEncoder();
const padding = "x".repeat(600);
const subscribers = new Set<Deno.UnixConn>();

const ws = new WebSocket(`ws://${arg("--host")}/ws`);
const watchdog = Deno.args.includes("--watchdog");
let lastFrameAt = performance.now();
ws.onmessage = (event) => {
  if (watchdog) lastFrameAt = performance.now();
  // A status-sized line carrying the frame as is (the bench matches it by its text).
  const line = encoder.encode(
    `{"method":"status","params":{"frame":${event.data},"padding":"${padding}"}}\n`,
  );
  for (const conn of subscribers) conn.write(line).catch(() => subscribers.delete(conn));
};

function armWatchdog(timings: LinkTimings): void {
  const wait = Math.max(timings.tickMs, lastFrameAt + timings.watchdogMs - performance.now() + 1);
  setTimeout(() => {
    if (performance.now() - lastFrameAt > timings.watchdogMs) ws.close();
    armWatchdog(timings);
  }, wait);
}
if (watchdog) {
  // Imported only here, so that the plain floor loads no module of the bridge's.
  armWatchdog((await import("../../lib/device_link.ts")).DEFAULT_LINK_TIMINGS);
}

async function serve(conn: Deno.UnixConn): Promise<void> {
  const buffer = new Uint8Array(16 * 1024);
  const decoder = new TextDecoder();
  let partial = "";
  try {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      const lines = (partial + decoder.decode(buffer.subarray(0, n))).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        const { id, method } = JSON.parse(line);
        if (method === "subscribe") subscribers.add(conn);
        await conn.write(encoder.encode(JSON.stringify({ id, result: {} }) + "\n"));
      }
    }
  } catch {
    // Closed.
  } finally {
    subscribers.delete(conn);
  }
}

const listener = Deno.listen({ transport: "unix", path: arg("--socket") });
for await (const conn of listener) serve(conn);
