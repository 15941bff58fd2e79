/**
 * Release assets besides the binaries (`deno task compile`):
 *
 * - `deno task bundle`: `dist/panda-breath-<version>-source.tar.gz`, the files
 *   a user needs to install without a git checkout ({@link SOURCE_FILES}),
 *   under one top directory `panda-breath-<version>/`. Reproducible: sorted,
 *   owner root, modes 0755/0644, every mtime `SOURCE_DATE_EPOCH` (else the
 *   newest file's).
 * - `deno task sums`: `dist/SHA256SUMS` over the release assets, in the
 *   format `sha256sum -c` (coreutils and BusyBox) and install.sh check.
 * - `deno run lib/release.ts check-tag vX.Y.Z`: refuses a tag that is not
 *   `v` + the version in lib/version.ts and deno.json.
 */
import { parseArgs } from "node:util";
import { DEFAULT_DIST, TARGETS } from "./compile.ts";
import { VERSION } from "./version.ts";

/** What the source bundle holds, relative to the repository: files, or directories (recursive). */
export const SOURCE_FILES = ["install.sh", "klipper/", "README.md", "LICENSE"];

/** Names never bundled from a directory: caches and editor leftovers. */
const EXCLUDED = /^(\..*|__pycache__|.*\.pyc|.*~|.*\.orig|.*\.rej)$/;

/** The file name of the source bundle of `version`. */
export function sourceBundleName(version = VERSION): string {
  return `panda-breath-${version}-source.tar.gz`;
}

/** The file names `SHA256SUMS` must cover for a release of `version`. */
export function releaseAssets(version = VERSION): string[] {
  const binaries = Object.values(TARGETS).map((target) => target.output.replace(/^dist\//, ""));
  return [...binaries, sourceBundleName(version)].sort();
}

/** Why `tag` cannot release this tree (null when it can): it must be `v<version>` everywhere. */
export function tagProblem(tag: string, version: string, denoJsonVersion: unknown): string | null {
  if (denoJsonVersion !== version) {
    return `deno.json says version ${JSON.stringify(denoJsonVersion)} but lib/version.ts says ` +
      `${version}: make them equal before tagging`;
  }
  if (tag !== `v${version}`) {
    return `tag ${tag} does not match version ${version} (lib/version.ts, deno.json): ` +
      `tag v${version}, or bump the version and tag again`;
  }
  return null;
}

/** One file of a tar archive. */
export interface TarEntry {
  /** Path inside the archive; a trailing `/` makes it a directory. */
  path: string;
  /** File content (empty for a directory). */
  data: Uint8Array;
  /** Permission bits, e.g. 0o755. */
  mode: number;
  /** Modification time, seconds since the epoch. */
  mtime: number;
}

const BLOCK = 512;
const encoder = new TextEncoder();

function writeField(header: Uint8Array, offset: number, length: number, text: string): void {
  const bytes = encoder.encode(text);
  if (bytes.length > length) throw new Error(`tar field too long: ${text}`);
  header.set(bytes, offset);
}

function octal(value: number, length: number): string {
  return value.toString(8).padStart(length - 1, "0") + "\0";
}

/** Splits a path into ustar's name (≤ 100 bytes) and prefix (≤ 155 bytes). */
function splitPath(path: string): { name: string; prefix: string } {
  if (encoder.encode(path).length <= 100) return { name: path, prefix: "" };
  for (let i = path.lastIndexOf("/", path.length - 2); i > 0; i = path.lastIndexOf("/", i - 1)) {
    const prefix = path.slice(0, i);
    const name = path.slice(i + 1);
    if (encoder.encode(prefix).length <= 155 && encoder.encode(name).length <= 100) {
      return { name, prefix };
    }
  }
  throw new Error(`path too long for a tar archive: ${path}`);
}

function tarHeader(entry: TarEntry): Uint8Array {
  const header = new Uint8Array(BLOCK);
  const directory = entry.path.endsWith("/");
  const { name, prefix } = splitPath(entry.path);
  writeField(header, 0, 100, name);
  writeField(header, 100, 8, octal(entry.mode & 0o7777, 8));
  writeField(header, 108, 8, octal(0, 8));
  writeField(header, 116, 8, octal(0, 8));
  writeField(header, 124, 12, octal(directory ? 0 : entry.data.length, 12));
  writeField(header, 136, 12, octal(Math.floor(entry.mtime), 12));
  writeField(header, 148, 8, "        ");
  writeField(header, 156, 1, directory ? "5" : "0");
  writeField(header, 257, 6, "ustar\0");
  writeField(header, 263, 2, "00");
  writeField(header, 265, 32, "root");
  writeField(header, 297, 32, "root");
  writeField(header, 345, 155, prefix);
  const checksum = header.reduce((sum, byte) => sum + byte, 0);
  writeField(header, 148, 8, checksum.toString(8).padStart(6, "0") + "\0 ");
  return header;
}

/** A POSIX ustar archive of `entries`, in the order given (pure). */
export function tar(entries: TarEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const entry of entries) {
    parts.push(tarHeader(entry));
    if (!entry.path.endsWith("/")) {
      parts.push(entry.data);
      const padding = (BLOCK - entry.data.length % BLOCK) % BLOCK;
      if (padding > 0) parts.push(new Uint8Array(padding));
    }
  }
  parts.push(new Uint8Array(2 * BLOCK));
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** gzip of `data` (deterministic: the stream writes no name and mtime 0). */
export async function gzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as BlobPart]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** A file found for the bundle, relative to the repository. */
interface SourceFile {
  path: string;
  directory: boolean;
  executable: boolean;
  mtime: number;
}

async function collect(root: string, relative: string, out: SourceFile[]): Promise<void> {
  const path = `${root}/${relative.replace(/\/$/, "")}`;
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch {
    throw new Error(
      `${relative} is missing: the source bundle needs it (${SOURCE_FILES.join(", ")})`,
    );
  }
  if (info.isSymlink) {
    throw new Error(`${relative} is a symbolic link: the bundle holds files only`);
  }
  const mtime = Math.floor((info.mtime?.getTime() ?? 0) / 1000);
  if (info.isDirectory) {
    const dir = relative.endsWith("/") ? relative : `${relative}/`;
    out.push({ path: dir, directory: true, executable: true, mtime });
    const names: string[] = [];
    for await (const entry of Deno.readDir(path)) {
      if (!EXCLUDED.test(entry.name)) names.push(entry.name);
    }
    for (const name of names.sort()) {
      const child = await Deno.lstat(`${path}/${name}`);
      await collect(root, `${dir}${name}${child.isDirectory ? "/" : ""}`, out);
    }
    return;
  }
  if (!info.isFile) throw new Error(`${relative} is not a regular file`);
  out.push({
    path: relative,
    directory: false,
    executable: ((info.mode ?? 0) & 0o111) !== 0,
    mtime,
  });
}

/**
 * Builds the source bundle of the repository at `root` into `dist` and
 * returns its path. `mtime` (seconds) is every entry's time; by default
 * SOURCE_DATE_EPOCH, else the newest bundled file's.
 */
export async function buildSourceBundle(
  root: string,
  dist: string,
  options: { version?: string; mtime?: number } = {},
): Promise<string> {
  const version = options.version ?? VERSION;
  const files: SourceFile[] = [];
  for (const relative of SOURCE_FILES) await collect(root, relative, files);
  const install = files.find((file) => file.path === "install.sh");
  if (!install?.executable) throw new Error("install.sh is not executable: chmod +x install.sh");
  if (!files.some((file) => /^klipper\/.+\.py$/.test(file.path))) {
    throw new Error("klipper/ holds no Python module: the bundle would have no Klipper extra");
  }
  const epoch = Deno.env.get("SOURCE_DATE_EPOCH");
  const mtime = options.mtime ??
    (epoch !== undefined && /^\d+$/.test(epoch)
      ? Number(epoch)
      : Math.max(...files.map((file) => file.mtime)));
  const top = `panda-breath-${version}/`;
  const entries: TarEntry[] = [{ path: top, data: new Uint8Array(), mode: 0o755, mtime }];
  for (const file of files) {
    entries.push({
      path: `${top}${file.path}`,
      data: file.directory ? new Uint8Array() : await Deno.readFile(`${root}/${file.path}`),
      mode: file.directory || file.executable ? 0o755 : 0o644,
      mtime,
    });
  }
  await Deno.mkdir(dist, { recursive: true });
  const output = `${dist}/${sourceBundleName(version)}`;
  const temporary = `${output}.partial`;
  await Deno.writeFile(temporary, await gzip(tar(entries)));
  await Deno.rename(temporary, output);
  return output;
}

/** Lowercase hex SHA-256 of `data`. */
export async function sha256Hex(data: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data as BufferSource));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** `SHA256SUMS` text: `<hex>  <name>` per file, sorted by name (pure). */
export function formatSums(sums: Record<string, string>): string {
  return Object.keys(sums).sort().map((name) => `${sums[name]}  ${name}\n`).join("");
}

/**
 * Writes `<dist>/SHA256SUMS` over `names` (default: every release asset),
 * refusing when one is missing — a release never ships without a binary.
 */
export async function writeSums(dist: string, names = releaseAssets()): Promise<string> {
  const sums: Record<string, string> = {};
  for (const name of names) {
    if (name.includes("/") || name === "SHA256SUMS") {
      throw new Error(`not a release asset name: ${name}`);
    }
    let data: Uint8Array;
    try {
      data = await Deno.readFile(`${dist}/${name}`);
    } catch {
      throw new Error(
        `${dist}/${name} is missing: build it first ('deno task compile' for the binaries, ` +
          `'deno task bundle' for the source bundle)`,
      );
    }
    sums[name] = await sha256Hex(data);
  }
  const output = `${dist}/SHA256SUMS`;
  await Deno.writeTextFile(output, formatSums(sums));
  return output;
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: { dist: { type: "string", default: DEFAULT_DIST } },
  });
  const [command, ...rest] = positionals;
  try {
    if (command === "bundle") {
      console.log(`wrote ${await buildSourceBundle(".", values.dist)}`);
    } else if (command === "sums") {
      const output = await writeSums(values.dist, rest.length > 0 ? rest : undefined);
      console.log(`wrote ${output}:\n${(await Deno.readTextFile(output)).trimEnd()}`);
    } else if (command === "check-tag" && rest.length === 1) {
      const config = JSON.parse(await Deno.readTextFile("deno.json"));
      const problem = tagProblem(rest[0], VERSION, config.version);
      if (problem) throw new Error(problem);
      console.log(`tag ${rest[0]} matches version ${VERSION}`);
    } else {
      console.error(
        "usage: lib/release.ts bundle | sums [FILE...] | check-tag vX.Y.Z  [--dist DIR]",
      );
      Deno.exit(2);
    }
  } catch (error) {
    console.error(`error: ${error instanceof Error ? error.message : error}`);
    Deno.exit(1);
  }
}
