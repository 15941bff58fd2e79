/**
 * Defaults that files outside TypeScript must spell again (the Klipper extra,
 * its config fragment, the service launcher, install.sh) agree with their one
 * definition in lib/.
 */
import assert from "node:assert/strict";
import { DEFAULT_SOCKET_MODE } from "../lib/api_server.ts";
import { CORE_DEFAULTS, HEAT_MODES } from "../lib/core.ts";
import { DEFAULT_SOCKET_PATH, MAX_SOCKET_PATH_BYTES, SOCKET_DIRECTORIES } from "../lib/options.ts";
import { DRYING_LEASE_MAX_HOURS, WORK_MODE_NAMES } from "../lib/protocol.ts";
import { API_PROTOCOL_VERSION } from "../lib/version.ts";

const root = new URL("../", import.meta.url);
const read = (path: string) => Deno.readTextFileSync(new URL(path, root));

/** The Klipper extra's Python sources, concatenated (its constants may live in any of them). */
function extraSource(): string {
  return [...Deno.readDirSync(new URL("klipper/", root))]
    .filter((entry) => entry.isFile && entry.name.endsWith(".py"))
    .map((entry) => read(`klipper/${entry.name}`))
    .join("\n");
}

/** The right-hand side of the module-level Python assignment `NAME = ...`. */
function pythonConstant(source: string, name: string): string {
  const match = source.match(new RegExp(`^${name} = (.+)$`, "m"));
  assert.ok(match, `klipper/*.py defines no ${name}`);
  return match[1].replace(/\s+#.*$/, "").trim();
}

const quoted = (text: string) =>
  [...text.matchAll(/'([^']*)'|"([^"]*)"/g)].map((m) => m[1] ?? m[2]);

Deno.test("defaults: every socket path outside lib/ is the default socket", () => {
  const socketPath = /\/(?:var\/)?(?:run|tmp)\/[\w.\/-]*\.sock\b/g;
  for (
    const path of [
      "klipper/panda_bridge.py",
      "klipper/panda_bridge.cfg",
      "klipper/service/panda-breath-launch",
      "install.sh",
    ]
  ) {
    const found = read(path).match(socketPath) ?? [];
    assert.ok(found.length > 0, `${path} names no socket path`);
    for (const socket of found) assert.equal(socket, DEFAULT_SOCKET_PATH, path);
  }
});

Deno.test("defaults: the Klipper extra checks sockets and speaks the protocol as the bridge", () => {
  const source = extraSource();
  assert.equal(quoted(pythonConstant(source, "DEFAULT_SOCKET"))[0], DEFAULT_SOCKET_PATH);
  assert.equal(Number(pythonConstant(source, "MAX_SOCKET_PATH")), MAX_SOCKET_PATH_BYTES);
  assert.deepEqual(
    [...quoted(pythonConstant(source, "SOCKET_DIRS"))].sort(),
    [...SOCKET_DIRECTORIES].sort(),
  );
  assert.equal(Number(pythonConstant(source, "API_PROTOCOL")), API_PROTOCOL_VERSION);
  assert.deepEqual(quoted(pythonConstant(source, "HEAT_MODES")), [...HEAT_MODES]);
  const workModes = pythonConstant(source, "WORK_MODES");
  assert.deepEqual(
    Object.fromEntries([...workModes.matchAll(/(\d+): '([^']*)'/g)].map((m) => [m[1], m[2]])),
    { ...WORK_MODE_NAMES },
  );
});

Deno.test("defaults: heat_mode and lease_hours in printer.cfg (extra, fragment, launcher) default as the bridge's flags", () => {
  const source = extraSource();
  const heatMode = source.match(/'heat_mode',[^)]*?'([\w-]+)'\)/);
  assert.ok(heatMode, "the extra reads heat_mode with a default");
  assert.equal(heatMode[1], CORE_DEFAULTS.heatMode);
  const lease = source.match(/getint\(\s*'lease_hours',\s*(\d+),\s*minval=1,\s*maxval=(\d+)\)/);
  assert.ok(lease, "the extra reads lease_hours with a default and bounds");
  assert.equal(Number(lease[1]), CORE_DEFAULTS.leaseHours);
  assert.equal(Number(lease[2]), DRYING_LEASE_MAX_HOURS);
  const fragment = read("klipper/panda_bridge.cfg");
  assert.match(fragment, new RegExp(`^#heat_mode: ${CORE_DEFAULTS.heatMode}$`, "m"));
  assert.match(fragment, new RegExp(`^#lease_hours: ${CORE_DEFAULTS.leaseHours}$`, "m"));
  const launcher = read("klipper/service/panda-breath-launch");
  assert.match(launcher, new RegExp(`\\|\\| HEAT_MODE=${CORE_DEFAULTS.heatMode}\\n`));
});

Deno.test("defaults: the README states the bridge's defaults", () => {
  // Whitespace and table padding collapsed, so wrapped lines and table rows read as one line.
  const readme = read("README.md").replace(/\s+/g, " ").replace(/ ?\| ?/g, "|");
  const c = CORE_DEFAULTS;
  for (
    const text of [
      `\`--heat-mode always-on|drying-lease\` (default \`${c.heatMode}\`)`,
      `(whole hours 1–${DRYING_LEASE_MAX_HOURS}, default ${c.leaseHours};`,
      `\`--lease-hours\` (default ${c.leaseHours} h)`,
      `\`--readback-interval S\` (default ${c.readbackIntervalMs / 1000},`,
      `Every \`--readback-interval\` seconds (default ${c.readbackIntervalMs / 1000})`,
      `\`--failsafe-timeout\` (default ${c.failsafeTimeoutMs / 1000} s)`,
      `\`--socket\` (default \`${DEFAULT_SOCKET_PATH}\`)`,
      `(\`--socket\`, default \`${DEFAULT_SOCKET_PATH}\`)`,
      `(default \`${DEFAULT_SOCKET_PATH}\`, mode 0${DEFAULT_SOCKET_MODE.toString(8)})`,
      `|\`socket\`|\`${DEFAULT_SOCKET_PATH}\`|`,
      `|\`heat_mode\`|\`${c.heatMode}\`|`,
      `|\`lease_hours\`|\`${c.leaseHours}\`|`,
    ]
  ) {
    assert.ok(readme.includes(text.replace(/ ?\| ?/g, "|")), `README lacks: ${text}`);
  }
});
