/**
 * Bench section `klipper`: CPU the Klipper extra spends per message in the
 * stand-in reactor (klipper_cost.py), on a status captured from the real
 * bridge when an earlier measure ran one (target ≤ 50 µs per message).
 */

import { type OwnRun, TARGET } from "./context.ts";
import { fmt } from "./report.ts";

const KLIPPER_COST = new URL("./klipper_cost.py", import.meta.url).pathname;

interface PyTiming {
  n: number;
  p50_us: number;
  p99_us: number;
  mean_us: number;
  cpu_mean_us: number;
}

/** Klipper-side cost of the extra. */
export const benchKlipper: OwnRun = async (ctx): Promise<void> => {
  const section = "6 klipper extra";
  const { report, sampleStatus } = ctx;
  const python = Deno.env.get("PYTHON") ?? "python3";
  ctx.progress(
    `Klipper extra: ${ctx.config.pythonIterations} iterations in the stand-in reactor`,
  );
  const args = [KLIPPER_COST, "--iterations", String(ctx.config.pythonIterations)];
  let statusFile: string | undefined;
  if (sampleStatus !== null) {
    statusFile = await Deno.makeTempFile({ prefix: "pb-bench-status-", suffix: ".json" });
    await Deno.writeTextFile(statusFile, JSON.stringify(sampleStatus));
    args.push("--status-file", statusFile);
  }
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(python, { args, stdout: "piped", stderr: "piped" }).output();
  } catch (error) {
    report.row(
      section,
      "Klipper-side cost",
      `SKIPPED: cannot run ${python}: ${(error as Error).message}`,
    );
    report.result("klipper", { skipped: `cannot run ${python}` });
    return;
  } finally {
    if (statusFile) await Deno.remove(statusFile).catch(() => {});
  }
  if (!out.success) {
    throw new Error(`klipper_cost.py failed:\n${new TextDecoder().decode(out.stderr)}`);
  }
  const r = JSON.parse(new TextDecoder().decode(out.stdout));
  r.status_source = sampleStatus !== null ? "captured from the real bridge" : "fake_bridge.py";
  report.result("klipper", r);
  const t = (x: PyTiming) =>
    `${fmt(x.cpu_mean_us, 1)} µs CPU (wall p50 ${fmt(x.p50_us, 1)} / p99 ${fmt(x.p99_us, 1)} µs)`;
  const limit = (name: string, value: number) => ({
    name,
    value,
    limit: TARGET.extraUsPerMessage,
    unit: "µs",
    text: `≤ ${TARGET.extraUsPerMessage} µs/message`,
  });
  report.check(
    section,
    `status notification (telemetry), Python ${r.python}`,
    t(r.telemetry),
    limit("extra_us_per_telemetry", r.telemetry.cpu_mean_us),
  );
  report.check(
    section,
    "target change: set_temp → request sent",
    t(r.target_send),
    limit("extra_us_per_target_request", r.target_send.cpu_mean_us),
  );
  report.check(
    section,
    "target change: reply handled",
    t(r.target_reply),
    limit("extra_us_per_target_reply", r.target_reply.cpu_mean_us),
  );
  report.row(
    section,
    "whole target change (request + reply + status)",
    `${fmt(r.target_change_total_cpu_us, 1)} µs CPU`,
  );
  report.row(
    section,
    "heartbeat (timer + reply) / get_status",
    `${fmt(r.heartbeat_send.cpu_mean_us + r.heartbeat_reply.cpu_mean_us, 1)} µs / ${
      fmt(r.get_status.cpu_mean_us, 1)
    } µs CPU`,
  );
  report.row(
    section,
    "steady state (2 status/s + 1 heartbeat/s)",
    `${fmt(r.steady_cpu_us_per_s, 0)} µs/s = ${fmt(r.steady_cpu_percent, 4)} % of a core`,
  );
};
