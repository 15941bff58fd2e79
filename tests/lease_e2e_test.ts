/**
 * The drying lease end to end: `panda-breath run --heat-mode drying-lease` as
 * a real subprocess against the simulator at speed 600 (its drying timer
 * and thermal model run 600 times faster, so a 1 h lease lasts 6 s; the
 * bridge's `--lease-speed 600` scales its lease clock the same way; the
 * stop-to-start gap, the control poll and the verification delay stay real).
 *
 * Both unknown device settings are exercised both ways
 * (`dryingRewriteRestartsTimer`, `dryingRegulates`). The key property: a
 * bridge killed with SIGKILL leaves a device that stops heating by itself at
 * its lease's end.
 */
import assert from "node:assert/strict";
import { ApiClient, ApiError } from "../lib/api_client.ts";
import type { BridgeStatus } from "../lib/status.ts";
import { DRYING_LEASE_OFF_FRAME } from "../lib/protocol.ts";
import { Simulator, type SimulatorOptions } from "../lib/simulator/mod.ts";
import { type MainProcess, runCli, startBridge } from "./process.ts";
import { delay, until } from "./wait.ts";

const SPEED = 600;
/** One 1 h lease at SPEED, in real ms. */
const LEASE_MS = 3600 * 1000 / SPEED;

interface Rig {
  sim: Simulator;
  api: ApiClient;
  bridge: MainProcess;
  socket: string;
  simLog: string[];
  status(): Promise<BridgeStatus>;
}

async function withLeaseBridge(
  settings: SimulatorOptions,
  body: (rig: Rig) => Promise<void>,
): Promise<void> {
  const simLog: string[] = [];
  const sim = new Simulator({
    speed: SPEED,
    log: (line) => simLog.push(`${new Date().toISOString()} ${line}`),
    ...settings,
  });
  await sim.start();
  const { bridge, socket: path, cleanup } = await startBridge(`127.0.0.1:${sim.port}`, [
    "--readback-interval",
    "0",
    "--failsafe-timeout",
    "600",
    "--heat-mode",
    "drying-lease",
    "--lease-hours",
    "1",
    "--lease-speed",
    String(SPEED),
  ]).catch(async (error) => {
    await sim.stop();
    throw error;
  });
  let api: ApiClient | null = null;
  try {
    api = await ApiClient.connect(path);
    const client = api;
    const status = () => client.request("status") as Promise<BridgeStatus>;
    await until(
      async () => {
        const s = await status();
        return s.connected && s.device.firmware !== null;
      },
      10_000,
      "link and connect frame",
    );
    await body({ sim, api, bridge, socket: path, simLog, status });
  } catch (error) {
    // What the bridge and the device did, for a failure under load.
    await bridge.stop("SIGKILL");
    console.log(`bridge log:\n${bridge.stderr}\ndevice log:\n${simLog.join("\n")}`);
    throw error;
  } finally {
    await api?.close().catch(() => {});
    await bridge.stop("SIGKILL");
    await sim.stop();
    await cleanup();
  }
}

/** Waits for the bridge to report the lease verified by read-back. */
async function leaseRunning(rig: Rig, timeoutMs = 8000): Promise<void> {
  await until(
    async () => (await rig.status()).lease?.state === "running",
    timeoutMs,
    "lease verified (running)",
    50,
  );
}

for (const rewrite of [false, true]) {
  for (const regulates of [false, true]) {
    const name = `dryingRewriteRestartsTimer ${rewrite}, dryingRegulates ${regulates}`;
    Deno.test(`lease e2e (${name}): heats via the lease, renewals keep it heating, SIGKILL -> the device stops by itself at the lease end`, async () => {
      // Target 60 and a chamber that cannot pass 63 °C: a non-regulating run stays within
      // the overshoot guard's margin (tested on its own below).
      const sim: SimulatorOptions = {
        dryingRewriteRestartsTimer: rewrite,
        dryingRegulates: regulates,
        maxChamberC: 63,
      };
      await withLeaseBridge(sim, async (rig) => {
        assert.deepEqual(await rig.api.request("set_target", { target: 60 }), { target: 60 });
        await until(() => rig.sim.state.drying, 3000, "a drying run on the device");
        await leaseRunning(rig);
        assert.equal(rig.sim.state.work_on, true);

        // Two and a half leases' worth of renewals, sampled on the device side.
        const started = performance.now();
        let gapStarted: number | null = null;
        let longestGap = 0;
        let gaps = 0;
        let restartedFull = 0;
        let lowestRemaining = Infinity;
        while (performance.now() - started < 1.6 * LEASE_MS) {
          const state = rig.sim.state;
          if (!state.drying) {
            if (gapStarted === null) {
              gapStarted = performance.now();
              gaps++;
            }
          } else {
            if (gapStarted !== null) {
              longestGap = Math.max(longestGap, performance.now() - gapStarted);
              if (state.remaining_seconds > 3000) restartedFull++;
              gapStarted = null;
            }
            lowestRemaining = Math.min(lowestRemaining, state.remaining_seconds);
          }
          await delay(25);
        }
        const status = await rig.status();
        console.log(
          `${name}: ${status.lease?.renewals} renewals, ${gaps} gaps (longest ${
            Math.round(longestGap)
          } ms), lowest remaining ${lowestRemaining} s of 3600, chamber ${
            rig.sim.state.temperature.toFixed(1)
          } °C`,
        );
        assert.ok((status.lease?.renewals ?? 0) >= 2, `renewals: ${status.lease?.renewals}`);
        assert.equal(restartedFull, gaps - (gapStarted === null ? 0 : 1), "each gap restarted");
        assert.ok(longestGap < 2500, `heat paused at most for the renewal gap: ${longestGap} ms`);
        assert.ok(lowestRemaining > 0, "the device's run never ran out while the bridge lived");
        assert.ok(!rig.simLog.some((l) => l.includes("drying finished")), "never ended itself");
        assert.equal(status.target, 60, "still heating");
        assert.equal(status.lease?.unavailable, null);
        assert.ok(rig.sim.state.temperature > 55, `chamber heated: ${rig.sim.state.temperature}`);

        // Kill the bridge early in a lease: at least a second before its renewal's stop
        // (due at 1800 s left), so the device's own timer is what ends the run.
        await until(
          () => {
            const state = rig.sim.state;
            return state.drying && state.isrunning && state.remaining_seconds > 2400;
          },
          LEASE_MS,
          "a freshly started lease",
          5,
        );
        rig.bridge.child.kill("SIGKILL");
        const killedAt = performance.now();
        const expectedMs = rig.sim.state.remaining_seconds * 1000 / SPEED;
        await rig.bridge.exited();
        assert.equal(rig.sim.state.drying, true, "still running right after the kill");
        await until(() => !rig.sim.state.drying, expectedMs + 3000, "device stopped by itself");
        const tookMs = performance.now() - killedAt;
        console.log(
          `${name}: device stopped by itself ${Math.round(tookMs)} ms after SIGKILL ` +
            `(its lease had ${Math.round(expectedMs)} ms left)`,
        );
        assert.ok(tookMs >= expectedMs - 700, `not before the lease end (${tookMs} ms)`);
        assert.ok(tookMs <= expectedMs + 1500, `at the lease end (${tookMs} ms)`);
        assert.ok(rig.simLog.some((l) => l.includes("drying finished")), "the run's own end");
        await delay(1000);
        assert.equal(rig.sim.state.heating, false, "and stays off");
        assert.equal(rig.sim.state.drying, false);
      });
    });
  }
}

Deno.test("lease e2e: drying that does not regulate overshoots -> the guard gives the lease up: off, lease_unavailable", async () => {
  await withLeaseBridge({ dryingRegulates: false, maxChamberC: 70 }, async (rig) => {
    await rig.api.request("set_target", { target: 45 });
    await until(() => rig.sim.state.drying, 3000, "lease running");
    await until(
      () => !rig.sim.state.drying && !rig.sim.state.work_on,
      10_000,
      "the guard turned the device off",
      20,
    );
    const status = await rig.status();
    assert.equal(status.target, 0);
    assert.match(status.lease?.unavailable ?? "", /drying does not regulate on this device/);
    assert.ok(rig.sim.state.temperature < 60, `stopped early: ${rig.sim.state.temperature}`);
    const set = await runCli(["set", "45", "--socket", rig.socket]);
    assert.equal(set.code, 1);
    assert.match(set.stderr, /lease_unavailable: drying lease unavailable: the chamber stayed/);
    const human = await runCli(["status", "--socket", rig.socket]);
    assert.match(human.stdout, /heat mode\s+drying-lease \(1 h\): UNAVAILABLE, heat refused/);
    assert.equal(rig.sim.state.drying, false, "the refused set did nothing");
  });
});

for (const fwVersion of ["V1.0.0", "V1.0.4"]) {
  Deno.test(`lease e2e: refused on ${fwVersion} with lease_unavailable and a clear CLI error; the device stays off`, async () => {
    await withLeaseBridge({ fwVersion }, async (rig) => {
      await assert.rejects(
        () => rig.api.request("set_target", { target: 45 }),
        (error: unknown) =>
          error instanceof ApiError && error.code === "lease_unavailable" &&
          error.message.includes(`device firmware ${fwVersion} is not one of V1.0.1`),
      );
      const set = await runCli(["set", "45", "--socket", rig.socket]);
      assert.equal(set.code, 1);
      const line = set.stderr.split("\n").find((l) => l.startsWith("panda-breath:")) ?? "";
      assert.ok(
        line.startsWith(
          `panda-breath: lease_unavailable: drying lease unavailable: device firmware ${fwVersion} ` +
            "is not one of V1.0.1, V1.0.2, V1.0.3; heat is refused",
        ),
        line,
      );
      const human = await runCli(["status", "--socket", rig.socket]);
      assert.match(human.stdout, /heat mode\s+drying-lease \(1 h\): UNAVAILABLE/);
      await delay(300);
      assert.equal(rig.sim.state.work_on, false);
      assert.equal(rig.sim.state.drying, false);
      assert.ok(
        !rig.sim.received.some((f) => f.text.includes('"isrunning":1')),
        "no lease frame ever sent",
      );
      assert.ok(
        !rig.sim.received.some((f) => f.text.includes('"work_on":true')),
        "nothing switched on (no silent always-on)",
      );
    });
  });
}

Deno.test("lease e2e: OFF always leaves drying (off, controller gone, SIGTERM)", async () => {
  await withLeaseBridge({ dryingRegulates: true }, async (rig) => {
    const leftDrying = (what: string) =>
      until(
        () => !rig.sim.state.drying && !rig.sim.state.isrunning && !rig.sim.state.work_on,
        3000,
        `${what}: no run, work_on false`,
      );
    const lastFrame = () => rig.sim.received.at(-1)?.text;

    await rig.api.request("set_target", { target: 45 });
    await leaseRunning(rig);
    assert.deepEqual(await rig.api.request("off"), { target: 0 });
    await leftDrying("off");
    assert.equal(lastFrame(), DRYING_LEASE_OFF_FRAME);

    // A ready controller (Klipper's role) closes its connection while heating.
    const klipper = await ApiClient.connect(rig.socket);
    await klipper.request("hello", { client: "klipper", controller: true, ready: true });
    await klipper.request("heartbeat", { ready: true });
    await klipper.request("set_target", { target: 45 });
    await until(() => rig.sim.state.drying, 4000, "lease again (after the gap)");
    await klipper.close();
    await leftDrying("controller gone");
    assert.equal(lastFrame(), DRYING_LEASE_OFF_FRAME);
    assert.match((await rig.status()).failsafe.reason ?? "", /disconnected while heating/);

    await rig.api.request("set_target", { target: 45 });
    await until(() => rig.sim.state.drying, 4000, "lease a third time");
    await rig.api.close();
    const status = await rig.bridge.stop("SIGTERM");
    assert.equal(status.code, 0);
    await leftDrying("SIGTERM");
    assert.equal(lastFrame(), DRYING_LEASE_OFF_FRAME);
  });
});

Deno.test("lease e2e: the lease flags need --heat-mode drying-lease; --lease-hours is whole hours 1-12", async () => {
  const alone = await runCli(["run", "--host", "127.0.0.1:9", "--lease-hours", "2"]);
  assert.equal(alone.code, 2);
  assert.match(alone.stderr, /--lease-hours applies only with --heat-mode drying-lease/);
  const half = await runCli([
    "run",
    "--host",
    "127.0.0.1:9",
    "--heat-mode",
    "drying-lease",
    "--lease-hours",
    "0.5",
  ]);
  assert.equal(half.code, 2);
  assert.match(half.stderr, /--lease-hours must be a whole number from 1 to 12, got '0\.5'/);
  const mode = await runCli(["run", "--host", "127.0.0.1:9", "--heat-mode", "auto"]);
  assert.equal(mode.code, 2);
  assert.match(mode.stderr, /--heat-mode must be one of always-on, drying-lease, got 'auto'/);
});
