// OrtBackend's failure handling, with a protocol-speaking fake worker: a worker that dies or
// hangs fails only its batch and is replaced; a graph that breaks the manifest, or a session
// that cannot be created, stops start-up with the reason.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { BatchItem } from '../server/backend.js';
import { AcmError } from '../server/errors.js';
import { createLogger } from '../server/logger.js';
import { checkGraph } from '../server/graph-check.js';
import { OrtBackend, type OrtBackendOptions } from '../server/ort-backend.js';
import { learnerCounts } from '../server/ort-protocol.js';
import { fakeBundle, fakeManifest } from './support/fake.js';
import { CRASH_BUDGET, HANG_BUDGET, SLOW_BUDGET } from './support/fake-worker.js';
import { scratchDir } from './support/scratch.js';

const FAKE_WORKER = new URL('./support/fake-worker.js', import.meta.url);
const item = (budget: number): BatchItem => ({ budget, input: new Float32Array(28 * 28) });

function backend(extra: Partial<OrtBackendOptions> = {}): OrtBackend {
  return new OrtBackend({ bundle: fakeBundle(), provider: 'cpu', threads: 1, graphOptimization: 'all', workers: 1,
    runTimeoutMs: 300, closeTimeoutMs: 200, log: createLogger('silent'), workerUrl: FAKE_WORKER, ...extra });
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(() => assert.fail(`expected ${code}`), (e: unknown) => e);
  assert.ok(err instanceof AcmError, String(err));
  assert.equal(err.code, code);
}

describe('learner counts from the graph', () => {
  it('reads int64 counts as int32, from an offset view too', () => {
    const raw = BigInt64Array.from([0n, 1n, 4n, 3n, 2n, 0n]);
    assert.deepEqual(Array.from(learnerCounts(raw)), [0, 1, 4, 3, 2, 0]);
    const view = new BigInt64Array(raw.buffer, 16, 3);
    assert.deepEqual(Array.from(learnerCounts(view)), [4, 3, 2]);
  });

  it('keeps values the low 32 bits cannot hold, and negative ones', () => {
    const raw = BigInt64Array.from([2n, -1n, 5_000_000_000n, 7n]);
    assert.deepEqual(Array.from(learnerCounts(raw)), [2, -1, Number(5_000_000_000n) | 0, 7]);
    assert.deepEqual(Array.from(learnerCounts(BigInt64Array.from([-3n, 1n]))), [-3, 1]);
  });
});

describe('OrtBackend failure handling', () => {
  it('fails the batch of a worker that exits, restarts the worker, and serves the next batch', async () => {
    let restarts = 0;
    const b = backend({ onWorkerRestart: () => restarts++ });
    await b.start();
    try {
      assert.equal((await b.run([item(1), item(0.5)])).length, 2);
      await rejectsWith(b.run([item(0.3), item(CRASH_BUDGET)]), 'internal');
      assert.equal(restarts, 1);
      const [r] = await b.run([item(1)]);
      assert.equal(r?.logits.length, 10);
      assert.equal(r?.learnerCounts.length, 2 * 17);
    } finally {
      await b.close();
    }
  });

  it('fails the batch of a worker that hangs with deadline_exceeded and replaces the worker', async () => {
    let restarts = 0;
    const b = backend({ onWorkerRestart: () => restarts++ });
    await b.start();
    try {
      await rejectsWith(b.run([item(HANG_BUDGET)]), 'deadline_exceeded');
      // The hung thread is never terminated (that would abort the process inside onnxruntime);
      // a replacement takes the next batch while it is left to finish.
      assert.equal((await b.run([item(1)])).length, 1);
      assert.equal(restarts, 1);
    } finally {
      await b.close();
    }
  });

  it('with pipeline depth 1, holds the next batch until the worker answers the last', async () => {
    const b = backend();
    await b.start();
    try {
      const order: number[] = [];
      const slow = b.run([item(SLOW_BUDGET)]).then((r) => order.push(r[0]!.logits[0]!));
      const quick = b.run([item(0.25)]).then((r) => order.push(r[0]!.logits[0]!));
      await Promise.all([slow, quick]);
      assert.deepEqual(order, [Math.fround(SLOW_BUDGET), 0.25]);
      assert.equal(b.concurrency, 1);
    } finally {
      await b.close();
    }
  });

  it('with pipeline depth 2, hands a busy worker its next batch and gives every answer to its own batch', async () => {
    const b = backend({ pipelineDepth: 2 });
    await b.start();
    try {
      assert.equal(b.concurrency, 2);
      const order: number[] = [];
      const slow = b.run([item(SLOW_BUDGET), item(1)]).then((r) => order.push(r[1]!.logits[0]!));
      const quick = b.run([item(0.25)]).then((r) => order.push(r[0]!.logits[0]!));
      await Promise.all([slow, quick]);
      // The second batch reached the worker while the first was still running.
      assert.deepEqual(order, [0.25, Math.fround(SLOW_BUDGET)]);
    } finally {
      await b.close();
    }
  });

  it('with pipeline depth 2, fails every batch a worker held when it exits, and serves the next', async () => {
    let restarts = 0;
    const b = backend({ pipelineDepth: 2, onWorkerRestart: () => restarts++ });
    await b.start();
    try {
      const held = b.run([item(SLOW_BUDGET)]);
      const crash = b.run([item(CRASH_BUDGET)]);
      await rejectsWith(held, 'internal');
      await rejectsWith(crash, 'internal');
      assert.equal(restarts, 1);
      const [r] = await b.run([item(0.5)]);
      assert.equal(r?.logits[0], 0.5);
    } finally {
      await b.close();
    }
  });

  it('rejects runs after close instead of leaving them pending', async () => {
    const b = backend();
    await b.start();
    const pending = rejectsWith(b.run([item(HANG_BUDGET)]), 'not_ready');
    await b.close();
    await pending;
    await rejectsWith(b.run([item(1)]), 'not_ready');
  });

  it('checks input and output names, types and fixed sizes against the manifest', () => {
    const m = fakeManifest();
    const inputs = [{ name: 'pixel_values', type: 'float32', shape: ['batch', 1, 28, 28] },
      { name: 'budget', type: 'float32', shape: ['batch'] }, { name: 'mask', type: 'bool', shape: ['batch'] }];
    const outputs = [{ name: 'logits', type: 'float32', shape: [4, 9] }];
    assert.deepEqual(checkGraph(m, inputs, outputs), [
      'input "budget" has type float32; the manifest contract needs float64',
      'output "logits" dimension 1 is 9; the manifest implies 10',
      'output "logits" has a fixed batch dimension 4; re-export with a dynamic batch axis',
      'output "learner_counts" is not in the graph',
      'graph input "mask" is not named by the manifest, so the server cannot feed it',
    ]);
  });

  it('refuses to start when the graph does not match the manifest', async () => {
    const rgb = fakeManifest({ image: { ...fakeManifest().image, channels: 3, mean: [0, 0, 0], std: [1, 1, 1] } });
    const b = backend({ bundle: fakeBundle(rgb) });
    await assert.rejects(b.start(), /graph does not match acm\.json: input "pixel_values" dimension 1 is 1; the manifest implies 3/);
  });

  it('refuses to start when onnxruntime cannot load the graph', async () => {
    const dir = scratchDir('acm-bad-graph-');
    const graphPath = join(dir, 'model.onnx');
    await writeFile(graphPath, 'not an onnx file');
    const b = backend({ bundle: { ...fakeBundle(), graphPath }, workerUrl: undefined });
    await assert.rejects(b.start(), /fake-vit-acm.*cannot create a cpu session/);
  });
});
