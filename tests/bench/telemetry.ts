/**
 * Bench section `telemetry`: a device frame until the subscriber has its
 * status, one frame at a time (target p99 ≤ 5 ms, nothing lost). Frames are
 * paced {@link STATUS_MIN_GAP_MS} apart, as fast as the socket API delivers
 * readings to a subscriber: sent faster, a frame would wait for the
 * coalescing gap, and this would measure the gap, not the bridge.
 */

import { type BridgeRun, TARGET, WARMUP } from "./context.ts";
import { TelemetryMatcher } from "./frames.ts";
import { latencyText } from "./report.ts";
import { rounded, summarize } from "./stats.ts";
import { STATUS_MIN_GAP_MS } from "../../lib/coalesce.ts";

/** Telemetry latency, on the shared bridge. */
export const benchTelemetry: BridgeRun = async (ctx, sim, bridge): Promise<void> => {
  const section = "2 telemetry";
  const { frames } = ctx.config;
  ctx.progress(`telemetry latency: ${frames} frames`);
  sim.silence(true);
  const matcher = new TelemetryMatcher(bridge.client);
  const latencies: number[] = [];
  let lost = 0;
  try {
    for (let k = 0; k < frames + WARMUP; k++) {
      const ms = await matcher.send(sim, k);
      await new Promise((resolve) => setTimeout(resolve, STATUS_MIN_GAP_MS + 5));
      if (k < WARMUP) continue;
      if (ms === null) lost++;
      else latencies.push(ms);
    }
  } finally {
    bridge.client.onNotification = null;
    sim.silence(false);
  }
  const s = summarize(latencies);
  ctx.report.result("telemetry", {
    frames,
    warmup_excluded: WARMUP,
    lost,
    mode: `one frame at a time, ${STATUS_MIN_GAP_MS + 5} ms apart (the coalescing gap)`,
    to_subscriber_ms: rounded(s),
  });
  ctx.report.check(
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
};
