/**
 * Bench section `aarch64`: the footprint measure with an arm64 Deno under
 * qemu-aarch64 (emulated: only the bridge / bare-Deno ratios mean anything,
 * so nothing here is a target). Skipped, saying why, without qemu or the
 * arm64 Deno.
 */

import { type DenoRunner, warmCache } from "./proc.ts";
import type { OwnRun } from "./context.ts";
import { footprintRows, measureFootprint } from "./footprint.ts";

const ARM_SETTLE_S = 5;

/** The qemu-aarch64 runner, or why there is none. */
async function findArmRunner(): Promise<DenoRunner | string> {
  const deno = Deno.env.get("PB_BENCH_ARM_DENO") ?? "/tmp/arm64deno/package/deno";
  const sysroot = Deno.env.get("PB_BENCH_ARM_SYSROOT") ?? "/usr/aarch64-linux-gnu";
  const qemu = Deno.env.get("PB_BENCH_QEMU") ?? "qemu-aarch64";
  try {
    await Deno.stat(deno);
  } catch {
    return `no arm64 deno at ${deno} (cd /tmp/arm64deno && npm pack ` +
      `@deno/linux-arm64-glibc@${Deno.version.deno} && tar xzf *.tgz; or set PB_BENCH_ARM_DENO)`;
  }
  try {
    const out = await new Deno.Command(qemu, {
      args: ["-L", sysroot, deno, "--version"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      return `${qemu} cannot run ${deno}: ${new TextDecoder().decode(out.stderr).trim()}`;
    }
  } catch (error) {
    return `${qemu} is not available (${(error as Error).message})`;
  }
  return {
    label: "aarch64 under qemu-user, EMULATED",
    command: qemu,
    prefix: ["-L", sysroot, deno],
    env: { DENO_DIR: "/tmp/pb-bench-arm64-deno-dir" },
    startTimeoutMs: 120_000,
  };
}

/** Footprint under qemu-aarch64 (emulated). */
export const benchArm: OwnRun = async (ctx): Promise<void> => {
  const section = "7 aarch64 EMULATED";
  const runner = await findArmRunner();
  if (typeof runner === "string") {
    ctx.progress(`aarch64: skipped: ${runner}`);
    ctx.report.result("aarch64", { skipped: runner });
    ctx.report.row(section, "footprint under qemu-aarch64", `SKIPPED: ${runner}`);
    return;
  }
  ctx.progress(
    `aarch64 (emulated): bridge and bare Deno under qemu, ${ctx.config.armS} s at 2 Hz`,
  );
  await warmCache(runner);
  const f = await measureFootprint(ctx, runner, ctx.config.armS, ARM_SETTLE_S);
  ctx.report.result("aarch64", {
    ...f,
    note: "qemu-user emulation on x86_64: RSS includes qemu and its translated-code cache; " +
      "CPU and latency are inflated by emulation; compare only the bridge/bare-Deno ratios",
  });
  footprintRows(ctx.report, section, f, ARM_SETTLE_S, true);
};
