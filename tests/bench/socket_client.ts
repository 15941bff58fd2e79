/**
 * A minimal client of the bridge's socket API for the benchmarks: every
 * line is timestamped with `performance.now()` when its bytes were read, so
 * latencies are measured on the same clock as the bench's own sends.
 */

/** A reply with the time its bytes were read. */
export interface TimedReply {
  at: number;
  message: Record<string, unknown>;
}

interface Pending {
  resolve(reply: TimedReply): void;
  reject(error: Error): void;
}

const encoder = new TextEncoder();

/**
 * The top-level `temperature` of a status notification line, read without
 * parsing the whole line (the first `"temperature":` key is the top-level one;
 * `"temperature_age":` does not match). `undefined` when absent, null as null.
 * `key` reads another number the same way.
 */
export function notificationTemperature(
  line: string,
  key = '"temperature":',
): number | null | undefined {
  const start = line.indexOf(key);
  if (start === -1) return undefined;
  const from = start + key.length;
  let end = from;
  while (end < line.length && line[end] !== "," && line[end] !== "}") end++;
  const text = line.slice(from, end);
  return text === "null" ? null : Number(text);
}

/** A connection to the bridge's Unix socket. */
export class BenchClient {
  /** Called with each notification line (unparsed) and the time it was read. */
  onNotification: ((line: string, at: number) => void) | null = null;
  /** Notification lines received. */
  notifications = 0;
  /** Set once the bridge closed the connection (or it failed). */
  closedReason: string | null = null;
  #conn: Deno.UnixConn;
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #readLoop: Promise<void>;
  #heartbeat: ReturnType<typeof setInterval> | undefined;

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
    this.#readLoop = this.#read();
  }

  /** Connects to the socket at `path`. */
  static async connect(path: string): Promise<BenchClient> {
    return new BenchClient(await Deno.connect({ transport: "unix", path }));
  }

  /** Sends a request; resolves with its reply and the time the reply was read. */
  request(method: string, params?: Record<string, unknown>): Promise<TimedReply> {
    const id = this.#nextId++;
    const line = JSON.stringify(params ? { id, method, params } : { id, method }) + "\n";
    const reply = new Promise<TimedReply>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
    });
    this.#write(encoder.encode(line));
    return reply;
  }

  /**
   * Acts like a ready Klipper extra (socket API v2): hello as a controller,
   * subscribe, heartbeat `{ready: true}` now and every second.
   */
  async actAsController(subscribe = true): Promise<void> {
    await this.request("hello", { client: "bench", controller: true, ready: true });
    if (subscribe) await this.request("subscribe");
    await this.request("heartbeat", { ready: true });
    this.#heartbeat = setInterval(() => {
      this.request("heartbeat", { ready: true }).catch(() => {});
    }, 1000);
  }

  /** Closes the connection. */
  async close(): Promise<void> {
    clearInterval(this.#heartbeat);
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
    await this.#readLoop;
  }

  async #write(bytes: Uint8Array): Promise<void> {
    try {
      let written = 0;
      while (written < bytes.byteLength) written += await this.#conn.write(bytes.subarray(written));
    } catch (error) {
      this.#fail(`write failed: ${(error as Error).message}`);
    }
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(256 * 1024);
    const decoder = new TextDecoder();
    let partial = "";
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        const at = performance.now();
        const text = partial + decoder.decode(buffer.subarray(0, n), { stream: true });
        let start = 0;
        for (
          let newline = text.indexOf("\n");
          newline !== -1;
          newline = text.indexOf("\n", start)
        ) {
          this.#line(text.slice(start, newline), at);
          start = newline + 1;
        }
        partial = text.slice(start);
      }
      this.#fail("closed by the bridge");
    } catch (error) {
      this.#fail(`read failed: ${(error as Error).message}`);
    }
  }

  #line(line: string, at: number): void {
    if (line.startsWith('{"method"')) {
      this.notifications++;
      this.onNotification?.(line, at);
      return;
    }
    const message = JSON.parse(line) as Record<string, unknown>;
    const pending = this.#pending.get(message.id as number);
    if (!pending) return;
    this.#pending.delete(message.id as number);
    if (message.error) {
      pending.reject(new Error(`bridge error: ${JSON.stringify(message.error)}`));
    } else {
      pending.resolve({ at, message });
    }
  }

  #fail(reason: string): void {
    this.closedReason ??= reason;
    clearInterval(this.#heartbeat);
    for (const pending of this.#pending.values()) pending.reject(new Error(reason));
    this.#pending.clear();
  }
}
