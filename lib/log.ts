import { isoTime } from "./iso_time.ts";

/** Log levels in increasing verbosity. */
export const LOG_LEVELS = ["error", "warn", "info", "debug"] as const;

/** One of {@link LOG_LEVELS}. */
export type LogLevel = typeof LOG_LEVELS[number];

/** The level of a {@link Logger} (and of `run`) unless given. */
export const DEFAULT_LOG_LEVEL: LogLevel = "info";

/** Where formatted log lines go; defaults to stderr. A sink may throw: the logger counts it. */
export type LogSink = (line: string) => void;

const encoder = new TextEncoder();

/** Writes the whole line to stderr; throws when the write fails (e.g. ENOSPC). */
function stderrSink(line: string): void {
  const bytes = encoder.encode(line + "\n");
  let written = 0;
  // A short write continues; a write of nothing is a failure, never a busy loop.
  while (written < bytes.byteLength) {
    const n = Deno.stderr.writeSync(bytes.subarray(written));
    if (n <= 0) throw new Error("stderr accepted no bytes");
    written += n;
  }
}

function formatValue(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return /^[^\s"=]+$/.test(text ?? "") ? text : JSON.stringify(text);
}

/** Whether `value` names a log level. */
export function isLogLevel(value: string): value is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

/** Repeats of one event within this window are counted instead of written. */
export const REPEAT_WINDOW_MS = 60_000;

/** Events tracked for repeats at most; the oldest is summed up and forgotten beyond. */
const MAX_REPEAT_KEYS = 256;

/**
 * What makes two log calls the same event: level, message and the fields
 * that are not numbers (a reason, a fault name), so that a different reason
 * is written at once while changing counts, temperatures and times are not.
 */
function eventKey(level: LogLevel, message: string, fields: Record<string, unknown>): string {
  const words = Object.entries(fields).filter(([, v]) => typeof v !== "number");
  try {
    return JSON.stringify([level, message, words]);
  } catch {
    return JSON.stringify([level, message]); // fields that cannot be formatted fail in #write
  }
}

/** One event (level, message, fields other than numbers) seen within the current window. */
interface Repeats {
  level: LogLevel;
  message: string;
  since: number;
  count: number;
  fields: Record<string, unknown>;
}

/**
 * A levelled logger writing one line per event:
 * `2026-11-24T10:00:00.000Z INFO device connected host=10.0.0.5`.
 *
 * An event (level, message and fields other than numbers) repeated within
 * a minute is written once;
 * the repeats are counted and summed up in one line at the end of the minute,
 * `… 57 more in the last minute: device fault reported fault=...` (with the
 * last repeat's fields), for as long as they go on. Debug lines are never
 * held back. So the log stays bounded whatever the device or a client does.
 *
 * Logging never throws: a line the sink cannot take (a full disk, a closed
 * stderr, a sink that throws) is dropped and counted in {@link writeFailures}.
 * Nothing that actuates the heater may depend on a log line being written.
 */
export class Logger {
  #rank: number;
  #sink: LogSink;
  #lastByKey = new Map<string, { at: number; suppressed: number }>();
  #repeats = new Map<string, Repeats>();
  #repeatTimer: ReturnType<typeof setTimeout> | undefined;
  #repeatWindowMs: number;
  #writeFailures = 0;

  /**
   * A logger at `level` writing to `sink` (stderr by default); tests may
   * shorten the repeat window.
   */
  constructor(
    level: LogLevel = DEFAULT_LOG_LEVEL,
    sink: LogSink = stderrSink,
    options: { repeatWindowMs?: number } = {},
  ) {
    this.#rank = LOG_LEVELS.indexOf(level);
    this.#sink = sink;
    this.#repeatWindowMs = options.repeatWindowMs ?? REPEAT_WINDOW_MS;
  }

  /** Whether messages at `level` are written. */
  enabled(level: LogLevel): boolean {
    return LOG_LEVELS.indexOf(level) <= this.#rank;
  }

  /** Lines the sink failed to take (dropped), since the logger was made. */
  get writeFailures(): number {
    return this.#writeFailures;
  }

  /**
   * Writes `message` with `key=value` fields at `level`, or counts it when
   * the same event was written within the last minute; never throws.
   */
  log(level: LogLevel, message: string, fields: Record<string, unknown> = {}): void {
    if (!this.enabled(level)) return;
    if (level === "debug") return this.#write(level, message, fields);
    const now = performance.now();
    this.#sumUp(now, false);
    const key = eventKey(level, message, fields);
    const seen = this.#repeats.get(key);
    if (seen !== undefined) {
      seen.count++;
      seen.fields = fields;
      this.#armSumUp(seen.since + this.#repeatWindowMs - now);
      return;
    }
    if (this.#repeats.size >= MAX_REPEAT_KEYS) {
      const [oldest] = this.#repeats.keys();
      this.#finish(this.#repeats.get(oldest)!, now);
      this.#repeats.delete(oldest);
    }
    this.#repeats.set(key, { level, message, since: now, count: 0, fields });
    this.#write(level, message, fields);
  }

  /** Writes the counts of every event repeated so far (e.g. before exiting). */
  flush(): void {
    this.#sumUp(performance.now(), true);
  }

  /**
   * Ends the windows that are over (all with `all`): an event repeated in it
   * gets its summary line and a new window; one that was not is forgotten.
   */
  #sumUp(now: number, all: boolean): void {
    for (const [key, seen] of this.#repeats) {
      if (!all && now - seen.since < this.#repeatWindowMs) continue;
      if (seen.count === 0) {
        this.#repeats.delete(key);
        continue;
      }
      this.#finish(seen, now);
      seen.since = now;
      seen.count = 0;
    }
  }

  #finish(seen: Repeats, now: number): void {
    if (seen.count === 0) return;
    const seconds = Math.round((now - seen.since) / 1000);
    const span = now - seen.since <= this.#repeatWindowMs + 1000
      ? "the last minute"
      : `the last ${seconds} s`;
    this.#write(seen.level, `… ${seen.count} more in ${span}: ${seen.message}`, seen.fields);
  }

  /** A summary is written when its minute ends, even if nothing else is logged. */
  #armSumUp(inMs: number): void {
    if (this.#repeatTimer !== undefined) return;
    this.#repeatTimer = setTimeout(() => {
      this.#repeatTimer = undefined;
      const now = performance.now();
      this.#sumUp(now, false);
      const next = Math.min(
        ...[...this.#repeats.values()].filter((r) => r.count > 0).map((r) => r.since),
      );
      if (Number.isFinite(next)) this.#armSumUp(next + this.#repeatWindowMs - now);
    }, Math.max(0, inMs) + 1);
    Deno.unrefTimer(this.#repeatTimer);
  }

  #write(level: LogLevel, message: string, fields: Record<string, unknown>): void {
    try {
      const parts = [isoTime(), level.toUpperCase(), message];
      for (const [key, value] of Object.entries(fields)) {
        if (value !== undefined) parts.push(`${key}=${formatValue(value)}`);
      }
      this.#sink(parts.join(" "));
    } catch {
      this.#writeFailures++;
    }
  }

  /** Logs at error level. */
  error(message: string, fields?: Record<string, unknown>): void {
    this.log("error", message, fields);
  }

  /** Logs at warn level. */
  warn(message: string, fields?: Record<string, unknown>): void {
    this.log("warn", message, fields);
  }

  /** Logs at info level. */
  info(message: string, fields?: Record<string, unknown>): void {
    this.log("info", message, fields);
  }

  /** Logs at debug level. */
  debug(message: string, fields?: Record<string, unknown>): void {
    this.log("debug", message, fields);
  }

  /**
   * Logs at `level` at most once per `intervalMs` for `key`; the next line
   * written for that key says how many were suppressed in between.
   */
  limited(
    key: string,
    intervalMs: number,
    level: LogLevel,
    message: string,
    fields: Record<string, unknown> = {},
  ): void {
    if (!this.enabled(level)) return;
    const now = performance.now();
    const last = this.#lastByKey.get(key);
    if (last && now - last.at < intervalMs) {
      last.suppressed++;
      return;
    }
    const suppressed = last?.suppressed || undefined;
    this.#lastByKey.set(key, { at: now, suppressed: 0 });
    this.#write(level, message, { ...fields, suppressed });
  }
}
