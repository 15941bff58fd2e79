/**
 * Validation of user-supplied settings (CLI flags and the values the
 * service passes from printer.cfg). Pure functions; each error message says
 * what to change.
 */

import { DEVICE_PORT, DEVICE_WS_PATH } from "./protocol.ts";

/** A user mistake in a setting: printed as is, exit status 2. */
export class UsageError extends Error {}

/** Longest Unix socket path Linux accepts (`sun_path` is 108 bytes). */
export const MAX_SOCKET_PATH_BYTES = 107;

/**
 * Turns `HOST`, `HOST:PORT`, `[IPv6]:PORT` or a `ws://` URL into the
 * device's WebSocket URL (`ws://host:port/ws`, port 80 by default).
 */
export function deviceUrl(address: string): string {
  const text = address.trim();
  if (text === "") {
    throw new UsageError("--host needs the device's address, e.g. PandaBreath.local");
  }
  let url: URL;
  try {
    url = new URL(/^wss?:\/\//i.test(text) ? text : `ws://${text}`);
  } catch {
    throw new UsageError(`--host '${address}' is not a host name or address (HOST or HOST:PORT)`);
  }
  if (url.protocol !== "ws:") {
    throw new UsageError(`--host '${address}': the device speaks plain ws://, not ${url.protocol}`);
  }
  if (url.username || url.password || url.search || url.hash) {
    throw new UsageError(`--host '${address}' must be just HOST or HOST:PORT`);
  }
  if (url.pathname !== "/" && url.pathname !== DEVICE_WS_PATH) {
    throw new UsageError(`--host '${address}': the device's WebSocket path is ${DEVICE_WS_PATH}`);
  }
  if (url.port === "0") {
    throw new UsageError(`--host '${address}': the port must be from 1 to 65535`);
  }
  return `ws://${url.hostname}:${url.port || DEVICE_PORT}${DEVICE_WS_PATH}`;
}

/** Plain decimal notation: Number() alone would also take "0x10", "0b1" and "0o17". */
const DECIMAL = /^\s*[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?\s*$/i;

/** Parses a number within [min, max]; `unit` is named in the error, e.g. "seconds". */
export function parseNumber(
  name: string,
  value: string,
  min: number,
  max: number,
  unit = "",
): number {
  const number = Number(value);
  if (!DECIMAL.test(value) || !Number.isFinite(number) || number < min || number > max) {
    const range = unit ? `${min} to ${max} ${unit}` : `${min} to ${max}`;
    throw new UsageError(`--${name} must be a number from ${range}, got '${value}'`);
  }
  return number;
}

/** Parses a whole number within [min, max]. */
export function parseWholeNumber(name: string, value: string, min: number, max: number): number {
  const number = Number(value);
  if (!DECIMAL.test(value) || !Number.isInteger(number) || number < min || number > max) {
    throw new UsageError(`--${name} must be a whole number from ${min} to ${max}, got '${value}'`);
  }
  return number;
}

/** Default path of the bridge's socket (the installed one; its directory is made by the service). */
export const DEFAULT_SOCKET_PATH = "/run/panda-breath/bridge.sock";

/**
 * The directories the bridge may use for its socket: the `bridge` permission
 * set's read/write paths in deno.json (tests/options_test.ts keeps them equal).
 */
export const SOCKET_DIRECTORIES: readonly string[] = ["/tmp", "/run", "/var/run"];

/**
 * Checks a socket path: absolute, short enough for a Unix socket, and inside
 * {@link SOCKET_DIRECTORIES}, where the bridge's permissions let it listen.
 */
export function checkSocketPath(path: string): string {
  if (!path.startsWith("/")) {
    throw new UsageError(`--socket must be an absolute path, got '${path}'`);
  }
  if (new TextEncoder().encode(path).byteLength > MAX_SOCKET_PATH_BYTES) {
    throw new UsageError(
      `--socket path is longer than ${MAX_SOCKET_PATH_BYTES} bytes, which Unix sockets cannot use`,
    );
  }
  if (path.endsWith("/")) throw new UsageError(`--socket must name a file, got '${path}'`);
  const segments = path.split("/").slice(1);
  const inside = SOCKET_DIRECTORIES.some((dir) => path === dir || path.startsWith(`${dir}/`));
  if (!inside || segments.some((part) => part === "." || part === ".." || part === "")) {
    throw new UsageError(
      `--socket '${path}' is outside the directories the bridge may use: put it under ` +
        `${SOCKET_DIRECTORIES.join(", ")} (e.g. ${DEFAULT_SOCKET_PATH})`,
    );
  }
  return path;
}

/** The longest `--readback-interval`, in seconds. */
export const READBACK_MAX_S = 3600;

/** Parses `--readback-interval`: 0 (off) or 1 to {@link READBACK_MAX_S} seconds. */
export function parseReadbackInterval(value: string): number {
  const number = Number(value);
  if (
    !DECIMAL.test(value) || !Number.isFinite(number) ||
    (number !== 0 && (number < 1 || number > READBACK_MAX_S))
  ) {
    throw new UsageError(
      `--readback-interval must be 0 (off) or a number from 1 to ${READBACK_MAX_S} seconds, ` +
        `got '${value}'`,
    );
  }
  return number;
}

/** Parses a socket file mode: 0600 or 0660. */
export function parseSocketMode(value: string): number {
  if (value === "0600" || value === "600") return 0o600;
  if (value === "0660" || value === "660") return 0o660;
  throw new UsageError(`--socket-mode must be 0600 or 0660, got '${value}'`);
}
