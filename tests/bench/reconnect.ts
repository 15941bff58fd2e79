/**
 * Bench section `reconnect`: the device drops the link (sockets aborted, no
 * close frame); timed until the bridge is connected again and has re-sent
 * the desired state (target p99 ≤ 500 ms), and until the subscriber sees the
 * link down and up.
 */

import type { Simulator } from "../../lib/simulator/mod.ts";
import { sleep } from "./proc.ts";
import { type BridgeRun, TARGET } from "./context.ts";
import { isDesiredStateFrame } from "./frames.ts";
import { latencyText } from "./report.ts";
import { rounded, summarize } from "./stats.ts";

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

/** Reconnect latency, on the shared bridge. */
export const benchReconnect: BridgeRun = async (ctx, sim, bridge): Promise<void> => {
  const section = "3 reconnect";
  const { drops } = ctx.config;
  ctx.progress(`reconnect: ${drops} drops`);
  const target = (await bridge.client.request("status")).message.result as { target: number };
  const desiredMs: number[] = [];
  const downMs: number[] = [];
  const upMs: number[] = [];
  let downAt = 0;
  let upAt = 0;
  bridge.client.onNotification = (line, at) => {
    if (!downAt && line.startsWith('{"method":"status","params":{"connected":false')) downAt = at;
    else if (
      downAt && !upAt && line.startsWith('{"method":"status","params":{"connected":true')
    ) {
      upAt = at;
    }
  };
  try {
    for (let i = 0; i < drops; i++) {
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
  ctx.report.result("reconnect", {
    drops,
    how: "another client changes the device, then the device aborts its sockets (FIN, no " +
      "close frame) and keeps accepting; the bridge compares the connect frame and re-sends",
    to_desired_state_resent_ms: rounded(desired),
    to_subscriber_sees_down_ms: rounded(down),
    to_subscriber_sees_connected_ms: rounded(up),
    bridge_link_counters: status.link,
  });
  ctx.report.check(
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
  ctx.report.row(section, "drop → subscriber sees connected:false", latencyText(down, "ms", 1));
  ctx.report.row(section, "drop → subscriber sees connected:true", latencyText(up, "ms", 1));
};
