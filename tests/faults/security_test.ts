/**
 * Security: the socket's mode and owner, no TCP/UDP listener in `run` mode,
 * the least Deno permissions (proved by a probe run with the same flags),
 * every input's size cap, and the device's secrets never leaving the
 * device link.
 */
import { API_LIMITS } from "../../lib/api_server.ts";
import { MAX_FRAME_BYTES } from "../../lib/protocol.ts";
import { Simulator } from "../../lib/simulator/mod.ts";
import { connectFrame, FakeDevice } from "../fake_device.ts";
import { mainArgs, runCli, runToEnd } from "../process.ts";
import {
  BridgeProcess,
  capture,
  delay,
  LineProcess,
  scenarioTest,
  secretsIn,
  until,
} from "./harness.ts";
import { inetSockets } from "../procfs.ts";
import { deviceBehavior, RawDevice, type RawSession, telemetryFrame } from "./raw_device.ts";

const encoder = new TextEncoder();

scenarioTest("security", "socket file is 0660 or 0600, owned by the running user", async (s) => {
  const device = new RawDevice();
  try {
    for (const [flag, mode] of [[null, 0o660], ["0660", 0o660], ["0600", 0o600]] as const) {
      s.inject();
      const bridge = await BridgeProcess.start({
        host: device.address,
        extraArgs: flag ? ["--socket-mode", flag] : [],
      });
      try {
        const info = await Deno.lstat(bridge.socket);
        const label = flag ?? "default";
        s.expect(info.isSocket === true, `${label}: a socket`);
        s.expect(
          (info.mode! & 0o777) === mode,
          `${label}: mode 0${(info.mode! & 0o777).toString(8)}`,
        );
        s.expect((info.mode! & 0o007) === 0, `${label}: no access for others`);
        s.expect(info.uid === Deno.uid(), `${label}: owned by uid ${Deno.uid()} (${info.uid})`);
        s.expect(info.gid === Deno.gid(), `${label}: group ${Deno.gid()} (${info.gid})`);
        const dir = bridge.socket.slice(0, bridge.socket.lastIndexOf("/"));
        const others = () =>
          [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n !== "bridge.sock");
        // The socket is renamed into place first, then its private bind directory removed.
        await until(() => others().length === 0, 2000, "the private bind directory removed")
          .catch(() => {});
        s.expect(others().length === 0, `${label}: no private bind directory left (${others()})`);
        s.figures[`mode_${label}`] = `0${(info.mode! & 0o777).toString(8)}`;
        if (bridge.alive) s.survive();
      } finally {
        await bridge.dispose();
      }
    }
  } finally {
    await device.close();
  }
});

scenarioTest("security", "run mode opens no TCP or UDP listener", async (s) => {
  // The device is the CLI simulator, another real process.
  const sim = new LineProcess(
    Deno.execPath(),
    mainArgs(["simulate", "--port", "0", "--hostname", "127.0.0.1", "--speed", "10"]),
    "simulate",
  );
  try {
    const match = await sim.waitLine(/^listening on ws:\/\/127\.0\.0\.1:(\d+)\/ws$/);
    const port = Number(match[1]);
    const bridge = await BridgeProcess.start({ host: `127.0.0.1:${port}` });
    try {
      s.inject();
      const api = await bridge.connect();
      await until(async () => (await api.status()).connected === true, 5000, "connected", 50);
      await api.close();
      const sockets = inetSockets(bridge.pid);
      capture("bridge inet sockets", JSON.stringify(sockets));
      const listeners = sockets.filter((x) => x.table.startsWith("tcp") && x.state === "0A");
      const udp = sockets.filter((x) => x.table.startsWith("udp"));
      s.expect(listeners.length === 0, `no TCP listener (${JSON.stringify(listeners)})`);
      s.expect(udp.length === 0, `no UDP socket (${JSON.stringify(udp)})`);
      const portHex = port.toString(16).toUpperCase().padStart(4, "0");
      const toDevice = sockets.filter((x) => x.state === "01" && x.remote.endsWith(`:${portHex}`));
      s.expect(toDevice.length === 1, "exactly one TCP connection, to the device");
      s.expect(sockets.length === toDevice.length, `nothing else (${JSON.stringify(sockets)})`);
      s.figures.inet_sockets = sockets.length;
      s.figures.tcp_listeners = listeners.length;
      if (bridge.alive) s.survive();
    } finally {
      await bridge.dispose();
    }
  } finally {
    await sim.stop("SIGTERM");
  }
});

scenarioTest(
  "security",
  "least privilege: -P=bridge denies all but net and socket dirs",
  async (s) => {
    const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "pb-faults-probe-" });
    // Outside /tmp, /run and /var/run wherever the repository happens to be cloned.
    const outside = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "pb-faults-outside-" });
    await Deno.writeTextFile(`${outside}/deno.json`, "{}");
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const accepting = (async () => {
      for await (const conn of listener) conn.close();
    })();
    try {
      const probe = new URL("./permission_probe.ts", import.meta.url).pathname;
      const args = mainArgs([outside, dir, String(listener.addr.port)]);
      args[args.indexOf(new URL("../../main.ts", import.meta.url).pathname)] = probe;
      const { stdout, stderr } = await runToEnd(Deno.execPath(), args);
      capture("permission probe", stdout + stderr);
      const results = JSON.parse(stdout.trim().split("\n").pop()!) as Record<string, string>;
      const mustDeny = [
        "read /etc/passwd",
        "read /proc/self/environ",
        "read a file outside the set",
        "write outside the set",
        "unix socket outside the set",
        "write /etc",
        "read HOME from env",
        "read all env",
        "run a subprocess",
        "load a native library (ffi)",
        "system info (sys)",
        "import code from a new host",
      ];
      const mustAllow = [
        "write /tmp",
        "read /tmp",
        "unix socket in /tmp",
        "connect to a TCP host",
        "listen on TCP",
      ];
      for (const name of mustDeny) {
        s.inject();
        s.expect(results[name] === "denied", `${name}: ${results[name]}`);
        if (results[name] === "denied") s.survive();
      }
      for (const name of mustAllow) {
        s.expect(results[name] === "allowed", `${name}: ${results[name]}`);
      }
      s.figures.denied = mustDeny.filter((n) => results[n] === "denied").length;
      s.figures.allowed = mustAllow.filter((n) => results[n] === "allowed").length;
      const written = await Deno.lstat(`${outside}/probe.txt`).then(() => true, () => false);
      s.expect(!written, "nothing was written outside the set");

      // The bridge itself: a socket outside the set is refused before Deno's
      // permission layer is reached, with a message that says where to put it.
      s.inject();
      const result = await runCli([
        "run",
        "--host",
        "127.0.0.1:9",
        "--socket",
        `${outside}/pb.sock`,
      ]);
      capture("run with a socket outside the set", result.stdout + result.stderr);
      s.expect(result.code === 2, `exit 2 (was ${result.code})`);
      s.expect(
        /outside the directories the bridge may use: put it under \/tmp, \/run, \/var\/run/
          .test(result.stderr),
        "product message shown",
      );
      s.expect(!/allow-read|Requires read access/.test(result.stderr), "no Deno permission hint");
      const made = await Deno.lstat(`${outside}/pb.sock`).then(() => true, () => false);
      s.expect(!made, "no socket created outside the set");
      if (result.code === 2 && !made) s.survive();
    } finally {
      listener.close();
      await accepting.catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      await Deno.remove(outside, { recursive: true }).catch(() => {});
    }
  },
);

/** One raw HTTP exchange with the simulator; returns the status code (0 = closed). */
async function httpStatus(port: number, request: Uint8Array): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    let written = 0;
    while (written < request.length) written += await conn.write(request.subarray(written));
  } catch {
    // the server answered and closed early
  }
  const buffer = new Uint8Array(4096);
  let text = "";
  try {
    while (!text.includes("\r\n")) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
  } catch {
    // reset
  } finally {
    conn.close();
  }
  return Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 0);
}

scenarioTest(
  "security",
  "size caps: device frames 64 KiB; simulator HTTP and WS caps",
  async (s) => {
    // The bridge's frame cap: a frame at the cap is parsed, one byte over is dropped unread.
    let session: RawSession | undefined;
    const device = new RawDevice({
      behavior: async (x) => {
        session = x;
        await deviceBehavior({ telemetryMs: 0 })(x);
      },
    });
    try {
      const bridge = await BridgeProcess.start({ host: device.address });
      try {
        const api = await bridge.connect();
        await until(async () => (await api.status()).connected === true, 5000, "link", 20);
        const padded = (celsius: number, bytes: number) => {
          const frame = telemetryFrame(celsius);
          return frame + " ".repeat(bytes - frame.length);
        };
        s.inject(2);
        await session!.sendText(padded(37, MAX_FRAME_BYTES));
        await until(async () => (await api.status()).temperature === 37, 3000, "at-cap frame", 20);
        s.survive();
        const dropped = (await api.status()).link.dropped_frames;
        await session!.sendText(padded(38, MAX_FRAME_BYTES + 1));
        await until(
          async () => (await api.status()).link.dropped_frames === dropped + 1,
          3000,
          "over-cap frame dropped",
          20,
        );
        const status = await api.status();
        s.expect(status.temperature === 37, `over-cap frame not parsed (${status.temperature})`);
        if (status.temperature === 37 && bridge.alive) s.survive();
        s.figures.frame_cap_bytes = MAX_FRAME_BYTES;
        await api.close();
      } finally {
        await bridge.dispose();
      }
    } finally {
      await device.close();
    }

    // The simulator's caps (what a hostile client of the simulator meets).
    const sim = new Simulator({ telemetryIntervalMs: 100 });
    await sim.start();
    try {
      s.inject();
      const bigHead = encoder.encode(`GET /sim/state HTTP/1.1\r\nX: ${"a".repeat(9000)}\r\n\r\n`);
      const headStatus = await httpStatus(sim.port, bigHead);
      s.expect(headStatus === 431, `a 9 KB request head gets 431 (got ${headStatus})`);
      if (headStatus === 431) s.survive();
      s.inject();
      const bigBody = encoder.encode(
        `POST /sim/silence?on=0 HTTP/1.1\r\nContent-Length: 70000\r\n\r\n${"b".repeat(70000)}`,
      );
      const bodyStatus = await httpStatus(sim.port, bigBody);
      s.expect(bodyStatus === 413, `a 70 KB body gets 413 (got ${bodyStatus})`);
      if (bodyStatus === 413) s.survive();
      // A WebSocket client frame over the simulator's 16 KiB cap is answered with close 1009.
      s.inject();
      const ws = new WebSocket(sim.url);
      const closed = new Promise<CloseEvent>((resolve) => ws.onclose = resolve);
      await new Promise((resolve) => ws.onopen = resolve);
      ws.send("x".repeat(16 * 1024 + 1));
      const event = await closed;
      s.expect(event.code === 1009, `an oversized frame is closed with 1009 (got ${event.code})`);
      if (event.code === 1009) s.survive();
      // The received-frame log is bounded.
      s.inject();
      const chatty = new WebSocket(sim.url);
      await new Promise((resolve) => chatty.onopen = resolve);
      for (let i = 0; i < 1500; i++) chatty.send(`{"n":${i}}`);
      await until(() => sim.received.some((r) => r.text === '{"n":1499}'), 5000, "frames");
      s.expect(sim.received.length <= 1000, `received log bounded (${sim.received.length})`);
      if (sim.received.length <= 1000) s.survive();
      const chattyClosed = new Promise((resolve) => chatty.onclose = resolve);
      chatty.close();
      await chattyClosed;
      s.figures.sim_max_header_bytes = 8192;
      s.figures.sim_max_body_bytes = 65536;
      s.figures.sim_max_frame_bytes = 16384;
      s.figures.api_max_line_bytes = API_LIMITS.maxLineBytes;
      s.figures.api_max_queued_bytes = API_LIMITS.maxQueuedBytes;
      s.figures.api_max_clients = API_LIMITS.maxClients;
    } finally {
      await sim.stop();
    }
  },
);

scenarioTest(
  "security",
  "connect-frame secrets never reach logs, status, CLI output or errors",
  async (s) => {
    // Both device stand-ins carry fake secrets in their connect frames.
    const sim = new LineProcess(
      Deno.execPath(),
      mainArgs(["simulate", "--port", "0", "--hostname", "127.0.0.1", "--speed", "50"]),
      "simulate",
    );
    const fake = new FakeDevice({ connectFrame: connectFrame(1, 50), telemetryMs: 100 });
    let scanned = 0;
    try {
      const match = await sim.waitLine(/^listening on ws:\/\/127\.0\.0\.1:(\d+)\/ws$/);
      const port = Number(match[1]);
      for (const host of [`127.0.0.1:${port}`, fake.address]) {
        s.inject();
        const bridge = await BridgeProcess.start({ host, failsafeTimeout: 1 });
        try {
          const api = await bridge.connect();
          await api.request("subscribe");
          await api.setTarget(40);
          await delay(300);
          // Every way the bridge speaks: CLI status (table and JSON), set, errors, notes.
          const outputs = [
            await runCli(["status", "--socket", bridge.socket]),
            await runCli(["status", "--json", "--socket", bridge.socket]),
            await runCli(["set", "41", "--socket", bridge.socket]),
            await runCli(["set", "99", "--socket", bridge.socket]),
          ];
          if (host !== fake.address) {
            // Pushes, faults, a reboot: everything that makes the bridge log more.
            for (
              const path of [
                "button?action=power",
                "fault?kind=heater_no_heat",
                "reboot?down_ms=300",
              ]
            ) {
              await fetch(`http://127.0.0.1:${port}/sim/${path}`, { method: "POST" }).then((r) =>
                r.body?.cancel()
              );
              await delay(400);
            }
          } else {
            fake.dropAll();
            await delay(500);
          }
          await delay(1200); // the failsafe trips and notes it
          const status = await api.status();
          const notifications = JSON.stringify(api.notifications);
          await api.close();
          await bridge.kill("SIGTERM");
          const everything = [
            bridge.process.stdout,
            bridge.process.stderr,
            JSON.stringify(status),
            notifications,
            ...outputs.flatMap((o) => [o.stdout, o.stderr]),
          ].join("\n");
          for (const o of outputs) capture("cli output", o.stdout + o.stderr);
          capture("secret scan: status", JSON.stringify(status));
          scanned += everything.length;
          const leaked = secretsIn(everything);
          s.expect(leaked.length === 0, `secrets leaked via ${host}: ${leaked.join(", ")}`);
          const sawDevice = /device connected/.test(bridge.process.stderr);
          s.expect(sawDevice, "the bridge did receive the connect frame");
          if (leaked.length === 0 && sawDevice) s.survive();
        } finally {
          await bridge.dispose();
        }
      }
    } finally {
      await fake.close();
      await sim.stop("SIGTERM");
    }
    const simLeak = secretsIn(sim.lines.join("\n") + sim.stderr);
    s.expect(simLeak.length === 0, `the simulator's own log masks its secrets (${simLeak})`);
    s.figures.bytes_scanned_here = scanned;
  },
);
