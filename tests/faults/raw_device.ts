/**
 * A hostile Panda Breath on raw TCP (`Deno.listen`): every byte on the wire
 * is under the test's control, so it can answer like a device, like a web
 * server that is not one, or not at all; split, merge or corrupt frames;
 * close with or without a close frame (a bare TCP reset needs rst_proxy.py).
 *
 * It keeps the device's persisted settings the way the firmware does
 * (`work_on` only as a JSON boolean, `set_temp` as an unclamped byte,
 * `work_mode` 0 ignored), across connections and "reboots".
 */
import { SIMULATOR_SECRETS, toDeviceByte } from "../../lib/simulator/mod.ts";
import {
  computeAcceptKey,
  encodeCloseFrame,
  encodeFrame,
  Opcode,
  parseFrame,
} from "./ws_frames.ts";
import { delay } from "./harness.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The persisted heating settings of the device. */
export interface DeviceModel {
  work_on: boolean;
  work_mode: number;
  set_temp: number;
}

/** What a connection does once accepted. */
export type Behavior = (session: RawSession) => Promise<void>;

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a);
  joined.set(b, a.length);
  return joined;
}

/** The device's connect frame for `model` (with the simulator's fake secrets). */
export function connectFrameFor(model: DeviceModel): string {
  return JSON.stringify({
    wifi: { ssid: "RawWiFi", password: SIMULATOR_SECRETS[0], scan: 0 },
    sta: { hostname: "PandaBreath" },
    ap: { ssid: "PandaBreath-RAW", password: SIMULATOR_SECRETS[1], ip: "192.168.254.1" },
    settings: {
      fw_version: "V1.0.3",
      work_on: model.work_on ? 1 : 0,
      work_mode: model.work_mode,
      set_temp: model.set_temp,
      isrunning: 0,
    },
    printer: { name: "Raw P1S", access_code: SIMULATOR_SECRETS[2], state: 3 },
  });
}

/** A temperature frame. */
export function telemetryFrame(celsius = 30): string {
  return `{"settings":{"warehouse_temper":${celsius}}}`;
}

/** One accepted TCP connection. */
export class RawSession {
  readonly conn: Deno.TcpConn;
  readonly device: RawDevice;
  /** The request head, once read. */
  head = "";
  closed = false;
  /** Who ended the connection: this device (abort) or the client (EOF/reset). */
  closedBy: "device" | "client" | null = null;
  /**
   * A half-open link: neither reads nor writes while set (the TCP connection
   * stays up, so the bridge can only notice from the silence).
   */
  frozen = false;
  /** Text frames received on this connection. */
  readonly frames: string[] = [];
  #buffer: Uint8Array = new Uint8Array();
  #reading: Promise<void> | null = null;
  #writes: Promise<unknown> = Promise.resolve();

  constructor(conn: Deno.TcpConn, device: RawDevice) {
    this.conn = conn;
    this.device = device;
  }

  /** Reads the HTTP request head; null when the peer closed first. */
  async readHead(): Promise<string | null> {
    const chunk = new Uint8Array(4096);
    while (true) {
      const text = decoder.decode(this.#buffer);
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        this.head = text.slice(0, end);
        this.#buffer = this.#buffer.slice(encoder.encode(text.slice(0, end + 4)).length);
        return this.head;
      }
      if (this.#buffer.length > 16 * 1024) return null;
      let n: number | null;
      try {
        n = await this.conn.read(chunk);
      } catch {
        return null;
      }
      if (n === null) return null;
      this.#buffer = concat(this.#buffer, chunk.subarray(0, n));
    }
  }

  /** The 101 response for the request read by {@link readHead}. */
  async handshake(acceptOverride?: string): Promise<Uint8Array> {
    const key = /^sec-websocket-key:\s*(\S+)\s*$/im.exec(this.head)?.[1] ?? "";
    const accept = acceptOverride ?? await computeAcceptKey(key);
    return encoder.encode(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
  }

  /** Reads the head and answers 101 followed by `frames` in the same write. */
  async upgrade(frames: string[] = [connectFrameFor(this.device.model)]): Promise<boolean> {
    if ((await this.readHead()) === null) return false;
    let bytes = await this.handshake();
    for (const frame of frames) bytes = concat(bytes, encodeFrame(Opcode.text, frame));
    this.device.upgrades++;
    this.upgraded = await this.write(bytes);
    return this.upgraded;
  }

  /**
   * The 101 (and connect frame) went out: this is a WebSocket link. (The
   * bridge writes nothing on a link whose connect frame already matches, so
   * its frames do not tell the link apart.)
   */
  upgraded = false;

  /** Writes raw bytes; false when the connection is gone. */
  write(bytes: Uint8Array): Promise<boolean> {
    const next = this.#writes.then(async () => {
      if (this.closed) return false;
      try {
        let written = 0;
        while (written < bytes.length) written += await this.conn.write(bytes.subarray(written));
        return true;
      } catch {
        return false;
      }
    });
    this.#writes = next;
    return next;
  }

  /** Sends one text frame. */
  sendText(text: string): Promise<boolean> {
    return this.write(encodeFrame(Opcode.text, text));
  }

  /** Starts reading client frames (applied to the device model) until the connection ends. */
  startReading(): Promise<void> {
    this.#reading ??= this.#readFrames();
    return this.#reading;
  }

  async #readFrames(): Promise<void> {
    const chunk = new Uint8Array(16 * 1024);
    try {
      while (!this.closed) {
        let frame;
        while ((frame = parseFrame(this.#buffer)) !== null) {
          this.#buffer = this.#buffer.slice(frame.length);
          if (frame.opcode === Opcode.close) {
            await this.write(encodeCloseFrame(1000));
            this.abort();
            return;
          }
          if (frame.opcode === Opcode.text || frame.opcode === Opcode.binary) {
            const text = decoder.decode(frame.payload);
            this.frames.push(text);
            this.device.receive(text);
          }
        }
        while (this.frozen && !this.closed) await delay(10);
        if (this.closed) break;
        const n = await this.conn.read(chunk);
        if (n === null) break;
        this.#buffer = concat(this.#buffer, chunk.subarray(0, n));
      }
    } catch {
      // reset by the peer or aborted by us
    } finally {
      this.closedBy ??= "client";
      this.abort();
    }
  }

  /** Waits until a frame matching `predicate` arrived on this connection. */
  async waitForFrame(predicate: (text: string) => boolean, timeoutMs = 3000): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      if (this.frames.some(predicate)) return true;
      if (this.closed) return false;
      await delay(2);
    }
    return this.frames.some(predicate);
  }

  /** Sends a close frame, then closes TCP. */
  async closeWithFrame(code = 1001): Promise<void> {
    await this.write(encodeCloseFrame(code, "going away"));
    await delay(5);
    this.abort();
  }

  /** Closes TCP at once, without a WebSocket close (Deno sends FIN; see rst_proxy.py for RST). */
  abort(): void {
    if (this.closed) return;
    this.closed = true;
    this.closedBy ??= "device";
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

/** Options of {@link RawDevice}. */
export interface RawDeviceOptions {
  model?: Partial<DeviceModel>;
  behavior?: Behavior;
}

/** A raw-TCP "device" on 127.0.0.1 with a switchable behaviour. */
export class RawDevice {
  /** Persisted settings (survive connections and reboots). */
  readonly model: DeviceModel;
  behavior: Behavior;
  /** TCP connections accepted. */
  accepted = 0;
  /** WebSocket upgrades answered. */
  upgrades = 0;
  /** Text frames received over all connections. */
  receivedCount = 0;
  /** The last frames received (bounded). */
  readonly received: string[] = [];
  readonly sessions = new Set<RawSession>();
  #listener: Deno.TcpListener | null = null;
  #port = 0;
  #loops = new Set<Promise<void>>();

  constructor(options: RawDeviceOptions = {}) {
    this.model = { work_on: false, work_mode: 2, set_temp: 40, ...options.model };
    this.behavior = options.behavior ?? deviceBehavior();
    this.listen();
  }

  /** `HOST:PORT` for `--host`. */
  get address(): string {
    return `127.0.0.1:${this.#port}`;
  }

  get port(): number {
    return this.#port;
  }

  get listening(): boolean {
    return this.#listener !== null;
  }

  /** Starts (or restarts, on the same port) accepting. */
  listen(): void {
    if (this.#listener) return;
    const listener = Deno.listen({ hostname: "127.0.0.1", port: this.#port });
    this.#listener = listener;
    this.#port = listener.addr.port;
    const loop = this.#accept(listener);
    this.#loops.add(loop);
    loop.finally(() => this.#loops.delete(loop));
  }

  /** Stops accepting (connections are refused) and drops every connection. */
  unlisten(): void {
    const listener = this.#listener;
    this.#listener = null;
    try {
      listener?.close();
    } catch {
      // already closed
    }
    this.abortAll();
  }

  /** Drops every open connection without a close frame. */
  abortAll(): void {
    for (const session of this.sessions) session.abort();
  }

  /** Applies a frame the way the firmware does (see the protocol reference). */
  receive(text: string): void {
    this.receivedCount++;
    this.received.push(text);
    if (this.received.length > 200) this.received.shift();
    let frame: unknown;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (typeof frame !== "object" || frame === null) return;
    const settings = (frame as Record<string, unknown>).settings;
    if (typeof settings !== "object" || settings === null) return;
    const s = settings as Record<string, unknown>;
    if (typeof s.work_mode === "number" && toDeviceByte(s.work_mode) !== 0) {
      this.model.work_mode = toDeviceByte(s.work_mode);
    }
    if (typeof s.set_temp === "number") {
      this.model.set_temp = toDeviceByte(s.set_temp);
    }
    if (typeof s.work_on === "boolean") this.model.work_on = s.work_on;
  }

  /** Stops everything. */
  async close(): Promise<void> {
    this.unlisten();
    await Promise.allSettled([...this.#loops]);
  }

  async #accept(listener: Deno.TcpListener): Promise<void> {
    while (true) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      this.accepted++;
      const session = new RawSession(conn, this);
      this.sessions.add(session);
      const run = this.behavior(session)
        .catch(() => {})
        .finally(() => {
          session.abort();
          this.sessions.delete(session);
        });
      this.#loops.add(run);
      run.finally(() => this.#loops.delete(run));
    }
  }
}

/** Options of {@link deviceBehavior}. */
export interface DeviceBehaviorOptions {
  /** Telemetry period (default 100 ms); 0 for none. */
  telemetryMs?: number;
  /** Frames in one telemetry write (merged on the wire). */
  burst?: number;
  temperature?: number;
}

/** A well-behaved device: connect frame with the 101, telemetry, reads writes. */
export function deviceBehavior(options: DeviceBehaviorOptions = {}): Behavior {
  const telemetryMs = options.telemetryMs ?? 100;
  const burst = options.burst ?? 1;
  return async (session) => {
    if (!(await session.upgrade())) return;
    const reading = session.startReading();
    if (telemetryMs > 0) {
      const one = encodeFrame(Opcode.text, telemetryFrame(options.temperature ?? 30));
      const bytes = new Uint8Array(one.length * burst);
      for (let i = 0; i < burst; i++) bytes.set(one, i * one.length);
      while (!session.closed) {
        if (!session.frozen && !(await session.write(bytes))) break;
        await delay(telemetryMs);
      }
    }
    await reading;
  };
}

/** A plain HTTP server that is not a WebSocket endpoint: answers `status` with `body`. */
export function httpBehavior(status: number, body: string, contentType = "text/html"): Behavior {
  return async (session) => {
    if ((await session.readHead()) === null) return;
    const bytes = encoder.encode(body);
    await session.write(encoder.encode(
      `HTTP/1.1 ${status} Whatever\r\nContent-Type: ${contentType}\r\n` +
        `Content-Length: ${bytes.length}\r\nConnection: close\r\n\r\n`,
    ));
    await session.write(bytes);
    await delay(20);
    session.abort();
  };
}

/** Accepts, reads the request, and never answers; ends when the client gives up. */
export function silentBehavior(): Behavior {
  return async (session) => {
    const chunk = new Uint8Array(4096);
    try {
      while ((await session.conn.read(chunk)) !== null);
    } catch {
      // reset by the client
    }
  };
}

/** Accepts and closes at once. */
export function abortBehavior(): Behavior {
  return (session) => {
    session.abort();
    return Promise.resolve();
  };
}
