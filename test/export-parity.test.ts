// The exporter's parity check: onnxruntime-node must reproduce PyTorch on a tiny random ACM model,
// for one request and for a mixed batch whose requests carry different budgets.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { PYTHON, REPO_ROOT } from './helpers/paths.js';

interface ReferenceCase {
  budget: number[];
  pixels: number[];
  shape: number[];
  logits: number[];
  learner_counts: number[];
  counts_shape: number[];
}

describe('ONNX export parity (tiny random model)', () => {
  let dir = '';
  let cases: ReferenceCase[] = [];
  let session: ort.InferenceSession;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'acm-parity-'));
    execFileSync(PYTHON, ['-m', 'models.toolchain.make_tiny_bundle', '--out', dir, '--reference'], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    cases = (JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8')) as { cases: ReferenceCase[] }).cases;
    session = await ort.InferenceSession.create(join(dir, 'model.onnx'));
  });

  after(async () => {
    await session?.release();
    rmSync(dir, { recursive: true, force: true });
  });

  async function run(c: ReferenceCase) {
    const out = await session.run({
      pixel_values: new ort.Tensor('float32', Float32Array.from(c.pixels), c.shape),
      budget: new ort.Tensor('float64', Float64Array.from(c.budget), [c.budget.length]),
    });
    return { logits: out.logits!.data as Float32Array, counts: out.learner_counts!.data as BigInt64Array, shape: out.learner_counts!.dims };
  }

  for (const [name, index] of [['batch of one', 0], ['mixed batch of five budgets', 1]] as const) {
    it(`${name}: logits within 1e-4 and identical learner counts`, async () => {
      const c = cases[index]!;
      const { logits, counts, shape } = await run(c);
      assert.deepEqual([...shape], c.counts_shape);
      assert.equal(logits.length, c.logits.length);
      let worst = 0;
      c.logits.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - logits[i]!))));
      assert.ok(worst <= 1e-4, `max |ORT - PyTorch| = ${worst}`);
      assert.deepEqual(Array.from(counts, Number), c.learner_counts);
    });
  }

  it('the mixed batch exercises several learner counts and budgets', () => {
    const c = cases[1]!;
    assert.ok(new Set(c.learner_counts).size >= 3, 'the gates should choose at least three distinct counts');
  });
});
