/**
 * Tests for install.sh: real runs of the script (with /bin/sh, and BusyBox ash
 * where installed) into temporary roots, in live (DESTDIR) and overlay mode.
 *
 * The init-script tests start a real process with start-stop-daemon. The
 * "daemon" there is a small shell script installed with --force: it stands in
 * for the bridge binary only for the init-script mechanics (arguments,
 * pidfile, log and rotation, status, stop), logging its arguments and exiting
 * 0 on SIGTERM as the bridge does.
 *
 * Run: deno test --allow-all tests/install_test.ts
 */
import assert from "node:assert/strict";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const INSTALL = `${REPO}/install.sh`;
const FIXTURES = `${REPO}/tests/fixtures/install`;
const FIXTURE_SRC = `${FIXTURES}/klipper`;
const decoder = new TextDecoder();

const U1_CONFIG = "/home/lava/printer_data/config";
const U1_PREFIX = "/home/lava/printer_data/panda-breath";
const U1_BIN = `${U1_PREFIX}/bin/panda-breath`;
const U1_SHARE = `${U1_PREFIX}/share/panda-breath`;
const U1_EXTRA = "/home/lava/klipper/klippy/extras/panda_bridge.py";
const INIT = "/etc/init.d/S99panda-breath";
const PIDFILE = "/var/run/panda-breath.pid";
const U1_LOG = "/home/lava/printer_data/logs/panda_bridge.log";
const INCLUDE = "[include panda_bridge.cfg]";
const SEED = "/usr/local/share/firmware-config/extended/klipper/panda_bridge.cfg";
const EXTENDED_CFG = "/home/lava/printer_data/config/extended/klipper/panda_bridge.cfg";

// ------------------------------------------------------------------ helpers

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion with a clean environment (no DESTDIR). */
async function exec(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<Result> {
  const out = await new Deno.Command(cmd, {
    args,
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin",
      HOME: Deno.env.get("HOME") ?? "/root",
      LC_ALL: "C",
      ...env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** Runs install.sh with /bin/sh (dash on Debian). */
function install(args: string[], env: Record<string, string> = {}): Promise<Result> {
  return exec("/bin/sh", [INSTALL, ...args], env);
}

function ok(r: Result, what = "install.sh"): Result {
  assert.equal(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

async function which(name: string): Promise<string | null> {
  const r = await exec("/bin/sh", ["-c", `command -v ${name}`]);
  return r.code === 0 ? r.stdout.trim() : null;
}

const ME = (await exec("id", ["-un"])).stdout.trim();
const SHELLCHECK = await which("shellcheck");
const SSD = await which("start-stop-daemon");
const BUSYBOX = await which("busybox");

/** A file tree: relative path -> "d MODE", "f MODE CONTENT" or "l TARGET". */
type Snapshot = Record<string, string>;

async function snapshot(root: string): Promise<Snapshot> {
  const out: Snapshot = {};
  async function walk(dir: string, rel: string) {
    const names: string[] = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    names.sort();
    for (const name of names) {
      const path = `${dir}/${name}`;
      const key = rel ? `${rel}/${name}` : name;
      const st = await Deno.lstat(path);
      const mode = ((st.mode ?? 0) & 0o7777).toString(8);
      if (st.isSymlink) out[key] = `l ${await Deno.readLink(path)}`;
      else if (st.isDirectory) {
        out[key] = `d ${mode}`;
        await walk(path, key);
      } else out[key] = `f ${mode} ${decoder.decode(await Deno.readFile(path))}`;
    }
  }
  await walk(root, "");
  return out;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

async function modeOf(path: string): Promise<string> {
  return ((await Deno.stat(path)).mode! & 0o7777).toString(8);
}

function text(path: string): Promise<string> {
  return Deno.readTextFile(path);
}

/** A 64-byte ELF header for the given machine (content beyond it is junk). */
function fakeElf(arch: "aarch64" | "x86_64"): Uint8Array {
  const b = new Uint8Array(64);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  b[16] = 2; // ET_EXEC
  b[18] = arch === "aarch64" ? 0xb7 : 0x3e;
  return b;
}

/** A temporary directory, removed by the returned cleanup. */
async function tempDir(prefix: string): Promise<string> {
  return await Deno.makeTempDir({ prefix: `pb-install-${prefix}-` });
}

/** Stand-in daemon script (see the header): logs args, exits 0 on SIGTERM. */
function standInDaemon(ignoreTerm = false): string {
  return [
    "#!/bin/sh",
    "# Stand-in for the panda-breath bridge, for init-script mechanics only.",
    'echo "stand-in daemon pid=$$ args: $*"',
    ignoreTerm ? "trap '' TERM" : `trap 'echo "stand-in daemon: SIGTERM"; exit 0' TERM INT`,
    "while :; do sleep 0.1; done",
    "",
  ].join("\n");
}

interface Fixture {
  dir: string; // holds root/, bin files, and anything else
  root: string; // the DESTDIR
  elfArm: string;
  elfX86: string;
  daemon: string;
  cleanup(): Promise<void>;
}

/**
 * A temporary root like a Snapmaker U1 ("u1"), or a generic Klipper host with
 * systemd ("systemd", user pi) or without ("sysv").
 */
async function fixture(kind: "u1" | "systemd" | "sysv", opts: { printerCfg?: string } = {}) {
  const dir = await tempDir(kind);
  const root = `${dir}/root`;
  const home = kind === "u1" ? "/home/lava" : "/home/pi";
  for (const d of ["printer_data/config", "printer_data/logs", "klipper/klippy/extras"]) {
    await Deno.mkdir(`${root}${home}/${d}`, { recursive: true });
  }
  await Deno.mkdir(`${root}/var/run`, { recursive: true });
  if (kind === "u1") await Deno.mkdir(`${root}/oem`);
  if (kind === "systemd") await Deno.mkdir(`${root}/run/systemd/system`, { recursive: true });
  await Deno.writeTextFile(
    `${root}${home}/printer_data/config/printer.cfg`,
    opts.printerCfg ?? await text(`${FIXTURES}/printer.cfg`),
  );
  const elfArm = `${dir}/panda-breath-aarch64-linux`;
  const elfX86 = `${dir}/panda-breath-x86_64-linux`;
  await Deno.writeFile(elfArm, fakeElf("aarch64"), { mode: 0o755 });
  await Deno.writeFile(elfX86, fakeElf("x86_64"), { mode: 0o755 });
  const daemon = `${dir}/stand-in-daemon`;
  await Deno.writeTextFile(daemon, standInDaemon(), { mode: 0o755 });
  const f: Fixture = {
    dir,
    root,
    elfArm,
    elfX86,
    daemon,
    cleanup: async () => {
      await killFromPidfile(`${root}${PIDFILE}`);
      await Deno.remove(dir, { recursive: true });
    },
  };
  return f;
}

/** Options that point a U1 install at the fixture sources. */
function u1Args(f: Fixture, ...more: string[]): string[] {
  return ["--destdir", f.root, "--binary", f.elfArm, "--klipper-src", FIXTURE_SRC, ...more];
}

function genericArgs(f: Fixture, ...more: string[]): string[] {
  return [
    "--destdir",
    f.root,
    "--binary",
    f.elfX86,
    "--arch",
    "x86_64",
    "--klipper-src",
    FIXTURE_SRC,
    "--config-dir",
    "/home/pi/printer_data/config",
    "--klipper-dir",
    "/home/pi/klipper",
    "--user",
    "pi",
    ...more,
  ];
}

function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) [ZX]/.test(stat);
  } catch {
    return false;
  }
}

async function killFromPidfile(pidfile: string) {
  try {
    const pid = Number((await text(pidfile)).trim());
    if (pid > 0 && alive(pid)) Deno.kill(pid, "SIGKILL");
  } catch { /* no pidfile */ }
}

async function waitDead(pid: number, ms = 3000) {
  const end = Date.now() + ms;
  while (alive(pid) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  return !alive(pid);
}

// -------------------------------------------------------------------- tests

Deno.test("--help documents the modes, every option and the U1 caveats", async () => {
  const r = ok(await install(["--help"]));
  for (
    const opt of [
      "--host",
      "--socket",
      "--binary",
      "--arch",
      "--force",
      "--prefix",
      "--klipper-dir",
      "--config-dir",
      "--klipper-src",
      "--user",
      "--service",
      "--u1",
      "--destdir",
      "--start",
      "--restart-klipper",
      "--dry-run",
      "--overlay",
      "--uninstall",
    ]
  ) assert.match(r.stdout, new RegExp(`${opt}\\b`), `--help lacks ${opt}`);
  assert.match(r.stdout, /\/home\/lava\/printer_data\/panda-breath/);
  assert.match(r.stdout, /extended\/klipper\/panda_bridge\.cfg/);
  assert.match(r.stdout, /\/oem\/\.debug/);
  assert.equal(r.stderr, "");
});

Deno.test("shellcheck passes on install.sh, every shell script in the repo and the generated scripts", async () => {
  assert.ok(SHELLCHECK, "shellcheck is not installed (Debian package: shellcheck); CI installs it");
  // Shell scripts in the repo: *.sh, or an sh/bash shebang (not .git, dist, .cache).
  const scripts: string[] = [];
  async function walk(dir: string) {
    for await (const e of Deno.readDir(dir)) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory) {
        if (![".git", "dist", ".cache", "node_modules"].includes(e.name)) await walk(path);
      } else if (e.isFile) {
        if (e.name.endsWith(".sh")) scripts.push(path);
        else {
          const head = decoder.decode((await Deno.readFile(path)).subarray(0, 64));
          if (/^#!\s*(\/usr\/bin\/env\s+)?(\/bin\/|\/usr\/bin\/)?(ba|da)?sh\b/.test(head)) {
            scripts.push(path);
          }
        }
      }
    }
  }
  await walk(REPO);
  assert.ok(scripts.includes(INSTALL));

  // The generated ones: SysV init script (live and overlay) and systemd launcher.
  const u1 = await fixture("u1");
  const sd = await fixture("systemd");
  const ov = await tempDir("overlay-sc");
  try {
    ok(await install(u1Args(u1, "--host", "10.0.0.2")));
    ok(await install(genericArgs(sd, "--host", "10.0.0.2")));
    ok(
      await install(["--overlay", `${ov}/o`, "--binary", u1.elfArm, "--klipper-src", FIXTURE_SRC]),
    );
    const generated = [
      `${u1.root}${INIT}`,
      `${sd.root}/usr/local/lib/panda-breath/panda-breath-service`,
      `${ov}/o/root${INIT}`,
    ];
    // One run per file, in parallel; the generated scripts as POSIX sh.
    const runs = await Promise.all([
      ...generated.map((s) => exec(SHELLCHECK!, ["-s", "sh", s]).then((r) => ({ s, r }))),
      ...scripts.map((s) => exec(SHELLCHECK!, ["-x", s]).then((r) => ({ s, r }))),
    ]);
    for (const { s, r } of runs) {
      assert.equal(r.code, 0, `shellcheck ${s}:\n${r.stdout}${r.stderr}`);
    }
  } finally {
    await u1.cleanup();
    await sd.cleanup();
    await Deno.remove(ov, { recursive: true });
  }
});

Deno.test("live U1 install: every file, mode, the fragment, the printer.cfg edit and the manifest", async () => {
  const f = await fixture("u1");
  try {
    const original = await text(`${f.root}${U1_CONFIG}/printer.cfg`);
    const r = ok(await install(u1Args(f, "--host", "192.168.1.50")));
    const R = f.root;
    assert.match(r.stdout, /mode: live, Snapmaker U1/);
    assert.match(r.stdout, /not starting the service: DESTDIR is set/);

    // binary, extra, init script, offline installer copy
    assert.deepEqual(await Deno.readFile(`${R}${U1_BIN}`), await Deno.readFile(f.elfArm));
    assert.equal(await modeOf(`${R}${U1_BIN}`), "755");
    assert.equal(await text(`${R}${U1_EXTRA}`), await text(`${FIXTURE_SRC}/panda_bridge.py`));
    assert.equal(await modeOf(`${R}${U1_EXTRA}`), "644");
    assert.equal(await modeOf(`${R}${INIT}`), "755");
    assert.equal(await text(`${R}${U1_SHARE}/install.sh`), await text(INSTALL));
    assert.equal(await modeOf(`${R}${U1_SHARE}/install.sh`), "755");
    assert.equal(
      await text(`${R}${U1_SHARE}/klipper/panda_bridge.cfg`),
      await text(`${FIXTURE_SRC}/panda_bridge.cfg`),
    );

    // the fragment: the default with only the host line changed (comment kept)
    const defaultCfg = await text(`${FIXTURE_SRC}/panda_bridge.cfg`);
    const fragment = await text(`${R}${U1_CONFIG}/panda_bridge.cfg`);
    assert.equal(
      fragment,
      defaultCfg.replace(
        /^host:.*$/m,
        "host: 192.168.1.50   # e.g. 192.168.1.50 or PandaBreath.local",
      ),
    );
    assert.equal(await modeOf(`${R}${U1_CONFIG}/panda_bridge.cfg`), "644");

    // printer.cfg: one include, just before the SAVE_CONFIG block; backup = original
    const printerCfg = await text(`${R}${U1_CONFIG}/printer.cfg`);
    assert.equal(
      printerCfg,
      original.replace("#*# <----", `${INCLUDE}\n#*# <----`),
    );
    assert.equal(await text(`${R}${U1_CONFIG}/printer.cfg.panda-breath.bak`), original);

    // the init script: paths, user, start-stop-daemon usage
    const init = await text(`${R}${INIT}`);
    assert.match(
      init,
      /^DAEMON="\$ROOT\/home\/lava\/printer_data\/panda-breath\/bin\/panda-breath"$/m,
    );
    assert.match(init, /^FRAGMENT="\$ROOT\/home\/lava\/printer_data\/config\/panda_bridge\.cfg"$/m);
    assert.match(init, /^PIDFILE="\$ROOT\/var\/run\/panda-breath\.pid"$/m);
    assert.match(init, /^LOGFILE="\$ROOT\/home\/lava\/printer_data\/logs\/panda_bridge\.log"$/m);
    assert.match(init, /^RUN_USER=lava$/m);
    assert.match(init, /start-stop-daemon -S -b -m -p "\$PIDFILE" -c "\$RUN_USER"/);

    // the manifest lists what was installed
    const manifest = await text(`${R}${U1_SHARE}/installed.txt`);
    for (
      const line of [
        "mode live",
        "service sysv",
        "user lava",
        `file ${U1_BIN}`,
        `file ${U1_EXTRA}`,
        `file ${INIT}`,
        `backup ${U1_CONFIG}/printer.cfg.panda-breath.bak`,
        `log ${U1_LOG}`,
        `pidfile ${PIDFILE}`,
        `dir ${U1_PREFIX}`,
      ]
    ) assert.ok(manifest.split("\n").includes(line), `manifest lacks "${line}":\n${manifest}`);
    assert.match(manifest, new RegExp(`^config \\S+ ${U1_CONFIG}/panda_bridge\\.cfg$`, "m"));
    assert.match(manifest, new RegExp(`^include \\S+ ${U1_CONFIG}/printer\\.cfg$`, "m"));

    // what survives on a U1, said plainly
    assert.match(r.stdout, /kept \(printer_data is persistent\)/);
    assert.match(r.stdout, /LOST at the next reboot and at every firmware update/);
    assert.match(
      r.stdout,
      /\/etc\/init\.d\/S99panda-breath\n\s+\/home\/lava\/klipper\/klippy\/extras/,
    );
    assert.match(r.stdout, /--overlay/);
  } finally {
    await f.cleanup();
  }
});

Deno.test("running install.sh twice changes nothing; uninstall restores the root byte for byte", async () => {
  const f = await fixture("u1");
  try {
    const before = await snapshot(f.root);
    ok(await install(u1Args(f, "--host", "192.168.1.50")));
    const installed = await snapshot(f.root);
    const again = ok(await install(u1Args(f, "--host", "192.168.1.50")));
    assert.deepEqual(await snapshot(f.root), installed);
    assert.doesNotMatch(again.stdout, /^ {2}(install|update|add|back up|create|write) /m);
    assert.match(again.stdout, /already has "\[include panda_bridge\.cfg\]"/);
    // and a third time without --host keeps the host
    ok(await install(u1Args(f)));
    assert.deepEqual(await snapshot(f.root), installed);

    const u = ok(await install(["--destdir", f.root, "--uninstall"]));
    assert.match(u.stdout, /restore .*printer\.cfg from .*panda-breath\.bak/);
    assert.deepEqual(await snapshot(f.root), before);
  } finally {
    await f.cleanup();
  }
});

Deno.test("install.sh and the init script also run under BusyBox ash and applets (as on the U1)", {
  ignore: !BUSYBOX,
}, async () => {
  const f = await fixture("u1");
  const bb = await tempDir("busybox");
  try {
    ok(await exec(BUSYBOX!, ["--install", "-s", bb]));
    const env = { PATH: bb };
    const sh = `${bb}/sh`;
    const before = await snapshot(f.root);
    const hs = ["--host", "10.0.0.9", "--socket", "/run/pb.sock"];
    ok(await exec(sh, [INSTALL, ...u1Args(f, ...hs)], env));
    const installed = await snapshot(f.root);
    ok(await exec(sh, [INSTALL, ...u1Args(f, ...hs)], env));
    assert.deepEqual(await snapshot(f.root), installed);

    // The init script with BusyBox start-stop-daemon, the stand-in daemon and -c <current user>.
    ok(
      await exec(sh, [
        INSTALL,
        ...u1Args(f, "--binary", f.daemon, "--force", "--user", ME, "--start"),
      ], env),
    );
    const pid = Number((await text(`${f.root}${PIDFILE}`)).trim());
    assert.ok(alive(pid));
    const initEnv = { PATH: bb, PANDA_BRIDGE_ROOT: f.root };
    const st = await exec(sh, [`${f.root}${INIT}`, "status"], initEnv);
    assert.equal(st.code, 0, st.stdout + st.stderr);
    assert.match(st.stdout, new RegExp(`running \\(pid ${pid}\\)`));
    assert.match(
      await text(`${f.root}${U1_LOG}`),
      /args: run --host 10\.0\.0\.9 --socket \/run\/pb\.sock\n/,
    );
    const stop = ok(await exec(sh, [`${f.root}${INIT}`, "stop"], initEnv), "init stop");
    assert.match(stop.stdout, /Stopping panda-breath .*OK/);
    assert.ok(await waitDead(pid));
    assert.equal((await exec(sh, [`${f.root}${INIT}`, "status"], initEnv)).code, 3);

    ok(await exec(sh, [INSTALL, "--destdir", f.root, "--uninstall", "--start"], env));
    assert.deepEqual(await snapshot(f.root), before);
  } finally {
    await f.cleanup();
    await Deno.remove(bb, { recursive: true });
  }
});

Deno.test("the init script starts, reports and stops a real process with start-stop-daemon", async () => {
  assert.ok(SSD, "start-stop-daemon is missing (Debian: package dpkg, /sbin/start-stop-daemon)");
  const f = await fixture("u1");
  const R = f.root;
  const env = { PANDA_BRIDGE_ROOT: R };
  const initCmd = (action: string, extra: Record<string, string> = {}) =>
    exec("/bin/sh", [`${R}${INIT}`, action], { ...env, ...extra });
  try {
    const before = await snapshot(R);
    const r = ok(
      await install(
        u1Args(
          f,
          "--binary",
          f.daemon,
          "--force",
          "--user",
          ME,
          "--host",
          "10.1.2.3:8080",
          "--socket",
          "/tmp/pb-install-test.sock",
          "--start",
        ),
      ),
    );
    assert.match(r.stderr, /not an ELF executable \(accepted because of --force\)/);
    assert.match(r.stdout, /Starting panda-breath \(host 10\.1\.2\.3:8080\): OK \(pid \d+\)/);

    // pidfile -> a live process run with the host/socket read from the fragment
    const pid1 = Number((await text(`${R}${PIDFILE}`)).trim());
    assert.ok(pid1 > 0 && alive(pid1), "daemon is not running");
    const cmdline = (await text(`/proc/${pid1}/cmdline`)).split("\0");
    assert.deepEqual(cmdline.slice(-6, -1), [
      "run",
      "--host",
      "10.1.2.3:8080",
      "--socket",
      "/tmp/pb-install-test.sock",
    ]);
    const log1 = await text(`${R}${U1_LOG}`);
    assert.match(log1, /panda-breath init: starting .* --host 10\.1\.2\.3:8080 --socket/);
    assert.match(
      log1,
      new RegExp(`stand-in daemon pid=${pid1} args: run --host 10\\.1\\.2\\.3:8080`),
    );

    // status
    let st = await initCmd("status");
    assert.equal(st.code, 0);
    assert.equal(st.stdout.trim(), `panda-breath is running (pid ${pid1})`);

    // start again: no second process
    const again = ok(await initCmd("start"));
    assert.match(again.stdout, new RegExp(`already running \\(pid ${pid1}\\)`));

    // the host is changed in the fragment only; restart picks it up; log rotates to .old
    const cfgPath = `${R}${U1_CONFIG}/panda_bridge.cfg`;
    const cfg = await text(cfgPath);
    await Deno.writeTextFile(cfgPath, cfg.replace(/^host:.*$/m, "host = panda.local ; mine"));
    const rs = ok(await initCmd("restart"));
    assert.match(
      rs.stdout,
      /Stopping panda-breath .*OK\nStarting panda-breath \(host panda\.local\): OK/,
    );
    assert.ok(await waitDead(pid1));
    const pid2 = Number((await text(`${R}${PIDFILE}`)).trim());
    assert.notEqual(pid2, pid1);
    const old = await text(`${R}${U1_LOG}.old`);
    assert.match(old, new RegExp(`stand-in daemon pid=${pid1}`));
    assert.match(old, /stand-in daemon: SIGTERM/);
    assert.match(await text(`${R}${U1_LOG}`), /args: run --host panda\.local --socket/);

    // stop: process gone, pidfile gone, status 3
    const stop = ok(await initCmd("stop"));
    assert.match(stop.stdout, /Stopping panda-breath \(pid \d+\): OK/);
    assert.ok(await waitDead(pid2));
    assert.equal(await exists(`${R}${PIDFILE}`), false);
    st = await initCmd("status");
    assert.equal(st.code, 3);
    assert.match(st.stdout, /not running/);
    assert.match(ok(await initCmd("stop")).stdout, /not running/);

    // no host in the fragment: start refuses, says why on stderr and in the log
    await Deno.writeTextFile(cfgPath, cfg.replace(/^host:.*$/m, "host:"));
    const bad = await initCmd("start");
    assert.equal(bad.code, 1);
    assert.match(
      bad.stderr,
      /not starting: no device address: set "host: <address>" in the \[panda_bridge\]/,
    );
    assert.match(await text(`${R}${U1_LOG}`), /not starting: no device address/);
    assert.equal(await exists(`${R}${PIDFILE}`), false);
    await Deno.writeTextFile(cfgPath, cfg.replace(/^host:.*$/m, "host: bad/host"));
    assert.match((await initCmd("start")).stderr, /host "bad\/host" .* is not a device address/);

    // bad action
    const usage = await initCmd("bogus");
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /Usage: .*\{start\|stop\|restart\|status\}/);

    // A daemon that ignores SIGTERM is killed after the (bounded) stop timeout;
    // here by uninstall --start, which stops the service before removing it.
    await Deno.writeTextFile(cfgPath, cfg);
    await Deno.writeTextFile(`${R}${U1_BIN}`, standInDaemon(true));
    ok(await initCmd("start"));
    const pid3 = Number((await text(`${R}${PIDFILE}`)).trim());
    const t0 = Date.now();
    const u = ok(
      await install(["--destdir", R, "--uninstall", "--start"], { PANDA_BRIDGE_STOP_TIMEOUT: "1" }),
    );
    assert.match(u.stdout, /Stopping panda-breath \(pid \d+\): killed \(still running after 1s\)/);
    assert.ok(Date.now() - t0 < 5000);
    assert.ok(await waitDead(pid3));

    // uninstall leaves the root as before, logs included
    assert.deepEqual(await snapshot(R), before);
  } finally {
    await f.cleanup();
  }
});

Deno.test("a daemon that exits at once is reported: start fails, install.sh exits 1", async () => {
  const f = await fixture("u1");
  try {
    const before = await snapshot(f.root);
    const failing = `${f.dir}/failing-daemon`;
    await Deno.writeTextFile(
      failing,
      '#!/bin/sh\necho "error: cannot reach the device" >&2\nexit 1\n',
      {
        mode: 0o755,
      },
    );
    const r = await install(
      u1Args(f, "--binary", failing, "--force", "--user", ME, "--host", "10.0.0.4", "--start"),
    );
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /Starting panda-breath \(host 10\.0\.0\.4\): FAILED: it exited at once; see/,
    );
    assert.match(r.stderr, /error: cannot reach the device/);
    assert.match(r.stderr, /error: installed, but the service failed to start/);
    assert.equal(await exists(`${f.root}${PIDFILE}`), false);
    assert.equal(
      (await exec("/bin/sh", [`${f.root}${INIT}`, "status"], { PANDA_BRIDGE_ROOT: f.root })).code,
      3,
    );
    ok(await install(["--destdir", f.root, "--uninstall", "--start"]));
    assert.deepEqual(await snapshot(f.root), before);
  } finally {
    await f.cleanup();
  }
});

Deno.test("generic host with systemd: unit, launcher reading the fragment, user, uninstall", async () => {
  const f = await fixture("systemd");
  const R = f.root;
  try {
    const before = await snapshot(R);
    const r = ok(await install(genericArgs(f, "--restart-klipper")));
    assert.match(r.stdout, /service: systemd, user: pi/);
    assert.match(r.stdout, /Not restarting Klipper: DESTDIR is set\./);
    assert.match(r.stdout, /Next: no device address/);
    const unit = await text(`${R}/etc/systemd/system/panda-breath.service`);
    assert.equal(await modeOf(`${R}/etc/systemd/system/panda-breath.service`), "644");
    for (
      const line of [
        "User=pi",
        "Restart=always",
        "After=network-online.target",
        "Wants=network-online.target",
        "ExecStart=/usr/local/lib/panda-breath/panda-breath-service",
        "RestartPreventExitStatus=78",
        "WantedBy=multi-user.target",
      ]
    ) assert.ok(unit.split("\n").includes(line), `unit lacks ${line}:\n${unit}`);
    assert.equal(await modeOf(`${R}/usr/local/bin/panda-breath`), "755");
    assert.equal(await modeOf(`${R}/home/pi/klipper/klippy/extras/panda_bridge.py`), "644");
    assert.equal(await exists(`${R}${INIT}`), false);
    const launcher = `${R}/usr/local/lib/panda-breath/panda-breath-service`;
    assert.equal(await modeOf(launcher), "755");

    // The launcher refuses to start without a host (exit 78: no restart loop)...
    const env = { PANDA_BRIDGE_ROOT: R };
    let l = await exec("/bin/sh", [launcher], env);
    assert.equal(l.code, 78);
    assert.match(l.stderr, /not starting: no device address/);

    // ...and execs the binary with the fragment's host and socket. The stand-in
    // here only echoes its arguments.
    ok(await install(genericArgs(f, "--host", "PandaBreath.local", "--socket", "/run/pb.sock")));
    await Deno.writeTextFile(`${R}/usr/local/bin/panda-breath`, '#!/bin/sh\necho "ARGS $*"\n');
    l = ok(await exec("/bin/sh", [launcher], env), "launcher");
    assert.equal(l.stdout, "ARGS run --host PandaBreath.local --socket /run/pb.sock\n");
    assert.match(l.stderr, /starting .* --host PandaBreath\.local --socket \/run\/pb\.sock/);

    await Deno.writeFile(`${R}/usr/local/bin/panda-breath`, fakeElf("x86_64"));
    ok(await install(["--destdir", R, "--uninstall"]));
    assert.deepEqual(await snapshot(R), before);
  } finally {
    await f.cleanup();
  }
});

Deno.test("the service kind and user default sensibly on a generic host", async () => {
  const f = await fixture("sysv");
  try {
    // no /run/systemd/system -> SysV script; --config-dir given -> its owner is the user
    const args = genericArgs(f).filter((a, i, all) => a !== "pi" && all[i + 1] !== "pi");
    const r = ok(await install(args));
    assert.match(r.stdout, new RegExp(`service: sysv, user: ${ME}\\b`));
    const init = await text(`${f.root}${INIT}`);
    assert.match(init, new RegExp(`^RUN_USER=${ME}$`, "m"));
    assert.match(init, /^LOGFILE="\$ROOT\/home\/pi\/printer_data\/logs\/panda_bridge\.log"$/m);
    assert.match(init, /^DAEMON="\$ROOT\/usr\/local\/bin\/panda-breath"$/m);
    // switching the service kind removes the files of the old one
    const sw = ok(await install([...args, "--service", "systemd"]));
    assert.match(
      sw.stdout,
      /remove \/etc\/init\.d\/S99panda-breath \(no longer part of the install\)/,
    );
    assert.equal(await exists(`${f.root}${INIT}`), false);
    assert.ok(await exists(`${f.root}/etc/systemd/system/panda-breath.service`));
    const none = await fixture("sysv");
    try {
      const rn = ok(await install(genericArgs(none, "--service", "none")));
      assert.match(rn.stdout, /no service installed/);
      assert.equal(await exists(`${none.root}${INIT}`), false);
      assert.equal(await exists(`${none.root}/etc/systemd`), false);
    } finally {
      await none.cleanup();
    }
  } finally {
    await f.cleanup();
  }
});

Deno.test("--dry-run prints every action and changes nothing (install and uninstall)", async () => {
  const f = await fixture("u1");
  try {
    const before = await snapshot(f.root);
    const d = ok(await install(u1Args(f, "--host", "10.0.0.5", "--dry-run")));
    assert.deepEqual(await snapshot(f.root), before);
    assert.match(d.stdout, /dry run: nothing is changed/);
    for (
      const action of [
        `would create directory ${U1_PREFIX}`,
        `would install ${U1_BIN} (mode 755)`,
        `would install ${U1_EXTRA} (mode 644)`,
        `would install ${U1_CONFIG}/panda_bridge.cfg (mode 644) with host: 10.0.0.5`,
        `would back up ${U1_CONFIG}/printer.cfg to ${U1_CONFIG}/printer.cfg.panda-breath.bak`,
        `would add "${INCLUDE}" to ${U1_CONFIG}/printer.cfg`,
        `would install ${INIT} (mode 755)`,
        `would write manifest ${U1_SHARE}/installed.txt`,
      ]
    ) assert.ok(d.stdout.includes(action), `dry run lacks "${action}":\n${d.stdout}`);
    // each directory is announced once
    assert.equal(d.stdout.split(`would create directory ${U1_SHARE}\n`).length, 2);

    ok(await install(u1Args(f, "--host", "10.0.0.5")));
    const installed = await snapshot(f.root);
    const du = ok(await install(["--destdir", f.root, "--uninstall", "--dry-run"]));
    assert.deepEqual(await snapshot(f.root), installed);
    for (
      const action of [
        `would restore ${U1_CONFIG}/printer.cfg from`,
        `would remove ${U1_BIN}`,
        `would remove ${U1_CONFIG}/panda_bridge.cfg`,
        `would remove ${INIT}`,
        `would remove directory ${U1_PREFIX}`,
      ]
    ) assert.ok(du.stdout.includes(action), `dry uninstall lacks "${action}":\n${du.stdout}`);
    // a dry re-run with a new host changes nothing either, but says what it would do
    const dh = ok(await install(u1Args(f, "--host", "10.0.0.6", "--dry-run")));
    assert.match(dh.stdout, /would update .*panda_bridge\.cfg/);
    assert.deepEqual(await snapshot(f.root), installed);
  } finally {
    await f.cleanup();
  }
});

Deno.test("a user-edited fragment is kept; --host/--socket change only their lines; uninstall keeps it", async () => {
  const f = await fixture("u1");
  const cfgPath = `${f.root}${U1_CONFIG}/panda_bridge.cfg`;
  try {
    const before = await snapshot(f.root);
    ok(await install(u1Args(f, "--host", "10.0.0.1")));
    const edited = (await text(cfgPath)).replace("check_gain_time: 600", "check_gain_time: 900") +
      "\n[gcode_macro MY_MACRO]\ngcode:\n    M118 hi\n";
    await Deno.writeTextFile(cfgPath, edited);

    let r = ok(await install(u1Args(f)));
    assert.match(r.stdout, /keeping your .*panda_bridge\.cfg/);
    assert.equal(await text(cfgPath), edited);

    r = ok(await install(u1Args(f, "--host", "10.0.0.2", "--socket", "/run/pb.sock")));
    assert.match(r.stdout, /update host:\/socket: in your .*panda_bridge\.cfg/);
    const expected = edited
      .replace(/^host: 10\.0\.0\.1/m, "host: 10.0.0.2")
      .replace(/^socket: .*$/m, "socket: /run/pb.sock");
    assert.equal(await text(cfgPath), expected);

    const u = ok(await install(["--destdir", f.root, "--uninstall"]));
    assert.match(u.stdout, /keeping .*panda_bridge\.cfg: it was edited after the install/);
    assert.equal(await text(cfgPath), expected);
    await Deno.remove(cfgPath);
    assert.deepEqual(await snapshot(f.root), before);
  } finally {
    await f.cleanup();
  }
});

Deno.test("an unedited fragment follows a new shipped default and keeps its host", async () => {
  const f = await fixture("u1");
  try {
    ok(await install(u1Args(f, "--host", "10.0.0.1")));
    const src2 = `${f.dir}/klipper2`;
    await Deno.mkdir(src2);
    await Deno.copyFile(`${FIXTURE_SRC}/panda_bridge.py`, `${src2}/panda_bridge.py`);
    const newDefault = (await text(`${FIXTURE_SRC}/panda_bridge.cfg`)) +
      "\n[gcode_macro M191]\ngcode:\n    M118 new\n";
    await Deno.writeTextFile(`${src2}/panda_bridge.cfg`, newDefault);
    const r = ok(await install([...u1Args(f), "--klipper-src", src2]));
    assert.match(r.stdout, /update .*panda_bridge\.cfg \(new default, host\/socket kept\)/);
    assert.equal(
      await text(`${f.root}${U1_CONFIG}/panda_bridge.cfg`),
      newDefault.replace(/^host:/m, "host: 10.0.0.1"),
    );
    // still "ours": uninstall removes it
    ok(await install(["--destdir", f.root, "--uninstall"]));
    assert.equal(await exists(`${f.root}${U1_CONFIG}/panda_bridge.cfg`), false);
  } finally {
    await f.cleanup();
  }
});

Deno.test("printer.cfg changed after install: uninstall removes just the include line", async () => {
  const f = await fixture("u1");
  const pcfg = `${f.root}${U1_CONFIG}/printer.cfg`;
  try {
    const original = await text(pcfg);
    ok(await install(u1Args(f)));
    const changed = (await text(pcfg)).replace("max_accel: 20000", "max_accel: 15000");
    await Deno.writeTextFile(pcfg, changed);
    const u = ok(await install(["--destdir", f.root, "--uninstall"]));
    assert.match(
      u.stdout,
      /remove "\[include panda_bridge\.cfg\]" from .*other changes .* are kept/,
    );
    assert.equal(await text(pcfg), original.replace("max_accel: 20000", "max_accel: 15000"));
    assert.equal(await exists(`${pcfg}.panda-breath.bak`), false);
  } finally {
    await f.cleanup();
  }
});

Deno.test("an include the user already had is not added twice and stays after uninstall", async () => {
  const cfg = `[include panda_bridge.cfg]\n${await text(`${FIXTURES}/printer.cfg`)}`;
  const f = await fixture("u1", { printerCfg: cfg });
  try {
    const before = await snapshot(f.root);
    const r = ok(await install(u1Args(f)));
    assert.match(r.stdout, /already has "\[include panda_bridge\.cfg\]"/);
    const pcfg = await text(`${f.root}${U1_CONFIG}/printer.cfg`);
    assert.equal(pcfg, cfg);
    assert.equal(await exists(`${f.root}${U1_CONFIG}/printer.cfg.panda-breath.bak`), false);
    ok(await install(["--destdir", f.root, "--uninstall"]));
    assert.deepEqual(await snapshot(f.root), before);
  } finally {
    await f.cleanup();
  }
});

Deno.test("the offline copy in printer_data re-installs what a U1 firmware update removed", async () => {
  const f = await fixture("u1");
  try {
    ok(await install(u1Args(f, "--host", "10.0.0.3")));
    const installed = await snapshot(f.root);
    // a firmware update / reboot wipes the overlay root
    await Deno.remove(`${f.root}${INIT}`);
    await Deno.remove(`${f.root}${U1_EXTRA}`);
    const r = ok(await exec("/bin/sh", [`${f.root}${U1_SHARE}/install.sh`, "--destdir", f.root]));
    assert.match(r.stdout, new RegExp(`install ${INIT}`));
    assert.match(r.stdout, new RegExp(`install ${U1_EXTRA}`));
    assert.deepEqual(await snapshot(f.root), installed);
  } finally {
    await f.cleanup();
  }
});

Deno.test("defaults: binary from dist/ and sources from klipper/ next to install.sh", async () => {
  const f = await fixture("u1");
  try {
    const repo = `${f.dir}/repo`;
    await Deno.mkdir(`${repo}/dist`, { recursive: true });
    await Deno.mkdir(`${repo}/klipper`);
    await Deno.copyFile(INSTALL, `${repo}/install.sh`);
    await Deno.copyFile(f.elfArm, `${repo}/dist/panda-breath-aarch64-linux`);
    for (const name of ["panda_bridge.py", "panda_bridge.cfg"]) {
      await Deno.copyFile(`${FIXTURE_SRC}/${name}`, `${repo}/klipper/${name}`);
    }
    const r = ok(await exec("/bin/sh", [`${repo}/install.sh`, "--destdir", f.root]));
    assert.match(
      r.stdout,
      new RegExp(`binary: ${repo}/dist/panda-breath-aarch64-linux \\(aarch64\\)`),
    );
    assert.ok(await exists(`${f.root}${U1_BIN}`));
  } finally {
    await f.cleanup();
  }
});

Deno.test("overlay mode: U1 extended-firmware tree, seeded fragment, idempotent, uninstall", async () => {
  const f = await fixture("u1");
  const parent = await tempDir("overlay");
  const ov = `${parent}/70-panda-breath`;
  const O = `${ov}/root`;
  try {
    const r = ok(
      await install([
        "--overlay",
        ov,
        "--binary",
        f.elfArm,
        "--klipper-src",
        FIXTURE_SRC,
        "--host",
        "10.0.0.8",
      ]),
    );
    assert.match(r.stdout, /mode: overlay/);
    const files = Object.entries(await snapshot(ov)).filter(([, v]) => v.startsWith("f")).map((
      [k, v],
    ) => `${k} ${v.split(" ")[1]}`);
    assert.deepEqual(files.sort(), [
      "root/etc/init.d/S99panda-breath 755",
      "root/home/lava/klipper/klippy/extras/panda_bridge.py 644",
      "root/usr/local/bin/panda-breath 755",
      "root/usr/local/share/firmware-config/extended/klipper/panda_bridge.cfg 644",
      "root/usr/local/share/panda-breath/installed.txt 644",
    ]);
    // nothing inside printer_data (a mount on the printer), no printer.cfg edit
    assert.equal(await exists(`${O}/home/lava/printer_data`), false);
    assert.match(await text(`${O}${SEED}`), /^host: 10\.0\.0\.8 /m);
    const init = await text(`${O}${INIT}`);
    assert.match(
      init,
      new RegExp(`^FRAGMENT="\\$ROOT${EXTENDED_CFG.replaceAll(".", "\\.")}"$`, "m"),
    );
    assert.match(init, /^DAEMON="\$ROOT\/usr\/local\/bin\/panda-breath"$/m);
    assert.match(init, /^RUN_USER=lava$/m);
    assert.match(init, /^LOGFILE="\$ROOT\/home\/lava\/printer_data\/logs\/panda_bridge\.log"$/m);
    assert.match(r.stdout, /seeded at boot/);

    const snap = await snapshot(parent);
    ok(
      await install([
        "--overlay",
        ov,
        "--binary",
        f.elfArm,
        "--klipper-src",
        FIXTURE_SRC,
        "--host",
        "10.0.0.8",
      ]),
    );
    assert.deepEqual(await snapshot(parent), snap);

    ok(await install(["--overlay", ov, "--uninstall"]));
    assert.deepEqual(await snapshot(parent), {});
  } finally {
    await f.cleanup();
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("overlay init script reads the host from the user's seeded copy, not the default", async () => {
  const f = await fixture("u1");
  const parent = await tempDir("overlay-run");
  const ov = `${parent}/o`;
  const O = `${ov}/root`;
  try {
    ok(
      await install([
        "--overlay",
        ov,
        "--binary",
        f.daemon,
        "--force",
        "--user",
        ME,
        "--klipper-src",
        FIXTURE_SRC,
        "--host",
        "10.0.0.8",
      ]),
    );
    // Simulate the printer: the firmware seeded the default, the user changed the host.
    await Deno.mkdir(`${O}/home/lava/printer_data/config/extended/klipper`, { recursive: true });
    await Deno.mkdir(`${O}/var/run`, { recursive: true });
    const seeded = (await text(`${O}${SEED}`)).replace(/^host:.*$/m, "host: 10.0.0.99");
    await Deno.writeTextFile(`${O}${EXTENDED_CFG}`, seeded);
    const env = { PANDA_BRIDGE_ROOT: O };
    try {
      const s = ok(await exec("/bin/sh", [`${O}${INIT}`, "start"], env), "overlay init start");
      assert.match(s.stdout, /Starting panda-breath \(host 10\.0\.0\.99\): OK/);
      assert.match(await text(`${O}${U1_LOG}`), /args: run --host 10\.0\.0\.99 --socket/);
      ok(await exec("/bin/sh", [`${O}${INIT}`, "stop"], env));
    } finally {
      await killFromPidfile(`${O}${PIDFILE}`);
    }
  } finally {
    await f.cleanup();
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("bad input fails with a clear message and changes nothing", async () => {
  const f = await fixture("u1");
  const noCfg = await fixture("u1");
  await Deno.remove(`${noCfg.root}${U1_CONFIG}/printer.cfg`);
  const overlayFw = await fixture("u1");
  await Deno.mkdir(`${overlayFw.root}${U1_CONFIG}/extended/klipper`, { recursive: true });
  await Deno.writeTextFile(`${overlayFw.root}${EXTENDED_CFG}`, "[panda_bridge]\nhost: x\n");
  const notElf = `${f.dir}/not-elf`;
  await Deno.writeTextFile(notElf, "#!/bin/sh\n");
  const cases: [string, Fixture, string[], RegExp, number][] = [
    [
      "missing binary",
      f,
      u1Args(f, "--binary", `${f.dir}/nope`),
      /error: binary not found: .*\/nope/,
      1,
    ],
    [
      "wrong architecture",
      f,
      u1Args(f, "--binary", f.elfX86),
      /error: .* is built for x86_64, but the target needs aarch64/,
      1,
    ],
    [
      "not an ELF file",
      f,
      u1Args(f, "--binary", notElf),
      /error: .*not-elf is not an ELF executable/,
      1,
    ],
    ["no printer.cfg", noCfg, u1Args(noCfg), /error: no printer\.cfg at .*printer\.cfg/, 1],
    [
      "no Klipper",
      f,
      u1Args(f, "--klipper-dir", "/opt/none"),
      /error: no Klipper at .*\/opt\/none/,
      1,
    ],
    ["unknown option", f, u1Args(f, "--frobnicate"), /unknown option: --frobnicate/, 2],
    ["option missing its value", f, [...u1Args(f), "--host"], /option --host needs a value/, 2],
    [
      "option followed by an option",
      f,
      u1Args(f, "--user", "--force"),
      /option --user needs a value/,
      2,
    ],
    ["empty value", f, u1Args(f, "--host="), /option --host needs a non-empty value/, 2],
    [
      "bad host",
      f,
      u1Args(f, "--host", "my printer"),
      /--host "my printer" is not a device address/,
      1,
    ],
    [
      "socket outside /tmp,/run",
      f,
      u1Args(f, "--socket", "/home/x.sock"),
      /--socket must be under/,
      1,
    ],
    ["relative prefix", f, u1Args(f, "--prefix", "opt"), /--prefix must be an absolute path/, 1],
    [
      "bad service",
      f,
      u1Args(f, "--service", "upstart"),
      /--service must be systemd, sysv or none/,
      1,
    ],
    ["missing sources", f, u1Args(f, "--klipper-src", f.dir), /Klipper extra not found/, 1],
    [
      "overlay with DESTDIR",
      f,
      ["--overlay", `${f.root}/ov`, "--destdir", f.root, "--binary", f.elfArm],
      /--overlay and --destdir\/DESTDIR cannot be combined/,
      1,
    ],
    [
      "overlay with an x86_64 binary",
      f,
      ["--overlay", `${f.root}/ov`, "--binary", f.elfX86, "--klipper-src", FIXTURE_SRC],
      /built for x86_64, but the target needs aarch64/,
      1,
    ],
    [
      "live install on a firmware that has the overlay",
      overlayFw,
      u1Args(overlayFw),
      /extended\/klipper\/panda_bridge\.cfg exists: .* define \[panda_bridge\] twice/,
      1,
    ],
    [
      "uninstall without install",
      f,
      ["--destdir", f.root, "--uninstall"],
      /no installation found/,
      1,
    ],
  ];
  try {
    for (const [name, fx, args, message, code] of cases) {
      const before = await snapshot(fx.dir);
      const r = await install(args);
      assert.equal(r.code, code, `${name}: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stderr, message, `${name}: stderr was:\n${r.stderr}`);
      assert.equal(r.stdout, "", `${name}: printed actions:\n${r.stdout}`);
      assert.deepEqual(await snapshot(fx.dir), before, `${name}: changed files`);
    }
    // DESTDIR from the environment works like --destdir
    const r = await install(["--binary", f.elfX86, "--klipper-src", FIXTURE_SRC], {
      DESTDIR: f.root,
    });
    assert.match(r.stderr, /built for x86_64, but the target needs aarch64/);
    // --force accepts the wrong architecture
    ok(await install(u1Args(f, "--binary", f.elfX86, "--force")));
  } finally {
    await f.cleanup();
    await noCfg.cleanup();
    await overlayFw.cleanup();
  }
});

Deno.test(
  "the real klipper/ sources install and their [panda_bridge] host is read by the service",
  {
    ignore: !(await exists(`${REPO}/klipper/panda_bridge.cfg`)) ||
      !(await exists(`${REPO}/klipper/panda_bridge.py`)),
  },
  async () => {
    const f = await fixture("systemd");
    try {
      const args = genericArgs(f, "--host", "10.4.4.4").filter((a) => a !== FIXTURE_SRC);
      args.splice(args.indexOf("--klipper-src"), 1);
      ok(await install(args));
      assert.equal(
        await text(`${f.root}/home/pi/klipper/klippy/extras/panda_bridge.py`),
        await text(`${REPO}/klipper/panda_bridge.py`),
      );
      await Deno.writeTextFile(
        `${f.root}/usr/local/bin/panda-breath`,
        '#!/bin/sh\necho "ARGS $*"\n',
      );
      const l = ok(
        await exec("/bin/sh", [`${f.root}/usr/local/lib/panda-breath/panda-breath-service`], {
          PANDA_BRIDGE_ROOT: f.root,
        }),
      );
      assert.match(l.stdout, /^ARGS run --host 10\.4\.4\.4 --socket \/\S+\n$/);
    } finally {
      await f.cleanup();
    }
  },
);
