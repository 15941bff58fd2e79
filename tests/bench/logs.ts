/**
 * Bench section `logs` (issue 12): log bytes while the device faults every
 * second (log_volume.ts); target ≤ 1 MB per day.
 */

import { NATIVE } from "./proc.ts";
import { type OwnRun, TARGET } from "./context.ts";
import { measureLogVolume } from "./log_volume.ts";
import { fmt } from "./report.ts";

/** Log volume under a fault every second. */
export const benchLogs: OwnRun = async (ctx): Promise<void> => {
  const section = "9 logs";
  const { report } = ctx;
  ctx.progress(`logs: the device faults every second for ${ctx.config.logS} s`);
  const v = await measureLogVolume(NATIVE, ctx.config.logS);
  report.result("logs", v);
  report.row(
    section,
    `log written in ${fmt(v.seconds, 0)} s, ${v.faults} faults`,
    `${v.bytes} bytes, ${v.lines} lines`,
  );
  report.check(
    section,
    `log per day under a fault every second${
      v.steady ? " (after the first minute)" : " (short run: overstated)"
    }`,
    `${fmt(v.steady_bytes_per_day / 1e6, 2)} MB/day (${
      fmt(v.steady_bytes_per_hour / 1e3, 1)
    } kB/hour)`,
    {
      name: "log_bytes_per_day_fault_every_s",
      value: v.steady_bytes_per_day,
      limit: TARGET.logBytesPerDay,
      unit: "bytes",
      text: "≤ 1 MB/day",
    },
  );
};
