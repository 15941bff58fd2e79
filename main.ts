/**
 * panda-breath: makes a BIQU Panda Breath chamber heater a first-class
 * heater in Klipper. The entry point of the CLI and the compiled binary.
 */
import { main } from "./lib/cli.ts";

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
