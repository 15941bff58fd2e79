/**
 * `deno task compile`: builds the single-file bridge binaries in dist/ with
 * the bridge's permission set embedded. `deno compile` downloads the Deno
 * runtime (`denort`) of this Deno version for each target; offline, point
 * DENORT_BIN (or DENORT_BIN_AARCH64 / DENORT_BIN_X86_64) at an unpacked
 * `denort`. The bridge's V8 flags are embedded too. A failed build leaves
 * no binary behind, and a built one is checked to be an ELF executable for
 * its target's CPU.
 */
import { parseArgs } from "node:util";
import { permissionFlags, permissionSetFromConfig, V8_FLAGS_ARG } from "./permissions.ts";
import { VERSION } from "./version.ts";

/** Where the release assets are built unless `--dist` says otherwise. */
export const DEFAULT_DIST = "dist";

/** A compile target. */
export interface Target {
  /** The Rust target triple `deno compile --target` takes. */
  triple: string;
  /** The output path, relative to the repository. */
  output: string;
  /** The variable naming this target's offline `denort`. */
  envVar: string;
  /** ELF `e_machine` of the target CPU. */
  elfMachine: number;
}

/** The targets built, by short name. */
export const TARGETS: Record<string, Target> = {
  aarch64: {
    triple: "aarch64-unknown-linux-gnu",
    output: "dist/panda-breath-aarch64-linux",
    envVar: "DENORT_BIN_AARCH64",
    elfMachine: 0xb7,
  },
  x86_64: {
    triple: "x86_64-unknown-linux-gnu",
    output: "dist/panda-breath-x86_64-linux",
    envVar: "DENORT_BIN_X86_64",
    elfMachine: 0x3e,
  },
};

const MACHINE_NAMES: Record<number, string> = {
  0x03: "x86",
  0x28: "arm",
  0x3e: "x86_64",
  0xb7: "aarch64",
};

/** The CPU a 64-bit little-endian ELF executable is for, or why it is not one (pure). */
export function elfMachine(
  head: Uint8Array,
): { machine: number; name: string } | { problem: string } {
  if (
    head.length < 20 || head[0] !== 0x7f || head[1] !== 0x45 || head[2] !== 0x4c || head[3] !== 0x46
  ) {
    return { problem: "not an ELF file" };
  }
  if (head[4] !== 2) return { problem: "a 32-bit ELF file" };
  if (head[5] !== 1) return { problem: "a big-endian ELF file" };
  const machine = head[18] | (head[19] << 8);
  return { machine, name: MACHINE_NAMES[machine] ?? `machine 0x${machine.toString(16)}` };
}

/** Why a compile failed, in words a user can act on (pure; `stderr` is deno compile's). */
export function explainCompileFailure(
  stderr: string,
  triple: string,
  denortBin?: string,
): string {
  const runtimeUrl = `https://dl.deno.land/release/v${Deno.version.deno}/denort-${triple}.zip`;
  const target = triple.startsWith("aarch64") ? "aarch64" : "x86_64";
  // deno's "Caused by:" list; the request line is the one that says what failed.
  const causes = stderr.split("\n").map((line) => line.trim()).filter((line) => /^\d+: /.test(line))
    .map((line) => line.replace(/^\d+: /, ""));
  const cause = causes.find((line) => /error sending request/.test(line)) ?? causes[0] ?? "";
  if (/Could not find denort/i.test(stderr)) {
    return `deno compile found no Deno runtime at ${denortBin ?? "DENORT_BIN"} for ${triple}:\n` +
      `  ${/Could not find denort[^\n]*/i.exec(stderr)![0]}\n` +
      `Fix: point DENORT_BIN (or ${TARGETS[target].envVar}) at the 'denort' unzipped from ` +
      `${runtimeUrl}`;
  }
  if (/dl\.deno\.land|error sending request|dns error/i.test(stderr)) {
    return `deno compile could not download the Deno runtime (denort) for ${triple}:\n` +
      `  ${cause}\n` +
      `It comes from ${runtimeUrl}.\n` +
      `Fix: run 'deno task compile' on a machine with internet access, or download that ` +
      `zip elsewhere, unzip it, and run\n` +
      `  DENORT_BIN=/path/to/denort deno task compile --target ${target}`;
  }
  return `deno compile failed for ${triple}:\n${stderr.trim()}`;
}

/** Checks a built binary is for `target`'s CPU (a wrong DENORT_BIN builds a useless one). */
async function checkBinary(path: string, target: Target): Promise<string | null> {
  const file = await Deno.open(path);
  try {
    const head = new Uint8Array(64);
    await file.read(head);
    const elf = elfMachine(head);
    if ("problem" in elf) return `${path} is ${elf.problem}`;
    if (elf.machine !== target.elfMachine) {
      return `${path} is an ${elf.name} executable, not ${target.triple}: ` +
        `DENORT_BIN / ${target.envVar} points at the runtime of another CPU`;
    }
    return null;
  } finally {
    file.close();
  }
}

/** The flags embedded in the binary: the bridge permission set of `configText` and the V8 flags. */
export function compileFlags(configText: string): string[] {
  return [...permissionFlags(permissionSetFromConfig(configText)), V8_FLAGS_ARG];
}

/** Builds one target into `dist`; prints what happened; true on success. */
export async function compileTarget(
  name: string,
  flags: string[],
  dist = DEFAULT_DIST,
): Promise<boolean> {
  const target = TARGETS[name];
  const output = target.output.replace(/^dist\//, `${dist}/`);
  const env: Record<string, string> = {};
  const specific = Deno.env.get(target.envVar);
  if (specific) env.DENORT_BIN = specific;
  const denortBin = specific ?? Deno.env.get("DENORT_BIN");
  await Deno.mkdir(dist, { recursive: true });
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["compile", ...flags, "--target", target.triple, "--output", output, "main.ts"],
    env,
    stdout: "inherit",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(result.stderr);
  if (!result.success) {
    await Deno.remove(output).catch(() => {});
    console.error(explainCompileFailure(stderr, target.triple, denortBin));
    return false;
  }
  const problem = await checkBinary(output, target);
  if (problem) {
    await Deno.remove(output).catch(() => {});
    console.error(`deno compile built the wrong thing: ${problem}; removed it`);
    return false;
  }
  console.log(`built ${output} (panda-breath ${VERSION}, ${target.triple})`);
  return true;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { target: { type: "string" }, dist: { type: "string", default: DEFAULT_DIST } },
  });
  const names = values.target ? [values.target] : Object.keys(TARGETS);
  const unknown = names.filter((name) => !(name in TARGETS));
  if (unknown.length > 0) {
    console.error(`unknown --target ${unknown[0]}; use one of ${Object.keys(TARGETS).join(", ")}`);
    Deno.exit(2);
  }
  const flags = compileFlags(await Deno.readTextFile("deno.json"));
  let ok = true;
  for (const name of names) ok = await compileTarget(name, flags, values.dist) && ok;
  Deno.exit(ok ? 0 : 1);
}
