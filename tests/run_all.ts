/**
 * `deno task test`: runs every suite — Deno tests, the Klipper extra's
 * Python tests, the static checks — and ends with one line
 * `N passed, N failed, N skipped` summing them all.
 *
 * Usage: deno task test [--suite NAME]... (names: check, deno, python, faults, arm64)
 */
import { parseArgs } from "node:util";

interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

interface Suite {
  name: string;
  run(): Promise<Counts>;
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

function denoSuite(name: string, paths: string[]): Suite {
  return {
    name,
    async run() {
      const junit = await Deno.makeTempFile({ suffix: ".xml" });
      try {
        const { code } = await runCommand(Deno.execPath(), [
          "test",
          "--allow-all",
          `--junit-path=${junit}`,
          ...paths,
        ]);
        const counts = countJunit(await Deno.readTextFile(junit).catch(() => ""));
        if (code !== 0 && counts.failed === 0) counts.failed = 1;
        return counts;
      } finally {
        await Deno.remove(junit).catch(() => {});
      }
    },
  };
}

const pythonSuite: Suite = {
  name: "python",
  async run() {
    const python = Deno.env.get("PYTHON") ?? "python3";
    const { code, output } = await runCommand(python, [
      "-m",
      "unittest",
      "discover",
      "-v",
      "-s",
      "tests/klipper",
      "-t",
      ".",
    ], { DENO: Deno.execPath() });
    const counts = countUnittest(output) ?? { passed: 0, failed: 1, skipped: 0 };
    if (code !== 0 && counts.failed === 0) counts.failed = 1;
    return counts;
  },
};

const checkSuite: Suite = {
  name: "check",
  async run() {
    const checks: string[][] = [
      ["fmt", "--check"],
      ["lint"],
      ["check", "main.ts", "lib/", "tests/"],
    ];
    const counts: Counts = { passed: 0, failed: 0, skipped: 0 };
    for (const args of checks) {
      const { code } = await runCommand(Deno.execPath(), args);
      counts[code === 0 ? "passed" : "failed"]++;
    }
    return counts;
  },
};

const SUITES: Record<string, Suite> = {
  check: checkSuite,
  deno: denoSuite("deno", ["--ignore=tests/faults,tests/bench,tests/arm64", "tests/"]),
  python: pythonSuite,
  faults: denoSuite("faults", ["tests/faults/"]),
  arm64: denoSuite("arm64", ["tests/arm64/"]),
};

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { suite: { type: "string", multiple: true } },
  });
  const names = values.suite ?? Object.keys(SUITES);
  const total: Counts = { passed: 0, failed: 0, skipped: 0 };
  const lines: string[] = [];
  for (const name of names) {
    const suite = SUITES[name];
    if (!suite) {
      console.error(`unknown suite '${name}'; suites: ${Object.keys(SUITES).join(", ")}`);
      Deno.exit(2);
    }
    console.log(`\n=== suite: ${name}`);
    const counts = await suite.run();
    lines.push(
      `${name}: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped`,
    );
    total.passed += counts.passed;
    total.failed += counts.failed;
    total.skipped += counts.skipped;
  }
  console.log("\n=== summary");
  for (const line of lines) console.log(`  ${line}`);
  console.log(`${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped`);
  Deno.exit(total.failed === 0 ? 0 : 1);
}
