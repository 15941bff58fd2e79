/**
 * Bench section `flood`: the device sends `floodRate` frames a second
 * (50 000 by default: 25 000 times the real device's rate, and short of what
 * the bridge can parse, so what is measured is the bridge and not a queue in
 * front of it; the bridge's µs per frame gives its capacity); the real
 * Klipper extra is subscribed in its own process (klipper_subscriber.py),
 * and the bench polls `status` to learn which frame the bridge handled last.
 * Targets: RSS bounded, backlog not growing, the extra keeps its link,
 * ≤ 10 status notifications/s with the newest state ≤ 100 ms old.
 */

import { NATIVE, Proc, sleep, startBridge } from "./proc.ts";
import { ProcMonitor, sampleProc } from "../procfs.ts";
import { type OwnRun, TARGET } from "./context.ts";
import { handledFrom, telemetryFrame, temperatureOf, withSimulator } from "./frames.ts";
import { fmt, latencyText, mib } from "./report.ts";
import { STATUS_MIN_GAP_MS } from "../../lib/coalesce.ts";
import { rounded, summarize, type Summary } from "./stats.ts";

const KLIPPER_SUBSCRIBER = new URL("./klipper_subscriber.py", import.meta.url).pathname;

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
  /** Each notification: wall-clock arrival (ms since the epoch) and the temperature it carried. */
  deliveries: [number, number | null][];
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

/** Device flood: its own simulator, bridge and Klipper extra. */
export const benchFlood: OwnRun = async (ctx): Promise<void> => {
  const section = "4 flood";
  const { floodS } = ctx.config;
  const { report } = ctx;
  ctx.progress(`flood: the device sends as fast as it can for ${floodS} s`);
  await withSimulator(ctx.config.telemetryHz, async (sim) => {
    // The subscriber is the real Klipper extra in its own process, as in
    // Klipper; the bench's client does not subscribe: it heartbeats and polls
    // `status` to learn which frame the bridge has handled last.
    const bridge = await startBridge(NATIVE, sim.port, false);
    let klipper: Proc | undefined;
    try {
      sim.silence(true);
      klipper = await startKlipperSubscriber(bridge.socket, floodS + 3);
      await sleep(500);
      const poller = bridge.client;
      let sent = 0;
      let handled = 0;
      const pollMs: number[] = [];
      const samples: FloodSample[] = [];
      let polling = true;
      // Resolved when the flood stops, so that the drain is seen at once, not after a sleep.
      let stopPolling!: () => void;
      const pollingStopped = new Promise<void>((resolve) => stopPolling = resolve);
      const poll = async () => {
        const askedAt = performance.now();
        const { at, message } = await poller.request("status");
        pollMs.push(at - askedAt);
        const count = handledFrom((message.result as { temperature: unknown }).temperature, sent);
        if (count !== null && count > handled) handled = count;
      };
      const start = sampleProc(bridge.proc.pid);
      const bridgeCpu = new ProcMonitor(bridge.proc.pid, ctx.ticksPerS, 250);
      const benchCpu = new ProcMonitor(Deno.pid, ctx.ticksPerS, 250);
      const startedAt = performance.now();
      const pollLoop = (async () => {
        while (polling) {
          await poll();
          const s = sampleProc(bridge.proc.pid);
          samples.push({ t: (s.at - startedAt) / 1000, rssKb: s.rssKb, sent, handled });
          await Promise.race([sleep(250), pollingStopped]);
        }
      })();
      const endAt = startedAt + floodS * 1000;
      const BATCH = 16;
      const batchSentAt: number[] = []; // wall clock, ms: batch b holds frames b·BATCH…
      const { floodRate } = ctx.config;
      while (performance.now() < endAt) {
        const now = performance.now();
        if (sent >= ((now - startedAt) / 1000) * floodRate) {
          await sleep(1);
          continue;
        }
        batchSentAt.push(performance.timeOrigin + now);
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
      stopPolling();
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
      const drainedAt = performance.timeOrigin + stoppedAt + drainMs;
      const ages = stateAges(k.deliveries, batchSentAt, BATCH, sent, drainedAt);
      const trailing = trailingDelivery(k.deliveries, batchSentAt, BATCH, sent, drainedAt);
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
      report.result("flood", {
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
        klipper_subscriber: { ...k, deliveries: k.deliveries.length },
        status_age_ms_at_delivery: rounded(ages),
        trailing_status: trailing,
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
      });
      report.row(
        section,
        `frames handled per second (${fmt(wallS, 1)} s flood)`,
        `${Math.round(handledPerS)}/s (device sent ${Math.round(sent / wallS)}/s; ` +
          `capacity ${Math.round(1e6 / cpuPerFrameUs)}/s at the bridge's µs/frame)`,
      );
      report.row(
        section,
        "bridge CPU while flooded",
        `${fmt(duringFlood.cpuPercent, 0)} % of a core, ${fmt(cpuPerFrameUs, 1)} µs/frame ` +
          `(device process: ${fmt(benchCost.cpuPercent, 0)} %)`,
      );
      report.row(section, "status request answered under flood", latencyText(poll99, "ms", 1));
      report.check(
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
      report.check(
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
      report.check(
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
      report.check(
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
      report.check(
        section,
        `age of the state a notification carries, at delivery (n=${ages.n})`,
        latencyText(ages),
        {
          name: "flood_status_age_ms",
          value: ages.n > 0 ? ages.max : Infinity,
          limit: TARGET.statusAgeMs,
          unit: "ms (max)",
          text: `≤ ${TARGET.statusAgeMs} ms (max)`,
        },
      );
      report.row(
        section,
        "  the last state, after the flood (waits out its gap)",
        trailing === null
          ? "none after the drain: the last state went out with the flood (counted above)"
          : `${fmt(trailing.age_ms, 1)} ms after its frame was sent, ${
            fmt(trailing.after_drain_ms, 1)
          } ms after the bench saw every frame handled (gap ${STATUS_MIN_GAP_MS} ms)`,
      );
      report.row(
        section,
        "time between notifications to Klipper",
        `p50 ${fmt(k.status_gap_ms.p50 ?? NaN, 1)} / p99 ${fmt(k.status_gap_ms.p99 ?? NaN, 1)} / ` +
          `max ${fmt(k.status_gap_ms.max ?? NaN, 1)} ms`,
      );
      report.row(
        section,
        "Klipper extra CPU while flooded",
        `${fmt(k.cpu_percent, 1)} % of a core, ${fmt(k.us_per_status, 1)} µs per status`,
      );
    } finally {
      await klipper?.stop();
      await bridge.stop();
    }
  });
};

/**
 * How old the state each notification carried was when it arrived: the
 * frame it came from is the newest one with its temperature sent before the
 * arrival (temperatures repeat only every `TEMPERATURE_WRAP` frames,
 * over 0.3 s at flood rate); its age is the arrival minus the moment its
 * batch started to be sent. Deliveries before the flood, or after the
 * bridge had handled every frame (`until`, wall clock ms), are left out.
 */
export function stateAges(
  deliveries: readonly [number, number | null][],
  batchSentAt: readonly number[],
  batch: number,
  sent: number,
  until: number,
): Summary {
  const ages: number[] = [];
  let batches = 0; // batches begun before the arrival; deliveries come in arrival order
  for (const [arrivedAt, temperature] of deliveries) {
    while (batches < batchSentAt.length && batchSentAt[batches] <= arrivedAt) batches++;
    if (batches === 0 || arrivedAt > until) continue;
    const handled = handledFrom(temperature, Math.min(sent, batches * batch));
    if (handled === null || handled === 0) continue;
    ages.push(arrivedAt - batchSentAt[Math.floor((handled - 1) / batch)]);
  }
  return summarize(ages);
}

/**
 * The notification that carried the flood's last frame, when it came after
 * the bridge had handled every frame (`until`): the coalesced status that
 * waited out the rest of its gap. Its age (arrival minus the send of its
 * frame's batch) and its arrival after `until`, in ms; null if none.
 */
export function trailingDelivery(
  deliveries: readonly [number, number | null][],
  batchSentAt: readonly number[],
  batch: number,
  sent: number,
  until: number,
): { age_ms: number; after_drain_ms: number } | null {
  const last = deliveries.find(([arrivedAt, temperature]) =>
    arrivedAt > until && handledFrom(temperature, sent) === sent
  );
  if (last === undefined || sent === 0) return null;
  const round = (x: number) => Math.round(x * 10) / 10;
  return {
    age_ms: round(last[0] - batchSentAt[Math.floor((sent - 1) / batch)]),
    after_drain_ms: round(last[0] - until),
  };
}
