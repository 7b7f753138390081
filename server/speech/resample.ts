// Band-limited resampling with a windowed-sinc (Kaiser-windowed) interpolator. Each output sample
// is a weighted sum of the input samples within `zeros` zero crossings of the sinc around its
// position. The sinc's cutoff is the lower of the two Nyquist frequencies (times a roll-off), so
// downsampling first removes what the new rate cannot hold instead of folding it into speech.

/** Zero crossings each side of the kernel, at the lower of the two rates: quality vs. cost. */
const ZEROS = 16;
/** Cutoff as a fraction of the lower Nyquist frequency: leaves room for the transition band. */
const ROLLOFF = 0.94;
/** Kaiser window shape: about 80 dB of stop-band attenuation. */
const BETA = 8.0;
/** Sub-sample positions of the precomputed kernel table, per zero crossing. */
const TABLE_STEPS = 512;

function besselI0(x: number): number {
  let sum = 1;
  let term = 1;
  for (let k = 1; k < 50; k++) {
    term *= (x / (2 * k)) ** 2;
    sum += term;
    if (term < 1e-12 * sum) break;
  }
  return sum;
}

/** Kernel values at distances 0, 1/TABLE_STEPS, ... ZEROS, in zero crossings of the cutoff sinc. */
function kernelTable(): Float64Array {
  const n = ZEROS * TABLE_STEPS + 2;
  const table = new Float64Array(n);
  const norm = besselI0(BETA);
  for (let i = 0; i < n; i++) {
    const x = i / TABLE_STEPS;
    const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
    const r = x / ZEROS;
    table[i] = r >= 1 ? 0 : sinc * besselI0(BETA * Math.sqrt(1 - r * r)) / norm;
  }
  return table;
}

let TABLE: Float64Array | undefined;

/** Resamples mono float audio from `from` Hz to `to` Hz; the output has round(length * to / from) samples. */
export function resample(input: Float32Array, from: number, to: number): Float32Array {
  if (!(from > 0 && to > 0)) throw new RangeError(`sample rates must be positive; got ${from} -> ${to}`);
  if (from === to) return input.slice();
  const table = (TABLE ??= kernelTable());
  const ratio = to / from;
  // Cutoff in cycles per input sample; the sinc's zero crossings are 1 / (2 * cutoff) input samples apart.
  const cutoff = 0.5 * Math.min(1, ratio) * ROLLOFF;
  const crossing = 2 * cutoff; // zero crossings per input sample
  const half = ZEROS / crossing; // kernel half-width in input samples
  const gain = crossing; // unit DC gain
  const length = Math.round(input.length * ratio);
  const out = new Float32Array(length);
  for (let n = 0; n < length; n++) {
    const t = n / ratio; // position in input samples
    const first = Math.max(0, Math.ceil(t - half));
    const last = Math.min(input.length - 1, Math.floor(t + half));
    let acc = 0;
    for (let k = first; k <= last; k++) {
      const pos = Math.abs(t - k) * crossing * TABLE_STEPS;
      const i = Math.floor(pos);
      const frac = pos - i;
      const w = (table[i] ?? 0) * (1 - frac) + (table[i + 1] ?? 0) * frac;
      acc += (input[k] ?? 0) * w;
    }
    out[n] = acc * gain;
  }
  return out;
}
