/**
 * The test runner on a machine without the optional tools: run as a
 * subprocess with a PATH that lacks them, it counts the skipped tests,
 * prints each reason, and always ends with the summary line.
 */
import assert from "node:assert/strict";
import { runToEnd } from "./process.ts";
import { countUnittest, formatSummary, skipReasons } from "./run_all.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const RUN_ALL = new URL("./run_all.ts", import.meta.url).href;
const TOOLS = new URL("./tools.ts", import.meta.url).href;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  lastLine: string;
}

/** Runs `args` with Deno under exactly `env` (no inherited PATH), in the repository root. */
async function deno(args: string[], env: Record<string, string>): Promise<Run> {
  const out = await runToEnd(Deno.execPath(), args, {
    cwd: ROOT,
    clearEnv: true,
    env: { HOME: Deno.env.get("HOME") ?? "/tmp", NO_COLOR: "1", ...env },
  });
  const lines = out.stdout.trimEnd().split("\n");
  return { ...out, lastLine: lines[lines.length - 1] };
}

/** DENO_DIR of this run, so the subprocess reuses the type-check cache. */
function denoDirEnv(): Record<string, string> {
  const dir = Deno.env.get("DENO_DIR");
  return dir ? { DENO_DIR: dir } : {};
}

/** A temp dir with a tiny suite: one test that needs shellcheck, one that needs nothing. */
async function tinySuite(): Promise<{ dir: string; runner: string; fixture: string }> {
  const dir = await Deno.makeTempDir({ prefix: "pb-runner-" });
  const fixture = `${dir}/needs_shellcheck_test.ts`;
  await Deno.writeTextFile(
    fixture,
    `import { skipUnless, which } from "${TOOLS}";\n` +
      `Deno.test("needs shellcheck", { ignore: skipUnless("shellcheck") }, () => {\n` +
      `  if (!which("shellcheck")) throw new Error("ran without shellcheck");\n` +
      `});\n` +
      `Deno.test("needs nothing", () => {});\n`,
  );
  const runner = `${dir}/runner.ts`;
  await Deno.writeTextFile(
    runner,
    `import { denoSuite, main } from "${RUN_ALL}";\n` +
      `Deno.exit(await main(Deno.args, { tiny: denoSuite("tiny", [${
        JSON.stringify(fixture)
      }]) }));\n`,
  );
  return { dir, runner, fixture };
}

Deno.test("runner: without shellcheck the test is skipped, counted and its reason shown", async () => {
  const { dir, runner, fixture } = await tinySuite();
  try {
    const empty = `${dir}/empty-bin`;
    await Deno.mkdir(empty);
    const run = await deno(["run", "--allow-all", runner, "--suite", "tiny"], {
      PATH: empty,
      ...denoDirEnv(),
    });
    assert.equal(run.code, 0, run.stdout + run.stderr);
    assert.equal(run.lastLine, "1 passed, 0 failed, 1 skipped");
    assert.match(run.stdout, /^ {2}tiny: 1 passed, 0 failed, 1 skipped$/m);
    assert.match(
      run.stdout,
      new RegExp(
        `^ {4}skipped: ${fixture}:2: shellcheck not found on PATH \\(Debian package: shellcheck\\)$`,
        "m",
      ),
    );

    // With a shellcheck on PATH the same test runs (and a stand-in is enough for it).
    const bin = `${dir}/bin`;
    await Deno.mkdir(bin);
    await Deno.writeTextFile(`${bin}/shellcheck`, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    const withTool = await deno(["run", "--allow-all", runner, "--suite", "tiny"], {
      PATH: bin,
      ...denoDirEnv(),
    });
    assert.equal(withTool.code, 0, withTool.stdout + withTool.stderr);
    assert.equal(withTool.lastLine, "2 passed, 0 failed, 0 skipped");
    assert.doesNotMatch(withTool.stdout, /skipped:/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runner: the arm64 suite without qemu-aarch64 is one skip with its reason", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pb-runner-arm64-" });
  try {
    // An executable stands in for the arm64 Deno: the qemu check comes next and must skip.
    const fakeDeno = `${dir}/deno-arm64`;
    await Deno.writeTextFile(fakeDeno, "#!/bin/sh\nexit 1\n", { mode: 0o755 });
    const run = await deno(["run", "--allow-all", "tests/run_all.ts", "--suite", "arm64"], {
      PATH: dir,
      DENO_ARM64: fakeDeno,
      ...denoDirEnv(),
    });
    assert.equal(run.code, 0, run.stdout + run.stderr);
    assert.equal(run.lastLine, "0 passed, 0 failed, 1 skipped");
    assert.match(
      run.stdout,
      /^ {4}skipped: tests\/arm64\/smoke_test\.ts:\d+: qemu-aarch64 not found on PATH \(Debian package: qemu-user\)$/m,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runner: a missing python3 is one failure with a clear reason, and the summary still comes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pb-runner-py-" });
  try {
    const run = await deno(["run", "--allow-all", "tests/run_all.ts", "--suite", "python"], {
      PATH: dir,
      ...denoDirEnv(),
    });
    assert.equal(run.code, 1);
    assert.equal(run.lastLine, "0 passed, 1 failed, 0 skipped");
    assert.match(
      run.stdout,
      /^ {4}failed: python3 not found on PATH \(Debian package: python3\): .*install python3 or set PYTHON=/m,
    );
    const bad = await deno(["run", "--allow-all", "tests/run_all.ts", "--suite", "python"], {
      PATH: dir,
      PYTHON: `${dir}/no-such-python`,
      ...denoDirEnv(),
    });
    assert.equal(bad.code, 1);
    assert.equal(bad.lastLine, "0 passed, 1 failed, 0 skipped");
    assert.match(bad.stdout, /failed: PYTHON=.*no-such-python is not an executable/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("skipReasons collects tools.ts lines and unittest skips, each reason once", () => {
  const output = [
    "------- pre-test output -------",
    "skip: tests/install_test.ts:81: busybox not found on PATH (Debian package: busybox)",
    "\x1b[0mskip: coloured\x1b[0m",
    "test_macro (tests.klipper.test_x.T.test_macro) ... skipped 'jinja2 is not installed'",
    "test_other (tests.klipper.test_x.T.test_other)",
    "Docstring line ... skipped 'jinja2 is not installed'",
    "needs shellcheck ... ignored (0ms)",
  ].join("\n");
  assert.deepEqual(skipReasons(output), [
    "tests/install_test.ts:81: busybox not found on PATH (Debian package: busybox)",
    "coloured",
    "jinja2 is not installed (2 tests)",
  ]);
});

Deno.test("the summary ends with the total line, after every suite's reasons", () => {
  const summary = formatSummary([
    { name: "deno", result: { passed: 3, failed: 0, skipped: 2, skips: ["a", "b"], problems: [] } },
    { name: "python", result: { passed: 0, failed: 1, skipped: 0, skips: [], problems: ["p"] } },
  ]);
  assert.equal(
    summary,
    [
      "=== summary",
      "  deno: 3 passed, 0 failed, 2 skipped",
      "    skipped: a",
      "    skipped: b",
      "  python: 0 passed, 1 failed, 0 skipped",
      "    failed: p",
      "3 passed, 1 failed, 2 skipped",
    ].join("\n"),
  );
  const unittest = "Ran 5 tests in 0.1s\n\nFAILED (failures=1, errors=1, skipped=1)\n";
  assert.deepEqual(countUnittest(unittest), { passed: 2, failed: 2, skipped: 1 });
});
