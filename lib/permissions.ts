/**
 * How the bridge's Deno runs: its permissions, defined once as the `bridge`
 * permission set in deno.json and used by `deno task start` (`-P=bridge`),
 * the tests, and the compiled binary (whose flags are derived here from the
 * same set); and its V8 flags.
 */

/**
 * The V8 flags the bridge runs with, as one `deno run` / `deno compile`
 * argument: in `deno task start`, the tests' and the benchmarks' bridges,
 * and the compiled binary (embedded by `deno compile`).
 * `--max-opt=1` stops the JIT at Sparkplug, V8's baseline compiler. The
 * optimising tiers (Maglev, TurboFan) page in megabytes of the runtime's
 * own code and keep what they compile: with them the bridge's RSS grew
 * 1.07× from 500 to 5000 reconnects and stood 1.32× the I/O floor; without
 * them 1.003× and 1.21×. The price is CPU under a flood: twice the time per
 * frame (10.7 instead of 5.1 µs on the VM where this was measured), still
 * far above the device's rate; at its 2 Hz it is none (README, "Performance").
 */
export const V8_FLAGS_ARG = "--v8-flags=--max-opt=1";

/** A Deno permission set as written in deno.json. */
export interface PermissionSet {
  /** A permission (`net`, `read`, ...): granted wholly (`true`), for these values, or not. */
  [name: string]: boolean | string[] | undefined;
}

const FLAG_NAMES: Record<string, string> = {
  net: "--allow-net",
  read: "--allow-read",
  write: "--allow-write",
  env: "--allow-env",
  run: "--allow-run",
  sys: "--allow-sys",
  ffi: "--allow-ffi",
  import: "--allow-import",
};

/** Command-line flags granting exactly `set` (and prompting for nothing). */
export function permissionFlags(set: PermissionSet): string[] {
  const flags: string[] = [];
  for (const [name, value] of Object.entries(set)) {
    const flag = FLAG_NAMES[name];
    if (!flag) throw new Error(`unknown permission '${name}' in the permission set`);
    if (value === true) flags.push(flag);
    else if (Array.isArray(value) && value.length > 0) flags.push(`${flag}=${value.join(",")}`);
  }
  return [...flags, "--no-prompt"];
}

/** Reads the named permission set from a deno.json file's text. */
export function permissionSetFromConfig(configText: string, name = "bridge"): PermissionSet {
  const config = JSON.parse(configText);
  const set = config?.permissions?.[name];
  if (typeof set !== "object" || set === null) {
    throw new Error(`deno.json has no "${name}" permission set`);
  }
  return set;
}
