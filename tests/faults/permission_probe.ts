/**
 * Run with the bridge's own flags (`deno run -P=bridge --config deno.json`):
 * tries everything the bridge must not be able to do, and a few things it
 * must, and prints one JSON line: {check: "allowed" | "denied" | "error: ..."}.
 *
 * Usage: permission_probe.ts OUTSIDE_DIR TMP_DIR TCP_PORT (OUTSIDE_DIR holds a deno.json and
 * lies outside the permitted socket directories)
 */
const [outside, tmp, port] = Deno.args;
const results: Record<string, string> = {};

async function probe(name: string, attempt: () => unknown): Promise<void> {
  try {
    await attempt();
    results[name] = "allowed";
  } catch (error) {
    const denied = error instanceof Deno.errors.NotCapable ||
      error instanceof Deno.errors.PermissionDenied ||
      /^Requires \w+ access/.test((error as Error).message);
    results[name] = denied
      ? "denied"
      : `error: ${(error as Error).name}: ${(error as Error).message.slice(0, 120)}`;
  }
}

// Must be denied.
await probe("read /etc/passwd", () => Deno.readTextFile("/etc/passwd"));
await probe("read /proc/self/environ", () => Deno.readFile("/proc/self/environ"));
await probe("read a file outside the set", () => Deno.readTextFile(`${outside}/deno.json`));
await probe("write outside the set", () => Deno.writeTextFile(`${outside}/probe.txt`, "x"));
await probe("unix socket outside the set", () => {
  Deno.listen({ transport: "unix", path: `${outside}/probe.sock` }).close();
});
await probe("write /etc", () => Deno.writeTextFile("/etc/pb-probe", "x"));
await probe("read HOME from env", () => Deno.env.get("HOME"));
await probe("read all env", () => Deno.env.toObject());
await probe("run a subprocess", () => new Deno.Command("true").output());
await probe("load a native library (ffi)", () => Deno.dlopen("libc.so.6", {}));
await probe("system info (sys)", () => Deno.hostname());
await probe("import code from a new host", () => import(`http://127.0.0.1:${port}/evil.ts`));

// Must be allowed: the socket directories and the network.
await probe("write /tmp", () => Deno.writeTextFile(`${tmp}/probe.txt`, "x"));
await probe("read /tmp", () => Deno.readTextFile(`${tmp}/probe.txt`));
await probe("unix socket in /tmp", () => {
  Deno.listen({ transport: "unix", path: `${tmp}/probe.sock` }).close();
});
await probe("connect to a TCP host", async () => {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
  conn.close();
});
await probe("listen on TCP", () => {
  Deno.listen({ hostname: "127.0.0.1", port: 0 }).close();
});

console.log(JSON.stringify(results));
