/**
 * Rows of docs/safety.md that no other suite proves end to end: device pushes
 * the bridge must enforce (hazard 4) with `panda-breath run` as a real
 * subprocess against the simulator, and the decision core's independence
 * from wall-clock time (row "clock jumps").
 */
import assert from "node:assert/strict";
import { ApiClient } from "../lib/api_client.ts";
import { type ButtonAction, Simulator } from "../lib/simulator/mod.ts";
import { startBridge } from "./process.ts";
import { until } from "./wait.ts";

/** The simulator and a bridge connected to it, desired state off. */
async function withBridge(
  settings: ConstructorParameters<typeof Simulator>[0],
  body: (sim: Simulator) => Promise<void>,
): Promise<void> {
  const sim = new Simulator(settings);
  await sim.start();
  const { socket: path, cleanup } = await startBridge(`127.0.0.1:${sim.port}`, [
    "--readback-interval",
    "0",
  ]).catch(async (error) => {
    await sim.stop();
    throw error;
  });
  try {
    const api = await ApiClient.connect(path);
    try {
      await until(
        async () => (await api.request("status") as { connected: boolean }).connected,
        5000,
        "link",
      );
    } finally {
      await api.close();
    }
    await body(sim);
  } finally {
    await cleanup();
    await sim.stop();
  }
}

/** Presses `action` on the device and returns how long until it is off again. */
async function pressAndTimeOff(sim: Simulator, action: ButtonAction): Promise<number> {
  sim.pressButton(action);
  assert.equal(sim.state.work_on, true, `${action} switched the simulated device on`);
  const pressed = performance.now();
  await until(() => !sim.state.work_on, 1000, `the bridge enforcing OFF after ${action}`);
  return performance.now() - pressed;
}

Deno.test("hazard 4 e2e: always-on pressed with a stored set_temp above max_target is switched off within 1 s", async () => {
  await withBridge({ settings: { set_temp: 90, work_on: false } }, async (sim) => {
    const ms = await pressAndTimeOff(sim, "always_on");
    assert.ok(ms <= 1000, `off after ${ms} ms`);
  });
});

Deno.test("hazard 4 e2e: drying and auto pressed are switched off within 1 s (outside the failsafe)", async () => {
  await withBridge({ settings: { work_on: false } }, async (sim) => {
    for (const action of ["drying", "auto"] as const) {
      const ms = await pressAndTimeOff(sim, action);
      assert.ok(ms <= 1000, `${action}: off after ${ms} ms`);
    }
  });
});

Deno.test("clock jumps: the decision core reads no clock; time comes only from the shell's monotonic now", async () => {
  const core = await Deno.readTextFile(new URL("../lib/core.ts", import.meta.url));
  const code = core.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, "");
  for (
    const clock of ["Date.now(", "new Date(", "performance.now(", "setTimeout(", "setInterval("]
  ) {
    assert.ok(!code.includes(clock), `lib/core.ts must not call ${clock}`);
  }
  const shell = await Deno.readTextFile(new URL("../lib/bridge.ts", import.meta.url));
  assert.ok(
    !/Date\.now\(/.test(shell),
    "the shell's deadlines use performance.now(), not Date.now()",
  );
});
