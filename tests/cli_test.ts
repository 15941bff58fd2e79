import assert from "node:assert/strict";
import { formatStatus } from "../lib/cli.ts";
import { initialState } from "../lib/core.ts";
import { buildStatus } from "../lib/status.ts";
import { buildOnFrame, OFF_FRAME } from "../lib/protocol.ts";
import { VERSION } from "../lib/version.ts";
import { connectFrame, FAKE_SECRETS, FakeDevice } from "./fake_device.ts";
import { MainProcess, runCli, tempSocketPath, waitForSocket } from "./process.ts";

Deno.test("--version and --help work for every command", async () => {
  const version = await runCli(["--version"]);
  assert.equal(version.code, 0);
  assert.equal(version.stdout.trim(), `panda-breath ${VERSION}`);
  const help = await runCli(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Commands:/);
  for (const command of ["run", "status", "doctor", "set", "off", "simulate", "demo"]) {
    const result = await runCli([command, "--help"]);
    assert.equal(result.code, 0, command);
    assert.match(result.stdout, new RegExp(`Usage: panda-breath ${command}`), command);
  }
});

Deno.test("bad command lines fail with exit 2, a clear message, and start nothing", async () => {
  const { path, cleanup } = await tempSocketPath();
  const cases: [string[], RegExp][] = [
    [["explode"], /unknown command 'explode'/],
    [["run"], /run needs --host/],
    [["run", "--host"], /argument missing/],
    [["run", "--host", "h", "--bogus"], /Unknown option '--bogus'/],
    [["run", "--host", "h", "--socket", path, "--failsafe-timeout", "abc"], /--failsafe-timeout/],
    [["run", "--host", "h", "--socket", path, "--failsafe-timeout", "0"], /from 1 to 600/],
    [["run", "--host", "h", "--socket", path, "--max-target", "300"], /--max-target/],
    [["run", "--host", "h", "--socket", path, "--log-level", "loud"], /--log-level must be one/],
    [["run", "--host", "h", "--socket", "relative.sock"], /absolute path/],
    [["run", "--host", "h:99999", "--socket", path], /not a host name/],
    [["run", "--host", "h", "--socket", path, "--socket-mode", "0666"], /0600 or 0660/],
    [["run", "--host", "h", "--socket", path, "extra"], /unexpected argument 'extra'/i],
    [["doctor"], /doctor needs --host/],
    [["doctor", "--host", "h:99999"], /not a host name/],
    [["doctor", "--host", "h", "--timeout", "x"], /--timeout/],
    [["doctor", "--host", "h", "extra"], /unexpected argument 'extra'/i],
    [["set"], /set needs a temperature/],
    [["set", "hot"], /'hot'/],
    [["set", "45", "46"], /unexpected argument '46'/],
    [["simulate", "--port", "70000"], /--port/],
    [["simulate", "--speed", "0"], /--speed/],
    [["demo", "--target", "99"], /--target/],
  ];
  for (const [args, message] of cases) {
    const result = await runCli(args);
    assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
    assert.match(result.stderr, message, args.join(" "));
    await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
  }
  await cleanup();
});

Deno.test("status/set/off report an unreachable bridge with exit 1", async () => {
  const { path, cleanup } = await tempSocketPath();
  for (const args of [["status"], ["set", "40"], ["off"]]) {
    const result = await runCli([...args, "--socket", path]);
    assert.equal(result.code, 1, args.join(" "));
    assert.match(result.stderr, /cannot reach the bridge at .* is 'panda-breath run' running\?/);
  }
  await cleanup();
});

Deno.test("run + status + set + off against a device, then SIGTERM sends OFF", async () => {
  const device = new FakeDevice({ connectFrame: connectFrame(1, 55) });
  const { path, cleanup } = await tempSocketPath();
  const bridge = new MainProcess([
    "run",
    "--host",
    device.address,
    "--socket",
    path,
    "--log-level",
    "debug",
  ]);
  try {
    await waitForSocket(path);
    await device.waitFor((t) => t === OFF_FRAME, 5000);
    assert.equal((await Deno.lstat(path)).mode! & 0o777, 0o660);

    const set = await runCli(["set", "44", "--socket", path]);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /target set to 44 °C/);
    assert.match(set.stdout, /no controller .* failsafe turns the heat off after 10 s/);
    await device.waitFor((t) => t === buildOnFrame(44));

    for (const bad of ["61", "300", "-5"]) {
      const rejected = await runCli(["set", "--socket", path, "--", bad]);
      assert.equal(rejected.code, 2, bad);
      assert.match(rejected.stderr, /out of range: use 0 \(off\) to 60 °C/);
    }

    const json = await runCli(["status", "--json", "--socket", path]);
    assert.equal(json.code, 0);
    const status = JSON.parse(json.stdout);
    assert.equal(status.target, 44);
    assert.equal(status.connected, true);
    assert.equal(status.temperature, 25);

    const table = await runCli(["status", "--socket", path]);
    assert.match(table.stdout, /device link\s+connected/);
    assert.match(table.stdout, /target\s+44 °C/);

    const from = device.received.length;
    const off = await runCli(["off", "--socket", path]);
    assert.equal(off.code, 0);
    await device.waitFor((t) => t === OFF_FRAME, 2000, from);

    assert.equal((await runCli(["set", "40", "--socket", path])).code, 0);
    const beforeStop = device.received.length;
    const exit = await bridge.stop("SIGTERM");
    assert.equal(exit.code, 0, bridge.stderr);
    await device.waitFor((t) => t === OFF_FRAME, 2000, beforeStop);
    await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
    assert.match(bridge.stderr, /INFO heater off sent before exit/);
    for (const secret of FAKE_SECRETS) assert.ok(!bridge.stderr.includes(secret));
  } finally {
    await bridge.stop("SIGKILL");
    await device.close();
    await cleanup();
  }
});

Deno.test("SIGINT also turns the heater off and exits 0", async () => {
  const device = new FakeDevice();
  const { path, cleanup } = await tempSocketPath();
  const bridge = new MainProcess(["run", "--host", device.address, "--socket", path]);
  try {
    await waitForSocket(path);
    assert.equal((await runCli(["set", "35", "--socket", path])).code, 0);
    await device.waitFor((t) => t === buildOnFrame(35));
    const from = device.received.length;
    assert.equal((await bridge.stop("SIGINT")).code, 0);
    await device.waitFor((t) => t === OFF_FRAME, 2000, from);
  } finally {
    await device.close();
    await cleanup();
  }
});

Deno.test("a second bridge on a live socket refuses; a killed bridge's socket is replaced", async () => {
  const device = new FakeDevice();
  const { path, cleanup } = await tempSocketPath();
  const first = new MainProcess(["run", "--host", device.address, "--socket", path]);
  try {
    await waitForSocket(path);
    const second = await runCli(["run", "--host", device.address, "--socket", path]);
    assert.equal(second.code, 1);
    assert.match(second.stderr, /another bridge is already running on .*stop it first/);
    assert.equal((await runCli(["status", "--socket", path])).code, 0);

    await first.stop("SIGKILL");
    assert.ok((await Deno.lstat(path)).isSocket, "a killed bridge leaves its socket file");
    const third = new MainProcess(["run", "--host", device.address, "--socket", path]);
    await third.waitFor(/replacing stale socket/);
    await waitForSocket(path);
    assert.equal((await runCli(["status", "--socket", path])).code, 0);
    assert.equal((await third.stop()).code, 0);
  } finally {
    await first.stop("SIGKILL");
    await device.close();
    await cleanup();
  }
});

Deno.test("a socket outside the permitted directories is refused with a product message", async () => {
  // /var/tmp is outside /tmp, /run and /var/run wherever the repository is cloned.
  const dir = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "pb-denied-" });
  try {
    for (const command of [["run", "--host", "127.0.0.1:9"], ["status"], ["set", "40"]]) {
      const result = await runCli([...command, "--socket", `${dir}/x.sock`]);
      assert.equal(result.code, 2, command.join(" "));
      assert.match(
        result.stderr,
        /--socket '.*x\.sock' is outside the directories the bridge may use: put it under \/tmp, \/run, \/var\/run/,
      );
      assert.doesNotMatch(result.stderr, /allow-read|Requires read access/);
    }
    assert.deepEqual([...Deno.readDirSync(dir)], [], "nothing created there");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("run --help documents --readback-interval and a bad value is a usage error", async () => {
  const help = await runCli(["run", "--help"]);
  assert.match(help.stdout, /--readback-interval S/);
  const { path, cleanup } = await tempSocketPath();
  const bad = await runCli(["run", "--host", "h", "--socket", path, "--readback-interval", "0.2"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--readback-interval must be 0 \(off\) or a number from 1 to 3600/);
  await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
  await cleanup();
});

Deno.test("status table: every reading with its age, device target vs the bridge's, mode in words", () => {
  const now = Date.parse("2026-01-01T12:10:00Z");
  const base = buildStatus(initialState(), now, {
    url: "ws://192.168.1.50:80/ws",
    startedIso: "2026-01-01T12:00:00.000Z",
    connectedIso: null,
    logWriteFailures: 0,
  });
  const status = {
    ...base,
    connected: true,
    since: { started: "2026-01-01T12:00:00.000Z", connected: "2026-01-01T12:05:00.000Z" },
    temperature: 38,
    temperature_age: 0.4,
    target: 45,
    device: { work_on: true, work_mode: 2, set_temp: 45, firmware: "V1.0.3", reported_age: 12.5 },
    failsafe: { ...base.failsafe, controller: true, controller_age: 0.8, remaining: 9.2 },
  };
  const table = formatStatus(status, now);
  assert.match(
    table,
    /^device link +connected \(ws:\/\/192\.168\.1\.50:80\/ws\) since 12:05:00 UTC \(5 min\)$/m,
  );
  // A time the bridge would never send (another program on the socket) is shown as it came.
  for (const odd of ["+010000-01-01T00:00:00.000Z", "yesterday"]) {
    const shown = formatStatus({ ...status, since: { started: odd, connected: null } }, now);
    assert.ok(shown.includes(`up since ${odd}`), shown);
  }
  assert.match(table, /^temperature +38 °C \(0\.4 s ago\)$/m);
  assert.match(table, /^target +45 °C$/m);
  assert.match(table, /^device target +45 °C, heater on \(reported 12\.5 s ago\)$/m);
  assert.match(
    table,
    /^mode +always-on \(heats to the device target\), work_mode 2, firmware V1\.0\.3$/m,
  );
  assert.match(table, /^controller +ready \(heartbeat 0\.8 s ago\)$/m);
  assert.match(table, /^failsafe +armed: heat off in 9\.2 s unless a ready heartbeat arrives$/m);
  assert.match(table, /^bridge +.*, up since 12:00:00 UTC \(10 min\)$/m);

  const differs = formatStatus({
    ...status,
    device: { ...status.device, work_mode: 1, set_temp: 30 },
    failsafe: {
      ...status.failsafe,
      tripped: true,
      reason: "no heartbeat for 10 s",
      remaining: null,
    },
  }, now);
  assert.match(
    differs,
    /^device target +30 °C, heater on .*; not the bridge's target yet: .* read-back \(every 60 s\)/m,
  );
  assert.match(differs, /^mode +auto \(/m);
  assert.match(differs, /^failsafe +TRIPPED: no heartbeat for 10 s$/m);

  const idle = formatStatus(base, now);
  assert.match(idle, /^device link +DOWN/m);
  assert.match(idle, /^device target +nothing reported yet$/m);
  assert.match(idle, /^mode +unknown \(nothing reported yet\)$/m);
  assert.match(idle, /^failsafe +idle \(heater off\)$/m);
});
