/**
 * Bench section `memory`: what reconnects leave behind. A device that drops
 * every connection right after its connect frame; in a child process either
 * the bridge's real Bridge (its link, core and timers; a fast backoff so
 * that thousands of reconnects take minutes, not hours) or a bare Deno
 * WebSocket client doing the same churn. At each mark the child forces a
 * full GC and reports its RSS, JS heap and open fds.
 *
 * Run as a script it is that child: `deno run -A --v8-flags=--expose-gc
 * tests/bench/reconnect_memory.ts bridge|bare URL MARK...`.
 */
import { Bridge } from "../../lib/bridge.ts";
import { Logger } from "../../lib/log.ts";
import { connectFrame } from "../fake_device.ts";

/** One child's figures at one mark. */
export interface MemoryMark {
  reconnects: number;
  rss_kb: number;
  heap_kb: number;
  fds: number;
}

/** Both children's marks. */
export interface ReconnectMemory {
  bridge: MemoryMark[];
  bare: MemoryMark[];
  seconds: number;
}

/** Runs the churn to each of `marks` reconnects, bridge and bare Deno side by side. */
export async function measureReconnectMemory(marks: number[]): Promise<ReconnectMemory> {
  const counts = new Map<string, number>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const who = new URL(request.url).pathname;
    if (request.headers.get("upgrade") !== "websocket") {
      return new Response(String(counts.get(who.replace("/count", "")) ?? 0));
    }
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onopen = () => {
      counts.set(who, (counts.get(who) ?? 0) + 1);
      socket.send(connectFrame());
      socket.send('{"settings":{"warehouse_temper":25}}');
      setTimeout(() => socket.close(), 5);
    };
    socket.onerror = () => {};
    return response;
  });
  const started = performance.now();
  try {
    const base = `127.0.0.1:${server.addr.port}`;
    const run = async (mode: "bridge" | "bare") => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--v8-flags=--expose-gc",
          new URL(import.meta.url).pathname,
          mode,
          `ws://${base}/${mode}`,
          ...marks.map(String),
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      if (out.code !== 0) {
        throw new Error(`${mode} churn failed: ${new TextDecoder().decode(out.stderr)}`);
      }
      return text.split("\n").filter(Boolean).map((l) => JSON.parse(l) as MemoryMark);
    };
    const [bridge, bare] = await Promise.all([run("bridge"), run("bare")]);
    return { bridge, bare, seconds: Math.round((performance.now() - started) / 100) / 10 };
  } finally {
    await server.shutdown();
  }
}

async function churn(mode: string, url: string, marks: number[]): Promise<void> {
  const countUrl = url.replace("ws://", "http://").replace(/\/(\w+)$/, "/$1/count");
  const reconnects = async () => Number(await (await fetch(countUrl)).text());
  if (mode === "bridge") {
    const bridge = new Bridge({
      url,
      logger: new Logger("error", () => {}),
      failsafeTimeoutMs: 60_000,
      readbackIntervalMs: 0,
      backoff: { initialMs: 1, maxMs: 2, factor: 1 },
    });
    bridge.start();
  } else {
    const loop = () => {
      const ws = new WebSocket(url);
      ws.onmessage = () => {};
      ws.onerror = () => {};
      ws.onclose = () => setTimeout(loop, 1);
    };
    loop();
  }
  const gc = (globalThis as unknown as { gc: () => void }).gc;
  for (const mark of marks) {
    while ((await reconnects()) < mark) await new Promise((r) => setTimeout(r, 50));
    gc();
    await new Promise((r) => setTimeout(r, 50));
    gc();
    const status = Deno.readTextFileSync("/proc/self/status");
    let fds = 0;
    for (const _ of Deno.readDirSync("/proc/self/fd")) fds++;
    const line: MemoryMark = {
      reconnects: mark,
      rss_kb: Number(/VmRSS:\s+(\d+)/.exec(status)![1]),
      heap_kb: Math.round(Deno.memoryUsage().heapUsed / 1024),
      fds,
    };
    console.log(JSON.stringify(line));
  }
  Deno.exit(0);
}

if (import.meta.main) {
  const [mode, url, ...marks] = Deno.args;
  await churn(mode, url, marks.map(Number));
}
