/**
 * "Is this tool available?" for Deno tests. A test that needs an optional
 * system tool (shellcheck, busybox, qemu-aarch64, ...) asks here and is
 * skipped with a one-line reason when the tool is missing:
 *
 * ```ts
 * Deno.test("shellcheck passes", { ignore: skipUnless("shellcheck") }, async () => {
 *   const shellcheck = which("shellcheck")!;
 *   ...
 * });
 * ```
 *
 * Each skip prints `skip: <file>:<line>: <reason>` once; `deno task test`
 * (tests/run_all.ts) collects those lines into its summary and counts the
 * ignored tests as skipped.
 */

/** Where a missing tool comes from, for the skip reason (Debian package names). */
export const TOOL_HINTS: Record<string, string> = {
  shellcheck: "Debian package: shellcheck",
  busybox: "Debian package: busybox",
  "qemu-aarch64": "Debian package: qemu-user",
  "start-stop-daemon": "Debian package: dpkg",
  python3: "Debian package: python3",
};

/** The line prefix tests/run_all.ts collects skip reasons by. */
export const SKIP_PREFIX = "skip: ";

/**
 * The absolute path of the executable `name` on `searchPath` (default: the
 * PATH environment variable), like `command -v`; null when there is none.
 * A name containing `/` is checked as a path itself.
 */
export function which(name: string, searchPath?: string): string | null {
  if (name.includes("/")) return isExecutable(name) ? name : null;
  const dirs = (searchPath ?? Deno.env.get("PATH") ?? "").split(":");
  for (const dir of dirs) {
    const candidate = `${dir === "" ? "." : dir}/${name}`;
    if (isExecutable(candidate)) return candidate;
  }
  return null;
}

function isExecutable(path: string): boolean {
  try {
    const info = Deno.statSync(path);
    return info.isFile && ((info.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * Why a test needing `tools` cannot run here, as one line naming each
 * missing tool and where it comes from; null when every tool is on PATH.
 */
export function missingTools(tools: string[], searchPath?: string): string | null {
  const missing = tools.filter((tool) => which(tool, searchPath) === null);
  if (missing.length === 0) return null;
  return missing
    .map((tool) => `${tool} not found on PATH${TOOL_HINTS[tool] ? ` (${TOOL_HINTS[tool]})` : ""}`)
    .join("; ");
}

/**
 * Prints one `skip: <file>:<line>: <reason>` line for a skipped test, the
 * location being the caller's (`depth` frames further up). Use it for skip
 * conditions that are not a missing tool, e.g. an unset variable.
 */
export function reportSkip(reason: string, depth = 0): void {
  // Frames: [0] callerLocation, [1] reportSkip, [2] its caller, ...
  const where = callerLocation(2 + depth);
  console.log(`${SKIP_PREFIX}${where ? `${where}: ` : ""}${reason}`);
}

/**
 * `true` (use it as `ignore:`) when one of `tools` is missing, after
 * printing the skip line with the reason; `false` when all are on PATH.
 */
export function skipUnless(...tools: string[]): boolean {
  const reason = missingTools(tools);
  if (reason === null) return false;
  reportSkip(reason, 1);
  return true;
}

/** `file:line` of stack frame `index` (0 is this function), relative to the repository. */
function callerLocation(index: number): string | null {
  const frames = (new Error().stack ?? "").split("\n").slice(1);
  const frame = frames[index];
  const match = frame && /(?:file:\/\/)?([^\s()]+?):(\d+):\d+\)?$/.exec(frame.trim());
  if (!match) return null;
  const root = new URL("../", import.meta.url).pathname;
  const file = match[1].startsWith(root) ? match[1].slice(root.length) : match[1];
  return `${file}:${match[2]}`;
}
