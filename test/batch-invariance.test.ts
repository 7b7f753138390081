// A request's answer must not depend on which requests share its batch (DESIGN §3): the same
// image and budget, sent alone and then inside a batch of requests with other budgets, must give
// the same labels, the same scores within 1e-5, and the same compute map and usage.
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import type { BatchStats } from '../server/metrics.js';
import type { TestApp } from './support/fake.js';
import { makeImage } from './support/images.js';
import { ortApp, tinyModelsDir } from './support/tiny-bundle.js';

interface Answer {
  predictions: { label: string; score: number }[];
  compute: { budget: number; used: number; map: { grid: [number, number]; values: number[][] } };
}

describe('batch invariance (tiny ONNX bundle)', () => {
  let t: TestApp;
  let server: Server;
  const batches: BatchStats[] = [];

  before(async () => {
    // A long max wait makes concurrent requests meet in one batch however slow the machine is.
    t = await ortApp(await tinyModelsDir(), { ACM_MAX_WAIT_MS: '400', ACM_MAX_BATCH_SIZE: '32' });
    t.inference.onBatch((s) => batches.push(s));
    server = t.app.listen(0);
  });
  after(async () => {
    server.close();
    await t.inference.shutdown(1000);
  });

  async function classify(image: Buffer, budget: number): Promise<Answer> {
    const res = await request(server).post('/classify?top_k=10').set('X-Budget', String(budget))
      .set('Content-Type', 'image/png').send(image).expect(200);
    return res.body as Answer;
  }

  function assertSame(alone: Answer, batched: Answer, what: string): void {
    assert.deepEqual(batched.predictions.map((p) => p.label), alone.predictions.map((p) => p.label), `${what}: labels`);
    batched.predictions.forEach((p, i) => {
      const diff = Math.abs(p.score - (alone.predictions[i]?.score ?? NaN));
      assert.ok(diff <= 1e-5, `${what}: score of ${p.label} differs by ${diff}`);
    });
    assert.deepEqual(batched.compute.map, alone.compute.map, `${what}: compute map`);
    assert.equal(batched.compute.used, alone.compute.used, `${what}: used`);
  }

  it('gives a request the same answer alone and inside a mixed-budget batch', async () => {
    const images = await Promise.all([10, 11, 12, 13, 14, 15, 16, 17].map((s) => makeImage(s)));
    const budgets = [0.4, 0.8, 1, 0.25, 0.6, 0.1, 0.75, 0.5];
    const targets = [0, 1];

    const alone: Answer[] = [];
    for (const i of targets) {
      batches.length = 0;
      alone.push(await classify(images[i] as Buffer, budgets[i] as number));
      assert.deepEqual(batches.map((b) => b.size), [1], 'sent alone, the request ran in a batch of one');
    }

    batches.length = 0;
    const together = await Promise.all(images.map((image, i) => classify(image, budgets[i] as number)));
    assert.equal(batches.reduce((s, b) => s + b.size, 0), images.length);
    // Every batch held several requests, so each target certainly shared its batch.
    for (const b of batches) assert.ok(b.size >= 2, `batch sizes ${batches.map((x) => x.size).join(', ')}`);

    targets.forEach((i, n) => assertSame(alone[n] as Answer, together[i] as Answer, `request ${i} (budget ${budgets[i]})`));
  });
});
