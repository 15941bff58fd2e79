/**
 * Reconnect soak (opt-in: PANDA_BRIDGE_SOAK=1, about a minute): the bridge's
 * real link, core and timers through 5000 reconnects to a device that drops
 * every connection, beside a bare Deno WebSocket client doing the same
 * (tests/bench/reconnect_memory.ts, the bench's section `memory`). What the
 * program retains must level off: the JS heap after a full GC and the open
 * fds. RSS is printed next to bare Deno's: its growth is native memory of
 * the runtime's WebSocket and allocator, which the JS heap does not hold.
 */
import assert from "node:assert/strict";
import { measureReconnectMemory } from "../bench/reconnect_memory.ts";
import { SOAK } from "./harness.ts";

Deno.test({
  name: "reconnect soak: 5000 reconnects, heap and fds level off",
  ignore: !SOAK,
  async fn() {
    const m = await measureReconnectMemory([0, 500, 2500, 5000]);
    const at = (marks: typeof m.bridge, n: number) => marks.find((x) => x.reconnects === n)!;
    for (const [name, marks] of [["bridge", m.bridge], ["bare Deno", m.bare]] as const) {
      console.log(
        `${name}: ` +
          marks.map((x) => `${x.reconnects}: RSS ${x.rss_kb} kB heap ${x.heap_kb} kB fds ${x.fds}`)
            .join("; "),
      );
    }
    const [b500, b2500, b5000] = [500, 2500, 5000].map((n) => at(m.bridge, n));
    assert.ok(b5000.heap_kb / b2500.heap_kb <= 1.02, "heap levels off in the second half");
    assert.ok(b5000.heap_kb / b500.heap_kb <= 1.05, "heap after 5000 within 5 % of after 500");
    assert.ok(b5000.fds - b500.fds <= 1, `fds ${b500.fds} -> ${b5000.fds}`);
    console.log(`took ${m.seconds} s`);
  },
});
