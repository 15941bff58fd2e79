/** Order statistics for latency samples. */

/** Summary of a sample in its own unit. */
export interface Summary {
  n: number;
  min: number;
  mean: number;
  p50: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentile (`p` in 0..100) of an ascending-sorted array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** n, min, mean, p50, p99 and max of `values`. */
export function summarize(values: readonly number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b);
  const sum = sorted.reduce((total, value) => total + value, 0);
  return {
    n: sorted.length,
    min: sorted[0] ?? NaN,
    mean: sorted.length ? sum / sorted.length : NaN,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1] ?? NaN,
  };
}

/** Rounds every number of `summary` to `digits` decimals (for JSON). */
export function rounded<T extends object>(summary: T, digits = 3): T {
  const factor = 10 ** digits;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(summary)) {
    out[key] = typeof value === "number" ? Math.round(value * factor) / factor : value;
  }
  return out as T;
}
