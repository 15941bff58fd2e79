/**
 * Rigs shared by the device-side scenarios: a device (the simulator or the
 * raw-TCP device), the bridge as a subprocess, and a heartbeating controller
 * on its socket; plus the end-of-scenario invariant check.
 */
import { Simulator, type SimulatorOptions } from "../../lib/simulator/mod.ts";
import type { RawDevice } from "./raw_device.ts";
import {
  BridgeProcess,
  type BridgeStartOptions,
  capture,
  type HeatState,
  isDesired,
  type Scenario,
  socketScan,
  timeToDesired,
} from "./harness.ts";
import type { SocketClient } from "../socket_client.ts";

/** What the end-of-scenario check needs to know about the device. */
export interface DeviceView {
  /** The device's heating state, or null while it is down (rebooting). */
  state(): HeatState | null;
}

/** A {@link DeviceView} of a simulator. */
export function simView(sim: Simulator): DeviceView {
  return {
    state: () => {
      const state = sim.state;
      return state.rebooting ? null : state;
    },
  };
}

/** A device, a bridge, a controller. */
export interface Rig<D> {
  /** The device stand-in. */
  device: D;
  /** The bridge subprocess. */
  bridge: BridgeProcess;
  /** A controller connection that heartbeats every 500 ms. */
  api: SocketClient;
}

/**
 * Starts a bridge for `host` and a controller that heartbeats every 500 ms,
 * runs `body`, and always tears everything down (output is captured).
 */
export async function withBridge<D>(
  device: D,
  options: BridgeStartOptions,
  body: (rig: Rig<D>) => Promise<void>,
): Promise<void> {
  const bridge = await BridgeProcess.start(options);
  let api: SocketClient | undefined;
  try {
    api = await bridge.connect();
    api.startHeartbeat(500);
    await body({ device, bridge, api });
  } finally {
    await api?.close();
    await bridge.dispose();
  }
}

/** {@link withBridge} on a raw-TCP device at its address; the device is closed afterwards. */
export async function withRawBridge(
  device: RawDevice,
  body: (rig: Rig<RawDevice>) => Promise<void>,
): Promise<void> {
  try {
    await withBridge(device, { host: device.address }, body);
  } finally {
    await device.close();
  }
}

/** A started simulator with fast telemetry; always stopped. */
export async function withSimulator(
  options: SimulatorOptions,
  body: (sim: Simulator) => Promise<void>,
): Promise<void> {
  const sim = new Simulator({ telemetryIntervalMs: 100, rebootDownMs: 1000, ...options });
  await sim.start();
  try {
    await body(sim);
  } finally {
    await sim.stop();
  }
}

/**
 * A simulator (fast telemetry), a bridge on it and a heartbeating controller;
 * the device is made to hold `target` before `body` runs. Always torn down.
 */
export async function withSimulatorRig(
  simOptions: SimulatorOptions,
  bridgeOptions: Omit<BridgeStartOptions, "host">,
  target: number,
  body: (rig: Rig<Simulator> & { view: DeviceView }) => Promise<void>,
): Promise<void> {
  await withSimulator(simOptions, async (sim) => {
    await withBridge(sim, { host: `127.0.0.1:${sim.port}`, ...bridgeOptions }, async (rig) => {
      const view = simView(sim);
      await rig.api.setTarget(target);
      await settle(rig, view, target, "initial target");
      await body({ ...rig, view });
    });
  });
}

/**
 * After a fault ends: waits until the device holds `target` (the bridge must
 * re-assert it), records the wrong-state time, checks the bridge is alive,
 * and counts the fault as survived.
 */
export async function recover(
  s: Scenario,
  ...settleArgs: Parameters<typeof settle>
): Promise<number> {
  const wrongMs = await settle(...settleArgs);
  s.wrongFor(wrongMs);
  s.survive();
  return wrongMs;
}

/** Waits until the device holds `target` (not a fault recovery: nothing is counted). */
export async function settle(
  rig: { bridge: BridgeProcess },
  view: DeviceView,
  target: number,
  what: string,
  timeoutMs = 10_000,
): Promise<number> {
  const wrongMs = await timeToDesired(
    () => {
      const state = view.state();
      return state !== null && isDesired(state, target);
    },
    timeoutMs,
    `${what}: target ${target}`,
  );
  if (!rig.bridge.alive) throw new Error(`${what}: the bridge process died`);
  return wrongMs;
}

/**
 * The invariants at the end of a scenario: the bridge runs, is connected,
 * wants `target`, and the device holds it.
 */
export async function finalCheck(
  s: Scenario,
  bridge: BridgeProcess,
  view: DeviceView,
  target: number,
): Promise<void> {
  s.expect(bridge.alive, "bridge process is running");
  if (!bridge.alive) return;
  const status = await bridge.status();
  capture(`${s.name}: final status`, JSON.stringify(status));
  s.expect(status.connected === true, `bridge connected (was ${status.connected})`);
  s.expect(status.target === target, `bridge target ${target} (was ${status.target})`);
  const state = view.state();
  s.expect(
    state !== null && isDesired(state, target),
    `device holds target ${target} (device: ${JSON.stringify(state)})`,
  );
  s.figures.link_connects = status.link.connects;
  s.figures.link_drops = status.link.drops;
  s.figures.dropped_frames = status.link.dropped_frames;
  s.figures.socket_lines_scanned = socketScan.lines;
}
