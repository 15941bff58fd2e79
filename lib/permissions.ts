/**
 * The bridge's Deno permissions, defined once as the `bridge` permission set
 * in deno.json and used by `deno task start` (`-P=bridge`), the tests, and
 * the compiled binary (whose flags are derived here from the same set).
 */

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
