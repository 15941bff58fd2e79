/**
 * What a bench run found: the table's rows, the targets with met / not met,
 * and each measure's figures for results.json; and how numbers are shown.
 */

import type { Summary } from "./stats.ts";

/** One line of the printed table. */
export interface Row {
  /** The measure's table section, e.g. "1 command". */
  section: string;
  /** What was measured. */
  metric: string;
  /** The figure as shown. */
  value: string;
  /** The target as shown (rows with a target only). */
  target?: string;
  /** Whether the target was met (rows with a target only). */
  met?: boolean;
}

/** A target as results.json records it. */
export interface Check {
  /** Stable name (results.json `targets[].name`). */
  name: string;
  /** The measured value, rounded to 3 decimals. */
  value: number;
  /** Met when `value` ≤ `limit`. */
  limit: number;
  /** Unit of `value` and `limit`. */
  unit: string;
  /** `value` ≤ `limit`. */
  met: boolean;
}

/** A target to check: a measured value against its limit. */
export interface Target {
  /** Stable name (results.json `targets[].name`). */
  name: string;
  /** The measured value (unrounded). */
  value: number;
  /** Met when `value` ≤ `limit`. */
  limit: number;
  /** Unit of `value` and `limit`. */
  unit: string;
  /** The target as shown in the table, e.g. "p99 ≤ 5 ms". */
  text: string;
}

/** Collects rows, checks and per-measure results as the measures run. */
export class Report {
  /** The table, in the order the measures added to it. */
  readonly rows: Row[] = [];
  /** Every target checked, in order. */
  readonly checks: Check[] = [];
  /** Each measure's figures under its key (e.g. `command`). */
  readonly results: Record<string, unknown> = {};

  /** Adds a row without a target. */
  row(section: string, metric: string, value: string): void {
    this.rows.push({ section, metric, value });
  }

  /** Adds a row with a target, and the target to `checks`. */
  check(section: string, metric: string, value: string, target: Target): void {
    const met = target.value <= target.limit;
    this.rows.push({ section, metric, value, target: target.text, met });
    this.checks.push({
      name: target.name,
      value: Math.round(target.value * 1000) / 1000,
      limit: target.limit,
      unit: target.unit,
      met,
    });
  }

  /** Records a measure's figures under `key`. */
  result(key: string, value: unknown): void {
    this.results[key] = value;
  }

  /** Names of the targets not met. */
  missed(): string[] {
    return this.checks.filter((c) => !c.met).map((c) => c.name);
  }
}

/** `value` with `digits` decimals, "n/a" when it is not finite. */
export function fmt(value: number, digits = 2): string {
  if (!Number.isFinite(value)) return "n/a";
  return value.toFixed(digits);
}

/** "p50 … / p99 … / max … ms" of a summary. */
export function latencyText(s: Summary, unit = "ms", digits = 2): string {
  return `p50 ${fmt(s.p50, digits)} / p99 ${fmt(s.p99, digits)} / max ${
    fmt(s.max, digits)
  } ${unit}`;
}

/** KiB as "12.3 MiB". */
export function mib(kb: number): string {
  return `${fmt(kb / 1024, 1)} MiB`;
}

/**
 * The table as printed: a header naming the machine, then one line per row,
 * columns padded, the section shown only where it changes.
 */
export function formatTable(rows: readonly Row[], machine: Record<string, unknown>): string[] {
  const header = ["section", "metric", "value", "target", "result"];
  const body = rows.map((r) => [
    r.section,
    r.metric,
    r.value,
    r.target ?? "",
    r.met === undefined ? "" : r.met ? "met" : "MISSED",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  const lines = [
    `panda-breath benchmarks — ${machine.cpu_model}, ${machine.cores} cores, Linux ${machine.kernel}, ` +
    `Deno ${machine.deno}, ${machine.date}`,
    line(header),
    line(widths.map((w) => "-".repeat(w))),
  ];
  let previous = "";
  for (const cells of body) {
    lines.push(line(cells[0] === previous ? ["", ...cells.slice(1)] : cells));
    previous = cells[0];
  }
  return lines;
}
