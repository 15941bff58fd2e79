/**
 * The Panda Breath WebSocket protocol: pure functions that turn device frames
 * into typed reports and build command frames. No I/O here.
 *
 * Facts (see shared/reference/panda-breath-protocol.md): one JSON object per
 * text frame; `work_on` arrives as the number 0/1 but is accepted only as a
 * JSON boolean; `set_temp` is stored as an unclamped byte; writes are never
 * acknowledged; the connect frame carries Wi-Fi and printer secrets.
 */

/** The device's HTTP and WebSocket port, unless its address names another. */
export const DEVICE_PORT = 80;

/** The path of the device's WebSocket. */
export const DEVICE_WS_PATH = "/ws";

/** Largest frame the bridge parses; anything bigger is dropped unread. */
export const MAX_FRAME_BYTES = 64 * 1024;

/** Largest target the device can store (`set_temp` is one byte). */
export const DEVICE_MAX_TARGET = 255;

/** Default upper bound for targets, as in the device's own web UI. */
export const DEFAULT_MAX_TARGET = 60;

/** Chamber temperatures outside this range are treated as garbage. */
export const PLAUSIBLE_TEMPERATURE = { min: -40, max: 150 } as const;

/**
 * Names of the faults the device can report. The `*_unknown` names stand for
 * a non-zero value in a fault field that no known firmware sends: it counts
 * as a fault, never as "no fault".
 */
export type FaultName =
  | "ptc_sensor_short"
  | "ptc_sensor_open"
  | "ptc_sensor_unknown"
  | "chamber_sensor_short"
  | "chamber_sensor_open"
  | "chamber_sensor_unknown"
  | "heater_no_heat"
  | "heater_unknown";

/** What each fault means, for logs and the Klipper console. */
export const FAULT_DESCRIPTIONS: Readonly<Record<FaultName, string>> = {
  ptc_sensor_short: "heater (PTC) temperature sensor short circuit",
  ptc_sensor_open: "heater (PTC) temperature sensor open circuit",
  ptc_sensor_unknown: "heater (PTC) temperature sensor reports an unknown fault code",
  chamber_sensor_short: "chamber temperature sensor short circuit",
  chamber_sensor_open: "chamber temperature sensor open circuit",
  chamber_sensor_unknown: "chamber temperature sensor reports an unknown fault code",
  heater_no_heat: "heater did not heat (about 60 s of heating without a rise)",
  heater_unknown: "heater reports an unknown fault code",
};

/**
 * Meaning of `work_mode` on firmware V1.0.1 and later (V1.0.0 swaps 1 and 3:
 * lib/core.ts `modeMeaning` decides by firmware). The Klipper extra's
 * `WORK_MODES` mirrors it (tests/defaults_test.ts).
 */
export const WORK_MODE_NAMES: Readonly<Record<number, string>> = {
  1: "auto",
  2: "always-on",
  3: "drying",
};

/** The work mode that heats to `set_temp` on every firmware version. */
export const ALWAYS_ON_MODE = 2;

/**
 * What one device frame said. Only fields present (and valid) in the frame
 * are set; `faults` maps each fault field present to whether it is active.
 */
export interface DeviceReport {
  /** Chamber temperature in °C (a calibrated field when present). */
  temperature?: number;
  /** `work_on`: the heater is switched on. */
  workOn?: boolean;
  /** `work_mode` as sent (its meaning depends on the firmware). */
  workMode?: number;
  /** `set_temp`: the device's own target, °C. */
  setTemp?: number;
  /** The firmware version, e.g. `V1.0.3`. */
  firmware?: string;
  /** `isrunning`: a drying run is active. */
  dryingRunning?: boolean;
  /** `remaining_seconds`: what is left of the drying run (connect frames only). */
  remainingSeconds?: number;
  /** `custom_temp`: the stored custom drying temperature (written as `filament_temp`). */
  customTemp?: number;
  /** `custom_timer`: the stored custom drying hours (written as `filament_timer`). */
  customTimer?: number;
  /** For every fault field present: each of its fault names, and whether it is the active one. */
  faults?: Partial<Record<FaultName, boolean>>;
  /** The device's own printer link state (0 disconnected … 3 connected). */
  printerState?: number;
  /**
   * The frame carries `wifi`/`sta`/`ap` roots, as connect frames of the known
   * firmware do. Informational only: the bridge takes the first settings block
   * after a link opens as the connect frame whatever its roots (lib/core.ts).
   */
  isConnectFrame: boolean;
  /** The frame carries the whole settings block (connect frame or a device push). */
  isSettingsBlock: boolean;
}

/** Result of {@link parseDeviceFrame}: a report, and why anything was dropped. */
export interface ParseResult {
  /** `null` when the whole frame was unusable. */
  report: DeviceReport | null;
  /** One short reason per dropped frame or field; never contains frame content. */
  dropped: string[];
}

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isIntegerIn(value: unknown, min: number, max: number): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= min && value <= max;
}

const TEMPERATURE_FIELDS_BY_PREFERENCE = [
  "cal_warehouse_temp",
  "chamber_temp",
  "warehouse_temper",
] as const;

/** The settings fields that carry fault codes (the device sends them only when non-zero). */
export type FaultField = "ptc_sensor_status" | "warehouse_sensor_status" | "ptc_heater_status";

/** One fault field: the faults its known codes name, and what any other non-zero value is. */
export interface FaultFieldCodes {
  /** The settings field. */
  field: FaultField;
  /** Known codes and the fault each names. */
  codes: Readonly<Record<number, FaultName>>;
  /** The fault any other non-zero value is. */
  unknown: FaultName;
}

/** Every fault field with its codes, in the order the settings block lists them. */
export const FAULT_FIELDS: readonly FaultFieldCodes[] = [
  {
    field: "ptc_sensor_status",
    codes: { 1: "ptc_sensor_short", 2: "ptc_sensor_open" },
    unknown: "ptc_sensor_unknown",
  },
  {
    field: "warehouse_sensor_status",
    codes: { 1: "chamber_sensor_short", 2: "chamber_sensor_open" },
    unknown: "chamber_sensor_unknown",
  },
  { field: "ptc_heater_status", codes: { 1: "heater_no_heat" }, unknown: "heater_unknown" },
];

function readTemperature(settings: JsonObject, report: DeviceReport, dropped: string[]): void {
  for (const field of TEMPERATURE_FIELDS_BY_PREFERENCE) {
    if (!(field in settings)) continue;
    const value = settings[field];
    if (
      typeof value === "number" && Number.isFinite(value) &&
      value >= PLAUSIBLE_TEMPERATURE.min && value <= PLAUSIBLE_TEMPERATURE.max
    ) {
      report.temperature = value;
      return;
    }
    dropped.push(`${field}: not a plausible temperature`);
  }
}

/** A 0/1-or-boolean field; `undefined` (and a dropped note) when absent or anything else. */
function readFlag(settings: JsonObject, field: string, dropped: string[]): boolean | undefined {
  if (!(field in settings)) return undefined;
  const value = settings[field];
  if (value === 0 || value === 1 || typeof value === "boolean") return Boolean(value);
  dropped.push(`${field}: not 0/1 or a boolean`);
  return undefined;
}

function readByteField(
  settings: JsonObject,
  field: string,
  dropped: string[],
): number | undefined {
  if (!(field in settings)) return undefined;
  const value = settings[field];
  if (isIntegerIn(value, 0, 255)) return value;
  dropped.push(`${field}: not a whole number 0-255`);
  return undefined;
}

function readFirmware(settings: JsonObject, report: DeviceReport, dropped: string[]): void {
  if (!("fw_version" in settings)) return;
  const value = settings.fw_version;
  if (typeof value === "string" && value.length <= 32 && /^[\x20-\x7e]*$/.test(value)) {
    report.firmware = value;
  } else {
    dropped.push("fw_version: not a short printable string");
  }
}

/**
 * Fault fields: 0 clears the field's faults; a known code names its fault;
 * anything else that is not 0 (an unknown code, a wrong type) is the field's
 * `*_unknown` fault: a fault field that does not say "no fault" is a fault.
 */
function readFaults(settings: JsonObject, report: DeviceReport): void {
  for (const { field, codes, unknown } of FAULT_FIELDS) {
    if (!(field in settings)) continue;
    const value = settings[field];
    const active = value === 0
      ? null
      : (typeof value === "number" && Object.hasOwn(codes, value) ? codes[value] : unknown);
    for (const name of [...Object.values(codes), unknown]) {
      (report.faults ??= {})[name] = name === active;
    }
  }
}

/** Longest drying run a `remaining_seconds` can plausibly describe (a byte of hours). */
const MAX_REMAINING_SECONDS = 255 * 3600;

function readDryingFields(settings: JsonObject, report: DeviceReport, dropped: string[]): void {
  if ("remaining_seconds" in settings) {
    const value = settings.remaining_seconds;
    if (isIntegerIn(value, 0, MAX_REMAINING_SECONDS)) report.remainingSeconds = value;
    else dropped.push(`remaining_seconds: not a whole number 0-${MAX_REMAINING_SECONDS}`);
  }
  const customTemp = readByteField(settings, "custom_temp", dropped);
  if (customTemp !== undefined) report.customTemp = customTemp;
  const customTimer = readByteField(settings, "custom_timer", dropped);
  if (customTimer !== undefined) report.customTimer = customTimer;
}

/**
 * Whether a settings report carries every field a drying lease is checked by
 * (`isrunning`, `remaining_seconds`, `custom_temp`, `custom_timer`): without
 * them a lease could not be verified, so it is refused.
 */
export function hasDryingFields(report: DeviceReport): boolean {
  return report.dryingRunning !== undefined && report.remainingSeconds !== undefined &&
    report.customTemp !== undefined && report.customTimer !== undefined;
}

function readSettings(settings: JsonObject, report: DeviceReport, dropped: string[]): void {
  readTemperature(settings, report, dropped);
  const workOn = readFlag(settings, "work_on", dropped);
  if (workOn !== undefined) report.workOn = workOn;
  const workMode = readByteField(settings, "work_mode", dropped);
  if (workMode !== undefined) report.workMode = workMode;
  const setTemp = readByteField(settings, "set_temp", dropped);
  if (setTemp !== undefined) report.setTemp = setTemp;
  readFirmware(settings, report, dropped);
  const dryingRunning = readFlag(settings, "isrunning", dropped);
  if (dryingRunning !== undefined) report.dryingRunning = dryingRunning;
  readDryingFields(settings, report, dropped);
  readFaults(settings, report);
  report.isSettingsBlock = report.workOn !== undefined;
}

/** A {@link DeviceReport} field that holds one value the device reported. */
export type ReportedValue = Exclude<
  keyof DeviceReport,
  "faults" | "isConnectFrame" | "isSettingsBlock"
>;

/**
 * Copies into `into` each of `fields` that `report` carries. The device sends
 * only what it has to say, so a field the report lacks keeps its last value.
 */
export function keepReported<K extends ReportedValue>(
  into: { [F in K]: DeviceReport[F] | null },
  report: DeviceReport,
  fields: readonly K[],
): void {
  for (const field of fields) {
    const value = report[field];
    if (value !== undefined) into[field] = value;
  }
}

/**
 * Parses one frame from the device. Malformed, non-object, wrong-typed,
 * non-finite or implausible values are dropped (listed in `dropped`), never
 * passed on. Secrets in the frame (Wi-Fi, AP, printer credentials) are
 * never read into the report.
 */
export function parseDeviceFrame(data: string | Uint8Array): ParseResult {
  const dropped: string[] = [];
  const size = typeof data === "string" ? data.length : data.byteLength;
  if (size > MAX_FRAME_BYTES) {
    return { report: null, dropped: [`frame of ${size} bytes exceeds ${MAX_FRAME_BYTES}`] };
  }
  let text: string;
  try {
    text = typeof data === "string" ? data : new TextDecoder("utf-8", { fatal: true }).decode(data);
  } catch {
    return { report: null, dropped: ["binary frame is not UTF-8"] };
  }
  let frame: unknown;
  try {
    frame = JSON.parse(text);
  } catch {
    return { report: null, dropped: ["frame is not JSON"] };
  }
  if (!isObject(frame)) return { report: null, dropped: ["frame is not a JSON object"] };

  const report: DeviceReport = {
    isConnectFrame: "wifi" in frame || "sta" in frame || "ap" in frame,
    isSettingsBlock: false,
  };
  if ("settings" in frame) {
    if (isObject(frame.settings)) readSettings(frame.settings, report, dropped);
    else dropped.push("settings: not an object");
  }
  if (isObject(frame.printer) && "state" in frame.printer) {
    const state = frame.printer.state;
    if (isIntegerIn(state, 0, 255)) report.printerState = state;
    else dropped.push("printer.state: not a whole number");
  }
  return { report, dropped };
}

/** The keepalive frame: harmless, and marks the socket as used on the device. */
export const KEEPALIVE_FRAME = "{}";

/** Turns the heater off. */
export const OFF_FRAME = '{"settings":{"work_on":false}}';

/**
 * Turns the heater on in always-on mode at `target` °C, in one frame so the
 * firmware applies every key together (`temp` is the V1.0.0 spelling).
 * `target` must already be validated (see {@link validateTarget}).
 */
export function buildOnFrame(target: number): string {
  if (!isIntegerIn(target, 1, DEVICE_MAX_TARGET)) {
    throw new RangeError(`target must be a whole number 1-${DEVICE_MAX_TARGET}, got ${target}`);
  }
  return `{"settings":{"work_mode":${ALWAYS_ON_MODE},"set_temp":${target},"temp":${target},` +
    `"isrunning":0,"work_on":true}}`;
}

/** The frame that asserts a desired target: OFF for 0, else ON at the target. */
export function buildDesiredStateFrame(target: number): string {
  return target === 0 ? OFF_FRAME : buildOnFrame(target);
}

/** A target check's outcome: a whole-degree target, or an error for the user. */
export type TargetCheck =
  | { ok: true; target: number }
  | { ok: false; code: "invalid_params" | "out_of_range"; message: string };

/**
 * Checks a requested target: a finite number from 0 (off) to `maxTarget`,
 * rounded to whole degrees as the device stores them. Never wraps.
 */
export function validateTarget(value: unknown, maxTarget: number): TargetCheck {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    return { ok: false, code: "invalid_params", message: "target must be a finite number of °C" };
  }
  const target = Math.round(value);
  if (value < 0 || target > maxTarget) {
    return {
      ok: false,
      code: "out_of_range",
      message: `target ${value} °C is out of range: use 0 (off) to ${maxTarget} °C`,
    };
  }
  return { ok: true, target };
}

// ---- Drying lease: heat through a drying run, whose own timer stops the device ----
// Facts: a drying run is started by one frame (work_mode, filament_temp,
// filament_timer in hours, filament_drying_mode 3 = custom, isrunning 1,
// work_on true), ends by itself (isrunning and remaining_seconds drop to 0,
// the settings block is pushed) and `isrunning: 0` stops it. Unknowns and the
// renewal procedure: docs/safety.md, "Making the device stop by itself".
// The bridge uses them in heat mode `drying-lease` (lib/core.ts).

/** `work_mode` of drying on V1.0.1 and later (V1.0.0 numbers it 1; there 3 is auto). */
export const DRYING_MODE = 3;

/** `filament_drying_mode` of a custom run (1 and 2 are 12-hour presets at 55/60 °C). */
export const CUSTOM_DRYING = 3;

/**
 * Firmware versions whose own web UI (read from the images) shows the drying frame with
 * the V1.0.1+ mode numbers: the only ones a drying lease may be used on. V1.0.0 numbers
 * the modes differently and V1.0.4 is known only second-hand.
 */
export const DRYING_LEASE_FIRMWARE: readonly string[] = ["V1.0.1", "V1.0.2", "V1.0.3"];

/** Longest lease in hours (the device's own presets run 12 h); 1 h is the shortest. */
export const DRYING_LEASE_MAX_HOURS = 12;

/**
 * Gap between {@link DRYING_STOP_FRAME} and the next start: the control tasks poll every
 * 200–500 ms, so a shorter stop may never be seen (and then the start is a mere re-send).
 */
export const DRYING_RENEWAL_GAP_MS = 1000;

/** Stops a drying run and leaves `work_on` alone: the first half of a renewal. */
export const DRYING_STOP_FRAME = '{"settings":{"isrunning":0}}';

/**
 * Turns the heater off out of a drying lease: `isrunning: 0` with `work_on: false`, so no
 * paused run is left behind for a later `work_on` to resume (always leave drying so).
 */
export const DRYING_LEASE_OFF_FRAME = '{"settings":{"isrunning":0,"work_on":false}}';

/** Whether a drying lease may be used on the device reporting `firmware` (exact match). */
export function dryingLeaseSupported(firmware: string | undefined): boolean {
  return firmware !== undefined && DRYING_LEASE_FIRMWARE.includes(firmware);
}

/**
 * Starts a custom drying run at `target` °C for `hours` whole hours, in one frame with
 * every key (the documented drying start). Only for {@link DRYING_LEASE_FIRMWARE}: on
 * V1.0.0 `work_mode: 3` selects auto. `target` must already be validated (see
 * {@link validateTarget}); `hours` is a whole number 1–{@link DRYING_LEASE_MAX_HOURS}
 * because fractions, 0 and large values are stored in ways the facts do not give.
 */
export function buildDryingLeaseFrame(target: number, hours: number): string {
  if (!isIntegerIn(target, 1, DEVICE_MAX_TARGET)) {
    throw new RangeError(`target must be a whole number 1-${DEVICE_MAX_TARGET}, got ${target}`);
  }
  if (!isIntegerIn(hours, 1, DRYING_LEASE_MAX_HOURS)) {
    throw new RangeError(
      `lease hours must be a whole number 1-${DRYING_LEASE_MAX_HOURS}, got ${hours}`,
    );
  }
  return `{"settings":{"work_mode":${DRYING_MODE},"filament_temp":${target},` +
    `"filament_timer":${hours},"filament_drying_mode":${CUSTOM_DRYING},"isrunning":1,` +
    `"work_on":true}}`;
}

/** The frame asserting a desired target in lease mode: leave drying and off for 0. */
export function buildDryingLeaseDesiredFrame(target: number, hours: number): string {
  return target === 0 ? DRYING_LEASE_OFF_FRAME : buildDryingLeaseFrame(target, hours);
}

/**
 * Which printer the device is bound to, from its connect frame's `printer`
 * root, without any secret: a Bambu binding keeps neither serial nor access
 * code; a Klipper binding keeps only its (printable) host and port.
 */
export type PrinterBinding =
  | { kind: "klipper"; host: string; port: number | null; state: number | null }
  | { kind: "bambu"; state: number | null }
  | { kind: "none"; state: number | null };

const BINDING_HOST = /^[A-Za-z0-9._:\-\[\]]{1,253}$/;

/**
 * Reads the printer binding from a device frame (the connect frame); null
 * when the frame is not JSON or has no `printer` object. A `sn` (non-empty
 * string) means Bambu, a valid `host` means Klipper, anything else "none".
 */
export function parsePrinterBinding(data: string): PrinterBinding | null {
  if (data.length > MAX_FRAME_BYTES) return null;
  let frame: unknown;
  try {
    frame = JSON.parse(data);
  } catch {
    return null;
  }
  if (!isObject(frame) || !isObject(frame.printer)) return null;
  const printer = frame.printer;
  const state = isIntegerIn(printer.state, 0, 255) ? printer.state : null;
  if (typeof printer.sn === "string" && printer.sn.trim() !== "") return { kind: "bambu", state };
  if (typeof printer.host === "string" && BINDING_HOST.test(printer.host)) {
    const port = isIntegerIn(printer.port, 1, 65535) ? printer.port : null;
    return { kind: "klipper", host: printer.host, port, state };
  }
  return { kind: "none", state };
}
