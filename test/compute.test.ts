// Compute accounting against BUNDLE.md's formulas, worked by hand on the fake manifest:
// FFN ACM (n 4, L 1024), q ACM (n 4, L 256, min 1), 17 tokens, 4x4 grid from token 1.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ComputeAccountant } from '../server/compute.js';
import { topPredictions } from '../server/inference.js';
import { fakeManifest } from './support/fake.js';

const m = fakeManifest();
const T = 17;

function counts(ffn: (t: number) => number, q: (t: number) => number): Int32Array {
  const c = new Int32Array(2 * T);
  for (let t = 0; t < T; t++) {
    c[t] = ffn(t);
    c[T + t] = q(t);
  }
  return c;
}

describe('compute report', () => {
  const acct = new ComputeAccountant(m);
  const perTokenMax = 4 * 1024 + 4 * 256;

  it('reports used 1 and the full map when every learner runs', () => {
    const r = acct.report(counts(() => 4, () => 4), 1);
    assert.equal(r.used, 1);
    assert.deepEqual(r.map, { grid: [4, 4], values: Array.from({ length: 4 }, () => [1, 1, 1, 1]) });
    const gates = T * (100 + 50);
    assert.equal(r.gflops, (50_000 + gates + T * perTokenMax) / 1e9);
    assert.equal(r.dense_gflops, 400_000 / 1e9);
  });

  it('reports the floor when only min_choice learners run', () => {
    const r = acct.report(counts(() => 0, () => 1), 0.01);
    assert.equal(r.used, (T * 256) / (T * perTokenMax));
    assert.ok(Math.abs(r.used - r.floor) < 1e-12);
    assert.equal(r.budget, 0.01);
  });

  it('reports the exact floor of the layout when the manifest rounds it', () => {
    // Floor (100 + 100) / (4 * 400 + 4 * 100 + 4 * 100) = 1/12, written rounded as an exporter
    // does; the loader accepts it within 1e-6.
    const acm = { layer: 0, n: 4, width: 4, gate_macs: 0 };
    const acms = [{ ...acm, name: 'mlp', kind: 'ffn', min_choice: 0, learner_macs: 400 },
      { ...acm, name: 'q', kind: 'q', min_choice: 1, learner_macs: 100 }, { ...acm, name: 'k', kind: 'k', min_choice: 1, learner_macs: 100 }];
    const rounded = new ComputeAccountant(fakeManifest({ acms, budget_floor: 0.083333 }));
    const c = new Int32Array(3 * T);
    for (let t = 0; t < T; t++) c[T + t] = c[2 * T + t] = 1;
    const r = rounded.report(c, 0.05);
    assert.equal(r.floor, 1 / 12);
    assert.ok(r.used <= Math.max(r.budget, r.floor), `used ${r.used} within max(budget, floor ${r.floor})`);
  });

  it('maps patch (r, c) to token grid_offset + r * cols + c and skips the class token', () => {
    // Only the class token (t = 0) and patch (2, 3) (t = 1 + 2 * 4 + 3 = 12) run learners.
    const r = acct.report(counts((t) => (t === 0 || t === 12 ? 4 : 0), (t) => (t === 12 ? 2 : 0)), 1);
    const expected = Array.from({ length: 4 }, () => [0, 0, 0, 0]);
    (expected[2] as number[])[3] = (4 * 1024 + 2 * 256) / perTokenMax;
    assert.deepEqual(r.map.values, expected);
    assert.equal(r.used, (2 * 4 * 1024 + 2 * 256) / (T * perTokenMax));
  });
});

describe('top-k predictions', () => {
  it('softmaxes stably, sorts best first, and breaks ties by class order', () => {
    const p = topPredictions(Float32Array.from([1000, 1000, 999, -5]), ['a', 'b', 'c', 'd'], 3);
    assert.deepEqual(p.map((x) => x.label), ['a', 'b', 'c']);
    assert.ok(Number.isFinite(p[0]?.score ?? NaN));
    assert.ok(Math.abs((p[0]?.score ?? 0) - (p[1]?.score ?? 1)) < 1e-15);
  });
});
