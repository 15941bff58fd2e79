import { ApiClient } from "./api_client.ts";
import { ApiServer } from "./api_server.ts";
import { Bridge, type BridgeStatus } from "./bridge.ts";
import { Logger } from "./log.ts";
import { Simulator } from "./simulator/simulator.ts";

/** Settings of {@link runDemo}. */
export interface DemoOptions {
  /** Chamber target, °C. */
  target: number;
  /** Speed-up of the simulated thermal model. */
  speed: number;
  /** Failsafe timeout shown in the demo, seconds. */
  failsafeS?: number;
  /** Where the demo writes; stdout by default. */
  write?: (text: string) => void;
}

const BAR_WIDTH = 30;

function bar(temperature: number, target: number): string {
  const ambient = 20;
  const share = Math.max(0, Math.min(1, (temperature - ambient) / Math.max(1, target - ambient)));
  const filled = Math.round(share * BAR_WIDTH);
  return "#".repeat(filled) + ".".repeat(BAR_WIDTH - filled);
}

/** One status line of the demo. */
export function demoLine(status: BridgeStatus, elapsedS: number, target: number): string {
  const temperature = status.temperature;
  const reading = temperature === null ? "  ? °C" : `${String(temperature).padStart(3)} °C`;
  const state = status.failsafe.tripped
    ? "FAILSAFE: heater off"
    : status.target > 0
    ? `heating to ${status.target} °C`
    : "off";
  return `[${elapsedS.toFixed(1).padStart(5)} s] chamber ${reading} [${
    bar(temperature ?? 20, target)
  }] ${state}${status.connected ? "" : " (device link down)"}`;
}

/**
 * Runs the simulator, the bridge and a controller in one process and shows
 * the chamber heating live; then stops the controller's heartbeats, as a
 * hung Klipper would, and shows the failsafe switching the heater off.
 */
export async function runDemo(options: DemoOptions): Promise<void> {
  const write = options.write ??
    ((text: string) => Deno.stdout.writeSync(new TextEncoder().encode(text)));
  const failsafeS = options.failsafeS ?? 5;
  const simulator = new Simulator({ hostname: "127.0.0.1", port: 0, speed: options.speed });
  await simulator.start();
  const socketDir = await Deno.makeTempDir({ prefix: "panda-breath-demo-" });
  const logger = new Logger("warn", (line) => write(`\n  log: ${line}\n`));
  const bridge = new Bridge({ url: simulator.url, logger, failsafeTimeoutMs: failsafeS * 1000 });
  const server = await ApiServer.listen({ path: `${socketDir}/bridge.sock`, bridge, logger });
  bridge.start();
  const client = await ApiClient.connect(server.path);
  const started = performance.now();
  const elapsed = () => (performance.now() - started) / 1000;
  let latest: BridgeStatus | null = null;
  let lastPrinted = 0;
  await client.subscribe((status) => {
    latest = status;
    if (performance.now() - lastPrinted >= 500) {
      lastPrinted = performance.now();
      write(demoLine(status, elapsed(), options.target) + "\n");
    }
  });
  const say = (text: string) => write(`\n>>> ${text}\n\n`);
  // The demo plays a ready Klipper: a controller whose heartbeats say `ready: true`.
  let heartbeats: ReturnType<typeof setInterval> | undefined = setInterval(
    () => client.request("heartbeat", { ready: true }).catch(() => {}),
    1000,
  );
  try {
    say(
      `Simulated Panda Breath at ${simulator.url}, bridge socket ${server.path}. ` +
        `Klipper's role is played by this demo: it heartbeats and sets ${options.target} °C.`,
    );
    await client.request("hello", { client: "demo", controller: true, ready: true });
    await client.request("heartbeat", { ready: true });
    await client.request("set_target", { target: options.target });
    await until(() => (latest?.temperature ?? 0) >= options.target, 120_000);
    say(`Reached ${options.target} °C. Now the controller hangs: heartbeats stop.`);
    clearInterval(heartbeats);
    heartbeats = undefined;
    await until(() => latest?.failsafe.tripped === true, (failsafeS + 5) * 1000);
    say(`After ${failsafeS} s without a heartbeat the bridge turned the heater off by itself.`);
    const tripAt = performance.now();
    await until(() => performance.now() - tripAt > 3000, 5000);
    say(
      "Done. Run 'deno task test' for the test suite, or see the README to connect " +
        "a real Panda Breath to Klipper.",
    );
  } finally {
    clearInterval(heartbeats);
    await client.close();
    await server.close();
    await bridge.stop("demo finished", 500);
    await simulator.stop();
    await Deno.remove(socketDir, { recursive: true }).catch(() => {});
  }
}

function until(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const started = performance.now();
    const poll = setInterval(() => {
      const done = condition();
      if (done || performance.now() - started > timeoutMs) {
        clearInterval(poll);
        resolve(done);
      }
    }, 50);
  });
}
