/**
 * Bench section `memory` (issue 12): what each reconnect leaves behind. The
 * bridge and a bare Deno process do the same WebSocket churn against devices
 * that close every connection after a few frames (reconnect_memory.ts).
 * Targets: RSS and heap after the last mark ≤ 1.02× after the first, fds flat;
 * where the runtime's own RSS grows, the plateau (last mark ≤ 1.02× the one
 * halfway) and the bridge's growth beyond a bare Deno's (≤ 2 % of its RSS).
 */

import { type OwnRun, TARGET } from "./context.ts";
import {
  growthBeyondRuntimeKiB,
  measureReconnectMemory,
  type MemorySample,
} from "./reconnect_memory.ts";

/** Memory through reconnects, beside a bare Deno. */
export const benchMemory: OwnRun = async (ctx): Promise<void> => {
  const section = "8 memory";
  const { report } = ctx;
  const last = ctx.config.reconnects;
  const first = Math.max(1, Math.round(last / 10));
  ctx.progress(`memory: bridge and bare Deno through ${last} reconnects side by side`);
  const m = await measureReconnectMemory([first, last], (line) => ctx.progress(line));
  const [b0, b1, b2] = m.bridge;
  const [f0, f1, f2] = m.floor;
  const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;
  const heap = (bytes: number) => `${(bytes / 1048576).toFixed(2)} MiB`;
  const at = (s: MemorySample, f: MemorySample) =>
    `RSS ${mib(s.rssKiB)} (${(s.rssKiB / b0.rssKiB).toFixed(3)}× start, ` +
    `${(s.rssKiB / f.rssKiB).toFixed(3)}× bare ${mib(f.rssKiB)}), heap ${heap(s.heapBytes)} ` +
    `(${(s.heapBytes / b0.heapBytes).toFixed(3)}× start, ${
      (s.heapBytes / f.heapBytes).toFixed(3)
    }× bare), fds ${s.fds}`;
  report.row(section, "start", at(b0, f0));
  report.row(section, `after ${first} reconnects`, at(b1, f1));
  report.row(section, `after ${last} reconnects`, at(b2, f2));
  const rssRatio = b2.rssKiB / b1.rssKiB;
  const floorRssRatio = f2.rssKiB / f1.rssKiB;
  const heapRatio = b2.heapBytes / b1.heapBytes;
  const beyondKiB = growthBeyondRuntimeKiB(b1, b2, f1, f2);
  report.check(section, `RSS after ${last} / after ${first}`, rssRatio.toFixed(3), {
    name: "reconnect_rss_ratio",
    value: rssRatio,
    limit: TARGET.memoryGrowthRatio,
    unit: "×",
    text: `≤ ${TARGET.memoryGrowthRatio}×`,
  });
  report.row(
    section,
    `bare Deno RSS after ${last} / after ${first}`,
    `${floorRssRatio.toFixed(3)} (the runtime's own; bridge beyond it: ${
      (beyondKiB * 1024 / (last - first)).toFixed(0)
    } B per reconnect)`,
  );
  const bridgeAll = m.all.bridge;
  const floorAll = m.all.floor;
  report.row(
    section,
    `RSS at ${bridgeAll.map((s) => s.reconnects).join(" / ")} reconnects`,
    `bridge ${bridgeAll.map((s) => mib(s.rssKiB)).join(" / ")}; bare Deno ${
      floorAll.map((s) => mib(s.rssKiB)).join(" / ")
    }`,
  );
  if (bridgeAll.length >= 4) {
    const half = bridgeAll.at(-2)!;
    const plateau = b2.rssKiB / half.rssKiB;
    report.check(
      section,
      `RSS after ${last} / after ${half.reconnects} (the plateau)`,
      plateau.toFixed(3),
      {
        name: "reconnect_rss_plateau_ratio",
        value: plateau,
        limit: TARGET.memoryGrowthRatio,
        unit: "×",
        text: `≤ ${TARGET.memoryGrowthRatio}×`,
      },
    );
  }
  const beyondRuntime = beyondKiB / b1.rssKiB;
  report.check(
    section,
    `bridge's RSS growth ${first}→${last} beyond bare Deno's`,
    `${(beyondRuntime * 100).toFixed(1)} % of its RSS`,
    {
      name: "reconnect_rss_beyond_runtime",
      value: beyondRuntime,
      limit: TARGET.memoryGrowthRatio - 1,
      unit: "ratio",
      text: `≤ ${((TARGET.memoryGrowthRatio - 1) * 100).toFixed(0)} %`,
    },
  );
  report.check(section, `heap after GC, ${last} / ${first}`, heapRatio.toFixed(3), {
    name: "reconnect_heap_ratio",
    value: heapRatio,
    limit: TARGET.memoryGrowthRatio,
    unit: "×",
    text: `≤ ${TARGET.memoryGrowthRatio}×`,
  });
  report.check(section, `fds after ${last} − after ${first}`, `${b1.fds} → ${b2.fds}`, {
    name: "reconnect_fd_growth",
    value: b2.fds - b1.fds,
    limit: TARGET.fdGrowth,
    unit: "fds",
    text: `flat (≤ +${TARGET.fdGrowth})`,
  });
  report.result("memory", {
    how: "device closes every connection 5 ms after its connect frame and 3 temperature " +
      "frames; bridge = Bridge+ApiServer+Logger with a 4-20 ms backoff; heap after 2 full GCs",
    bridge: m.bridge,
    bare_deno: m.floor,
    all: { bridge: bridgeAll, bare_deno: floorAll },
  });
};
