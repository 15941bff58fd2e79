/**
 * Tells which firmware a Panda Breath runs, from one short HTTP request.
 *
 * DragonBreath, a community replacement firmware, has no `/ws` WebSocket (it
 * speaks HTTP API v2 and Server-Sent Events), so this bridge cannot drive it.
 * It answers `GET /api/v2/info` with JSON naming `"project": "dragonbreath"`;
 * the stock firmware has no such route. {@link classifyInfo} decides from an
 * answer (pure); {@link probeFirmware} is the thin I/O shell: one request,
 * a short timeout, a bounded body, its connection closed afterwards (the
 * device has only 7 HTTP sockets for everyone).
 */
import { DEVICE_PORT } from "./protocol.ts";

/** The path DragonBreath answers with its identity. */
export const INFO_PATH = "/api/v2/info";

/** Default time for the whole probe (connect, headers, body), in milliseconds. */
export const DEFAULT_PROBE_TIMEOUT_MS = 2000;

/** Default limit of the answer body read, in bytes; more counts as "not DragonBreath". */
export const DEFAULT_MAX_INFO_BYTES = 16 * 1024;

/**
 * What the device is:
 * - `dragonbreath`: a 2xx JSON answer with `"project": "dragonbreath"`;
 * - `stock`: some other HTTP answer (the stock firmware, or anything that is not
 *   DragonBreath: 404, a web page, garbage, an oversized or stalled body);
 * - `unreachable`: no HTTP answer at all (refused, timed out, name not found,
 *   not speaking HTTP).
 */
export type FirmwareKind = "dragonbreath" | "stock" | "unreachable";

/** The outcome of a probe. */
export interface FirmwareProbe {
  /** What answered: DragonBreath, the stock firmware, or nothing. */
  kind: FirmwareKind;
  /** One line for logs and `status`: printable ASCII, at most ~200 characters. */
  detail: string;
  /** The version DragonBreath reported (`version`, `fw_version` or `firmware_version`). */
  version?: string;
}

/** An HTTP answer to `GET /api/v2/info`, as read by the probe. */
export interface InfoAnswer {
  /** The HTTP status code. */
  status: number;
  /** The body bytes read (at most the limit). */
  body: Uint8Array;
  /** True when the body was longer than the limit (and cut there). */
  truncated: boolean;
  /** Set when the body stopped arriving (timeout or reset) after the headers. */
  bodyError?: string;
}

/** Options of {@link probeFirmware}. */
export interface ProbeOptions {
  /** Time for the whole probe in ms (default {@link DEFAULT_PROBE_TIMEOUT_MS}). */
  timeoutMs?: number;
  /** Body limit in bytes (default {@link DEFAULT_MAX_INFO_BYTES}). */
  maxBytes?: number;
  /** Aborts the probe early (e.g. the bridge is stopping); the result is `unreachable`. */
  signal?: AbortSignal;
}

/**
 * The info URL of a device given as the bridge's `--host` value (`HOST`,
 * `HOST:PORT`, `[IPv6]:PORT`) or as its WebSocket URL (`ws://host:port/ws`):
 * `http://host:port/api/v2/info`, port 80 by default.
 */
export function infoUrl(address: string): string {
  const text = address.trim();
  const url = new URL(/^wss?:\/\//i.test(text) ? text : `ws://${text}`);
  return `http://${url.hostname}:${url.port || DEVICE_PORT}${INFO_PATH}`;
}

/** Printable ASCII only, clipped: device text goes into logs and status. */
export function printable(text: string, max = 120): string {
  const clean = text.replace(/[^ -~]/g, "?").trim();
  return clean.length > max ? `${clean.slice(0, max - 3)}...` : clean;
}

/** Decides what answered `GET /api/v2/info` (pure). */
export function classifyInfo(answer: InfoAnswer): FirmwareProbe {
  const where = `GET ${INFO_PATH}`;
  if (answer.status < 200 || answer.status > 299) {
    return { kind: "stock", detail: `${where} answered HTTP ${answer.status}: not DragonBreath` };
  }
  if (answer.truncated) {
    return {
      kind: "stock",
      detail: `${where} answered more than ${answer.body.length} bytes: not DragonBreath`,
    };
  }
  if (answer.bodyError !== undefined) {
    return {
      kind: "stock",
      detail: `${where} answered HTTP ${answer.status} but the body stopped ` +
        `(${printable(answer.bodyError, 60)}): not DragonBreath`,
    };
  }
  let info: unknown;
  try {
    info = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(answer.body));
  } catch {
    return {
      kind: "stock",
      detail: `${where} answered something that is not JSON: not DragonBreath`,
    };
  }
  const fields = typeof info === "object" && info !== null && !Array.isArray(info)
    ? info as Record<string, unknown>
    : {};
  const project = fields.project;
  if (typeof project !== "string" || project.trim().toLowerCase() !== "dragonbreath") {
    const named = typeof project === "string" ? ` names project '${printable(project, 40)}'` : "";
    return {
      kind: "stock",
      detail: `${where} answered JSON that${named || " names no project"}: not DragonBreath`,
    };
  }
  const rawVersion = [fields.version, fields.fw_version, fields.firmware_version]
    .find((value) => typeof value === "string" && value.trim() !== "") as string | undefined;
  const version = rawVersion === undefined ? undefined : printable(rawVersion, 40);
  return {
    kind: "dragonbreath",
    detail: `${where} answered project 'dragonbreath'${version ? ` version ${version}` : ""}`,
    ...(version ? { version } : {}),
  };
}

/** A short reason for a failed request, without the URL Deno repeats. */
function requestFailure(error: unknown, timeoutMs: number): string {
  if (error instanceof DOMException && error.name === "TimeoutError") {
    return `no answer within ${timeoutMs} ms`;
  }
  if (error instanceof DOMException && error.name === "AbortError") return "probe aborted";
  // Deno says "fetch failed" and puts the reason in `cause`: use the innermost message.
  let inner: unknown = error;
  for (let depth = 0; depth < 4 && inner instanceof Error && inner.cause !== undefined; depth++) {
    inner = inner.cause;
  }
  const message = inner instanceof Error ? inner.message : String(inner);
  const known =
    /connection refused|connection reset|no route to host|network is unreachable|failed to lookup address information|invalid http|parse|timed out/i
      .exec(message);
  if (known) return printable(message.slice(known.index).replace(/ \(os error \d+\)/, ""), 100);
  return printable(message.replace(/ ?\(?https?:\/\/[^)\s]*\)?/g, ""), 100);
}

/** Reads at most `maxBytes` of `body` (one byte more tells it was longer), then stops it. */
async function readBounded(
  body: ReadableStream<Uint8Array> | null,
  maxBytes: number,
): Promise<{ body: Uint8Array; truncated: boolean; error?: string }> {
  const chunks: Uint8Array[] = [];
  let length = 0;
  let error: string | undefined;
  if (body !== null) {
    const reader = body.getReader();
    try {
      while (length <= maxBytes) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        length += value.length;
      }
    } catch (cause) {
      error = cause instanceof DOMException && cause.name === "TimeoutError"
        ? "timed out"
        : (cause instanceof Error ? cause.message : String(cause));
    } finally {
      await reader.cancel().catch(() => {});
    }
  }
  const all = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.length;
  }
  const truncated = length > maxBytes;
  return { body: truncated ? all.subarray(0, maxBytes) : all, truncated, error };
}

/**
 * Asks the device at `address` (a `--host` value or the device's WebSocket
 * URL) which firmware it runs: one `GET /api/v2/info`, no redirects
 * followed, at most `maxBytes` read, all within `timeoutMs`. Never throws
 * for network trouble: that is `unreachable` with the reason in `detail`.
 */
export async function probeFirmware(
  address: string,
  options: ProbeOptions = {},
): Promise<FirmwareProbe> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_INFO_BYTES;
  const url = infoUrl(address);
  const signals = [AbortSignal.timeout(timeoutMs)];
  if (options.signal) signals.push(options.signal);
  const signal = AbortSignal.any(signals);
  // A client of its own, closed after the probe: no pooled socket stays open on the device.
  const client = Deno.createHttpClient({});
  try {
    let response: Response;
    try {
      response = await fetch(url, {
        client,
        signal,
        redirect: "manual",
        headers: { accept: "application/json" },
      });
    } catch (error) {
      return {
        kind: "unreachable",
        detail: `cannot reach ${url}: ${requestFailure(error, timeoutMs)}`,
      };
    }
    const read = await readBounded(response.body, maxBytes);
    return classifyInfo({
      status: response.status,
      body: read.body,
      truncated: read.truncated,
      ...(read.error !== undefined ? { bodyError: read.error } : {}),
    });
  } finally {
    client.close();
  }
}

/**
 * The one error to show (bridge log, `status`) when the device runs
 * DragonBreath; null for any other outcome.
 */
export function firmwareProblem(address: string, probe: FirmwareProbe): string | null {
  if (probe.kind !== "dragonbreath") return null;
  const version = probe.version ? ` ${probe.version}` : "";
  return `the Panda Breath at ${printable(address, 80)} runs DragonBreath firmware${version}, ` +
    `which has no /ws WebSocket: panda-breath drives the stock firmware only. ` +
    `Use a DragonBreath integration instead (on the U1: Firmware Config -> chamber heater -> ` +
    `DragonBreath), or put the stock firmware back on the device`;
}
