/**
 * `deno task compile`: builds the single-file bridge binaries in dist/ with
 * the bridge's permission set embedded. Offline, point DENORT_BIN (or
 * DENORT_BIN_AARCH64 / DENORT_BIN_X86_64) at an unpacked `denort` of this
 * Deno version; without it `deno compile` must download the runtime.
 */
import { parseArgs } from "node:util";
import { permissionFlags, permissionSetFromConfig } from "./permissions.ts";
import { VERSION } from "./version.ts";

/** The targets built, by short name. */
export const TARGETS: Record<string, { triple: string; output: string; envVar: string }> = {
  aarch64: {
    triple: "aarch64-unknown-linux-gnu",
    output: "dist/panda-breath-aarch64-linux",
    envVar: "DENORT_BIN_AARCH64",
  },
  x86_64: {
    triple: "x86_64-unknown-linux-gnu",
    output: "dist/panda-breath-x86_64-linux",
    envVar: "DENORT_BIN_X86_64",
  },
};

/** Why a compile failed, in words a user can act on. */
export function explainCompileFailure(stderr: string, triple: string): string {
  const runtimeUrl = `https://dl.deno.land/release/v${Deno.version.deno}/denort-${triple}.zip`;
  if (/dl\.deno\.land|error sending request|dns error|Could not find denort/i.test(stderr)) {
    return `deno compile could not obtain the Deno runtime (denort) for ${triple}.\n` +
      `It is downloaded from ${runtimeUrl}, which this machine cannot reach.\n` +
      `Fix: run 'deno task compile' on a machine with internet access, or download that ` +
      `zip elsewhere, unzip it, and run\n` +
      `  DENORT_BIN=/path/to/denort deno task compile --target ${
        triple.startsWith("aarch64") ? "aarch64" : "x86_64"
      }`;
  }
  return `deno compile failed for ${triple}:\n${stderr.trim()}`;
}

async function compileTarget(name: string, flags: string[]): Promise<boolean> {
  const target = TARGETS[name];
  const env: Record<string, string> = {};
  const specific = Deno.env.get(target.envVar);
  if (specific) env.DENORT_BIN = specific;
  await Deno.mkdir("dist", { recursive: true });
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["compile", ...flags, "--target", target.triple, "--output", target.output, "main.ts"],
    env,
    stdout: "inherit",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(result.stderr);
  if (!result.success) {
    await Deno.remove(target.output).catch(() => {});
    console.error(explainCompileFailure(stderr, target.triple));
    return false;
  }
  console.log(`built ${target.output} (panda-breath ${VERSION}, ${target.triple})`);
  return true;
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { target: { type: "string" } } });
  const names = values.target ? [values.target] : Object.keys(TARGETS);
  const unknown = names.filter((name) => !(name in TARGETS));
  if (unknown.length > 0) {
    console.error(`unknown --target ${unknown[0]}; use one of ${Object.keys(TARGETS).join(", ")}`);
    Deno.exit(2);
  }
  const flags = permissionFlags(permissionSetFromConfig(await Deno.readTextFile("deno.json")));
  let ok = true;
  for (const name of names) ok = await compileTarget(name, flags) && ok;
  Deno.exit(ok ? 0 : 1);
}
