/**
 * Bench section `footprint`: the bridge, a bare Deno (idle.ts) and the I/O
 * floor (io_floor.ts) side by side while the device sends telemetry at 2 Hz
 * and a controller heartbeats every second. Targets: RSS ≤ 1.25× bare Deno,
 * CPU ≤ 0.2 % of a core, RSS and CPU ≤ 1.25× the I/O floor (issue 12). The
 * aarch64 section runs the same under qemu. Beside them runs the floor with
 * the device link's watchdog timer (`io_floor.ts --watchdog`), which tells
 * what that one timer costs from what the bridge's work per event costs.
 * Natively, the section also prints what an idle gap costs on this machine
 * (tests/bench/cold_cache.ts): at 2 Hz every event runs with cold caches,
 * which is what the CPU rows mostly measure.
 */

import {
  type DenoRunner,
  NATIVE,
  sleep,
  startBridge,
  startIdle,
  startIoFloor,
  warmCache,
} from "./proc.ts";
import { type ColdCacheResult, measureColdCache } from "./cold_cache.ts";
import { type ProcCost, ProcMonitor, type ProcSample, sampleProc } from "../procfs.ts";
import { type BenchContext, captureStatus, type OwnRun, TARGET } from "./context.ts";
import { telemetryFrame, TelemetryMatcher, temperatureOf, withSimulator } from "./frames.ts";
import { fmt, latencyText, mib, type Report } from "./report.ts";
import { HEARTBEAT_MS } from "./socket_client.ts";
import { DEFAULT_LINK_TIMINGS } from "../../lib/device_link.ts";
import { rounded, summarize, type Summary } from "./stats.ts";

/** One process's footprint over the run (results.json). */
export interface ProcFigures {
  /** RSS at the first sample, KiB. */
  rss_start_kb: number;
  /** RSS at the end, KiB. */
  rss_end_kb: number;
  /** Private (anonymous) RSS at the end, KiB. */
  rss_anon_end_kb: number;
  /** File-backed RSS at the end, KiB. */
  rss_file_end_kb: number;
  /** Peak RSS, KiB. */
  hwm_kb: number;
  /** CPU, % of one core. */
  cpu_percent: number;
  /** The same from clock ticks. */
  cpu_percent_from_ticks: number;
  /** CPU time, ms. */
  cpu_ms: number;
  /** Context switches per second, all threads. */
  wakeups_per_s: number;
  /** Voluntary context switches per second. */
  voluntary_per_s: number;
  /** Involuntary context switches per second. */
  nonvoluntary_per_s: number;
  /** Threads at the end. */
  threads: number;
}

/** What {@link measureFootprint} found (results.json `footprint` and `aarch64`). */
export interface FootprintResult {
  /** The runner's label (architecture, or emulated). */
  label: string;
  /** Seconds measured. */
  seconds: number;
  /** The bridge. */
  bridge: ProcFigures;
  /** A bare Deno process. */
  bare_deno: ProcFigures;
  /** A minimal Deno doing the same WebSocket and socket I/O. */
  io_floor: ProcFigures;
  /** The same with the device link's watchdog timer. */
  io_floor_watchdog: ProcFigures;
  /** The bridge over bare Deno. */
  ratio_to_bare_deno: { rss_start: number; rss_end: number; cpu: number; wakeups: number };
  /** Events each server handled per second: device frames and controller heartbeats. */
  events_per_s: number;
  /** Telemetry latency to the bridge's subscriber. */
  telemetry_at_2hz_ms: Summary;
  /** Frames without a status within 2 s. */
  telemetry_lost: number;
  /** Telemetry latency through the I/O floor. */
  io_floor_telemetry_at_2hz_ms: Summary;
  /** Bridge start-up, ms from spawn. */
  startup_ms: { socket_ready: number; device_connected: number };
  /** RSS every 5 s, KiB. */
  rss_trend_kb: {
    t: number;
    bridge: number;
    bridge_anon: number;
    bare_deno: number;
    io_floor: number;
    io_floor_watchdog: number;
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
 * (tests/bench/io_floor.ts), plain and with the watchdog timer, started by
 * `runner`, side by side for `seconds`
 * after `settleS`, while the device sends telemetry at the configured rate
 * and a controller heartbeats each of the two servers every second, as the
 * Klipper extra does.
 */
export async function measureFootprint(
  ctx: BenchContext,
  runner: DenoRunner,
  seconds: number,
  settleS: number,
): Promise<FootprintResult> {
  const { ticksPerS } = ctx;
  return await withSimulator(ctx.config.telemetryHz, async (sim) => {
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
    }, 1000 / ctx.config.telemetryHz);
    const started: { stop(): Promise<void> }[] = [];
    try {
      const [bridge, idle, floor, watchdogFloor] = await Promise.all([
        startBridge(runner, sim.port),
        startIdle(runner),
        startIoFloor(runner, sim.port),
        startIoFloor(runner, sim.port, true),
      ]);
      started.push(bridge, { stop: async () => void await idle.stop() }, floor, watchdogFloor);
      await captureStatus(ctx, bridge.client);
      const bridgeMatcher = new TelemetryMatcher(bridge.client);
      const floorMatcher = new TelemetryMatcher(floor.client, '"warehouse_temper":');
      const watchdogFloorMatcher = new TelemetryMatcher(
        watchdogFloor.client,
        '"warehouse_temper":',
      );
      matchers = [bridgeMatcher, floorMatcher, watchdogFloorMatcher];
      await sleep(settleS * 1000);
      const pids = {
        bridge: bridge.proc.pid,
        bare_deno: idle.pid,
        io_floor: floor.proc.pid,
        io_floor_watchdog: watchdogFloor.proc.pid,
      };
      const first = {
        bridge: sampleProc(pids.bridge),
        bare_deno: sampleProc(pids.bare_deno),
        io_floor: sampleProc(pids.io_floor),
        io_floor_watchdog: sampleProc(pids.io_floor_watchdog),
      };
      const monitors = {
        bridge: new ProcMonitor(pids.bridge, ticksPerS),
        bare_deno: new ProcMonitor(pids.bare_deno, ticksPerS),
        io_floor: new ProcMonitor(pids.io_floor, ticksPerS),
        io_floor_watchdog: new ProcMonitor(pids.io_floor_watchdog, ticksPerS),
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
          io_floor_watchdog: sampleProc(pids.io_floor_watchdog).rssKb,
        });
      }
      const b = figures(first.bridge, sampleProc(pids.bridge), monitors.bridge.stop());
      const i = figures(first.bare_deno, sampleProc(pids.bare_deno), monitors.bare_deno.stop());
      const f = figures(first.io_floor, sampleProc(pids.io_floor), monitors.io_floor.stop());
      const w = figures(
        first.io_floor_watchdog,
        sampleProc(pids.io_floor_watchdog),
        monitors.io_floor_watchdog.stop(),
      );
      clearInterval(ticker);
      await Promise.all(inFlight);
      const ratio = (x: number, y: number) => Math.round((x / y) * 1000) / 1000;
      return {
        label: runner.label,
        seconds: Math.round((performance.now() - startedAt) / 100) / 10,
        events_per_s: ctx.config.telemetryHz + 1000 / HEARTBEAT_MS,
        bridge: b,
        bare_deno: i,
        io_floor: f,
        io_floor_watchdog: w,
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

/**
 * The table rows of a footprint; RSS and CPU are targets natively, plain
 * rows when `emulated` (qemu inflates both).
 */
export function footprintRows(
  report: Report,
  section: string,
  f: FootprintResult,
  settleS: number,
  emulated: boolean,
): void {
  const b = f.bridge;
  const i = f.bare_deno;
  const fl = f.io_floor;
  const r = f.ratio_to_bare_deno;
  const rssRow = (when: string, name: string, bridgeKb: number, idleKb: number, ratio: number) => {
    const value = `${mib(bridgeKb)} vs bare Deno ${mib(idleKb)} = ${fmt(ratio)}×`;
    if (emulated) report.row(section, `RSS ${when}`, value);
    else {
      report.check(section, `RSS ${when}`, value, {
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
  report.row(
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
  if (emulated) report.row(section, "CPU at 2 Hz telemetry + 1 Hz heartbeat", cpuValue);
  else {
    report.check(section, "CPU at 2 Hz telemetry + 1 Hz heartbeat", cpuValue, {
      name: "steady_cpu_percent",
      value: b.cpu_percent,
      limit: TARGET.cpuPercent,
      unit: "% of one core",
      text: `≤ ${TARGET.cpuPercent} % of a core`,
    });
  }
  // Issue 12's measure: the bridge beside a minimal Deno doing the same I/O.
  const floorRow = (
    metric: string,
    name: string,
    bridge: number,
    floor: number,
    unit: string,
    digits: number,
  ) => {
    const ratio = bridge / floor;
    const value = `${fmt(bridge, digits)} vs ${fmt(floor, digits)} ${unit} = ${fmt(ratio)}×`;
    if (emulated) report.row(section, metric, value);
    else {
      report.check(section, metric, value, {
        name,
        value: ratio,
        limit: TARGET.ioFloorRatio,
        unit: "× I/O floor",
        text: `≤ ${TARGET.ioFloorRatio}× I/O floor`,
      });
    }
  };
  floorRow(
    "RSS vs the I/O floor (same WebSocket + socket I/O)",
    "rss_ratio_io_floor",
    b.rss_end_kb / 1024,
    fl.rss_end_kb / 1024,
    "MiB",
    1,
  );
  floorRow(
    "CPU vs the I/O floor (same WebSocket + socket I/O)",
    "cpu_ratio_io_floor",
    b.cpu_percent,
    fl.cpu_percent,
    "% of a core",
    3,
  );
  // What the one timer the floor lacks costs, told apart from the bridge's work per event.
  const w = f.io_floor_watchdog;
  const timerUsPerS = ((w.cpu_percent - fl.cpu_percent) / 100) * 1e6;
  report.row(
    section,
    `  the I/O floor with the link's ${
      fmt(DEFAULT_LINK_TIMINGS.watchdogMs / 1000, 0)
    } s watchdog timer`,
    `${fmt(w.cpu_percent, 3)} % of a core, ${fmt(w.wakeups_per_s, 1)} wakeups/s: the timer ${
      fmt(timerUsPerS, 0)
    } µs and ${fmt(w.wakeups_per_s - fl.wakeups_per_s, 1)} wakeups a second`,
  );
  report.row(
    section,
    "  CPU vs the I/O floor with that timer (the bridge's own work per event)",
    `${fmt(b.cpu_percent, 3)} vs ${fmt(w.cpu_percent, 3)} % of a core = ${
      fmt(b.cpu_percent / w.cpu_percent)
    }×`,
  );
  const perEventUs = (p: ProcFigures) => (p.cpu_percent / 100) * 1e6 / f.events_per_s;
  report.row(
    section,
    `CPU per event (${fmt(f.events_per_s, 0)} a second: device frames and heartbeats)`,
    `bridge ${fmt(perEventUs(b), 0)} µs, I/O floor ${fmt(perEventUs(fl), 0)} µs`,
  );
  report.row(
    section,
    "wakeups (context switches, all threads)",
    `${fmt(b.wakeups_per_s, 1)}/s vs bare Deno ${fmt(i.wakeups_per_s, 1)}/s = ${
      fmt(r.wakeups, 1)
    }× (I/O floor ${fmt(fl.wakeups_per_s, 1)}/s)`,
  );
  report.row(
    section,
    `telemetry latency at 2 Hz (n=${f.telemetry_at_2hz_ms.n}${
      f.telemetry_lost ? `, ${f.telemetry_lost} lost` : ""
    })`,
    `${latencyText(f.telemetry_at_2hz_ms)} (I/O floor: p50 ${
      fmt(f.io_floor_telemetry_at_2hz_ms.p50)
    } / p99 ${fmt(f.io_floor_telemetry_at_2hz_ms.p99)})`,
  );
  report.row(
    section,
    "start-up: socket ready / device connected",
    `${f.startup_ms.socket_ready} / ${f.startup_ms.device_connected} ms`,
  );
}

/** Footprint and idle cost, natively. */
export const benchFootprint: OwnRun = async (ctx): Promise<void> => {
  const { longS, settleS } = ctx.config;
  ctx.progress(
    `footprint: bridge, bare Deno and I/O floor side by side, ${longS} s at 2 Hz telemetry`,
  );
  await warmCache(NATIVE);
  const cold = await measureColdCache();
  const f = await measureFootprint(ctx, NATIVE, longS, settleS);
  ctx.report.result("footprint", { ...f, cold_cache: cold });
  const section = `5 footprint (${f.label})`;
  footprintRows(ctx.report, section, f, settleS, false);
  coldCacheRow(ctx.report, section, cold);
};

/**
 * The machine's price of an idle gap (tests/bench/cold_cache.ts), beside the
 * CPU rows it explains.
 */
function coldCacheRow(report: Report, section: string, c: ColdCacheResult): void {
  report.row(
    section,
    `one frame's parse + status encode: back to back / after ${c.gap_ms} ms idle`,
    `${fmt(c.warm_us, 1)} / ${fmt(c.cold_us, 1)} µs = ${
      fmt(c.ratio, 0)
    }× (at 2 Hz every event runs cold)`,
  );
}
