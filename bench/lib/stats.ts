// Summaries of repeated measurements: the median, and the spread around it.

export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
  p25: number;
  p75: number;
  /** (max − min) / median, in percent: how far apart the repetitions were. */
  spreadPct: number;
  samples: number[];
}

/** Linear-interpolated percentile (0–100) of an ascending array. */
function percentile(sorted: ArrayLike<number>, p: number): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  if (n === 1) return sorted[0];
  const rank = (p / 100) * (n - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

export function summarize(samples: number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const median = percentile(sorted, 50);
  const min = sorted[0] ?? Number.NaN;
  const max = sorted[sorted.length - 1] ?? Number.NaN;
  return {
    n: sorted.length,
    median,
    min,
    max,
    p25: percentile(sorted, 25),
    p75: percentile(sorted, 75),
    spreadPct: median === 0 ? 0 : ((max - min) / Math.abs(median)) * 100,
    samples: samples.map((x) => round(x)),
  };
}

export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** p50 and p99 of a large sample, sorted in place (a Float64Array sorts numerically). */
export function latencyPercentiles(values: Float64Array): { p50: number; p99: number; max: number } {
  values.sort();
  return { p50: percentile(values, 50), p99: percentile(values, 99), max: values[values.length - 1] ?? Number.NaN };
}
