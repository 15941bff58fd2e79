/** Log levels in increasing verbosity. */
export const LOG_LEVELS = ["error", "warn", "info", "debug"] as const;

/** One of {@link LOG_LEVELS}. */
export type LogLevel = typeof LOG_LEVELS[number];

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

/**
 * A levelled logger writing one line per event:
 * `2026-11-24T10:00:00.000Z INFO device connected host=10.0.0.5`.
 *
 * Logging never throws: a line the sink cannot take (a full disk, a closed
 * stderr, a sink that throws) is dropped and counted in {@link writeFailures}.
 * Nothing that actuates the heater may depend on a log line being written.
 */
export class Logger {
  #rank: number;
  #sink: LogSink;
  #lastByKey = new Map<string, { at: number; suppressed: number }>();
  #writeFailures = 0;

  /** A logger at `level` writing to `sink` (stderr by default). */
  constructor(level: LogLevel = "info", sink: LogSink = stderrSink) {
    this.#rank = LOG_LEVELS.indexOf(level);
    this.#sink = sink;
  }

  /** Whether messages at `level` are written. */
  enabled(level: LogLevel): boolean {
    return LOG_LEVELS.indexOf(level) <= this.#rank;
  }

  /** Lines the sink failed to take (dropped), since the logger was made. */
  get writeFailures(): number {
    return this.#writeFailures;
  }

  /** Writes `message` with `key=value` fields at `level`; never throws. */
  log(level: LogLevel, message: string, fields: Record<string, unknown> = {}): void {
    try {
      if (!this.enabled(level)) return;
      const parts = [new Date().toISOString(), level.toUpperCase(), message];
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
    this.log(level, message, { ...fields, suppressed });
  }
}
