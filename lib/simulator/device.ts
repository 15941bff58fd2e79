/**
 * The simulated Panda Breath's firmware as pure state: persisted settings, faults, the
 * drying run, a thermal model, and the frames the device sends. No I/O: the network shell
 * (`simulator.ts`) feeds it received settings, clock ticks and button presses, and sends
 * what it returns.
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

import {
  ALWAYS_ON_MODE,
  FAULT_FIELDS,
  type FaultField,
  type FaultName,
  WORK_MODE_NAMES,
} from "../protocol.ts";

export type { FaultField, FaultName } from "../protocol.ts";

/** The fake secrets the connect frame carries; nothing downstream may log or publish them. */
export const SIMULATOR_SECRETS: readonly string[] = [
  "sim-wifi-secret-3f9c1a7e",
  "sim-ap-secret-8d2e4b61",
  "sim-access-secret-51c7e0d9",
];

/** One injectable fault: a fault the protocol names by a known code. */
export type FaultKind = Exclude<FaultName, `${string}_unknown`>;

/** Where each known fault lives: its field and code (from the protocol's table). */
const FAULT_CODES = new Map<FaultKind, [FaultField, number]>(
  FAULT_FIELDS.flatMap(({ field, codes }) =>
    Object.entries(codes).map(([code, name]) =>
      [name as FaultKind, [field, Number(code)]] as [FaultKind, [FaultField, number]]
    )
  ),
);

/** Fault names the simulator can inject (the bridge reports the same names). */
export const FAULT_KINDS: readonly FaultKind[] = [...FAULT_CODES.keys()];

/** The settings fields that carry fault codes (sent only when non-zero). */
export const FAULT_FIELD_NAMES: readonly FaultField[] = FAULT_FIELDS.map(({ field }) => field);

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

/** The settings of a factory-new (or factory-reset) device. */
export const FACTORY_SETTINGS: Readonly<DeviceSettings> = {
  work_on: false,
  work_mode: ALWAYS_ON_MODE,
  set_temp: 40,
  filtertemp: 35,
  hotbedtemp: 60,
  custom_temp: 50,
  custom_timer: 6,
  filament_drying_mode: 1,
  printer_type: 1,
  language: "en",
};

/** Options of {@link DeviceModel}: the device's physics and the unknowns of its firmware. */
export interface DeviceModelOptions {
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
  /** Firmware version; "V1.0.0" switches to that version's mode numbers and `temp` key. */
  fwVersion?: string;
  /** Initial settings (a state file, when present, wins). */
  settings?: Partial<DeviceSettings>;
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

/** What the shell must do after a received settings write (the device never answers else). */
export interface WriteEffects {
  /** A frame to answer the writer with before anything else (the `printer_type` reply). */
  reply?: string;
  /** The write makes the device reboot (after the reply, if any). */
  reboot: boolean;
}

type ModeMeaning = "auto" | "always_on" | "drying" | "unknown";

const MAX_MODEL_STEP_S = 1;
const PRINTER_CONNECTED = 3;
const LEGACY_FIRMWARE = "V1.0.0";
/** V1.0.0 numbers the modes the other way round (the protocol's table is V1.0.1+). */
const LEGACY_MODE_MEANINGS: Readonly<Record<number, ModeMeaning>> = {
  1: "drying",
  2: "always_on",
  3: "auto",
};

/** What a drying run does: its temperature and length. */
interface DryingPlan {
  temp: number;
  hours: number;
}

const DRYING_PRESETS: Record<number, DryingPlan> = {
  1: { temp: 55, hours: 12 },
  2: { temp: 60, hours: 12 },
};

/** The settings a write may carry, as [written key, stored field] (the firmware's order). */
const BYTE_KEYS = [
  ["hotbedtemp", "hotbedtemp"],
  ["filtertemp", "filtertemp"],
  ["filament_drying_mode", "filament_drying_mode"],
  ["filament_temp", "custom_temp"],
  ["filament_timer", "custom_timer"],
] as const;

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

function isNumber(value: unknown): value is number {
  return typeof value === "number" && !Number.isNaN(value);
}

/**
 * The device's firmware state. Every method is synchronous and pure apart from the
 * clock (`now`, for the control task's polling) and the `log`/`saved` callbacks.
 */
export class DeviceModel {
  #options: Required<Omit<DeviceModelOptions, "settings">>;
  #now: () => number;
  #log: (line: string) => void;
  #saved: (settings: DeviceSettings) => void;
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
  #rebooting = false;

  /**
   * Creates the device with `options.settings` over the factory settings, then `stored`
   * (what its flash holds) over those. `saved` is called whenever the settings change.
   */
  constructor(
    options: DeviceModelOptions = {},
    stored: Partial<DeviceSettings> = {},
    hooks: {
      log?: (line: string) => void;
      saved?: (settings: DeviceSettings) => void;
      now?: () => number;
    } = {},
  ) {
    this.#options = {
      speed: options.speed ?? 1,
      ambientC: options.ambientC ?? 22,
      maxChamberC: options.maxChamberC ?? 70,
      temperatureC: options.temperatureC ?? options.ambientC ?? 22,
      sensorBiasC: options.sensorBiasC ?? 0,
      heatTimeConstantS: options.heatTimeConstantS ?? 600,
      coolTimeConstantS: options.coolTimeConstantS ?? 1200,
      hotbedC: options.hotbedC ?? 100,
      fwVersion: options.fwVersion ?? "V1.0.3",
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
    if (!(this.#options.controlPollMs >= 0) || !Number.isFinite(this.#options.controlPollMs)) {
      throw new RangeError("controlPollMs must be a number >= 0");
    }
    this.#now = hooks.now ?? (() => performance.now());
    this.#log = hooks.log ?? (() => {});
    this.#saved = hooks.saved ?? (() => {});
    this.#settings = { ...FACTORY_SETTINGS, ...options.settings, ...stored };
    this.#temperature = this.#options.temperatureC;
  }

  /** The device state (`silenced` is the shell's: always false here). */
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
      silenced: false,
    };
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

  /**
   * Sets any non-zero code in a fault field, known or not (a later firmware may add codes,
   * e.g. `ptc_sensor_status: 7`); the device treats it as every fault: `work_on` is forced
   * off and heating stops. The caller pushes the settings block.
   */
  setFaultCode(field: FaultField, code: number): void {
    if (!FAULT_FIELD_NAMES.includes(field)) throw new RangeError(`unknown fault field ${field}`);
    if (!Number.isInteger(code) || code < 1 || code > 255) {
      throw new RangeError("a fault code is a whole number from 1 to 255");
    }
    this.#faults.set(field, code);
    this.#updateSettings({ work_on: false });
    this.#log(`fault ${field}=${code}`);
  }

  /** The field and code of a known fault. */
  faultCode(kind: FaultKind): [FaultField, number] {
    const mapping = FAULT_CODES.get(kind);
    if (!mapping) throw new RangeError(`unknown fault ${kind}`);
    return mapping;
  }

  /** Clears every fault (the device pushes nothing for this). */
  clearFaults(): void {
    this.#faults.clear();
    this.#log("faults cleared");
  }

  /** Presses a physical button; the caller pushes the settings block. */
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
  }

  /** Applies a received `settings` object in the firmware's fixed key order. */
  applySettings(settings: Record<string, unknown>): WriteEffects {
    const changes: Partial<DeviceSettings> = {};
    const printerType = settings.printer_type;
    if (isNumber(printerType)) changes.printer_type = toDeviceByte(printerType);
    const mode = settings.work_mode;
    if (isNumber(mode) && toDeviceByte(mode) !== 0) changes.work_mode = toDeviceByte(mode);
    const targetKey = this.#options.fwVersion === LEGACY_FIRMWARE ? "temp" : "set_temp";
    if (isNumber(settings[targetKey])) changes.set_temp = toDeviceByte(settings[targetKey]);
    for (const [key, field] of BYTE_KEYS) {
      const value = settings[key];
      if (isNumber(value)) changes[field] = toDeviceByte(value);
    }
    if (typeof settings.work_on === "boolean") changes.work_on = settings.work_on;
    if (Object.keys(changes).length > 0) this.#updateSettings(changes);
    this.#applyRunning(settings.isrunning);
    this.#syncDrying();
    if (settings.factory_reset === 1) {
      this.#faults.clear();
      this.#isrunning = false;
      this.#endRun();
      this.#updateSettings({ ...FACTORY_SETTINGS });
      return { reboot: true };
    }
    if (isNumber(printerType)) {
      return { reply: JSON.stringify({ response: { type: "printer_type", ok: 1 } }), reboot: true };
    }
    return { reboot: settings.reset === 1 };
  }

  /** Goes down for a reboot: the heater stops and the drying timer stops counting. */
  beginReboot(): void {
    this.#rebooting = true;
  }

  /** Comes back from a reboot with the persisted settings (a latched fault keeps heat off). */
  endReboot(): void {
    this.#syncDrying();
    this.#endRun();
    this.#isrunning = this.#options.dryingSurvivesReboot && this.#isrunning;
    this.#syncDrying();
    if (this.#faults.size > 0) this.#updateSettings({ work_on: false });
    this.#rebooting = false;
  }

  /**
   * Advances the thermal model and the drying timer by `elapsedMs` of wall time (times
   * `speed`). Returns true when a drying run ended: the caller pushes the settings block.
   */
  advance(elapsedMs: number): boolean {
    this.#syncDrying();
    let seconds = (elapsedMs / 1000) * this.#options.speed;
    let finished = false;
    while (seconds > 0) {
      const step = Math.min(seconds, MAX_MODEL_STEP_S);
      finished = this.#stepModel(step) || finished;
      seconds -= step;
    }
    return finished;
  }

  /** The temperature frame (sent every telemetry interval). */
  telemetryFrame(): string {
    return JSON.stringify({ settings: { warehouse_temper: this.#reportedTemperature() } });
  }

  /** The settings block the device pushes after a button, a fault or a run's end. */
  settingsPushFrame(): string {
    this.#syncDrying();
    return JSON.stringify({
      settings: { ...this.#settingsBlock(), warehouse_temper: this.#reportedTemperature() },
    });
  }

  /** The connect frame: the roots with the secrets, the settings block and the printer. */
  connectFrame(): string {
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

  #updateSettings(changes: Partial<DeviceSettings>): void {
    Object.assign(this.#settings, changes);
    this.#saved({ ...this.#settings });
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
      if (this.#isrunning && this.#run) this.#stopSince = this.#now();
      this.#isrunning = false;
      return;
    }
    const rewrite = this.#run !== null;
    this.#isrunning = true;
    this.#stopSince = null;
    if (rewrite && this.#options.dryingRewriteRestartsTimer) this.#startRun();
    this.#syncDrying();
  }

  #reportedTemperature(): number {
    return Math.round(this.#temperature - this.#options.sensorBiasC) + 0;
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

  #knownFaults(): FaultKind[] {
    return FAULT_KINDS.filter((kind) => {
      const [field, code] = this.faultCode(kind);
      return this.#faults.get(field) === code;
    });
  }

  #modeMeaning(mode: number): ModeMeaning {
    if (this.#options.fwVersion === LEGACY_FIRMWARE) return LEGACY_MODE_MEANINGS[mode] ?? "unknown";
    const name = Object.hasOwn(WORK_MODE_NAMES, mode) ? WORK_MODE_NAMES[mode] : undefined;
    return name === undefined ? "unknown" : name.replace("-", "_") as ModeMeaning;
  }

  #modeNumber(meaning: "auto" | "always_on" | "drying"): number {
    for (let mode = 1; mode <= 3; mode++) {
      if (this.#modeMeaning(mode) === meaning) return mode;
    }
    return ALWAYS_ON_MODE;
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
      this.#now() - this.#stopSince >= this.#options.controlPollMs
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

  /** One model step; true when the drying run ended in it. */
  #stepModel(seconds: number): boolean {
    const heating = this.#isHeating();
    const goal = heating ? this.#options.maxChamberC : this.#options.ambientC;
    const tau = heating ? this.#options.heatTimeConstantS : this.#options.coolTimeConstantS;
    this.#temperature = goal + (this.#temperature - goal) * Math.exp(-seconds / tau);
    return this.#stepDrying(seconds);
  }

  /**
   * Counts the run down. Assumed: the timer runs only while `work_on` is on and the mode is
   * drying (paused otherwise: the pessimistic reading of "always send isrunning:0 when
   * leaving drying"). At the end `isrunning` and `remaining_seconds` drop to 0 and heating
   * stops (fact; the caller pushes the settings block). `work_on` and `work_mode` are left
   * as they are (unknown).
   */
  #stepDrying(seconds: number): boolean {
    const counting = this.#run !== null && this.#settings.work_on &&
      this.#modeMeaning(this.#settings.work_mode) === "drying";
    if (!counting || this.#rebooting) return false;
    this.#remainingSeconds -= seconds;
    if (this.#remainingSeconds > 0) return false;
    this.#isrunning = false;
    this.#endRun();
    this.#log("drying finished");
    return true;
  }
}
