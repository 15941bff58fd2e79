/**
 * `deno task test`: runs every suite — Deno tests, the Klipper extra's
 * Python tests, the static checks — and ends with one line
 * `N passed, N failed, N skipped` summing them all.
 *
 * Tests needing an optional tool (shellcheck, busybox, qemu-aarch64, the
 * arm64 Deno) skip with a one-line reason (tests/tools.ts); the summary lists
 * every reason and counts those tests as skipped. A suite that cannot run at
 * all (python3 missing, a crash of the runner itself) counts as one failure
 * with its reason: the summary line is always printed.
 *
 * Usage: deno task test [--suite NAME]... (names: check, deno, python, faults, arm64)
 */
import { parseArgs } from "node:util";
import { SKIP_PREFIX, TOOL_HINTS, which } from "./tools.ts";

/** Test counts of one suite or of all. */
export interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

/** What one suite reports: its counts and one line per skip or failure reason. */
export interface SuiteResult extends Counts {
  /** Why tests were skipped, one line each (e.g. "shellcheck not found on PATH ..."). */
  skips: string[];
  /** Why the suite failed as a whole, when it did not merely have failing tests. */
  problems: string[];
}

/** A named suite of tests. */
export interface Suite {
  name: string;
  run(): Promise<SuiteResult>;
}

const decoder = new TextDecoder();

async function runCommand(
  command: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; output: string }> {
  const child = new Deno.Command(command, { args, env, stdout: "piped", stderr: "piped" }).spawn();
  let output = "";
  const pump = async (stream: ReadableStream<Uint8Array>, sink: typeof Deno.stdout) => {
    for await (const chunk of stream) {
      output += decoder.decode(chunk, { stream: true });
      await sink.write(chunk);
    }
  };
  await Promise.all([pump(child.stdout, Deno.stdout), pump(child.stderr, Deno.stderr)]);
  return { code: (await child.status).code, output };
}

/** Counts from a JUnit XML report written by `deno test --junit-path`. */
export function countJunit(xml: string): Counts {
  const cases = xml.match(/<testcase\b[^>]*?(\/>|>[\s\S]*?<\/testcase>)/g) ?? [];
  let failed = 0;
  let skipped = 0;
  for (const testCase of cases) {
    if (/<failure\b|<error\b/.test(testCase)) failed++;
    else if (/<skipped\b/.test(testCase)) skipped++;
  }
  return { passed: cases.length - failed - skipped, failed, skipped };
}

/** Counts from the end of `python3 -m unittest -v` output. */
export function countUnittest(output: string): Counts | null {
  const ran = /^Ran (\d+) tests? in/m.exec(output);
  if (!ran) return null;
  const total = Number(ran[1]);
  const number = (key: string) => Number(new RegExp(`${key}=(\\d+)`).exec(output)?.[1] ?? 0);
  const failed = number("failures") + number("errors");
  const skipped = number("skipped");
  return { passed: total - failed - skipped, failed, skipped };
}

const ANSI_ESCAPE = new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g");

/**
 * Skip reasons in a suite's output: `skip: ...` lines printed through
 * tests/tools.ts and unittest's `... skipped 'reason'`, each distinct reason
 * once (with a count when it skipped several tests).
 */
export function skipReasons(output: string): string[] {
  const seen = new Map<string, number>();
  for (const raw of output.split("\n")) {
    // deno test may colour its own text, never ours; strip escapes to be safe.
    const line = raw.replace(ANSI_ESCAPE, "").trimEnd();
    let reason: string | undefined;
    if (line.startsWith(SKIP_PREFIX)) reason = line.slice(SKIP_PREFIX.length);
    else reason = /\.\.\. skipped '(.*)'$/.exec(line)?.[1];
    if (reason) seen.set(reason, (seen.get(reason) ?? 0) + 1);
  }
  return [...seen].map(([reason, n]) => (n > 1 ? `${reason} (${n} tests)` : reason));
}

function result(counts: Counts, output = "", problems: string[] = []): SuiteResult {
  return { ...counts, skips: skipReasons(output), problems };
}

/** A suite of `deno test --allow-all` over `paths`. */
export function denoSuite(name: string, paths: string[]): Suite {
  return {
    name,
    async run() {
      const junit = await Deno.makeTempFile({ suffix: ".xml" });
      try {
        const { code, output } = await runCommand(Deno.execPath(), [
          "test",
          "--allow-all",
          `--junit-path=${junit}`,
          ...paths,
        ]);
        const counts = countJunit(await Deno.readTextFile(junit).catch(() => ""));
        const problems: string[] = [];
        if (code !== 0 && counts.failed === 0) {
          counts.failed = 1;
          problems.push(`deno test exited with status ${code} (see its output above)`);
        }
        return result(counts, output, problems);
      } finally {
        await Deno.remove(junit).catch(() => {});
      }
    },
  };
}

/**
 * The Python interpreter for the extra's tests: $PYTHON, else python3 on
 * PATH; or why there is none.
 */
export function findPython(): { python: string } | { problem: string } {
  const configured = Deno.env.get("PYTHON");
  if (configured) {
    const found = which(configured);
    return found
      ? { python: found }
      : { problem: `PYTHON=${configured} is not an executable; unset it or point it at python3` };
  }
  const found = which("python3");
  if (found) return { python: found };
  return {
    problem: `python3 not found on PATH (${TOOL_HINTS.python3}): the Klipper extra runs in ` +
      `Klipper's Python 3 and its tests need it; install python3 or set PYTHON=/path/to/python3`,
  };
}

const pythonSuite: Suite = {
  name: "python",
  async run() {
    const found = findPython();
    if ("problem" in found) {
      console.log(found.problem);
      return result({ passed: 0, failed: 1, skipped: 0 }, "", [found.problem]);
    }
    const { code, output } = await runCommand(found.python, [
      "-m",
      "unittest",
      "discover",
      "-v",
      "-s",
      "tests/klipper",
      "-t",
      ".",
    ], { DENO: Deno.execPath() });
    const parsed = countUnittest(output);
    const counts = parsed ?? { passed: 0, failed: 1, skipped: 0 };
    const problems: string[] = [];
    if (parsed === null) problems.push(`${found.python} -m unittest printed no result line`);
    else if (code !== 0 && counts.failed === 0) {
      counts.failed = 1;
      problems.push(`${found.python} -m unittest exited with status ${code}`);
    }
    return result(counts, output, problems);
  },
};

const checkSuite: Suite = {
  name: "check",
  async run() {
    const checks: string[][] = [
      ["fmt", "--check"],
      ["lint"],
      ["check", "main.ts", "lib/", "tests/"],
      ["doc", "--lint", "main.ts", "lib/"],
    ];
    const counts: Counts = { passed: 0, failed: 0, skipped: 0 };
    const problems: string[] = [];
    for (const args of checks) {
      const { code } = await runCommand(Deno.execPath(), args);
      counts[code === 0 ? "passed" : "failed"]++;
      if (code !== 0) problems.push(`deno ${args.join(" ")} failed`);
    }
    return result(counts, "", problems);
  },
};

/** Every suite `deno task test` runs, in order. */
export const SUITES: Record<string, Suite> = {
  check: checkSuite,
  deno: denoSuite("deno", ["--ignore=tests/faults,tests/bench,tests/arm64", "tests/"]),
  python: pythonSuite,
  faults: denoSuite("faults", ["tests/faults/"]),
  arm64: denoSuite("arm64", ["tests/arm64/"]),
};

/** The summary printed at the end: per-suite lines, reasons, and the total as last line. */
export function formatSummary(results: { name: string; result: SuiteResult }[]): string {
  const total: Counts = { passed: 0, failed: 0, skipped: 0 };
  const lines = ["=== summary"];
  for (const { name, result } of results) {
    lines.push(
      `  ${name}: ${result.passed} passed, ${result.failed} failed, ${result.skipped} skipped`,
    );
    for (const skip of result.skips) lines.push(`    skipped: ${skip}`);
    for (const problem of result.problems) lines.push(`    failed: ${problem}`);
    total.passed += result.passed;
    total.failed += result.failed;
    total.skipped += result.skipped;
  }
  lines.push(`${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped`);
  return lines.join("\n");
}

/** Runs the named suites of `suites`; returns the exit status (0 when nothing failed). */
export async function main(
  args: string[],
  suites: Record<string, Suite> = SUITES,
): Promise<number> {
  const { values } = parseArgs({ args, options: { suite: { type: "string", multiple: true } } });
  const names = values.suite ?? Object.keys(suites);
  const unknown = names.find((name) => !(name in suites));
  if (unknown !== undefined) {
    console.error(`unknown suite '${unknown}'; suites: ${Object.keys(suites).join(", ")}`);
    return 2;
  }
  const results: { name: string; result: SuiteResult }[] = [];
  for (const name of names) {
    console.log(`\n=== suite: ${name}`);
    let outcome: SuiteResult;
    try {
      outcome = await suites[name].run();
    } catch (error) {
      const message = `the runner could not run it: ${
        error instanceof Error ? error.message : error
      }`;
      console.error(message);
      outcome = { passed: 0, failed: 1, skipped: 0, skips: [], problems: [message] };
    }
    results.push({ name, result: outcome });
  }
  console.log(`\n${formatSummary(results)}`);
  return results.some(({ result }) => result.failed > 0) ? 1 : 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
