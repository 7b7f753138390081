// Compute accounting of a speech request (models/BUNDLE.md "Speech"): every window the model ran
// counts, its left-context frames included, because that work was done for this request. The
// per-frame values cover the frames the request kept (one per frame_ms of its audio).
import { layoutFloor } from '../manifest-fields.js';
import type { SpeechManifest } from './manifest.js';

export interface SpeechComputeReport {
  budget: number;
  /** Fraction of learner compute executed over every window run: sum k*L / (windows * T * sum n*L). */
  used: number;
  floor: number;
  /** (windows * (fixed + T * gates) + executed learners) multiply-adds / 1e9. */
  gflops: number;
  /** The dense model over the same windows / 1e9. */
  dense_gflops: number;
  frames: { frame_ms: number; values: number[] };
}

export class SpeechAccountant {
  readonly floor: number;
  private readonly learnerMacs: Float64Array;
  private readonly perFrameMax: number;
  private readonly windowBase: number;

  constructor(private readonly m: SpeechManifest) {
    this.floor = layoutFloor(m.acms);
    this.learnerMacs = Float64Array.from(m.acms.map((a) => a.learner_macs));
    this.perFrameMax = m.acms.reduce((s, a) => s + a.n * a.learner_macs, 0);
    this.windowBase = m.macs.fixed + m.audio.window_frames * m.acms.reduce((s, a) => s + a.gate_macs, 0);
  }

  /** Learner multiply-adds per frame of one window, from counts laid out [acms][window_frames]. */
  perFrame(counts: Int32Array): Float64Array {
    const T = this.m.audio.window_frames;
    const out = new Float64Array(T);
    for (let a = 0; a < this.learnerMacs.length; a++) {
      const L = this.learnerMacs[a] ?? 0;
      for (let t = 0; t < T; t++) out[t] = (out[t] ?? 0) + (counts[a * T + t] ?? 0) * L;
    }
    return out;
  }

  /** GFLOPs of one window. */
  gflops(counts: Int32Array): number {
    return (this.windowBase + this.perFrame(counts).reduce((s, v) => s + v, 0)) / 1e9;
  }

  /** A running total over the windows of one request. */
  tally(): ComputeTally {
    return new ComputeTally(this, this.m, this.perFrameMax, this.windowBase);
  }
}

export class ComputeTally {
  private windows = 0;
  private learner = 0;
  private readonly values: number[] = [];

  constructor(private readonly acc: SpeechAccountant, private readonly m: SpeechManifest,
    private readonly perFrameMax: number, private readonly windowBase: number) {}

  /** Adds one window's counts; its kept frames (the last chunk_frames) join the per-frame values. */
  add(counts: Int32Array): void {
    const perFrame = this.acc.perFrame(counts);
    this.windows++;
    for (const v of perFrame) this.learner += v;
    for (let t = this.m.audio.left_context_frames; t < perFrame.length; t++) this.values.push((perFrame[t] ?? 0) / this.perFrameMax);
  }

  /** The report; `frames` trims the per-frame values to the frames that hold audio. */
  report(budget: number, frames: number): SpeechComputeReport {
    const T = this.m.audio.window_frames;
    return {
      budget,
      used: this.windows === 0 ? 0 : this.learner / (this.windows * T * this.perFrameMax),
      floor: this.acc.floor,
      gflops: (this.windows * this.windowBase + this.learner) / 1e9,
      dense_gflops: (this.windows * this.m.macs.dense) / 1e9,
      frames: { frame_ms: this.m.audio.frame_ms, values: this.values.slice(0, Math.min(frames, this.values.length)) },
    };
  }
}
