import assert from "node:assert/strict";
import { Logger } from "../lib/log.ts";

Deno.test("hazard 1: a sink that throws is counted and never reaches the caller", () => {
  const logger = new Logger("debug", () => {
    throw new Error("No space left on device (os error 28)");
  });
  for (let i = 0; i < 5; i++) logger.error(`device fault ${i}`, { fault: "ptc_sensor_open" });
  logger.limited("k", 10_000, "warn", "limited line");
  assert.equal(logger.writeFailures, 6);
});

Deno.test("lines below the level are not written and are no failures", () => {
  const lines: string[] = [];
  const logger = new Logger("warn", (line) => lines.push(line));
  logger.info("quiet");
  logger.debug("quieter");
  const before = Date.now();
  logger.warn("loud", { n: 1, text: "two words" });
  assert.equal(lines.length, 1);
  const at = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) WARN loud n=1 text="two words"$/.exec(
    lines[0],
  );
  assert.ok(at, lines[0]);
  assert.ok(before <= Date.parse(at[1]) && Date.parse(at[1]) <= Date.now(), lines[0]);
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
    for (let i = 0; i < 3; i++) logger.info(\`line \${i}\`);
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

Deno.test("repeats within a minute are written once, then summed up with a count", () => {
  const lines: string[] = [];
  const logger = new Logger("info", (line) => lines.push(line));
  for (let i = 0; i < 58; i++) {
    logger.warn("device fault reported", { fault: "ptc_sensor_open", i });
  }
  logger.info("device connected");
  logger.warn("device fault reported", { fault: "ptc_sensor_open", i: 58 });
  assert.equal(lines.length, 2, "the first of each event only");
  logger.warn("device fault reported", { fault: "ptc_sensor_short", i: 59 });
  assert.equal(lines.length, 3, "another fault is another event: written at once");
  lines.pop();
  assert.match(lines[0], /WARN device fault reported fault=ptc_sensor_open i=0$/);
  logger.flush();
  assert.equal(lines.length, 3);
  assert.match(
    lines.find((l) => l.includes("more in")) ?? "",
    /WARN … 58 more in the last minute: device fault reported fault=ptc_sensor_open i=58$/,
  );
  logger.flush();
  assert.equal(lines.length, 3, "nothing more to sum up");
  logger.debug("reconnecting");
  logger.debug("reconnecting");
  assert.equal(lines.length, 3, "debug is below the level");
  const debug: string[] = [];
  const verbose = new Logger("debug", (line) => debug.push(line));
  for (let i = 0; i < 3; i++) verbose.debug("reconnecting to device", { in_ms: i });
  assert.equal(debug.length, 3, "debug lines are never held back");
});

Deno.test("a summary is written when its window ends, with nothing else logged", async () => {
  const lines: string[] = [];
  const logger = new Logger("info", (line) => lines.push(line), { repeatWindowMs: 300 });
  for (let i = 0; i < 10; i++) logger.warn("cannot reach device", { i });
  assert.equal(lines.length, 1);
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.equal(lines.length, 2);
  assert.match(lines[1], /WARN … 9 more in the last minute: cannot reach device i=9$/);
  logger.warn("cannot reach device", { i: 10 });
  assert.equal(lines.length, 2, "still repeating: counted in the next window");
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.match(lines[2], /… 1 more in the last minute: cannot reach device i=10$/);
  await new Promise((resolve) => setTimeout(resolve, 700));
  logger.warn("cannot reach device", { i: 11 });
  assert.equal(lines.length, 4, "a window without repeats ends it: written again");
});
