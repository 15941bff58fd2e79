import { ApiClient, ApiError } from "./api_client.ts";
import { ApiServer, DEFAULT_SOCKET_MODE, SocketInUseError } from "./api_server.ts";
import { ArgvError, type OptionSpec, parseArgv } from "./argv.ts";
import { Bridge, type BridgeStatus } from "./bridge.ts";
import { DEFAULT_LOG_LEVEL, isLogLevel, LOG_LEVELS, Logger, type LogLevel } from "./log.ts";
import {
  checkSocketPath,
  DEFAULT_SOCKET_PATH,
  deviceUrl,
  parseNumber,
  parseReadbackInterval,
  parseSocketMode,
  parseWholeNumber,
  READBACK_MAX_S,
  UsageError,
} from "./options.ts";
import { DEVICE_MAX_TARGET, DRYING_LEASE_MAX_HOURS, FAULT_DESCRIPTIONS } from "./protocol.ts";
import { CORE_DEFAULTS, HEAT_MODES, type HeatMode, modeMeaning } from "./core.ts";
import { isIsoTimeMs, isoTime } from "./iso_time.ts";
import { VERSION } from "./version.ts";

const USAGE = `panda-breath ${VERSION} — BIQU Panda Breath chamber heater bridge for Klipper

Usage: panda-breath <command> [options]

Commands:
  run       Run the bridge: device WebSocket <-> local socket for Klipper
  status    Show the running bridge's status
  doctor    Check the device and the local bridge once, read-only
  set       Set the chamber target (°C; 0 = off)
  off       Turn the heater off
  simulate  Run a simulated Panda Breath device
  demo      Run the simulator and the bridge together and watch it heat

Options:
  -h, --help     Show help (also after a command: panda-breath run --help)
  -V, --version  Print the version

Exit status: 0 ok, 1 failure (e.g. bridge unreachable, device fault), 2 bad usage.`;

/** Exit status of `run` after an unexpected internal error (EX_SOFTWARE). */
const EXIT_CRASH = 70;

type Options = Record<string, OptionSpec>;

const HELP_OPTION: Options = { help: { type: "boolean", short: "h" } };
const SOCKET_OPTION = {
  socket: { type: "string", default: DEFAULT_SOCKET_PATH },
} satisfies Options;

// Each command's options. A `default` here is the one definition of it: the
// parse fills it in and the help text prints it.

/** Each numeric option's accepted [min, max]: the parse checks it and the help prints it. */
const RANGES = {
  failsafeTimeout: [1, 600],
  maxTarget: [1, DEVICE_MAX_TARGET],
  leaseHours: [1, DRYING_LEASE_MAX_HOURS],
  leaseSpeed: [1, 1000],
  doctorTimeout: [0.5, 60],
  port: [0, 65535],
  simulateSpeed: [0.1, 1000],
  sensorBias: [-20, 20],
  demoTarget: [25, 60],
  demoSpeed: [1, 1000],
} as const;

function span([min, max]: readonly [number, number]): string {
  return `${min}-${max}`;
}

const RUN_OPTIONS = {
  host: { type: "string" },
  ...SOCKET_OPTION,
  "socket-mode": { type: "string", default: `0${DEFAULT_SOCKET_MODE.toString(8)}` },
  "failsafe-timeout": { type: "string", default: String(CORE_DEFAULTS.failsafeTimeoutMs / 1000) },
  "max-target": { type: "string", default: String(CORE_DEFAULTS.maxTarget) },
  "readback-interval": {
    type: "string",
    default: String(CORE_DEFAULTS.readbackIntervalMs / 1000),
  },
  "heat-mode": { type: "string", default: CORE_DEFAULTS.heatMode },
  // No default: giving either without `--heat-mode drying-lease` is an error.
  "lease-hours": { type: "string" },
  "lease-speed": { type: "string" },
  "log-level": { type: "string", default: DEFAULT_LOG_LEVEL },
} satisfies Options;

const STATUS_OPTIONS = { ...SOCKET_OPTION, json: { type: "boolean" } } satisfies Options;

const DOCTOR_OPTIONS = {
  host: { type: "string" },
  ...SOCKET_OPTION,
  json: { type: "boolean" },
  timeout: { type: "string", default: "3" },
} satisfies Options;

const SIMULATE_OPTIONS = {
  port: { type: "string", default: "8080" },
  hostname: { type: "string", default: "127.0.0.1" },
  speed: { type: "string", default: "1" },
  "sensor-bias": { type: "string", default: "0" },
} satisfies Options;

const DEMO_OPTIONS = {
  target: { type: "string", default: "45" },
  speed: { type: "string", default: "30" },
} satisfies Options;

const SOCKET_HELP = `  --socket PATH   Bridge socket (default ${DEFAULT_SOCKET_PATH})`;

const HELP: Record<string, string> = {
  run: `Usage: panda-breath run --host HOST[:PORT] [options]

Holds a WebSocket to the device, keeps the desired state and asserts it on
every (re)connect when the device differs, reads the device's real state back
periodically, and serves the Klipper extra on a local Unix socket.
On SIGINT/SIGTERM it turns the heater off, then exits 0. On an unexpected
internal error it sends OFF, logs it and exits ${EXIT_CRASH}, so that the service
manager restarts it (a new bridge starts off).

Options:
  --host HOST[:PORT]        Device address, e.g. PandaBreath.local or 192.168.1.50 (port 80)
${SOCKET_HELP}
  --socket-mode MODE        ${RUN_OPTIONS["socket-mode"].default} (default: owner and group) or 0600
  --failsafe-timeout S      Turn heat off when no controller heartbeated for S seconds
                            (default ${RUN_OPTIONS["failsafe-timeout"].default}, ${
    span(RANGES.failsafeTimeout)
  })
  --max-target C            Highest accepted target in °C (default ${
    RUN_OPTIONS["max-target"].default
  }, ${span(RANGES.maxTarget)})
  --readback-interval S     Read the device's real state back every S seconds over a
                            short extra connection, correcting changes made by other
                            clients (default ${
    RUN_OPTIONS["readback-interval"].default
  }; 0 disables; 1-${READBACK_MAX_S})
  --heat-mode MODE          always-on (default) or drying-lease: heat through a drying run
                            the bridge renews at half-time, so the device stops by itself
                            at most one lease after the bridge is gone (firmware
                            V1.0.1-V1.0.3 only; otherwise heat is refused, never switched
                            to always-on)
  --lease-hours N           Drying lease length in whole hours (default ${CORE_DEFAULTS.leaseHours}, ${
    span(RANGES.leaseHours)
  })
  --lease-speed X           Testing only: the lease clock runs X times faster, to match
                            'panda-breath simulate --speed X' (default ${CORE_DEFAULTS.leaseTimeScale}, ${
    span(RANGES.leaseSpeed)
  })
  --log-level LEVEL         ${LOG_LEVELS.join(", ")} (default ${DEFAULT_LOG_LEVEL})
  -h, --help                Show this help`,
  status: `Usage: panda-breath status [--socket PATH] [--json]

Prints the running bridge's status. Exit status 1 when the bridge is unreachable
or the device runs firmware the bridge cannot drive (DragonBreath).

Options:
${SOCKET_HELP}
  --json          Print the raw status as JSON
  -h, --help      Show this help`,
  doctor: `Usage: panda-breath doctor --host HOST[:PORT] [options]

Connects to the device once and reports in plain language: its address,
firmware (stock or DragonBreath), mode, target, temperature, faults, printer
binding, an estimate of its 7 sockets in use, and whether a local bridge runs
with Klipper connected as controller. Read-only: it sends nothing to the
device (safe beside a running bridge) and never prints the device's secrets.
Exit status 0 when nothing keeps the heater from working, 1 when a problem
was found (warnings alone exit 0), 2 on bad usage.

Options:
  --host HOST[:PORT]  Device address, e.g. PandaBreath.local or 192.168.1.50 (port 80)
${SOCKET_HELP}
  --timeout S         Bound of each step in seconds (default ${DOCTOR_OPTIONS.timeout.default}, ${
    span(RANGES.doctorTimeout)
  })
  --json              Print the observations and checks as JSON
  -h, --help          Show this help`,
  set: `Usage: panda-breath set CELSIUS [--socket PATH]

Sets the chamber target through the running bridge (0 turns it off).
The CLI is not a controller: unless Klipper (the panda_bridge extra) is
connected and ready, the bridge's failsafe turns the heat off after its
timeout. While the device reports a fault, heat is refused (exit 1).

Options:
${SOCKET_HELP}
  -h, --help      Show this help`,
  off: `Usage: panda-breath off [--socket PATH]

Turns the heater off through the running bridge.

Options:
${SOCKET_HELP}
  -h, --help      Show this help`,
  simulate: `Usage: panda-breath simulate [--port N] [--hostname H] [--speed X] [--sensor-bias C]

Runs a simulated Panda Breath (WebSocket at ws://H:N/ws, control endpoints
under http://H:N/sim/). Prints "listening on ws://HOST:PORT/ws" on stdout.

Options:
  --port N        TCP port (default ${SIMULATE_OPTIONS.port.default}; 0 picks a free one)
  --hostname H    Address to listen on (default ${SIMULATE_OPTIONS.hostname.default})
  --speed X       Thermal model speed-up factor (default ${SIMULATE_OPTIONS.speed.default}, ${
    span(RANGES.simulateSpeed)
  })
  --sensor-bias C The device's sensor reads C degrees below the chamber
                  (default ${SIMULATE_OPTIONS["sensor-bias"].default}, ${RANGES.sensorBias[0]} to ${
    RANGES.sensorBias[1]
  }; /sim/state temperature is the chamber's)
  -h, --help      Show this help`,
  demo: `Usage: panda-breath demo [--target C] [--speed X]

Runs the simulator and the bridge in one process and shows the chamber
heating live, then the failsafe switching it off when the controller stops.

Options:
  --target C      Chamber target in °C (default ${DEMO_OPTIONS.target.default}, ${
    span(RANGES.demoTarget)
  })
  --speed X       Thermal model speed-up factor (default ${DEMO_OPTIONS.speed.default}, ${
    span(RANGES.demoSpeed)
  })
  -h, --help      Show this help`,
};

function parse(command: string, args: string[], options: Options, positionals = 0) {
  try {
    const parsed = parseArgv(args, { ...HELP_OPTION, ...options }, positionals > 0);
    if (!parsed.values.help && parsed.positionals.length > positionals) {
      throw new UsageError(`unexpected argument '${parsed.positionals[positionals]}'`);
    }
    return parsed;
  } catch (error) {
    if (!(error instanceof ArgvError)) throw error;
    throw new UsageError(`${command}: ${error.message}`);
  }
}

function socketOption(values: Record<string, unknown>): string {
  return checkSocketPath(values.socket as string);
}

function print(line: string): void {
  console.log(line);
}

async function withClient<T>(socket: string, use: (client: ApiClient) => Promise<T>): Promise<T> {
  const client = await ApiClient.connect(socket);
  try {
    return await use(client);
  } finally {
    await client.close();
  }
}

async function commandRun(args: string[]): Promise<number> {
  const { values } = parse("run", args, RUN_OPTIONS);
  if (values.help) return printHelp("run");
  if (values.host === undefined) throw new UsageError("run needs --host HOST[:PORT] (the device)");
  const url = deviceUrl(values.host as string);
  const socket = socketOption(values);
  const socketMode = parseSocketMode(values["socket-mode"] as string);
  const failsafeS = parseNumber(
    "failsafe-timeout",
    values["failsafe-timeout"] as string,
    ...RANGES.failsafeTimeout,
    "seconds",
  );
  const maxTarget = parseWholeNumber(
    "max-target",
    values["max-target"] as string,
    ...RANGES.maxTarget,
  );
  const readbackS = parseReadbackInterval(values["readback-interval"] as string);
  const level = values["log-level"] as string;
  if (!isLogLevel(level)) {
    throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(", ")}, got '${level}'`);
  }
  const heatMode = values["heat-mode"] as string;
  if (!(HEAT_MODES as readonly string[]).includes(heatMode)) {
    throw new UsageError(`--heat-mode must be one of ${HEAT_MODES.join(", ")}, got '${heatMode}'`);
  }
  for (const name of ["lease-hours", "lease-speed"]) {
    if (values[name] !== undefined && heatMode !== "drying-lease") {
      throw new UsageError(`--${name} applies only with --heat-mode drying-lease`);
    }
  }
  const leaseHours = parseWholeNumber(
    "lease-hours",
    (values["lease-hours"] as string | undefined) ?? String(CORE_DEFAULTS.leaseHours),
    ...RANGES.leaseHours,
  );
  const leaseSpeed = parseNumber(
    "lease-speed",
    (values["lease-speed"] as string | undefined) ?? String(CORE_DEFAULTS.leaseTimeScale),
    ...RANGES.leaseSpeed,
    "",
  );
  return await runBridge({
    heatMode: heatMode as HeatMode,
    leaseHours,
    leaseSpeed,
    url,
    socket,
    socketMode,
    failsafeMs: failsafeS * 1000,
    maxTarget,
    readbackMs: readbackS * 1000,
    level,
  });
}

interface RunSettings {
  url: string;
  socket: string;
  /** File mode of the socket (`--socket-mode`). */
  socketMode: number;
  failsafeMs: number;
  maxTarget: number;
  readbackMs: number;
  level: LogLevel;
  heatMode: HeatMode;
  leaseHours: number;
  leaseSpeed: number;
}

async function runBridge(settings: RunSettings): Promise<number> {
  const logger = new Logger(settings.level);
  const bridge = new Bridge({
    url: settings.url,
    logger,
    failsafeTimeoutMs: settings.failsafeMs,
    maxTarget: settings.maxTarget,
    readbackIntervalMs: settings.readbackMs,
    heatMode: settings.heatMode,
    leaseHours: settings.leaseHours,
    leaseTimeScale: settings.leaseSpeed,
  });
  let server: ApiServer;
  try {
    server = await ApiServer.listen({
      path: settings.socket,
      bridge,
      logger,
      mode: settings.socketMode,
    });
  } catch (error) {
    const message = error instanceof SocketInUseError
      ? error.message
      : `cannot listen on ${settings.socket}: ${(error as Error).message}`;
    logger.error(message);
    return 1;
  }
  // An uncaught error leaves the bridge in an unknown state: OFF first, then
  // log, then exit non-zero so that supervision restarts it into OFF.
  let crashed!: (error: unknown) => void;
  const crash = new Promise<unknown>((resolve) => crashed = resolve);
  let crashing = false;
  const onUnexpected = (event: PromiseRejectionEvent | ErrorEvent) => {
    event.preventDefault();
    if (crashing) return;
    crashing = true;
    const error = "reason" in event ? event.reason : event.error;
    const offSent = bridge.emergencyOff();
    logger.error("unexpected error: heater OFF sent; exiting so the service restarts the bridge", {
      error: error instanceof Error ? error.message : String(error),
      off_sent: offSent,
    });
    crashed(error);
  };
  globalThis.addEventListener("unhandledrejection", onUnexpected);
  globalThis.addEventListener("error", onUnexpected);
  // A second SIGINT/SIGTERM must not kill the bridge before OFF is sent: this
  // listener stays for the whole (bounded) shutdown, so none has the default action.
  let stopping = false;
  const onRepeat = () => {
    if (stopping) logger.warn("already shutting down: turning the heater off first");
  };
  const signals = ["SIGINT", "SIGTERM"] as const;
  for (const name of signals) Deno.addSignalListener(name, onRepeat);
  bridge.start();
  const outcome = await Promise.race([
    waitForSignal([...signals]).then((signal) => ({ signal })),
    crash.then(() => ({ signal: null })),
  ]);
  stopping = true;
  if (outcome.signal === null) {
    // Bounded: whatever state the error left, the process ends within a few seconds.
    const hardExit = setTimeout(() => Deno.exit(EXIT_CRASH), 5000);
    try {
      await bridge.stop("unexpected error", 1000);
      await server.close();
    } catch {
      // Exiting anyway; the restarted bridge asserts OFF.
    }
    clearTimeout(hardExit);
    logger.flush();
    logger.error("bridge exited after an unexpected error", { exit: EXIT_CRASH });
    return EXIT_CRASH;
  }
  logger.info("shutting down", { signal: outcome.signal });
  // OFF first: the core refuses heat from here on, so the socket can close after.
  await bridge.stop(`received ${outcome.signal}`);
  await server.close();
  for (const name of signals) Deno.removeSignalListener(name, onRepeat);
  globalThis.removeEventListener("unhandledrejection", onUnexpected);
  globalThis.removeEventListener("error", onUnexpected);
  logger.flush();
  logger.info("bridge stopped");
  return 0;
}

/** Resolves with the first of `signals` received, then stops listening. */
export function waitForSignal(signals: Deno.Signal[]): Promise<Deno.Signal> {
  return new Promise((resolve) => {
    const handlers = signals.map((signal) => {
      const handler = () => {
        handlers.forEach(([s, h]) => Deno.removeSignalListener(s, h));
        resolve(signal);
      };
      Deno.addSignalListener(signal, handler);
      return [signal, handler] as const;
    });
  });
}

function age(seconds: number | null): string {
  return seconds === null ? "never" : `${seconds.toFixed(1)} s ago`;
}

function duration(seconds: number): string {
  if (seconds >= 3600) {
    return `${Math.floor(seconds / 3600)} h ${Math.round(seconds % 3600 / 60)} min`;
  }
  if (seconds >= 60) return `${Math.round(seconds / 60)} min`;
  return `${seconds.toFixed(1)} s`;
}

function heatModeText(status: BridgeStatus): string {
  const lease = status.lease;
  if (status.heat_mode !== "drying-lease" || lease === null) return status.heat_mode;
  const head = `drying-lease (${lease.hours} h)`;
  if (lease.unavailable) return `${head}: UNAVAILABLE, heat refused: ${lease.unavailable}`;
  const verified = `verified ${age(lease.last_verified_age)}, ${lease.renewals} renewals`;
  switch (lease.state) {
    case "running":
      return `${head}: running, the device stops by itself in ${
        duration(lease.remaining ?? 0)
      } unless renewed; ${verified}`;
    case "starting":
      return `${head}: started, verifying by read-back; ${verified}`;
    case "stopping":
      return `${head}: renewing (stop, then start); ${verified}`;
    default:
      return `${head}: no lease (off)`;
  }
}

/** "since 14:02:11 (5 min)", from an ISO time and the current time. */
function since(iso: string | null, now: number): string {
  if (iso === null) return "";
  const at = Date.parse(iso);
  if (!isIsoTimeMs(at)) return ` since ${iso}`;
  const clock = isoTime(at).slice(11, 19);
  return ` since ${clock} UTC (${duration(Math.max(0, (now - at) / 1000))})`;
}

const MODE_WORDS = {
  auto: "auto (heats by the printer's bed temperature; not driven by the bridge)",
  always_on: "always-on (heats to the device target)",
  drying: "drying (a timed drying run)",
  unknown: "unknown",
} as const;

function deviceTargetText(status: BridgeStatus): string {
  const device = status.device;
  if (device.work_on === null) return "nothing reported yet";
  const sent = `${device.set_temp ?? "?"} °C, heater ${device.work_on ? "on" : "off"}`;
  const wanted = status.target === 0 ? !device.work_on : device.work_on &&
    device.set_temp === status.target;
  const check = status.readback.interval === 0
    ? "read-back is off"
    : `the next read-back (every ${status.readback.interval} s) or device push shows it`;
  return `${sent} (reported ${age(device.reported_age)})${
    wanted ? "" : `; not the bridge's target yet: the device acknowledges no write, ${check}`
  }`;
}

function failsafeText(status: BridgeStatus): string {
  const f = status.failsafe;
  if (f.tripped) return `TRIPPED: ${f.reason}`;
  if (f.remaining !== null) {
    return `armed: heat off in ${duration(f.remaining)} unless a ready heartbeat arrives`;
  }
  return status.target === 0 ? "idle (heater off)" : `armed (after ${f.timeout} s without Klipper)`;
}

/**
 * A human-readable table of a status, as `panda-breath status` prints it,
 * with the age of every reading (`now` is the current time, ms).
 */
export function formatStatus(status: BridgeStatus, now: number = Date.now()): string {
  const device = status.device;
  const rows: [string, string][] = [
    [
      "device link",
      status.connected
        ? `connected (${status.link.url})${since(status.since.connected, now)}`
        : `DOWN (${status.link.url})`,
    ],
    ...(status.firmware_problem ? [["PROBLEM", status.firmware_problem] as [string, string]] : []),
    [
      "temperature",
      status.temperature === null
        ? `unknown (last reading ${age(status.temperature_age)})`
        : `${status.temperature} °C (${age(status.temperature_age)})`,
    ],
    ["target", status.target === 0 ? "off" : `${status.target} °C`],
    ["device target", deviceTargetText(status)],
    [
      "mode",
      device.work_mode === null
        ? "unknown (nothing reported yet)"
        : `${
          MODE_WORDS[modeMeaning(device.work_mode, device.firmware)]
        }, work_mode ${device.work_mode}, firmware ${device.firmware ?? "?"}`,
    ],
    ["heat mode", heatModeText(status)],
    [
      "faults",
      status.faults.length === 0
        ? "none"
        : status.faults.map((f) => `${f} (${FAULT_DESCRIPTIONS[f] ?? "?"})`).join("; "),
    ],
    [
      "controller",
      status.failsafe.controller
        ? `ready (heartbeat ${age(status.failsafe.controller_age)})`
        : status.failsafe.controllers > 0
        ? `connected, not ready (failsafe after ${status.failsafe.timeout} s)`
        : `none (failsafe after ${status.failsafe.timeout} s)`,
    ],
    ["failsafe", failsafeText(status)],
    [
      "read-back",
      status.readback.interval === 0
        ? "off"
        : `every ${status.readback.interval} s, ${status.readback.count} done, ` +
          `${status.readback.corrections} corrections, last ${status.readback.last ?? "none yet"}` +
          (status.readback.last_age === null ? "" : ` (${age(status.readback.last_age)})`),
    ],
  ];
  if (status.log_write_failures > 0) {
    rows.push(["log", `${status.log_write_failures} lines could not be written (disk full?)`]);
  }
  if (status.note) rows.push(["note", status.note]);
  rows.push([
    "link",
    `${status.link.connects} connects, ${status.link.drops} drops, ${status.link.dropped_frames} bad frames`,
  ]);
  rows.push(["bridge", `${status.bridge}, up${since(status.since.started, now)}`]);
  const width = Math.max(...rows.map(([key]) => key.length));
  return rows.map(([key, value]) => `${key.padEnd(width)}  ${value}`).join("\n");
}

async function commandStatus(args: string[]): Promise<number> {
  const { values } = parse("status", args, STATUS_OPTIONS);
  if (values.help) return printHelp("status");
  const status = await withClient(
    socketOption(values),
    (client) => client.request("status") as Promise<BridgeStatus>,
  );
  print(values.json ? JSON.stringify(status, null, 2) : formatStatus(status));
  return status.firmware_problem ? 1 : 0;
}

async function commandDoctor(args: string[]): Promise<number> {
  const { values } = parse("doctor", args, DOCTOR_OPTIONS);
  if (values.help) return printHelp("doctor");
  if (values.host === undefined) {
    throw new UsageError("doctor needs --host HOST[:PORT] (the device)");
  }
  deviceUrl(values.host as string); // Validates: bad input is a usage error.
  const timeoutS = parseNumber(
    "timeout",
    values.timeout as string,
    ...RANGES.doctorTimeout,
    "seconds",
  );
  const { observe, diagnose, formatReport } = await import("./doctor.ts");
  const observations = await observe({
    host: (values.host as string).trim(),
    socket: socketOption(values),
    timeoutMs: timeoutS * 1000,
  });
  const report = diagnose(observations);
  print(
    values.json
      ? JSON.stringify({ ...report, exit_status: report.exitStatus, observations }, null, 2)
      : formatReport(report),
  );
  return report.exitStatus;
}

async function commandSet(args: string[]): Promise<number> {
  const { values, positionals } = parse("set", args, SOCKET_OPTION, 1);
  if (values.help) return printHelp("set");
  if (positionals.length === 0) throw new UsageError("set needs a temperature, e.g. set 45");
  const requested = positionals[0].trim() === "" ? NaN : Number(positionals[0]);
  if (!Number.isFinite(requested)) {
    throw new UsageError(`set: '${positionals[0]}' is not a temperature in °C (0 turns it off)`);
  }
  const socket = socketOption(values);
  return await withClient(socket, async (client) => {
    const result = await client.request("set_target", { target: requested }) as {
      target: number;
    };
    if (result.target === 0) {
      print("heater off");
      return 0;
    }
    print(`target set to ${result.target} °C`);
    const status = await client.request("status") as BridgeStatus;
    if (!status.failsafe.controller) {
      print(
        `note: no controller (Klipper) is connected, so the bridge's failsafe turns the heat ` +
          `off after ${status.failsafe.timeout} s. Use Klipper for lasting control.`,
      );
    }
    return 0;
  });
}

async function commandOff(args: string[]): Promise<number> {
  const { values } = parse("off", args, SOCKET_OPTION);
  if (values.help) return printHelp("off");
  await withClient(socketOption(values), (client) => client.request("off"));
  print("heater off");
  return 0;
}

async function commandSimulate(args: string[]): Promise<number> {
  const { values } = parse("simulate", args, SIMULATE_OPTIONS);
  if (values.help) return printHelp("simulate");
  const port = parseWholeNumber("port", values.port as string, ...RANGES.port);
  const speed = parseNumber("speed", values.speed as string, ...RANGES.simulateSpeed);
  const hostname = values.hostname as string;
  if (!/^[A-Za-z0-9.:-]+$/.test(hostname)) {
    throw new UsageError(`--hostname '${hostname}' is not an address to listen on`);
  }
  const sensorBiasC = parseNumber(
    "sensor-bias",
    values["sensor-bias"] as string,
    ...RANGES.sensorBias,
  );
  // Loaded on demand: `run` should not carry the simulator's code and memory.
  const { runSimulatorCli } = await import("./simulator/cli.ts");
  await runSimulatorCli({ port, hostname, speed, sensorBiasC });
  return 0;
}

async function commandDemo(args: string[]): Promise<number> {
  const { values } = parse("demo", args, DEMO_OPTIONS);
  if (values.help) return printHelp("demo");
  const target = parseWholeNumber("target", values.target as string, ...RANGES.demoTarget);
  const speed = parseNumber("speed", values.speed as string, ...RANGES.demoSpeed);
  const { runDemo } = await import("./demo.ts");
  await runDemo({ target, speed });
  return 0;
}

function printHelp(command?: string): number {
  print(command ? HELP[command] : USAGE);
  return 0;
}

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  run: commandRun,
  status: commandStatus,
  doctor: commandDoctor,
  set: commandSet,
  off: commandOff,
  simulate: commandSimulate,
  demo: commandDemo,
};

/** Runs the CLI with `args`; resolves with the process exit status. */
export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  if (command === undefined || command === "-h" || command === "--help" || command === "help") {
    return printHelp();
  }
  if (command === "-V" || command === "--version") {
    print(`panda-breath ${VERSION}`);
    return 0;
  }
  const run = COMMANDS[command];
  if (!run) {
    printError(`panda-breath: unknown command '${command}'. Run 'panda-breath --help'.`);
    return 2;
  }
  try {
    return await run(rest);
  } catch (error) {
    const badValue = error instanceof ApiError &&
      (error.code === "out_of_range" || error.code === "invalid_params");
    if (error instanceof UsageError || badValue) {
      printError(`panda-breath: ${error.message}\nRun 'panda-breath ${command} --help'.`);
      return 2;
    }
    if (
      error instanceof ApiError &&
      ["device_fault", "lease_unavailable", "unsupported_firmware"].includes(error.code)
    ) {
      printError(`panda-breath: ${error.code}: ${error.message}`);
      return 1;
    }
    printError(`panda-breath: ${(error as Error).message}`);
    return 1;
  }
}

/** Writes an error line to stderr; a failing stderr (e.g. a full disk) is ignored. */
function printError(line: string): void {
  try {
    console.error(line);
  } catch {
    // Nothing else can report it; the exit status still does.
  }
}
