/**
 * Local-socket faults: crowds of clients that come and go, the client cap,
 * clients that never read, oversized/partial lines, invalid UTF-8 and junk
 * requests, requests after `off`, and a stale socket file versus a live
 * bridge on the same path.
 */
import { API_LIMITS } from "../../lib/api_server.ts";
import { runCli } from "../process.ts";
import {
  BridgeProcess,
  capture,
  delay,
  FLAT_TOLERANCE,
  isDesired,
  type Scenario,
  scenarioTest,
  until,
} from "./harness.ts";
import type { ApiMessage, SocketClient } from "../socket_client.ts";
import { fdCount, ResourceSampler, rssKiB } from "../procfs.ts";
import { deviceBehavior, RawDevice } from "./raw_device.ts";
import { finalCheck, recover, settle, withRawBridge } from "./rig.ts";

const encoder = new TextEncoder();

function view(device: RawDevice) {
  return { state: () => device.model };
}

/** Waits for reply number `index` (0-based) on `conn`. */
async function replyAt(conn: SocketClient, index: number, timeoutMs = 3000): Promise<ApiMessage> {
  await until(() => conn.replies.length > index || conn.closed, timeoutMs, `reply #${index}`, 5);
  const reply = conn.replies[index];
  if (!reply) throw new Error(`connection closed before reply #${index}`);
  return reply;
}

/** Sends one raw line and returns the reply to it. */
async function ask(conn: SocketClient, line: string | Uint8Array): Promise<ApiMessage> {
  const index = conn.replies.length;
  const bytes = typeof line === "string" ? encoder.encode(line + "\n") : line;
  await conn.write(bytes);
  return await replyAt(conn, index);
}

/** Reads a connection until EOF/reset; true when the bridge closed it. */
async function closedByBridge(conn: SocketClient, timeoutMs = 3000): Promise<boolean> {
  return await until(() => conn.closed, timeoutMs, "the bridge closing the connection", 5)
    .then(() => true, () => false);
}

async function withRawDevice(
  s: Scenario,
  telemetryMs: number,
  body: (device: RawDevice, bridge: BridgeProcess, api: SocketClient) => Promise<void>,
  burst = 1,
): Promise<void> {
  const device = new RawDevice({ behavior: deviceBehavior({ telemetryMs, burst }) });
  await withRawBridge(device, async ({ bridge, api }) => {
    await api.setTarget(45);
    await settle({ bridge }, view(device), 45, "initial target");
    await body(device, bridge, api);
    await finalCheck(s, bridge, view(device), 45);
  });
}

scenarioTest(
  "socket",
  "hundreds of clients connect and vanish; the 64-client cap holds",
  async (s) => {
    await withRawDevice(s, 20, async (_device, bridge, api) => {
      await delay(300);
      const fdsStart = fdCount(bridge.pid);
      const kinds = [
        "connect-close",
        "hello-no-read",
        "subscribe-close",
        "partial-line",
        "garbage",
        "half-close",
        "subscribe-read-one",
        "pipelined-status-no-read",
      ];
      let clients = 0;
      for (let wave = 0; wave < 16; wave++) {
        await Promise.all(Array.from({ length: 40 }, async (_, i) => {
          const kind = kinds[(wave * 40 + i) % kinds.length];
          const conn = await Deno.connect({ transport: "unix", path: bridge.socket });
          clients++;
          try {
            switch (kind) {
              case "hello-no-read":
                await conn.write(encoder.encode('{"id":1,"method":"hello"}\n'));
                break;
              case "subscribe-close":
                await conn.write(encoder.encode('{"id":1,"method":"subscribe"}\n'));
                await delay(Math.random() * 30);
                break;
              case "partial-line":
                await conn.write(encoder.encode('{"id":1,"method":"set_tar'));
                break;
              case "garbage":
                await conn.write(crypto.getRandomValues(new Uint8Array(2048)));
                break;
              case "half-close":
                await conn.write(encoder.encode('{"id":1,"method":"status"}\n'));
                await conn.closeWrite();
                await conn.read(new Uint8Array(8192));
                break;
              case "subscribe-read-one":
                await conn.write(encoder.encode('{"id":1,"method":"subscribe"}\n'));
                await conn.read(new Uint8Array(8192));
                break;
              case "pipelined-status-no-read":
                await conn.write(encoder.encode('{"id":1,"method":"status"}\n'.repeat(50)));
                break;
            }
          } catch {
            // the bridge may close first (garbage can contain a newline-free 2 KiB line: fine)
          } finally {
            conn.close();
          }
        }));
      }
      s.inject(clients);
      await delay(500);
      const fdsAfterCrowd = fdCount(bridge.pid);
      s.expect(
        fdsAfterCrowd - fdsStart <= FLAT_TOLERANCE.fds,
        `fds ${fdsStart} -> ${fdsAfterCrowd}`,
      );
      const status = await api.status();
      s.expect(status.target === 45, "target kept through the crowd");
      if (bridge.alive) s.survive(clients);

      // The cap: the controller plus 63 idle clients fill it; the next one is told so.
      s.inject();
      const idle: SocketClient[] = [];
      for (let i = 0; i < API_LIMITS.maxClients - 1; i++) idle.push(await bridge.connect());
      await delay(100);
      const extra = await bridge.connect();
      const refusal = await replyAt(extra, 0);
      s.expect(refusal.error?.code === "too_many_clients", `refused: ${JSON.stringify(refusal)}`);
      s.expect(await closedByBridge(extra), "the extra client is closed");
      const stillServed = await api.status();
      s.expect(stillServed.target === 45, "the controller is still served at the cap");
      await Promise.all(idle.map((conn) => conn.close()));
      await delay(200);
      const after = await bridge.connect();
      const hello = await after.request("hello");
      s.expect(hello.result?.protocol === 2, "a new client is served once below the cap");
      await after.close();
      await extra.close();
      if (bridge.alive) s.survive();
      await delay(300);
      Object.assign(s.figures, {
        clients_connected: clients + API_LIMITS.maxClients + 1,
        fds_start: fdsStart,
        fds_after_crowd: fdsAfterCrowd,
        fds_end: fdCount(bridge.pid),
      });
    });
  },
);

scenarioTest(
  "socket",
  "a subscriber that never reads costs 10 statuses/s; a requester that never reads is cut off; RSS flat",
  async (s) => {
    await withRawDevice(s, 1, async (_device, bridge, api) => {
      await delay(500);
      const sampler = new ResourceSampler(bridge.pid);
      const start = sampler.sample();
      sampler.start(250);
      // 1. A subscriber that never reads (the device sends 5 000 frames a second; it is
      //    sent at most 10 status notifications a second).
      s.inject();
      const lazy = await Deno.connect({ transport: "unix", path: bridge.socket });
      const lazyOpened = performance.now();
      await lazy.write(encoder.encode('{"id":1,"method":"subscribe"}\n'));
      // 2. A client that pipelines 20 000 status requests (~14 MB of replies), never reading.
      s.inject();
      const greedy = await Deno.connect({ transport: "unix", path: bridge.socket });
      const requests = encoder.encode('{"id":1,"method":"status"}\n'.repeat(20_000));
      const writing = (async () => {
        let written = 0;
        try {
          while (written < requests.length) {
            written += await greedy.write(requests.subarray(written));
          }
        } catch {
          // cut off mid-write
        }
        return written;
      })();
      await delay(3000);
      const during = sampler.sample();
      const written = await writing;
      const readAll = async (conn: Deno.UnixConn, forMs = Infinity) => {
        const buffer = new Uint8Array(65536);
        let bytes = 0;
        let timedOut = false;
        const timer = forMs === Infinity ? undefined : setTimeout(() => {
          timedOut = true;
          conn.close();
        }, forMs);
        try {
          while (true) {
            const n = await conn.read(buffer);
            if (n === null) return { bytes, ended: true };
            bytes += n;
          }
        } catch {
          return { bytes, ended: !timedOut };
        } finally {
          clearTimeout(timer);
        }
      };
      const [lazyRead, greedyRead] = await Promise.all([
        readAll(lazy, 3000),
        readAll(greedy),
      ]);
      const lazyS = (performance.now() - lazyOpened) / 1000;
      if (lazyRead.ended) lazy.close();
      greedy.close();
      s.expect(greedyRead.ended, "the never-reading requester was closed");
      const bound = API_LIMITS.maxQueuedBytes + 512 * 1024; // the queue + kernel socket buffers
      s.expect(
        lazyRead.bytes <= Math.min(bound, (lazyS * 10 + 10) * 4096),
        `the never-reading subscriber was sent ${lazyRead.bytes} B in ${lazyS.toFixed(1)} s`,
      );
      s.expect(greedyRead.bytes <= bound, `requester got ${greedyRead.bytes} B before the cut`);
      await delay(1000);
      sampler.stop();
      const end = sampler.sample();
      const peak = sampler.peak();
      s.expect(peak.rssKiB - start.rssKiB <= FLAT_TOLERANCE.rssKiB, "RSS did not grow meanwhile");
      s.expect(end.fds - start.fds <= FLAT_TOLERANCE.fds, "fds back to the start");
      const status = await api.status();
      s.expect(status.connected && status.target === 45, "others unaffected");
      if (bridge.alive && greedyRead.ended) s.survive(2);
      Object.assign(s.figures, {
        rss_start_kib: start.rssKiB,
        rss_during_kib: during.rssKiB,
        rss_peak_kib: peak.rssKiB,
        rss_end_kib: end.rssKiB,
        fds_start: start.fds,
        fds_end: end.fds,
        subscriber_bytes_in_3s_unread: lazyRead.bytes,
        requester_bytes_before_cut: greedyRead.bytes,
        requester_bytes_written: written,
      });
    });
  },
);

scenarioTest("socket", "oversized, partial and merged lines", async (s) => {
  await withRawDevice(s, 100, async (_device, bridge, api) => {
    const max = API_LIMITS.maxLineBytes;
    // Exactly at the cap: served.
    s.inject();
    const atCap = await bridge.connect();
    const request = '{"id":7,"method":"hello"}';
    const padded = request + " ".repeat(max - request.length);
    const served = await ask(atCap, padded);
    s.expect(served.result?.protocol === 2, `a ${max}-byte line is served`);
    if (served.result) s.survive();
    await atCap.close();
    // One byte over: line_too_long, then closed.
    s.inject();
    const over = await bridge.connect();
    const tooLong = await ask(over, padded + " ");
    s.expect(tooLong.error?.code === "line_too_long", "one byte over: line_too_long");
    s.expect(await closedByBridge(over), "closed after line_too_long");
    if (tooLong.error && over.closed) s.survive();
    await over.close();
    // An endless line (16 MiB, no newline): cut at the cap, never buffered whole.
    s.inject();
    const rssBefore = rssKiB(bridge.pid);
    const endless = await Deno.connect({ transport: "unix", path: bridge.socket });
    const chunk = encoder.encode("x".repeat(1 << 20));
    let sent = 0;
    try {
      for (let i = 0; i < 16; i++) sent += await endless.write(chunk);
    } catch {
      // closed by the bridge
    }
    endless.close();
    const rssAfter = rssKiB(bridge.pid);
    s.figures.endless_line_bytes_accepted = sent;
    s.figures.endless_line_rss_delta_kib = rssAfter - rssBefore;
    s.expect(sent < 16 << 20, "the bridge stopped reading an endless line");
    if (bridge.alive) s.survive();
    // One byte per write: answered.
    s.inject();
    const slow = await bridge.connect();
    for (const byte of encoder.encode('{"id":"slow","method":"status"}\n')) {
      await slow.write(new Uint8Array([byte]));
      if (Math.random() < 0.2) await delay(2);
    }
    const slowReply = await replyAt(slow, 0);
    s.expect(slowReply.id === "slow" && slowReply.result !== undefined, "byte-by-byte answered");
    // 500 requests in one write: 500 replies in order.
    const merged = Array.from({ length: 500 }, (_, i) => `{"id":${i},"method":"hello"}`)
      .join("\n") + "\n";
    await slow.write(merged);
    await replyAt(slow, 500, 5000);
    const ids = slow.replies.slice(1, 501).map((r) => r.id);
    s.expect(ids.every((id, i) => id === i), "merged requests answered in order");
    // A partial line, a pause, then the rest.
    await slow.write('{"id":"late","meth');
    await delay(1000);
    await slow.write('od":"hello"}\n');
    const late = await replyAt(slow, 501);
    s.expect(late.id === "late", "a line completed after a pause is answered");
    await slow.close();
    if (!slow.replies.some((r) => r.error)) s.survive();
    // A partial line, then the client vanishes.
    s.inject();
    const vanish = await bridge.connect();
    await vanish.write('{"id":1,"method":"set_target","params":{"target":5');
    await vanish.close();
    await delay(100);
    const status = await api.status();
    s.expect(status.target === 45, "a half request changes nothing");
    if (bridge.alive && status.target === 45) s.survive();
  });
});

scenarioTest("socket", "invalid UTF-8 and junk requests get errors; state untouched", async (s) => {
  await withRawDevice(s, 100, async (device, bridge, api) => {
    const conn = await bridge.connect();
    const bytes = (...values: number[]) => new Uint8Array([...values, 10]);
    /** A set_target request line with `params` (JSON text). */
    const setTargetLine = (params: string) => `{"id":1,"method":"set_target","params":${params}}`;
    const cases: [string, string | Uint8Array, string | null][] = [
      ["invalid UTF-8", bytes(0x7b, 0xff, 0xfe, 0x7d), "parse_error"],
      ["overlong encoding", bytes(0xc0, 0xaf), "parse_error"],
      ["encoded surrogate", bytes(0xed, 0xa0, 0x80), "parse_error"],
      ["truncated UTF-8", bytes(0x22, 0xe2, 0x82), "parse_error"],
      ["NUL bytes", bytes(0, 0, 0), "parse_error"],
      ["BOM then JSON", '\ufeff{"id":1,"method":"hello"}', null],
      ["not JSON", "hello bridge", "parse_error"],
      ["array", "[1,2]", "parse_error"],
      ["number", "42", "parse_error"],
      ["null", "null", "parse_error"],
      ["string", '"status"', "parse_error"],
      ["deep nesting", "[".repeat(30_000) + "]".repeat(30_000), "parse_error"],
      ["no id", '{"method":"status"}', "invalid_request"],
      ["object id", '{"id":{},"method":"status"}', "invalid_request"],
      ["null id", '{"id":null,"method":"status"}', "invalid_request"],
      ["infinite id", '{"id":1e400,"method":"status"}', "invalid_request"],
      ["no method", '{"id":1}', "invalid_request"],
      ["method number", '{"id":1,"method":7}', "invalid_request"],
      ["unknown method", '{"id":1,"method":"explode"}', "unknown_method"],
      ["__proto__ method", '{"id":1,"method":"__proto__"}', "unknown_method"],
      ["constructor method", '{"id":1,"method":"constructor"}', "unknown_method"],
      ["toString method", '{"id":1,"method":"toString"}', "unknown_method"],
      ["long method name", `{"id":1,"method":"${"m".repeat(60_000)}"}`, "unknown_method"],
      ["params array", setTargetLine("[45]"), "invalid_params"],
      ["params null", setTargetLine("null"), "invalid_params"],
      ["target missing", setTargetLine("{}"), "invalid_params"],
      ["target string", setTargetLine('{"target":"50"}'), "invalid_params"],
      ["target bool", setTargetLine('{"target":true}'), "invalid_params"],
      ["target null", setTargetLine('{"target":null}'), "invalid_params"],
      ["target 1e400", setTargetLine('{"target":1e400}'), "invalid_params"],
      ["target -1", setTargetLine('{"target":-1}'), "out_of_range"],
      ["target -0.4", setTargetLine('{"target":-0.4}'), "out_of_range"],
      ["target 61", setTargetLine('{"target":61}'), "out_of_range"],
      ["target 60.6", setTargetLine('{"target":60.6}'), "out_of_range"],
      ["target 300 (would wrap to 44)", setTargetLine('{"target":300}'), "out_of_range"],
      ["target 256", setTargetLine('{"target":256}'), "out_of_range"],
      ["__proto__ params", setTargetLine('{"__proto__":{"target":50}}'), "invalid_params"],
      ["duplicate keys", '{"id":1,"method":"off","method":"hello"}', null],
    ];
    for (const [name, line, code] of cases) {
      s.inject();
      const reply = await ask(conn, line);
      const ok = code === null ? reply.result !== undefined : reply.error?.code === code;
      s.expect(
        ok,
        `${name}: expected ${code ?? "a result"}, got ${JSON.stringify(reply).slice(0, 200)}`,
      );
      const status = await api.status();
      s.expect(status.target === 45, `${name}: target still 45 (${status.target})`);
      if (ok && status.target === 45 && !conn.closed) s.survive();
    }
    s.expect(!conn.closed, "the connection stayed usable through all of it");
    s.expect(isDesired(device.model, 45), "device still at 45");
    s.figures.junk_requests = cases.length;
    await conn.close();
  });
});

scenarioTest("socket", "requests after off: the last word wins, in order", async (s) => {
  await withRawDevice(s, 100, async (device, bridge, api) => {
    const v = view(device);
    s.inject();
    const off = await api.request("off");
    s.expect(off.result?.target === 0, "off accepted");
    await recover(s, { bridge }, v, 0, "off");
    s.inject();
    const again = await api.request("off");
    s.expect(again.result?.target === 0, "off again is fine");
    const status = await api.status();
    s.expect(status.target === 0 && status.target_set === false, "status says off");
    await recover(s, { bridge }, v, 0, "off twice");
    // Pipelined after an off in one write: off, set 41, status, off, set 43.
    s.inject();
    const conn = await bridge.connect();
    await conn.write(
      '{"id":1,"method":"off"}\n{"id":2,"method":"set_target","params":{"target":41}}\n' +
        '{"id":3,"method":"status"}\n{"id":4,"method":"off"}\n' +
        '{"id":5,"method":"set_target","params":{"target":43}}\n',
    );
    await replyAt(conn, 4);
    const ids = conn.replies.slice(0, 5).map((r) => r.id);
    s.expect(ids.join() === "1,2,3,4,5", `answered in order (${ids})`);
    s.expect(conn.replies[2].result?.target === 41, "status between reflects the set before it");
    await conn.close();
    await recover(s, { bridge }, v, 43, "pipelined");
    // The CLI's off (not a controller) works the same.
    s.inject();
    const cli = await runCli(["off", "--socket", bridge.socket]);
    capture("cli off stdout", cli.stdout);
    capture("cli off stderr", cli.stderr);
    s.expect(cli.code === 0 && /heater off/.test(cli.stdout), "CLI off");
    await recover(s, { bridge }, v, 0, "CLI off");
    await api.setTarget(45);
  });
});

scenarioTest(
  "socket",
  "stale socket from a killed bridge is replaced; a live one is refused",
  async (s) => {
    const device = new RawDevice({ behavior: deviceBehavior({ telemetryMs: 100 }) });
    const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "pb-faults-sock-" });
    const path = `${dir}/bridge.sock`;
    try {
      // A killed bridge leaves its socket file behind.
      s.inject();
      const first = await BridgeProcess.start({ host: device.address, socket: path }, "bridge-a");
      await first.kill("SIGKILL");
      const stale = await Deno.lstat(path);
      s.expect(stale.isSocket === true, "the killed bridge left its socket file");
      const second = await BridgeProcess.start({ host: device.address, socket: path }, "bridge-b");
      try {
        s.expect(
          /replacing stale socket left by a previous bridge/.test(second.process.stderr),
          "stale socket replaced (logged)",
        );
        const api = await second.connect();
        api.startHeartbeat(500);
        await api.setTarget(44);
        await recover(s, { bridge: second }, view(device), 44, "after replacing a stale socket");

        // A live bridge on the path: the newcomer refuses and touches nothing.
        s.inject();
        const accepted = device.accepted;
        const inode = (await Deno.lstat(path)).ino;
        const third = await BridgeProcess.start(
          { host: device.address, socket: path, noWait: true },
          "bridge-c",
        );
        const exit = await third.exited();
        await delay(300);
        s.expect(exit.code === 1, `a second bridge exits 1 (was ${exit.code})`);
        s.expect(
          new RegExp(`another bridge is already running on ${path}`).test(third.process.stderr),
          "with a clear message",
        );
        s.expect((await Deno.lstat(path)).ino === inode, "the live socket file is untouched");
        s.expect(device.accepted === accepted, "the refused bridge never contacted the device");
        const status = await api.status();
        s.expect(status.target === 44, "the live bridge still serves");
        if (second.alive && exit.code === 1) s.survive();
        await third.dispose();

        // A regular file, a symlink and a directory at the path are not sockets: refused.
        await api.close();
        await second.kill("SIGTERM");
        for (
          const [kind, make] of [
            ["regular file", () => Deno.writeTextFile(path, "precious")],
            ["symlink", () => Deno.symlink(`${dir}/elsewhere`, path)],
            ["directory", () => Deno.mkdir(path)],
          ] as const
        ) {
          s.inject();
          await Deno.remove(path, { recursive: true }).catch(() => {});
          await make();
          const before = device.accepted;
          const refused = await BridgeProcess.start(
            { host: device.address, socket: path, noWait: true },
            `bridge-${kind}`,
          );
          const code = (await refused.exited()).code;
          s.expect(code === 1, `${kind}: exit 1 (was ${code})`);
          s.expect(/exists and is not a socket/.test(refused.process.stderr), `${kind}: says why`);
          s.expect(device.accepted === before, `${kind}: no device connection`);
          if (kind === "regular file") {
            s.expect((await Deno.readTextFile(path)) === "precious", "the file is untouched");
          }
          if (code === 1) s.survive();
          await refused.dispose();
        }
      } finally {
        await second.dispose();
      }
      s.expect(!device.model.work_on, "SIGTERM turned the heater off");
    } finally {
      await device.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);
