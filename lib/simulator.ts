/**
 * A simulated BIQU Panda Breath: the device's WebSocket protocol (connect frame, 500 ms
 * temperature frames, unacknowledged writes with the firmware's quirks, pushes on buttons,
 * faults and the end of a drying run, 7-socket LRU eviction, reboots that refuse
 * connections) over a simple thermal model, plus HTTP control endpoints for tests and the
 * demo.
 *
 * It models what `shared/reference/panda-breath-protocol.md` establishes and nothing more.
 * Where the facts are silent and the answer matters to a controller, the behaviour is an
 * explicit option whose default is the pessimistic one (the device keeps heating longer, or
 * a bridge's trick does not work): `dryingRewriteRestartsTimer`, `dryingRegulates`,
 * `dryingSurvivesReboot`, `controlPollMs`, `hotbedC`. Other gaps are filled by assumptions
 * named in the comments (e.g. the drying timer is paused while `work_on` is off); see
 * docs/safety.md, "Making the device stop by itself".
 *
 * @module
 */

import { type HttpRequest, type HttpResponse, type WsConnection, WsServer } from "./ws_server.ts";

/** The fake secrets the connect frame carries; nothing downstream may log or publish them. */
export const SIMULATOR_SECRETS: readonly string[] = [
  "sim-wifi-secret-3f9c1a7e",
  "sim-ap-secret-8d2e4b61",
  "sim-access-secret-51c7e0d9",
];

/** Fault names the simulator can inject (the bridge reports the same names). */
export const FAULT_KINDS = [
  "ptc_sensor_short",
  "ptc_sensor_open",
  "chamber_sensor_short",
  "chamber_sensor_open",
  "heater_no_heat",
] as const;

/** One injectable fault. */
export type FaultKind = typeof FAULT_KINDS[number];

/** The settings fields that carry fault codes (sent only when non-zero). */
export const FAULT_FIELD_NAMES = [
  "ptc_sensor_status",
  "warehouse_sensor_status",
  "ptc_heater_status",
] as const;

/** One fault field. */
export type FaultField = typeof FAULT_FIELD_NAMES[number];

/** The device's physical buttons. */
export const BUTTON_ACTIONS = ["power", "auto", "always_on", "drying"] as const;

/** One physical button. */
export type ButtonAction = typeof BUTTON_ACTIONS[number];

/** Settings the device saves to flash on every write; they survive a reboot. */
export interface DeviceSettings {
  /** Heater enabled. */
  work_on: boolean;
  /** Raw mode number (meaning depends on the firmware version). */
  work_mode: number;
  /** Always-on target °C, stored as one byte. */
  set_temp: number;
  /** Auto-mode filter threshold. */
  filtertemp: number;
  /** Auto-mode hot-bed threshold. */
  hotbedtemp: number;
  /** Custom drying temperature (written as `filament_temp`: the mapping is inferred from the names). */
  custom_temp: number;
  /** Custom drying duration in whole hours (written as `filament_timer`; assumed one byte). */
  custom_timer: number;
  /** 1 = 55 °C/12 h, 2 = 60 °C/12 h, 3 = custom. */
  filament_drying_mode: number;
  /** 1 = Bambu printer, 2 = Klipper printer. */
  printer_type: number;
  /** UI language. */
  language: string;
}

/** Options of {@link Simulator}. */
export interface SimulatorOptions {
  /** Interface to listen on (default `127.0.0.1`). */
  hostname?: string;
  /** Port (default 0: pick a free one, kept across reboots). */
  port?: number;
  /** Period of the temperature frame (default 500 ms). */
  telemetryIntervalMs?: number;
  /** Thermal-model and drying-timer speed-up (default 1). */
  speed?: number;
  /** Room temperature the chamber cools toward (default 22 °C). */
  ambientC?: number;
  /** Temperature the chamber approaches while heating (default 70 °C). */
  maxChamberC?: number;
  /** Starting chamber temperature (default: ambient). */
  temperatureC?: number;
  /**
   * How far the device's own sensor reads below the chamber (default 0): it reports and
   * regulates on `round(temperature - sensorBiasC)`, as a real Panda Breath whose sensor sits
   * at the heater reads 4–10 °C below a sensor in the chamber. `temperature` in the state is
   * the chamber's, the second (true) sensor.
   */
  sensorBiasC?: number;
  /** Time constant of heating toward `maxChamberC` at speed 1 (default 600 s). */
  heatTimeConstantS?: number;
  /** Time constant of cooling toward ambient at speed 1 (default 1200 s). */
  coolTimeConstantS?: number;
  /**
   * The printer's hot-bed °C, which the stand-in auto mode compares with `hotbedtemp`
   * (default 100: hot, so auto heats). The facts give auto mode two thresholds and nothing
   * else; this simulator's auto heats toward `set_temp` while `hotbedC >= hotbedtemp`, an
   * invented stand-in that errs toward heating.
   */
  hotbedC?: number;
  /** TCP sockets the HTTP server holds at most (default 7). */
  maxSockets?: number;
  /** Firmware version; "V1.0.0" switches to that version's mode numbers and `temp` key. */
  fwVersion?: string;
  /** Initial settings (a state file, when present, wins). */
  settings?: Partial<DeviceSettings>;
  /** JSON file where the persisted settings are kept across runs. */
  stateFile?: string;
  /** Down time of reboots caused by `printer_type`/`reset` writes (default 2000 ms). */
  rebootDownMs?: number;
  /** Largest accepted frame (default 16 KiB). */
  maxFrameBytes?: number;
  /** How many received frames `received` keeps (default 1000). */
  receivedLimit?: number;
  /** Receives one line per received frame and per event; secrets are masked. */
  log?: (line: string) => void;
  /**
   * Unknown on the real device: does writing `isrunning: 1` while a drying run is active
   * restart its timer (with the stored plan)? Default false: the write is ignored and the
   * run keeps its remaining time. A stop (`isrunning: 0`, seen by the control task) followed
   * by a start restarts it either way.
   */
  dryingRewriteRestartsTimer?: boolean;
  /**
   * Unknown: does a drying run regulate the chamber to its temperature (heat while below,
   * as always-on does)? Default false: it heats for the whole run, whatever the chamber.
   */
  dryingRegulates?: boolean;
  /**
   * Unknown: `isrunning` is not among the settings the facts say are saved. Default true:
   * a run active at a reboot starts again after it with the full stored timer (the drying
   * mode and `work_on` are saved). False: the device comes back with no run.
   */
  dryingSurvivesReboot?: boolean;
  /**
   * The firmware's control tasks poll every 200–500 ms. A stop (`isrunning: 0` while a run
   * is active) ends the run only when the flag has stayed 0 this long (default 500 ms, the
   * slow end); a shorter stop is missed and the run goes on. Writes otherwise apply at once.
   */
  controlPollMs?: number;
  /**
   * The connect frame carries the `wifi`, `sta` and `ap` roots (default true). False models
   * a firmware whose connect frame has only `settings` and `printer` (V1.0.4 is known only
   * second-hand): a client must not recognise the connect frame by its roots.
   */
  connectFrameSecretRoots?: boolean;
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

/** The device's current state as seen by tests. */
export interface SimulatorState {
  /** Heater enabled. */
  work_on: boolean;
  /** Raw mode number. */
  work_mode: number;
  /** Always-on target byte. */
  set_temp: number;
  /** Chamber temperature, °C (unrounded): what a second sensor in the chamber reads. */
  temperature: number;
  /** How far the device's own sensor reads below `temperature` (°C). */
  sensor_bias: number;
  /** What the device reports and regulates on: `round(temperature - sensor_bias)`. */
  reported_temperature: number;
  /** Active known faults. */
  faults: FaultKind[];
  /** Every active fault field with its code, known or not (e.g. `ptc_sensor_status: 7`). */
  faultCodes: Partial<Record<FaultField, number>>;
  /** The heater is on right now. */
  heating: boolean;
  /** The `isrunning` flag the device reports (set by writes and buttons, cleared at a run's end). */
  isrunning: boolean;
  /** A drying run is active as the firmware's control task sees it (its timer exists). */
  drying: boolean;
  /** Seconds left of the drying run (0 without one), as the connect frame reports it. */
  remaining_seconds: number;
  /** Down for a reboot. */
  rebooting: boolean;
  /** Telemetry suppressed by `silence(true)`. */
  silenced: boolean;
}

type ModeMeaning = "auto" | "always_on" | "drying" | "unknown";

const FAULT_FIELDS: Record<FaultKind, [FaultField, number]> = {
  ptc_sensor_short: ["ptc_sensor_status", 1],
  ptc_sensor_open: ["ptc_sensor_status", 2],
  chamber_sensor_short: ["warehouse_sensor_status", 1],
  chamber_sensor_open: ["warehouse_sensor_status", 2],
  heater_no_heat: ["ptc_heater_status", 1],
};

const FACTORY_SETTINGS: DeviceSettings = {
  work_on: false,
  work_mode: 2,
  set_temp: 40,
  filtertemp: 35,
  hotbedtemp: 60,
  custom_temp: 50,
  custom_timer: 6,
  filament_drying_mode: 1,
  printer_type: 1,
  language: "en",
};

const MODEL_TICK_MS = 100;
const MAX_MODEL_STEP_S = 1;
const STATE_RECEIVED_COUNT = 50;
const LOG_TEXT_LIMIT = 1000;
const PRINTER_CONNECTED = 3;
/** What a drying run does: its temperature and length. */
interface DryingPlan {
  temp: number;
  hours: number;
}

const DRYING_PRESETS: Record<number, DryingPlan> = {
  1: { temp: 55, hours: 12 },
  2: { temp: 60, hours: 12 },
};

const SIMULATOR_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Panda Breath simulator</title></head>
<body style="font-family:sans-serif">
<h1>Panda Breath simulator</h1>
<pre id="state">loading…</pre>
<p>
<button onclick="act('button?action=power')">power</button>
<button onclick="act('button?action=auto')">auto</button>
<button onclick="act('button?action=always_on')">always on</button>
<button onclick="act('button?action=drying')">drying</button>
<button onclick="act('reboot?down_ms=3000')">reboot</button>
</p>
<script>
async function act(path) { await fetch('/sim/' + path, { method: 'POST' }); }
async function poll() {
  try {
    const state = await (await fetch('/sim/state')).json();
    delete state.received;
    document.getElementById('state').textContent = JSON.stringify(state, null, 2);
  } catch { /* device rebooting */ }
  setTimeout(poll, 1000);
}
poll();
</script>
</body></html>
`;

/** The firmware's `valueint` conversion (saturating) followed by a store into one byte. */
export function toDeviceByte(value: number): number {
  const integer = Math.max(-2147483648, Math.min(2147483647, Math.trunc(value)));
  return ((integer % 256) + 256) % 256;
}

/** Compares a `V1.0.3`-style version with `minimum`; unparsable versions count as newest. */
function firmwareAtLeast(version: string, minimum: number[]): boolean {
  const parts = /^V?(\d+)\.(\d+)\.(\d+)/.exec(version)?.slice(1).map(Number);
  if (!parts) return true;
  for (let i = 0; i < minimum.length; i++) {
    if (parts[i] !== minimum[i]) return parts[i] > minimum[i];
  }
  return true;
}

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

function isNumber(value: unknown): value is number {
  return typeof value === "number" && !Number.isNaN(value);
}

function addressText(addr: Deno.NetAddr): string {
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}

function jsonResponse(status: number, body: unknown, afterSend?: () => void): HttpResponse {
  return {
    status,
    headers: { "Content-Type": "application/json", "Cache-Control": "no-store" },
    body: JSON.stringify(body),
    afterSend,
  };
}

function badRequest(message: string): HttpResponse {
  return jsonResponse(400, { error: message });
}

/** Reads a numeric query parameter within bounds; returns an error message when invalid. */
function numberParam(
  query: URLSearchParams,
  name: string,
  min: number,
  max: number,
): number | string {
  const raw = query.get(name);
  if (raw === null || raw.trim() === "") return `missing ${name}`;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max) {
    return `${name} must be a number from ${min} to ${max}`;
  }
  return value;
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

interface FrameWaiter {
  predicate: (frame: unknown, entry: ReceivedFrame) => boolean;
  resolve: (entry: ReceivedFrame) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** The simulated device. `start()` it, point a client at `url`, `stop()` it. */
export class Simulator {
  /** Frames received, oldest first (bounded by `receivedLimit`). */
  readonly received: ReceivedFrame[] = [];

  #options: Required<Omit<SimulatorOptions, "stateFile" | "log" | "settings">>;
  #stateFile: string | undefined;
  #logLine: ((line: string) => void) | undefined;
  #server: WsServer;
  #settings: DeviceSettings;
  #temperature: number;
  #faults = new Map<FaultField, number>();
  /** The reported `isrunning` flag. */
  #isrunning = false;
  /** The active drying run (the control task's view), or null. */
  #run: DryingPlan | null = null;
  #remainingSeconds = 0;
  /** When the flag went to 0 while a run was active (a stop the control task has not seen). */
  #stopSince: number | null = null;
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
      port: options.port ?? 0,
      telemetryIntervalMs: options.telemetryIntervalMs ?? 500,
      speed: options.speed ?? 1,
      ambientC: options.ambientC ?? 22,
      maxChamberC: options.maxChamberC ?? 70,
      temperatureC: options.temperatureC ?? options.ambientC ?? 22,
      sensorBiasC: options.sensorBiasC ?? 0,
      heatTimeConstantS: options.heatTimeConstantS ?? 600,
      coolTimeConstantS: options.coolTimeConstantS ?? 1200,
      hotbedC: options.hotbedC ?? 100,
      maxSockets: options.maxSockets ?? 7,
      fwVersion: options.fwVersion ?? "V1.0.3",
      rebootDownMs: options.rebootDownMs ?? 2000,
      maxFrameBytes: options.maxFrameBytes ?? 16 * 1024,
      receivedLimit: options.receivedLimit ?? 1000,
      dryingRewriteRestartsTimer: options.dryingRewriteRestartsTimer ?? false,
      dryingRegulates: options.dryingRegulates ?? false,
      dryingSurvivesReboot: options.dryingSurvivesReboot ?? true,
      controlPollMs: options.controlPollMs ?? 500,
      connectFrameSecretRoots: options.connectFrameSecretRoots ?? true,
    };
    if (!(this.#options.speed > 0) || !Number.isFinite(this.#options.speed)) {
      throw new RangeError("speed must be a positive number");
    }
    if (!Number.isFinite(this.#options.sensorBiasC)) {
      throw new RangeError("sensorBiasC must be a finite number");
    }
    if (!(this.#options.telemetryIntervalMs > 0)) {
      throw new RangeError("telemetryIntervalMs must be positive");
    }
    if (!(this.#options.controlPollMs >= 0) || !Number.isFinite(this.#options.controlPollMs)) {
      throw new RangeError("controlPollMs must be a number >= 0");
    }
    this.#stateFile = options.stateFile;
    this.#logLine = options.log;
    this.#settings = { ...FACTORY_SETTINGS, ...options.settings, ...loadSettings(this.#stateFile) };
    this.#temperature = this.#options.temperatureC;
    this.#server = this.#createServer();
  }

  /** The listening port (the chosen one after `start()` with port 0). */
  get port(): number {
    return this.#server.port;
  }

  /** `ws://host:port/ws`. */
  get url(): string {
    return `ws://${
      addressText({ hostname: this.#options.hostname, port: this.port, transport: "tcp" })
    }/ws`;
  }

  /** Open WebSocket clients. */
  get clientCount(): number {
    return this.#server.connections.length;
  }

  /** Open TCP sockets of any kind (counted against `maxSockets`). */
  get socketCount(): number {
    return this.#server.socketCount;
  }

  /** The device state. */
  get state(): SimulatorState {
    this.#syncDrying();
    return {
      work_on: this.#settings.work_on,
      work_mode: this.#settings.work_mode,
      set_temp: this.#settings.set_temp,
      temperature: this.#temperature,
      sensor_bias: this.#options.sensorBiasC,
      reported_temperature: this.#reportedTemperature(),
      faults: this.#knownFaults(),
      faultCodes: Object.fromEntries(this.#faults),
      heating: this.#isHeating(),
      isrunning: this.#isrunning,
      drying: this.#run !== null,
      remaining_seconds: this.#reportedRemaining(),
      rebooting: this.#rebooting,
      silenced: this.#silenced,
    };
  }

  /** Starts listening and the telemetry and model timers. */
  start(): Promise<void> {
    if (this.#running) return Promise.resolve();
    this.#server.listen();
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
    await this.#server.close();
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
    const mapping = FAULT_FIELDS[kind];
    if (!mapping) throw new RangeError(`unknown fault ${kind}`);
    this.injectFaultCode(mapping[0], mapping[1]);
  }

  /**
   * Injects any non-zero code in a fault field, known or not (a later firmware may add
   * codes, e.g. `ptc_sensor_status: 7`); the device treats it as every fault: `work_on` is
   * forced off, heating stops and the settings block is pushed.
   */
  injectFaultCode(field: FaultField, code: number): void {
    if (!(FAULT_FIELD_NAMES as readonly string[]).includes(field)) {
      throw new RangeError(`unknown fault field ${field}`);
    }
    if (!Number.isInteger(code) || code < 1 || code > 255) {
      throw new RangeError("a fault code is a whole number from 1 to 255");
    }
    this.#faults.set(field, code);
    this.#updateSettings({ work_on: false });
    this.#log(`fault ${field}=${code}`);
    this.#pushSettings();
  }

  /** Clears every fault (the device pushes nothing for this). */
  clearFaults(): void {
    this.#faults.clear();
    this.#log("faults cleared");
  }

  /** Presses a physical button and pushes the settings block. */
  pressButton(action: ButtonAction): void {
    switch (action) {
      case "power":
        this.#updateSettings({ work_on: !this.#settings.work_on });
        break;
      case "auto":
      case "always_on":
        // Assumed: choosing another mode at the device ends a drying run.
        this.#isrunning = false;
        this.#endRun();
        this.#updateSettings({ work_mode: this.#modeNumber(action), work_on: true });
        break;
      case "drying":
        // Assumed: the button (re)starts a run with the stored drying mode's plan.
        this.#updateSettings({ work_mode: this.#modeNumber("drying"), work_on: true });
        this.#isrunning = true;
        this.#startRun();
        break;
      default:
        throw new RangeError(`unknown button ${action}`);
    }
    this.#log(`button ${action}`);
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

  /** Writes raw bytes to every WebSocket client (split/merged/garbage frames). */
  async sendRawToAll(bytes: Uint8Array): Promise<void> {
    await Promise.all(this.#server.connections.map((conn) => conn.sendRaw(bytes)));
  }

  /** Sends a text frame to every WebSocket client. */
  async sendTextToAll(text: string): Promise<void> {
    await Promise.all(this.#server.connections.map((conn) => conn.send(text)));
  }

  /** Stops (or resumes) the temperature frames while keeping sockets open. */
  silence(on: boolean): void {
    this.#silenced = on;
    this.#log(on ? "silenced" : "unsilenced");
  }

  /** Drops every client socket without a close frame. */
  abortClients(): void {
    for (const conn of this.#server.connections) conn.abort();
  }

  /** Sets the chamber temperature (°C). */
  setTemperature(celsius: number): void {
    if (!Number.isFinite(celsius)) throw new RangeError("temperature must be finite");
    this.#temperature = celsius;
  }

  /** Sets how far the device's own sensor reads below the chamber (°C); see `sensorBiasC`. */
  setSensorBias(celsius: number): void {
    if (!Number.isFinite(celsius)) throw new RangeError("sensor bias must be finite");
    this.#options.sensorBiasC = celsius;
  }

  /** Makes WebSocket upgrades get a plain HTTP answer with `status` (null restores them). */
  refuseUpgrades(status: number | null): void {
    this.#upgradeRefusal = status;
  }

  #createServer(): WsServer {
    return new WsServer({
      hostname: this.#options.hostname,
      port: this.#options.port,
      wsPath: "/ws",
      protocols: ["chat"],
      maxSockets: this.#options.maxSockets,
      maxFrameBytes: this.#options.maxFrameBytes,
      answerPings: false,
      ignoreContinuation: true,
      onConnection: (conn) => this.#onConnection(conn),
      onHttpRequest: (request) => this.#handleHttp(request),
      onUpgradeRequest: () => this.#refusedUpgrade(),
      onEvict: (addr) => this.#log(`evicted ${addressText(addr)} (socket limit)`),
    });
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
    this.#log(`reboot: down for ${downMs} ms`);
    await this.#server.close();
    await this.#sleep(downMs);
    this.#syncDrying();
    this.#endRun();
    this.#isrunning = this.#options.dryingSurvivesReboot && this.#isrunning;
    this.#syncDrying();
    if (this.#faults.size > 0) this.#updateSettings({ work_on: false });
    while (this.#running && !this.#server.listening) {
      try {
        this.#server.listen();
      } catch (error) {
        this.#log(`reboot: cannot listen yet (${error})`);
        await this.#sleep(200);
      }
    }
    this.#rebooting = false;
    if (this.#running) this.#log("reboot: up");
  }

  #knownFaults(): FaultKind[] {
    return FAULT_KINDS.filter((kind) => {
      const [field, code] = FAULT_FIELDS[kind];
      return this.#faults.get(field) === code;
    });
  }

  #modeMeaning(mode: number): ModeMeaning {
    const legacy = this.#options.fwVersion === "V1.0.0";
    const meanings: ModeMeaning[] = legacy
      ? ["unknown", "drying", "always_on", "auto"]
      : ["unknown", "auto", "always_on", "drying"];
    return meanings[mode] ?? "unknown";
  }

  #modeNumber(meaning: "auto" | "always_on" | "drying"): number {
    for (let mode = 1; mode <= 3; mode++) {
      if (this.#modeMeaning(mode) === meaning) return mode;
    }
    return 2;
  }

  /** The plan a run started now would follow: a preset, or the stored custom values. */
  #dryingPlan(): DryingPlan {
    return DRYING_PRESETS[this.#settings.filament_drying_mode] ??
      { temp: this.#settings.custom_temp, hours: this.#settings.custom_timer };
  }

  /** Starts (or restarts) a run with the current plan; it keeps that plan until it ends. */
  #startRun(): void {
    this.#run = this.#dryingPlan();
    this.#remainingSeconds = this.#run.hours * 3600;
    this.#stopSince = null;
    this.#log(`drying run: ${this.#run.temp} °C for ${this.#run.hours} h`);
  }

  #endRun(): void {
    this.#run = null;
    this.#remainingSeconds = 0;
    this.#stopSince = null;
  }

  /**
   * What the firmware's drying task has done by now: a stop that has lasted
   * `controlPollMs` ends the run; a set flag in drying mode starts one.
   */
  #syncDrying(): void {
    if (
      this.#run && !this.#isrunning && this.#stopSince !== null &&
      performance.now() - this.#stopSince >= this.#options.controlPollMs
    ) {
      this.#endRun();
      this.#log("drying run stopped");
    }
    if (!this.#run && this.#isrunning && this.#modeMeaning(this.#settings.work_mode) === "drying") {
      this.#startRun();
    }
  }

  #reportedRemaining(): number {
    return this.#run ? Math.ceil(this.#remainingSeconds) : 0;
  }

  /** The temperature the heater works toward right now, or null when it must stay off. */
  #heatTarget(): number | null {
    if (!this.#settings.work_on || this.#faults.size > 0 || this.#rebooting) return null;
    switch (this.#modeMeaning(this.#settings.work_mode)) {
      case "always_on":
        return this.#settings.set_temp;
      case "drying":
        if (!this.#run) return null;
        return this.#options.dryingRegulates ? this.#run.temp : Number.POSITIVE_INFINITY;
      case "auto":
        return this.#options.hotbedC >= this.#settings.hotbedtemp ? this.#settings.set_temp : null;
      default:
        return null;
    }
  }

  #isHeating(): boolean {
    const target = this.#heatTarget();
    return target !== null && this.#temperature - this.#options.sensorBiasC < target;
  }

  #tick(): void {
    this.#syncDrying();
    const now = performance.now();
    let seconds = ((now - this.#lastTick) / 1000) * this.#options.speed;
    this.#lastTick = now;
    while (seconds > 0) {
      const step = Math.min(seconds, MAX_MODEL_STEP_S);
      this.#stepModel(step);
      seconds -= step;
    }
  }

  #stepModel(seconds: number): void {
    const heating = this.#isHeating();
    const goal = heating ? this.#options.maxChamberC : this.#options.ambientC;
    const tau = heating ? this.#options.heatTimeConstantS : this.#options.coolTimeConstantS;
    this.#temperature = goal + (this.#temperature - goal) * Math.exp(-seconds / tau);
    this.#stepDrying(seconds);
  }

  /**
   * Counts the run down. Assumed: the timer runs only while `work_on` is on and the mode is
   * drying (paused otherwise: the pessimistic reading of "always send isrunning:0 when
   * leaving drying"). At the end `isrunning` and `remaining_seconds` drop to 0, heating
   * stops and the settings block is pushed (fact). `work_on` and `work_mode` are left as
   * they are (unknown).
   */
  #stepDrying(seconds: number): void {
    const counting = this.#run !== null && this.#settings.work_on &&
      this.#modeMeaning(this.#settings.work_mode) === "drying";
    if (!counting || this.#rebooting) return;
    this.#remainingSeconds -= seconds;
    if (this.#remainingSeconds > 0) return;
    this.#isrunning = false;
    this.#endRun();
    this.#log("drying finished");
    this.#pushSettings();
  }

  #reportedTemperature(): number {
    return Math.round(this.#temperature - this.#options.sensorBiasC) + 0;
  }

  #sendTelemetry(): void {
    if (this.#silenced || this.#rebooting) return;
    const frame = JSON.stringify({ settings: { warehouse_temper: this.#reportedTemperature() } });
    for (const conn of this.#server.connections) conn.send(frame);
  }

  #settingsBlock(): Record<string, unknown> {
    const settings = this.#settings;
    const block: Record<string, unknown> = {
      fw_version: this.#options.fwVersion,
      language: settings.language,
    };
    if (firmwareAtLeast(this.#options.fwVersion, [1, 0, 3])) {
      block.printer_type = settings.printer_type;
    }
    Object.assign(block, {
      work_on: settings.work_on ? 1 : 0,
      work_mode: settings.work_mode,
      set_temp: settings.set_temp,
      filtertemp: settings.filtertemp,
      hotbedtemp: settings.hotbedtemp,
      custom_temp: settings.custom_temp,
      custom_timer: settings.custom_timer,
      isrunning: this.#isrunning ? 1 : 0,
      remaining_seconds: this.#reportedRemaining(),
    });
    for (const [field, code] of this.#faults) block[field] = code;
    return block;
  }

  #printerBlock(): Record<string, unknown> {
    if (this.#settings.printer_type === 2) {
      return {
        name: "Sim Klipper",
        host: "192.0.2.20",
        port: 7125,
        state: PRINTER_CONNECTED,
        scan: 0,
      };
    }
    return {
      name: "Sim Bambu P1S",
      sn: "01P00SIM0000001",
      access_code: SIMULATOR_SECRETS[2],
      ip: "192.0.2.10",
      state: PRINTER_CONNECTED,
      scan: 0,
    };
  }

  #connectFrame(): string {
    this.#syncDrying();
    const secretRoots = this.#options.connectFrameSecretRoots
      ? {
        wifi: { ssid: "SimHomeWiFi", password: SIMULATOR_SECRETS[0], scan: 0 },
        sta: { hostname: "PandaBreath" },
        ap: { ssid: "PandaBreath-SIM", password: SIMULATOR_SECRETS[1], ip: "192.168.254.1" },
      }
      : {};
    return JSON.stringify({
      ...secretRoots,
      settings: this.#settingsBlock(),
      printer: this.#printerBlock(),
    });
  }

  #pushSettings(): void {
    this.#syncDrying();
    const frame = JSON.stringify({
      settings: { ...this.#settingsBlock(), warehouse_temper: this.#reportedTemperature() },
    });
    for (const conn of this.#server.connections) conn.send(frame);
  }

  #updateSettings(changes: Partial<DeviceSettings>): void {
    Object.assign(this.#settings, changes);
    this.#persist();
  }

  #persist(): void {
    if (!this.#stateFile) return;
    const temporary = `${this.#stateFile}.tmp`;
    try {
      Deno.writeTextFileSync(temporary, JSON.stringify(this.#settings, null, 2) + "\n");
      Deno.renameSync(temporary, this.#stateFile);
    } catch (error) {
      this.#log(`cannot save state: ${error}`);
    }
  }

  #onConnection(conn: WsConnection): void {
    const peer = addressText(conn.remoteAddr);
    this.#log(`connect ${peer}${conn.protocol ? ` (${conn.protocol})` : ""}`);
    conn.send(this.#connectFrame());
    conn.onMessage = (data) => this.#receive(conn, peer, data);
    conn.onClose = (info) => this.#log(`disconnect ${peer} (${info.code})`);
  }

  #receive(conn: WsConnection, peer: string, data: string | Uint8Array): void {
    const text = typeof data === "string" ? data : new TextDecoder().decode(data);
    let frame: unknown = undefined;
    try {
      frame = JSON.parse(text);
    } catch {
      frame = undefined;
    }
    const entry: ReceivedFrame = { at: Date.now(), text, frame };
    this.#record(entry);
    this.#log(`recv ${peer} ${this.#printable(text)}`);
    if (isPlainObject(frame) && isPlainObject(frame.settings)) {
      this.#applySettings(conn, frame.settings);
    }
    this.#notifyWaiters(entry);
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

  /** Applies a `settings` object in the firmware's fixed key order; never answers. */
  #applySettings(conn: WsConnection, settings: Record<string, unknown>): void {
    const changes: Partial<DeviceSettings> = {};
    const byteKeys = [
      ["hotbedtemp", "hotbedtemp"],
      ["filtertemp", "filtertemp"],
      ["filament_drying_mode", "filament_drying_mode"],
      ["filament_temp", "custom_temp"],
      ["filament_timer", "custom_timer"],
    ] as const;
    const printerType = settings.printer_type;
    if (isNumber(printerType)) changes.printer_type = toDeviceByte(printerType);
    const mode = settings.work_mode;
    if (isNumber(mode) && toDeviceByte(mode) !== 0) changes.work_mode = toDeviceByte(mode);
    const legacy = this.#options.fwVersion === "V1.0.0";
    const targetKey = legacy ? "temp" : "set_temp";
    if (isNumber(settings[targetKey])) changes.set_temp = toDeviceByte(settings[targetKey]);
    for (const [key, field] of byteKeys) {
      const value = settings[key];
      if (isNumber(value)) changes[field] = toDeviceByte(value);
    }
    if (typeof settings.work_on === "boolean") changes.work_on = settings.work_on;
    if (Object.keys(changes).length > 0) this.#updateSettings(changes);
    this.#applyRunning(settings.isrunning);
    this.#syncDrying();
    this.#applyRebootKeys(conn, settings, isNumber(printerType));
  }

  /**
   * `isrunning` (1 start, 0 stop; other types ignored). It is applied after `work_mode`, so
   * one frame carrying the drying mode and `isrunning: 1` starts a run, as a set flag does
   * whenever the mode becomes drying. A stop ends the run once the control task has seen it
   * (`controlPollMs`); a start while a run is active restarts its timer only with
   * `dryingRewriteRestartsTimer`.
   */
  #applyRunning(isrunning: unknown): void {
    if (!isNumber(isrunning)) return;
    this.#syncDrying();
    if (Math.trunc(isrunning) === 0) {
      if (this.#isrunning && this.#run) this.#stopSince = performance.now();
      this.#isrunning = false;
      return;
    }
    const rewrite = this.#run !== null;
    this.#isrunning = true;
    this.#stopSince = null;
    if (rewrite && this.#options.dryingRewriteRestartsTimer) this.#startRun();
    this.#syncDrying();
  }

  #applyRebootKeys(
    conn: WsConnection,
    settings: Record<string, unknown>,
    printerTypeWritten: boolean,
  ): void {
    if (settings.factory_reset === 1) {
      this.#faults.clear();
      this.#isrunning = false;
      this.#endRun();
      this.#updateSettings({ ...FACTORY_SETTINGS });
      this.reboot();
      return;
    }
    if (printerTypeWritten) {
      const reply = JSON.stringify({ response: { type: "printer_type", ok: 1 } });
      this.#track(conn.send(reply).then(() => this.reboot()));
      return;
    }
    if (settings.reset === 1) this.reboot();
  }

  #refusedUpgrade(): HttpResponse | undefined {
    if (this.#upgradeRefusal === null) return undefined;
    return {
      status: this.#upgradeRefusal,
      headers: { "Content-Type": "text/plain" },
      body: "busy",
    };
  }

  #handleHttp(request: HttpRequest): HttpResponse {
    if (request.path === "/") {
      if (request.method !== "GET" && request.method !== "HEAD") {
        return jsonResponse(405, { error: "use GET" });
      }
      return {
        status: 200,
        headers: { "Content-Type": "text/html; charset=utf-8" },
        body: SIMULATOR_PAGE,
      };
    }
    if (request.path.startsWith("/sim/")) return this.#handleControl(request);
    return { status: 404, headers: { "Content-Type": "text/plain" }, body: "Not Found" };
  }

  #handleControl(request: HttpRequest): HttpResponse {
    const action = request.path.slice("/sim/".length);
    if (action === "state") {
      if (request.method !== "GET" && request.method !== "HEAD") {
        return jsonResponse(405, { error: "use GET" });
      }
      return jsonResponse(200, this.#controlState());
    }
    const handlers: Record<string, (query: URLSearchParams) => HttpResponse> = {
      button: (query) => this.#controlButton(query),
      fault: (query) => this.#controlFault(query),
      reboot: (query) => this.#controlReboot(query),
      temperature: (query) => this.#controlTemperature(query),
      sensor_bias: (query) => this.#controlSensorBias(query),
      silence: (query) => this.#controlSilence(query),
      refuse_upgrades: (query) => this.#controlRefuseUpgrades(query),
    };
    const handler = Object.hasOwn(handlers, action) ? handlers[action] : undefined;
    if (!handler) return jsonResponse(404, { error: `unknown control endpoint ${request.path}` });
    if (request.method !== "POST") return jsonResponse(405, { error: "use POST" });
    return handler(request.query);
  }

  #controlState(): Record<string, unknown> {
    const state = this.state;
    return {
      ...state,
      temperature: Math.round(state.temperature * 10) / 10,
      clients: this.clientCount,
      sockets: this.socketCount,
      received: this.received.slice(-STATE_RECEIVED_COUNT).map(({ at, frame }) => ({
        at,
        frame: frame === undefined ? null : frame,
      })),
    };
  }

  #ok(extra: Record<string, unknown> = {}, afterSend?: () => void): HttpResponse {
    return jsonResponse(200, { ok: true, ...extra, ...this.#controlState() }, afterSend);
  }

  #controlButton(query: URLSearchParams): HttpResponse {
    const action = query.get("action") ?? "";
    if (!(BUTTON_ACTIONS as readonly string[]).includes(action)) {
      return badRequest(`action must be one of ${BUTTON_ACTIONS.join(", ")}`);
    }
    this.pressButton(action as ButtonAction);
    return this.#ok();
  }

  #controlFault(query: URLSearchParams): HttpResponse {
    if (query.has("field")) {
      const field = query.get("field") ?? "";
      if (!(FAULT_FIELD_NAMES as readonly string[]).includes(field)) {
        return badRequest(`field must be one of ${FAULT_FIELD_NAMES.join(", ")}`);
      }
      const code = numberParam(query, "code", 1, 255);
      if (typeof code === "string") return badRequest(code);
      if (!Number.isInteger(code)) return badRequest("code must be a whole number from 1 to 255");
      this.injectFaultCode(field as FaultField, code);
      return this.#ok();
    }
    const kind = query.get("kind") ?? "";
    if (kind === "clear") {
      this.clearFaults();
      return this.#ok();
    }
    if (!(FAULT_KINDS as readonly string[]).includes(kind)) {
      return badRequest(`kind must be one of ${FAULT_KINDS.join(", ")}, clear`);
    }
    this.injectFault(kind as FaultKind);
    return this.#ok();
  }

  #controlReboot(query: URLSearchParams): HttpResponse {
    const downMs = query.has("down_ms")
      ? numberParam(query, "down_ms", 0, 600_000)
      : this.#options.rebootDownMs;
    if (typeof downMs === "string") return badRequest(downMs);
    return this.#ok({ down_ms: downMs }, () => this.reboot(downMs));
  }

  #controlTemperature(query: URLSearchParams): HttpResponse {
    const value = numberParam(query, "value", -50, 300);
    if (typeof value === "string") return badRequest(value);
    this.setTemperature(value);
    return this.#ok();
  }

  #controlSensorBias(query: URLSearchParams): HttpResponse {
    const value = numberParam(query, "value", -20, 20);
    if (typeof value === "string") return badRequest(value);
    this.setSensorBias(value);
    return this.#ok();
  }

  #controlSilence(query: URLSearchParams): HttpResponse {
    const on = query.get("on");
    if (on !== "1" && on !== "0") return badRequest("on must be 1 or 0");
    this.silence(on === "1");
    return this.#ok();
  }

  #controlRefuseUpgrades(query: URLSearchParams): HttpResponse {
    const status = numberParam(query, "status", 0, 599);
    if (typeof status === "string") return badRequest(status);
    if (status !== 0 && (status < 200 || !Number.isInteger(status))) {
      return badRequest("status must be 0 (accept upgrades) or an HTTP status from 200 to 599");
    }
    this.refuseUpgrades(status === 0 ? null : status);
    return this.#ok();
  }
}

/** Options of {@link runSimulatorCli}. */
export interface SimulatorCliOptions {
  /** Port (0 picks a free one). */
  port: number;
  /** Interface to listen on. */
  hostname: string;
  /** Thermal-model speed-up. */
  speed?: number;
  /** How far the device's sensor reads below the chamber (°C, default 0). */
  sensorBiasC?: number;
  /** Telemetry interval in ms. */
  interval?: number;
  /** JSON file for the persisted settings. */
  stateFile?: string;
}

/**
 * Runs a simulator until SIGINT/SIGTERM or `signal`: prints `listening on ws://HOST:PORT/ws`
 * to stdout once, then one stderr line per received frame or event (never the secrets).
 */
export async function runSimulatorCli(
  opts: SimulatorCliOptions,
  signal?: AbortSignal,
): Promise<void> {
  const simulator = new Simulator({
    hostname: opts.hostname,
    port: opts.port,
    speed: opts.speed,
    sensorBiasC: opts.sensorBiasC,
    telemetryIntervalMs: opts.interval,
    stateFile: opts.stateFile,
    log: (line) => console.error(`[simulator] ${line}`),
  });
  await simulator.start();
  try {
    console.log(`listening on ${simulator.url}`);
    await waitForShutdown(signal);
  } finally {
    await simulator.stop();
  }
}

function waitForShutdown(signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  return new Promise((resolve) => {
    const finish = () => {
      for (const name of signals) Deno.removeSignalListener(name, finish);
      signal?.removeEventListener("abort", finish);
      resolve();
    };
    for (const name of signals) Deno.addSignalListener(name, finish);
    signal?.addEventListener("abort", finish, { once: true });
  });
}
