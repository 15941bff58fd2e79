/**
 * Memory under reconnect churn: a device that accepts, sends its connect
 * frame and three temperature frames, and closes 5 ms later, forever. The
 * bridge (tests/bench/reconnect_bridge.ts: the `run` wiring with a 2–10 ms
 * backoff) and a bare Deno process doing the same WebSocket churn
 * (tests/bench/reconnect_floor.ts) each get their own such device, side by
 * side in the same run. At each mark (a number of reconnects) both are
 * sampled: RSS and fds from /proc, and the JS heap in use right after two
 * forced full GCs through the V8 inspector (what the program retains; RSS
 * also holds what V8 and the allocator keep reserved). One more point is
 * sampled at half the last mark (or halfway between the last two marks),
 * so that {@link plateauLines} can show whether the growth levels off
 * (issue 12 allows the runtime's own growth if it plateaus) and how much of
 * it is the bridge's own.
 *
 * @module
 */
import { V8_FLAGS_ARG } from "../../lib/permissions.ts";
import { connectFrame } from "../fake_device.ts";

const HERE = new URL(".", import.meta.url).pathname;

/** One sample of a process at a number of reconnects. */
export interface MemorySample {
  reconnects: number;
  rssKiB: number;
  heapBytes: number;
  fds: number;
  seconds: number;
}

/** The samples of the bridge and of the bare-Deno reference, one per mark. */
export interface ReconnectMemory {
  /** The bridge at 1 reconnect and at each mark asked for. */
  bridge: MemorySample[];
  /** The bare-Deno reference at the same points. */
  floor: MemorySample[];
  /** Both at every point sampled: also halfway between the last two marks, for the plateau. */
  all: { bridge: MemorySample[]; floor: MemorySample[] };
}

/** Issue 12's bound on RSS growth between two marks. */
export const GROWTH_LIMIT = 1.02;

/**
 * How much more RSS the bridge gained from sample `from` to `to` than the
 * bare runtime did over the same reconnects (`floorFrom`, `floorTo`), KiB:
 * what the bridge itself left behind.
 */
export function growthBeyondRuntimeKiB(
  from: MemorySample,
  to: MemorySample,
  floorFrom: MemorySample,
  floorTo: MemorySample,
): number {
  return (to.rssKiB - from.rssKiB) - (floorTo.rssKiB - floorFrom.rssKiB);
}

/**
 * Whether the growth over the last marks is the runtime's own and levels
 * off, as lines with met / not met: RSS at each point for both processes,
 * the ratios last/first and last/halfway, and the bridge's growth beyond the
 * bare runtime's (what the bridge itself leaves behind per reconnect).
 */
export function plateauLines(m: ReconnectMemory): string[] {
  const { bridge, floor } = m.all;
  const points = bridge.slice(1);
  if (points.length < 3) return [];
  const [b1, bm, b2] = [points[0], points.at(-2)!, points.at(-1)!];
  const [f1, fm, f2] = [floor[1], floor.at(-2)!, floor.at(-1)!];
  const mib = (s: MemorySample) => (s.rssKiB / 1024).toFixed(1);
  const ratio = (a: MemorySample, b: MemorySample) => a.rssKiB / b.rssKiB;
  const met = (ok: boolean) => ok ? "met" : "NOT MET";
  const beyond = (a: MemorySample, b: MemorySample, e: MemorySample, f: MemorySample) =>
    growthBeyondRuntimeKiB(a, b, e, f) * 1024 / (b.reconnects - a.reconnects);
  const own = growthBeyondRuntimeKiB(b1, b2, f1, f2) / b1.rssKiB;
  const [n1, nm, n2] = [b1.reconnects, bm.reconnects, b2.reconnects];
  return [
    `RSS at ${points.map((p) => p.reconnects).join(" / ")} reconnects: bridge ${
      points.map(mib).join(" / ")
    } MiB, bare Deno ${floor.slice(1).map(mib).join(" / ")} MiB`,
    `RSS ${n2}/${n1}: bridge ${ratio(b2, b1).toFixed(3)}×, bare Deno ${
      ratio(f2, f1).toFixed(3)
    }× (≤ ${GROWTH_LIMIT}×: ${met(ratio(b2, b1) <= GROWTH_LIMIT)})`,
    `RSS ${n2}/${nm} (the plateau): bridge ${ratio(b2, bm).toFixed(3)}×, bare Deno ${
      ratio(f2, fm).toFixed(3)
    }× (≤ ${GROWTH_LIMIT}×: ${met(ratio(b2, bm) <= GROWTH_LIMIT)})`,
    `bridge's growth beyond bare Deno's, ${n1}→${n2}: ${(own * 100).toFixed(1)} % of its RSS ` +
    `(${beyond(b1, b2, f1, f2).toFixed(0)} B per reconnect; ${nm}→${n2}: ${
      beyond(bm, b2, fm, f2).toFixed(0)
    } B) (≤ ${((GROWTH_LIMIT - 1) * 100).toFixed(0)} %: ${met(own <= GROWTH_LIMIT - 1)})`,
  ];
}

/** A device that closes every connection right after a few frames. */
class FlappingDevice {
  connections = 0;
  #server: Deno.HttpServer<Deno.NetAddr>;

  constructor() {
    this.#server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onopen = () => {
        this.connections++;
        socket.send(connectFrame());
        for (let i = 0; i < 3; i++) socket.send(`{"settings":{"warehouse_temper":${25 + i}}}`);
        setTimeout(() => {
          try {
            socket.close();
          } catch {
            // already closed by the client
          }
        }, 5);
      };
      socket.onerror = () => {};
      return response;
    });
  }

  get address(): string {
    return `127.0.0.1:${this.#server.addr.port}`;
  }

  close(): Promise<void> {
    return this.#server.shutdown();
  }
}

/** A child Deno process under the V8 inspector, with its own flapping device. */
class Subject {
  readonly device = new FlappingDevice();
  readonly child: Deno.ChildProcess;
  #inspectorUrl: Promise<string>;
  #ws: WebSocket | null = null;
  #id = 0;
  #pending = new Map<number, (message: { result?: Record<string, unknown> }) => void>();
  #socketDir: string;

  /** `v8Flags`: the bridge runs with its own ({@link V8_FLAGS_ARG}), bare Deno with none. */
  constructor(script: string, socketDir: string, v8Flags: string[] = []) {
    this.#socketDir = socketDir;
    this.child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-read=/tmp",
        "--allow-write=/tmp",
        "--inspect=127.0.0.1:0",
        ...v8Flags,
        `${HERE}${script}`,
        "--host",
        this.device.address,
        "--socket",
        `${socketDir}/api.sock`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // Reads stderr to the end (the bridge logs every reconnect) and finds the inspector.
    this.#inspectorUrl = new Promise((resolve) => {
      (async () => {
        const decoder = new TextDecoder();
        let head: string | null = "";
        for await (const chunk of this.child.stderr) {
          if (head === null) continue;
          head += decoder.decode(chunk);
          const match = head.match(/Debugger listening on (ws:\/\/\S+)/);
          if (match) {
            resolve(match[1]);
            head = null;
          } else if (head.length > 1e5) head = "";
        }
      })();
    });
  }

  async #call(method: string): Promise<{ result?: Record<string, unknown> }> {
    if (!this.#ws) {
      const ws = new WebSocket(await this.#inspectorUrl);
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error("cannot reach the inspector"));
      });
      ws.onmessage = (event) => {
        const message = JSON.parse(event.data);
        this.#pending.get(message.id)?.(message);
        this.#pending.delete(message.id);
      };
      this.#ws = ws;
    }
    const id = ++this.#id;
    return await new Promise((resolve) => {
      this.#pending.set(id, resolve);
      this.#ws!.send(JSON.stringify({ id, method, params: {} }));
    });
  }

  /** JS heap in use after two full GCs, bytes. */
  async heapAfterGc(): Promise<number> {
    await this.#call("HeapProfiler.collectGarbage");
    await this.#call("HeapProfiler.collectGarbage");
    return (await this.#call("Runtime.getHeapUsage")).result!.usedSize as number;
  }

  async sample(started: number): Promise<MemorySample> {
    const reconnects = this.device.connections;
    const heapBytes = await this.heapAfterGc();
    const status = Deno.readTextFileSync(`/proc/${this.child.pid}/status`);
    let fds = 0;
    for (const _ of Deno.readDirSync(`/proc/${this.child.pid}/fd`)) fds++;
    return {
      reconnects,
      rssKiB: Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0),
      heapBytes,
      fds,
      seconds: Math.round((performance.now() - started) / 100) / 10,
    };
  }

  async close(): Promise<void> {
    const ws = this.#ws;
    if (ws) {
      const closed = new Promise((resolve) => ws.onclose = resolve);
      ws.close();
      await closed;
    }
    try {
      this.child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await this.child.status;
    await this.device.close();
    await Deno.remove(this.#socketDir, { recursive: true }).catch(() => {});
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Drives the bridge and the bare-Deno reference through reconnects side by
 * side and samples both at 0 and at every mark in `marks` (ascending);
 * `progress` gets a line per mark. Throws if either stops reconnecting.
 */
export async function measureReconnectMemory(
  marks: number[],
  progress: (line: string) => void = () => {},
): Promise<ReconnectMemory> {
  const subjects = [
    new Subject("reconnect_bridge.ts", await Deno.makeTempDir({ prefix: "pb-mem-" }), [
      V8_FLAGS_ARG,
    ]),
    new Subject("reconnect_floor.ts", await Deno.makeTempDir({ prefix: "pb-mem-" })),
  ];
  const series: MemorySample[][] = [[], []];
  const started = performance.now();
  const points = [1, ...marks];
  if (marks.length >= 2) {
    const [before, last] = marks.slice(-2);
    const half = Math.round(last / 2);
    points.splice(points.length - 1, 0, half > before ? half : Math.round((before + last) / 2));
  }
  try {
    for (const mark of points) {
      await Promise.all(subjects.map(async (subject, i) => {
        let last = subject.device.connections;
        let lastChange = performance.now();
        while (subject.device.connections < mark) {
          await sleep(20);
          if (subject.device.connections !== last) {
            last = subject.device.connections;
            lastChange = performance.now();
          } else if (performance.now() - lastChange > 15_000) {
            throw new Error(`${i === 0 ? "bridge" : "bare Deno"} stopped reconnecting at ${last}`);
          }
        }
        series[i].push(await subject.sample(started));
      }));
      const [b, f] = [series[0].at(-1)!, series[1].at(-1)!];
      progress(
        `memory: ${mark} reconnects: bridge RSS ${(b.rssKiB / 1024).toFixed(1)} MiB heap ` +
          `${(b.heapBytes / 1048576).toFixed(2)} MiB fds ${b.fds}; bare Deno RSS ` +
          `${(f.rssKiB / 1024).toFixed(1)} MiB heap ${(f.heapBytes / 1048576).toFixed(2)} MiB ` +
          `fds ${f.fds} (${b.seconds} s)`,
      );
    }
  } finally {
    await Promise.all(subjects.map((subject) => subject.close()));
  }
  const asked = (_: MemorySample, i: number) => i === 0 || marks.includes(points[i]);
  const m = {
    bridge: series[0].filter(asked),
    floor: series[1].filter(asked),
    all: { bridge: series[0], floor: series[1] },
  };
  for (const line of plateauLines(m)) progress(`memory: ${line}`);
  return m;
}
