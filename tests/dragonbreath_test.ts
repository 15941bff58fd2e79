/**
 * A device running DragonBreath firmware (no /ws; `GET /api/v2/info` answers
 * `"project": "dragonbreath"`): `panda-breath run` as a real subprocess says
 * so once, `status` shows it and exits 1, and the bridge stops hammering the
 * device with connection attempts. The decision is the core's (tests/core_lease_test.ts,
 * "DragonBreath: ..."); this proves the shell's probe, status and CLI around it.
 */
import assert from "node:assert/strict";
import { startDragonBreathDevice } from "./fake_device.ts";
import { MainProcess, runCli, tempSocketPath, waitForSocket } from "./process.ts";
import { delay, until } from "./wait.ts";

Deno.test("DragonBreath firmware: one clear error in status and the log, no retry storm", async () => {
  const server = startDragonBreathDevice();
  const requests = server.requests;
  const { path, cleanup } = await tempSocketPath();
  const bridge = new MainProcess(["run", "--host", `127.0.0.1:${server.port}`, "--socket", path]);
  try {
    await waitForSocket(path, 15_000);
    let problem: string | null = null;
    await until(
      async () => {
        const result = await runCli(["status", "--json", "--socket", path]);
        problem = JSON.parse(result.stdout).firmware_problem;
        return problem !== null;
      },
      10_000,
      "status naming the firmware problem",
    );
    assert.match(problem!, /runs DragonBreath firmware 2\.1\.0/);
    // A 404 to the upgrade is an HTTP answer that is not an upgrade: probed at the first one.
    const attemptsAtDetection = requests.filter((p) => p === "/ws").length;
    assert.ok(attemptsAtDetection <= 3, `attempts before detection: ${attemptsAtDetection}`);

    const human = await runCli(["status", "--socket", path]);
    assert.equal(human.code, 1, "status exits 1 while the device cannot be driven");
    assert.match(human.stdout, /PROBLEM\s+the Panda Breath at .* runs DragonBreath firmware/);

    const set = await runCli(["set", "40", "--socket", path]);
    assert.equal(set.code, 1, "heat is refused while the device cannot be driven");
    assert.match(set.stderr, /panda-breath: unsupported_firmware: .*DragonBreath.*heat is refused/);

    const attemptsBefore = requests.filter((p) => p === "/ws").length;
    await delay(3000);
    const attemptsAfter = requests.filter((p) => p === "/ws").length;
    assert.ok(
      attemptsAfter - attemptsBefore <= 1,
      `connection attempts in 3 s after detection: ${attemptsAfter - attemptsBefore}`,
    );
    assert.equal(requests.filter((p) => p === "/api/v2/info").length, 1, "probed once");
  } finally {
    await bridge.stop("SIGTERM");
    await cleanup();
    await server.shutdown();
  }
  const logged = bridge.stderr.match(/runs DragonBreath firmware/g) ?? [];
  assert.equal(logged.length, 1, "the error is logged once");
});
