import assert from "node:assert/strict";
import {
  checkSocketPath,
  deviceUrl,
  parseNumber,
  parseReadbackInterval,
  parseSocketMode,
  parseWholeNumber,
  SOCKET_DIRECTORIES,
  UsageError,
} from "../lib/options.ts";
import { permissionFlags, permissionSetFromConfig, V8_FLAGS_ARG } from "../lib/permissions.ts";
import { compileFlags } from "../lib/compile.ts";
import { mainArgs } from "./process.ts";
import { VERSION } from "../lib/version.ts";

Deno.test("device addresses become the device's WebSocket URL", () => {
  assert.equal(deviceUrl("PandaBreath.local"), "ws://pandabreath.local:80/ws");
  assert.equal(deviceUrl("192.168.1.50"), "ws://192.168.1.50:80/ws");
  assert.equal(deviceUrl("192.168.1.50:8080"), "ws://192.168.1.50:8080/ws");
  assert.equal(deviceUrl("[fe80::1]:81"), "ws://[fe80::1]:81/ws");
  assert.equal(deviceUrl("ws://10.0.0.2/ws"), "ws://10.0.0.2:80/ws");
  assert.equal(deviceUrl(" host "), "ws://host:80/ws");
});

Deno.test("bad device addresses are usage errors that say what to write", () => {
  for (const bad of ["", "   ", "host:99999", "wss://host", "user:pw@host", "host/other", "a b"]) {
    assert.throws(() => deviceUrl(bad), UsageError, bad);
  }
  assert.throws(() => deviceUrl("wss://host"), /plain ws:\/\//);
});

Deno.test("numbers are range-checked with the option named", () => {
  assert.equal(parseNumber("failsafe-timeout", "2.5", 1, 600, "seconds"), 2.5);
  for (const bad of ["", "abc", "0.5", "601", "NaN", "Infinity", "1e9"]) {
    assert.throws(
      () => parseNumber("failsafe-timeout", bad, 1, 600, "seconds"),
      /--failsafe-timeout must be a number from 1 to 600 seconds/,
    );
  }
  assert.equal(parseWholeNumber("max-target", "60", 1, 255), 60);
  for (const bad of ["60.5", "0", "256", "-1", "x", ""]) {
    assert.throws(() => parseWholeNumber("max-target", bad, 1, 255), /--max-target/);
  }
});

Deno.test("socket paths must be absolute and fit a Unix socket", () => {
  assert.equal(checkSocketPath("/tmp/panda_bridge.sock"), "/tmp/panda_bridge.sock");
  assert.throws(() => checkSocketPath("panda.sock"), /absolute/);
  assert.throws(() => checkSocketPath("/tmp/"), /name a file/);
  assert.throws(() => checkSocketPath("/" + "x".repeat(107)), /longer than 107 bytes/);
  assert.equal(checkSocketPath("/tmp/" + "x".repeat(102)).length, 107);
});

Deno.test("socket paths outside the bridge's directories are refused with a product message", () => {
  for (const ok of ["/run/panda-breath/bridge.sock", "/var/run/pb.sock", "/tmp/a/b.sock"]) {
    assert.equal(checkSocketPath(ok), ok);
  }
  for (const bad of ["/var/tmp/x.sock", "/etc/pb.sock", "/tmpx/a.sock", "/tmp/../etc/x.sock"]) {
    assert.throws(
      () => checkSocketPath(bad),
      (error: Error) =>
        error instanceof UsageError &&
        error.message.includes("outside the directories the bridge may use") &&
        error.message.includes("/tmp, /run, /var/run") &&
        !/allow-read|Requires/.test(error.message),
      bad,
    );
  }
  assert.throws(() => checkSocketPath("/tmp//x.sock"), UsageError);
});

Deno.test("the socket directories are exactly the bridge permission set's paths", async () => {
  const config = await Deno.readTextFile(new URL("../deno.json", import.meta.url));
  const set = permissionSetFromConfig(config);
  assert.deepEqual(set.read, [...SOCKET_DIRECTORIES]);
  assert.deepEqual(set.write, [...SOCKET_DIRECTORIES]);
});

Deno.test("--readback-interval is 0 (off) or 1 to 3600 seconds", () => {
  assert.equal(parseReadbackInterval("0"), 0);
  assert.equal(parseReadbackInterval("60"), 60);
  assert.equal(parseReadbackInterval("1.5"), 1.5);
  for (const bad of ["0.5", "-1", "3601", "abc", "", "0x10", "Infinity"]) {
    assert.throws(
      () => parseReadbackInterval(bad),
      /--readback-interval must be 0 \(off\) or a number from 1 to 3600 seconds/,
      bad,
    );
  }
});

Deno.test("socket modes are 0600 or 0660 only", () => {
  assert.equal(parseSocketMode("0600"), 0o600);
  assert.equal(parseSocketMode("660"), 0o660);
  for (const bad of ["0666", "0777", "rw", ""]) assert.throws(() => parseSocketMode(bad));
});

Deno.test("the bridge permission set grants network and socket directories only", async () => {
  const config = await Deno.readTextFile(new URL("../deno.json", import.meta.url));
  const set = permissionSetFromConfig(config);
  assert.deepEqual(Object.keys(set).sort(), ["net", "read", "write"]);
  assert.deepEqual(permissionFlags(set), [
    "--allow-net",
    "--allow-read=/tmp,/run,/var/run",
    "--allow-write=/tmp,/run,/var/run",
    "--no-prompt",
  ]);
  assert.throws(() => permissionFlags({ hrtime: true }), /unknown permission/);
  assert.throws(() => permissionSetFromConfig("{}"), /no "bridge" permission set/);
});

Deno.test("the bridge runs with its V8 flags from a checkout, in the tests and compiled", async () => {
  const text = await Deno.readTextFile(new URL("../deno.json", import.meta.url));
  const tasks = JSON.parse(text).tasks as Record<string, string>;
  for (const name of ["start", "demo", "simulate"]) {
    assert.ok(
      tasks[name].includes(` -P=bridge ${V8_FLAGS_ARG} main.ts `),
      `${name}: ${tasks[name]}`,
    );
  }
  assert.equal(V8_FLAGS_ARG, "--v8-flags=--max-opt=1");
  assert.equal(compileFlags(text).at(-1), V8_FLAGS_ARG);
  assert.ok(mainArgs(["run"]).includes(V8_FLAGS_ARG));
});

Deno.test("the version in deno.json is the one the binary reports", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  assert.equal(config.version, VERSION);
});
