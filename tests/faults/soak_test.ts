/**
 * Telemetry soak: the device floods the bridge with temperature frames
 * (bursts every millisecond, far above the real 2 per second) while a
 * subscriber takes every status notification and another client subscribes
 * and never reads. The bridge's fds and RSS are sampled throughout.
 *
 * Default: >= 10^5 frames. PANDA_BRIDGE_SOAK=1: 10^6 frames, then the
 * simulator at a 1 ms telemetry interval for 5 minutes.
 */
import { encodeFrame, Opcode } from "../../lib/ws_server.ts";
import {
  BridgeProcess,
  delay,
  FLAT_TOLERANCE,
  ResourceSampler,
  type Scenario,
  scenarioTest,
  SOAK,
  until,
} from "./harness.ts";
import { type Behavior, RawDevice, telemetryFrame } from "./raw_device.ts";
import { finalCheck, settle, simView, withSimulator } from "./rig.ts";

const FRAMES = SOAK ? 1_000_000 : 100_000;
const WARMUP_FRAMES = 10_000;
const BURST = 50;

/** Frames sent, the goal, and how many frames the reading subscriber is behind. */
interface FloodCounter {
  sent: number;
  target: number;
  lag(): number;
}

/**
 * The reading subscriber may fall this many frames behind (~150 KB of status
 * lines), below the bridge's 256 KiB per-client queue: the flood then tests
 * throughput and loss, not the (separately tested) cut-off of slow readers.
 */
const MAX_LAG_FRAMES = 200;

/**
 * A device that writes `BURST` merged temperature frames per write, as fast
 * as the reading subscriber keeps up (the test process parses every line).
 */
function firehose(counter: FloodCounter): Behavior {
  const bursts = Array.from({ length: 8 }, (_, k) => {
    const one = encodeFrame(Opcode.text, telemetryFrame(24 + k));
    const bytes = new Uint8Array(one.length * BURST);
    for (let i = 0; i < BURST; i++) bytes.set(one, i * one.length);
    return bytes;
  });
  return async (session) => {
    if (!(await session.upgrade())) return;
    const reading = session.startReading();
    let k = 0;
    while (!session.closed && counter.sent < counter.target) {
      if (counter.lag() > MAX_LAG_FRAMES) {
        await delay(1);
        continue;
      }
      if (!(await session.write(bursts[k++ % bursts.length]))) break;
      counter.sent += BURST;
      await delay(0);
    }
    await reading;
  };
}

async function neverReader(bridge: BridgeProcess): Promise<Deno.UnixConn> {
  const conn = await Deno.connect({ transport: "unix", path: bridge.socket });
  await conn.write(new TextEncoder().encode('{"id":1,"method":"subscribe"}\n'));
  return conn;
}

/** Reads what the never-reading client was sent, until EOF or reset; bytes read. */
async function drain(conn: Deno.UnixConn): Promise<{ bytes: number; ended: boolean }> {
  const buffer = new Uint8Array(64 * 1024);
  let bytes = 0;
  const deadline = performance.now() + 5000;
  try {
    while (performance.now() < deadline) {
      const n = await conn.read(buffer);
      if (n === null) return { bytes, ended: true };
      bytes += n;
    }
  } catch {
    return { bytes, ended: true };
  } finally {
    try {
      conn.close();
    } catch {
      // closed
    }
  }
  return { bytes, ended: false };
}

interface Figures {
  fds: number;
  rssKiB: number;
  heap: number;
}

/** fds, RSS and the JS heap after a full GC of an inspected bridge. */
async function measure(bridge: BridgeProcess, sampler: ResourceSampler): Promise<Figures> {
  const heap = await bridge.heapAfterGc();
  return { ...sampler.sample(), heap };
}

function recordFlatness(
  s: Scenario,
  prefix: string,
  start: Figures,
  end: Figures,
  sampler: ResourceSampler,
): void {
  const peak = sampler.peak();
  s.expect(
    end.heap - start.heap <= FLAT_TOLERANCE.heapBytes,
    `heap after GC flat: ${start.heap} -> ${end.heap} B`,
  );
  Object.assign(s.figures, {
    [`${prefix}heap_start_kib`]: Math.round(start.heap / 1024),
    [`${prefix}heap_end_kib`]: Math.round(end.heap / 1024),
    [`${prefix}fds_start`]: start.fds,
    [`${prefix}fds_end`]: end.fds,
    [`${prefix}fds_peak`]: peak.fds,
    [`${prefix}rss_start_kib`]: start.rssKiB,
    [`${prefix}rss_end_kib`]: end.rssKiB,
    [`${prefix}rss_peak_kib`]: peak.rssKiB,
    [`${prefix}rss_trend_mib`]: sampler.rssTrend(),
  });
  s.expect(end.fds - start.fds <= FLAT_TOLERANCE.fds, `fds flat: ${start.fds} -> ${end.fds}`);
  s.expect(
    end.rssKiB - start.rssKiB <= FLAT_TOLERANCE.rssKiB,
    `RSS flat: ${start.rssKiB} -> ${end.rssKiB} KiB`,
  );
}

scenarioTest(
  "soak",
  `telemetry flood: ${FRAMES} frames, a subscriber, a client that never reads`,
  async (s) => {
    const counter: FloodCounter = { sent: 0, target: Number.MAX_SAFE_INTEGER, lag: () => 0 };
    const device = new RawDevice({ behavior: firehose(counter) });
    const bridge = await BridgeProcess.start({
      host: device.address,
      logLevel: "info",
      inspect: true,
    });
    const sampler = new ResourceSampler(bridge.pid);
    try {
      const api = await bridge.connect(5);
      api.startHeartbeat(500);
      await api.setTarget(45);
      const subscriber = await bridge.connect(5);
      await subscriber.request("subscribe");
      const offset = counter.sent - subscriber.notificationCount;
      counter.lag = () => counter.sent - subscriber.notificationCount - offset;
      await until(() => counter.sent >= WARMUP_FRAMES, 30_000, "warm-up frames", 20);
      const seenBefore = subscriber.notificationCount;
      const sentBefore = counter.sent;
      counter.target = sentBefore + FRAMES;
      await bridge.heapAfterGc();
      const start = await measure(bridge, sampler);
      sampler.start(500);
      s.inject();
      const lazy = await neverReader(bridge);
      const floodStarted = performance.now();
      await until(
        () => counter.sent >= counter.target,
        SOAK ? 1_200_000 : 60_000,
        "all frames",
        50,
      );
      const floodMs = performance.now() - floodStarted;
      await delay(500);
      const seen = subscriber.notificationCount - seenBefore;
      const lazyResult = await drain(lazy);
      s.expect(lazyResult.ended, "the client that never read was cut off");
      s.expect(
        /cut off: not reading its notifications/.test(bridge.process.stderr),
        "the cut-off was logged",
      );
      s.expect(!subscriber.closed, "the reading subscriber was not cut off");
      const sent = counter.sent - sentBefore;
      s.expect(seen >= sent, `subscriber saw every frame (${seen} of ${sent})`);
      await settle({ bridge }, { state: () => device.model }, 45, "after the flood");
      await delay(1500);
      sampler.stop();
      const end = await measure(bridge, sampler);
      recordFlatness(s, "", start, end, sampler);
      if (bridge.alive && lazyResult.ended) s.survive();
      Object.assign(s.figures, {
        frames_sent: counter.sent,
        notifications_seen: seen,
        frames_per_second: Math.round(sent / (floodMs / 1000)),
        never_reader_bytes_before_cutoff: lazyResult.bytes,
      });
      // The check first: closing the controller while heating turns the heat off at once.
      await finalCheck(s, bridge, { state: () => device.model }, 45);
      await subscriber.close();
      await api.close();
    } finally {
      sampler.stop();
      await bridge.dispose();
      await device.close();
    }
  },
);

scenarioTest(
  "soak",
  "simulator at a 1 ms telemetry interval for 5 minutes",
  async (s) => {
    await withSimulator({ telemetryIntervalMs: 1 }, async (sim) => {
      const bridge = await BridgeProcess.start({
        host: `127.0.0.1:${sim.port}`,
        logLevel: "info",
        inspect: true,
      });
      const sampler = new ResourceSampler(bridge.pid);
      try {
        const api = await bridge.connect(5);
        api.startHeartbeat(500);
        await api.setTarget(50);
        const subscriber = await bridge.connect(5);
        await subscriber.request("subscribe");
        await settle({ bridge }, simView(sim), 50, "target");
        await delay(10_000);
        const seenBefore = subscriber.notificationCount;
        await bridge.heapAfterGc();
        const start = await measure(bridge, sampler);
        sampler.start(5000);
        s.inject();
        const durationMs = 300_000;
        const t0 = performance.now();
        while (performance.now() - t0 < durationMs) {
          await delay(1000);
          if (!bridge.alive) break;
        }
        sampler.stop();
        const end = await measure(bridge, sampler);
        recordFlatness(s, "", start, end, sampler);
        s.figures.frames_seen = subscriber.notificationCount - seenBefore;
        s.expect(!subscriber.closed, "subscriber kept up");
        if (bridge.alive) s.survive();
        // The check first: closing the controller while heating turns the heat off at once.
        await finalCheck(s, bridge, simView(sim), 50);
        await subscriber.close();
        await api.close();
      } finally {
        sampler.stop();
        await bridge.dispose();
      }
    });
  },
  { soakOnly: true },
);
