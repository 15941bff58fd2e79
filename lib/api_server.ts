import type { Bridge, BridgeStatus } from "./bridge.ts";
import { type LastSent, sendAt, urgentPart } from "./coalesce.ts";
import type { ReplyEffect } from "./core.ts";
import { LineSplitter } from "./lines.ts";
import type { Logger } from "./log.ts";

/** Caps on what socket clients may cost the bridge. */
export interface ApiLimits {
  /** Longest request line, in bytes. */
  maxLineBytes: number;
  /**
   * Bytes queued for one client. At the cap, queued status notifications give way to the newest one
   * (a burst of device frames must not cut off a client that reads); a client still over it is cut
   * off.
   */
  maxQueuedBytes: number;
  /**
   * A client whose socket has taken nothing for this long while data waits (it does not read) is
   * cut off.
   */
  maxStallMs: number;
  /** Simultaneous clients; more are told so and closed. */
  maxClients: number;
}

/** The default caps (documented in the README). */
export const API_LIMITS: Readonly<ApiLimits> = {
  maxLineBytes: 64 * 1024,
  maxQueuedBytes: 256 * 1024,
  maxStallMs: 1000,
  maxClients: 64,
};

/** Error codes of the socket API (see README). */
export type ApiErrorCode =
  | "parse_error"
  | "invalid_request"
  | "unknown_method"
  | "invalid_params"
  | "out_of_range"
  | "device_fault"
  | "lease_unavailable"
  | "unsupported_firmware"
  | "line_too_long"
  | "too_many_clients";

/** File mode of the socket unless given: owner and group (Klipper's user) may connect. */
export const DEFAULT_SOCKET_MODE = 0o660;

/** Settings of an {@link ApiServer}. */
export interface ApiServerOptions {
  /** Where the Unix socket is created. */
  path: string;
  /** The bridge that requests go to. */
  bridge: Bridge;
  /** Where client events are logged. */
  logger: Logger;
  /** File mode of the socket; 0o600 or 0o660 ({@link DEFAULT_SOCKET_MODE}). */
  mode?: number;
  /** Overrides of {@link API_LIMITS}. */
  limits?: Partial<ApiLimits>;
}

type Reply = { id: unknown; result: unknown } | {
  id: unknown;
  error: { code: ApiErrorCode; message: string };
};

const encoder = new TextEncoder();

function encodeLine(message: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(message) + "\n");
}

function errorReply(id: unknown, code: ApiErrorCode, message: string): Reply {
  return { id, error: { code, message } };
}

/** Thrown when the socket path cannot be taken (a live bridge, not a socket, no permission). */
export class SocketInUseError extends Error {}

async function isSocketAlive(path: string): Promise<boolean> {
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes `path` free for a new socket: refuses when a live bridge holds it
 * or it is not a socket; removes a stale socket left by a killed bridge.
 */
async function claimSocketPath(path: string, logger: Logger): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  if (!info.isSocket) {
    throw new SocketInUseError(`${path} exists and is not a socket; remove it or choose --socket`);
  }
  if (await isSocketAlive(path)) {
    throw new SocketInUseError(
      `another bridge is already running on ${path}; stop it first or choose another --socket`,
    );
  }
  logger.warn("replacing stale socket left by a previous bridge", { path });
  Deno.removeSync(path);
}

function dirname(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash <= 0 ? "/" : path.slice(0, slash);
}

/** A line waiting to be written; `status` lines may be superseded by a newer status. */
interface QueuedLine {
  bytes: Uint8Array;
  status: boolean;
}

/** One connected socket client. */
class ApiClientConnection {
  readonly label: string;
  subscribed = false;
  controller = false;
  #conn: Deno.UnixConn;
  #queue: QueuedLine[] = [];
  #queuedBytes = 0;
  #writing = false;
  #writeStartedAt = 0;
  #closed = false;
  #limits: ApiLimits;
  #onClose: () => void;
  #lastStatus: LastSent = { at: null, urgent: null };
  #pendingStatus: BridgeStatus | null = null;
  #statusTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(conn: Deno.UnixConn, label: string, limits: ApiLimits, onClose: () => void) {
    this.#conn = conn;
    this.label = label;
    this.#limits = limits;
    this.#onClose = onClose;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get conn(): Deno.UnixConn {
    return this.#conn;
  }

  /**
   * Queues a line; returns false (and closes) when the client does not read.
   * A `status` notification that would pass the cap replaces the queued ones
   * instead: each status reflects everything before it, so order holds.
   */
  send(bytes: Uint8Array, status = false): boolean {
    if (this.#closed) return false;
    const cap = this.#limits.maxQueuedBytes;
    if (status && this.#queuedBytes + bytes.byteLength > cap) this.#dropQueuedStatus();
    const stalled = this.#writing &&
      performance.now() - this.#writeStartedAt > this.#limits.maxStallMs;
    if (stalled || this.#queuedBytes + bytes.byteLength > cap) {
      this.close();
      return false;
    }
    this.#queue.push({ bytes, status });
    this.#queuedBytes += bytes.byteLength;
    if (!this.#writing) this.#pump();
    return true;
  }

  /**
   * Sends a status notification now, or keeps it as the newest pending one
   * until the gap of lib/coalesce.ts has passed; false when the client was cut off.
   */
  notify(status: BridgeStatus, immediately = false): boolean {
    if (this.#closed) return false;
    const now = performance.now();
    const urgent = urgentPart(status);
    const at = immediately ? now : sendAt(this.#lastStatus, urgent, now);
    if (at <= now) return this.#sendStatus(status, urgent, now);
    this.#pendingStatus = status;
    this.#statusTimer ??= setTimeout(() => {
      this.#statusTimer = undefined;
      const pending = this.#pendingStatus;
      if (pending !== null) this.#sendStatus(pending, urgentPart(pending), performance.now());
    }, at - now);
    return true;
  }

  #sendStatus(status: BridgeStatus, urgent: string, now: number): boolean {
    this.#pendingStatus = null;
    clearTimeout(this.#statusTimer);
    this.#statusTimer = undefined;
    this.#lastStatus = { at: now, urgent };
    return this.send(encodeLine({ method: "status", params: status }), true);
  }

  /** Bytes waiting to be written to this client. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /**
   * Resolves once at most `limit` bytes are queued, or the client is closed:
   * one that takes nothing for `maxStallMs` while data waits is cut off.
   */
  async drain(limit: number): Promise<void> {
    while (!this.#closed && this.#queuedBytes > limit) {
      if (this.#writing && performance.now() - this.#writeStartedAt > this.#limits.maxStallMs) {
        this.close();
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  #dropQueuedStatus(): void {
    this.#queue = this.#queue.filter((line) => {
      if (line.status) this.#queuedBytes -= line.bytes.byteLength;
      return !line.status;
    });
  }

  /**
   * Writes the queue's next line, then the next one when that write completes:
   * one write in flight, chained by its own promise (no async function per
   * line: this runs for every status notification).
   */
  #pump(): void {
    const line = this.#queue.shift();
    if (line === undefined || this.#closed) {
      this.#writing = false;
      return;
    }
    this.#writing = true;
    this.#writeFrom(line.bytes);
  }

  #writeFrom(bytes: Uint8Array): void {
    this.#writeStartedAt = performance.now();
    let writing: Promise<number>;
    try {
      writing = this.#conn.write(bytes);
    } catch {
      return this.#writeFailed();
    }
    writing.then((written) => {
      this.#queuedBytes -= written;
      if (written < bytes.byteLength) this.#writeFrom(bytes.subarray(written));
      else this.#pump();
    }, this.#writeFailed);
  }

  /** One per connection, not one per write. */
  #writeFailed = (): void => {
    this.#writing = false;
    this.close();
  };

  /** Sends what is queued (bounded by `timeoutMs`), then closes. */
  async flushAndClose(timeoutMs = 200): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (
      (this.#queue.length > 0 || this.#writing) && !this.#closed && performance.now() < deadline
    ) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    this.close();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    this.#pendingStatus = null;
    clearTimeout(this.#statusTimer);
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer.
    }
    this.#onClose();
  }
}

/**
 * The local socket API: newline-delimited JSON over a Unix socket (see
 * README, "Socket API"). Several clients at once; a slow client is cut off
 * after a bounded queue and never blocks the others.
 */
export class ApiServer {
  /** The socket's path. */
  readonly path: string;
  #listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
  #bridge: Bridge;
  #logger: Logger;
  #limits: ApiLimits;
  #clients = new Set<ApiClientConnection>();
  #tasks = new Set<Promise<void>>();
  #nextClient = 1;
  /** Stops the bridge's status listener; null while no client is subscribed. */
  #unsubscribe: (() => void) | null = null;
  #acceptLoop: Promise<void>;

  private constructor(
    listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>,
    options: ApiServerOptions,
  ) {
    this.path = options.path;
    this.#listener = listener;
    this.#bridge = options.bridge;
    this.#logger = options.logger;
    this.#limits = { ...API_LIMITS, ...options.limits };
    this.#acceptLoop = this.#accept();
  }

  /**
   * Listens on `options.path` with the given mode. The socket is bound in a
   * private directory, given its mode, then moved into place, so it is never
   * reachable with looser permissions.
   */
  static async listen(options: ApiServerOptions): Promise<ApiServer> {
    const mode = options.mode ?? DEFAULT_SOCKET_MODE;
    if (mode !== 0o600 && mode !== 0o660) throw new RangeError("socket mode must be 0600 or 0660");
    await claimSocketPath(options.path, options.logger);
    // Sync file operations: once at start-up, and async ones would start
    // Tokio's blocking-thread pool for them (about 1 MiB of RSS, measured).
    const privateDir = Deno.makeTempDirSync({ dir: dirname(options.path), prefix: ".pb-" });
    const bindPath = `${privateDir}/s`;
    let listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr> | undefined;
    try {
      listener = Deno.listen({ transport: "unix", path: bindPath });
      Deno.chmodSync(bindPath, mode);
      Deno.renameSync(bindPath, options.path);
    } catch (error) {
      listener?.close();
      throw error;
    } finally {
      try {
        Deno.removeSync(privateDir, { recursive: true });
      } catch {
        // Already gone.
      }
    }
    options.logger.info("socket API listening", {
      path: options.path,
      mode: `0${mode.toString(8)}`,
    });
    return new ApiServer(listener, options);
  }

  /** Number of connected clients. */
  get clientCount(): number {
    return this.#clients.size;
  }

  /** Stops listening, closes every client and removes the socket file. */
  async close(): Promise<void> {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    await this.#acceptLoop;
    for (const client of this.#clients) client.close();
    await Promise.all(this.#tasks);
    await Deno.remove(this.path).catch(() => {});
  }

  async #accept(): Promise<void> {
    while (true) {
      let conn: Deno.UnixConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return;
      }
      const label = `socket#${this.#nextClient++}`;
      const client = new ApiClientConnection(
        conn,
        label,
        this.#limits,
        () => this.#onClientClosed(client),
      );
      if (this.#clients.size >= this.#limits.maxClients) {
        this.#logger.limited("too-many-clients", 10_000, "warn", "socket client refused", {
          reason: "too many clients",
          max: this.#limits.maxClients,
        });
        client.send(encodeLine(errorReply(null, "too_many_clients", "too many clients")));
        client.flushAndClose();
        continue;
      }
      this.#clients.add(client);
      this.#logger.debug("socket client connected", { client: label });
      const task = this.#serve(client).finally(() => this.#tasks.delete(task));
      this.#tasks.add(task);
    }
  }

  #onClientClosed(client: ApiClientConnection): void {
    if (!this.#clients.delete(client)) return;
    if (client.subscribed) this.#listenWhileSubscribed();
    // A controller's connection closing is an event for the failsafe (OFF at once
    // when it was the last ready one and heat is on); the core logs it.
    if (client.controller) this.#bridge.controllerGone({ client: client.label });
    else this.#logger.debug("socket client disconnected", { client: client.label });
  }

  /**
   * Reads and answers one client. Only socket errors end it quietly; an
   * error in handling a request is a bug and propagates (the process's
   * catch-all turns the heater off and exits, see lib/cli.ts).
   */
  async #serve(client: ApiClientConnection): Promise<void> {
    const splitter = new LineSplitter(this.#limits.maxLineBytes);
    const buffer = new Uint8Array(16 * 1024);
    const decoder = new TextDecoder("utf-8", { fatal: true });
    try {
      while (!client.closed) {
        let n: number | null;
        try {
          n = await client.conn.read(buffer);
        } catch {
          break; // Reset by the peer or closed by us: nothing to answer.
        }
        if (n === null) break;
        const lines = splitter.push(buffer.subarray(0, n));
        if (lines === null) {
          this.#logger.limited(
            "line-too-long",
            10_000,
            "warn",
            "socket client sent an oversized line",
            {
              client: client.label,
              max_bytes: this.#limits.maxLineBytes,
            },
          );
          client.send(encodeLine(errorReply(
            null,
            "line_too_long",
            `request lines are limited to ${this.#limits.maxLineBytes} bytes`,
          )));
          await client.flushAndClose();
          break;
        }
        for (const line of lines) {
          if (client.closed) break;
          const reply = this.#handleLine(client, line, decoder);
          if (reply) client.send(encodeLine(reply));
          // A client that pipelines many requests is answered at the pace it reads:
          // its next request waits while half the queue cap is taken.
          if (client.queuedBytes > this.#limits.maxQueuedBytes / 2) {
            await client.drain(this.#limits.maxQueuedBytes / 4);
          }
        }
      }
    } finally {
      client.close();
    }
  }

  #handleLine(
    client: ApiClientConnection,
    line: Uint8Array,
    decoder: TextDecoder,
  ): Reply | null {
    let text: string;
    try {
      text = decoder.decode(line).trim();
    } catch {
      return errorReply(null, "parse_error", "request is not valid UTF-8");
    }
    if (text === "") return null;
    let request: unknown;
    try {
      request = JSON.parse(text);
    } catch {
      return errorReply(null, "parse_error", "request is not valid JSON");
    }
    if (typeof request !== "object" || request === null || Array.isArray(request)) {
      return errorReply(null, "parse_error", "request must be a JSON object");
    }
    const { id, method, params } = request as Record<string, unknown>;
    const validId = typeof id === "string" || (typeof id === "number" && Number.isFinite(id));
    if (!validId) {
      return errorReply(null, "invalid_request", "request needs an id (number or string)");
    }
    if (typeof method !== "string") {
      return errorReply(id, "invalid_request", "request needs a method");
    }
    if (
      params !== undefined &&
      (typeof params !== "object" || params === null || Array.isArray(params))
    ) {
      return errorReply(id, "invalid_params", "params must be an object");
    }
    return this.#dispatch(client, id, method, (params ?? {}) as Record<string, unknown>);
  }

  /**
   * Answers one request. Requests that concern the heater go to the bridge's
   * decision core, whose reply is queued after its sends and before its
   * notifications (so nothing here returns them).
   */
  #dispatch(
    client: ApiClientConnection,
    id: unknown,
    method: string,
    params: Record<string, unknown>,
  ): Reply | null {
    const bridge = this.#bridge;
    const source = client.label;
    const respond = (reply: ReplyEffect, becomesController = false) => {
      if (reply.ok && becomesController) client.controller = true;
      client.send(encodeLine(
        reply.ok ? { id, result: reply.result } : errorReply(
          id,
          reply.code,
          reply.message,
        ),
      ));
    };
    switch (method) {
      case "hello":
        bridge.request(
          { type: "hello", client: source, params },
          (reply) => respond(reply, params.controller === true),
        );
        return null;
      case "status":
        return { id, result: bridge.status() };
      case "set_target":
        bridge.request({ type: "set_target", client: source, value: params.target }, respond);
        return null;
      case "off":
        bridge.request({ type: "off", client: source }, respond);
        return null;
      case "heartbeat":
        bridge.request(
          { type: "heartbeat", client: source, ready: params.ready },
          (reply) => respond(reply, true),
        );
        return null;
      case "subscribe":
        // The reply first, then the current status: nothing may come between them.
        client.send(encodeLine({ id, result: { subscribed: true } }));
        client.subscribed = true;
        this.#listenWhileSubscribed();
        client.notify(bridge.status(), true);
        return null;
      default:
        return errorReply(id, "unknown_method", `unknown method '${method.slice(0, 64)}'`);
    }
  }

  /**
   * Listens to the bridge's statuses only while a client is subscribed: with
   * none, the bridge builds no status per device frame.
   */
  #listenWhileSubscribed(): void {
    const wanted = [...this.#clients].some((client) => client.subscribed && !client.closed);
    if (wanted && this.#unsubscribe === null) {
      this.#unsubscribe = this.#bridge.subscribe((status) => this.#broadcast(status));
    } else if (!wanted && this.#unsubscribe !== null) {
      this.#unsubscribe();
      this.#unsubscribe = null;
    }
  }

  #broadcast(status: BridgeStatus): void {
    for (const client of this.#clients) {
      if (!client.subscribed) continue;
      if (!client.notify(status)) {
        this.#logger.warn("socket client cut off: not reading its notifications", {
          client: client.label,
          max_queued_bytes: this.#limits.maxQueuedBytes,
        });
      }
    }
  }
}
