/**
 * lib/argv.ts parses the command line exactly as `parseArgs` of `node:util`
 * in strict mode: every combination of up to three arguments from a list of
 * awkward ones gives the same values (defaults included), positionals or
 * error message.
 */
import assert from "node:assert/strict";
import { parseArgs } from "node:util";
import { type OptionSpec, parseArgv } from "../lib/argv.ts";

const OPTIONS: Record<string, OptionSpec> = {
  help: { type: "boolean", short: "h" },
  socket: { type: "string" },
  json: { type: "boolean" },
  "socket-mode": { type: "string", default: "0660" },
};

const ARGS = [
  "--help",
  "-h",
  "-hh",
  "-hx",
  "-h=3",
  "--help=",
  "--socket",
  "--socket=/y",
  "--socket=",
  "/x",
  "-",
  "--",
  "-x",
  "-5",
  "45",
  "--json",
  "--json=1",
  "--nope",
  "--nope=3",
  "--=x",
  "---x",
  "--constructor",
  "--socket-mode",
  "--socket-mode=a=b",
  "",
];

function outcome(parse: () => { values: object; positionals: string[] }): string {
  try {
    const { values, positionals } = parse();
    return JSON.stringify({ values: { ...values }, positionals });
  } catch (error) {
    // node:util adds a hint on '--' to its unknown-option message; the CLI cuts it off.
    return `error: ${(error as Error).message.replace(/\. To specify a positional.*$/s, "")}`;
  }
}

Deno.test("argv: same results and messages as node:util parseArgs (strict), up to 3 arguments", () => {
  const lists: string[][] = [[]];
  for (const a of ARGS) {
    lists.push([a]);
    for (const b of ARGS) {
      lists.push([a, b]);
      for (const c of ARGS) lists.push([a, b, c]);
    }
  }
  let errors = 0;
  for (const args of lists) {
    for (const allowPositionals of [false, true]) {
      const expected = outcome(() =>
        parseArgs({ args, options: OPTIONS, allowPositionals, strict: true })
      );
      const actual = outcome(() => parseArgv(args, OPTIONS, allowPositionals));
      assert.equal(
        actual,
        expected,
        `${JSON.stringify(args)} allowPositionals=${allowPositionals}`,
      );
      if (expected.startsWith("error")) errors++;
    }
  }
  assert.ok(errors > 1000 && errors < lists.length * 2, `${errors} of the cases are errors`);
});

Deno.test("argv: the messages the CLI shows", () => {
  const message = (args: string[], positionals = false) =>
    outcome(() => parseArgv(args, OPTIONS, positionals));
  assert.equal(message(["--bogus"]), "error: Unknown option '--bogus'");
  assert.equal(message(["--socket"]), "error: Option '--socket <value>' argument missing");
  assert.equal(message(["--help=1"]), "error: Option '-h, --help' does not take an argument");
  assert.equal(
    message(["45"]),
    "error: Unexpected argument '45'. This command does not take positional arguments",
  );
  assert.equal(
    message(["--socket", "/a", "--socket=/b", "x"], true),
    JSON.stringify({ values: { socket: "/b", "socket-mode": "0660" }, positionals: ["x"] }),
  );
});
