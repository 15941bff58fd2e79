import assert from "node:assert/strict";
import { runToEnd } from "./process.ts";
import { missingTools, SKIP_PREFIX, which } from "./tools.ts";

/** A PATH of two temp dirs: one with an executable `tool-x`, one with a non-executable `tool-y`. */
async function stagedPath(): Promise<{ path: string; bin: string; cleanup: () => Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "pb-tools-" });
  const bin = `${dir}/bin`;
  const other = `${dir}/other`;
  await Deno.mkdir(bin);
  await Deno.mkdir(other);
  await Deno.writeTextFile(`${bin}/tool-x`, "#!/bin/sh\n", { mode: 0o755 });
  await Deno.writeTextFile(`${other}/tool-y`, "not executable\n", { mode: 0o644 });
  await Deno.mkdir(`${other}/tool-dir`);
  return {
    path: `${other}:${bin}`,
    bin,
    cleanup: () => Deno.remove(dir, { recursive: true }),
  };
}

Deno.test("which finds executables on PATH, not plain files or directories", async () => {
  const staged = await stagedPath();
  try {
    assert.equal(which("tool-x", staged.path), `${staged.bin}/tool-x`);
    assert.equal(which("tool-y", staged.path), null);
    assert.equal(which("tool-dir", staged.path), null);
    assert.equal(which("tool-x", ""), null);
    assert.equal(which(`${staged.bin}/tool-x`, ""), `${staged.bin}/tool-x`);
    assert.equal(which("sh", "/bin:/usr/bin")?.endsWith("/sh"), true);
  } finally {
    await staged.cleanup();
  }
});

Deno.test("missingTools names each missing tool and its package, null when all exist", async () => {
  const staged = await stagedPath();
  try {
    assert.equal(missingTools(["tool-x"], staged.path), null);
    assert.equal(
      missingTools(["tool-x", "shellcheck", "qemu-aarch64"], staged.path),
      "shellcheck not found on PATH (Debian package: shellcheck); " +
        "qemu-aarch64 not found on PATH (Debian package: qemu-user)",
    );
    assert.equal(missingTools(["tool-z"], staged.path), "tool-z not found on PATH");
  } finally {
    await staged.cleanup();
  }
});

Deno.test("skipUnless prints one skip line with the test file's location, and ignores the test", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pb-tools-skip-" });
  try {
    const probe = `${dir}/probe.ts`;
    await Deno.writeTextFile(
      probe,
      `import { skipUnless, which } from "${new URL("./tools.ts", import.meta.url)}";\n` +
        `console.log("ignore:", skipUnless("shellcheck", "sh"));\n` +
        `console.log("found:", which("sh"));\n`,
    );
    const run = (path: string) =>
      runToEnd(Deno.execPath(), ["run", "--allow-all", "--no-lock", probe], {
        env: { PATH: path, NO_COLOR: "1" },
      });
    const without = await run("/nonexistent");
    assert.equal(
      without.stdout,
      `${SKIP_PREFIX}${probe}:2: shellcheck not found on PATH (Debian package: shellcheck); ` +
        `sh not found on PATH\nignore: true\nfound: null\n`,
      without.stderr,
    );
    const shDir = await Deno.makeTempDir({ dir });
    await Deno.symlink("/bin/sh", `${shDir}/sh`);
    await Deno.writeTextFile(`${shDir}/shellcheck`, "#!/bin/sh\n", { mode: 0o755 });
    const withTools = (await run(shDir)).stdout;
    assert.equal(withTools, `ignore: false\nfound: ${shDir}/sh\n`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
