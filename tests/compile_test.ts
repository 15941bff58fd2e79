/**
 * `deno task compile` fails clearly and leaves nothing behind when it has
 * no runtime, and refuses a binary built for the wrong CPU. (A real build
 * needs `denort` from the internet; the release workflow does that.)
 */
import assert from "node:assert/strict";
import { elfMachine, explainCompileFailure, TARGETS } from "../lib/compile.ts";
import { runToEnd } from "./process.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** deno compile's stderr on a machine without internet access (Deno 2.9.5, verbatim). */
const OFFLINE_STDERR = `Compile main.ts to file:///tmp/pbx
Download https://dl.deno.land/release/v2.9.5/denort-x86_64-unknown-linux-gnu.zip
error: Writing deno compile executable to temporary file '/tmp/pbx.tmp-1aa9c1b67b2ec9fc'

Caused by:
    0: Setting up base binary.
    1: error sending request for url (https://dl.deno.land/release/v2.9.5/denort-x86_64-unknown-linux-gnu.zip): client error (Connect): dns error: failed to lookup address information: Name or service not known
    2: client error (Connect)
    3: dns error
    4: failed to lookup address information: Name or service not known
`;

async function compile(target: string, dist: string, env: Record<string, string>) {
  return await runToEnd(
    Deno.execPath(),
    ["run", "--allow-all", "lib/compile.ts", "--target", target, "--dist", dist],
    { cwd: ROOT, env: { NO_COLOR: "1", ...env } },
  );
}

async function head(path: string): Promise<Uint8Array> {
  const file = await Deno.open(path);
  try {
    const bytes = new Uint8Array(64);
    await file.read(bytes);
    return bytes;
  } finally {
    file.close();
  }
}

Deno.test("explainCompileFailure: offline, it quotes deno's cause and says how to build", () => {
  const text = explainCompileFailure(OFFLINE_STDERR, "x86_64-unknown-linux-gnu");
  assert.match(text, /^deno compile could not download the Deno runtime \(denort\)/);
  assert.match(text, /\n {2}error sending request for url \(https:\/\/dl\.deno\.land\/.*dns error/);
  assert.match(text, /run 'deno task compile' on a machine with internet access/);
  assert.match(text, /DENORT_BIN=\/path\/to\/denort deno task compile --target x86_64$/);
  const other = explainCompileFailure("error: something else\n", "aarch64-unknown-linux-gnu");
  assert.equal(other, "deno compile failed for aarch64-unknown-linux-gnu:\nerror: something else");
});

Deno.test("elfMachine reads the CPU of real executables and rejects the rest", async () => {
  const self = elfMachine(await head(Deno.execPath()));
  assert.ok("name" in self, JSON.stringify(self));
  assert.equal(self.name, Deno.build.arch);
  const arm64 = Deno.env.get("DENO_ARM64");
  if (arm64) assert.deepEqual(elfMachine(await head(arm64)), { machine: 0xb7, name: "aarch64" });
  assert.deepEqual(elfMachine(new TextEncoder().encode("#!/bin/sh\necho not elf\n")), {
    problem: "not an ELF file",
  });
  const arm32 = new Uint8Array(64);
  arm32.set([0x7f, 0x45, 0x4c, 0x46, 1, 1]);
  arm32[18] = 0x28;
  assert.deepEqual(elfMachine(arm32), { problem: "a 32-bit ELF file" });
  assert.equal(TARGETS.aarch64.elfMachine, 0xb7);
  assert.equal(TARGETS.x86_64.elfMachine, 0x3e);
});

Deno.test("compile: a DENORT_BIN that does not exist fails with the fix, and no binary is left", async () => {
  const dist = await Deno.makeTempDir({ prefix: "pb-compile-" });
  try {
    const r = await compile("aarch64", dist, { DENORT_BIN_AARCH64: `${dist}/no-such-denort` });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /deno compile found no Deno runtime at .*no-such-denort for aarch64/);
    assert.match(r.stderr, /Could not find denort at '.*no-such-denort'/);
    assert.match(r.stderr, /denort-aarch64-unknown-linux-gnu\.zip/);
    assert.deepEqual([...Deno.readDirSync(dist)], []);
  } finally {
    await Deno.remove(dist, { recursive: true });
  }
});

Deno.test("compile: a runtime of the wrong CPU is caught and its output removed", async () => {
  // This machine's own deno stands in for a mistaken DENORT_BIN_AARCH64 (or _X86_64).
  const wrong = Deno.build.arch === "x86_64" ? "aarch64" : "x86_64";
  const dist = await Deno.makeTempDir({ prefix: "pb-compile-cpu-" });
  try {
    const r = await compile(wrong, dist, { [TARGETS[wrong].envVar]: Deno.execPath() });
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`is an ${Deno.build.arch} executable, not ${TARGETS[wrong].triple}`),
    );
    assert.deepEqual([...Deno.readDirSync(dist)], []);
  } finally {
    await Deno.remove(dist, { recursive: true });
  }
});
