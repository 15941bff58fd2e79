import assert from "node:assert/strict";
import { Logger } from "../lib/log.ts";

Deno.test("hazard 1: a sink that throws is counted and never reaches the caller", () => {
  const logger = new Logger("debug", () => {
    throw new Error("No space left on device (os error 28)");
  });
  for (let i = 0; i < 5; i++) logger.error("device fault", { fault: "ptc_sensor_open" });
  logger.limited("k", 10_000, "warn", "limited line");
  assert.equal(logger.writeFailures, 6);
});

Deno.test("lines below the level are not written and are no failures", () => {
  const lines: string[] = [];
  const logger = new Logger("warn", (line) => lines.push(line));
  logger.info("quiet");
  logger.debug("quieter");
  logger.warn("loud", { n: 1, text: "two words" });
  assert.equal(lines.length, 1);
  assert.match(lines[0], /^\S+Z WARN loud n=1 text="two words"$/);
  assert.equal(logger.writeFailures, 0);
});

Deno.test("fields that cannot be formatted are a counted failure, not an exception", () => {
  const lines: string[] = [];
  const logger = new Logger("info", (line) => lines.push(line));
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  logger.info("odd", { circular, big: 10n });
  assert.equal(lines.length, 0);
  assert.equal(logger.writeFailures, 1);
  logger.info("fine");
  assert.equal(lines.length, 1);
});

Deno.test("the default sink writes to stderr and counts ENOSPC on /dev/full", async () => {
  const script = `
    import { Logger } from ${JSON.stringify(new URL("../lib/log.ts", import.meta.url).href)};
    const logger = new Logger("info");
    for (let i = 0; i < 3; i++) logger.info("line", { i });
    console.log(JSON.stringify({ failures: logger.writeFailures }));
  `;
  const run = (stderr: string) =>
    new Deno.Command("sh", {
      args: ["-c", `exec "$0" eval "$1" 2>${stderr}`, Deno.execPath(), script],
      stdout: "piped",
      stderr: "null",
    }).output();
  const full = await run("/dev/full");
  assert.equal(full.code, 0);
  assert.deepEqual(JSON.parse(new TextDecoder().decode(full.stdout)), { failures: 3 });
  const fine = await run("/dev/null");
  assert.deepEqual(JSON.parse(new TextDecoder().decode(fine.stdout)), { failures: 0 });
});
