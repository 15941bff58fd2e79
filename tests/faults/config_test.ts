/**
 * Bad configuration and CLI input: every option of `run` with wrong types,
 * out-of-range values and missing values, plus `set` and `simulate`. Each
 * must fail with a clear one-line message and a non-zero exit, and start
 * nothing: no socket file, and the device (listening at --host) sees no
 * connection.
 */
import { type CliResult, runCli } from "../process.ts";
import { capture, scenarioTest } from "./harness.ts";
import { RawDevice } from "./raw_device.ts";

/** Outside /tmp, /run and /var/run wherever the repository is cloned. */
const OUTSIDE_SOCKET = "/var/tmp/pb-denied-bridge.sock";

/** Like runCli, but a run that does start is killed after `timeoutMs` (and fails). */
function runBounded(args: string[], timeoutMs = 8000): Promise<CliResult> {
  return runCli(args, { timeoutMs });
}

/** [args after `run` defaults are applied, expected exit, message]. */
type Case = [args: string[], code: number, message: RegExp];

function runCases(host: string, socket: string): Case[] {
  const run = (...args: string[]) => ["run", "--host", host, "--socket", socket, ...args];
  const usage = 2;
  return [
    // --host
    [["run", "--socket", socket], usage, /run needs --host/],
    [["run", "--socket", socket, "--host"], usage, /'--host <value>' argument missing/],
    [["run", "--socket", socket, "--host", ""], usage, /--host needs the device's address/],
    [["run", "--socket", socket, "--host", "   "], usage, /--host needs the device's address/],
    [["run", "--socket", socket, "--host", "h:99999"], usage, /not a host name or address/],
    [["run", "--socket", socket, "--host", "h:-1"], usage, /not a host name or address/],
    [["run", "--socket", socket, "--host", "h:abc"], usage, /not a host name or address/],
    [["run", "--socket", socket, "--host", "h:0"], usage, /port must be from 1 to 65535/],
    [["run", "--socket", socket, "--host", "wss://h"], usage, /plain ws:\/\//],
    [["run", "--socket", socket, "--host", "user:pw@h"], usage, /just HOST or HOST:PORT/],
    [["run", "--socket", socket, "--host", "h?x=1"], usage, /just HOST or HOST:PORT/],
    [["run", "--socket", socket, "--host", "h/other"], usage, /WebSocket path is \/ws/],
    [["run", "--socket", socket, "--host", "a b"], usage, /not a host name or address/],
    [["run", "--socket", socket, "--host", "[::1"], usage, /not a host name or address/],
    [["run", "--socket", socket, "--host", "-h"], usage, /'--host' argument is ambiguous/],
    // --socket
    [["run", "--host", host, "--socket"], usage, /'--socket <value>' argument missing/],
    [["run", "--host", host, "--socket", ""], usage, /--socket must be an absolute path/],
    [["run", "--host", host, "--socket", "rel.sock"], usage, /--socket must be an absolute path/],
    [["run", "--host", host, "--socket", "/tmp/x/"], usage, /--socket must name a file/],
    [["run", "--host", host, "--socket", `/tmp/${"a".repeat(110)}`], usage, /longer than 107/],
    [["run", "--host", host, "--socket", "/tmp"], 1, /\/tmp exists and is not a socket/],
    [
      ["run", "--host", host, "--socket", "/tmp/pb-no-such-dir/x.sock"],
      1,
      /cannot listen on \/tmp\/pb-no-such-dir\/x.sock: No such file/,
    ],
    [
      ["run", "--host", host, "--socket", OUTSIDE_SOCKET],
      usage,
      /--socket '.*bridge.sock' is outside the directories the bridge may use: put it under \/tmp, \/run, \/var\/run/,
    ],
    [["run", "--host", host, "--socket", "/etc/pb.sock"], usage, /outside the directories/],
    [["run", "--host", host, "--socket", "/tmp/../etc/pb.sock"], usage, /outside the directories/],
    [["status", "--socket", OUTSIDE_SOCKET], usage, /outside the directories the bridge may use/],
    // --socket-mode
    [run("--socket-mode"), usage, /'--socket-mode <value>' argument missing/],
    [run("--socket-mode", "0666"), usage, /--socket-mode must be 0600 or 0660/],
    [run("--socket-mode", "0777"), usage, /--socket-mode must be 0600 or 0660/],
    [run("--socket-mode", "rw"), usage, /--socket-mode must be 0600 or 0660/],
    [run("--socket-mode", ""), usage, /--socket-mode must be 0600 or 0660/],
    // --failsafe-timeout
    [run("--failsafe-timeout"), usage, /'--failsafe-timeout <value>' argument missing/],
    ...["abc", "", " ", "0", "0.5", "601", "NaN", "Infinity", "1e3", "10s", "0x10", "0b1"]
      .map((value): Case => [
        run("--failsafe-timeout", value),
        usage,
        /--failsafe-timeout must be a number from 1 to 600 seconds/,
      ]),
    [run("--failsafe-timeout=-1"), usage, /--failsafe-timeout must be a number from 1 to 600/],
    [run("--failsafe-timeout", "-1"), usage, /'--failsafe-timeout' argument is ambiguous/],
    [
      run("--failsafe-timeout", "5", "--failsafe-timeout", "0"),
      usage,
      /--failsafe-timeout must be/,
    ],
    // --max-target
    [run("--max-target"), usage, /'--max-target <value>' argument missing/],
    ...["0", "256", "4.5", "abc", "=-5", "", "0x3c", "60C"].map((value): Case => [
      value.startsWith("=") ? run(`--max-target${value}`) : run("--max-target", value),
      usage,
      /--max-target must be a whole number from 1 to 255/,
    ]),
    // --readback-interval
    [run("--readback-interval"), usage, /'--readback-interval <value>' argument missing/],
    ...["0.5", "3601", "abc", "", "1e9", "0x10", "60s"].map((value): Case => [
      run("--readback-interval", value),
      usage,
      /--readback-interval must be 0 \(off\) or a number from 1 to 3600 seconds/,
    ]),
    // --log-level
    [run("--log-level"), usage, /'--log-level <value>' argument missing/],
    ...["loud", "", "INFO", "trace"].map((value): Case => [
      run("--log-level", value),
      usage,
      /--log-level must be one of error, warn, info, debug/,
    ]),
    // the rest of the command line
    [run("--bogus"), usage, /Unknown option '--bogus'/],
    [run("-x"), usage, /Unknown option '-x'/],
    [run("extra"), usage, /unexpected argument 'extra'/i],
    [["explode"], usage, /unknown command 'explode'/],
    // set / simulate
    [["set", "--socket", socket], usage, /set needs a temperature/],
    [["set", "hot", "--socket", socket], usage, /'hot' is not a temperature/],
    [["set", "", "--socket", socket], usage, /'' is not a temperature/],
    [["set", "1e999", "--socket", socket], usage, /'1e999' is not a temperature/],
    [["set", "-5", "--socket", socket], usage, /Unknown option '-5'/],
    [["set", "45", "46", "--socket", socket], usage, /unexpected argument '46'/],
    [["simulate", "--port", "70000"], usage, /--port must be a whole number from 0 to 65535/],
    [["simulate", "--port", "-1"], usage, /--port/],
    [["simulate", "--port", "http"], usage, /--port/],
    [["simulate", "--hostname", "a b"], usage, /--hostname 'a b' is not an address/],
    [["simulate", "--speed", "0"], usage, /--speed must be a number from 0.1 to 1000/],
    [["simulate", "--speed", "1001"], usage, /--speed/],
  ];
}

scenarioTest("config", "bad options: clear message, non-zero exit, nothing started", async (s) => {
  const device = new RawDevice();
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "pb-faults-cfg-" });
  const socket = `${dir}/bridge.sock`;
  try {
    const cases = runCases(device.address, socket);
    const failures: string[] = [];
    // Four at a time: each is a separate `deno run -P=bridge main.ts`.
    for (let i = 0; i < cases.length; i += 4) {
      await Promise.all(
        cases.slice(i, i + 4).map(async ([args, code, message]) => {
          s.inject();
          const started = performance.now();
          const result = await runBounded(args);
          const ms = performance.now() - started;
          capture(`cli ${JSON.stringify(args).slice(0, 200)}`, result.stdout + result.stderr);
          const stderr = result.stderr.replace(/^.*Warning.*experimental feature.*\n/m, "");
          const problems: string[] = [];
          if (result.code !== code) problems.push(`exit ${result.code}, wanted ${code}`);
          if (!message.test(stderr)) {
            problems.push(`message ${JSON.stringify(stderr.slice(0, 300))}`);
          }
          if (/^\s+at /m.test(stderr)) problems.push("a stack trace instead of a message");
          if (ms > 8000) problems.push(`took ${Math.round(ms)} ms`);
          if (problems.length > 0) {
            failures.push(`${args.join(" ").slice(0, 120)}: ${problems.join(", ")}`);
          } else s.survive();
        }),
      );
      const leftover = await Deno.lstat(socket).then(() => true, () => false);
      if (leftover) failures.push(`a socket file was created by one of cases ${i}..${i + 3}`);
    }
    s.expect(failures.length === 0, failures.join("\n"));
    s.expect(device.accepted === 0, `the device saw ${device.accepted} connections (want 0)`);
    const strays = [...Deno.readDirSync(dir)].map((e) => e.name);
    s.expect(strays.length === 0, `nothing left in the socket directory (${strays})`);
    const outsideSock = await Deno.lstat(OUTSIDE_SOCKET).then(() => true, () => false);
    s.expect(!outsideSock, "no socket file outside the permitted directories");
    s.figures.cases = cases.length;
  } finally {
    await device.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
