/**
 * `deno task bench`: latency, footprint and cost of the bridge and the
 * Klipper extra on this machine (issue 6). Not part of `deno task test`.
 *
 * Runs real processes on loopback: the bridge is `main.ts run` with the
 * shipped permission set (`-P=bridge`) as a subprocess; the simulated device
 * (lib/simulator.ts) and the socket client live in this process, so send and
 * receive times are read from the same clock. Prints one table to stdout
 * (progress goes to stderr) and writes the same figures, with the machine
 * described, to tests/bench/results.json.
 *
 * Options:
 *   --only=LIST   comma-separated sections: command, telemetry, reconnect, failsafe,
 *                 flood, footprint, klipper, aarch64, memory, logs (default: all)
 *   --quick       small counts and short runs (a smoke test of the bench)
 *   --out=PATH    where to write the JSON (default tests/bench/results.json;
 *                 a run with --only or --quick writes only when --out is given)
 *
 * Environment:
 *   PB_BENCH_LONG_S     footprint run at 2 Hz telemetry, seconds (default 60)
 *   PB_BENCH_ARM_S      the same under qemu-aarch64, seconds (default 30)
 *   PB_BENCH_ARM_DENO   arm64 deno binary (default /tmp/arm64deno/package/deno)
 *   PB_BENCH_QEMU       qemu-aarch64 (default: found on PATH)
 *   PB_BENCH_ARM_SYSROOT  aarch64 libraries for qemu -L (default /usr/aarch64-linux-gnu)
 *   PB_BENCH_RECONNECTS  memory section: reconnects of the last mark (default 5000,
 *                       first mark a tenth of it; --quick: 500)
 *   PB_BENCH_COMMANDS, PB_BENCH_FRAMES, PB_BENCH_DROPS, PB_BENCH_FLOOD_S
 *                       counts of sections 1-4 (defaults 1000, 10000, 100, 10)
 */

import { parseArgs } from "node:util";
import { Simulator } from "../../lib/simulator.ts";
import {
  clockTicksPerSecond,
  type ProcCost,
  ProcMonitor,
  type ProcSample,
  sampleProc,
} from "./procfs.ts";
import {
  type DenoRunner,
  NATIVE,
  Proc,
  type RunningBridge,
  sleep,
  startBridge,
  startIdle,
  startIoFloor,
  warmCache,
} from "./proc.ts";
import { type BenchClient, notificationTemperature } from "./socket_client.ts";
import { measureLogVolume } from "./log_volume.ts";
import { rounded, summarize, type Summary } from "./stats.ts";
import { measureReconnectMemory, type MemorySample } from "./reconnect_memory.ts";

const SECTIONS = [
  "command",
  "telemetry",
  "reconnect",
  "failsafe",
  "flood",
  "footprint",
  "klipper",
  "aarch64",
  "memory",
  "logs",
] as const;
type Section = typeof SECTIONS[number];

const HERE = new URL(".", import.meta.url).pathname;
const DEFAULT_OUT = `${HERE}results.json`;
const KLIPPER_COST = `${HERE}klipper_cost.py`;
const KLIPPER_SUBSCRIBER = `${HERE}klipper_subscriber.py`;

/** Targets of issue 6. */
const TARGET = {
  latencyP99Ms: 5,
  reconnectP99Ms: 500,
  controllerGoneOffMs: 1000,
  rssRatio: 1.25,
  cpuPercent: 0.2,
  extraUsPerMessage: 50,
  statusPerS: 10,
  statusAgeMs: 100,
  logBytesPerDay: 1_000_000,
  /** Issue 12: RSS and heap after the last mark over after the first. */
  memoryGrowthRatio: 1.02,
  /** Issue 12: fds after the last mark minus after the first (a leak is one per reconnect). */
  fdGrowth: 2,
};

const WARMUP = 20;
const ARM_SETTLE_S = 5;
const MIB = 1024;

// ---------------------------------------------------------------- options

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    only: { type: "string" },
    quick: { type: "boolean", default: false },
    out: { type: "string" },
  },
});

function envNumber(name: string, fallback: number): number {
  const raw = Deno.env.get(name);
  if (raw === undefined || raw.trim() === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) {
    console.error(`bench: ${name} must be a positive number, got '${raw}'`);
    Deno.exit(2);
  }
  return value;
}

const quick = flags.quick ?? false;
const only = flags.only?.split(",").map((s) => s.trim()).filter(Boolean) as Section[] | undefined;
for (const name of only ?? []) {
  if (!SECTIONS.includes(name)) {
    console.error(`bench: unknown section '${name}'; sections: ${SECTIONS.join(", ")}`);
    Deno.exit(2);
  }
}
const CONFIG = {
  commands: quick ? 100 : Math.round(envNumber("PB_BENCH_COMMANDS", 1000)),
  frames: quick ? 1000 : Math.round(envNumber("PB_BENCH_FRAMES", 10_000)),
  drops: quick ? 10 : Math.round(envNumber("PB_BENCH_DROPS", 100)),
  floodS: quick ? 3 : envNumber("PB_BENCH_FLOOD_S", 10),
  longS: quick ? 10 : envNumber("PB_BENCH_LONG_S", 60),
  armS: quick ? 10 : envNumber("PB_BENCH_ARM_S", 30),
  settleS: 3,
  telemetryHz: 2,
  pythonIterations: quick ? 2000 : 20_000,
  logS: quick ? 15 : envNumber("PB_BENCH_LOG_S", 150),
  reconnects: quick ? 500 : Math.round(envNumber("PB_BENCH_RECONNECTS", 5000)),
};
const wanted = (section: Section) => !only || only.includes(section);

// ---------------------------------------------------------------- output

interface Row {
  section: string;
  metric: string;
  value: string;
  target?: string;
  met?: boolean;
}

const rows: Row[] = [];
const results: Record<string, unknown> = {};
const checks: { name: string; value: number; limit: number; unit: string; met: boolean }[] = [];

function row(section: string, metric: string, value: string): void {
  rows.push({ section, metric, value });
}

function check(
  section: string,
  metric: string,
  value: string,
  target: { name: string; value: number; limit: number; unit: string; text: string },
): void {
  const met = target.value <= target.limit;
  rows.push({ section, metric, value, target: target.text, met });
  checks.push({
    name: target.name,
    value: Math.round(target.value * 1000) / 1000,
    limit: target.limit,
    unit: target.unit,
    met,
  });
}

function progress(message: string): void {
  console.error(`[bench] ${message}`);
}

function fmt(value: number, digits = 2): string {
  if (!Number.isFinite(value)) return "n/a";
  return value.toFixed(digits);
}

function latencyText(s: Summary, unit = "ms", digits = 2): string {
  return `p50 ${fmt(s.p50, digits)} / p99 ${fmt(s.p99, digits)} / max ${
    fmt(s.max, digits)
  } ${unit}`;
}

function mib(kb: number): string {
  return `${fmt(kb / MIB, 1)} MiB`;
}

// ---------------------------------------------------------------- frames

function telemetryFrame(temperature: number): string {
  return `{"settings":{"warehouse_temper":${temperature}}}`;
}

/** Frame temperatures wrap after this many frames, below the shipped max_temp (60 °C). */
const TEMPERATURE_WRAP = 40_000;

/** A distinct temperature for frame `k` (20.000, 20.001, … 59.999, then again). */
function temperatureOf(k: number): number {
  return (20_000 + (k % TEMPERATURE_WRAP)) / 1000;
}

function settingsOf(frame: unknown): Record<string, unknown> | undefined {
  if (typeof frame !== "object" || frame === null) return undefined;
  const settings = (frame as Record<string, unknown>).settings;
  return typeof settings === "object" && settings !== null
    ? settings as Record<string, unknown>
    : undefined;
}

function isDesiredStateFrame(frame: unknown, target: number): boolean {
  const settings = settingsOf(frame);
  if (!settings) return false;
  return target === 0
    ? settings.work_on === false
    : settings.work_on === true && settings.set_temp === target;
}

async function withSimulator<T>(use: (sim: Simulator) => Promise<T>): Promise<T> {
  const sim = new Simulator({ telemetryIntervalMs: 1000 / CONFIG.telemetryHz });
  await sim.start();
  try {
    return await use(sim);
  } finally {
    await sim.stop();
  }
}

let sampleStatus: unknown = null;

async function captureStatus(client: BenchClient): Promise<void> {
  if (sampleStatus !== null) return;
  sampleStatus = (await client.request("status")).message.result;
}

// ---------------------------------------------------------------- 1. command latency

async function benchCommand(sim: Simulator, bridge: RunningBridge): Promise<void> {
  const section = "1 command";
  progress(`command latency: ${CONFIG.commands} set_target changes`);
  const deviceMs: number[] = [];
  const replyMs: number[] = [];
  for (let i = -WARMUP; i < CONFIG.commands; i++) {
    const target = i % 2 === 0 ? 41 : 40;
    let receivedAt = 0;
    const frame = sim.waitForFrame((f) => {
      if (!isDesiredStateFrame(f, target)) return false;
      receivedAt = performance.now();
      return true;
    }, 5000);
    const sentAt = performance.now();
    const [reply] = await Promise.all([
      bridge.client.request("set_target", { target }),
      frame,
    ]);
    if (i < 0) continue;
    deviceMs.push(receivedAt - sentAt);
    replyMs.push(reply.at - sentAt);
  }
  const device = summarize(deviceMs);
  const reply = summarize(replyMs);
  results.command = {
    changes: CONFIG.commands,
    warmup_excluded: WARMUP,
    to_device_ms: rounded(device),
    to_reply_ms: rounded(reply),
  };
  check(section, `set_target → device has frame (n=${device.n})`, latencyText(device), {
    name: "command_p99_ms",
    value: device.p99,
    limit: TARGET.latencyP99Ms,
    unit: "ms",
    text: `p99 ≤ ${TARGET.latencyP99Ms} ms`,
  });
  row(section, "set_target → reply on the socket", latencyText(reply));
}

// ---------------------------------------------------------------- 2. telemetry latency

/**
 * Matches status notifications to frames by their distinct temperature
 * (`key` is where a line carries it: the bridge's status, or the I/O floor's
 * copy of the frame).
 */
class TelemetryMatcher {
  /** Latencies of matched frames, ms. */
  readonly latencies: number[] = [];
  /** Frames whose notification did not come within the timeout. */
  lost = 0;
  #pending = new Map<number, { sentAt: number; resolve: (ms: number | null) => void }>();

  constructor(client: BenchClient, key = '"temperature":') {
    client.onNotification = (line, at) => {
      const temperature = notificationTemperature(line, key);
      if (typeof temperature !== "number") return;
      const pending = this.#pending.get(temperature);
      if (!pending) return;
      this.#pending.delete(temperature);
      pending.resolve(at - pending.sentAt);
    };
  }

  /**
   * Expects a notification for the frame carrying `temperature`, sent at
   * `sentAt`; resolves with its latency in ms (also kept in `latencies`), or
   * null after `timeoutMs` (counted in `lost`).
   */
  expect(temperature: number, sentAt: number, timeoutMs = 2000): Promise<number | null> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(null), timeoutMs);
      const finish = (ms: number | null) => {
        clearTimeout(timer);
        this.#pending.delete(temperature);
        if (ms === null) this.lost++;
        else this.latencies.push(ms);
        resolve(ms);
      };
      this.#pending.set(temperature, { sentAt, resolve: finish });
    });
  }

  /** Sends frame `k` to every client of `sim` and expects its notification. */
  send(sim: Simulator, k: number): Promise<number | null> {
    const temperature = temperatureOf(k);
    const done = this.expect(temperature, performance.now());
    sim.sendTextToAll(telemetryFrame(temperature));
    return done;
  }
}

async function benchTelemetry(sim: Simulator, bridge: RunningBridge): Promise<void> {
  const section = "2 telemetry";
  progress(`telemetry latency: ${CONFIG.frames} frames`);
  sim.silence(true);
  const matcher = new TelemetryMatcher(bridge.client);
  const latencies: number[] = [];
  let lost = 0;
  try {
    for (let k = 0; k < CONFIG.frames + WARMUP; k++) {
      const ms = await matcher.send(sim, k);
      if (k < WARMUP) continue;
      if (ms === null) lost++;
      else latencies.push(ms);
    }
  } finally {
    bridge.client.onNotification = null;
    sim.silence(false);
  }
  const s = summarize(latencies);
  results.telemetry = {
    frames: CONFIG.frames,
    warmup_excluded: WARMUP,
    lost,
    mode: "one frame at a time: the next frame is sent when the previous status arrived",
    to_subscriber_ms: rounded(s),
  };
  check(
    section,
    `device frame → subscriber has status (n=${s.n}${lost ? `, ${lost} lost` : ""})`,
    latencyText(s),
    {
      name: "telemetry_p99_ms",
      value: lost > 0 ? Infinity : s.p99,
      limit: TARGET.latencyP99Ms,
      unit: "ms",
      text: `p99 ≤ ${TARGET.latencyP99Ms} ms`,
    },
  );
}

// ---------------------------------------------------------------- 3. reconnect

/** Another WebSocket client writes a state other than `target` to the simulator and leaves. */
async function changeDeviceBehindTheBridge(sim: Simulator, target: number): Promise<void> {
  const other = new WebSocket(sim.url);
  await new Promise((resolve, reject) => {
    other.onopen = resolve;
    other.onerror = () => reject(new Error("cannot reach the simulator"));
  });
  const closed = new Promise((resolve) => other.onclose = resolve);
  other.send(
    target === 0
      ? '{"settings":{"work_mode":2,"set_temp":30,"temp":30,"isrunning":0,"work_on":true}}'
      : '{"settings":{"work_on":false}}',
  );
  const deadline = performance.now() + 2000;
  while (sim.state.work_on === (target > 0) && performance.now() < deadline) await sleep(2);
  other.close();
  await closed;
}

async function benchReconnect(sim: Simulator, bridge: RunningBridge): Promise<void> {
  const section = "3 reconnect";
  progress(`reconnect: ${CONFIG.drops} drops`);
  const target = (await bridge.client.request("status")).message.result as { target: number };
  const desiredMs: number[] = [];
  const downMs: number[] = [];
  const upMs: number[] = [];
  let downAt = 0;
  let upAt = 0;
  bridge.client.onNotification = (line, at) => {
    if (!downAt && line.startsWith('{"method":"status","params":{"connected":false')) downAt = at;
    else if (downAt && !upAt && line.startsWith('{"method":"status","params":{"connected":true')) {
      upAt = at;
    }
  };
  try {
    for (let i = 0; i < CONFIG.drops; i++) {
      downAt = upAt = 0;
      // The bridge writes on a reconnect only when the connect frame differs from
      // the desired state (it compares before writing): so another client changes
      // the device first, as a power cycle or the phone app would while the link is down.
      await changeDeviceBehindTheBridge(sim, target.target);
      let receivedAt = 0;
      const desired = sim.waitForFrame((f) => {
        if (!isDesiredStateFrame(f, target.target)) return false;
        receivedAt = performance.now();
        return true;
      }, 10_000);
      const droppedAt = performance.now();
      sim.abortClients();
      await desired;
      const deadline = performance.now() + 2000;
      while (!upAt && performance.now() < deadline) await sleep(2);
      desiredMs.push(receivedAt - droppedAt);
      if (downAt) downMs.push(downAt - droppedAt);
      if (upAt) upMs.push(upAt - droppedAt);
      // Let the new link prove healthy (first frame resets the backoff), as
      // between real drops, with some spread.
      await sleep(50 + Math.random() * 50);
    }
  } finally {
    bridge.client.onNotification = null;
  }
  const status = (await bridge.client.request("status")).message.result as {
    link: { connects: number; drops: number };
  };
  const desired = summarize(desiredMs);
  const down = summarize(downMs);
  const up = summarize(upMs);
  results.reconnect = {
    drops: CONFIG.drops,
    how: "another client changes the device, then the device aborts its sockets (FIN, no " +
      "close frame) and keeps accepting; the bridge compares the connect frame and re-sends",
    to_desired_state_resent_ms: rounded(desired),
    to_subscriber_sees_down_ms: rounded(down),
    to_subscriber_sees_connected_ms: rounded(up),
    bridge_link_counters: status.link,
  };
  check(
    section,
    `drop → connected, desired state re-sent (n=${desired.n})`,
    latencyText(desired, "ms", 1),
    {
      name: "reconnect_p99_ms",
      value: desired.p99,
      limit: TARGET.reconnectP99Ms,
      unit: "ms",
      text: `p99 ≤ ${TARGET.reconnectP99Ms} ms`,
    },
  );
  row(section, "drop → subscriber sees connected:false", latencyText(down, "ms", 1));
  row(section, "drop → subscriber sees connected:true", latencyText(up, "ms", 1));
}

// ---------------------------------------------------------------- 4. flood

interface FloodSample {
  t: number;
  rssKb: number;
  sent: number;
  handled: number;
}

/** What the Klipper extra (tests/bench/klipper_subscriber.py) reports after the flood. */
interface KlipperSubscriberResult {
  /** Time between two status notifications the extra received. */
  status_gap_ms: { p50: number | null; p99: number | null; max: number | null };
  /** Most notifications within one whole second of the run. */
  statuses_busiest_second: number;
  seconds: number;
  statuses: number;
  readings: number;
  cpu_seconds: number;
  cpu_percent: number;
  us_per_status: number;
  connected_at_end: boolean;
  link_drops: { t: number; reason: string }[];
  shutdown: string | null;
}

/** Frames handled, from the temperature of the last one the bridge reports (frames are in order). */
function handledFrom(temperature: unknown, sent: number): number | null {
  if (typeof temperature !== "number" || sent === 0) return null;
  const kmod = Math.round(temperature * 1000) - 20_000;
  if (kmod < 0 || kmod >= TEMPERATURE_WRAP) return null;
  const last = sent - 1;
  return last - (((last - kmod) % TEMPERATURE_WRAP) + TEMPERATURE_WRAP) % TEMPERATURE_WRAP + 1;
}

/** Starts the real extra in the stand-in reactor on `socket` for `seconds`; resolves once connected. */
async function startKlipperSubscriber(socket: string, seconds: number): Promise<Proc> {
  const python = Deno.env.get("PYTHON") ?? "python3";
  const proc = new Proc(python, [KLIPPER_SUBSCRIBER, socket, String(seconds)]);
  await proc.waitForOutput(/^ready$/m, 15_000);
  return proc;
}

async function klipperSubscriberResult(proc: Proc): Promise<KlipperSubscriberResult> {
  await proc.child.status;
  await proc.stop();
  const json = proc.output.split("\n").find((line) => line.startsWith("{"));
  if (!json) throw new Error(`the Klipper subscriber failed:\n${proc.output}`);
  return JSON.parse(json);
}

async function benchFlood(ticksPerS: number): Promise<void> {
  const section = "4 flood";
  progress(`flood: the device sends as fast as it can for ${CONFIG.floodS} s`);
  await withSimulator(async (sim) => {
    // The subscriber is the real Klipper extra in its own process, as in
    // Klipper; the bench's client does not subscribe: it heartbeats and polls
    // `status` to learn which frame the bridge has handled last.
    const bridge = await startBridge(NATIVE, sim.port, false);
    let klipper: Proc | undefined;
    try {
      sim.silence(true);
      klipper = await startKlipperSubscriber(bridge.socket, CONFIG.floodS + 3);
      await sleep(500);
      const poller = bridge.client;
      let sent = 0;
      let handled = 0;
      const pollMs: number[] = [];
      const samples: FloodSample[] = [];
      let polling = true;
      const poll = async () => {
        const askedAt = performance.now();
        const { at, message } = await poller.request("status");
        pollMs.push(at - askedAt);
        const count = handledFrom((message.result as { temperature: unknown }).temperature, sent);
        if (count !== null && count > handled) handled = count;
      };
      const start = sampleProc(bridge.proc.pid);
      const bridgeCpu = new ProcMonitor(bridge.proc.pid, ticksPerS, 250);
      const benchCpu = new ProcMonitor(Deno.pid, ticksPerS, 250);
      const startedAt = performance.now();
      const pollLoop = (async () => {
        while (polling) {
          await poll();
          const s = sampleProc(bridge.proc.pid);
          samples.push({ t: (s.at - startedAt) / 1000, rssKb: s.rssKb, sent, handled });
          await sleep(250);
        }
      })();
      const endAt = startedAt + CONFIG.floodS * 1000;
      const BATCH = 16;
      while (performance.now() < endAt) {
        let last: Promise<void> = Promise.resolve();
        for (let j = 0; j < BATCH; j++) {
          last = sim.sendTextToAll(telemetryFrame(temperatureOf(sent++)));
        }
        await last;
      }
      const stoppedAt = performance.now();
      const end = sampleProc(bridge.proc.pid);
      const duringFlood = bridgeCpu.cost();
      const benchCost = benchCpu.stop();
      polling = false;
      await pollLoop;
      await poll();
      const backlogAtStop = sent - handled;
      const drainDeadline = stoppedAt + 30_000;
      while (handled < sent && performance.now() < drainDeadline) {
        await poll();
        await sleep(2);
      }
      const drainMs = performance.now() - stoppedAt;
      const drained = handled >= sent;
      const busy = bridgeCpu.stop();
      const k = await klipperSubscriberResult(klipper);
      await sleep(2000);
      const after = sampleProc(bridge.proc.pid);
      const wallS = (stoppedAt - startedAt) / 1000;
      const half = wallS / 2;
      const first = samples.filter((s) => s.t <= half);
      const second = samples.filter((s) => s.t > half);
      const maxOf = (list: FloodSample[], f: (s: FloodSample) => number) =>
        list.length ? Math.max(...list.map(f)) : 0;
      const rssFirst = maxOf(first, (s) => s.rssKb);
      const rssSecond = maxOf(second, (s) => s.rssKb);
      const rssMax = Math.max(rssFirst, rssSecond, end.rssKb);
      const backlogFirst = maxOf(first, (s) => s.sent - s.handled);
      const backlogSecond = maxOf(second, (s) => s.sent - s.handled);
      const rssGrowth = rssFirst ? rssSecond / rssFirst - 1 : 0;
      // Everything sent was handled by the end of the drain.
      const handledPerS = handled / (wallS + drainMs / 1000);
      const cpuPerFrameUs = (busy.cpuMs * 1000) / Math.max(1, handled);
      const poll99 = summarize(pollMs);
      const kept = k.link_drops.length === 0 && k.connected_at_end && k.shutdown === null;
      results.flood = {
        seconds: Math.round(wallS * 100) / 100,
        frames_sent: sent,
        frames_sent_per_s: Math.round(sent / wallS),
        frames_handled: handled,
        frames_handled_per_s: Math.round(handledPerS),
        drained,
        drain_ms_after_stop: Math.round(drainMs),
        backlog_frames: {
          max_first_half: backlogFirst,
          max_second_half: backlogSecond,
          at_stop: backlogAtStop,
          max_second_half_as_ms_of_work: Math.round((backlogSecond / handledPerS) * 1000),
        },
        klipper_subscriber: k,
        status_request_ms_under_flood: rounded(poll99),
        bridge_cpu_percent_of_one_core: Math.round(duringFlood.cpuPercent * 10) / 10,
        bridge_cpu_us_per_frame: Math.round(cpuPerFrameUs * 10) / 10,
        bench_process_cpu_percent: Math.round(benchCost.cpuPercent * 10) / 10,
        rss_kb: {
          start: start.rssKb,
          max: rssMax,
          end: end.rssKb,
          two_s_after_drain: after.rssKb,
          peak_hwm: after.hwmKb,
        },
        rss_growth_second_half_vs_first: Math.round(rssGrowth * 1000) / 1000,
        samples: samples.map((s) => ({
          t: Math.round(s.t * 100) / 100,
          rss_kb: s.rssKb,
          sent: s.sent,
          handled: s.handled,
        })),
      };
      row(
        section,
        `frames handled per second (${fmt(wallS, 1)} s flood)`,
        `${Math.round(handledPerS)}/s (device sent ${Math.round(sent / wallS)}/s)`,
      );
      row(
        section,
        "bridge CPU while flooded",
        `${fmt(duringFlood.cpuPercent, 0)} % of a core, ${fmt(cpuPerFrameUs, 1)} µs/frame ` +
          `(device process: ${fmt(benchCost.cpuPercent, 0)} %)`,
      );
      row(section, "status request answered under flood", latencyText(poll99, "ms", 1));
      check(
        section,
        "bridge RSS start → max → end (2nd-half growth)",
        `${mib(start.rssKb)} → ${mib(rssMax)} → ${mib(end.rssKb)} (${fmt(rssGrowth * 100, 1)} %)`,
        {
          name: "flood_rss_growth_second_half",
          value: rssGrowth,
          limit: 0.1,
          unit: "ratio",
          text: "bounded (≤ 10 %)",
        },
      );
      // Frames in flight sit in the TCP buffers between device and bridge; a
      // growing backlog would show as seconds of queued work and a slow drain.
      const backlogS = backlogSecond / Math.max(1, handledPerS);
      const growing = !drained || drainMs > 1000 || backlogS > 1;
      check(
        section,
        "backlog (frames sent − handled), drain after stop",
        `max ${backlogFirst} / ${backlogSecond} frames (1st/2nd half; ${
          fmt(backlogS * 1000, 0)
        } ms of work), ` +
          (drained ? `drained in ${fmt(drainMs, 0)} ms` : "NOT drained in 30 s"),
        {
          name: "flood_backlog_growing",
          value: growing ? 1 : 0,
          limit: 0,
          unit: "bool",
          text: "not growing (< 1 s)",
        },
      );
      const firstDrop = k.link_drops[0];
      check(
        section,
        "Klipper extra (subscribed) keeps its link",
        kept
          ? `yes: ${k.statuses} status notifications (${fmt(k.statuses / k.seconds, 0)}/s)`
          : `NO: ${k.link_drops.length} link drops, first after ${
            fmt((firstDrop?.t ?? NaN) * 1000, 0)
          } ms (${firstDrop?.reason ?? k.shutdown ?? "disconnected"}); ${k.statuses} statuses`,
        {
          name: "flood_klipper_link_kept",
          value: kept ? 0 : 1,
          limit: 0,
          unit: "bool",
          text: "no drops",
        },
      );
      // Under a flood a newer state is always pending, so the time between two
      // notifications bounds the age of the state each one carries.
      check(
        section,
        "status notifications to Klipper under flood (busiest second)",
        `${k.statuses_busiest_second} in one second, ${
          fmt(k.statuses / k.seconds, 1)
        }/s on average`,
        {
          name: "flood_status_per_s",
          value: k.statuses_busiest_second,
          limit: TARGET.statusPerS,
          unit: "per s",
          text: `≤ ${TARGET.statusPerS}/s`,
        },
      );
      check(
        section,
        "newest state's age at delivery (≤ gap between notifications)",
        `p50 ${fmt(k.status_gap_ms.p50 ?? NaN, 1)} / p99 ${fmt(k.status_gap_ms.p99 ?? NaN, 1)} / ` +
          `max ${fmt(k.status_gap_ms.max ?? NaN, 1)} ms`,
        {
          name: "flood_status_age_ms",
          value: k.status_gap_ms.p99 ?? Infinity,
          limit: TARGET.statusAgeMs,
          unit: "ms (p99)",
          text: `≤ ${TARGET.statusAgeMs} ms (p99; max shown)`,
        },
      );
      row(
        section,
        "Klipper extra CPU while flooded",
        `${fmt(k.cpu_percent, 1)} % of a core, ${fmt(k.us_per_status, 1)} µs per status`,
      );
    } finally {
      await klipper?.stop();
      await bridge.stop();
    }
  });
}

// ---------------------------------------------------------------- 5./7. footprint

interface ProcFigures {
  rss_start_kb: number;
  rss_end_kb: number;
  rss_anon_end_kb: number;
  rss_file_end_kb: number;
  hwm_kb: number;
  cpu_percent: number;
  cpu_percent_from_ticks: number;
  cpu_ms: number;
  wakeups_per_s: number;
  voluntary_per_s: number;
  nonvoluntary_per_s: number;
  threads: number;
}

interface FootprintResult {
  label: string;
  seconds: number;
  bridge: ProcFigures;
  bare_deno: ProcFigures;
  io_floor: ProcFigures;
  ratio_to_bare_deno: { rss_start: number; rss_end: number; cpu: number; wakeups: number };
  telemetry_at_2hz_ms: Summary;
  telemetry_lost: number;
  io_floor_telemetry_at_2hz_ms: Summary;
  startup_ms: { socket_ready: number; device_connected: number };
  rss_trend_kb: {
    t: number;
    bridge: number;
    bridge_anon: number;
    bare_deno: number;
    io_floor: number;
  }[];
}

function figures(start: ProcSample, end: ProcSample, cost: ProcCost): ProcFigures {
  const r = (x: number, digits = 4) => Math.round(x * 10 ** digits) / 10 ** digits;
  return {
    rss_start_kb: start.rssKb,
    rss_end_kb: end.rssKb,
    rss_anon_end_kb: end.rssAnonKb,
    rss_file_end_kb: end.rssFileKb,
    hwm_kb: end.hwmKb,
    cpu_percent: r(cost.cpuPercent),
    cpu_percent_from_ticks: r(cost.cpuPercentTicks),
    cpu_ms: r(cost.cpuMs, 1),
    wakeups_per_s: r(cost.wakeupsPerS, 2),
    voluntary_per_s: r(cost.voluntaryPerS, 2),
    nonvoluntary_per_s: r(cost.nonvoluntaryPerS, 2),
    threads: end.threads,
  };
}

/**
 * The bridge, a bare Deno (tests/bench/idle.ts) and the I/O floor
 * (tests/bench/io_floor.ts) side by side for `seconds` while the device sends
 * telemetry at 2 Hz and a controller heartbeats each of the two servers every
 * second, as the Klipper extra does.
 */
async function measureFootprint(
  runner: DenoRunner,
  seconds: number,
  settleS: number,
  ticksPerS: number,
): Promise<FootprintResult> {
  return await withSimulator(async (sim) => {
    // Telemetry at the device's real rate, with distinct temperatures so that
    // each status can be matched to its frame.
    sim.silence(true);
    let k = 0;
    let matchers: TelemetryMatcher[] = [];
    const inFlight = new Set<Promise<unknown>>();
    const ticker = setInterval(() => {
      const temperature = temperatureOf(k++);
      const sentAt = performance.now();
      for (const matcher of matchers) {
        const done = matcher.expect(temperature, sentAt);
        inFlight.add(done);
        done.finally(() => inFlight.delete(done));
      }
      sim.sendTextToAll(telemetryFrame(temperature));
    }, 1000 / CONFIG.telemetryHz);
    const started: { stop(): Promise<void> }[] = [];
    try {
      const [bridge, idle, floor] = await Promise.all([
        startBridge(runner, sim.port),
        startIdle(runner),
        startIoFloor(runner, sim.port),
      ]);
      started.push(bridge, { stop: () => idle.stop() }, floor);
      await captureStatus(bridge.client);
      const bridgeMatcher = new TelemetryMatcher(bridge.client);
      const floorMatcher = new TelemetryMatcher(floor.client, '"warehouse_temper":');
      matchers = [bridgeMatcher, floorMatcher];
      await sleep(settleS * 1000);
      const pids = { bridge: bridge.proc.pid, bare_deno: idle.pid, io_floor: floor.proc.pid };
      const first = {
        bridge: sampleProc(pids.bridge),
        bare_deno: sampleProc(pids.bare_deno),
        io_floor: sampleProc(pids.io_floor),
      };
      const monitors = {
        bridge: new ProcMonitor(pids.bridge, ticksPerS),
        bare_deno: new ProcMonitor(pids.bare_deno, ticksPerS),
        io_floor: new ProcMonitor(pids.io_floor, ticksPerS),
      };
      const trend: FootprintResult["rss_trend_kb"] = [];
      const startedAt = performance.now();
      const endAt = startedAt + seconds * 1000;
      while (performance.now() < endAt) {
        await sleep(Math.min(5000, endAt - performance.now()));
        const now = sampleProc(pids.bridge);
        trend.push({
          t: Math.round((performance.now() - startedAt) / 100) / 10,
          bridge: now.rssKb,
          bridge_anon: now.rssAnonKb,
          bare_deno: sampleProc(pids.bare_deno).rssKb,
          io_floor: sampleProc(pids.io_floor).rssKb,
        });
      }
      const b = figures(first.bridge, sampleProc(pids.bridge), monitors.bridge.stop());
      const i = figures(first.bare_deno, sampleProc(pids.bare_deno), monitors.bare_deno.stop());
      const f = figures(first.io_floor, sampleProc(pids.io_floor), monitors.io_floor.stop());
      clearInterval(ticker);
      await Promise.all(inFlight);
      const ratio = (x: number, y: number) => Math.round((x / y) * 1000) / 1000;
      return {
        label: runner.label,
        seconds: Math.round((performance.now() - startedAt) / 100) / 10,
        bridge: b,
        bare_deno: i,
        io_floor: f,
        ratio_to_bare_deno: {
          rss_start: ratio(b.rss_start_kb, i.rss_start_kb),
          rss_end: ratio(b.rss_end_kb, i.rss_end_kb),
          cpu: ratio(b.cpu_percent, i.cpu_percent),
          wakeups: ratio(b.wakeups_per_s, i.wakeups_per_s),
        },
        telemetry_at_2hz_ms: rounded(summarize(bridgeMatcher.latencies)),
        telemetry_lost: bridgeMatcher.lost,
        io_floor_telemetry_at_2hz_ms: rounded(summarize(floorMatcher.latencies)),
        startup_ms: {
          socket_ready: Math.round(bridge.socketReadyMs),
          device_connected: Math.round(bridge.connectedMs),
        },
        rss_trend_kb: trend,
      };
    } finally {
      clearInterval(ticker);
      await Promise.all(started.map((p) => p.stop()));
    }
  });
}

function footprintRows(section: string, f: FootprintResult, settleS: number, emulated: boolean) {
  const b = f.bridge;
  const i = f.bare_deno;
  const fl = f.io_floor;
  const r = f.ratio_to_bare_deno;
  const rssRow = (when: string, name: string, bridgeKb: number, idleKb: number, ratio: number) => {
    const value = `${mib(bridgeKb)} vs bare Deno ${mib(idleKb)} = ${fmt(ratio)}×`;
    if (emulated) row(section, `RSS ${when}`, value);
    else {
      check(section, `RSS ${when}`, value, {
        name,
        value: ratio,
        limit: TARGET.rssRatio,
        unit: "× bare Deno",
        text: `≤ ${TARGET.rssRatio}× bare Deno`,
      });
    }
  };
  rssRow(
    `after start (+${settleS} s)`,
    "rss_ratio_start",
    b.rss_start_kb,
    i.rss_start_kb,
    r.rss_start,
  );
  rssRow(
    `after ${fmt(f.seconds, 0)} s at 2 Hz`,
    "rss_ratio_end",
    b.rss_end_kb,
    i.rss_end_kb,
    r.rss_end,
  );
  row(
    section,
    "  of which private (anon) / Deno binary pages (file)",
    `bridge ${mib(b.rss_anon_end_kb)} / ${mib(b.rss_file_end_kb)}, bare Deno ${
      mib(i.rss_anon_end_kb)
    } / ${mib(i.rss_file_end_kb)}, I/O floor ${mib(fl.rss_anon_end_kb)} / ${
      mib(fl.rss_file_end_kb)
    }`,
  );
  const cpuValue = `${fmt(b.cpu_percent, 3)} % of a core vs bare Deno ${
    fmt(i.cpu_percent, 3)
  } % = ${fmt(r.cpu, 1)}× (I/O floor ${fmt(fl.cpu_percent, 3)} %)`;
  if (emulated) row(section, "CPU at 2 Hz telemetry + 1 Hz heartbeat", cpuValue);
  else {
    check(section, "CPU at 2 Hz telemetry + 1 Hz heartbeat", cpuValue, {
      name: "steady_cpu_percent",
      value: b.cpu_percent,
      limit: TARGET.cpuPercent,
      unit: "% of one core",
      text: `≤ ${TARGET.cpuPercent} % of a core`,
    });
  }
  row(
    section,
    "wakeups (context switches, all threads)",
    `${fmt(b.wakeups_per_s, 1)}/s vs bare Deno ${fmt(i.wakeups_per_s, 1)}/s = ${
      fmt(r.wakeups, 1)
    }× (I/O floor ${fmt(fl.wakeups_per_s, 1)}/s)`,
  );
  row(
    section,
    `telemetry latency at 2 Hz (n=${f.telemetry_at_2hz_ms.n}${
      f.telemetry_lost ? `, ${f.telemetry_lost} lost` : ""
    })`,
    `${latencyText(f.telemetry_at_2hz_ms)} (I/O floor: p50 ${
      fmt(f.io_floor_telemetry_at_2hz_ms.p50)
    } / p99 ${fmt(f.io_floor_telemetry_at_2hz_ms.p99)})`,
  );
  row(
    section,
    "start-up: socket ready / device connected",
    `${f.startup_ms.socket_ready} / ${f.startup_ms.device_connected} ms`,
  );
}

async function benchFootprint(ticksPerS: number): Promise<void> {
  progress(
    `footprint: bridge, bare Deno and I/O floor side by side, ${CONFIG.longS} s at 2 Hz telemetry`,
  );
  await warmCache(NATIVE);
  const f = await measureFootprint(NATIVE, CONFIG.longS, CONFIG.settleS, ticksPerS);
  results.footprint = f;
  footprintRows(`5 footprint (${f.label})`, f, CONFIG.settleS, false);
}

// ---------------------------------------------------------------- 7. aarch64 (emulated)

async function findArmRunner(): Promise<DenoRunner | string> {
  const deno = Deno.env.get("PB_BENCH_ARM_DENO") ?? "/tmp/arm64deno/package/deno";
  const sysroot = Deno.env.get("PB_BENCH_ARM_SYSROOT") ?? "/usr/aarch64-linux-gnu";
  const qemu = Deno.env.get("PB_BENCH_QEMU") ?? "qemu-aarch64";
  try {
    await Deno.stat(deno);
  } catch {
    return `no arm64 deno at ${deno} (cd /tmp/arm64deno && npm pack ` +
      `@deno/linux-arm64-glibc@${Deno.version.deno} && tar xzf *.tgz; or set PB_BENCH_ARM_DENO)`;
  }
  try {
    const out = await new Deno.Command(qemu, {
      args: ["-L", sysroot, deno, "--version"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      return `${qemu} cannot run ${deno}: ${new TextDecoder().decode(out.stderr).trim()}`;
    }
  } catch (error) {
    return `${qemu} is not available (${(error as Error).message})`;
  }
  return {
    label: "aarch64 under qemu-user, EMULATED",
    command: qemu,
    prefix: ["-L", sysroot, deno],
    env: { DENO_DIR: "/tmp/pb-bench-arm64-deno-dir" },
    startTimeoutMs: 120_000,
  };
}

async function benchArm(ticksPerS: number): Promise<void> {
  const section = "7 aarch64 EMULATED";
  const runner = await findArmRunner();
  if (typeof runner === "string") {
    progress(`aarch64: skipped: ${runner}`);
    results.aarch64 = { skipped: runner };
    row(section, "footprint under qemu-aarch64", `SKIPPED: ${runner}`);
    return;
  }
  progress(`aarch64 (emulated): bridge and bare Deno under qemu, ${CONFIG.armS} s at 2 Hz`);
  await warmCache(runner);
  const f = await measureFootprint(runner, CONFIG.armS, ARM_SETTLE_S, ticksPerS);
  results.aarch64 = {
    ...f,
    note: "qemu-user emulation on x86_64: RSS includes qemu and its translated-code cache; " +
      "CPU and latency are inflated by emulation; compare only the bridge/bare-Deno ratios",
  };
  footprintRows(section, f, ARM_SETTLE_S, true);
}

// ---------------------------------------------------------------- 6. Klipper extra

interface PyTiming {
  n: number;
  p50_us: number;
  p99_us: number;
  mean_us: number;
  cpu_mean_us: number;
}

async function benchKlipper(): Promise<void> {
  const section = "6 klipper extra";
  const python = Deno.env.get("PYTHON") ?? "python3";
  progress(`Klipper extra: ${CONFIG.pythonIterations} iterations in the stand-in reactor`);
  const args = [KLIPPER_COST, "--iterations", String(CONFIG.pythonIterations)];
  let statusFile: string | undefined;
  if (sampleStatus !== null) {
    statusFile = await Deno.makeTempFile({ prefix: "pb-bench-status-", suffix: ".json" });
    await Deno.writeTextFile(statusFile, JSON.stringify(sampleStatus));
    args.push("--status-file", statusFile);
  }
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(python, { args, stdout: "piped", stderr: "piped" }).output();
  } catch (error) {
    row(section, "Klipper-side cost", `SKIPPED: cannot run ${python}: ${(error as Error).message}`);
    results.klipper = { skipped: `cannot run ${python}` };
    return;
  } finally {
    if (statusFile) await Deno.remove(statusFile).catch(() => {});
  }
  if (!out.success) {
    throw new Error(`klipper_cost.py failed:\n${new TextDecoder().decode(out.stderr)}`);
  }
  const r = JSON.parse(new TextDecoder().decode(out.stdout));
  r.status_source = sampleStatus !== null ? "captured from the real bridge" : "fake_bridge.py";
  results.klipper = r;
  const t = (x: PyTiming) =>
    `${fmt(x.cpu_mean_us, 1)} µs CPU (wall p50 ${fmt(x.p50_us, 1)} / p99 ${fmt(x.p99_us, 1)} µs)`;
  const limit = (name: string, value: number) => ({
    name,
    value,
    limit: TARGET.extraUsPerMessage,
    unit: "µs",
    text: `≤ ${TARGET.extraUsPerMessage} µs/message`,
  });
  check(
    section,
    `status notification (telemetry), Python ${r.python}`,
    t(r.telemetry),
    limit("extra_us_per_telemetry", r.telemetry.cpu_mean_us),
  );
  check(
    section,
    "target change: set_temp → request sent",
    t(r.target_send),
    limit("extra_us_per_target_request", r.target_send.cpu_mean_us),
  );
  check(
    section,
    "target change: reply handled",
    t(r.target_reply),
    limit("extra_us_per_target_reply", r.target_reply.cpu_mean_us),
  );
  row(
    section,
    "whole target change (request + reply + status)",
    `${fmt(r.target_change_total_cpu_us, 1)} µs CPU`,
  );
  row(
    section,
    "heartbeat (timer + reply) / get_status",
    `${fmt(r.heartbeat_send.cpu_mean_us + r.heartbeat_reply.cpu_mean_us, 1)} µs / ${
      fmt(r.get_status.cpu_mean_us, 1)
    } µs CPU`,
  );
  row(
    section,
    "steady state (2 status/s + 1 heartbeat/s)",
    `${fmt(r.steady_cpu_us_per_s, 0)} µs/s = ${fmt(r.steady_cpu_percent, 4)} % of a core`,
  );
}

// ---------------------------------------------------------------- machine, table

async function describeMachine(): Promise<Record<string, unknown>> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ??
    /^Model\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  const memKb = Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0);
  let python = "unknown";
  try {
    const out = await new Deno.Command(Deno.env.get("PYTHON") ?? "python3", {
      args: ["--version"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    python = new TextDecoder().decode(out.stdout).trim().replace(/^Python /, "");
  } catch {
    // Reported as unknown.
  }
  return {
    cpu_model: model,
    cores: navigator.hardwareConcurrency,
    virtualized: /^flags\s*:.*\bhypervisor\b/m.test(cpuinfo),
    memory_mib: Math.round(memKb / 1024),
    os: Deno.build.os,
    arch: Deno.build.arch,
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    python,
    date: new Date().toISOString(),
  };
}

function printTable(machine: Record<string, unknown>): void {
  const header = ["section", "metric", "value", "target", "result"];
  const body = rows.map((r) => [
    r.section,
    r.metric,
    r.value,
    r.target ?? "",
    r.met === undefined ? "" : r.met ? "met" : "MISSED",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  console.log(
    `panda-breath benchmarks — ${machine.cpu_model}, ${machine.cores} cores, Linux ${machine.kernel}, ` +
      `Deno ${machine.deno}, ${machine.date}`,
  );
  console.log(line(header));
  console.log(line(widths.map((w) => "-".repeat(w))));
  let previous = "";
  for (const cells of body) {
    console.log(line(cells[0] === previous ? ["", ...cells.slice(1)] : cells));
    previous = cells[0];
  }
}

// ---------------------------------------------------------------- 9. logs

async function benchLogs(): Promise<void> {
  const section = "9 logs";
  progress(`logs: the device faults every second for ${CONFIG.logS} s`);
  const v = await measureLogVolume(NATIVE, CONFIG.logS);
  results.logs = v;
  row(
    section,
    `log written in ${fmt(v.seconds, 0)} s, ${v.faults} faults`,
    `${v.bytes} bytes, ${v.lines} lines`,
  );
  check(
    section,
    `log per day under a fault every second${
      v.steady ? " (after the first minute)" : " (short run: overstated)"
    }`,
    `${fmt(v.steady_bytes_per_day / 1e6, 2)} MB/day (${
      fmt(v.steady_bytes_per_hour / 1e3, 1)
    } kB/hour)`,
    {
      name: "log_bytes_per_day_fault_every_s",
      value: v.steady_bytes_per_day,
      limit: TARGET.logBytesPerDay,
      unit: "bytes",
      text: "≤ 1 MB/day",
    },
  );
}

// ---------------------------------------------------------------- 3b. failsafe

/**
 * The failsafe's fastest path, as Klipper dying while heating looks to the
 * bridge: the controller's connection closes while the device heats; timed
 * until the simulated device reports it stopped heating.
 */
async function benchFailsafe(sim: Simulator): Promise<void> {
  const section = "3b failsafe";
  const trials = 10;
  progress(`failsafe: ${trials} controller closes while heating`);
  const offMs: number[] = [];
  for (let i = 0; i < trials; i++) {
    const bridge = await startBridge(NATIVE, sim.port, false);
    try {
      await bridge.client.request("set_target", { target: 40 });
      const deadline = performance.now() + 5000;
      while (!sim.state.work_on && performance.now() < deadline) await sleep(2);
      const closedAt = performance.now();
      await bridge.client.close();
      while (sim.state.work_on && performance.now() - closedAt < 5000) await sleep(1);
      offMs.push(performance.now() - closedAt);
    } finally {
      await bridge.stop();
    }
  }
  const off = summarize(offMs);
  results.failsafe = {
    trials,
    how: "the controller's socket closes while heating; until the simulated device is off",
    controller_gone_to_device_off_ms: rounded(off),
    heartbeat_timeout_s: 10,
  };
  check(section, "controller gone → device off p99", `${off.p99.toFixed(1)} ms`, {
    name: "controller_gone_off_p99_ms",
    value: off.p99,
    limit: TARGET.controllerGoneOffMs,
    unit: "ms",
    text: `p99 ≤ ${TARGET.controllerGoneOffMs} ms`,
  });
  row(section, "Klipper hung (no heartbeat) → off", "after --failsafe-timeout (10 s; fault suite)");
}

// ---------------------------------------------------------------- 8. memory

/**
 * Issue 12: what each reconnect leaves behind. The bridge and a bare Deno
 * process do the same WebSocket churn against devices that close every
 * connection after a few frames (tests/bench/reconnect_memory.ts).
 */
async function benchMemory(): Promise<void> {
  const section = "8 memory";
  const last = CONFIG.reconnects;
  const first = Math.max(1, Math.round(last / 10));
  progress(`memory: bridge and bare Deno through ${last} reconnects side by side`);
  const m = await measureReconnectMemory([first, last], progress);
  const [b0, b1, b2] = m.bridge;
  const [f0, f1, f2] = m.floor;
  const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;
  const heap = (bytes: number) => `${(bytes / 1048576).toFixed(2)} MiB`;
  const at = (s: MemorySample, f: MemorySample) =>
    `RSS ${mib(s.rssKiB)} (${(s.rssKiB / b0.rssKiB).toFixed(3)}× start, ` +
    `${(s.rssKiB / f.rssKiB).toFixed(3)}× bare ${mib(f.rssKiB)}), heap ${heap(s.heapBytes)} ` +
    `(${(s.heapBytes / b0.heapBytes).toFixed(3)}× start, ${
      (s.heapBytes / f.heapBytes).toFixed(3)
    }× bare), fds ${s.fds}`;
  row(section, "start", at(b0, f0));
  row(section, `after ${first} reconnects`, at(b1, f1));
  row(section, `after ${last} reconnects`, at(b2, f2));
  const rssRatio = b2.rssKiB / b1.rssKiB;
  const floorRssRatio = f2.rssKiB / f1.rssKiB;
  const heapRatio = b2.heapBytes / b1.heapBytes;
  check(section, `RSS after ${last} / after ${first}`, rssRatio.toFixed(3), {
    name: "reconnect_rss_ratio",
    value: rssRatio,
    limit: TARGET.memoryGrowthRatio,
    unit: "×",
    text: `≤ ${TARGET.memoryGrowthRatio}×`,
  });
  row(
    section,
    `bare Deno RSS after ${last} / after ${first}`,
    `${floorRssRatio.toFixed(3)} (the runtime's own; bridge beyond it: ${
      ((b2.rssKiB - b1.rssKiB - (f2.rssKiB - f1.rssKiB)) / (last - first) * 1024).toFixed(0)
    } B per reconnect)`,
  );
  check(section, `heap after GC, ${last} / ${first}`, heapRatio.toFixed(3), {
    name: "reconnect_heap_ratio",
    value: heapRatio,
    limit: TARGET.memoryGrowthRatio,
    unit: "×",
    text: `≤ ${TARGET.memoryGrowthRatio}×`,
  });
  check(section, `fds after ${last} − after ${first}`, `${b1.fds} → ${b2.fds}`, {
    name: "reconnect_fd_growth",
    value: b2.fds - b1.fds,
    limit: TARGET.fdGrowth,
    unit: "fds",
    text: `flat (≤ +${TARGET.fdGrowth})`,
  });
  results.memory = {
    how: "device closes every connection 5 ms after its connect frame and 3 temperature " +
      "frames; bridge = Bridge+ApiServer+Logger with a 4-20 ms backoff; heap after 2 full GCs",
    bridge: m.bridge,
    bare_deno: m.floor,
  };
}

// ---------------------------------------------------------------- main

async function runSection(name: string, run: () => Promise<void>): Promise<void> {
  try {
    await run();
  } catch (error) {
    const message = (error as Error).message.split("\n")[0];
    progress(`${name} FAILED: ${(error as Error).stack ?? error}`);
    row(name, "error", `FAILED: ${message}`);
    results[name] = { error: (error as Error).message };
  }
}

async function main(): Promise<void> {
  const began = performance.now();
  const machine = await describeMachine();
  const ticksPerS = await clockTicksPerSecond();
  progress(`machine: ${JSON.stringify(machine)}`);
  if (wanted("command") || wanted("telemetry") || wanted("reconnect") || wanted("failsafe")) {
    await warmCache(NATIVE);
    await withSimulator(async (sim) => {
      const bridge = await startBridge(NATIVE, sim.port);
      try {
        await captureStatus(bridge.client);
        if (wanted("command")) await runSection("1 command", () => benchCommand(sim, bridge));
        if (wanted("telemetry")) {
          await runSection("2 telemetry", () => benchTelemetry(sim, bridge));
        }
        if (wanted("reconnect")) {
          await runSection("3 reconnect", () => benchReconnect(sim, bridge));
        }
      } finally {
        await bridge.stop();
      }
      if (wanted("failsafe")) await runSection("3b failsafe", () => benchFailsafe(sim));
    });
  }
  if (wanted("flood")) await runSection("4 flood", () => benchFlood(ticksPerS));
  if (wanted("footprint")) await runSection("5 footprint", () => benchFootprint(ticksPerS));
  if (wanted("klipper")) await runSection("6 klipper extra", () => benchKlipper());
  if (wanted("aarch64")) await runSection("7 aarch64", () => benchArm(ticksPerS));
  if (wanted("memory")) await runSection("8 memory", () => benchMemory());
  if (wanted("logs")) await runSection("9 logs", () => benchLogs());

  const totalS = Math.round((performance.now() - began) / 100) / 10;
  printTable(machine);
  const missed = checks.filter((c) => !c.met).map((c) => c.name);
  console.log(
    `${checks.length - missed.length} of ${checks.length} targets met` +
      (missed.length ? ` (missed: ${missed.join(", ")})` : "") + `; bench took ${totalS} s`,
  );
  const partial = only !== undefined || quick;
  const out = flags.out ?? (partial ? undefined : DEFAULT_OUT);
  const report = {
    machine,
    config: { ...CONFIG, sections: only ?? SECTIONS, quick, bench_seconds: totalS },
    targets: checks,
    results,
    table: rows,
  };
  if (out) {
    await Deno.writeTextFile(out, JSON.stringify(report, null, 2) + "\n");
    console.log(`results written to ${out}`);
  } else {
    console.log("partial run (--only/--quick): results.json not written (use --out=PATH)");
  }
}

if (import.meta.main) {
  await main();
  Deno.exit(0);
}
