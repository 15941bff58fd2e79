/**
 * A line-level client of the bridge's socket API for the tests and the
 * benchmarks, for what the product's `lib/api_client.ts` cannot do: raw and
 * malformed writes, whole reply messages (errors included), every line in
 * arrival order, read times, and a connection that never reads.
 *
 * Every line read is timestamped with `performance.now()` when its bytes
 * arrived, so latencies are measured on the caller's clock.
 */

/** A reply or notification on the socket API. */
// deno-lint-ignore no-explicit-any
export type ApiMessage = Record<string, any>;

/** A reply with the time its bytes were read. */
export interface TimedReply {
  /** `performance.now()` when the reply's bytes were read. */
  at: number;
  /** The whole reply. */
  message: ApiMessage;
}

/** Options of {@link SocketClient.connect}. */
export interface SocketClientOptions {
  /** Parsed notifications kept in {@link SocketClient.notifications} (default 50; 0: none parsed). */
  keepNotifications?: number;
  /** Keep every line for {@link SocketClient.nextLine} (default false). */
  inbox?: boolean;
  /** Read nothing: a client that never reads (default true: read). */
  reads?: boolean;
  /** Called with every line read (unparsed), e.g. to scan it. */
  onLine?: (line: string) => void;
}

interface Pending {
  resolve(reply: TimedReply): void;
}

const encoder = new TextEncoder();
const KEPT_REPLIES = 5000;

/** A connection to the bridge's Unix socket. */
export class SocketClient {
  /** The Unix connection. */
  readonly conn: Deno.UnixConn;
  /** Replies received (the last 5000). */
  readonly replies: ApiMessage[] = [];
  /** The last `keepNotifications` notifications. */
  readonly notifications: ApiMessage[] = [];
  /** Notifications received in all. */
  notificationCount = 0;
  /** Called with each notification line (unparsed) and the time it was read. */
  onNotification: ((line: string, at: number) => void) | null = null;
  /** Set once the connection ended. */
  closed = false;
  #options: SocketClientOptions;
  #pending = new Map<unknown, Pending>();
  #inbox: (ApiMessage | null)[] = [];
  #inboxWaiter: (() => void) | null = null;
  #nextId = 1;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #reader: Promise<void>;

  private constructor(conn: Deno.UnixConn, options: SocketClientOptions) {
    this.conn = conn;
    this.#options = options;
    this.#reader = options.reads === false ? Promise.resolve() : this.#read();
  }

  /** Connects to the bridge's socket at `path`. */
  static async connect(path: string, options: SocketClientOptions = {}): Promise<SocketClient> {
    const conn = await Deno.connect({ transport: "unix", path });
    return new SocketClient(conn, options);
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(256 * 1024);
    const decoder = new TextDecoder();
    let partial = "";
    try {
      while (true) {
        const n = await this.conn.read(buffer);
        if (n === null) break;
        const at = performance.now();
        const text = partial + decoder.decode(buffer.subarray(0, n), { stream: true });
        let start = 0;
        for (let end = text.indexOf("\n"); end !== -1; end = text.indexOf("\n", start)) {
          const line = text.slice(start, end);
          start = end + 1;
          if (line.trim() !== "") this.#line(line, at);
        }
        partial = text.slice(start);
      }
    } catch {
      // Reset by the bridge.
    } finally {
      this.closed = true;
      clearInterval(this.#heartbeat);
      for (const pending of this.#pending.values()) {
        pending.resolve({ at: performance.now(), message: { id: null, closed: true } });
      }
      this.#pending.clear();
      this.#deliver(null);
    }
  }

  #line(line: string, at: number): void {
    this.#options.onLine?.(line);
    const keep = this.#options.keepNotifications ?? 50;
    if (line.startsWith('{"method"')) {
      this.notificationCount++;
      this.onNotification?.(line, at);
      if (keep === 0 && !this.#options.inbox) return;
      const message = JSON.parse(line) as ApiMessage;
      if (keep > 0) {
        this.notifications.push(message);
        if (this.notifications.length > keep) this.notifications.shift();
      }
      if (this.#options.inbox) this.#deliver(message);
      return;
    }
    const message = JSON.parse(line) as ApiMessage;
    this.replies.push(message);
    if (this.replies.length > KEPT_REPLIES) this.replies.shift();
    if (this.#options.inbox) this.#deliver(message);
    const pending = this.#pending.get(message.id);
    this.#pending.delete(message.id);
    pending?.resolve({ at, message });
  }

  #deliver(message: ApiMessage | null): void {
    if (!this.#options.inbox) return;
    this.#inbox.push(message);
    this.#inboxWaiter?.();
  }

  /**
   * The next line (reply or notification) in arrival order, parsed; null once
   * the connection ended. Needs `inbox: true`.
   */
  async nextLine(): Promise<ApiMessage | null> {
    if (!this.#options.inbox) throw new Error("connected without inbox: true");
    while (this.#inbox.length === 0) {
      await new Promise<void>((resolve) => this.#inboxWaiter = resolve);
      this.#inboxWaiter = null;
    }
    const message = this.#inbox[0];
    if (message !== null) this.#inbox.shift();
    return message;
  }

  /** Writes raw bytes (a string is UTF-8 encoded). */
  async write(bytes: Uint8Array | string): Promise<void> {
    const data = typeof bytes === "string" ? encoder.encode(bytes) : bytes;
    let written = 0;
    while (written < data.length) written += await this.conn.write(data.subarray(written));
  }

  /**
   * Sends a request and resolves with its whole reply and the time it was read
   * (`{id: null, closed: true}` if the connection ends first).
   */
  async timedRequest(
    method: string,
    params?: Record<string, unknown>,
    timeoutMs = 5000,
  ): Promise<TimedReply> {
    const id = this.#nextId++;
    const reply = new Promise<TimedReply>((resolve) => this.#pending.set(id, { resolve }));
    await this.write(JSON.stringify(params ? { id, method, params } : { id, method }) + "\n");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no reply to ${method} in ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([reply, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends a request and resolves with its whole reply (`{closed: true}` if the link dies). */
  async request(
    method: string,
    params?: Record<string, unknown>,
    timeoutMs = 5000,
  ): Promise<ApiMessage> {
    return (await this.timedRequest(method, params, timeoutMs)).message;
  }

  /** Sends `set_target` and throws unless it was accepted. */
  async setTarget(target: number): Promise<void> {
    const reply = await this.request("set_target", { target });
    if (!reply.result || reply.result.target !== target) {
      throw new Error(`set_target ${target} failed: ${JSON.stringify(reply)}`);
    }
  }

  /** The bridge's status. */
  async status(): Promise<ApiMessage> {
    const reply = await this.request("status");
    if (!reply.result) throw new Error(`status failed: ${JSON.stringify(reply)}`);
    return reply.result;
  }

  /**
   * Heartbeats now (unless `now` is false) and every `intervalMs` like a ready
   * Klipper extra (socket API v2: `{ready: true}`), making this a controller
   * whose heartbeats count.
   */
  startHeartbeat(intervalMs = 500, now = true): void {
    if (now) this.request("heartbeat", { ready: true }).catch(() => {});
    this.#heartbeat = setInterval(() => {
      if (!this.closed) this.request("heartbeat", { ready: true }).catch(() => {});
    }, intervalMs);
  }

  /** Stops the heartbeats. */
  stopHeartbeat(): void {
    clearInterval(this.#heartbeat);
  }

  /** Closes the connection and waits for the reader. */
  async close(): Promise<void> {
    this.stopHeartbeat();
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
    await this.#reader;
  }
}
