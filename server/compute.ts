// Compute accounting of one request, exactly as models/BUNDLE.md "Compute accounting" defines it:
// the fraction of learner compute executed, GFLOPs used and dense, and the per-patch map.
import { layoutFloor } from './manifest-fields.js';
import type { ImageManifest } from './manifest.js';

export interface ComputeReport {
  /** Budget the request asked for. */
  budget: number;
  /** Fraction of learner compute executed: sum k*L / sum n*T*L. */
  used: number;
  /** The model's budget_floor: compute forced by min_choice learners (exact, from the layout). */
  floor: number;
  /** (fixed + gates + executed learners) multiply-adds / 1e9. */
  gflops: number;
  /** The pre-ACM model's multiply-adds / 1e9. */
  dense_gflops: number;
  map: { grid: [number, number]; values: number[][] };
}

/** Per-model constants, computed once at load rather than per request. */
export class ComputeAccountant {
  private readonly learnerMacs: Float64Array;
  private readonly maxLearnerMacs: number;
  private readonly perTokenMax: number;
  private readonly baseMacs: number;
  private readonly tokens: number;
  /**
   * The floor recomputed from the ACM layout rather than the manifest's budget_floor, which the
   * loader accepts within 1e-6: a rounded floor (0.083333 for 1/12) would make an answer at a
   * budget below the floor break its own used <= max(budget, floor).
   */
  readonly floor: number;

  constructor(private readonly m: ImageManifest) {
    this.floor = layoutFloor(m.acms);
    this.tokens = m.tokens.count;
    this.learnerMacs = Float64Array.from(m.acms.map((a) => a.learner_macs));
    this.perTokenMax = m.acms.reduce((s, a) => s + a.n * a.learner_macs, 0);
    this.maxLearnerMacs = this.perTokenMax * this.tokens;
    const gates = m.acms.reduce((s, a) => s + a.gate_macs, 0);
    this.baseMacs = m.macs.fixed + this.tokens * gates;
  }

  /** Learner multiply-adds executed per token, from counts laid out [acms][tokens]. */
  private perToken(counts: Int32Array): Float64Array {
    const T = this.tokens;
    const out = new Float64Array(T);
    for (let a = 0; a < this.learnerMacs.length; a++) {
      const L = this.learnerMacs[a] ?? 0;
      const row = a * T;
      for (let t = 0; t < T; t++) out[t] = (out[t] ?? 0) + (counts[row + t] ?? 0) * L;
    }
    return out;
  }

  /** Fraction of learner compute a result used; what the budget bounds. */
  used(counts: Int32Array): number {
    return this.perToken(counts).reduce((s, v) => s + v, 0) / this.maxLearnerMacs;
  }

  report(counts: Int32Array, budget: number): ComputeReport {
    const perToken = this.perToken(counts);
    const learner = perToken.reduce((s, v) => s + v, 0);
    const [rows, cols] = this.m.tokens.grid;
    const offset = this.m.tokens.grid_offset;
    const values: number[][] = [];
    for (let r = 0; r < rows; r++) {
      const row: number[] = [];
      for (let c = 0; c < cols; c++) row.push((perToken[offset + r * cols + c] ?? 0) / this.perTokenMax);
      values.push(row);
    }
    return {
      budget,
      used: learner / this.maxLearnerMacs,
      floor: this.floor,
      gflops: (this.baseMacs + learner) / 1e9,
      dense_gflops: this.m.macs.dense / 1e9,
      map: { grid: [rows, cols], values },
    };
  }

  /** Cost-weighted fraction of each token's learners that ran, every token (class token included). */
  tokenFractions(counts: Int32Array): Float64Array {
    return this.perToken(counts).map((v) => v / this.perTokenMax);
  }

  /** GFLOPs of one result, for batch cost metrics. */
  gflops(counts: Int32Array): number {
    return (this.baseMacs + this.perToken(counts).reduce((s, v) => s + v, 0)) / 1e9;
  }
}
