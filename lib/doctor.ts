/**
 * `panda-breath doctor`: one read-only look at a Panda Breath and the local
 * bridge, reported in plain language with an exit status.
 *
 * {@link diagnose} is pure: observations in, report lines and exit status
 * out. {@link observe} is the thin I/O shell: one name lookup, one
 * `GET /api/v2/info` (lib/firmware_probe.ts), one WebSocket that only
 * listens (it sends nothing, not even `{}`) for the connect frame and a
 * second or two of frames, and, when a bridge socket exists, `hello` as a
 * non-controller plus `status`. Nothing it does changes the device's or the
 * bridge's state, and the connect frame's secrets never leave the parser.
 */
import { lookup } from "node:dns/promises";
import { ApiClient } from "./api_client.ts";
import type { BridgeStatus } from "./bridge.ts";
import { MODE_NAMES, modeMeaning } from "./core.ts";
import { type FirmwareProbe, firmwareProblem, printable, probeFirmware } from "./firmware_probe.ts";
import {
  DEVICE_PORT,
  DEVICE_WS_PATH,
  FAULT_DESCRIPTIONS,
  type FaultName,
  keepReported,
  parseDeviceFrame,
  parsePrinterBinding,
  type PrinterBinding,
} from "./protocol.ts";

/** The device's WebSocket sockets (shared by every client, least recently used evicted). */
export const DEVICE_SOCKETS = 7;

/** How long the doctor listens after the WebSocket opened, in ms. */
export const DEFAULT_LISTEN_MS = 1500;

/** What the name lookup found. */
export type ResolveResult = { ok: true; address: string } | { ok: false; error: string };

/** What the listen-only WebSocket saw. */
export interface DeviceObservation {
  /** The WebSocket opened. */
  opened: boolean;
  /** Why it did not open or closed early. */
  error: string | null;
  /** Frames received. */
  frames: number;
  /** A settings block with `work_on` arrived (the connect frame). */
  connectFrame: boolean;
  /** The firmware version the device reported, e.g. `V1.0.3`. */
  firmware: string | null;
  /** `work_on`: the heater is switched on. */
  workOn: boolean | null;
  /** `work_mode` as reported (its meaning depends on the firmware). */
  workMode: number | null;
  /** `set_temp`: the device's own target, °C. */
  setTemp: number | null;
  /** The last chamber reading, °C. */
  temperature: number | null;
  /** `remaining_seconds` of a drying run. */
  remainingSeconds: number | null;
  /** `isrunning`: a drying run is active. */
  dryingRunning: boolean | null;
  /** Faults active in the last frames that named them. */
  faults: FaultName[];
  /** Which printer the device is bound to, without secrets; null if not reported. */
  binding: PrinterBinding | null;
}

/** What the local bridge's socket said. */
export interface BridgeObservation {
  /** The bridge socket path that was asked. */
  socket: string;
  /** The socket answered `status`. */
  running: boolean;
  /** Why it did not (no socket, nobody listening, ...). */
  error: string | null;
  /** The bridge's status; null when it did not answer. */
  status: BridgeStatus | null;
  /** The IP the bridge's device host name resolves to (null: unknown). */
  deviceAddress: string | null;
}

/** Everything the doctor saw; it holds no secret. */
export interface Observations {
  /** The `--host` value as given. */
  host: string;
  /** The host name (no port). */
  hostname: string;
  /** The device's TCP port ({@link DEVICE_PORT} unless given). */
  port: number;
  /** What the host name resolved to, or why it did not. */
  resolve: ResolveResult;
  /** Null when the name did not resolve. */
  http: FirmwareProbe | null;
  /** Null when not tried (name unresolved, no HTTP answer, DragonBreath). */
  device: DeviceObservation | null;
  /** What the local bridge said. */
  bridge: BridgeObservation;
}

/** One check's outcome: `fail` keeps the heater from working. */
export type CheckLevel = "ok" | "info" | "warn" | "fail";

/** One report line. */
export interface Check {
  /** How much it matters. */
  level: CheckLevel;
  /** What it is about, e.g. `address`, `firmware`, `bridge`, `klipper`. */
  topic: string;
  /** The finding, in one sentence. */
  text: string;
}

/** The doctor's verdict. */
export interface DoctorReport {
  /** The report lines, in the order they are printed. */
  checks: Check[];
  /** 0: nothing keeps the heater from working; 1: a problem was found. */
  exitStatus: 0 | 1;
}

const PRINTER_STATES: Record<number, string> = {
  0: "disconnected",
  1: "invalid printer info",
  2: "connecting",
  3: "connected",
};

function modeText(d: DeviceObservation): string {
  if (d.workOn === null) return "unknown (no settings block received)";
  const meaning = modeMeaning(d.workMode, d.firmware);
  const mode = `${MODE_NAMES[meaning]} (work_mode ${d.workMode ?? "?"})`;
  if (!d.workOn) return `off; mode ${mode}, device target ${d.setTemp ?? "?"} °C`;
  const drying = meaning === "drying" && d.remainingSeconds !== null
    ? `, drying ${Math.round(d.remainingSeconds / 60)} min left`
    : "";
  return `ON, mode ${mode}, device target ${d.setTemp ?? "?"} °C${drying}`;
}

function bindingText(binding: PrinterBinding | null): string {
  if (binding === null) return "unknown (the connect frame had no printer block)";
  const state = binding.state === null
    ? ""
    : `, its printer link ${PRINTER_STATES[binding.state] ?? `in error ${binding.state}`}`;
  switch (binding.kind) {
    case "klipper":
      return `bound to a Klipper printer at ${binding.host}${
        binding.port === null ? "" : `:${binding.port}`
      }${state}`;
    case "bambu":
      return `bound to a Bambu printer (serial hidden)${state}`;
    default:
      return "not bound to a printer";
  }
}

/** The device's WebSocket URL the bridge uses for `hostname`:`port`. */
function wsUrl(hostname: string, port: number): string {
  const host = hostname.includes(":") && !hostname.startsWith("[") ? `[${hostname}]` : hostname;
  return `ws://${host}:${port}${DEVICE_WS_PATH}`;
}

/** The port of a `ws://host:port/ws` URL ({@link DEVICE_PORT} when absent or unreadable). */
function bridgePort(url: string): number {
  try {
    return Number(new URL(url).port || DEVICE_PORT);
  } catch {
    return DEVICE_PORT;
  }
}

function bridgeChecks(o: Observations, checks: Check[]): void {
  const b = o.bridge;
  if (!b.running || b.status === null) {
    checks.push({
      level: "info",
      topic: "bridge",
      text: `no local bridge at ${b.socket} (${b.error ?? "no answer"}); ` +
        `start it with 'panda-breath run --host ${o.host}' (or its service)`,
    });
    return;
  }
  const s = b.status;
  const same = (address: string) => wsUrl(address, o.port) === s.link.url;
  const ours = same(o.hostname) || (o.resolve.ok && same(o.resolve.address)) ||
    (o.resolve.ok && b.deviceAddress === o.resolve.address && bridgePort(s.link.url) === o.port);
  if (!ours) {
    checks.push({
      level: "warn",
      topic: "bridge",
      text: `the local bridge drives ${s.link.url}, not ${wsUrl(o.hostname, o.port)}: ` +
        `check its --host`,
    });
  }
  if (s.firmware_problem) {
    checks.push({ level: "fail", topic: "bridge", text: s.firmware_problem });
  } else if (!s.connected) {
    checks.push({
      level: "fail",
      topic: "bridge",
      text: `the bridge's device link is DOWN (${s.link.url}, ${s.link.drops} drops): ` +
        `if the device's address changed, fix --host (a static DHCP lease prevents this)`,
    });
  } else {
    checks.push({
      level: "ok",
      topic: "bridge",
      text: `running (${s.bridge}), connected to ${s.link.url}, target ${
        s.target === 0 ? "off" : `${s.target} °C`
      }`,
    });
  }
  if (s.failsafe.controller) {
    checks.push({ level: "ok", topic: "klipper", text: "connected as controller and ready" });
  } else {
    checks.push({
      level: "warn",
      topic: "klipper",
      text: s.failsafe.controllers > 0
        ? "connected but not ready: Klipper is not in the ready state (check its log)"
        : "not connected as controller: heat is off until Klipper's panda_bridge extra connects " +
          "(is [panda_bridge] in printer.cfg and Klipper running?)",
    });
  }
  if (s.failsafe.tripped) {
    checks.push({ level: "info", topic: "failsafe", text: `tripped: ${s.failsafe.reason}` });
  }
}

function socketEstimate(o: Observations): Check {
  const bridge = o.bridge.running && o.bridge.status?.connected ? 1 : 0;
  const doctor = o.device?.opened ? 1 : 0;
  const known = bridge + doctor;
  const parts = [
    ...(doctor ? ["this doctor's"] : []),
    ...(bridge ? ["the local bridge's"] : []),
  ];
  const refused = o.device !== null && !o.device.opened && o.http?.kind === "stock";
  const count = known === 0 ? "unknown how many" : `at least ${known}`;
  const text = `estimate: ${count} of ${DEVICE_SOCKETS} in use${
    parts.length ? ` (${parts.join(" and ")})` : ""
  }; the device does not report the rest (browser tabs, other integrations)${
    refused ? "; the WebSocket failed while HTTP answers: the sockets may be full" : ""
  }`;
  return { level: refused ? "warn" : "info", topic: "sockets", text };
}

/** Turns observations into report lines and an exit status (pure). */
export function diagnose(o: Observations): DoctorReport {
  const checks: Check[] = [];
  const fail = (topic: string, text: string) => checks.push({ level: "fail", topic, text });
  if (!o.resolve.ok) {
    fail(
      "address",
      `cannot resolve '${o.hostname}' (${o.resolve.error}): use the device's IP address ` +
        `(your router's DHCP client list shows it) or check that mDNS works ` +
        `('ping PandaBreath.local')`,
    );
  } else {
    checks.push({
      level: "ok",
      topic: "address",
      text: o.resolve.address === o.hostname
        ? `${o.hostname} port ${o.port}`
        : `${o.hostname} is ${o.resolve.address}, port ${o.port}`,
    });
  }
  if (o.http !== null) {
    if (o.http.kind === "unreachable") {
      fail(
        "reachable",
        `no answer from the device: ${o.http.detail}. Is it powered and on this network? ` +
          `If its IP changed, fix --host (a static DHCP lease prevents this)`,
      );
    } else if (o.http.kind === "dragonbreath") {
      fail("firmware", firmwareProblem(o.host, o.http) ?? o.http.detail);
    } else {
      checks.push({ level: "ok", topic: "reachable", text: "the device answers HTTP" });
    }
  }
  const d = o.device;
  if (d !== null) {
    if (!d.opened) {
      fail(
        "websocket",
        `cannot open ${wsUrl(o.resolve.ok ? o.resolve.address : o.hostname, o.port)}: ${
          d.error ?? "no reason given"
        }${
          o.http?.kind === "stock"
            ? ". HTTP answers, so the device's 7 sockets may be full: close its web page in " +
              "browsers and other integrations, or power-cycle it"
            : ""
        }`,
      );
    } else if (!d.connectFrame) {
      fail(
        "websocket",
        `opened, but no connect frame arrived (${d.frames} frames): ` +
          `this does not look like a stock Panda Breath`,
      );
    } else {
      checks.push({
        level: "ok",
        topic: "websocket",
        text: `connect frame received, ${d.frames} frames in all (sent nothing)`,
      });
      checks.push({
        level: "info",
        topic: "firmware",
        text: `stock firmware ${d.firmware ?? "(version not reported)"}`,
      });
      checks.push({ level: "info", topic: "mode", text: modeText(d) });
      checks.push({
        level: d.temperature === null ? "warn" : "info",
        topic: "temperature",
        text: d.temperature === null ? "no temperature reported" : `${d.temperature} °C`,
      });
      if (d.faults.length === 0) {
        checks.push({ level: "ok", topic: "faults", text: "none" });
      } else {
        fail(
          "faults",
          `${
            d.faults.map((f) => `${f} (${FAULT_DESCRIPTIONS[f]})`).join("; ")
          }: the device refuses heat; check the sensor wiring, then power-cycle it`,
        );
      }
      checks.push({ level: "info", topic: "printer", text: bindingText(d.binding) });
    }
    checks.push(socketEstimate(o));
  }
  bridgeChecks(o, checks);
  return { checks, exitStatus: checks.some((c) => c.level === "fail") ? 1 : 0 };
}

const LEVEL_TAGS: Record<CheckLevel, string> = {
  ok: "ok  ",
  info: "    ",
  warn: "WARN",
  fail: "FAIL",
};

/** The report as `panda-breath doctor` prints it. */
export function formatReport(report: DoctorReport): string {
  const width = Math.max(...report.checks.map((c) => c.topic.length));
  const lines = report.checks.map((c) =>
    `${LEVEL_TAGS[c.level]}  ${c.topic.padEnd(width)}  ${c.text}`
  );
  const problems = report.checks.filter((c) => c.level === "fail").length;
  lines.push(
    problems === 0
      ? "No problem found."
      : `${problems} problem${problems === 1 ? "" : "s"} found: the heater cannot work until ${
        problems === 1 ? "it is" : "they are"
      } fixed.`,
  );
  return lines.join("\n");
}

/** Options of {@link observe}. */
export interface ObserveOptions {
  /** The `--host` value. */
  host: string;
  /** The bridge socket. */
  socket: string;
  /** Bound of each step (lookup, HTTP, WebSocket open) in ms. */
  timeoutMs: number;
  /** How long to listen after the WebSocket opened (default {@link DEFAULT_LISTEN_MS}). */
  listenMs?: number;
}

function errorText(error: unknown): string {
  return printable(error instanceof Error ? error.message : String(error), 100);
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function resolveName(hostname: string, timeoutMs: number): Promise<ResolveResult> {
  const bare = hostname.replace(/^\[|\]$/g, "");
  try {
    const { address } = await withTimeout(lookup(bare), timeoutMs, "lookup");
    return { ok: true, address };
  } catch (error) {
    const code = (error as { code?: string }).code;
    return { ok: false, error: code === "ENOTFOUND" ? "name not found" : errorText(error) };
  }
}

/** What the doctor keeps of the device's reports (see {@link keepReported}). */
const OBSERVED_SETTINGS = [
  "firmware",
  "workOn",
  "workMode",
  "setTemp",
  "temperature",
  "remainingSeconds",
  "dryingRunning",
] as const;

/** Opens the device's WebSocket, sends nothing, collects frames, closes. */
export function listenToDevice(
  url: string,
  timeoutMs: number,
  listenMs = DEFAULT_LISTEN_MS,
): Promise<DeviceObservation> {
  const seen: DeviceObservation = {
    opened: false,
    error: null,
    frames: 0,
    connectFrame: false,
    firmware: null,
    workOn: null,
    workMode: null,
    setTemp: null,
    temperature: null,
    remainingSeconds: null,
    dryingRunning: null,
    faults: [],
    binding: null,
  };
  const active = new Set<FaultName>();
  return new Promise((resolve) => {
    let ws: WebSocket;
    try {
      ws = new WebSocket(url);
    } catch (error) {
      seen.error = errorText(error);
      resolve(seen);
      return;
    }
    ws.binaryType = "arraybuffer";
    let done = false;
    let timer = setTimeout(() => finish(`not open within ${timeoutMs} ms`), timeoutMs);
    const settle = () => {
      seen.faults = [...active];
      resolve(seen);
    };
    const finish = (error: string | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (error !== null && seen.error === null) seen.error = error;
      if (ws.readyState === WebSocket.CLOSED) return settle();
      // Wait (bounded) for the close so that nothing stays open on the device.
      const bound = setTimeout(settle, 1000);
      ws.addEventListener("close", () => {
        clearTimeout(bound);
        settle();
      });
      try {
        ws.close();
      } catch {
        // Closing anyway.
      }
    };
    ws.onopen = () => {
      seen.opened = true;
      clearTimeout(timer);
      timer = setTimeout(() => finish(null), listenMs);
    };
    ws.onmessage = (event) => {
      seen.frames++;
      const data = typeof event.data === "string" ? event.data : new Uint8Array(event.data);
      const { report } = parseDeviceFrame(data);
      if (report === null) return;
      if (report.isSettingsBlock) seen.connectFrame = true;
      if (seen.binding === null && typeof data === "string") {
        seen.binding = parsePrinterBinding(data);
      }
      keepReported(seen, report, OBSERVED_SETTINGS);
      for (const [name, on] of Object.entries(report.faults ?? {})) {
        if (on) active.add(name as FaultName);
        else active.delete(name as FaultName);
      }
    };
    ws.onerror = (event) => {
      if (seen.error === null) {
        seen.error = printable((event as ErrorEvent).message || "WebSocket error", 100);
      }
    };
    ws.onclose = () => {
      if (!done) finish(seen.opened ? "the device closed the connection" : null);
    };
  });
}

async function askBridge(socket: string, timeoutMs: number): Promise<BridgeObservation> {
  let client: ApiClient;
  try {
    client = await ApiClient.connect(socket);
  } catch {
    return {
      socket,
      running: false,
      error: "no bridge listening",
      status: null,
      deviceAddress: null,
    };
  }
  try {
    const status = await withTimeout(
      (async () => {
        await client.hello({ client: "panda-breath doctor", controller: false });
        return await client.request("status") as BridgeStatus;
      })(),
      timeoutMs,
      "bridge",
    );
    let deviceAddress: string | null = null;
    try {
      const resolved = await resolveName(new URL(status.link.url).hostname, timeoutMs);
      if (resolved.ok) deviceAddress = resolved.address;
    } catch {
      // Not a URL: compared as given.
    }
    return { socket, running: true, error: null, status, deviceAddress };
  } catch (error) {
    return { socket, running: false, error: errorText(error), status: null, deviceAddress: null };
  } finally {
    await client.close();
  }
}

/** Looks at the device and the local bridge once, read-only (see the module doc). */
export async function observe(options: ObserveOptions): Promise<Observations> {
  const url = new URL(/^wss?:\/\//i.test(options.host) ? options.host : `ws://${options.host}`);
  const hostname = url.hostname.replace(/^\[|\]$/g, "");
  const port = Number(url.port || DEVICE_PORT);
  const resolved = await resolveName(hostname, options.timeoutMs);
  let http: FirmwareProbe | null = null;
  let device: DeviceObservation | null = null;
  if (resolved.ok) {
    const target = resolved.address.includes(":") ? `[${resolved.address}]` : resolved.address;
    http = await probeFirmware(`${target}:${port}`, { timeoutMs: options.timeoutMs });
    if (http.kind === "stock") {
      device = await listenToDevice(
        wsUrl(resolved.address, port),
        options.timeoutMs,
        options.listenMs,
      );
    }
  }
  const bridge = await askBridge(options.socket, options.timeoutMs);
  return { host: options.host, hostname, port, resolve: resolved, http, device, bridge };
}
