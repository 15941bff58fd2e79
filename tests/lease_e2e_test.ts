/**
 * The drying lease end to end: `panda-breath run --heat-mode drying-lease` as
 * a real subprocess against the simulator (speed 600: a 1 h lease runs 6 s).
 * The key property: a bridge killed with SIGKILL leaves a device that stops
 * heating by itself at the lease's end.
 */
import assert from "node:assert/strict";
import { ApiClient, ApiError } from "../lib/api_client.ts";
import { Simulator } from "../lib/simulator.ts";
import { MainProcess, tempSocketPath, waitForSocket } from "./process.ts";
import { until } from "./wait.ts";

const SPEED = 600;

async function withLeaseBridge(
  settings: ConstructorParameters<typeof Simulator>[0],
  body: (sim: Simulator, api: ApiClient, bridge: MainProcess) => Promise<void>,
): Promise<void> {
  const sim = new Simulator({ speed: SPEED, ...settings });
  await sim.start();
  const { path, cleanup } = await tempSocketPath();
  const bridge = new MainProcess([
    "run",
    "--host",
    `127.0.0.1:${sim.port}`,
    "--socket",
    path,
    "--readback-interval",
    "0",
    "--failsafe-timeout",
    "600",
    "--heat-mode",
    "drying-lease",
    "--lease-hours",
    "1",
  ]);
  let api: ApiClient | null = null;
  try {
    await waitForSocket(path, 15_000);
    api = await ApiClient.connect(path);
    const a = api;
    await until(
      async () => {
        const s = await a.request("status") as {
          connected: boolean;
          device: { firmware: unknown };
        };
        return s.connected && s.device.firmware !== null;
      },
      5000,
      "link and connect frame",
    );
    await body(sim, api, bridge);
  } finally {
    await api?.close().catch(() => {});
    await bridge.stop("SIGKILL");
    await sim.stop();
    await cleanup();
  }
}

Deno.test("lease e2e: heats through a drying lease; SIGKILL of the bridge → the device stops by itself at the lease end", async () => {
  await withLeaseBridge({}, async (sim, api, bridge) => {
    assert.deepEqual(await api.request("set_target", { target: 45 }), { target: 45 });
    await until(() => sim.state.drying && sim.state.heating, 3000, "lease running and heating");
    assert.equal(sim.state.work_on, true);
    const status = await api.request("status") as { heat_mode: string; lease: { hours: number } };
    assert.equal(status.heat_mode, "drying-lease");
    await api.close();
    bridge.child.kill("SIGKILL");
    await bridge.exited();
    const killedAt = performance.now();
    assert.equal(sim.state.drying, true, "still heating right after the kill");
    await until(() => !sim.state.drying && !sim.state.heating, 20_000, "device stopped by itself");
    const seconds = (performance.now() - killedAt) / 1000;
    console.log(
      `device stopped by itself ${
        seconds.toFixed(1)
      } s after SIGKILL (1 h lease at speed ${SPEED} = 6 s)`,
    );
    assert.ok(seconds <= 8, `stopped within one lease (${seconds} s)`);
  });
});

Deno.test("lease e2e: refused on V1.0.0 with lease_unavailable; the device stays off", async () => {
  await withLeaseBridge({ fwVersion: "V1.0.0" }, async (sim, api) => {
    await assert.rejects(
      () => api.request("set_target", { target: 45 }),
      (error: unknown) =>
        error instanceof ApiError && error.code === "lease_unavailable" &&
        /V1\.0\.0 is not one of V1\.0\.1/.test(error.message),
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(sim.state.work_on, false);
    assert.equal(sim.state.drying, false);
  });
});

Deno.test("lease e2e: off leaves drying (no run, work_on false)", async () => {
  await withLeaseBridge({}, async (sim, api) => {
    await api.request("set_target", { target: 45 });
    await until(() => sim.state.drying, 3000, "lease running");
    assert.deepEqual(await api.request("off"), { target: 0 });
    await until(() => !sim.state.drying && !sim.state.isrunning && !sim.state.work_on, 3000, "off");
  });
});
