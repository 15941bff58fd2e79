import type { BridgeStatus } from "./bridge.ts";
import { LineSplitter, writeAll } from "./lines.ts";
import { DEFAULT_SOCKET_PATH } from "./options.ts";

/** The result of `hello` (socket API v2). */
export interface HelloResult {
  /** The socket API version (2). */
  protocol: number;
  /** The bridge's version. */
  bridge: string;
  /** Seconds without a ready heartbeat after which heat goes off. */
  failsafe_timeout: number;
  /** Highest target the bridge accepts, °C. */
  max_target: number;
  /** What each fault name in `status.faults` means. */
  fault_descriptions: Record<string, string>;
}

/** An `error` reply from the bridge (`code`: e.g. `out_of_range`, `device_fault`). */
export class ApiError extends Error {
  /** The bridge's error code, e.g. `out_of_range`. */
  readonly code: string;

  /** An error with the bridge's `code` and `message`. */
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/** The bridge is not reachable on its socket. */
export class BridgeUnreachableError extends Error {}

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
}

/**
 * A client of the bridge's socket API: requests with ids matched to replies,
 * and `status` notifications after {@link subscribe}.
 */
export class ApiClient {
  #conn: Deno.UnixConn;
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #onStatus: ((status: BridgeStatus) => void) | null = null;
  #readLoop: Promise<void>;
  #closed = false;

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
    this.#readLoop = this.#read();
  }

  /** Connects to the bridge at `path`. */
  static async connect(path = DEFAULT_SOCKET_PATH): Promise<ApiClient> {
    try {
      return new ApiClient(await Deno.connect({ transport: "unix", path }));
    } catch (error) {
      const reason = error instanceof Deno.errors.NotFound
        ? "no socket there"
        : error instanceof Deno.errors.ConnectionRefused
        ? "nobody listening"
        : (error as Error).message;
      throw new BridgeUnreachableError(
        `cannot reach the bridge at ${path} (${reason}); is 'panda-breath run' running?`,
      );
    }
  }

  /** Sends a request and resolves with its `result`; rejects with {@link ApiError}. */
  async request(method: string, params?: Record<string, unknown>): Promise<unknown> {
    if (this.#closed) throw new BridgeUnreachableError("connection to the bridge is closed");
    const id = this.#nextId++;
    const reply = new Promise<unknown>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
    });
    const line = JSON.stringify(params === undefined ? { id, method } : { id, method, params });
    await writeAll(this.#conn, new TextEncoder().encode(line + "\n"));
    return await reply;
  }

  /** Says hello; `controller: true` makes this connection a controller (socket API v2). */
  async hello(
    params: { client?: string; controller?: boolean; ready?: boolean } = {},
  ): Promise<HelloResult> {
    return await this.request("hello", params) as HelloResult;
  }

  /** A controller's heartbeat; only `ready: true` counts as someone in control. */
  async heartbeat(ready: boolean): Promise<{ failsafe_timeout: number }> {
    return await this.request("heartbeat", { ready }) as { failsafe_timeout: number };
  }

  /** Subscribes to status notifications, delivered to `onStatus`. */
  async subscribe(onStatus: (status: BridgeStatus) => void): Promise<void> {
    this.#onStatus = onStatus;
    await this.request("subscribe");
  }

  /** Closes the connection; pending requests are rejected. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.#conn.close();
      } catch {
        // Already closed by the bridge.
      }
    }
    await this.#readLoop;
  }

  async #read(): Promise<void> {
    const splitter = new LineSplitter(16 * 1024 * 1024);
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        for (const line of splitter.push(buffer.subarray(0, n)) ?? []) {
          this.#handle(JSON.parse(decoder.decode(line)));
        }
      }
    } catch {
      // Closed: pending requests are rejected below.
    }
    this.#closed = true;
    for (const { reject } of this.#pending.values()) {
      reject(new BridgeUnreachableError("the bridge closed the connection"));
    }
    this.#pending.clear();
  }

  #handle(message: Record<string, unknown>): void {
    if (message.method === "status" && message.id === undefined) {
      this.#onStatus?.(message.params as BridgeStatus);
      return;
    }
    const pending = this.#pending.get(message.id as number);
    if (!pending) return;
    this.#pending.delete(message.id as number);
    const error = message.error as { code: string; message: string } | undefined;
    if (error) pending.reject(new ApiError(error.code, error.message));
    else pending.resolve(message.result);
  }
}
