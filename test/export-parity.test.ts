// The exporter's parity check: onnxruntime-node must reproduce PyTorch on a tiny random ACM model,
// for one request, a mixed batch whose requests carry different budgets, and batches at the floor.
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

interface Manifest { acms: { min_choice: number }[]; tokens: { count: number } }

// Without and with the floor path (each ACM's minimum under an If, make_tiny_bundle --floor-path),
// and with layer norms conditioned on the budget (--budget-norms).
for (const [label, flags] of [['plain', []], ['floor path', ['--floor-path']], ['budget norms', ['--budget-norms']]] as const) {
  describe(`ONNX export parity (tiny random model, ${label})`, () => {
    let dir = '';
    let cases: ReferenceCase[] = [];
    let manifest: Manifest;
    let session: ort.InferenceSession;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'acm-parity-'));
      execFileSync(PYTHON, ['-m', 'models.toolchain.make_tiny_bundle', '--out', dir, '--reference', ...flags], {
        cwd: REPO_ROOT,
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      cases = (JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8')) as { cases: ReferenceCase[] }).cases;
      manifest = JSON.parse(readFileSync(join(dir, 'acm.json'), 'utf8')) as Manifest;
      session = await ort.InferenceSession.create(join(dir, 'model.onnx'), { logSeverityLevel: 3 });
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

    const names = ['batch of one', 'mixed batch of five budgets', 'batch below the budget floor', 'batch at 0.25'];
    names.forEach((name, index) => {
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
    });

    it('the mixed batch exercises several learner counts and budgets', () => {
      const c = cases[1]!;
      assert.ok(new Set(c.learner_counts).size >= 3, 'the gates should choose at least three distinct counts');
    });

    it('below the floor every ACM runs its minimum; at 0.25 some ACMs do and some do not', () => {
      const atMinimum = (c: ReferenceCase) => {
        const t = manifest.tokens.count;
        const acms = manifest.acms.length;
        return manifest.acms.map((a, i) => c.learner_counts.every((k, j) => Math.floor(j / t) % acms !== i || k === a.min_choice));
      };
      assert.ok(atMinimum(cases[2]!).every(Boolean));
      const quarter = atMinimum(cases[3]!);
      assert.ok(quarter.some(Boolean) && !quarter.every(Boolean), `ACMs at their minimum at 0.25: ${quarter.join(',')}`);
    });
  });
}
