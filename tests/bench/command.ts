/**
 * Bench section `command`: `set_target` on the socket until the device has
 * the frame, and until the reply is back (target p99 ≤ 5 ms).
 */

import { type BridgeRun, TARGET, WARMUP } from "./context.ts";
import { isDesiredStateFrame } from "./frames.ts";
import { latencyText } from "./report.ts";
import { rounded, summarize } from "./stats.ts";

/** Command latency, on the shared bridge. */
export const benchCommand: BridgeRun = async (ctx, sim, bridge): Promise<void> => {
  const section = "1 command";
  const { commands } = ctx.config;
  ctx.progress(`command latency: ${commands} set_target changes`);
  const deviceMs: number[] = [];
  const replyMs: number[] = [];
  for (let i = -WARMUP; i < commands; i++) {
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
  ctx.report.result("command", {
    changes: commands,
    warmup_excluded: WARMUP,
    to_device_ms: rounded(device),
    to_reply_ms: rounded(reply),
  });
  ctx.report.check(
    section,
    `set_target → device has frame (n=${device.n})`,
    latencyText(device),
    {
      name: "command_p99_ms",
      value: device.p99,
      limit: TARGET.latencyP99Ms,
      unit: "ms",
      text: `p99 ≤ ${TARGET.latencyP99Ms} ms`,
    },
  );
  ctx.report.row(section, "set_target → reply on the socket", latencyText(reply));
};
