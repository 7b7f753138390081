// The queue and batcher against a fake backend: how batches form (tokens, then size, then wait),
// and every way a request leaves the queue other than by running (full, deadline, abort, close).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BatchItem } from '../server/backend.js';
import { Batcher, type ItemOutcome } from '../server/batcher.js';
import { AcmError } from '../server/errors.js';
import type { BatchStats } from '../server/metrics.js';
import { RequestQueue, type QueueOptions } from '../server/queue.js';
import { FakeBackend, fakeManifest } from './support/fake.js';

const m = fakeManifest();
const PIXELS = new Float32Array(28 * 28);

function setup(opts: Partial<QueueOptions> = {}) {
  const queue = new RequestQueue<BatchItem, ItemOutcome>({ maxBatchSize: 4, maxBatchTokens: 10_000, maxWaitMs: 20,
    capacity: 100, retryAfterS: 1, ...opts });
  const backend = new FakeBackend(m);
  const stats: BatchStats[] = [];
  const batcher = new Batcher(queue, backend, { model: 'fake', gflopsOf: () => 0.001, onBatch: (s) => stats.push(s) });
  batcher.start();
  const submit = (budget: number, extra: { tokens?: number; timeoutMs?: number; signal?: AbortSignal } = {}) =>
    queue.submit({ input: PIXELS, budget }, { tokens: extra.tokens ?? 17, timeoutMs: extra.timeoutMs ?? 5000, signal: extra.signal });
  const stop = async () => {
    backend.release();
    queue.close();
    await batcher.stopped();
  };
  return { queue, backend, stats, submit, stop };
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<AcmError> {
  const err = await p.then(() => assert.fail(`expected ${code}`), (e: unknown) => e);
  assert.ok(err instanceof AcmError, `expected AcmError, got ${String(err)}`);
  assert.equal(err.code, code);
  return err;
}

describe('batch formation', () => {
  it('caps a batch by max batch size and runs the remainder after the wait', async () => {
    const q = setup({ maxBatchSize: 4, maxWaitMs: 30 });
    q.backend.hold();
    const all = Array.from({ length: 10 }, (_, i) => q.submit((i + 1) / 16));
    q.backend.release();
    const outcomes = await Promise.all(all);
    assert.deepEqual(q.backend.batches.map((b) => b.length), [4, 4, 2]);
    // Order is kept: the first four requests share the first batch.
    assert.deepEqual(q.backend.batches[0], [1 / 16, 2 / 16, 3 / 16, 4 / 16]);
    assert.equal(outcomes[9]?.batchSize, 2);
    // The wait runs from the partial batch's oldest request (index 8): the process may be
    // descheduled between two submits, so the last one can have waited less.
    assert.ok((outcomes[8]?.queueMs ?? 0) >= 25, `a partial batch waits for max wait: ${outcomes[8]?.queueMs} ms`);
    await q.stop();
  });

  it('caps a batch by tokens before requests', async () => {
    const q = setup({ maxBatchSize: 32, maxBatchTokens: 100, maxWaitMs: 10 });
    await Promise.all(Array.from({ length: 7 }, () => q.submit(1, { tokens: 30 })));
    // 3 x 30 = 90 tokens fit in 100; a fourth would not.
    assert.deepEqual(q.backend.batches.map((b) => b.length), [3, 3, 1]);
    assert.deepEqual(q.stats.map((s) => s.tokens), [90, 90, 30], 'batch stats count the tokens of their requests');
    await q.stop();
  });

  it('runs a lone request once max wait has passed, not before', async () => {
    const q = setup({ maxWaitMs: 40 });
    const outcome = await q.submit(0.5);
    assert.equal(outcome.batchSize, 1);
    assert.ok(outcome.queueMs >= 38, `queued ${outcome.queueMs} ms`);
    await q.stop();
  });

  it('keeps serving after a backend failure, failing only that batch', async () => {
    const q = setup({ maxWaitMs: 0 });
    q.backend.failWith = new Error('boom');
    await rejectsWith(q.submit(1), 'internal');
    q.backend.failWith = undefined;
    assert.equal((await q.submit(1)).batchSize, 1);
    await q.stop();
  });
});

describe('leaving the queue', () => {
  it('refuses with queue_full and Retry-After once capacity requests wait', async () => {
    const q = setup({ maxBatchSize: 1, capacity: 2, maxWaitMs: 0 });
    q.backend.hold();
    const running = q.submit(1);
    await new Promise((r) => setImmediate(r));
    const waiting = [q.submit(1), q.submit(1)];
    const err = await rejectsWith(q.submit(1), 'queue_full');
    assert.equal(err.retryAfterS, 1);
    assert.equal(q.queue.depth, 2);
    q.backend.release();
    await Promise.all([running, ...waiting]);
    await q.stop();
  });

  it('fails a request at its deadline and removes it from the queue', async () => {
    const q = setup({ maxBatchSize: 1, maxWaitMs: 0 });
    q.backend.hold();
    const running = q.submit(1);
    await new Promise((r) => setImmediate(r));
    await rejectsWith(q.submit(0.3, { timeoutMs: 30 }), 'deadline_exceeded');
    assert.equal(q.queue.depth, 0);
    q.backend.release();
    await running;
    assert.deepEqual(q.backend.batches, [[1]], 'the expired request never reached the backend');
    await q.stop();
  });

  it('removes the queued work of a client that aborts', async () => {
    const q = setup({ maxBatchSize: 1, maxWaitMs: 0 });
    q.backend.hold();
    const running = q.submit(1);
    await new Promise((r) => setImmediate(r));
    const abort = new AbortController();
    const gone = q.submit(0.3, { signal: abort.signal });
    const kept = q.submit(0.7);
    assert.equal(q.queue.depth, 2);
    abort.abort();
    await rejectsWith(gone, 'client_closed');
    assert.equal(q.queue.depth, 1);
    q.backend.release();
    await Promise.all([running, kept]);
    assert.deepEqual(q.backend.batches, [[1], [0.7]], 'the aborted request never reached the backend');
    await q.stop();
  });

  it('refuses a request whose signal is already aborted', async () => {
    const q = setup();
    await rejectsWith(q.submit(1, { signal: AbortSignal.abort() }), 'client_closed');
    await q.stop();
  });

  it('fails queued requests with not_ready on close and refuses new ones', async () => {
    const q = setup({ maxBatchSize: 1, maxWaitMs: 0 });
    q.backend.hold();
    const running = q.submit(1);
    await new Promise((r) => setImmediate(r));
    const queued = q.submit(1);
    q.queue.close();
    await rejectsWith(queued, 'not_ready');
    await rejectsWith(q.submit(1), 'not_ready');
    q.backend.release();
    await running;
    await q.stop();
  });

  it('hands a batch\'s answers out a few at a time, letting the event loop turn in between', async () => {
    const q = setup({ maxBatchSize: 8, maxWaitMs: 50 });
    q.backend.hold();
    let answered = 0;
    let answeredWhenLoopTurned = -1;
    const all = Array.from({ length: 8 }, (_, i) => q.submit((i + 1) / 8).then((o) => {
      if (answered++ === 0) setImmediate(() => { answeredWhenLoopTurned = answered; });
      return o;
    }));
    q.backend.release();
    await Promise.all(all);
    assert.deepEqual(q.backend.batches.map((b) => b.length), [8]);
    assert.ok(answeredWhenLoopTurned > 0 && answeredWhenLoopTurned < 8,
      `the loop turned after ${answeredWhenLoopTurned} of 8 answers; expected between the first and the last`);
    await q.stop();
  });

  it('idle() resolves once queued and running work is done', async () => {
    const q = setup({ maxWaitMs: 0 });
    q.backend.hold();
    const work = [q.submit(1), q.submit(0.5)];
    let idle = false;
    const waiting = q.queue.idle().then(() => { idle = true; });
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(idle, false);
    q.backend.release();
    await Promise.all(work);
    await waiting;
    await q.stop();
  });
});
