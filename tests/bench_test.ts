/**
 * The benchmark's runner and shared parts (tests/bench/), and a quick run of
 * two sections end to end, so that `deno task bench` keeps working. Numbers
 * are not asserted: only which targets, rows and results a run produces.
 */

import assert from "node:assert/strict";
import { parseBenchArgs, runBench, summaryLine } from "./bench/bench.ts";
import { benchConfig, type Measure } from "./bench/context.ts";
import {
  handledFrom,
  isDesiredStateFrame,
  TEMPERATURE_WRAP,
  temperatureOf,
} from "./bench/frames.ts";
import { formatTable, Report } from "./bench/report.ts";
import { stateAges, trailingDelivery } from "./bench/flood.ts";
import { measureColdCache } from "./bench/cold_cache.ts";

const BENCH = new URL("./bench/bench.ts", import.meta.url).pathname;

Deno.test("bench frames: the last frame handled is read back from its temperature, across the wrap", () => {
  for (const sent of [1, 7, TEMPERATURE_WRAP, TEMPERATURE_WRAP + 5, 3 * TEMPERATURE_WRAP + 11]) {
    for (const handled of [sent, Math.max(1, sent - 3)]) {
      assert.equal(handledFrom(temperatureOf(handled - 1), sent), handled);
    }
  }
  assert.equal(handledFrom(null, 10), null);
  assert.equal(handledFrom(19.5, 10), null);
  assert.equal(handledFrom(20, 0), null);
  assert.ok(temperatureOf(TEMPERATURE_WRAP - 1) < 60);
  assert.ok(isDesiredStateFrame({ settings: { work_on: true, set_temp: 40 } }, 40));
  assert.ok(!isDesiredStateFrame({ settings: { work_on: true, set_temp: 41 } }, 40));
  assert.ok(isDesiredStateFrame({ settings: { work_on: false } }, 0));
  assert.ok(!isDesiredStateFrame({ warehouse_temper: 30 }, 0));
});

Deno.test("bench flood: a notification's age is from its frame's batch; the one after the drain is apart", () => {
  // Frames 0–7 in batches of 4 sent at 1000 and 1010 (wall clock, ms); every frame handled at 1030.
  const batchSentAt = [1000, 1010];
  const deliveries: [number, number | null][] = [
    [990, temperatureOf(0)], // before the flood: left out
    [1005, temperatureOf(2)], // frame 2 (batch 0): 5 ms old
    [1025, temperatureOf(6)], // frame 6 (batch 1): 15 ms old
    [1110, temperatureOf(7)], // the last frame, after the drain: apart
  ];
  const ages = stateAges(deliveries, batchSentAt, 4, 8, 1030);
  assert.deepEqual([ages.n, ages.p50, ages.max], [2, 5, 15]);
  assert.deepEqual(trailingDelivery(deliveries, batchSentAt, 4, 8, 1030), {
    age_ms: 100,
    after_drain_ms: 80,
  });
  // The last state delivered before the drain was seen is counted with the rest.
  assert.equal(trailingDelivery(deliveries.slice(0, 3), batchSentAt, 4, 8, 1030), null);
  assert.equal(stateAges(deliveries, batchSentAt, 4, 8, 1200).max, 100);
});

Deno.test("bench cold cache: medians of the work back to back and after each idle gap", async () => {
  const startedAt = performance.now();
  const c = await measureColdCache(5, 20, 50);
  // Five gaps of 20 ms were slept, each before one timed run.
  assert.ok(performance.now() - startedAt >= 5 * 20, "it slept before each cold run");
  assert.equal(c.gap_ms, 20);
  assert.ok(c.warm_us > 0 && c.cold_us > 0, JSON.stringify(c));
  assert.ok(Math.abs(c.ratio - c.cold_us / c.warm_us) <= 0.02 * c.ratio + 0.01, JSON.stringify(c));
});

Deno.test("bench options: --only must name sections; --quick counts ignore the environment", () => {
  assert.deepEqual(parseBenchArgs(["--only=command, klipper", "--quick"]), {
    only: ["command", "klipper"],
    quick: true,
    out: undefined,
  });
  assert.equal(parseBenchArgs([]).only, undefined);
  assert.throws(
    () => parseBenchArgs(["--only=command,latency"]),
    /^Error: unknown section 'latency'; sections: command, telemetry, reconnect, failsafe, flood, footprint, instructions, klipper, aarch64, memory, logs$/,
  );
  const env = (values: Record<string, string>) => (name: string) => values[name];
  assert.equal(benchConfig(false, env({})).commands, 1000);
  assert.equal(benchConfig(false, env({ PB_BENCH_COMMANDS: "250" })).commands, 250);
  assert.equal(benchConfig(true, env({ PB_BENCH_COMMANDS: "-1" })).commands, 100);
  assert.throws(
    () => benchConfig(false, env({ PB_BENCH_FLOOD_S: "soon" })),
    /PB_BENCH_FLOOD_S must be a positive number, got 'soon'/,
  );
});

Deno.test("bench report: targets are met at or below their limit and rounded for results.json", () => {
  const report = new Report();
  report.check("1 a", "x", "1 ms", { name: "x_ms", value: 5, limit: 5, unit: "ms", text: "≤ 5" });
  report.check("1 a", "y", "6 ms", {
    name: "y_ms",
    value: 5.00049,
    limit: 5,
    unit: "ms",
    text: "≤ 5",
  });
  report.row("2 b", "z", "plain");
  assert.deepEqual(report.checks, [
    { name: "x_ms", value: 5, limit: 5, unit: "ms", met: true },
    { name: "y_ms", value: 5, limit: 5, unit: "ms", met: false },
  ]);
  assert.deepEqual(report.missed(), ["y_ms"]);
  const lines = formatTable(report.rows, {
    cpu_model: "CPU",
    cores: 2,
    kernel: "6",
    deno: "2",
    date: "today",
  });
  assert.equal(lines[0], "panda-breath benchmarks — CPU, 2 cores, Linux 6, Deno 2, today");
  assert.deepEqual(lines.slice(1).map((l) => l.split(/ {2,}/)), [
    ["section", "metric", "value", "target", "result"],
    ["-------", "------", "-----", "------", "------"],
    ["1 a", "x", "1 ms", "≤ 5", "met"],
    ["", "y", "6 ms", "≤ 5", "MISSED"],
    ["2 b", "z", "plain"],
  ]);
});

Deno.test("bench runner: runs the selected measures in order; a failing one becomes an error row", async () => {
  const ran: string[] = [];
  const progress: string[] = [];
  const measure = (section: string, fail = false): Measure => ({
    section,
    title: `n ${section}`,
    uses: "own",
    run: (ctx) => {
      ran.push(section);
      if (fail) return Promise.reject(new Error(`${section} broke\nsecond line`));
      ctx.report.result(section, { quick: ctx.config.commands });
      ctx.report.row(`n ${section}`, "m", "v");
      return Promise.resolve();
    },
  });
  const measures = [measure("a"), measure("b", true), measure("c")];
  const report = await runBench(
    { only: ["c", "b"], quick: true },
    benchConfig(true, () => undefined),
    measures,
    (line) => progress.push(line),
  );
  assert.deepEqual(ran, ["b", "c"]);
  assert.deepEqual(report.config.sections, ["c", "b"]);
  assert.equal(report.config.quick, true);
  assert.deepEqual(report.results, {
    "n b": { error: "b broke\nsecond line" },
    c: { quick: 100 },
  });
  assert.deepEqual(report.table, [
    { section: "n b", metric: "error", value: "FAILED: b broke" },
    { section: "n c", metric: "m", value: "v" },
  ]);
  assert.match(progress.at(-1)!, /^n b FAILED: Error: b broke\nsecond line\n {4}at /);
  assert.match(summaryLine(report), /^0 of 0 targets met; bench took [\d.]+ s$/);
});

Deno.test("deno task bench --quick --only=command,klipper: its targets, rows and results", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pb-bench-test-" });
  try {
    const out = `${dir}/results.json`;
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", BENCH, "--quick", "--only=command,klipper", `--out=${out}`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(run.stdout);
    assert.equal(run.code, 0, stdout + new TextDecoder().decode(run.stderr));
    assert.match(stdout, /^\d of 4 targets met.*; bench took [\d.]+ s$/m);
    assert.match(stdout, /^1 command +set_target → device has frame \(n=100\) +p50 .* p99 ≤ 5 ms/m);
    assert.match(stdout, /^6 klipper extra +status notification \(telemetry\), Python /m);
    const report = JSON.parse(await Deno.readTextFile(out));
    assert.deepEqual(Object.keys(report), ["machine", "config", "targets", "results", "table"]);
    assert.deepEqual(report.targets.map((t: { name: string }) => t.name), [
      "command_p99_ms",
      "extra_us_per_telemetry",
      "extra_us_per_target_request",
      "extra_us_per_target_reply",
    ]);
    assert.deepEqual(Object.keys(report.results), ["command", "klipper"]);
    assert.equal(report.results.command.changes, 100);
    // The status the Klipper measure prices came from the bridge the command measure ran.
    assert.equal(report.results.klipper.status_source, "captured from the real bridge");
    assert.deepEqual(report.config.sections, ["command", "klipper"]);
    assert.equal(report.table.length, 8);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task bench --only=nothing: exits 2 naming the sections", async () => {
  const run = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", BENCH, "--only=nothing"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(run.code, 2);
  assert.match(
    new TextDecoder().decode(run.stderr),
    /^bench: unknown section 'nothing'; sections: command, telemetry, reconnect, failsafe, flood, footprint, instructions, klipper, aarch64, memory, logs$/m,
  );
});
