// Numeric command-line options for the benches: a default when absent, a message naming the
// option, its bounds and the value when wrong.

export function numberArg(name: string, raw: string | undefined, fallback: number, min: number, max = Infinity): number {
  const v = raw === undefined ? fallback : raw.trim() === '' ? NaN : Number(raw);
  if (!Number.isFinite(v) || v < min || v > max) {
    throw new Error(`--${name} must be a number in [${min}, ${max}]; got ${JSON.stringify(raw)}`);
  }
  return v;
}

export function intArg(name: string, raw: string | undefined, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = numberArg(name, raw, fallback, min, max);
  if (!Number.isInteger(v)) throw new Error(`--${name} must be an integer in [${min}, ${max}]; got ${JSON.stringify(raw)}`);
  return v;
}
