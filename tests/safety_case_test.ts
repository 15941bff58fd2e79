/**
 * docs/safety.md stays true: every test a hazard row names exists where the
 * row says (Deno tests by their quoted name, Python tests by method name).
 * A row cites a file (`tests/...`), the fault suite ("fault suite": tests/faults/)
 * or the simulator's tests ("sim:"); the names after it belong to it.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const SIMULATOR_TESTS = "tests/simulator_test.ts";
const FAULT_SUITE = "tests/faults/";

/** Each file or folder a row cites, with the test names that follow it in the same cell. */
export function citedTests(markdown: string): Map<string, Set<string>> {
  const cited = new Map<string, Set<string>>();
  const cite = (where: string) => {
    if (!cited.has(where)) cited.set(where, new Set());
    return where;
  };
  const pattern = /`(tests\/[^`\s]+)`|([Ff]ault suite)|(sim:)\s*"([^"]+)"|"([^"]+)"|`(test_\w+)`/g;
  for (const line of markdown.split("\n").filter((l) => l.startsWith("|"))) {
    for (const cell of line.split("|")) {
      let where: string | null = null;
      for (const token of cell.matchAll(pattern)) {
        if (token[1]) where = /(_test\.ts|\/test_\w+\.py)$/.test(token[1]) ? cite(token[1]) : null;
        else if (token[2]) where = cite(FAULT_SUITE);
        else if (token[3]) cited.get(cite(SIMULATOR_TESTS))!.add(token[4]);
        else if (where !== null) cited.get(where)!.add(token[5] ?? token[6]);
      }
    }
  }
  return cited;
}

/** Whether `source` defines a test called `name` (`…` at the end: a prefix). */
export function definesTest(source: string, name: string, python: boolean): boolean {
  if (python) return new RegExp(`def ${name}\\(`).test(source);
  const literals = [...source.matchAll(/"((?:[^"\\]|\\.)*)"|`([^`]*)`/g)].map((m) => ({
    text: m[1] ?? m[2],
    template: m[2] !== undefined,
  }));
  const prefix = name.endsWith("…") ? name.slice(0, -1).trimEnd() : null;
  return literals.some(({ text, template }) => {
    if (prefix !== null) return text.startsWith(prefix);
    if (text === name) return true;
    // `refused, nothing written: ${name}` with the name a string elsewhere in the file
    const parts = template ? text.split(/\$\{[^}]+\}/) : [];
    if (parts.length !== 2 || !name.startsWith(parts[0]) || !name.endsWith(parts[1])) return false;
    const inner = name.slice(parts[0].length, name.length - parts[1].length);
    return inner.length > 0 && source.includes(JSON.stringify(inner));
  });
}

async function sources(where: string): Promise<string[]> {
  if (!where.endsWith("/")) return [await Deno.readTextFile(new URL(where, ROOT))];
  const texts: string[] = [];
  for await (const entry of Deno.readDir(new URL(where, ROOT))) {
    if (entry.isFile) texts.push(await Deno.readTextFile(new URL(where + entry.name, ROOT)));
  }
  return texts;
}

Deno.test("docs/safety.md: every test a row names exists", async () => {
  const cited = citedTests(await Deno.readTextFile(new URL("docs/safety.md", ROOT)));
  const missing: string[] = [];
  let names = 0;
  for (const [where, tests] of cited) {
    const texts = await sources(where);
    for (const name of tests) {
      names++;
      if (!texts.some((t) => definesTest(t, name, where.endsWith(".py")))) {
        missing.push(`${where}: ${name}`);
      }
    }
  }
  assert.ok(cited.size >= 10 && names >= 50, `rows cite ${names} tests in ${cited.size} places`);
  assert.deepEqual(missing, [], "cited in docs/safety.md but not found");
});

Deno.test("safety case checker: finds a missing name, accepts prefixes and templated names", () => {
  const doc = '| 1 | x | `tests/a_test.ts` "one", "two…"; fault suite "three"; sim: "four" |';
  const cited = citedTests(doc);
  assert.deepEqual(
    [...cited].map(([k, v]) => [k, [...v]]),
    [["tests/a_test.ts", ["one", "two…"]], [FAULT_SUITE, ["three"]], [SIMULATOR_TESTS, ["four"]]],
  );
  assert.equal(definesTest('Deno.test("one", () => {})', "one", false), true);
  assert.equal(definesTest('Deno.test("one", () => {})', "on", false), false);
  assert.equal(definesTest('Deno.test("two: a", () => {})', "two…", false), true);
  const templated = 'for (const n of ["b c"]) Deno.test(`x: ${n}`, () => {})';
  assert.equal(definesTest(templated, "x: b c", false), true);
  assert.equal(definesTest(templated, "x: d", false), false);
  assert.equal(definesTest("    def test_ok(self):", "test_ok", true), true);
  assert.equal(definesTest("    def test_ok(self):", "test_o", true), false);
});
