/**
 * Bench section `failsafe`: the failsafe's fastest path, as Klipper dying
 * while heating looks to the bridge: the controller's connection closes
 * while the device heats; timed until the simulated device reports it
 * stopped heating (target p99 ≤ 1000 ms).
 */

import { NATIVE, sleep, startBridge } from "./proc.ts";
import { type SimulatorRun, TARGET } from "./context.ts";
import { rounded, summarize } from "./stats.ts";

/** Failsafe latency: its own bridges, on the shared simulator. */
export const benchFailsafe: SimulatorRun = async (ctx, sim): Promise<void> => {
  const section = "3b failsafe";
  const trials = 10;
  ctx.progress(`failsafe: ${trials} controller closes while heating`);
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
  ctx.report.result("failsafe", {
    trials,
    how: "the controller's socket closes while heating; until the simulated device is off",
    controller_gone_to_device_off_ms: rounded(off),
    heartbeat_timeout_s: 10,
  });
  ctx.report.check(section, "controller gone → device off p99", `${off.p99.toFixed(1)} ms`, {
    name: "controller_gone_off_p99_ms",
    value: off.p99,
    limit: TARGET.controllerGoneOffMs,
    unit: "ms",
    text: `p99 ≤ ${TARGET.controllerGoneOffMs} ms`,
  });
  ctx.report.row(
    section,
    "Klipper hung (no heartbeat) → off",
    "after --failsafe-timeout (10 s; fault suite)",
  );
};
