/**
 * A simulated BIQU Panda Breath on the network: the {@link DeviceModel} behind the
 * device's WebSocket route (`Deno.serve` + `Deno.upgradeWebSocket`): the connect frame to
 * each new client, 500 ms temperature frames, unacknowledged writes, pushes on buttons,
 * faults and the end of a drying run, the 7-socket limit that evicts the least recently
 * used WebSocket, reboots that drop every socket without a close frame and refuse
 * connections, and the HTTP control endpoints `/sim/...` (`control.ts`) for tests and the
 * demo.
 *
 * Wire-level hostility (frames split or merged on the wire, resets, silence at TCP level)
 * is not here: the tests have their own raw device (tests/faults/raw_device.ts).
 *
 * @module
 */

import {
  type ButtonAction,
  DeviceModel,
  type DeviceModelOptions,
  type DeviceSettings,
  FACTORY_SETTINGS,
  type FaultField,
  type FaultKind,
  SIMULATOR_SECRETS,
  type SimulatorState,
} from "./device.ts";
import { handleHttp } from "./control.ts";
import { DEVICE_WS_PATH } from "../protocol.ts";

/** Options of {@link Simulator}: the network side, plus the device's (see `device.ts`). */
export interface SimulatorOptions extends DeviceModelOptions {
  /** Interface to listen on (default `127.0.0.1`). */
  hostname?: string;
  /** Port (default 0: pick a free one, kept across reboots). */
  port?: number;
  /** Period of the temperature frame (default 500 ms). */
  telemetryIntervalMs?: number;
  /** Sockets the device holds at most, WebSockets and HTTP requests together (default 7). */
  maxSockets?: number;
  /** JSON file where the persisted settings are kept across runs. */
  stateFile?: string;
  /** Down time of reboots caused by `printer_type`/`reset` writes (default 2000 ms). */
  rebootDownMs?: number;
  /** Largest accepted frame (default 16 KiB); a bigger one closes the socket with 1009. */
  maxFrameBytes?: number;
  /** How many received frames `received` keeps (default 1000). */
  receivedLimit?: number;
  /** Receives one line per received frame and per event; secrets are masked. */
  log?: (line: string) => void;
}

/** A frame the device received. */
export interface ReceivedFrame {
  /** Arrival time (`Date.now()` ms). */
  at: number;
  /** The frame's text (binary frames decoded as UTF-8). */
  text: string;
  /** The parsed JSON, or undefined when it was not JSON. */
  frame: unknown;
}

/** One WebSocket client of the device. */
interface Client {
  socket: WebSocket;
  peer: string;
  /** When the device last received on it (an ordinal: higher is more recent). */
  lastReceived: number;
}

interface FrameWaiter {
  predicate: (frame: unknown, entry: ReceivedFrame) => boolean;
  resolve: (entry: ReceivedFrame) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

const MODEL_TICK_MS = 100;
const LOG_TEXT_LIMIT = 1000;
const REBIND_RETRY_MS = 200;
const MAX_HEAD_BYTES = 8 * 1024;
const MAX_BODY_BYTES = 64 * 1024;
const decoder = new TextDecoder();

function hasControlCharacters(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x20 || code === 0x7f) return true;
  }
  return false;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function addressText(addr: { hostname: string; port: number }): string {
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}

function loadSettings(stateFile: string | undefined): Partial<DeviceSettings> {
  if (!stateFile) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(Deno.readTextFileSync(stateFile));
  } catch {
    return {};
  }
  if (!isPlainObject(parsed)) return {};
  const loaded: Record<string, unknown> = {};
  for (const [key, fallback] of Object.entries(FACTORY_SETTINGS)) {
    if (typeof parsed[key] === typeof fallback) loaded[key] = parsed[key];
  }
  return loaded as Partial<DeviceSettings>;
}

/** The subprotocol to answer with: `chat` when the client offers it (the device's route). */
function chosenProtocol(request: Request): string | undefined {
  const offered = (request.headers.get("sec-websocket-protocol") ?? "").split(",")
    .map((part) => part.trim());
  return offered.includes("chat") ? "chat" : undefined;
}

/** A request over the device's HTTP limits, as the answer (431, 413, 501); else undefined. */
function sizeProblem(request: Request): Response | undefined {
  const url = new URL(request.url);
  let headBytes = request.method.length + url.pathname.length + url.search.length + 11;
  for (const [name, value] of request.headers) headBytes += name.length + value.length + 4;
  if (headBytes > MAX_HEAD_BYTES) {
    return Response.json({ error: "request head too large" }, { status: 431 });
  }
  if (request.headers.has("transfer-encoding")) {
    return Response.json({ error: "chunked request bodies are not supported" }, { status: 501 });
  }
  if (Number(request.headers.get("content-length") ?? 0) > MAX_BODY_BYTES) {
    return Response.json({ error: "request body too large" }, { status: 413 });
  }
  return undefined;
}

/** Why an upgrade request is not a valid RFC 6455 handshake, as the answer; else undefined. */
function handshakeProblem(request: Request): Response | undefined {
  if (request.headers.get("sec-websocket-version") !== "13") {
    return Response.json({ error: "unsupported WebSocket version" }, {
      status: 426,
      headers: { "Sec-WebSocket-Version": "13" },
    });
  }
  let keyBytes = 0;
  try {
    keyBytes = atob(request.headers.get("sec-websocket-key") ?? "").length;
  } catch {
    keyBytes = 0;
  }
  if (keyBytes !== 16) {
    return Response.json({ error: "invalid Sec-WebSocket-Key" }, { status: 400 });
  }
  return undefined;
}

/** The simulated device. `start()` it, point a client at `url`, `stop()` it. */
export class Simulator {
  /** Frames received, oldest first (bounded by `receivedLimit`). */
  readonly received: ReceivedFrame[] = [];

  #options: {
    hostname: string;
    telemetryIntervalMs: number;
    maxSockets: number;
    rebootDownMs: number;
    maxFrameBytes: number;
    receivedLimit: number;
  };
  #port: number;
  #stateFile: string | undefined;
  #logLine: ((line: string) => void) | undefined;
  #device: DeviceModel;
  #server: Deno.HttpServer<Deno.NetAddr> | null = null;
  #abortServer: AbortController | null = null;
  #clients = new Set<Client>();
  #httpInFlight = 0;
  #receiveCounter = 0;
  #running = false;
  #rebooting = false;
  #silenced = false;
  #lastTick = 0;
  #telemetryTimer: ReturnType<typeof setInterval> | undefined;
  #modelTimer: ReturnType<typeof setInterval> | undefined;
  #sleeps = new Set<{ timer: ReturnType<typeof setTimeout>; resolve: () => void }>();
  #waiters = new Set<FrameWaiter>();
  #background = new Set<Promise<unknown>>();
  #upgradeRefusal: number | null = null;
  #rebootInFlight: Promise<void> | null = null;

  /** Creates a stopped simulator; loads `stateFile` when it exists. */
  constructor(options: SimulatorOptions = {}) {
    this.#options = {
      hostname: options.hostname ?? "127.0.0.1",
      telemetryIntervalMs: options.telemetryIntervalMs ?? 500,
      maxSockets: options.maxSockets ?? 7,
      rebootDownMs: options.rebootDownMs ?? 2000,
      maxFrameBytes: options.maxFrameBytes ?? 16 * 1024,
      receivedLimit: options.receivedLimit ?? 1000,
    };
    if (!(this.#options.telemetryIntervalMs > 0)) {
      throw new RangeError("telemetryIntervalMs must be positive");
    }
    this.#port = options.port ?? 0;
    this.#stateFile = options.stateFile;
    this.#logLine = options.log;
    this.#device = new DeviceModel(options, loadSettings(this.#stateFile), {
      log: (line) => this.#log(line),
      saved: (settings) => this.#persist(settings),
    });
  }

  /** The listening port (the chosen one after `start()` with port 0). */
  get port(): number {
    return this.#port;
  }

  /** `ws://host:port/ws`. */
  get url(): string {
    const address = addressText({ hostname: this.#options.hostname, port: this.port });
    return `ws://${address}${DEVICE_WS_PATH}`;
  }

  /** Open WebSocket clients. */
  get clientCount(): number {
    return [...this.#clients].filter((client) => client.socket.readyState === WebSocket.OPEN)
      .length;
  }

  /** Sockets in use (counted against `maxSockets`): WebSockets and HTTP requests in flight. */
  get socketCount(): number {
    return this.#clients.size + this.#httpInFlight;
  }

  /** The device state. */
  get state(): SimulatorState {
    return { ...this.#device.state, rebooting: this.#rebooting, silenced: this.#silenced };
  }

  /** Starts listening and the telemetry and model timers. */
  start(): Promise<void> {
    if (this.#running) return Promise.resolve();
    this.#listen();
    this.#running = true;
    this.#lastTick = performance.now();
    this.#modelTimer = setInterval(() => this.#tick(), MODEL_TICK_MS);
    this.#telemetryTimer = setInterval(
      () => this.#sendTelemetry(),
      this.#options.telemetryIntervalMs,
    );
    return Promise.resolve();
  }

  /** Stops everything: timers, sockets, pending reboots and waiters. */
  async stop(): Promise<void> {
    this.#running = false;
    clearInterval(this.#modelTimer);
    clearInterval(this.#telemetryTimer);
    for (const sleep of this.#sleeps) {
      clearTimeout(sleep.timer);
      sleep.resolve();
    }
    this.#sleeps.clear();
    for (const waiter of this.#waiters) {
      clearTimeout(waiter.timer);
      waiter.reject(new Error("simulator stopped"));
    }
    this.#waiters.clear();
    await this.#drop();
    await Promise.allSettled([...this.#background]);
  }

  /**
   * Reboots: drops every socket without a close frame, refuses connections for `downMs`,
   * then listens again on the same port with the persisted settings.
   */
  reboot(downMs: number = this.#options.rebootDownMs): Promise<void> {
    if (!this.#running) return Promise.resolve();
    this.#rebootInFlight ??= this.#track(
      this.#reboot(downMs).finally(() => this.#rebootInFlight = null),
    );
    return this.#rebootInFlight;
  }

  /** Injects a fault: sets its status field, forces `work_on` off and pushes the settings. */
  injectFault(kind: FaultKind): void {
    const [field, code] = this.#device.faultCode(kind);
    this.injectFaultCode(field, code);
  }

  /**
   * Injects any non-zero code in a fault field, known or not (a later firmware may add
   * codes, e.g. `ptc_sensor_status: 7`); the device treats it as every fault: `work_on` is
   * forced off, heating stops and the settings block is pushed.
   */
  injectFaultCode(field: FaultField, code: number): void {
    this.#device.setFaultCode(field, code);
    this.#pushSettings();
  }

  /** Clears every fault (the device pushes nothing for this). */
  clearFaults(): void {
    this.#device.clearFaults();
  }

  /** Presses a physical button and pushes the settings block. */
  pressButton(action: ButtonAction): void {
    this.#device.pressButton(action);
    this.#pushSettings();
  }

  /** Resolves with the next received frame matching `predicate` (only frames from now on). */
  waitForFrame(
    predicate: (frame: unknown, entry: ReceivedFrame) => boolean,
    timeoutMs = 2000,
  ): Promise<ReceivedFrame> {
    return new Promise((resolve, reject) => {
      const waiter: FrameWaiter = {
        predicate,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters.delete(waiter);
          reject(new Error(`no matching frame within ${timeoutMs} ms`));
        }, timeoutMs),
      };
      this.#waiters.add(waiter);
    });
  }

  /** Sends a text frame to every WebSocket client. */
  sendTextToAll(text: string): Promise<void> {
    this.#broadcast(text);
    return Promise.resolve();
  }

  /** Stops (or resumes) the temperature frames while keeping sockets open. */
  silence(on: boolean): void {
    this.#silenced = on;
    this.#log(on ? "silenced" : "unsilenced");
  }

  /**
   * Drops every client socket without a close frame (as a Wi-Fi drop does); the device
   * listens again within milliseconds (a client's first reconnect comes later).
   */
  abortClients(): void {
    if (!this.#running || this.#rebooting || this.#server === null) return;
    this.#track(this.#drop());
    this.#track(this.#relisten());
  }

  /** Sets the chamber temperature (°C). */
  setTemperature(celsius: number): void {
    this.#device.setTemperature(celsius);
  }

  /** Sets how far the device's own sensor reads below the chamber (°C); see `sensorBiasC`. */
  setSensorBias(celsius: number): void {
    this.#device.setSensorBias(celsius);
  }

  /** Makes WebSocket upgrades get a plain HTTP answer with `status` (null restores them). */
  refuseUpgrades(status: number | null): void {
    this.#upgradeRefusal = status;
  }

  /** The default down time of a reboot (ms). */
  get rebootDownMs(): number {
    return this.#options.rebootDownMs;
  }

  /** Opens the listener (on the same port as before); throws when the port is taken. */
  #listen(): void {
    const abort = new AbortController();
    const server = Deno.serve({
      hostname: this.#options.hostname,
      port: this.#port,
      signal: abort.signal,
      onListen: () => {},
      onError: (error) => {
        this.#log(`http error: ${error}`);
        return new Response("internal error", { status: 500 });
      },
    }, (request, info) => this.#handle(request, info.remoteAddr));
    this.#server = server;
    this.#abortServer = abort;
    this.#port = server.addr.port;
  }

  /** Closes the listener and every socket at once (no close frames) and waits for them. */
  async #drop(): Promise<void> {
    const server = this.#server;
    this.#abortServer?.abort();
    this.#server = null;
    this.#abortServer = null;
    this.#clients.clear();
    await server?.finished.catch(() => {});
  }

  /** Listens again as soon as the old listener has let go of the port. */
  async #relisten(): Promise<void> {
    while (this.#running && !this.#rebooting && this.#server === null) {
      try {
        this.#listen();
      } catch (error) {
        if (!(error instanceof Deno.errors.AddrInUse)) throw error;
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    }
  }

  #handle(request: Request, remoteAddr: Deno.NetAddr): Response {
    const path = new URL(request.url).pathname;
    const upgrade = (request.headers.get("upgrade") ?? "").toLowerCase() === "websocket";
    this.#makeRoom();
    const tooBig = sizeProblem(request);
    if (tooBig) return tooBig;
    if (upgrade && path === DEVICE_WS_PATH) return this.#upgrade(request, remoteAddr);
    this.#httpInFlight++;
    try {
      return handleHttp(this, request);
    } finally {
      this.#httpInFlight--;
    }
  }

  /** Under the socket limit, closes the WebSocket the device least recently received on. */
  #makeRoom(): void {
    if (this.socketCount < this.#options.maxSockets) return;
    let oldest: Client | null = null;
    for (const client of this.#clients) {
      if (!oldest || client.lastReceived < oldest.lastReceived) oldest = client;
    }
    if (!oldest) return;
    this.#clients.delete(oldest);
    this.#log(`evicted ${oldest.peer} (socket limit)`);
    try {
      oldest.socket.close(1001, "socket limit");
    } catch {
      // not open yet or already closing
    }
  }

  #upgrade(request: Request, remoteAddr: Deno.NetAddr): Response {
    const problem = handshakeProblem(request);
    if (problem) return problem;
    if (this.#upgradeRefusal !== null) {
      const nullBody = [204, 205, 304].includes(this.#upgradeRefusal);
      return new Response(nullBody ? null : "busy", {
        status: this.#upgradeRefusal,
        headers: { "Content-Type": "text/plain" },
      });
    }
    const protocol = chosenProtocol(request);
    let upgraded: { socket: WebSocket; response: Response };
    try {
      upgraded = Deno.upgradeWebSocket(request, { protocol, idleTimeout: 0 });
    } catch (error) {
      return Response.json({ error: `bad WebSocket upgrade: ${error}` }, { status: 400 });
    }
    const { socket, response } = upgraded;
    socket.binaryType = "arraybuffer";
    const client: Client = {
      socket,
      peer: addressText(remoteAddr),
      lastReceived: ++this.#receiveCounter,
    };
    this.#clients.add(client);
    socket.onopen = () => {
      this.#log(`connect ${client.peer}${protocol ? ` (${protocol})` : ""}`);
      this.#send(socket, this.#device.connectFrame());
    };
    socket.onmessage = (event) => this.#receive(client, event.data);
    socket.onerror = () => {};
    socket.onclose = (event) => {
      this.#clients.delete(client);
      this.#log(`disconnect ${client.peer} (${event.code})`);
    };
    return response;
  }

  #send(socket: WebSocket, text: string): void {
    if (socket.readyState !== WebSocket.OPEN) return;
    try {
      socket.send(text);
    } catch {
      // closed meanwhile
    }
  }

  #broadcast(text: string): void {
    for (const client of this.#clients) this.#send(client.socket, text);
  }

  #track<T>(promise: Promise<T>): Promise<T> {
    this.#background.add(promise);
    const forget = () => this.#background.delete(promise);
    promise.then(forget, forget);
    return promise;
  }

  #log(line: string): void {
    if (!this.#logLine) return;
    let safe = line;
    for (const secret of SIMULATOR_SECRETS) safe = safe.replaceAll(secret, "***");
    this.#logLine(safe);
  }

  #sleep(ms: number): Promise<void> {
    if (!this.#running) return Promise.resolve();
    return new Promise((resolve) => {
      const sleep = {
        timer: setTimeout(() => {
          this.#sleeps.delete(sleep);
          resolve();
        }, ms),
        resolve,
      };
      this.#sleeps.add(sleep);
    });
  }

  async #reboot(downMs: number): Promise<void> {
    this.#rebooting = true;
    this.#device.beginReboot();
    this.#log(`reboot: down for ${downMs} ms`);
    await this.#drop();
    await this.#sleep(downMs);
    while (this.#running && this.#server === null) {
      try {
        this.#listen();
      } catch (error) {
        this.#log(`reboot: cannot listen yet (${error})`);
        await this.#sleep(REBIND_RETRY_MS);
      }
    }
    this.#device.endReboot();
    this.#rebooting = false;
    if (this.#running) this.#log("reboot: up");
  }

  #persist(settings: DeviceSettings): void {
    if (!this.#stateFile) return;
    const temporary = `${this.#stateFile}.tmp`;
    try {
      Deno.writeTextFileSync(temporary, JSON.stringify(settings, null, 2) + "\n");
      Deno.renameSync(temporary, this.#stateFile);
    } catch (error) {
      this.#log(`cannot save state: ${error}`);
    }
  }

  #tick(): void {
    const now = performance.now();
    const elapsed = now - this.#lastTick;
    this.#lastTick = now;
    if (this.#device.advance(elapsed)) this.#pushSettings();
  }

  #sendTelemetry(): void {
    if (this.#silenced || this.#rebooting) return;
    this.#broadcast(this.#device.telemetryFrame());
  }

  #pushSettings(): void {
    this.#broadcast(this.#device.settingsPushFrame());
  }

  #receive(client: Client, data: string | ArrayBuffer): void {
    client.lastReceived = ++this.#receiveCounter;
    const size = typeof data === "string" ? new TextEncoder().encode(data).length : data.byteLength;
    if (size > this.#options.maxFrameBytes) {
      this.#log(`frame of ${size} bytes from ${client.peer} is too big`);
      client.socket.close(1009, "frame too big");
      return;
    }
    const text = typeof data === "string" ? data : decoder.decode(data);
    let frame: unknown = undefined;
    try {
      frame = JSON.parse(text);
    } catch {
      frame = undefined;
    }
    const entry: ReceivedFrame = { at: Date.now(), text, frame };
    this.#record(entry);
    this.#log(`recv ${client.peer} ${this.#printable(text)}`);
    if (isPlainObject(frame) && isPlainObject(frame.settings)) {
      this.#applySettings(client.socket, frame.settings);
    }
    this.#notifyWaiters(entry);
  }

  /** Applies a write; the device never answers, except the `printer_type` reply. */
  #applySettings(socket: WebSocket, settings: Record<string, unknown>): void {
    const effects = this.#device.applySettings(settings);
    if (effects.reply !== undefined) {
      this.#send(socket, effects.reply);
      this.#track(this.#flushed(socket).then(() => this.reboot()));
      return;
    }
    if (effects.reboot) this.reboot();
  }

  /** Resolves once `socket` has handed everything sent to the network (or closed). */
  async #flushed(socket: WebSocket): Promise<void> {
    while (socket.readyState === WebSocket.OPEN && socket.bufferedAmount > 0) {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await new Promise((resolve) => setTimeout(resolve, 0));
  }

  #printable(text: string): string {
    const oneLine = hasControlCharacters(text) ? JSON.stringify(text) : text;
    return oneLine.length > LOG_TEXT_LIMIT ? `${oneLine.slice(0, LOG_TEXT_LIMIT)}…` : oneLine;
  }

  #record(entry: ReceivedFrame): void {
    this.received.push(entry);
    const excess = this.received.length - this.#options.receivedLimit;
    if (excess > 0) this.received.splice(0, excess);
  }

  #notifyWaiters(entry: ReceivedFrame): void {
    for (const waiter of this.#waiters) {
      let matched: boolean;
      try {
        matched = waiter.predicate(entry.frame, entry);
      } catch (error) {
        matched = false;
        clearTimeout(waiter.timer);
        this.#waiters.delete(waiter);
        waiter.reject(error instanceof Error ? error : new Error(String(error)));
      }
      if (!matched) continue;
      clearTimeout(waiter.timer);
      this.#waiters.delete(waiter);
      waiter.resolve(entry);
    }
  }
}
