// Summaries for timings taken side by side: medians with their spread, never means of noisy runs.

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** [min, max] of the samples a median came from. */
export function spread(xs: readonly number[]): [number, number] {
  return [Math.min(...xs), Math.max(...xs)];
}

/** Milliseconds of one awaited call. */
export async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = process.hrtime.bigint();
  const out = await fn();
  return [Number(process.hrtime.bigint() - t0) / 1e6, out];
}

/** Nearest-rank percentile (p in [0, 100]) of raw samples; NaN for none. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))]!;
}

/** A measurement repeated side by side: its median, the [min, max] spread, and every repeat. */
export interface Summary { median: number; spread: [number, number]; samples: number[] }

export function summarize(xs: readonly number[]): Summary {
  return xs.length === 0 ? { median: NaN, spread: [NaN, NaN], samples: [] } : { median: median(xs), spread: spread(xs), samples: [...xs] };
}

/** "12.3 [11.9-13.0]": a summary for a table cell. */
export function fmt(s: Summary, digits = 1): string {
  if (!Number.isFinite(s.median)) return 'n/a';
  if (s.samples.length < 2) return s.median.toFixed(digits);
  return `${s.median.toFixed(digits)} [${s.spread[0].toFixed(digits)}-${s.spread[1].toFixed(digits)}]`;
}

/** How a timing table was measured: "1 thread, median of 5". */
export function timingSettings(threads: number, repeats: number): string {
  return `${threads} thread${threads === 1 ? '' : 's'}, median of ${repeats}`;
}
