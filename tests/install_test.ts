/**
 * install.sh and the service files in klipper/service/, run for real against
 * staged roots (tests/fixtures/install/roots.ts builds them from the
 * Snapmaker U1 reference): stock and extended U1 firmware, the firmware's own
 * Panda Breath / DragonBreath integration disabled or enabled, a Klipper host
 * with a foreign panda_breath.py, a U1 reboot and a firmware update (the
 * overlay wiped; Klipper's config must still load), repair, uninstall, and the
 * SysV supervisor restarting a `kill -9`ed bridge that then turns the
 * simulated device off.
 *
 * Run: deno test --allow-all tests/install_test.ts
 */
import assert from "node:assert/strict";
import { Simulator } from "../lib/simulator/mod.ts";
import {
  busyboxBin,
  elfHeader,
  fakeBinary,
  overlayBoot,
  persistent,
  piTree,
  printerCfg,
  SCRATCH,
  seedExtended,
  snapshot,
  type Tree,
  type U1Options,
  u1Tree,
  withRoot,
} from "./fixtures/install/roots.ts";
import { type CliResult, runToEnd } from "./process.ts";
import { alive } from "./procfs.ts";
import { skipUnless, which } from "./tools.ts";
import { until } from "./wait.ts";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const INSTALL = `${REPO}/install.sh`;
const CHECK_CONFIG = `${REPO}/tests/fixtures/install/klipper_config_check.py`;

const PD = "/home/lava/printer_data";
const PAYLOAD = `${PD}/panda-breath`;
const SETTINGS = `${PD}/config/panda_bridge.cfg`;
const EXT_LOADER = `${PD}/config/extended/klipper/panda_bridge_loader.cfg`;
const STOCK_LOADER = `${PD}/config/panda_bridge_loader.cfg`;
const ACTIVE = "/etc/panda-breath/klipper/panda_bridge.cfg";
const EXTRA = "/home/lava/klipper/klippy/extras/panda_bridge.py";
const INIT = "/etc/init.d/S99panda-breath";
const HOOK = "/etc/hooks/klipper.d/panda-breath.sh";
const LOG = `${PD}/logs/panda-breath.log`;
const REPAIR = `sh ${PAYLOAD}/install.sh --repair`;

type Result = CliResult;

/** Runs a command to completion with a clean environment. */
function exec(cmd: string, args: string[], env: Record<string, string> = {}): Promise<Result> {
  return runToEnd(cmd, args, {
    clearEnv: true,
    env: { PATH: Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C", ...env },
  });
}

function ok(r: Result, what = "install.sh"): Result {
  assert.equal(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

const ME = (await exec("id", ["-un"])).stdout.trim();
const SHELLCHECK = which("shellcheck");
const BUSYBOX = which("busybox");
const PYTHON = which("python3");

/** install.sh staged under `root` (extra args after). */
async function install(root: string, args: string[], shell = "/bin/sh", env = {}): Promise<Result> {
  return await exec(shell, [INSTALL, "--destdir", root, ...args], env);
}

async function read(root: string, path: string): Promise<string> {
  return await Deno.readTextFile(`${root}${path}`);
}

async function present(root: string, path: string): Promise<boolean> {
  return await Deno.lstat(`${root}${path}`).then(() => true, () => false);
}

interface ConfigCheck {
  ok: boolean;
  error: string | null;
  files: string[];
  sections: string[];
}

/** Klipper's include and section rules on the staged config (python3 stand-in). */
async function klipperConfig(
  root: string,
  printerCfgPath = `${PD}/config/printer.cfg`,
  klipper = "/home/lava/klipper",
): Promise<ConfigCheck> {
  const r = ok(await exec(PYTHON!, [CHECK_CONFIG, root, printerCfgPath, klipper]), "config check");
  return JSON.parse(r.stdout);
}

/** The installed payload's `install.sh --repair` on a staged root. */
async function repairStaged(root: string): Promise<Result> {
  return await exec("/bin/sh", [
    `${root}${PAYLOAD}/install.sh`,
    "--repair",
    "--destdir",
    root,
    "--force",
  ]);
}

/** install.sh --force of `bin` for `user`, talking to `host`. */
async function installAs(root: string, bin: string, user: string, host: string): Promise<Result> {
  return await install(root, ["--binary", bin, "--force", "--user", user, "--host", host]);
}

/** Installs panda-breath on a staged U1 with a stand-in binary. */
async function installU1(root: string, extra: string[] = []): Promise<Result> {
  return ok(await install(root, ["--binary", await fakeBinary(), "--force", ...extra]));
}

// -------------------------------------------------------------- static checks

Deno.test(
  `shellcheck: install.sh and the service scripts, committed and rendered`,
  {
    ignore: skipUnless("shellcheck"),
  },
  async () => {
    await withRoot(u1Tree({ firmware: "extended-1.6.0" }), async (root) => {
      await installU1(root, ["--host", "192.168.1.50"]);
      const scripts = [
        INSTALL,
        ...["S99panda-breath", "panda-breath-launch", "panda-breath-supervise", "klipper-hook.sh"]
          .map((f) => `${REPO}/klipper/service/${f}`),
        ...[
          INIT,
          HOOK,
          `${PAYLOAD}/libexec/panda-breath-launch`,
          `${PAYLOAD}/libexec/panda-breath-supervise`,
        ]
          .map((f) => `${root}${f}`),
      ];
      const r = await exec(SHELLCHECK!, ["-s", "sh", ...scripts]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
    });
  },
);

Deno.test("install.sh stays small and keeps its templates in klipper/service/", async () => {
  const text = await Deno.readTextFile(INSTALL);
  const lines = text.split("\n").length - 1;
  assert.ok(lines <= 400, `install.sh has ${lines} lines`);
  // No generated scripts: no heredoc other than --help, and no escaped "\$".
  assert.equal(text.match(/<<'?EOF'?/g)?.length, 1);
  assert.ok(!text.includes("\\$"), "install.sh generates no shell code");
});

Deno.test("--help names the modes, the options and the repair command", async () => {
  const r = ok(await exec("/bin/sh", [INSTALL, "--help"]));
  for (
    const word of [
      "--repair",
      "--uninstall",
      "--overlay",
      "--dry-run",
      "--destdir",
      "--sums",
      "--host",
      "--socket",
      REPAIR,
    ]
  ) assert.ok(r.stdout.includes(word), `--help lacks ${word}`);
  const bad = await exec("/bin/sh", [INSTALL, "--bogus"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /unknown option: --bogus/);
});

Deno.test("the README and the release notes name only options install.sh has", async () => {
  const help = ok(await exec("/bin/sh", [INSTALL, "--help"])).stdout;
  const options = new Set([...help.match(/--[a-z][a-z0-9-]*/g)!, "--help"]);
  const notes = await Deno.readTextFile(`${REPO}/.github/workflows/release.yml`);
  const readme = await Deno.readTextFile(`${REPO}/README.md`);
  // In the README: every --option on a line that runs install.sh or lists its options.
  const lines = [
    ...notes.split("\n").filter((l) => /install\.sh/.test(l)),
    ...readme.split("\n").filter((l) => /install\.sh|`--help` lists/.test(l)),
  ];
  const named = lines.flatMap((l) => l.match(/--[a-z][a-z0-9-]*/g) ?? []);
  assert.ok(named.includes("--sums"), "the release notes name the checksum option");
  for (const option of named) {
    assert.ok(options.has(option), `${option} is not an install.sh option (see --help)`);
  }
});

// -------------------------------------------------------------- U1 installs

Deno.test(
  `stock U1 firmware: payload in printer_data, loader included from printer.cfg, config loads`,
  {
    ignore: skipUnless("python3"),
  },
  async () => {
    await withRoot(u1Tree({ firmware: "stock" }), async (root) => {
      const r = await installU1(root, ["--host", "192.168.1.50"]);
      assert.match(r.stdout, /Snapmaker U1/);
      for (
        const path of [
          `${PAYLOAD}/bin/panda-breath`,
          `${PAYLOAD}/install.sh`,
          `${PAYLOAD}/manifest`,
          EXTRA,
          INIT,
        ]
      ) {
        assert.ok(await present(root, path), `${path} missing`);
      }
      assert.ok(!await present(root, HOOK), "no hook: stock S60klipper sources none");
      assert.ok((await read(root, `${PD}/config/printer.cfg`)).includes(
        "[include panda_bridge_loader.cfg]\n#*# <---------------------- SAVE_CONFIG",
      ));
      const settings = await read(root, SETTINGS);
      assert.match(settings, /^host: 192\.168\.1\.50$/m);
      assert.match(settings, /^socket: \/run\/panda-breath\/bridge\.sock$/m);
      const config = await klipperConfig(root);
      assert.equal(config.error, null);
      assert.deepEqual(config.files, [`${PD}/config/printer.cfg`, STOCK_LOADER, ACTIVE, SETTINGS]);
      for (
        const s of [
          "panda_bridge",
          "heater_generic panda_breath",
          "delayed_gcode panda_bridge_check",
        ]
      ) {
        assert.ok(config.sections.includes(s), `${s} not loaded`);
      }
    });
  },
);

Deno.test(
  `extended firmware, built-in integration disabled: no printer.cfg edit, hook, firmware files untouched`,
  {
    ignore: skipUnless("python3"),
  },
  async () => {
    await withRoot(u1Tree({ firmware: "extended-1.6.0", builtin: "disabled" }), async (root) => {
      const before = await snapshot(root);
      await installU1(root, ["--host", "192.168.1.50"]);
      const after = await snapshot(root);
      for (const [path, value] of before) {
        if (path === `${PD}/moonraker.asvc`) continue; // gains our line, checked below
        assert.equal(after.get(path), value, `${path} was changed`);
      }
      assert.match(after.get(`${PD}/moonraker.asvc`)!, /\ncrowsnest\npanda-breath\n$/);
      const added = [...after.keys()].filter((p) => !before.has(p));
      for (const path of added) {
        assert.doesNotMatch(path, /\/(panda_breath[^/]*\.cfg|dragonbreath[^/]*|panda_breath\.py)$/);
      }
      assert.ok(added.includes(EXT_LOADER) && added.includes(HOOK) && added.includes(SETTINGS));
      assert.match(await read(root, HOOK), /'\/etc\/init.d\/S99panda-breath' start/);
      const config = await klipperConfig(root);
      assert.equal(config.error, null);
      assert.deepEqual(config.files, [`${PD}/config/printer.cfg`, EXT_LOADER, ACTIVE, SETTINGS]);
    });
  },
);

Deno.test("the klipper.d hook, sourced as S60klipper does, never exits its shell", async () => {
  await withRoot(u1Tree({ firmware: "extended-1.6.0" }), async (root) => {
    await installU1(root, ["--host", "192.168.1.50"]);
    for (const action of ["start", "stop", "restart", ""]) {
      const r = ok(
        await exec("/bin/sh", [
          "-c",
          `set -eu; set -- ${action}; . '${root}${HOOK}'; echo "S60klipper goes on"`,
        ]),
        `hook ${action}`,
      );
      assert.equal(r.stdout, "S60klipper goes on\n");
    }
  });
});

Deno.test("running install.sh twice changes nothing the second time", async () => {
  await withRoot(u1Tree({ firmware: "extended-1.6.0" }), async (root) => {
    const bin = await fakeBinary();
    ok(await install(root, ["--binary", bin, "--force", "--host", "192.168.1.50"]));
    const first = await snapshot(root);
    const again = ok(await install(root, ["--binary", bin, "--force"]));
    assert.doesNotMatch(again.stdout, /^ {2}(install|update|create|add|link|write) /m);
    assert.deepEqual(await snapshot(root), first);
  });
});

for (
  const [name, options, extra, pattern] of [
    [
      "the firmware's Panda Breath integration enabled",
      { firmware: "extended-1.6.0", builtin: "panda" },
      {},
      /extended\/klipper\/panda_breath\.cfg: the firmware's own/,
    ],
    [
      "DragonBreath enabled",
      { firmware: "extended-1.6.0", builtin: "dragonbreath" },
      {},
      /DragonBreath is enabled: .* cannot drive/,
    ],
    [
      "an included file of the user's defining [heater_generic panda_breath] and M141",
      { firmware: "extended-1.5.0" },
      {
        [`${PD}/config/extended/klipper/chamber.cfg`]:
          "[heater_generic panda_breath]\nheater_pin: x\n[gcode_macro M141]\ngcode:\n",
      },
      /chamber\.cfg defines \[heater_generic panda_breath,gcode_macro m141\]/,
    ],
  ] as [string, U1Options, Tree, RegExp][]
) {
  Deno.test(`refused, nothing written: ${name}`, async () => {
    await withRoot({ ...u1Tree(options), ...extra }, async (root) => {
      const before = await snapshot(root);
      const r = await install(root, ["--binary", await fakeBinary(), "--force"]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, /two controllers must never drive one device\. Nothing was changed\./);
      assert.match(r.stderr, pattern);
      if (options.builtin === "panda") {
        assert.match(
          r.stderr,
          /Firmware Config, set "PandaBreath \/ DragonBreath Chamber Heater" to "Disabled"/,
        );
        assert.match(r.stderr, /sh install\.sh --host 192\.168\.1\.77/); // the host: found there
      }
      assert.deepEqual(await snapshot(root), before);
    });
  });
}

// -------------------------------------------------------------- reboot, update, repair

/** Survival of each installed item: [item, reboot without .debug, reboot with .debug, firmware update]. */
async function measureSurvival(firmware: U1Options["firmware"]): Promise<string[][]> {
  const rows: string[][] = [];
  const results: Record<string, Record<string, boolean>> = {};
  for (const event of ["reboot", "reboot-debug", "firmware-update"] as const) {
    await withRoot(u1Tree({ firmware, debug: event !== "reboot" }), async (root) => {
      const lower = await snapshot(root);
      await installU1(root, ["--host", "192.168.1.50"]);
      const installed = await snapshot(root);
      await overlayBoot(root, lower, event === "firmware-update" ? "firmware-update" : "reboot");
      for (const [path, value] of installed) {
        if (lower.get(path) === value || value === "<dir>") continue;
        (results[path] ??= {})[event] = await present(root, path);
      }
      const config = await klipperConfig(root);
      (results["Klipper starts"] ??= {})[event] = config.ok;
      (results["chamber heater in Klipper"] ??= {})[event] = config.sections.includes(
        "heater_generic panda_breath",
      );
    });
  }
  const label = (path: string) =>
    path.startsWith(`${PAYLOAD}/`)
      ? `\`${PAYLOAD}/\` (binary, installer, master copies, manifest)`
      : path.startsWith("/")
      ? `\`${path}\``
      : path;
  const order = (path: string) =>
    `${path.startsWith("/") ? (persistent(path) ? 0 : 1) : 2}${
      path === "Klipper starts" ? 0 : 1
    }${path}`;
  const seen = new Set<string>();
  const yes = (b: boolean) => (b ? "yes" : "**no**");
  for (const path of Object.keys(results).sort((a, b) => order(a).localeCompare(order(b)))) {
    const item = label(path);
    if (seen.has(item)) continue;
    seen.add(item);
    const r = results[path];
    rows.push([item, yes(r["reboot"]), yes(r["reboot-debug"]), yes(r["firmware-update"])]);
  }
  return rows;
}

Deno.test(
  `what survives what on the U1, measured; the README's table says the same`,
  {
    ignore: skipUnless("python3"),
  },
  async () => {
    const rows = await measureSurvival("extended-1.6.0");
    const table = rows.map((r) => `| ${r.join(" | ")} |`);
    console.log(table.join("\n"));
    const byItem = Object.fromEntries(
      rows.map((r) => [r[0].replace(/^`([^`]*)`$/, "$1"), r.slice(1)]),
    );
    assert.deepEqual(byItem["Klipper starts"], ["yes", "yes", "yes"]);
    assert.deepEqual(byItem["chamber heater in Klipper"], ["**no**", "yes", "**no**"]);
    assert.deepEqual(byItem[SETTINGS], ["yes", "yes", "yes"]);
    assert.deepEqual(byItem[EXTRA], ["**no**", "yes", "**no**"]);
    for (const [item, values] of Object.entries(byItem)) {
      const path = item.replace(/^`([^`]*)`.*$/, "$1");
      if (path.startsWith("/")) {
        assert.deepEqual(
          values[0] === "yes",
          persistent(path),
          `${item}: survival follows the overlay rule`,
        );
      }
    }
    const readme = (await Deno.readTextFile(`${REPO}/README.md`)).replace(/[ \t]+/g, " ");
    for (const line of table) {
      assert.ok(
        readme.includes(line),
        `README lacks the measured row: ${line}`,
      );
    }
  },
);

Deno.test(
  `a reboot without /oem/.debug: Klipper still starts, the console names the repair command`,
  {
    ignore: skipUnless("python3"),
  },
  async () => {
    await withRoot(u1Tree({ firmware: "extended-1.6.0" }), async (root) => {
      const lower = await snapshot(root);
      await installU1(root, ["--host", "192.168.1.50"]);
      const removed = await overlayBoot(root, lower, "reboot");
      assert.ok(removed.includes(EXTRA) && removed.includes(INIT) && removed.includes(ACTIVE));
      const config = await klipperConfig(root);
      assert.equal(config.error, null);
      assert.deepEqual(config.files, [`${PD}/config/printer.cfg`, EXT_LOADER]);
      assert.deepEqual(config.sections.filter((s) => s !== "printer"), [
        "delayed_gcode panda_bridge_check",
      ]);
      const loader = await read(root, EXT_LOADER);
      assert.match(loader, /\{% if 'panda_bridge' not in printer %\}/);
      assert.ok(loader.includes(REPAIR), "the notice names the repair command");
      // Nothing under extended/ is a symlink (S49extended-config deletes broken ones).
      for (const [path, value] of await snapshot(root)) {
        if (path.includes("/config/extended/")) assert.ok(!value.startsWith("-> "), path);
      }
    });
  },
);

Deno.test(
  `the old layout would not have started: the settings included directly fail as Klipper does`,
  {
    ignore: skipUnless("python3"),
  },
  async () => {
    // Why the loader exists: with [panda_bridge] reachable while the extra is gone,
    // Klipper stops at heaters.py's check.
    await withRoot(u1Tree({ firmware: "stock" }), async (root) => {
      await installU1(root, ["--host", "192.168.1.50"]);
      await Deno.writeTextFile(
        `${root}${PD}/config/printer.cfg`,
        "[include panda_bridge.cfg]\n" + printerCfg(false),
      );
      await Deno.remove(`${root}${EXTRA}`);
      const config = await klipperConfig(root);
      assert.equal(config.error, "Unknown temperature sensor 'panda_bridge'");
    });
  },
);

Deno.test(
  `repair after a firmware update restores everything and keeps the user's settings`,
  {
    ignore: skipUnless("python3"),
  },
  async () => {
    await withRoot(u1Tree({ firmware: "extended-1.6.0", debug: true }), async (root) => {
      const lower = await snapshot(root);
      await installU1(root, ["--host", "192.168.1.50"]);
      const installed = await snapshot(root);
      // The user edits the settings in Mainsail: another device, a comment, max_temp.
      const edited = (await read(root, SETTINGS)).replace(
        "host: 192.168.1.50",
        "host: 10.0.0.7  # moved",
      )
        .replace("max_temp: 60", "max_temp: 65");
      await Deno.writeTextFile(`${root}${SETTINGS}`, edited);
      await overlayBoot(root, lower, "firmware-update");
      assert.ok(!await present(root, "/oem/.debug"));
      assert.ok(!await present(root, EXTRA));
      const r = ok(await repairStaged(root), "repair");
      assert.match(r.stdout, /panda-breath repair/);
      assert.equal(await read(root, SETTINGS), edited, "settings kept byte for byte");
      const now = await snapshot(root);
      for (const [path, value] of installed) {
        if (path === SETTINGS || path === "/oem/.debug") continue;
        assert.equal(now.get(path), value, `${path} not restored`);
      }
      const config = await klipperConfig(root);
      assert.equal(config.error, null);
      assert.ok(config.sections.includes("heater_generic panda_breath"));
      // A second repair changes nothing.
      ok(await repairStaged(root));
      assert.deepEqual(await snapshot(root), now);
    });
  },
);

Deno.test("uninstall leaves the root as it was before the install (U1 and Pi)", async () => {
  for (
    const tree of [
      u1Tree({ firmware: "stock" }),
      u1Tree({ firmware: "extended-1.6.0" }),
      piTree({ systemd: true }),
    ]
  ) {
    await withRoot(tree, async (root) => {
      const before = await snapshot(root);
      const pi = tree["/home/pi/printer_data/config/printer.cfg"] !== undefined;
      const args = ["--binary", await fakeBinary(), "--force", "--host", "192.168.1.50"];
      ok(await install(root, pi ? [...args, "--user", "pi"] : args));
      assert.notDeepEqual(await snapshot(root), before);
      const r = ok(await install(root, pi ? ["--uninstall", "--user", "pi"] : ["--uninstall"]));
      assert.match(r.stdout, /remove .*manifest/);
      assert.deepEqual(await snapshot(root), before);
    });
  }
});

Deno.test("uninstall after a reboot wiped the activation: the payload's copy removes the rest", async () => {
  await withRoot(u1Tree({ firmware: "extended-1.6.0" }), async (root) => {
    const lower = await snapshot(root);
    await installU1(root, ["--host", "192.168.1.50"]);
    await overlayBoot(root, lower, "reboot");
    const r = ok(
      await exec("/bin/sh", [`${root}${PAYLOAD}/install.sh`, "--uninstall", "--destdir", root]),
      "uninstall",
    );
    assert.match(r.stdout, /remove .*panda_bridge_loader\.cfg/);
    assert.deepEqual(await snapshot(root), lower);
  });
});

Deno.test("uninstall keeps settings the user edited, and says so", async () => {
  await withRoot(u1Tree({ firmware: "extended-1.6.0" }), async (root) => {
    await installU1(root, ["--host", "192.168.1.50"]);
    await Deno.writeTextFile(`${root}${SETTINGS}`, (await read(root, SETTINGS)) + "# mine\n");
    const r = ok(await install(root, ["--uninstall"]));
    assert.match(r.stdout, /keeping your edited .*panda_bridge\.cfg/);
    assert.ok(await present(root, SETTINGS));
    assert.ok(!await present(root, PAYLOAD));
  });
});

Deno.test("--dry-run prints the actions and changes nothing (install and uninstall)", async () => {
  await withRoot(u1Tree({ firmware: "extended-1.6.0" }), async (root) => {
    const before = await snapshot(root);
    const bin = await fakeBinary();
    const dry = ok(
      await install(root, ["--binary", bin, "--force", "--host", "192.168.1.50", "--dry-run"]),
    );
    assert.match(
      dry.stdout,
      /would install \/home\/lava\/klipper\/klippy\/extras\/panda_bridge\.py/,
    );
    assert.match(dry.stdout, /would install \/etc\/init\.d\/S99panda-breath/);
    assert.deepEqual(await snapshot(root), before);
    ok(await install(root, ["--binary", bin, "--force", "--host", "192.168.1.50"]));
    const installed = await snapshot(root);
    const dryUn = ok(await install(root, ["--uninstall", "--dry-run"]));
    assert.match(dryUn.stdout, /would remove \/etc\/init\.d\/S99panda-breath/);
    assert.deepEqual(await snapshot(root), installed);
  });
});

Deno.test("--host on a re-run changes only the host: line of edited settings", async () => {
  await withRoot(u1Tree({ firmware: "extended-1.6.0" }), async (root) => {
    const bin = await fakeBinary();
    ok(await install(root, ["--binary", bin, "--force", "--host", "192.168.1.50"]));
    const edited = (await read(root, SETTINGS)).replace("max_temp: 60", "max_temp: 65");
    await Deno.writeTextFile(`${root}${SETTINGS}`, edited);
    ok(await install(root, ["--binary", bin, "--force", "--host", "192.168.1.51"]));
    assert.equal(
      await read(root, SETTINGS),
      edited.replace("host: 192.168.1.50", "host: 192.168.1.51"),
    );
  });
});

// -------------------------------------------------------------- Klipper hosts

Deno.test("a foreign panda_breath.py on a Klipper host: refused, nothing written", async () => {
  await withRoot(piTree({ systemd: true, foreign: true }), async (root) => {
    const before = await snapshot(root);
    const r = await install(root, ["--binary", await fakeBinary(), "--force", "--user", "pi"]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /\/home\/pi\/klipper\/klippy\/extras\/panda_breath\.py: another Panda Breath module/,
    );
    assert.match(r.stderr, /remove that module/);
    assert.deepEqual(await snapshot(root), before);
  });
});

Deno.test(
  `Klipper host with systemd: unit, launcher, logs in printer_data, moonraker.asvc`,
  {
    ignore: skipUnless("python3"),
  },
  async () => {
    await withRoot(piTree({ systemd: true }), async (root) => {
      const bin = await fakeBinary('echo "bridge args: $*"');
      ok(await installAs(root, bin, "pi", "pb.local:8080"));
      const unit = await read(root, "/etc/systemd/system/panda-breath.service");
      for (
        const line of [
          "User=pi",
          "ExecStart=/home/pi/printer_data/panda-breath/libexec/panda-breath-launch",
          "RuntimeDirectory=panda-breath",
          "RuntimeDirectoryMode=0750",
          "Restart=always",
          "StartLimitIntervalSec=0",
          "RestartPreventExitStatus=78",
        ]
      ) assert.ok(unit.split("\n").includes(line), `unit lacks ${line}`);
      assert.ok(!await present(root, INIT), "no SysV script next to systemd");
      assert.ok(
        (await read(root, "/home/pi/printer_data/config/printer.cfg")).includes(
          "[include panda_bridge.cfg]",
        ),
      );
      assert.equal(
        await read(root, "/home/pi/printer_data/moonraker.asvc"),
        "klipper_mcu\nwebcamd\ncrowsnest\npanda-breath\n",
      );
      const config = await klipperConfig(
        root,
        "/home/pi/printer_data/config/printer.cfg",
        "/home/pi/klipper",
      );
      assert.equal(config.error, null);
      // The launcher systemd runs: reads host/socket, logs to printer_data/logs.
      const launch = ok(
        await exec("/bin/sh", [
          `${root}/home/pi/printer_data/panda-breath/libexec/panda-breath-launch`,
        ], {
          PANDA_BREATH_ROOT: root,
        }),
        "launcher",
      );
      assert.equal(launch.stdout, "");
      const log = await read(root, "/home/pi/printer_data/logs/panda-breath.log");
      assert.match(
        log,
        /panda-breath: starting: .* run --host pb\.local:8080 --socket \/run\/panda-breath\/bridge\.sock/,
      );
      assert.ok(
        log.includes(
          `bridge args: run --host pb.local:8080 --socket ${root}/run/panda-breath/bridge.sock`,
        ),
      );
    });
  },
);

Deno.test("the launcher's log: one .old once past 1 MiB; an unwritable log never stops the bridge", async () => {
  await withRoot(piTree({ systemd: true }), async (root) => {
    const bin = await fakeBinary('echo "bridge ran: $*"');
    ok(await installAs(root, bin, "pi", "192.168.1.50"));
    const launcher = `${root}/home/pi/printer_data/panda-breath/libexec/panda-breath-launch`;
    const log = "/home/pi/printer_data/logs/panda-breath.log";
    const launch = async () =>
      ok(await exec("/bin/sh", [launcher], { PANDA_BREATH_ROOT: root }), "launcher");
    const big = "x".repeat(1024 * 1024 + 1) + "\n";
    await Deno.writeTextFile(`${root}${log}`, big);
    await Deno.writeTextFile(`${root}${log}.old`, "the older copy\n");
    await launch();
    assert.equal(await read(root, `${log}.old`), big, "the big log became the one .old");
    assert.match(await read(root, log), /^\S+ \S+ panda-breath: starting: [\s\S]*bridge ran: run/);
    await launch(); // small now: appended, not rotated
    assert.equal((await read(root, log)).match(/bridge ran: run/g)?.length, 2);
    assert.equal(await read(root, `${log}.old`), big);
    const logs = [...(await snapshot(root)).keys()].filter((p) => p.includes("panda-breath.log"));
    assert.deepEqual(logs.sort(), [log, `${log}.old`]);
    // A log that cannot be opened (here: a directory in its place): the bridge still runs.
    await Deno.remove(`${root}${log}`);
    await Deno.mkdir(`${root}${log}`);
    const r = await launch();
    assert.match(r.stdout, /bridge ran: run --host 192\.168\.1\.50/);
  });
});

Deno.test("the launcher's log stays bounded while the bridge runs, one .old, nothing after it lost", async () => {
  await withRoot(piTree({ systemd: true }), async (root) => {
    // A bridge that writes about 20 KB/s for 3 s.
    const line = "y".repeat(100);
    const bin = await fakeBinary(
      `i=0; while [ $i -lt 60 ]; do j=0; while [ $j -lt 10 ]; do echo "$i.$j ${line}"; ` +
        `j=$((j+1)); done; i=$((i+1)); sleep 0.05; done; echo "last line"`,
    );
    ok(await installAs(root, bin, "pi", "192.168.1.50"));
    const launcher = `${root}/home/pi/printer_data/panda-breath/libexec/panda-breath-launch`;
    const log = `${root}/home/pi/printer_data/logs/panda-breath.log`;
    const env = {
      PANDA_BREATH_ROOT: root,
      PANDA_BREATH_LOG_MAX: "8192",
      PANDA_BREATH_LOG_CHECK: "0.2",
    };
    const run = exec("/bin/sh", [launcher], env);
    let largest = 0;
    let done = false;
    run.finally(() => done = true);
    while (!done) {
      largest = Math.max(largest, (await Deno.stat(log).catch(() => ({ size: 0 }))).size);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    ok(await run, "launcher");
    const written = 600 * 107;
    assert.ok(largest < 8192 + 12_000, `largest log ${largest} bytes of ${written} written`);
    assert.ok((await Deno.stat(`${log}.old`)).size > 8192, "rotated into the one .old");
    assert.match(await Deno.readTextFile(log), /last line\n$/, "the bridge went on writing");
  });
});

Deno.test("the launcher passes heat_mode and lease_hours from [panda_bridge]; bad values stop it", async () => {
  await withRoot(piTree({ systemd: true }), async (root) => {
    const bin = await fakeBinary('echo "bridge ran: $*"');
    ok(await installAs(root, bin, "pi", "192.168.1.50"));
    const launcher = `${root}/home/pi/printer_data/panda-breath/libexec/panda-breath-launch`;
    const settings = `${root}/home/pi/printer_data/config/panda_bridge.cfg`;
    const set = async (key: string, value: string) => {
      const r = ok(await exec("/bin/sh", [launcher, "--set", settings, key, value]), "--set");
      await Deno.writeTextFile(settings, r.stdout);
    };
    const launch = () => exec("/bin/sh", [launcher], { PANDA_BREATH_ROOT: root });
    const log = () => read(root, "/home/pi/printer_data/logs/panda-breath.log");
    ok(await launch(), "launcher");
    assert.match(
      await log(),
      /bridge ran: run --host 192\.168\.1\.50 --socket \S+ --heat-mode always-on\n/,
    );
    await set("heat_mode", "drying-lease");
    await set("lease_hours", "3");
    ok(await launch(), "launcher");
    assert.match(await log(), /bridge ran: run .* --heat-mode drying-lease --lease-hours 3\n/);
    await set("heat_mode", "always_on");
    assert.equal((await launch()).code, 78);
    assert.match(
      await log(),
      /not starting: heat_mode: "always_on" in .* must be always-on or drying-lease/,
    );
    await set("heat_mode", "drying-lease");
    await set("lease_hours", "24");
    assert.equal((await launch()).code, 78);
    assert.match(await log(), /lease_hours: "24" .* from 1 to 12/);
  });
});

// -------------------------------------------------------------- checks before writing

Deno.test("architecture: a 32-bit ARM userland and a wrong-arch binary are refused, nothing written", async () => {
  await withRoot(piTree(), async (root) => {
    const before = await snapshot(root);
    const aarch64 = await Deno.makeTempFile({ dir: SCRATCH });
    await Deno.writeFile(aarch64, elfHeader(2, 0xb7));
    const r = await install(root, ["--binary", aarch64, "--user", "pi"]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /is aarch64, but this system needs x86_64: use panda-breath-x86_64-linux/,
    );
    const notElf = await install(root, ["--binary", await fakeBinary(), "--user", "pi"]);
    assert.match(notElf.stderr, /is not an ELF executable/);
    await Deno.mkdir(`${root}/bin`);
    await Deno.writeFile(`${root}/bin/sh`, elfHeader(1, 0x28)); // armhf userland
    const arm = await install(root, ["--binary", aarch64, "--user", "pi"]);
    assert.equal(arm.code, 1);
    assert.match(
      arm.stderr,
      /userland is 32-bit ARM \(armhf\): panda-breath runs on 64-bit systems only/,
    );
    await Deno.remove(`${root}/bin`, { recursive: true });
    assert.deepEqual(await snapshot(root), before);
  });
});

Deno.test("SHA256SUMS next to the binary is verified: a match installs, a mismatch is refused", async () => {
  await withRoot(piTree(), async (root) => {
    const dir = await Deno.makeTempDir();
    const bin = `${dir}/panda-breath-x86_64-linux`;
    await Deno.writeFile(bin, elfHeader(2, 0x3e)); // what install.sh reads of an x86_64 binary
    const sum = (await exec("sha256sum", [bin])).stdout.split(" ")[0];
    await Deno.writeTextFile(`${dir}/SHA256SUMS`, `${sum}  panda-breath-x86_64-linux\n`);
    const before = await snapshot(root);
    await Deno.writeTextFile(`${dir}/SHA256SUMS`, `${"0".repeat(64)}  panda-breath-x86_64-linux\n`);
    const bad = await install(root, ["--binary", bin, "--user", "pi"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /does not match its SHA-256 in .*SHA256SUMS: the download is damaged/);
    assert.deepEqual(await snapshot(root), before);
    await Deno.writeTextFile(`${dir}/SHA256SUMS`, `${sum}  panda-breath-x86_64-linux\n`);
    const good = ok(await install(root, ["--binary", bin, "--user", "pi", "--service", "none"]));
    assert.match(good.stdout, /checksum of panda-breath-x86_64-linux matches/);
    await Deno.remove(dir, { recursive: true });
  });
});

Deno.test("a socket outside /run, /var/run and /tmp is refused at install time with a product message", async () => {
  await withRoot(u1Tree({ firmware: "extended-1.6.0" }), async (root) => {
    const before = await snapshot(root);
    const r = await install(root, [
      "--binary",
      await fakeBinary(),
      "--force",
      "--socket",
      "/home/lava/pb.sock",
    ]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /socket: "\/home\/lava\/pb\.sock" in \/home\/lava\/printer_data\/config\/panda_bridge\.cfg is not allowed: the bridge may only create its socket under \/run, \/var\/run or \/tmp/,
    );
    assert.doesNotMatch(r.stderr, /allow-read|allow-write|--allow/);
    assert.deepEqual(await snapshot(root), before);
  });
});

// -------------------------------------------------------------- overlay (firmware builds)

Deno.test("--overlay: a firmware-build tree under the new names, seeded settings, idempotent, uninstall", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pb-overlay-" });
  try {
    const overlay = `${dir}/overlays/firmware-extended/70-panda-breath`;
    const bin = await Deno.makeTempFile({ dir: SCRATCH });
    await Deno.writeFile(bin, elfHeader(2, 0xb7));
    ok(
      await exec("/bin/sh", [
        INSTALL,
        "--overlay",
        overlay,
        "--binary",
        bin,
        "--host",
        "192.168.1.50",
      ]),
    );
    const tree = await snapshot(`${overlay}/root`);
    const files = [...tree.keys()].filter((p) => tree.get(p) !== "<dir>").sort();
    assert.deepEqual(files, [
      "/etc/hooks/klipper.d/panda-breath.sh",
      "/etc/init.d/S99panda-breath",
      "/etc/panda-breath/klipper/panda_bridge.cfg",
      "/home/lava/klipper/klippy/extras/panda_bridge.py",
      "/usr/local/bin/panda-breath",
      "/usr/local/lib/panda-breath/libexec/panda-breath-launch",
      "/usr/local/lib/panda-breath/libexec/panda-breath-supervise",
      "/usr/local/lib/panda-breath/manifest",
      "/usr/local/share/firmware-config/extended/klipper/panda_bridge_loader.cfg",
      "/usr/local/share/firmware-config/extended/panda_bridge.cfg",
    ]);
    assert.match(
      tree.get("/usr/local/share/firmware-config/extended/panda_bridge.cfg")!,
      /^host: 192\.168\.1\.50$/m,
    );
    assert.match(
      tree.get("/etc/panda-breath/klipper/panda_bridge.cfg")!,
      /\[include \/home\/lava\/printer_data\/config\/extended\/panda_bridge\.cfg\]/,
    );
    ok(await exec("/bin/sh", [INSTALL, "--overlay", overlay, "--binary", bin]));
    assert.deepEqual(await snapshot(`${overlay}/root`), tree);
    ok(await exec("/bin/sh", [INSTALL, "--overlay", overlay, "--uninstall"]));
    assert.ok(!await present(overlay, "/root"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(
  "--overlay flashed: S49extended-config's seeding gives a working config, never overwrites the user's, and a build without it still starts",
  { ignore: skipUnless("python3") },
  async () => {
    await withRoot(u1Tree({ firmware: "extended-1.6.0" }), async (root) => {
      const stock = await snapshot(root);
      const dir = await Deno.makeTempDir({ dir: SCRATCH, prefix: "overlay-" });
      const bin = `${dir}/panda-breath-aarch64-linux`;
      await Deno.writeFile(bin, elfHeader(2, 0xb7));
      ok(await exec("/bin/sh", [INSTALL, "--overlay", `${dir}/70-panda-breath`, "--binary", bin]));
      // Flash: the overlay's root/ becomes part of the image; then the first boot seeds.
      ok(await exec("cp", ["-a", `${dir}/70-panda-breath/root/.`, `${root}/`]), "flash");
      const flashed = await snapshot(root);
      const seeded = await seedExtended(root);
      const extSettings = `${PD}/config/extended/panda_bridge.cfg`;
      assert.deepEqual(seeded.sort(), [EXT_LOADER, extSettings]);
      let config = await klipperConfig(root);
      assert.equal(config.error, null);
      assert.deepEqual(config.files, [`${PD}/config/printer.cfg`, EXT_LOADER, ACTIVE, extSettings]);
      assert.ok(config.sections.includes("heater_generic panda_breath"));
      // The user sets host: in Mainsail; reboots (nothing of ours is in the upper layer) re-seed.
      const edited = (await read(root, extSettings)).replace(/^host: .*$/m, "host: 10.0.0.9");
      await Deno.writeTextFile(`${root}${extSettings}`, edited);
      assert.deepEqual(await overlayBoot(root, flashed, "reboot"), []);
      assert.deepEqual(await seedExtended(root), [`${extSettings}.default`]);
      assert.equal(
        await read(root, extSettings),
        edited,
        "the user's settings are never overwritten",
      );
      config = await klipperConfig(root);
      assert.equal(config.error, null);
      assert.ok(!config.files.some((f) => f.endsWith(".default")), "a .default is never included");
      assert.ok(config.sections.includes("heater_generic panda_breath"));
      // Flashing a build without panda-breath: our printer_data files stay, Klipper starts.
      for (const path of [...flashed.keys()].filter((p) => !stock.has(p) && !persistent(p))) {
        await Deno.remove(`${root}${path}`, { recursive: true }).catch(() => {});
      }
      await seedExtended(root);
      config = await klipperConfig(root);
      assert.equal(config.error, null);
      assert.deepEqual(config.files, [`${PD}/config/printer.cfg`, EXT_LOADER]);
      assert.ok(!config.sections.includes("heater_generic panda_breath"));
      assert.match(await read(root, EXT_LOADER), /panda-breath is not active/);
    });
  },
);

// -------------------------------------------------------------- BusyBox and the SysV service

Deno.test(
  `install.sh runs under BusyBox ash with BusyBox applets only (as on the U1)`,
  {
    ignore: skipUnless("busybox"),
  },
  async () => {
    const bb = await busyboxBin(BUSYBOX!);
    await withRoot(u1Tree({ firmware: "extended-1.6.0" }), async (root) => {
      const before = await snapshot(root);
      const bin = await fakeBinary();
      const env = { PATH: bb };
      ok(
        await install(
          root,
          ["--binary", bin, "--force", "--host", "192.168.1.50"],
          `${bb}/sh`,
          env,
        ),
      );
      const installed = await snapshot(root);
      ok(await install(root, ["--binary", bin, "--force"], `${bb}/sh`, env));
      assert.deepEqual(await snapshot(root), installed);
      ok(await install(root, ["--uninstall"], `${bb}/sh`, env));
      assert.deepEqual(await snapshot(root), before);
    });
  },
);

/** Runs the staged init script (BusyBox's start-stop-daemon when present, as on the U1). */
async function initScript(
  root: string,
  action: string,
  env: Record<string, string> = {},
): Promise<Result> {
  const bb = BUSYBOX ? await busyboxBin(BUSYBOX!) : null;
  return await exec(bb ? `${bb}/sh` : "/bin/sh", [`${root}${INIT}`, action], {
    PANDA_BREATH_ROOT: root,
    ...(bb ? { PATH: `${bb}:${Deno.env.get("PATH")}` } : {}),
    ...env,
  });
}

async function pidIn(root: string, path: string): Promise<number | null> {
  const text = await Deno.readTextFile(`${root}${path}`).catch(() => "");
  return /^\d+\s*$/.test(text) ? Number(text) : null;
}

Deno.test(
  `SysV: the supervisor restarts a kill -9'ed bridge, which turns the device OFF within 5 s; stop sends OFF`,
  {
    ignore: BUSYBOX ? false : skipUnless("start-stop-daemon"),
  },
  async () => {
    const sim = new Simulator({ telemetryIntervalMs: 100 });
    await sim.start();
    await withRoot(u1Tree({ firmware: "extended-1.6.0" }), async (root) => {
      try {
        // The "binary": the real bridge, run by Deno with the shipped permission set.
        const bin = await fakeBinary(
          `exec ${Deno.execPath()} run -P=bridge --config ${REPO}/deno.json ${REPO}/main.ts "$@"`,
        );
        ok(await installAs(root, bin, ME, `127.0.0.1:${sim.port}`));
        const start = ok(await initScript(root, "start"), "init start");
        assert.match(start.stdout, /Starting panda-breath: OK \(supervisor pid \d+\)/);
        const sock = `${root}/run/panda-breath/bridge.sock`;
        const mode = (await Deno.stat(`${root}/run/panda-breath`)).mode! & 0o777;
        assert.equal(mode, 0o750, "private runtime directory");
        await until(
          async () => (await Deno.stat(sock).catch(() => null)) !== null,
          15000,
          "the bridge's socket",
        );
        await until(() => sim.clientCount > 0, 10000, "the bridge to connect to the device");
        const first = (await pidIn(root, "/run/panda-breath/bridge.pid"))!;

        // Heat (the CLI is enough: the failsafe would need 10 s), then kill -9 the bridge.
        const cli = [
          Deno.execPath(),
          "run",
          "-P=bridge",
          "--config",
          `${REPO}/deno.json`,
          `${REPO}/main.ts`,
        ];
        ok(
          await exec(cli[0], [...cli.slice(1), "set", "40", "--socket", sock]),
          "panda-breath set 40",
        );
        await until(() => sim.state.work_on, 3000, "the device heating");
        Deno.kill(first, "SIGKILL");
        const killedAt = performance.now();
        await until(() => !sim.state.work_on, 5000, "the restarted bridge turning the device OFF");
        const offAfter = performance.now() - killedAt;
        console.log(`device OFF ${offAfter.toFixed(0)} ms after kill -9`);
        assert.ok(offAfter < 5000);
        const second = await pidIn(root, "/run/panda-breath/bridge.pid");
        assert.ok(second !== null && second !== first && alive(second), "a new bridge runs");
        const log = await read(root, LOG);
        assert.match(log, /supervisor: bridge killed by signal 9 after \d+ s; restarting in 1 s/);
        assert.match(
          (await initScript(root, "status")).stdout,
          /panda-breath is running \(bridge pid \d+/,
        );

        // stop: SIGTERM forwarded; the bridge turns the heater off and everything exits.
        await until(
          async () => (await Deno.stat(sock).catch(() => null)) !== null,
          15000,
          "the new socket",
        );
        await until(() => sim.clientCount > 0, 10000, "the new bridge to connect");
        ok(
          await exec(cli[0], [...cli.slice(1), "set", "40", "--socket", sock]),
          "panda-breath set 40",
        );
        await until(() => sim.state.work_on, 3000, "the device heating again");
        const supervisor = (await pidIn(root, "/var/run/panda-breath.pid"))!;
        const stop = ok(await initScript(root, "stop"), "init stop");
        assert.match(stop.stdout, /Stopping panda-breath: OK/);
        assert.equal(sim.state.work_on, false, "OFF before stop returned");
        assert.ok(!alive(second!) && !alive(supervisor), "bridge and supervisor exited");
        assert.match(
          await read(root, LOG),
          /heater off sent before exit[\s\S]*supervisor: stopped/,
        );
        assert.equal((await initScript(root, "status")).code, 3);
      } finally {
        await initScript(root, "stop");
        await sim.stop();
      }
    });
  },
);

Deno.test(
  `SysV: crash-loop backoff doubles up to 5 s, resets after a good run; unusable settings stop at once`,
  {
    ignore: BUSYBOX ? false : skipUnless("start-stop-daemon"),
  },
  async () => {
    await withRoot(u1Tree({ firmware: "extended-1.6.0" }), async (root) => {
      const runs = `${root}/runs`;
      // Each run notes when it started (uptime). Runs 1-4 die at once, run 5 lives 2.5 s
      // (a "good" run with RESET_AFTER=2), run 6 dies at once again.
      const bin = await fakeBinary(
        `read up _ </proc/uptime; echo "$up" >>${runs}; n=$(wc -l <${runs}); ` +
          `[ "$n" -ne 5 ] || sleep 2.5; exit 1`,
      );
      ok(await installAs(root, bin, ME, "192.168.1.50"));
      try {
        ok(await initScript(root, "start", { PANDA_BREATH_RESET_AFTER: "2" }), "init start");
        const restarts = async () => (await read(root, LOG)).match(/restarting in \d+ s/g) ?? [];
        await until(async () => (await restarts()).length >= 6, 40000, "six restarts");
        assert.deepEqual((await restarts()).slice(0, 6), [
          "restarting in 1 s",
          "restarting in 2 s",
          "restarting in 4 s",
          "restarting in 5 s", // the cap: a dead bridge is back within 5 s
          "restarting in 1 s", // after the 2.5 s run
          "restarting in 2 s",
        ]);
        // Measured: the gap from a run's death to the next start is the announced delay.
        await until(async () => (await read(root, "/runs")).split("\n").length >= 7, 5000, "run 6");
        const starts = (await read(root, "/runs")).trim().split("\n").map(Number);
        const gaps = starts.slice(1, 5).map((t, i) => t - starts[i]);
        console.log(`restart gaps (s): ${gaps.map((g) => g.toFixed(2)).join(", ")}`);
        [1, 2, 4, 5].forEach((want, i) => {
          assert.ok(gaps[i] >= want - 0.1 && gaps[i] <= want + 1, `gap ${i + 1}: ${gaps[i]} s`);
        });
        assert.ok(Math.max(...gaps) <= 6, "never more than 5 s (plus start-up) between runs");
        const t0 = performance.now();
        ok(await initScript(root, "stop"), "init stop during a backoff sleep");
        assert.ok(performance.now() - t0 < 3000, "stop does not wait out the backoff");
      } finally {
        await initScript(root, "stop");
      }
      // Unusable settings: the start fails and says why; nothing keeps retrying.
      await Deno.writeTextFile(
        `${root}${SETTINGS}`,
        (await read(root, SETTINGS)).replace(/^host: .*$/m, "host:"),
      );
      const r = await initScript(root, "start");
      assert.equal(r.code, 1);
      assert.match(r.stdout, /FAILED/);
      assert.match(r.stdout, /not starting: no device address: set "host: <address>"/);
      assert.equal((await initScript(root, "status")).code, 3);
    });
  },
);

/** Pids of processes whose command line contains `needle`. */
async function processesWith(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const cmdline = await Deno.readTextFile(`/proc/${entry.name}/cmdline`).catch(() => "");
    if (cmdline.replaceAll("\0", " ").includes(needle) && alive(Number(entry.name))) {
      pids.push(Number(entry.name));
    }
  }
  return pids;
}

Deno.test(
  "SysV: the hook's start and rc's start at the same moment give one supervisor and one bridge",
  {
    ignore: BUSYBOX ? false : skipUnless("start-stop-daemon"),
  },
  async () => {
    await withRoot(u1Tree({ firmware: "extended-1.6.0" }), async (root) => {
      const bin = await fakeBinary(`trap 'kill $! 2>/dev/null; exit 0' TERM; sleep 600 & wait`);
      ok(await installAs(root, bin, ME, "192.168.1.50"));
      try {
        // At boot S60klipper sources the hook (which starts us in the background), and rc
        // runs S99panda-breath start moments later: here all at once, three times over.
        const starts = await Promise.all([1, 2, 3].map(() => initScript(root, "start")));
        for (const r of starts) ok(r, "init start");
        assert.equal(
          starts.filter((r) => /Starting panda-breath: OK/.test(r.stdout)).length,
          1,
          starts.map((r) => r.stdout).join(""),
        );
        assert.equal(starts.filter((r) => /already running/.test(r.stdout)).length, 2);
        const supervisors = await processesWith(`${root}${PAYLOAD}/libexec/panda-breath-supervise`);
        assert.equal(supervisors.length, 1, `supervisors: ${supervisors}`);
        const installed = `${root}${PAYLOAD}/bin/panda-breath`; // what the launcher execs
        await until(async () => (await processesWith(installed)).length > 0, 5000, "the bridge");
        const bridges = await processesWith(installed);
        assert.equal(bridges.length, 1, `bridges: ${bridges}`);
        assert.ok(!await present(root, "/var/run/panda-breath.pid.lock"), "lock released");
      } finally {
        ok(await initScript(root, "stop"), "init stop");
      }
    });
  },
);
