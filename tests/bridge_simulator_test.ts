/**
 * The bridge against the simulated device (persistence, reboots, buttons,
 * faults), as opposed to bridge_test.ts's scripted fake device.
 */
import assert from "node:assert/strict";
import { Bridge } from "../lib/bridge.ts";
import { Logger } from "../lib/log.ts";
import { OFF_FRAME } from "../lib/protocol.ts";
import { Simulator, SIMULATOR_SECRETS } from "../lib/simulator/mod.ts";
import { until } from "./wait.ts";

const client = { client: "test" };

async function withRig(
  settings: { work_on: boolean; set_temp?: number },
  body: (sim: Simulator, bridge: Bridge, logs: string[]) => Promise<void>,
): Promise<void> {
  const sim = new Simulator({
    telemetryIntervalMs: 100,
    speed: 50,
    settings: { work_mode: 2, set_temp: 40, ...settings },
  });
  await sim.start();
  const logs: string[] = [];
  const bridge = new Bridge({
    url: sim.url,
    logger: new Logger("debug", (line) => logs.push(line)),
    linkTimings: { watchdogMs: 800, tickMs: 50 },
    backoff: { initialMs: 50, maxMs: 300, factor: 2 },
    failsafeTimeoutMs: 60_000,
  });
  try {
    bridge.start();
    await body(sim, bridge, logs);
  } finally {
    await bridge.stop("test over", 500);
    await sim.stop();
  }
  for (const secret of SIMULATOR_SECRETS) {
    assert.ok(!logs.join("\n").includes(secret), "a secret reached the log");
  }
}

const isText = (text: string) => (_frame: unknown, entry: { text: string }) => entry.text === text;

Deno.test("a device that comes up heating on its own is switched off", async () => {
  await withRig({ work_on: true, set_temp: 55 }, async (sim, bridge) => {
    await until(() => !sim.state.work_on);
    assert.equal(bridge.status().device.work_on, true, "status shows what the device reported");
  });
});

Deno.test("off requested while the device reboots is asserted when it comes back heating", async () => {
  await withRig({ work_on: false }, async (sim, bridge) => {
    bridge.setTarget(45, client);
    await until(() => sim.state.heating);
    const rebooted = sim.reboot(1000);
    await until(() => !bridge.status().connected);
    bridge.setTarget(0, client);
    await rebooted;
    assert.equal(sim.state.work_on, true, "the device resumed heating from flash");
    await sim.waitForFrame(isText(OFF_FRAME), 5000);
    assert.equal(sim.state.work_on, false);
  });
});

/** Settings frames (anything but the `{}` keepalive) the simulator received from index `from`. */
function settingsWrites(sim: Simulator, from: number): string[] {
  return sim.received.slice(from).map((r) => r.text).filter((text) => text !== "{}");
}

Deno.test("hazard 10: a reboot while heating resumes from flash and nothing is rewritten", async () => {
  await withRig({ work_on: false }, async (sim, bridge) => {
    bridge.setTarget(42, client);
    await until(() => sim.state.work_on && sim.state.set_temp === 42);
    const from = sim.received.length;
    const skipped = bridge.status().link.skipped_writes;
    await sim.reboot(300);
    await until(() => bridge.status().link.connects === 2 && bridge.status().connected, 5000);
    await until(() => bridge.status().link.skipped_writes === skipped + 1, 3000, "the compare");
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(settingsWrites(sim, from), [], "the connect frame matched: no write");
    assert.ok(sim.state.work_on && sim.state.set_temp === 42, "still heating at 42 from flash");
    assert.equal(bridge.status().link.drops, 1);
  });
});

Deno.test("after the power button the adopted off holds across a reconnect, unwritten", async () => {
  await withRig({ work_on: false }, async (sim, bridge, logs) => {
    bridge.setTarget(44, client);
    await until(() => sim.state.work_on);
    sim.pressButton("power");
    await until(() => bridge.target === 0);
    assert.ok(logs.some((l) => l.includes("switched off at the device (button)")));
    const from = sim.received.length;
    sim.abortClients();
    await until(() => bridge.status().link.connects === 2 && bridge.status().connected, 5000);
    await until(() => logs.some((l) => l.includes("matches the desired state on connect")), 3000);
    assert.deepEqual(settingsWrites(sim, from), []);
    assert.equal(sim.state.work_on, false);
    assert.equal(bridge.target, 0);
  });
});

Deno.test("a fault mid-heat is reported and the heat stays off after reconnects", async () => {
  await withRig({ work_on: false }, async (sim, bridge) => {
    bridge.setTarget(45, client);
    await until(() => sim.state.heating);
    sim.injectFault("heater_no_heat");
    await until(() => bridge.status().faults.includes("heater_no_heat"));
    assert.equal(bridge.target, 0);
    assert.match(bridge.status().note ?? "", /fault heater_no_heat/);
    const from = sim.received.length;
    const skipped = bridge.status().link.skipped_writes;
    sim.abortClients();
    await until(() => bridge.status().link.connects === 2 && bridge.status().connected, 5000);
    await until(() => bridge.status().link.skipped_writes === skipped + 1, 3000, "the compare");
    assert.deepEqual(
      bridge.status().faults,
      ["heater_no_heat"],
      "fault still in the connect frame",
    );
    assert.equal(bridge.setTarget(45, client).ok, false, "heat refused while latched");
    assert.ok(!settingsWrites(sim, from).some((t) => t.includes('"work_on":true')), "never ON");
    assert.equal(sim.state.work_on, false);
  });
});

Deno.test("temperatures from the thermal model reach the status while heating", async () => {
  await withRig({ work_on: false }, async (_sim, bridge) => {
    await until(() => bridge.status().temperature !== null);
    const start = bridge.status().temperature!;
    bridge.setTarget(35, client);
    await until(() => (bridge.status().temperature ?? 0) >= start + 3, 10_000);
    assert.equal(Number.isInteger(bridge.status().temperature), true);
  });
});
