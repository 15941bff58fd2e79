/**
 * The drying lease end to end against the simulator, whose drying run
 * follows the protocol facts (runs `filament_timer` hours, then stops by
 * itself and pushes the settings block). The simulator's `speed` makes a
 * 1 h lease last 3.6 s. The key property: a bridge killed while heating
 * leaves a device that stops by itself when the lease ends.
 */
import assert from "node:assert/strict";
import { ApiClient, ApiError } from "../lib/api_client.ts";
import { Bridge } from "../lib/bridge.ts";
import { Logger } from "../lib/log.ts";
import { Simulator, type SimulatorOptions } from "../lib/simulator.ts";
import { MainProcess, tempSocketPath, waitForSocket } from "./process.ts";
import { delay, until } from "./wait.ts";

/** 1 h of drying in 3.6 s. */
const SPEED = 1000;

async function withSim(options: SimulatorOptions, body: (sim: Simulator) => Promise<void>) {
  const sim = new Simulator({ speed: SPEED, ...options });
  await sim.start();
  try {
    await body(sim);
  } finally {
    await sim.stop();
  }
}

/** `panda-breath run --heat-mode drying-lease` as a subprocess, with a ready controller. */
async function withLeaseBridge(
  sim: Simulator,
  body: (api: ApiClient, bridge: MainProcess) => Promise<void>,
): Promise<void> {
  const { path, cleanup } = await tempSocketPath();
  const bridge = new MainProcess([
    "run",
    "--host",
    `127.0.0.1:${sim.port}`,
    "--socket",
    path,
    "--heat-mode",
    "drying-lease",
    "--readback-interval",
    "0",
  ]);
  try {
    await waitForSocket(path, 15_000);
    const api = await ApiClient.connect(path);
    const beat = setInterval(() => api.heartbeat(true).catch(() => {}), 500);
    try {
      await api.hello({ client: "test", controller: true, ready: true });
      await until(
        async () => (await api.request("status") as { connected: boolean }).connected,
        5000,
        "link",
      );
      await body(api, bridge);
    } finally {
      clearInterval(beat);
      await api.close();
    }
  } finally {
    await bridge.stop("SIGKILL");
    await cleanup();
  }
}

Deno.test("lease e2e: heats through a drying run; SIGKILL of the bridge → the device stops by itself at the lease end", async () => {
  await withSim({}, async (sim) => {
    await withLeaseBridge(sim, async (api, bridge) => {
      await api.request("set_target", { target: 45 });
      await until(() => sim.state.drying && sim.state.heating, 5000, "the lease heating");
      const started = performance.now();
      bridge.child.kill("SIGKILL");
      await bridge.exited();
      assert.ok(sim.state.heating, "still heating right after the kill");
      await until(() => !sim.state.heating, 10_000, "the device stopping by itself");
      const ms = performance.now() - started;
      console.log(`device stopped by itself ${ms.toFixed(0)} ms after the kill (lease 3600 ms)`);
      assert.ok(ms <= 3600 + 1500, `stopped within one lease (${ms} ms)`);
      assert.equal(sim.state.drying, false);
    });
  });
});

Deno.test("lease e2e: off leaves drying; V1.0.0 is refused with lease_unavailable", async () => {
  await withSim({}, async (sim) => {
    await withLeaseBridge(sim, async (api) => {
      await api.request("set_target", { target: 45 });
      await until(() => sim.state.drying, 5000, "the lease running");
      await api.request("off");
      await until(() => !sim.state.drying && !sim.state.work_on, 3000, "off, out of drying");
    });
  });
  await withSim({ fwVersion: "V1.0.0" }, async (sim) => {
    await withLeaseBridge(sim, async (api) => {
      await until(
        async () =>
          (await api.request("status") as { device: { firmware: string } }).device
            .firmware === "V1.0.0",
        5000,
        "the connect frame",
      );
      await assert.rejects(
        api.request("set_target", { target: 45 }),
        (error) => error instanceof ApiError && error.code === "lease_unavailable",
      );
      await delay(1500);
      assert.equal(sim.state.heating, false);
    });
  });
});

Deno.test("lease e2e: renewals keep a long heat going past several leases, in both unknown-rewrite cases", async () => {
  for (const dryingRewriteRestartsTimer of [false, true]) {
    await withSim({ dryingRewriteRestartsTimer }, async (sim) => {
      const bridge = new Bridge({
        url: `ws://127.0.0.1:${sim.port}/ws`,
        logger: new Logger("error"),
        heatMode: "drying_lease",
        readbackIntervalMs: 0,
        leaseRenewMs: 1500, // a 3.6 s lease at this speed: renewed well before its end
      });
      bridge.start();
      try {
        await until(() => bridge.status().connected, 5000, "link");
        bridge.heartbeat({ client: "t" }, true);
        const beat = setInterval(() => bridge.heartbeat({ client: "t" }, true), 300);
        try {
          bridge.setTarget(45, { client: "t" });
          await until(() => sim.state.drying && sim.state.heating, 5000, "heating");
          // Three lease lengths: without renewals the run would have ended twice.
          const end = performance.now() + 3 * 3600;
          let cold = 0;
          while (performance.now() < end) {
            if (!sim.state.heating) cold += 100;
            await delay(100);
          }
          assert.equal(bridge.target, 45, "still the desired target");
          assert.ok(bridge.status().lease!.renewals >= 3, "renewed (every 1.5 s + the 1 s gap)");
          assert.ok(cold <= 1500 * 3, `heat gaps only at renewals (${cold} ms cold)`);
          assert.ok(sim.state.heating || sim.state.drying, "heating at the end");
        } finally {
          clearInterval(beat);
        }
      } finally {
        await bridge.stop("test");
      }
      assert.equal(sim.state.heating, false, "stop turned it off");
    });
  }
});
