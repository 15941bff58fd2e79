/**
 * The bridge as `panda-breath run` wires it (Bridge, ApiServer, Logger at
 * info on stderr), but with a fast reconnect backoff (2–10 ms instead of
 * 125 ms–5 s) so that a benchmark or soak can drive thousands of reconnects
 * in a minute. Test-only: production defaults are untouched.
 *
 * Usage: deno run -P=bridge reconnect_bridge.ts --host HOST:PORT --socket PATH [--log-level L]
 * `--once` exits at once (cache warm-up).
 */
import { ApiServer } from "../../lib/api_server.ts";
import { Bridge } from "../../lib/bridge.ts";
import { Logger, type LogLevel } from "../../lib/log.ts";

if (Deno.args.includes("--once")) Deno.exit(0);

function arg(name: string): string {
  const index = Deno.args.indexOf(name);
  if (index === -1 || index + 1 >= Deno.args.length) throw new Error(`missing ${name}`);
  return Deno.args[index + 1];
}

const levelAt = Deno.args.indexOf("--log-level");
const logger = new Logger(levelAt === -1 ? "info" : Deno.args[levelAt + 1] as LogLevel);
const bridge = new Bridge({
  url: `ws://${arg("--host")}/ws`,
  logger,
  failsafeTimeoutMs: 600_000,
  backoff: { initialMs: 4, maxMs: 20, factor: 2 },
});
await ApiServer.listen({ path: arg("--socket"), bridge, logger });
bridge.start();
console.log("reconnect bridge ready");
