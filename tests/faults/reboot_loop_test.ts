/**
 * A device stuck in a reboot loop: every connection is accepted, shows the
 * device's persisted state (often a wrong one: the device "forgot" or came
 * back heating), and is killed again as soon as the bridge has said what it
 * wants — or, when the persisted state already is the desired one, after a
 * moment in which the bridge must write nothing (it compares before writing);
 * now and then the device refuses connections or dies mid-handshake.
 *
 * The bridge's reconnect backoff starts at 125–250 ms after a healthy link,
 * so one bridge manages about five flaps a second. To reach 1000 flaps in
 * the default run (well under a minute), several bridges — each with its
 * own flapping device and heartbeating controller — flap in parallel; every
 * one is measured on its own. PANDA_BRIDGE_SOAK=1 runs 2000 flaps per bridge.
 */
import { encodeFrame, Opcode } from "./ws_frames.ts";
import {
  BridgeProcess,
  delay,
  FLAT_TOLERANCE,
  isDesired,
  scenarioTest,
  SOAK,
  timeToDesired,
  until,
} from "./harness.ts";
import type { SocketClient } from "../socket_client.ts";
import { ResourceSampler } from "../procfs.ts";
import {
  type Behavior,
  connectFrameFor,
  deviceBehavior,
  RawDevice,
  type RawSession,
  telemetryFrame,
} from "./raw_device.ts";

const BRIDGES = SOAK ? 2 : 7;
const FLAPS_PER_BRIDGE = SOAK ? 2000 : 150;
const WARMUP_FLAPS = 20;

/** What one flapping device counted. */
interface FlapStats {
  /** Connections the device killed after the bridge had connected. */
  flaps: number;
  /** Flaps after which the desired state was asserted on that connection. */
  asserted: number;
  /**
   * Flaps whose connect frame already showed the desired state, on which the
   * bridge rightly wrote nothing (it compares before writing: no flash rewrite).
   */
  unchanged: number;
  /** Settings written although the connect frame already matched (must stay 0). */
  rewrites: number;
  /** Connections with a different state on which the bridge never said what it wants (must stay 0). */
  silentBridge: number;
  /** What happened on those connections. */
  silentDetails: string[];
  /** Boots that came up with a wrong persisted state. */
  wrongBoots: number;
  /** Refusals and handshake deaths (not counted as flaps). */
  refusals: number;
  byKind: Record<string, number>;
}

function isDesiredFrame(text: string, target: number): boolean {
  try {
    const settings = JSON.parse(text).settings;
    return target === 0
      ? settings?.work_on === false
      : settings?.work_on === true && settings.set_temp === target && settings.work_mode === 2;
  } catch {
    return false;
  }
}

/** One boot of the flapping device per connection, rotating how it dies. */
function flapBehavior(stats: FlapStats, target: number, stop: () => boolean): Behavior {
  let boot = 0;
  const kinds = ["fin", "close-frame", "half-frame", "junk-then-fin", "close-no-code"] as const;
  return async (session: RawSession) => {
    if (stop()) return await deviceBehavior({ telemetryMs: 100 })(session);
    boot++;
    const device = session.device;
    if (boot % 37 === 0) {
      // Dies before the handshake (the bridge's backoff grows once).
      stats.refusals++;
      session.abort();
      return;
    }
    if (boot % 3 === 0) {
      // Comes back with a wrong persisted state: off, or heating at another target.
      stats.wrongBoots++;
      device.model.work_on = boot % 2 === 0;
      device.model.set_temp = 30 + (boot % 20);
    }
    const alreadyDesired = device.model.work_on && device.model.set_temp === target &&
      device.model.work_mode === 2;
    if (!(await session.upgrade([connectFrameFor(device.model), telemetryFrame(31)]))) return;
    if (boot % 53 === 0) {
      // Dies after the 101 before the bridge could speak.
      stats.refusals++;
      session.abort();
      return;
    }
    session.startReading();
    const upgradedAt = performance.now();
    if (alreadyDesired) {
      // Nothing to correct: any settings frame now would be a needless flash write.
      await delay(150);
      if (stop()) return;
      if (session.frames.some((t) => t.includes('"settings"'))) stats.rewrites++;
      else stats.unchanged++;
    } else {
      const asserted = await session.waitForFrame((t) => isDesiredFrame(t, target), 5000);
      if (asserted) stats.asserted++;
      else if (stop()) return; // the test itself ended this connection: not a flap
      else {
        stats.silentBridge++;
        stats.silentDetails.push(
          `boot ${boot}: ${
            session.closed ? `closed by the ${session.closedBy}` : "no frame"
          } after ` +
            `${Math.round(performance.now() - upgradedAt)} ms; frames ${
              JSON.stringify(session.frames)
            }`,
        );
      }
    }
    const kind = kinds[boot % kinds.length];
    stats.byKind[kind] = (stats.byKind[kind] ?? 0) + 1;
    stats.flaps++;
    switch (kind) {
      case "fin":
        session.abort();
        break;
      case "close-frame":
        await session.closeWithFrame(1001);
        break;
      case "half-frame":
        await session.write(encodeFrame(Opcode.text, telemetryFrame(32)).subarray(0, 5));
        session.abort();
        break;
      case "junk-then-fin":
        await session.sendText("\u0000garbage{");
        session.abort();
        break;
      case "close-no-code":
        await session.write(new Uint8Array([0x88, 0x00]));
        await delay(5);
        session.abort();
        break;
    }
    if (boot % 50 === 0) {
      // Power cut: refuses connections for a moment.
      device.unlisten();
      await delay(150);
      device.listen();
    }
  };
}

interface Flapper {
  device: RawDevice;
  bridge: BridgeProcess;
  api: SocketClient;
  stats: FlapStats;
  target: number;
  sampler: ResourceSampler;
  start: { fds: number; rssKiB: number } | null;
  heapStart: number;
  stopFlapping: boolean;
}

async function startFlapper(index: number): Promise<Flapper> {
  const target = 40 + index;
  const stats: FlapStats = {
    flaps: 0,
    asserted: 0,
    unchanged: 0,
    rewrites: 0,
    silentBridge: 0,
    silentDetails: [],
    wrongBoots: 0,
    refusals: 0,
    byKind: {},
  };
  const flapper = { stopFlapping: false } as Flapper;
  const device = new RawDevice({
    model: { work_on: true, set_temp: 55 },
    behavior: flapBehavior(stats, target, () => flapper.stopFlapping),
  });
  // Before the bridge wants anything, it asserts OFF: let it want heat from the start.
  // Every connection is a boot of the flapping device, so no read-back connections here
  // (read-back is exercised in tests/hazards_test.ts and tests/bridge_test.ts).
  const bridge = await BridgeProcess.start(
    {
      host: device.address,
      logLevel: "info",
      inspect: true,
      extraArgs: ["--readback-interval", "0"],
    },
    `bridge${index}`,
  );
  const api = await bridge.connect();
  api.startHeartbeat(500);
  await api.setTarget(target);
  Object.assign(flapper, {
    device,
    bridge,
    api,
    stats,
    target,
    sampler: new ResourceSampler(bridge.pid),
    start: null,
  });
  return flapper;
}

scenarioTest(
  "reboot-loop",
  `device reboot loop: ${BRIDGES} bridges x ${FLAPS_PER_BRIDGE} flaps`,
  async (s) => {
    const flappers: Flapper[] = [];
    try {
      for (let i = 0; i < BRIDGES; i++) flappers.push(await startFlapper(i));
      const started = performance.now();
      // Warm-up, then the start figures (the runtime allocates lazily at first).
      await until(
        () => flappers.every((f) => f.stats.flaps >= WARMUP_FLAPS),
        60_000,
        "warm-up flaps",
        50,
      );
      for (const f of flappers) {
        await f.bridge.heapAfterGc(); // opens the inspector session before the first figure
        f.heapStart = await f.bridge.heapAfterGc();
        f.start = f.sampler.sample();
        f.sampler.start(1000);
      }
      const budgetMs = SOAK ? 1_800_000 : 120_000;
      await until(
        () => flappers.every((f) => f.stats.flaps >= FLAPS_PER_BRIDGE || !f.bridge.alive),
        budgetMs,
        `${FLAPS_PER_BRIDGE} flaps per bridge`,
        100,
      );
      const loopMs = performance.now() - started;
      // Recovery: the device stops flapping; each bridge must reach its target.
      for (const f of flappers) f.stopFlapping = true;
      for (const f of flappers) f.device.abortAll();
      let wrongMs = 0;
      for (const f of flappers) {
        wrongMs = Math.max(
          wrongMs,
          await timeToDesired(
            () => f.device.listening && isDesired(f.device.model, f.target),
            10_000,
            `bridge ${f.target}: final target`,
          ),
        );
      }
      s.wrongFor(wrongMs);
      await delay(1500); // let the last flap's objects go and the heap settle
      let total = 0;
      for (const [i, f] of flappers.entries()) {
        f.sampler.stop();
        const alive = f.bridge.alive;
        s.expect(alive, `bridge ${i} alive`);
        const heapEnd = alive ? await f.bridge.heapAfterGc() : -1;
        const end = alive ? f.sampler.sample() : { fds: -1, rssKiB: -1 };
        const start = f.start!;
        const peak = f.sampler.peak();
        s.inject(f.stats.flaps);
        if (alive) s.survive(f.stats.asserted + f.stats.unchanged);
        total += f.stats.flaps;
        s.expect(
          f.stats.silentBridge === 0,
          `bridge ${i}: asserted on every connection that differed (${
            f.stats.silentDetails.join("; ")
          })`,
        );
        s.expect(
          f.stats.rewrites === 0,
          `bridge ${i}: an unchanged state was never rewritten (${f.stats.rewrites} rewrites)`,
        );
        s.expect(
          end.fds - start.fds <= FLAT_TOLERANCE.fds,
          `bridge ${i}: fds ${start.fds} -> ${end.fds}`,
        );
        s.expect(
          heapEnd - f.heapStart <= FLAT_TOLERANCE.heapBytes,
          `bridge ${i}: heap after GC ${f.heapStart} -> ${heapEnd} B`,
        );
        s.expect(
          end.rssKiB - start.rssKiB <= FLAT_TOLERANCE.rssKiB,
          `bridge ${i}: RSS ${start.rssKiB} -> ${end.rssKiB} KiB`,
        );
        const status = alive ? await f.api.status() : null;
        s.expect(status?.connected === true, `bridge ${i}: connected at the end`);
        s.expect(status?.target === f.target, `bridge ${i}: target ${f.target}`);
        s.expect(isDesired(f.device.model, f.target), `bridge ${i}: device at ${f.target}`);
        Object.assign(s.figures, {
          [`b${i}_flaps`]: f.stats.flaps,
          [`b${i}_asserted`]: f.stats.asserted,
          [`b${i}_unchanged_not_rewritten`]: f.stats.unchanged,
          [`b${i}_fds_start`]: start.fds,
          [`b${i}_fds_end`]: end.fds,
          [`b${i}_fds_peak`]: peak.fds,
          [`b${i}_rss_start_kib`]: start.rssKiB,
          [`b${i}_rss_end_kib`]: end.rssKiB,
          [`b${i}_rss_peak_kib`]: peak.rssKiB,
          [`b${i}_rss_trend_mib`]: f.sampler.rssTrend(),
          [`b${i}_heap_start_kib`]: Math.round(f.heapStart / 1024),
          [`b${i}_heap_end_kib`]: Math.round(heapEnd / 1024),
          [`b${i}_link_connects`]: status?.link.connects ?? null,
          [`b${i}_wrong_boots`]: f.stats.wrongBoots,
          [`b${i}_refusals`]: f.stats.refusals,
        });
      }
      s.figures.total_flaps = total;
      s.figures.loop_seconds = Math.round(loopMs / 100) / 10;
      s.figures.flaps_per_second = Math.round(total / (loopMs / 1000));
      s.expect(total >= 1000, `at least 1000 flaps (${total})`);
    } finally {
      for (const f of flappers) {
        await f.api.close();
        await f.bridge.dispose();
        await f.device.close();
      }
    }
  },
);
