import assert from "node:assert/strict";
import {
  FAULT_KINDS,
  runSimulatorCli,
  Simulator,
  SIMULATOR_SECRETS,
  type SimulatorOptions,
} from "../lib/simulator/mod.ts";
import { delay, until } from "./wait.ts";

type Frame = Record<string, Record<string, unknown>>;

/** Runs `body` against a started simulator and always stops it. */
async function withSimulator(
  options: SimulatorOptions,
  body: (sim: Simulator) => Promise<void> | void,
): Promise<void> {
  const sim = new Simulator({ telemetryIntervalMs: 100, rebootDownMs: 200, ...options });
  await sim.start();
  try {
    await body(sim);
  } finally {
    await sim.stop();
  }
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function isTelemetry(frame: Frame): boolean {
  return Object.keys(frame).join() === "settings" &&
    Object.keys(frame.settings).join() === "warehouse_temper";
}

/** A device client that records every frame with its arrival time. */
class DeviceClient {
  readonly frames: { at: number; frame: Frame }[] = [];
  readonly socket: WebSocket;
  readonly opened: Promise<void>;
  readonly closed: Promise<CloseEvent>;

  constructor(url: string, protocols: string[] = ["chat"]) {
    this.socket = new WebSocket(url, protocols);
    this.socket.onmessage = (event) => {
      this.frames.push({ at: performance.now(), frame: JSON.parse(event.data) });
    };
    this.socket.onerror = () => {};
    this.opened = new Promise((resolve, reject) => {
      this.socket.addEventListener("open", () => resolve());
      this.socket.addEventListener("close", () => reject(new Error("closed before open")));
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) =>
      this.socket.addEventListener("close", (event) => resolve(event))
    );
  }

  static async open(sim: Simulator): Promise<DeviceClient> {
    const client = new DeviceClient(sim.url);
    await within(client.opened, 2000, "open");
    await client.waitFor(() => true);
    return client;
  }

  get connectFrame(): Frame {
    return this.frames[0].frame;
  }

  send(value: unknown): void {
    this.socket.send(typeof value === "string" ? value : JSON.stringify(value));
  }

  /** Waits for a frame (arriving from now on, or already queued after `from`) matching. */
  async waitFor(predicate: (frame: Frame) => boolean, from = 0, ms = 2000): Promise<Frame> {
    let found: Frame | undefined;
    await until(
      () => {
        found = this.frames.slice(from).find((entry) => predicate(entry.frame))?.frame;
        return found !== undefined;
      },
      ms,
      "a matching frame",
    );
    return found!;
  }

  async close(): Promise<void> {
    if (this.socket.readyState < WebSocket.CLOSING) this.socket.close();
    await this.closed;
  }
}

/** Sends a write and waits until the simulator has processed it. */
async function write(sim: Simulator, client: DeviceClient, value: unknown): Promise<void> {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  const seen = sim.waitForFrame((_frame, entry) => entry.text === text);
  client.send(text);
  await seen;
}

async function control(sim: Simulator, path: string, method = "POST") {
  const response = await fetch(`http://127.0.0.1:${sim.port}${path}`, { method });
  const text = await response.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text);
  } catch {
    body = { text };
  }
  return { status: response.status, body };
}

Deno.test("connect frame: one frame, roots and settings in device order, to the new client only", async () => {
  await withSimulator({}, async (sim) => {
    const first = await DeviceClient.open(sim);
    assert.equal(first.socket.protocol, "chat");
    const frame = first.connectFrame;
    assert.deepEqual(Object.keys(frame), ["wifi", "sta", "ap", "settings", "printer"]);
    assert.deepEqual(Object.keys(frame.settings), [
      "fw_version",
      "language",
      "printer_type",
      "work_on",
      "work_mode",
      "set_temp",
      "filtertemp",
      "hotbedtemp",
      "custom_temp",
      "custom_timer",
      "isrunning",
      "remaining_seconds",
    ]);
    assert.equal(frame.settings.fw_version, "V1.0.3");
    assert.equal(frame.settings.work_on, 0);
    assert.deepEqual(Object.keys(frame.wifi), ["ssid", "password", "scan"]);
    assert.deepEqual(Object.keys(frame.ap), ["ssid", "password", "ip"]);
    assert.deepEqual(Object.keys(frame.printer), [
      "name",
      "sn",
      "access_code",
      "ip",
      "state",
      "scan",
    ]);
    const raw = JSON.stringify(frame);
    for (const secret of SIMULATOR_SECRETS) assert.ok(raw.includes(secret), secret);

    const before = first.frames.length;
    const second = await DeviceClient.open(sim);
    assert.ok(second.connectFrame.wifi);
    await delay(250);
    assert.ok(first.frames.slice(before).every((entry) => isTelemetry(entry.frame)));
    assert.equal(sim.clientCount, 2);
    await Promise.all([first.close(), second.close()]);
  });
});

Deno.test("connect frame also works without a subprotocol", async () => {
  await withSimulator({}, async (sim) => {
    const client = new DeviceClient(sim.url, []);
    await client.opened;
    assert.equal(client.socket.protocol, "");
    assert.ok((await client.waitFor(() => true)).wifi);
    await client.close();
  });
});

Deno.test("telemetry: every interval to every client, whole degrees, even when unchanged", async () => {
  await withSimulator({ telemetryIntervalMs: 100, temperatureC: 22.4 }, async (sim) => {
    const clients = [await DeviceClient.open(sim), await DeviceClient.open(sim)];
    await delay(1050);
    for (const client of clients) {
      const telemetry = client.frames.filter((entry) => isTelemetry(entry.frame));
      assert.ok(telemetry.length >= 8 && telemetry.length <= 12, `${telemetry.length} frames`);
      const gaps = telemetry.slice(1).map((entry, i) => entry.at - telemetry[i].at);
      const mean = gaps.reduce((sum, gap) => sum + gap, 0) / gaps.length;
      assert.ok(mean > 80 && mean < 125, `mean gap ${mean} ms`);
      for (const entry of telemetry) assert.equal(entry.frame.settings.warehouse_temper, 22);
    }
    await Promise.all(clients.map((client) => client.close()));
  });
});

Deno.test("writes: work_on only as boolean, never acknowledged or echoed", async () => {
  await withSimulator({}, async (sim) => {
    const client = await DeviceClient.open(sim);
    await write(sim, client, { settings: { work_on: 1 } });
    assert.equal(sim.state.work_on, false);
    await write(sim, client, { settings: { work_on: "true" } });
    assert.equal(sim.state.work_on, false);
    const before = client.frames.length;
    await write(sim, client, {
      settings: { work_mode: 2, set_temp: 45, temp: 45, isrunning: 0, work_on: true },
    });
    assert.deepEqual(
      [sim.state.work_on, sim.state.work_mode, sim.state.set_temp, sim.state.heating],
      [true, 2, 45, true],
    );
    await write(sim, client, {});
    await delay(300);
    assert.ok(client.frames.slice(before).every((entry) => isTelemetry(entry.frame)));
    await write(sim, client, { settings: { work_on: false } });
    assert.equal(sim.state.work_on, false);
    assert.equal(sim.state.heating, false);
    await client.close();
  });
});

Deno.test("writes: set_temp is a byte without clamp; work_mode 0 and temp ignored", async () => {
  await withSimulator({}, async (sim) => {
    const client = await DeviceClient.open(sim);
    const cases: [unknown, number][] = [
      [300, 44],
      [-1, 255],
      [45.7, 45],
      [256, 0],
      ["50", 0],
      [true, 0],
      [60, 60],
    ];
    for (const [value, expected] of cases) {
      await write(sim, client, { settings: { set_temp: value } });
      assert.equal(sim.state.set_temp, expected, `set_temp ${JSON.stringify(value)}`);
    }
    await write(sim, client, `{"settings":{"set_temp":1e999}}`);
    assert.equal(sim.state.set_temp, 255);
    await write(sim, client, { settings: { work_mode: 0 } });
    assert.equal(sim.state.work_mode, 2);
    await write(sim, client, { settings: { work_mode: 3 } });
    assert.equal(sim.state.work_mode, 3);
    await write(sim, client, { settings: { temp: 33 } });
    assert.equal(sim.state.set_temp, 255);
    await client.close();
  });
});

Deno.test("firmware V1.0.0 honours temp and has no printer_type", async () => {
  await withSimulator({ fwVersion: "V1.0.0" }, async (sim) => {
    const client = await DeviceClient.open(sim);
    assert.equal(client.connectFrame.settings.fw_version, "V1.0.0");
    assert.ok(!("printer_type" in client.connectFrame.settings));
    await write(sim, client, { settings: { temp: 33 } });
    assert.equal(sim.state.set_temp, 33);
    await write(sim, client, { settings: { set_temp: 50 } });
    assert.equal(sim.state.set_temp, 33, "set_temp is the V1.0.1+ key");
    sim.pressButton("auto");
    assert.equal(sim.state.work_mode, 3);
    await client.close();
  });
});

Deno.test("thermal model heats toward set_temp without hysteresis and cools when off", async () => {
  await withSimulator({ speed: 400 }, async (sim) => {
    const client = await DeviceClient.open(sim);
    await write(sim, client, { settings: { work_mode: 2, set_temp: 30, work_on: true } });
    await until(() => sim.state.temperature >= 30, 3000, "heating to 30");
    await delay(300);
    assert.ok(
      sim.state.temperature >= 29.5 && sim.state.temperature < 31,
      `${sim.state.temperature}`,
    );
    await client.waitFor((frame) => frame.settings?.warehouse_temper === 30, client.frames.length);
    await write(sim, client, { settings: { work_on: false } });
    await until(() => sim.state.temperature < 27, 3000, "cooling");
    await client.close();
  });
});

Deno.test("thermal model at speed 1 heats about 1 °C per 10–20 s", async () => {
  await withSimulator({}, async (sim) => {
    const client = await DeviceClient.open(sim);
    await write(sim, client, { settings: { work_mode: 2, set_temp: 60, work_on: true } });
    const start = sim.state.temperature;
    await delay(1000);
    const perSecond = sim.state.temperature - start;
    assert.ok(perSecond > 1 / 20 && perSecond < 1 / 10, `${perSecond} °C/s`);
    await client.close();
  });
});

Deno.test("reboot refuses connections, then resumes heating from persisted state", async () => {
  await withSimulator({}, async (sim) => {
    const client = await DeviceClient.open(sim);
    await write(sim, client, { settings: { work_mode: 2, set_temp: 45, work_on: true } });
    const port = sim.port;
    const rebooted = sim.reboot(400);
    const event = await within(client.closed, 2000, "the socket drop");
    assert.equal(event.wasClean, false);
    assert.equal(sim.state.rebooting, true);
    assert.equal(sim.state.heating, false);
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }));
    await rebooted;
    assert.equal(sim.port, port);
    assert.equal(sim.state.heating, true);
    const again = await DeviceClient.open(sim);
    const settings = again.connectFrame.settings;
    assert.deepEqual([settings.work_on, settings.work_mode, settings.set_temp], [1, 2, 45]);
    await again.close();
  });
});

Deno.test("printer_type write is answered, then the device reboots; reset: 1 reboots", async () => {
  await withSimulator({ rebootDownMs: 100 }, async (sim) => {
    const client = await DeviceClient.open(sim);
    client.send({ settings: { printer_type: 1 } });
    const reply = await client.waitFor((frame) => "response" in frame);
    assert.deepEqual(reply, { response: { type: "printer_type", ok: 1 } });
    await within(client.closed, 2000, "reboot after printer_type");
    await until(() => !sim.state.rebooting, 2000, "reboot end");
    const second = await DeviceClient.open(sim);
    second.send({ settings: { reset: 1 } });
    await within(second.closed, 2000, "reboot after reset");
    await until(() => !sim.state.rebooting, 2000, "reboot end");
  });
});

Deno.test("faults force work_on 0 and push the settings block to every client", async () => {
  await withSimulator({ telemetryIntervalMs: 1000 }, async (sim) => {
    const clients = [await DeviceClient.open(sim), await DeviceClient.open(sim)];
    const expected: Record<string, [string, number]> = {
      ptc_sensor_short: ["ptc_sensor_status", 1],
      ptc_sensor_open: ["ptc_sensor_status", 2],
      chamber_sensor_short: ["warehouse_sensor_status", 1],
      chamber_sensor_open: ["warehouse_sensor_status", 2],
      heater_no_heat: ["ptc_heater_status", 1],
    };
    for (const kind of FAULT_KINDS) {
      await write(sim, clients[0], { settings: { work_mode: 2, set_temp: 50, work_on: true } });
      assert.equal(sim.state.heating, true);
      const marks = clients.map((client) => client.frames.length);
      sim.injectFault(kind);
      assert.deepEqual(sim.state.faults, [kind]);
      assert.equal(sim.state.work_on, false);
      const [field, value] = expected[kind];
      for (const [i, client] of clients.entries()) {
        const push = await client.waitFor((frame) => field in (frame.settings ?? {}), marks[i]);
        assert.equal(push.settings[field], value);
        assert.equal(push.settings.work_on, 0);
        assert.equal(push.settings.work_mode, 2);
        assert.equal(push.settings.warehouse_temper, 22);
      }
      await write(sim, clients[0], { settings: { work_on: true } });
      assert.equal(sim.state.heating, false, "no heat while a fault is active");
      sim.clearFaults();
      assert.deepEqual(sim.state.faults, []);
    }
    await Promise.all(clients.map((client) => client.close()));
  });
});

Deno.test("buttons change state and push the whole settings block", async () => {
  await withSimulator({ telemetryIntervalMs: 1000 }, async (sim) => {
    const client = await DeviceClient.open(sim);
    const press = async (action: "power" | "auto" | "always_on" | "drying") => {
      const mark = client.frames.length;
      sim.pressButton(action);
      return (await client.waitFor((frame) => "work_on" in (frame.settings ?? {}), mark)).settings;
    };
    const alwaysOn = await press("always_on");
    assert.deepEqual(
      Object.keys(alwaysOn).slice(-1),
      ["warehouse_temper"],
    );
    assert.deepEqual([alwaysOn.work_on, alwaysOn.work_mode], [1, 2]);
    const off = await press("power");
    assert.equal(off.work_on, 0);
    assert.equal(sim.state.work_on, false);
    const auto = await press("auto");
    assert.deepEqual([auto.work_on, auto.work_mode], [1, 1]);
    const drying = await press("drying");
    assert.deepEqual(
      [drying.work_on, drying.work_mode, drying.isrunning, drying.remaining_seconds],
      [1, 3, 1, 12 * 3600],
    );
    await client.close();
  });
});

Deno.test("a drying run ends with isrunning 0 and a push", async () => {
  await withSimulator({
    speed: 36000,
    settings: { filament_drying_mode: 3, custom_timer: 1, custom_temp: 50 },
  }, async (sim) => {
    const client = await DeviceClient.open(sim);
    const mark = client.frames.length;
    await write(sim, client, {
      settings: { work_mode: 3, filament_drying_mode: 3, isrunning: 1, work_on: true },
    });
    const end = await client.waitFor((frame) => frame.settings?.isrunning === 0, mark);
    assert.equal(end.settings.remaining_seconds, 0);
    assert.equal(sim.state.isrunning, false);
    await client.close();
  });
});

Deno.test("an 8th socket evicts the listen-only client", async () => {
  await withSimulator({ telemetryIntervalMs: 1000 }, async (sim) => {
    const clients: DeviceClient[] = [];
    for (let i = 0; i < 7; i++) clients.push(await DeviceClient.open(sim));
    const listenOnly = 2;
    for (const [i, client] of clients.entries()) {
      if (i !== listenOnly) await write(sim, client, {});
    }
    const eighth = await DeviceClient.open(sim);
    const first = await within(
      Promise.race(clients.map((client, i) => client.closed.then(() => i))),
      2000,
      "an eviction",
    );
    assert.equal(first, listenOnly);
    await delay(100);
    assert.equal(sim.clientCount, 7);
    assert.ok(clients.every((client, i) => i === listenOnly || client.socket.readyState === 1));
    await Promise.all([...clients, eighth].map((client) => client.close()));
  });
});

Deno.test("HTTP control endpoints", async () => {
  await withSimulator({ telemetryIntervalMs: 50 }, async (sim) => {
    const client = await DeviceClient.open(sim);
    await write(sim, client, { settings: { set_temp: 41 } });
    const state = await control(sim, "/sim/state", "GET");
    assert.equal(state.status, 200);
    assert.equal(state.body.set_temp, 41);
    assert.equal(state.body.clients, 1);
    const received = state.body.received as { at: number; frame: unknown }[];
    assert.deepEqual(received.at(-1)?.frame, { settings: { set_temp: 41 } });
    assert.ok(!JSON.stringify(state.body).includes(SIMULATOR_SECRETS[0]));

    const button = await control(sim, "/sim/button?action=always_on");
    assert.deepEqual([button.status, button.body.work_on, button.body.work_mode], [200, true, 2]);
    const fault = await control(sim, "/sim/fault?kind=heater_no_heat");
    assert.deepEqual([fault.body.faults, fault.body.work_on], [["heater_no_heat"], false]);
    assert.deepEqual((await control(sim, "/sim/fault?kind=clear")).body.faults, []);
    assert.equal((await control(sim, "/sim/temperature?value=33.8")).body.temperature, 33.8);
    await client.waitFor((frame) => frame.settings?.warehouse_temper === 34, client.frames.length);

    assert.equal((await control(sim, "/sim/silence?on=1")).body.silenced, true);
    await delay(60);
    const mark = client.frames.length;
    await delay(250);
    assert.equal(client.frames.length, mark, "silenced: no telemetry");
    assert.equal(client.socket.readyState, WebSocket.OPEN);
    await control(sim, "/sim/silence?on=0");
    await client.waitFor(isTelemetry, mark);

    const reboot = await control(sim, "/sim/reboot?down_ms=150");
    assert.deepEqual([reboot.status, reboot.body.down_ms], [200, 150]);
    await within(client.closed, 2000, "reboot");
    await until(() => !sim.state.rebooting, 2000, "reboot end");

    for (
      const path of [
        "/sim/button?action=explode",
        "/sim/button",
        "/sim/fault?kind=fire",
        "/sim/reboot?down_ms=-5",
        "/sim/temperature?value=hot",
        "/sim/temperature?value=1e400",
        "/sim/silence?on=yes",
      ]
    ) {
      const answer = await control(sim, path);
      assert.equal(answer.status, 400, path);
      assert.equal(typeof answer.body.error, "string", path);
    }
    assert.equal((await control(sim, "/sim/nothing")).status, 404);
    assert.equal((await control(sim, "/sim/button?action=power", "GET")).status, 405);
    assert.equal((await control(sim, "/elsewhere", "GET")).status, 404);
    const page = await fetch(`http://127.0.0.1:${sim.port}/`);
    assert.match(await page.text(), /Panda Breath simulator/);
  });
});

Deno.test("refused upgrades get a plain HTTP answer", async () => {
  await withSimulator({}, async (sim) => {
    assert.equal((await control(sim, "/sim/refuse_upgrades?status=503")).status, 200);
    const refused = new DeviceClient(sim.url);
    await assert.rejects(refused.opened);
    await refused.closed;
    await control(sim, "/sim/refuse_upgrades?status=0");
    const accepted = await DeviceClient.open(sim);
    await accepted.close();
  });
});

Deno.test("junk input is silently ignored and the socket stays open", async () => {
  await withSimulator({}, async (sim) => {
    const client = await DeviceClient.open(sim);
    const junk = [
      "not json",
      "",
      "[]",
      "null",
      "42",
      '"settings"',
      '{"settings":null}',
      '{"settings":[1,2]}',
      '{"settings":{"work_on":null,"set_temp":null,"work_mode":"2"}}',
      '{"unknown_root":{"x":1},"printer":{"scan":1}}',
      '{"settings":{"__proto__":{"work_on":true},"constructor":1}}',
      '{"settings":{"set_temp":45',
      "\u0000\u0001\u0002",
      "{}".repeat(1000),
    ];
    for (const text of junk) await write(sim, client, text);
    client.socket.send(new TextEncoder().encode('{"settings":{"set_temp":37}}'));
    await sim.waitForFrame((frame) => JSON.stringify(frame).includes("37"));
    assert.equal(sim.state.set_temp, 37);
    assert.equal(sim.state.work_on, false);
    const mark = client.frames.length;
    await client.waitFor(isTelemetry, mark);
    assert.equal(client.socket.readyState, WebSocket.OPEN);

    client.send("x".repeat(20_000));
    const event = await within(client.closed, 2000, "oversize close");
    assert.equal(event.code, 1009);
    const survivor = await DeviceClient.open(sim);
    await survivor.close();
  });
});

Deno.test("sendTextToAll reaches the client; abortClients drops it without a close frame and listens again", async () => {
  await withSimulator({ telemetryIntervalMs: 1000 }, async (sim) => {
    const client = await DeviceClient.open(sim);
    await sim.sendTextToAll('{"printer":{"state":5}}');
    await client.waitFor((frame) => frame.printer?.state === 5);
    sim.abortClients();
    assert.equal((await within(client.closed, 2000, "abort")).wasClean, false);
    await until(
      async () => {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port: sim.port })).close();
          return true;
        } catch {
          return false;
        }
      },
      2000,
      "listening again",
    );
    const again = await DeviceClient.open(sim);
    assert.ok(again.connectFrame.wifi);
    await again.close();
  });
});

Deno.test("waitForFrame times out; received is bounded", async () => {
  await withSimulator({ receivedLimit: 5 }, async (sim) => {
    await assert.rejects(sim.waitForFrame(() => false, 50), /no matching frame/);
    const client = await DeviceClient.open(sim);
    for (let i = 0; i < 8; i++) await write(sim, client, { n: i });
    assert.equal(sim.received.length, 5);
    assert.deepEqual(sim.received.map((entry) => (entry.frame as { n: number }).n), [
      3,
      4,
      5,
      6,
      7,
    ]);
    assert.ok(sim.received.every((entry) => typeof entry.at === "number" && entry.text));
    await client.close();
  });
});

Deno.test("stateFile keeps settings across simulator processes", async () => {
  const stateFile = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await withSimulator({ stateFile }, async (sim) => {
      const client = await DeviceClient.open(sim);
      await write(sim, client, { settings: { work_mode: 2, set_temp: 48, work_on: true } });
      await client.close();
    });
    await withSimulator({ stateFile }, (sim) => {
      assert.deepEqual([sim.state.work_on, sim.state.work_mode, sim.state.set_temp], [
        true,
        2,
        48,
      ]);
      assert.equal(sim.state.heating, true);
    });
  } finally {
    await Deno.remove(stateFile);
  }
});

Deno.test("runSimulatorCli prints one stdout line, logs frames without secrets, stops on abort", async () => {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const originalLog = console.log;
  const originalError = console.error;
  console.log = (...args: unknown[]) => stdout.push(args.join(" "));
  console.error = (...args: unknown[]) => stderr.push(args.join(" "));
  const controller = new AbortController();
  try {
    const running = runSimulatorCli(
      { port: 0, hostname: "127.0.0.1", interval: 100 },
      controller.signal,
    );
    await until(() => stdout.length > 0, 2000, "the listening line");
    const match = /^listening on (ws:\/\/127\.0\.0\.1:(\d+)\/ws)$/.exec(stdout[0]);
    assert.ok(match, stdout[0]);
    assert.notEqual(match[2], "0");
    const client = new DeviceClient(match[1]);
    await client.opened;
    client.send({ settings: { work_on: false } });
    await until(() => stderr.some((line) => line.includes('"work_on":false')), 2000, "log line");
    await client.close();
    controller.abort();
    await running;
  } finally {
    console.log = originalLog;
    console.error = originalError;
  }
  assert.equal(stdout.length, 1);
  const logged = stderr.join("\n");
  for (const secret of SIMULATOR_SECRETS) assert.ok(!logged.includes(secret));
  assert.ok(stderr.every((line) => !line.includes("\n")));
});

// ---- Drying, faults, other clients: each modelled fact and each option's default ----

/** The drying start the web UI sends, in one frame (V1.0.1+ mode number 3). */
function dryingStart(temp: number, hours: number, mode = 3) {
  return {
    settings: {
      work_mode: mode,
      filament_temp: temp,
      filament_timer: hours,
      filament_drying_mode: 3,
      isrunning: 1,
      work_on: true,
    },
  };
}

/** Reads the device's state the only way a client can: a new connection's connect frame. */
async function readBack(sim: Simulator): Promise<Record<string, unknown>> {
  const client = await DeviceClient.open(sim);
  const settings = client.connectFrame.settings;
  await client.close();
  return settings;
}

/** Frames other than telemetry that `client` received after `from`. */
function nonTelemetry(client: DeviceClient, from = 1): Frame[] {
  return client.frames.slice(from).map((entry) => entry.frame).filter((f) => !isTelemetry(f));
}

Deno.test("drying: one frame with the drying mode and isrunning 1 starts a run of filament_timer hours", async () => {
  await withSimulator({}, async (sim) => {
    const client = await DeviceClient.open(sim);
    await write(sim, client, dryingStart(45, 2));
    const state = sim.state;
    assert.deepEqual(
      [state.isrunning, state.drying, state.work_mode, state.heating],
      [true, true, 3, true],
    );
    assert.ok(state.remaining_seconds <= 7200 && state.remaining_seconds > 7190);
    const settings = await readBack(sim);
    assert.deepEqual(
      [settings.work_on, settings.work_mode, settings.isrunning],
      [1, 3, 1],
    );
    assert.deepEqual([settings.custom_temp, settings.custom_timer], [45, 2]);
    assert.ok(Number(settings.remaining_seconds) > 7190, `${settings.remaining_seconds}`);
    await client.close();
  });
});

Deno.test("drying: isrunning 1 outside the drying mode starts nothing until the mode becomes drying", async () => {
  await withSimulator({}, async (sim) => {
    const client = await DeviceClient.open(sim);
    await write(sim, client, dryingStart(45, 2, 2));
    assert.deepEqual([sim.state.drying, sim.state.remaining_seconds], [false, 0]);
    assert.equal(sim.state.isrunning, true, "the flag is stored");
    await write(sim, client, { settings: { isrunning: true } });
    await write(sim, client, { settings: { isrunning: "0" } });
    assert.equal(sim.state.isrunning, true, "isrunning other than a number is ignored");
    await write(sim, client, { settings: { work_mode: 3 } });
    assert.equal(sim.state.drying, true, "the stored flag starts a run in drying mode");
    await client.close();
  });
});

Deno.test("drying on V1.0.0: mode 1 is drying, mode 3 is auto", async () => {
  await withSimulator({ fwVersion: "V1.0.0", hotbedC: 0 }, async (sim) => {
    const client = await DeviceClient.open(sim);
    await write(sim, client, dryingStart(45, 2, 3));
    assert.deepEqual([sim.state.drying, sim.state.heating], [false, false], "3 is auto here");
    await write(sim, client, dryingStart(45, 2, 1));
    assert.deepEqual([sim.state.drying, sim.state.heating], [true, true]);
    await client.close();
  });
});

Deno.test("drying: filament_timer is stored like the other byte settings (whole hours)", async () => {
  await withSimulator({}, async (sim) => {
    const client = await DeviceClient.open(sim);
    await write(sim, client, dryingStart(45, 1.9));
    assert.ok(sim.state.remaining_seconds <= 3600 && sim.state.remaining_seconds > 3590);
    assert.equal((await readBack(sim)).custom_timer, 1);
    await client.close();
  });
});

Deno.test("drying: the run ends by itself, pushes the block with isrunning and remaining_seconds 0, stops heating", async () => {
  await withSimulator({ speed: 7200, telemetryIntervalMs: 50 }, async (sim) => {
    const client = await DeviceClient.open(sim);
    await write(sim, client, dryingStart(45, 1));
    assert.equal(sim.state.heating, true);
    const end = await client.waitFor((frame) => frame.settings?.isrunning === 0, 1, 3000);
    assert.equal(end.settings.remaining_seconds, 0);
    assert.equal(end.settings.work_mode, 3);
    assert.ok("warehouse_temper" in end.settings && "custom_timer" in end.settings);
    const state = sim.state;
    assert.deepEqual([state.isrunning, state.drying, state.heating], [false, false, false]);
    assert.equal(state.work_on, true, "work_on is left as it was (unknown on the device)");
    const pushes = nonTelemetry(client);
    assert.deepEqual(pushes, [end], "remaining_seconds is never pushed periodically");
    await client.close();
  });
});

Deno.test("drying: remaining_seconds is readable only from a connect frame, and counts down", async () => {
  await withSimulator({ speed: 200, telemetryIntervalMs: 50 }, async (sim) => {
    const client = await DeviceClient.open(sim);
    await write(sim, client, dryingStart(45, 2));
    const first = Number((await readBack(sim)).remaining_seconds);
    await delay(600);
    const second = Number((await readBack(sim)).remaining_seconds);
    assert.ok(first - second >= 80, `${first} -> ${second}`);
    assert.deepEqual(nonTelemetry(client), [], "the running client was told nothing");
    await client.close();
  });
});

Deno.test("drying: re-sending the start while running does not restart the timer by default", async () => {
  for (const restarts of [undefined, true]) {
    await withSimulator({ speed: 100, dryingRewriteRestartsTimer: restarts }, async (sim) => {
      const client = await DeviceClient.open(sim);
      await write(sim, client, dryingStart(45, 2));
      await delay(2000);
      await write(sim, client, dryingStart(45, 2));
      const remaining = Number((await readBack(sim)).remaining_seconds);
      if (restarts) assert.ok(remaining > 7150, `restarted: ${remaining}`);
      else assert.ok(remaining < 7100, `not restarted: ${remaining}`);
      await client.close();
    });
  }
});

Deno.test("drying: a stop the control task misses is no stop; a stop it sees, then a start, is a new run", async () => {
  await withSimulator({ speed: 100, controlPollMs: 2000 }, async (sim) => {
    const client = await DeviceClient.open(sim);
    await write(sim, client, dryingStart(45, 2));
    await delay(2000);
    client.send({ settings: { isrunning: 0 } });
    await write(sim, client, dryingStart(45, 2));
    assert.equal(sim.state.drying, true);
    const remaining = Number((await readBack(sim)).remaining_seconds);
    assert.ok(remaining < 7100, `a back-to-back stop and start is not a restart: ${remaining}`);
    await client.close();
  });
  await withSimulator({ speed: 100, controlPollMs: 300 }, async (sim) => {
    const client = await DeviceClient.open(sim);
    await write(sim, client, dryingStart(45, 2));
    await delay(2000);
    await write(sim, client, { settings: { isrunning: 0 } });
    assert.equal(sim.state.drying, true, "the control task has not seen the stop yet");
    assert.equal(sim.state.heating, true);
    await delay(800);
    assert.deepEqual([sim.state.drying, sim.state.heating], [false, false]);
    await write(sim, client, dryingStart(45, 2));
    const remaining = Number((await readBack(sim)).remaining_seconds);
    assert.ok(remaining > 7150, `a stop held past the poll, then a start, restarts: ${remaining}`);
    await client.close();
  });
});

Deno.test("drying: work_on false alone pauses the run; work_on true resumes it (leave with isrunning 0)", async () => {
  await withSimulator({ speed: 100 }, async (sim) => {
    const client = await DeviceClient.open(sim);
    await write(sim, client, dryingStart(45, 2));
    await write(sim, client, { settings: { work_on: false } });
    assert.deepEqual([sim.state.heating, sim.state.isrunning], [false, true]);
    const paused = sim.state.remaining_seconds;
    await delay(500);
    assert.ok(sim.state.remaining_seconds >= paused - 1, "the timer is paused");
    await write(sim, client, { settings: { work_on: true } });
    assert.deepEqual([sim.state.heating, sim.state.drying], [true, true], "the run resumes");
    await write(sim, client, { settings: { isrunning: 0, work_on: false } });
    await until(() => !sim.state.drying, 2000, "the stop");
    await write(sim, client, { settings: { work_on: true } });
    assert.deepEqual([sim.state.heating, sim.state.drying], [false, false], "left for good");
    await client.close();
  });
});

Deno.test("drying regulates to its temperature only with dryingRegulates", async () => {
  for (const regulates of [undefined, true]) {
    await withSimulator({ temperatureC: 50, dryingRegulates: regulates }, async (sim) => {
      const client = await DeviceClient.open(sim);
      await write(sim, client, dryingStart(40, 2));
      assert.equal(sim.state.heating, !regulates, `dryingRegulates: ${regulates}`);
      await client.close();
    });
  }
});

Deno.test("drying across a reboot: restarted with the full timer by default, gone with dryingSurvivesReboot false", async () => {
  for (const survives of [undefined, false]) {
    const resumes = survives === undefined;
    await withSimulator({ speed: 100, dryingSurvivesReboot: survives }, async (sim) => {
      const client = await DeviceClient.open(sim);
      await write(sim, client, dryingStart(45, 2));
      await delay(2000);
      await sim.reboot(100);
      const settings = await readBack(sim);
      assert.deepEqual([settings.work_on, settings.work_mode], [1, 3]);
      if (resumes) {
        assert.equal(settings.isrunning, 1);
        assert.ok(Number(settings.remaining_seconds) > 7150, `${settings.remaining_seconds}`);
        assert.equal(sim.state.heating, true);
      } else {
        assert.deepEqual([settings.isrunning, settings.remaining_seconds], [0, 0]);
        assert.equal(sim.state.heating, false);
      }
    });
  }
});

Deno.test("connect frame without the wifi/sta/ap roots (connectFrameSecretRoots false)", async () => {
  await withSimulator(
    { connectFrameSecretRoots: false, telemetryIntervalMs: 1000 },
    async (sim) => {
      const client = await DeviceClient.open(sim);
      assert.deepEqual(Object.keys(client.connectFrame), ["settings", "printer"]);
      assert.equal(client.connectFrame.settings.fw_version, "V1.0.3");
      assert.ok(!JSON.stringify(client.connectFrame).includes(SIMULATOR_SECRETS[0]));
      sim.pressButton("always_on");
      const push = await client.waitFor((frame) => "work_on" in (frame.settings ?? {}), 1);
      assert.deepEqual(Object.keys(push), ["settings"]);
      await client.close();
    },
  );
});

Deno.test("unknown fault codes are injectable and act as faults", async () => {
  await withSimulator({ telemetryIntervalMs: 1000 }, async (sim) => {
    const client = await DeviceClient.open(sim);
    await write(sim, client, { settings: { work_mode: 2, set_temp: 50, work_on: true } });
    sim.injectFaultCode("ptc_sensor_status", 7);
    const push = await client.waitFor((frame) => "ptc_sensor_status" in (frame.settings ?? {}), 1);
    assert.deepEqual([push.settings.ptc_sensor_status, push.settings.work_on], [7, 0]);
    assert.deepEqual(sim.state.faults, []);
    assert.deepEqual(sim.state.faultCodes, { ptc_sensor_status: 7 });
    await write(sim, client, { settings: { work_on: true } });
    assert.equal(sim.state.heating, false);
    sim.clearFaults();
    const http = await control(sim, "/sim/fault?field=warehouse_sensor_status&code=9");
    assert.deepEqual(http.body.faultCodes, { warehouse_sensor_status: 9 });
    sim.injectFault("ptc_sensor_open");
    assert.deepEqual(sim.state.faults, ["ptc_sensor_open"]);
    for (
      const path of [
        "field=nope&code=1",
        "field=ptc_sensor_status&code=0",
        "field=ptc_sensor_status&code=2.5",
      ]
    ) {
      assert.equal((await control(sim, `/sim/fault?${path}`)).status, 400, path);
    }
    assert.throws(() => sim.injectFaultCode("ptc_sensor_status", 0), RangeError);
    await client.close();
  });
});

Deno.test("another client's writes are applied and never pushed to anyone", async () => {
  await withSimulator({ telemetryIntervalMs: 100 }, async (sim) => {
    const bridge = await DeviceClient.open(sim);
    const webUi = await DeviceClient.open(sim);
    for (const frame of [{ settings: { work_mode: 2 } }, { settings: { set_temp: 55 } }]) {
      await write(sim, webUi, frame);
    }
    await write(sim, webUi, { settings: { work_on: true } });
    assert.deepEqual([sim.state.work_on, sim.state.set_temp, sim.state.heating], [true, 55, true]);
    await delay(300);
    assert.deepEqual(nonTelemetry(bridge), [], "the bridge's socket was told nothing");
    assert.deepEqual(nonTelemetry(webUi), [], "nor the writer's");
    const settings = await readBack(sim);
    assert.deepEqual([settings.work_on, settings.set_temp], [1, 55], "a read-back shows it");
    await Promise.all([bridge.close(), webUi.close()]);
  });
});

Deno.test("auto stand-in heats by default (hotbedC 100) and not with a cold bed", async () => {
  for (const [hotbedC, heats] of [[undefined, true], [0, false]] as const) {
    await withSimulator({ hotbedC }, (sim) => {
      sim.pressButton("auto");
      assert.deepEqual([sim.state.work_mode, sim.state.heating], [1, heats], `hotbedC ${hotbedC}`);
    });
  }
});

Deno.test("sensor bias: the device reports and regulates on the chamber minus the bias", async () => {
  await withSimulator({ speed: 400, sensorBiasC: 6, temperatureC: 30.2 }, async (sim) => {
    const client = await DeviceClient.open(sim);
    await client.waitFor((frame) => frame.settings?.warehouse_temper === 24);
    assert.equal(sim.state.reported_temperature, 24);
    assert.equal(sim.state.sensor_bias, 6);
    await write(sim, client, { settings: { work_mode: 2, set_temp: 40, work_on: true } });
    // the device stops heating at 40 on its own sensor: the chamber is 6 above
    await until(() => sim.state.temperature >= 46, 3000, "heating to 46 (40 + bias)");
    await delay(300);
    assert.ok(
      sim.state.temperature >= 45.5 && sim.state.temperature < 47,
      `${sim.state.temperature}`,
    );
    await client.waitFor((frame) => frame.settings?.warehouse_temper === 40, client.frames.length);
    await client.close();
  });
});

Deno.test("sensor bias: default 0, set at run time by /sim/sensor_bias, bounded", async () => {
  await withSimulator({ temperatureC: 30 }, async (sim) => {
    const client = await DeviceClient.open(sim);
    const before = await control(sim, "/sim/state", "GET");
    assert.deepEqual([before.body.sensor_bias, before.body.reported_temperature], [0, 30]);
    const set = await control(sim, "/sim/sensor_bias?value=-4");
    assert.deepEqual(
      [set.status, set.body.sensor_bias, set.body.reported_temperature, set.body.temperature],
      [200, -4, 34, 30],
    );
    await client.waitFor((frame) => frame.settings?.warehouse_temper === 34, client.frames.length);
    for (const bad of ["25", "x", ""]) {
      const refused = await control(sim, `/sim/sensor_bias?value=${bad}`);
      assert.equal(refused.status, 400, bad);
    }
    assert.equal(sim.state.sensor_bias, -4);
    assert.throws(() => new Simulator({ sensorBiasC: NaN }), RangeError);
    await client.close();
  });
});
