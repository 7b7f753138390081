// Cuts audio into the model's windows (models/BUNDLE.md "Speech"): chunk c is recognised from
// samples [c*chunk - left, (c+1)*chunk + lookahead), zeros standing in before the start and after
// the end. A stream pushes audio as it arrives and takes each window as soon as its last sample is
// in; a whole file is pushed at once and finished. Both produce the same windows, so a streamed
// transcript equals the whole-file transcript.
import type { AudioContract } from './manifest.js';

export class WindowCutter {
  /** Samples from global index `start` on; what no future window needs is dropped. */
  private buffer = new Float32Array(0);
  private start = 0;
  private total = 0;
  private nextChunk = 0;

  constructor(private readonly a: AudioContract) {}

  /** Samples received so far. */
  get samples(): number {
    return this.total;
  }

  /** Chunks already cut. */
  get chunks(): number {
    return this.nextChunk;
  }

  push(samples: Float32Array): void {
    if (samples.length === 0) return;
    const keep = this.buffer.length;
    const grown = new Float32Array(keep + samples.length);
    grown.set(this.buffer);
    grown.set(samples, keep);
    this.buffer = grown;
    this.total += samples.length;
  }

  /**
   * Windows whose audio is complete. With `final`, also the windows of the last, partial chunk,
   * padded with zeros (no more audio will come).
   */
  take(final: boolean): Float32Array[] {
    const { chunk_samples: C, lookahead_samples: look } = this.a;
    const out: Float32Array[] = [];
    const lastChunk = final ? Math.ceil(this.total / C) : Math.floor((this.total - look) / C);
    while (this.nextChunk < lastChunk) out.push(this.window(this.nextChunk++));
    this.trim();
    return out;
  }

  private window(c: number): Float32Array {
    const { chunk_samples: C, left_context_samples: L, window_samples: W } = this.a;
    const out = new Float32Array(W);
    const from = c * C - L;
    const lo = Math.max(from, this.start);
    const hi = Math.min(from + W, this.total);
    if (hi > lo) out.set(this.buffer.subarray(lo - this.start, hi - this.start), lo - from);
    return out;
  }

  /** Drops the samples before the next window's left context. */
  private trim(): void {
    const keepFrom = Math.max(0, this.nextChunk * this.a.chunk_samples - this.a.left_context_samples);
    if (keepFrom <= this.start) return;
    this.buffer = this.buffer.slice(Math.min(keepFrom - this.start, this.buffer.length));
    this.start = keepFrom;
  }
}
