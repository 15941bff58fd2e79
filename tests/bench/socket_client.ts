/**
 * The benchmarks' client of the bridge's socket API: the tests' line-level
 * {@link SocketClient} (every line timestamped with `performance.now()` when
 * its bytes were read, notifications left unparsed), with requests that
 * reject on an error reply, and a cheap reader of a notification's
 * temperature.
 */
import { SocketClient, type TimedReply } from "../socket_client.ts";

export type { TimedReply };

/** Longer than any bench waits for a reply: a request never times out on its own. */
const REQUEST_TIMEOUT_MS = 600_000;

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

/** How often {@link BenchClient.actAsController} heartbeats, ms. */
export const HEARTBEAT_MS = 1000;

/** A connection to the bridge's Unix socket. */
export class BenchClient {
  readonly #client: SocketClient;

  private constructor(client: SocketClient) {
    this.#client = client;
  }

  /** Connects to the socket at `path`. */
  static async connect(path: string): Promise<BenchClient> {
    return new BenchClient(await SocketClient.connect(path, { keepNotifications: 0 }));
  }

  /** Called with each notification line (unparsed) and the time it was read. */
  get onNotification(): ((line: string, at: number) => void) | null {
    return this.#client.onNotification;
  }

  set onNotification(callback: ((line: string, at: number) => void) | null) {
    this.#client.onNotification = callback;
  }

  /** Notification lines received. */
  get notifications(): number {
    return this.#client.notificationCount;
  }

  /** Set once the bridge closed the connection (or it failed). */
  get closedReason(): string | null {
    return this.#client.closed ? "closed by the bridge" : null;
  }

  /** Sends a request; resolves with its reply and the time the reply was read. */
  async request(method: string, params?: Record<string, unknown>): Promise<TimedReply> {
    const reply = await this.#client.timedRequest(method, params, REQUEST_TIMEOUT_MS);
    if (reply.message.closed) throw new Error("closed by the bridge");
    if (reply.message.error) {
      throw new Error(`bridge error: ${JSON.stringify(reply.message.error)}`);
    }
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
    this.#client.startHeartbeat(HEARTBEAT_MS, false);
  }

  /** Closes the connection. */
  async close(): Promise<void> {
    await this.#client.close();
  }
}
