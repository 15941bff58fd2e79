/**
 * The release assets other than the binaries: the source bundle (checked by
 * extracting it with the system's tar) and SHA256SUMS (checked by
 * `sha256sum -c`, as a user and install.sh do), and the tag check.
 */
import assert from "node:assert/strict";
import {
  buildSourceBundle,
  formatSums,
  releaseAssets,
  sha256Hex,
  SOURCE_FILES,
  sourceBundleName,
  tagProblem,
  tar,
  writeSums,
} from "../lib/release.ts";
import { VERSION } from "../lib/version.ts";
import { runToEnd } from "./process.ts";
import { skipUnless } from "./tools.ts";

const ROOT = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
/** Every path under `dir` (directories with a trailing /), sorted. */
async function listTree(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(`${dir}/${prefix}`)) {
    const rel = `${prefix}${entry.name}`;
    if (entry.isDirectory) out.push(`${rel}/`, ...await listTree(dir, `${rel}/`));
    else out.push(rel);
  }
  return out.sort();
}

/** The files the bundle must hold, read from the repository the way a reviewer would list them. */
async function expectedFiles(): Promise<string[]> {
  const out: string[] = [];
  for (const item of SOURCE_FILES) {
    if (!item.endsWith("/")) {
      out.push(item);
      continue;
    }
    out.push(item);
    for (const rel of await listTree(`${ROOT}/${item}`)) {
      if (rel.split("/").some((part) => /^(__pycache__|\..*)$|\.pyc$/.test(part))) continue;
      out.push(`${item}${rel}`);
    }
  }
  return out.sort();
}

Deno.test(
  "bundle: the fixed file list, extracted by the system tar, byte for byte and with modes",
  {
    ignore: skipUnless("tar", "gzip"),
  },
  async () => {
    const dist = await Deno.makeTempDir({ prefix: "pb-bundle-" });
    try {
      const output = await buildSourceBundle(ROOT, dist, { mtime: 1_700_000_000 });
      assert.equal(output, `${dist}/${sourceBundleName()}`);
      assert.equal(sourceBundleName(), `panda-breath-${VERSION}-source.tar.gz`);

      const listing = await runToEnd("tar", ["-tvzf", output]);
      assert.equal(listing.code, 0, listing.stderr);
      const top = `panda-breath-${VERSION}/`;
      const names = listing.stdout.trim().split("\n").map((line) =>
        line.split(/\s+/).slice(5).join(" ")
      );
      assert.deepEqual(
        names.slice(1).map((name) => name.slice(top.length)).sort(),
        await expectedFiles(),
      );
      assert.equal(names[0], top);
      for (const line of listing.stdout.trim().split("\n")) {
        assert.match(line, /^[d-]rw[x-]r-[x-]r-[x-] root\/root /, line);
        assert.match(line, / 2023-11-1[45] /, `mtime: ${line}`);
      }
      assert.ok(SOURCE_FILES.every((item) => names.includes(`${top}${item}`)));
      assert.ok(!names.some((name) => /__pycache__|\.pyc$/.test(name)));

      const extracted = await Deno.makeTempDir({ prefix: "pb-bundle-x-" });
      try {
        const x = await runToEnd("tar", ["-xzf", output, "-C", extracted]);
        assert.equal(x.code, 0, x.stderr);
        for (const rel of await expectedFiles()) {
          if (rel.endsWith("/")) continue;
          const mine = await Deno.readFile(`${extracted}/${top}${rel}`);
          assert.deepEqual(mine, await Deno.readFile(`${ROOT}/${rel}`), rel);
          const mode = (await Deno.stat(`${extracted}/${top}${rel}`)).mode! & 0o777;
          const source = (await Deno.stat(`${ROOT}/${rel}`)).mode! & 0o111;
          assert.equal(mode, source ? 0o755 : 0o644, rel);
        }
        assert.equal((await Deno.stat(`${extracted}/${top}install.sh`)).mode! & 0o111, 0o111);
      } finally {
        await Deno.remove(extracted, { recursive: true });
      }

      // Reproducible: the same tree and time give the same bytes.
      const first = await Deno.readFile(output);
      await buildSourceBundle(ROOT, dist, { mtime: 1_700_000_000 });
      assert.deepEqual(await Deno.readFile(output), first);
    } finally {
      await Deno.remove(dist, { recursive: true });
    }
  },
);

Deno.test("bundle: a tree without install.sh or without the extra is refused, naming what is missing", async () => {
  const root = await Deno.makeTempDir({ prefix: "pb-bundle-bad-" });
  try {
    await Deno.writeTextFile(`${root}/README.md`, "r\n");
    await Deno.writeTextFile(`${root}/LICENSE`, "l\n");
    await Deno.mkdir(`${root}/klipper`);
    await assert.rejects(buildSourceBundle(root, `${root}/dist`), /install\.sh is missing/);
    await Deno.writeTextFile(`${root}/install.sh`, "#!/bin/sh\n", { mode: 0o644 });
    await assert.rejects(buildSourceBundle(root, `${root}/dist`), /install\.sh is not executable/);
    await Deno.chmod(`${root}/install.sh`, 0o755);
    await assert.rejects(buildSourceBundle(root, `${root}/dist`), /no Python module/);
    await Deno.writeTextFile(`${root}/klipper/x.py`, "\n");
    await Deno.symlink("/etc/passwd", `${root}/klipper/link`);
    await assert.rejects(buildSourceBundle(root, `${root}/dist`), /symbolic link/);
    await Deno.remove(`${root}/klipper/link`);
    await Deno.mkdir(`${root}/klipper/__pycache__`);
    await Deno.writeTextFile(`${root}/klipper/__pycache__/x.cpython-311.pyc`, "junk");
    const output = await buildSourceBundle(root, `${root}/dist`, { version: "9.9.9", mtime: 0 });
    assert.match(output, /panda-breath-9\.9\.9-source\.tar\.gz$/);
    await assert.rejects(Deno.stat(`${output}.partial`));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("tar: long paths use the ustar prefix field and still extract", {
  ignore: skipUnless("tar"),
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "pb-tar-" });
  try {
    const long = `${"d".repeat(60)}/${"e".repeat(60)}/${"f".repeat(50)}.txt`;
    const data = new TextEncoder().encode("hello\n");
    await Deno.writeFile(
      `${dir}/t.tar`,
      tar([{ path: long, data, mode: 0o644, mtime: 0 }, {
        path: "empty",
        data: new Uint8Array(),
        mode: 0o600,
        mtime: 0,
      }]),
    );
    const x = await runToEnd("tar", ["-xf", "t.tar"], { cwd: dir });
    assert.equal(x.code, 0, x.stderr);
    assert.equal(await Deno.readTextFile(`${dir}/${long}`), "hello\n");
    assert.equal((await Deno.stat(`${dir}/empty`)).size, 0);
    assert.throws(() => tar([{ path: "x".repeat(101), data, mode: 0o644, mtime: 0 }]), /too long/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sums: SHA256SUMS verifies with sha256sum -c, and a missing binary is refused", {
  ignore: skipUnless("sha256sum"),
}, async () => {
  const dist = await Deno.makeTempDir({ prefix: "pb-sums-" });
  try {
    // Stand-in assets with the release names: this checks the checksum file, not the binaries.
    const names = releaseAssets();
    assert.deepEqual(names, [
      `panda-breath-${VERSION}-source.tar.gz`,
      "panda-breath-aarch64-linux",
      "panda-breath-x86_64-linux",
    ]);
    await assert.rejects(writeSums(dist), /source\.tar\.gz is missing: build it first/);
    for (const [i, name] of names.entries()) {
      await Deno.writeTextFile(`${dist}/${name}`, `asset ${i}\n`);
    }
    const output = await writeSums(dist);
    const text = await Deno.readTextFile(output);
    assert.equal(text.split("\n").filter(Boolean).length, 3);
    const check = await runToEnd("sha256sum", ["-c", "SHA256SUMS"], { cwd: dist });
    assert.equal(check.code, 0, check.stdout + check.stderr);
    assert.equal(check.stdout.match(/: OK$/gm)?.length, 3);
    // A changed asset no longer verifies.
    await Deno.writeTextFile(`${dist}/${names[1]}`, "tampered\n");
    const bad = await runToEnd("sha256sum", ["-c", "SHA256SUMS"], { cwd: dist });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stdout, /panda-breath-aarch64-linux: FAILED/);
    await assert.rejects(writeSums(dist, ["../etc"]), /not a release asset name/);
  } finally {
    await Deno.remove(dist, { recursive: true });
  }
});

Deno.test("sums: known digests and the exact line format", async () => {
  const empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  assert.equal(await sha256Hex(new Uint8Array()), empty);
  assert.equal(
    await sha256Hex(new TextEncoder().encode("abc")),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  assert.equal(formatSums({ b: "22", a: "11" }), "11  a\n22  b\n");
});

Deno.test("check-tag: only v<version> with deno.json and lib/version.ts agreeing", async () => {
  assert.equal(tagProblem("v1.2.3", "1.2.3", "1.2.3"), null);
  assert.match(
    tagProblem("v1.2.4", "1.2.3", "1.2.3")!,
    /tag v1\.2\.4 does not match version 1\.2\.3/,
  );
  assert.match(tagProblem("1.2.3", "1.2.3", "1.2.3")!, /does not match/);
  assert.match(tagProblem("v1.2.3", "1.2.3", "1.2.2")!, /deno\.json says version "1\.2\.2"/);
  // The real tree agrees with itself, through the CLI the workflow calls.
  const ok = await runToEnd(Deno.execPath(), [
    "run",
    "--allow-read",
    "lib/release.ts",
    "check-tag",
    `v${VERSION}`,
  ], {
    cwd: ROOT,
  });
  assert.equal(ok.code, 0, ok.stderr);
  const bad = await runToEnd(Deno.execPath(), [
    "run",
    "--allow-read",
    "lib/release.ts",
    "check-tag",
    "v0.0.0-nope",
  ], {
    cwd: ROOT,
  });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^error: tag v0\.0\.0-nope does not match version/);
});
