/**
 * A scriptable stand-in device for bridge tests, on Deno's own server-side
 * WebSocket (a second, independent WebSocket implementation beside the
 * simulator's). Records every frame it receives and lets a test send frames,
 * go silent, or drop connections.
 */

/** A frame the fake device received. */
export interface Received {
  /** `performance.now()` when it arrived. */
  at: number;
  /** The frame's text. */
  text: string;
}

/** Settings of a {@link FakeDevice}. */
export interface FakeDeviceOptions {
  /** Sent to each new client first; default: a small connect frame (off). */
  connectFrame?: string | null;
  /** Telemetry interval in ms; 0 disables telemetry. */
  telemetryMs?: number;
  /** The chamber temperature its telemetry reports, °C. */
  temperature?: number;
}

/** Connect frame of a device that is off, with secrets a log must never show. */
export const FAKE_SECRETS = ["fake-wifi-pass", "fake-ap-pass", "fake-access-code"];

/** A connect frame with the given `work_on` and target. */
export function connectFrame(workOn: 0 | 1 = 0, setTemp = 40): string {
  return JSON.stringify({
    wifi: { ssid: "home", password: FAKE_SECRETS[0], scan: 0 },
    sta: { hostname: "PandaBreath" },
    ap: { ssid: "PandaBreath", password: FAKE_SECRETS[1], ip: "192.168.254.1" },
    settings: { fw_version: "V1.0.3", work_on: workOn, work_mode: 2, set_temp: setTemp },
    printer: { name: "X1", access_code: FAKE_SECRETS[2], state: 3 },
  });
}

/** A controllable fake Panda Breath on 127.0.0.1. */
export class FakeDevice {
  /** Every frame received, oldest first. */
  readonly received: Received[] = [];
  /** The open client connections. */
  readonly sockets: Set<WebSocket> = new Set<WebSocket>();
  /** Connections accepted in all. */
  connections = 0;
  /** The chamber temperature its telemetry reports, °C. */
  temperature: number;
  /** While true, no telemetry is sent. */
  silent = false;
  /**
   * Sent to each new client first (null: none). A test may change it, e.g. to
   * model what the device persisted after a write.
   */
  connectFrame: string | null;
  #server: Deno.HttpServer<Deno.NetAddr>;
  #telemetry: ReturnType<typeof setInterval> | undefined;
  #waiters = new Set<() => void>();

  /** Starts listening on a free port. */
  constructor(options: FakeDeviceOptions = {}) {
    this.temperature = options.temperature ?? 25;
    this.connectFrame = options.connectFrame === undefined ? connectFrame() : options.connectFrame;
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (request) => this.#handle(request),
    );
    const telemetryMs = options.telemetryMs ?? 100;
    if (telemetryMs > 0) {
      this.#telemetry = setInterval(() => {
        if (!this.silent) this.sendAll(`{"settings":{"warehouse_temper":${this.temperature}}}`);
      }, telemetryMs);
    }
  }

  /** `HOST:PORT` for `--host`. */
  get address(): string {
    return `127.0.0.1:${this.#server.addr.port}`;
  }

  /** The WebSocket URL. */
  get url(): string {
    return `ws://${this.address}/ws`;
  }

  /** Sends `text` to every connected client. */
  sendAll(text: string): void {
    for (const socket of this.sockets) {
      if (socket.readyState === WebSocket.OPEN) socket.send(text);
    }
  }

  /** Closes every client connection. */
  dropAll(): void {
    for (const socket of this.sockets) socket.close();
  }

  /** Resolves with the first received frame after index `from` matching `predicate`. */
  async waitFor(
    predicate: (text: string) => boolean,
    timeoutMs = 3000,
    from = 0,
  ): Promise<Received> {
    const deadline = performance.now() + timeoutMs;
    while (true) {
      const found = this.received.slice(from).find((r) => predicate(r.text));
      if (found) return found;
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no matching frame within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.#waiters.add(done);
      });
    }
  }

  /** Stops the server and every connection. */
  async close(): Promise<void> {
    clearInterval(this.#telemetry);
    for (const waiter of this.#waiters) waiter();
    const closed = [...this.sockets].map((socket) =>
      new Promise<void>((resolve) => {
        if (socket.readyState === WebSocket.CLOSED) return resolve();
        socket.addEventListener("close", () => resolve());
        socket.close();
      })
    );
    await Promise.all(closed);
    await this.#server.shutdown();
  }

  #handle(request: Request): Response {
    if (new URL(request.url).pathname !== "/ws") return new Response("not found", { status: 404 });
    const { socket, response } = Deno.upgradeWebSocket(request);
    this.connections++;
    socket.onopen = () => {
      this.sockets.add(socket);
      if (this.connectFrame !== null) socket.send(this.connectFrame);
    };
    socket.onmessage = (event) => {
      this.received.push({ at: performance.now(), text: String(event.data) });
      for (const waiter of this.#waiters) waiter();
      this.#waiters.clear();
    };
    socket.onclose = () => this.sockets.delete(socket);
    socket.onerror = () => this.sockets.delete(socket);
    return response;
  }
}

/** A device running DragonBreath firmware: `/api/v2/info` names it, every other path is a 404. */
export interface DragonBreathDevice {
  /** The port it listens on (127.0.0.1). */
  port: number;
  /** Paths requested, in order. */
  requests: string[];
  /** Stops the server. */
  shutdown(): Promise<void>;
}

/** Starts a {@link DragonBreathDevice} (firmware 2.1.0) on a free port of 127.0.0.1. */
export function startDragonBreathDevice(): DragonBreathDevice {
  const requests: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const path = new URL(request.url).pathname;
    requests.push(path);
    if (path === "/api/v2/info") {
      return Response.json({ project: "dragonbreath", version: "2.1.0" });
    }
    return new Response("not found", { status: 404 });
  });
  return { port: server.addr.port, requests, shutdown: () => server.shutdown() };
}
