/**
 * `panda-breath doctor` as a real subprocess against the simulator (stock),
 * a DragonBreath fake, unreachable hosts, and beside a running bridge with a
 * ready controller (proving it changed nothing); plus the pure verdicts.
 */
import assert from "node:assert/strict";
import { ApiClient } from "../lib/api_client.ts";
import type { BridgeStatus } from "../lib/bridge.ts";
import { initialState } from "../lib/core.ts";
import { buildStatus } from "../lib/status.ts";
import {
  type DeviceObservation,
  diagnose,
  formatReport,
  type Observations,
} from "../lib/doctor.ts";
import { Simulator, SIMULATOR_SECRETS } from "../lib/simulator/mod.ts";
import { startDragonBreathDevice } from "./fake_device.ts";
import { runCli, startBridge, tempSocketPath } from "./process.ts";
import { until } from "./wait.ts";

/** A simulator whose log lines (peer of every connect and received frame) are kept. */
async function startSimulator(
  options: ConstructorParameters<typeof Simulator>[0] = {},
): Promise<{ sim: Simulator; log: string[] }> {
  const log: string[] = [];
  const sim = new Simulator({ telemetryIntervalMs: 200, ...options, log: (l) => log.push(l) });
  await sim.start();
  return { sim, log };
}

function assertNoSecrets(text: string): void {
  for (const secret of [...SIMULATOR_SECRETS, "01P00SIM0000001", "sim-"]) {
    assert.ok(!text.includes(secret), `output carries '${secret}'`);
  }
}

/** Peers that connected after log line `from`, and the frames any of them sent. */
function newPeers(log: string[], from: number): { peers: string[]; sent: string[] } {
  const peers = log.slice(from).filter((l) => l.startsWith("connect ")).map((l) => l.split(" ")[1]);
  const sent = log.slice(from).filter((l) => peers.some((p) => l.startsWith(`recv ${p} `)));
  return { peers, sent };
}

Deno.test("doctor vs the simulator (stock): all good, exit 0, sent nothing, no secret", async () => {
  const { sim, log } = await startSimulator({
    settings: { work_on: true, work_mode: 2, set_temp: 45 },
  });
  const { path, cleanup } = await tempSocketPath();
  try {
    const host = `127.0.0.1:${sim.port}`;
    const before = sim.state;
    const result = await runCli(["doctor", "--host", host, "--socket", path]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /^ok {4}address +127\.0\.0\.1 port \d+$/m);
    assert.match(result.stdout, /websocket +connect frame received/);
    assert.match(result.stdout, /firmware +stock firmware V1\.0\.3/);
    assert.match(result.stdout, /mode +ON, mode always-on \(work_mode 2\), device target 45 °C/);
    assert.match(result.stdout, /temperature +22 °C/);
    assert.match(result.stdout, /faults +none/);
    assert.match(result.stdout, /printer +bound to a Bambu printer \(serial hidden\)/);
    assert.match(result.stdout, /sockets +estimate: at least 1 of 7 in use/);
    assert.match(result.stdout, /bridge +no local bridge at /);
    assert.match(result.stdout, /No problem found\.$/m);
    assertNoSecrets(result.stdout + result.stderr);
    assert.equal(sim.received.length, 0, "the doctor sent a frame to the device");
    assert.equal(newPeers(log, 0).peers.length, 1, "one connection: the doctor's");
    assert.deepEqual(
      { ...sim.state, temperature: 0 },
      { ...before, temperature: 0 },
      "device state changed",
    );
    await until(() => sim.clientCount === 0, 3000, "the doctor's WebSocket closed");

    const json = await runCli(["doctor", "--host", host, "--socket", path, "--json"]);
    assert.equal(json.code, 0);
    assertNoSecrets(json.stdout);
    const parsed = JSON.parse(json.stdout);
    assert.equal(parsed.exit_status, 0);
    assert.equal(parsed.observations.device.firmware, "V1.0.3");
    assert.deepEqual(parsed.observations.device.binding, { kind: "bambu", state: 3 });
    assert.equal(sim.received.length, 0);
  } finally {
    await cleanup();
    await sim.stop();
  }
});

Deno.test("doctor: a Klipper binding shows host:port; a fault is a problem (exit 1)", async () => {
  const { sim } = await startSimulator({ settings: { printer_type: 2 } });
  const { path, cleanup } = await tempSocketPath();
  try {
    sim.injectFault("chamber_sensor_open");
    const result = await runCli(["doctor", "--host", `127.0.0.1:${sim.port}`, "--socket", path]);
    assert.equal(result.code, 1, result.stdout);
    assert.match(result.stdout, /printer +bound to a Klipper printer at 192\.0\.2\.20:7125/);
    assert.match(
      result.stdout,
      /^FAIL {2}faults +chamber_sensor_open \(chamber temperature sensor open circuit\): the device refuses heat/m,
    );
    assert.match(result.stdout, /1 problem found/);
    assert.equal(sim.received.length, 0);
  } finally {
    await cleanup();
    await sim.stop();
  }
});

Deno.test("doctor vs a DragonBreath device: names it, exit 1, never opens /ws", async () => {
  const server = startDragonBreathDevice();
  const requests = server.requests;
  const { path, cleanup } = await tempSocketPath();
  try {
    const host = `127.0.0.1:${server.port}`;
    const result = await runCli(["doctor", "--host", host, "--socket", path]);
    assert.equal(result.code, 1, result.stdout);
    assert.match(
      result.stdout,
      /^FAIL {2}firmware +the Panda Breath at .* runs DragonBreath firmware 2\.1\.0/m,
    );
    assert.deepEqual(requests, ["/api/v2/info"], "one probe, no WebSocket attempt");
  } finally {
    await cleanup();
    await server.shutdown();
  }
});

Deno.test("doctor vs an unreachable host: a closed port and a name that does not resolve", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close(); // Now nobody listens there.
  const { path, cleanup } = await tempSocketPath();
  try {
    const closed = await runCli(["doctor", "--host", `127.0.0.1:${port}`, "--socket", path]);
    assert.equal(closed.code, 1, closed.stdout);
    assert.match(closed.stdout, /^FAIL {2}reachable +no answer from the device: .*refused/im);
    assert.match(closed.stdout, /static DHCP lease/);
    assert.doesNotMatch(closed.stdout, /websocket/);

    const unknown = await runCli(["doctor", "--host", "no-such-panda.invalid", "--socket", path]);
    assert.equal(unknown.code, 1, unknown.stdout);
    assert.match(unknown.stdout, /^FAIL {2}address +cannot resolve 'no-such-panda\.invalid'/m);
    assert.match(unknown.stdout, /DHCP client list/);

    const usage = await runCli(["doctor", "--socket", path]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /doctor needs --host/);
    const timeout = await runCli(["doctor", "--host", "h", "--timeout", "0"]);
    assert.equal(timeout.code, 2);
    assert.match(timeout.stderr, /--timeout/);
  } finally {
    await cleanup();
  }
});

Deno.test("doctor beside a running bridge with Klipper in control: reports it, changes nothing", async () => {
  const { sim, log } = await startSimulator();
  const { bridge, socket, cleanup } = await startBridge(`127.0.0.1:${sim.port}`, [
    "--readback-interval",
    "0",
  ]);
  const controller = await ApiClient.connect(socket);
  const beat = setInterval(() => controller.heartbeat(true).catch(() => {}), 500);
  try {
    await controller.hello({ client: "klipper stand-in", controller: true, ready: true });
    await controller.heartbeat(true);
    await controller.request("set_target", { target: 45 });
    await until(() => sim.state.work_on && sim.state.set_temp === 45, 5000, "heater on at 45");
    const statusBefore = await controller.request("status") as BridgeStatus;
    const stateBefore = sim.state;
    const logFrom = log.length;

    // By name, while the bridge uses the IP: still recognised as the same device.
    const result = await runCli(["doctor", "--host", `localhost:${sim.port}`, "--socket", socket]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.doesNotMatch(result.stdout, /drives/);
    assert.match(
      result.stdout,
      /^ok {4}bridge +running \(.*\), connected to ws:\/\/127\.0\.0\.1:\d+\/ws, target 45 °C$/m,
    );
    assert.match(result.stdout, /^ok {4}klipper +connected as controller and ready$/m);
    assert.match(
      result.stdout,
      /sockets +estimate: at least 2 of 7 in use \(this doctor's and the local bridge's\)/,
    );
    assert.match(result.stdout, /mode +ON, mode always-on \(work_mode 2\), device target 45 °C/);
    assertNoSecrets(result.stdout + result.stderr + bridge.stderr);

    const { peers, sent } = newPeers(log, logFrom);
    assert.equal(peers.length, 1, `one new connection (the doctor's): ${peers}`);
    assert.deepEqual(sent, [], "the doctor sent frames to the device");
    const stateAfter = sim.state;
    for (const key of ["work_on", "work_mode", "set_temp", "isrunning", "faults"] as const) {
      assert.deepEqual(stateAfter[key], stateBefore[key], `device ${key} changed`);
    }
    const statusAfter = await controller.request("status") as BridgeStatus;
    assert.equal(statusAfter.target, 45, "the bridge's target changed");
    assert.equal(statusAfter.connected, true);
    assert.equal(statusAfter.link.connects, statusBefore.link.connects, "the bridge reconnected");
    assert.equal(statusAfter.failsafe.tripped, false);
    assert.equal(statusAfter.failsafe.controller, true);
  } finally {
    clearInterval(beat);
    await controller.close();
    await cleanup();
    await sim.stop();
  }
});

Deno.test("doctor beside a bridge without Klipper: a warning, not a problem", async () => {
  const { sim } = await startSimulator();
  const { socket, cleanup } = await startBridge(`127.0.0.1:${sim.port}`, [
    "--readback-interval",
    "0",
  ]);
  try {
    await until(
      async () => {
        const client = await ApiClient.connect(socket);
        try {
          return ((await client.request("status")) as BridgeStatus).connected;
        } finally {
          await client.close();
        }
      },
      10_000,
      "bridge connected",
    );
    const result = await runCli(["doctor", "--host", `127.0.0.1:${sim.port}`, "--socket", socket]);
    assert.equal(result.code, 0, result.stdout);
    assert.match(result.stdout, /^WARN {2}klipper +not connected as controller/m);
  } finally {
    await cleanup();
    await sim.stop();
  }
});

Deno.test("doctor: WebSocket refused while HTTP answers (sockets full?) is a problem", async () => {
  const { sim } = await startSimulator();
  const { path, cleanup } = await tempSocketPath();
  try {
    sim.refuseUpgrades(503);
    const result = await runCli(["doctor", "--host", `127.0.0.1:${sim.port}`, "--socket", path]);
    assert.equal(result.code, 1, result.stdout);
    assert.match(result.stdout, /^ok {4}reachable +the device answers HTTP$/m);
    assert.match(
      result.stdout,
      /^FAIL {2}websocket +cannot open ws:\/\/127\.0\.0\.1:\d+\/ws: .*HTTP answers, so the device's 7 sockets may be full/m,
    );
    assert.match(result.stdout, /^WARN {2}sockets +estimate: .*the sockets may be full/m);
    assert.equal(sim.received.length, 0);
  } finally {
    await cleanup();
    await sim.stop();
  }
});

Deno.test("doctor: a host that accepts but never answers is bounded by --timeout", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for await (const conn of listener) held.push(conn);
    } catch {
      // Closed.
    }
  })();
  const { path, cleanup } = await tempSocketPath();
  try {
    const port = (listener.addr as Deno.NetAddr).port;
    const result = await runCli([
      "doctor",
      "--host",
      `127.0.0.1:${port}`,
      "--socket",
      path,
      "--timeout",
      "0.5",
    ]);
    assert.equal(result.code, 1, result.stdout);
    assert.match(
      result.stdout,
      /^FAIL {2}reachable +no answer from the device: .*no answer within 500 ms/m,
    );
  } finally {
    listener.close();
    await accepting;
    for (const conn of held) conn.close();
    await cleanup();
  }
});

function device(overrides: Partial<DeviceObservation> = {}): DeviceObservation {
  return {
    opened: true,
    error: null,
    frames: 3,
    connectFrame: true,
    firmware: "V1.0.3",
    workOn: false,
    workMode: 2,
    setTemp: 40,
    temperature: 25,
    remainingSeconds: 0,
    dryingRunning: false,
    faults: [],
    binding: { kind: "none", state: 0 },
    ...overrides,
  };
}

function observations(overrides: Partial<Observations> = {}): Observations {
  return {
    host: "PandaBreath.local",
    hostname: "PandaBreath.local",
    port: 80,
    resolve: { ok: true, address: "192.168.1.50" },
    http: { kind: "stock", detail: "GET /api/v2/info answered HTTP 404: not DragonBreath" },
    device: device(),
    bridge: {
      socket: "/run/panda-breath/bridge.sock",
      running: false,
      error: "x",
      status: null,
      deviceAddress: null,
    },
    ...overrides,
  };
}

Deno.test("diagnose: the verdicts without I/O", () => {
  const good = diagnose(observations());
  assert.equal(good.exitStatus, 0);
  assert.match(formatReport(good), /address +PandaBreath\.local is 192\.168\.1\.50, port 80/);
  assert.match(formatReport(good), /printer +not bound to a printer/);

  const refused = diagnose(observations({
    device: device({ opened: false, connectFrame: false, error: "connection reset" }),
  }));
  assert.equal(refused.exitStatus, 1);
  const text = formatReport(refused);
  assert.match(
    text,
    /FAIL {2}websocket +cannot open ws:\/\/192\.168\.1\.50:80\/ws: connection reset\. HTTP answers, so the device's 7 sockets may be full/,
  );
  assert.match(
    text,
    /WARN {2}sockets +estimate: unknown how many of 7 in use; .*sockets may be full/,
  );

  const silent = diagnose(observations({ device: device({ connectFrame: false, frames: 0 }) }));
  assert.equal(silent.exitStatus, 1);
  assert.match(formatReport(silent), /no connect frame arrived/);

  const drying = diagnose(observations({
    device: device({ workOn: true, workMode: 1, firmware: "V1.0.0", remainingSeconds: 1800 }),
  }));
  assert.match(
    formatReport(drying),
    /ON, mode drying \(work_mode 1\), device target 40 °C, drying 30 min left/,
  );

  const bridgeFor = (url: string, deviceAddress: string | null) => {
    const status = {
      ...buildStatus(initialState(), 0, {
        url,
        startedIso: "2026-01-01T00:00:00.000Z",
        connectedIso: null,
        logWriteFailures: 0,
      }),
      connected: true,
    };
    return diagnose(observations({
      bridge: { socket: "/s", running: true, error: null, status, deviceAddress },
    }));
  };
  const byName = formatReport(bridgeFor("ws://PandaBreath.local:80/ws", "192.168.1.50"));
  assert.doesNotMatch(byName, /drives/);
  assert.match(byName, /^ok {4}bridge +running/m);
  assert.match(byName, /^WARN {2}klipper +not connected as controller/m);
  const other = formatReport(bridgeFor("ws://192.168.1.77:80/ws", "192.168.1.77"));
  assert.match(
    other,
    /^WARN {2}bridge +the local bridge drives ws:\/\/192\.168\.1\.77:80\/ws, not ws:\/\/PandaBreath\.local:80\/ws: check its --host$/m,
  );
  const down = bridgeFor("ws://192.168.1.50:80/ws", "192.168.1.50");
  assert.equal(down.exitStatus, 0);
  const linkDown = diagnose(observations({
    bridge: {
      socket: "/s",
      running: true,
      error: null,
      status: buildStatus(initialState(), 0, {
        url: "ws://192.168.1.50:80/ws",
        startedIso: "2026-01-01T00:00:00.000Z",
        connectedIso: null,
        logWriteFailures: 0,
      }),
      deviceAddress: "192.168.1.50",
    },
  }));
  assert.equal(linkDown.exitStatus, 1);
  assert.match(formatReport(linkDown), /^FAIL {2}bridge +the bridge's device link is DOWN/m);
});
