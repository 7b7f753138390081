// Accuracy of the shipped image model through the whole server (HTTP, decoding, batching, worker,
// graph) on the committed Fashion-MNIST subset, against what the toolchain measured in PyTorch on
// the same items. A gap means the server's input pipeline or runtime disagrees with training.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import type { TestApp } from './support/fake.js';
import { ortApp, REPO_ROOT } from './support/tiny-bundle.js';

const FIXTURES = join(REPO_ROOT, 'test', 'fixtures', 'fashion-test');
const MODEL = 'fashion-vit-acm';
const TOLERANCE = 0.02;
const CONCURRENCY = 16;

interface Expected { items: number; accuracy: Record<string, number> }

const missing = existsSync(FIXTURES) ? false
  : `fixture folder ${FIXTURES} does not exist yet (written by python3 -m models.toolchain.build_bundle)`;

describe(`accuracy of ${MODEL} over HTTP`, { skip: missing }, () => {
  let t: TestApp;
  let server: Server;
  let labels: Record<string, string>;
  let expected: Expected;
  const images = new Map<string, Buffer>();

  before(async () => {
    labels = JSON.parse(await readFile(join(FIXTURES, 'labels.json'), 'utf8')) as Record<string, string>;
    expected = JSON.parse(await readFile(join(FIXTURES, 'expected.json'), 'utf8')) as Expected;
    for (const file of Object.keys(labels)) images.set(file, await readFile(join(FIXTURES, file)));
    t = await ortApp(join(REPO_ROOT, 'models'), { ACM_MAX_WAIT_MS: '10' });
    assert.ok(t.inference.listModels().some((m) => m.name === MODEL),
      `the fixture exists but models/ holds no bundle named ${MODEL}; build it with python3 -m models.toolchain.build_bundle`);
    server = t.app.listen(0);
  });
  after(async () => {
    server.close();
    await t.inference.shutdown(1000);
  });

  /** Top-1 accuracy at a budget; also checks every answer's compute stays within the budget. */
  async function accuracyAt(budget: number): Promise<number> {
    const files = [...images.keys()];
    let correct = 0;
    for (let i = 0; i < files.length; i += CONCURRENCY) {
      const chunk = files.slice(i, i + CONCURRENCY);
      const answers = await Promise.all(chunk.map((file) => request(server).post(`/classify?model=${MODEL}&top_k=1`)
        .set('X-Budget', String(budget)).set('Content-Type', 'image/png').send(images.get(file)).expect(200)));
      answers.forEach((res, j) => {
        const body = res.body as { predictions: { label: string }[]; compute: { used: number; floor: number } };
        if (body.predictions[0]?.label === labels[chunk[j] ?? '']) correct++;
        assert.ok(body.compute.used <= Math.max(budget, body.compute.floor) + 1e-9, `${chunk[j]}: used ${body.compute.used} at budget ${budget}`);
      });
    }
    return correct / files.length;
  }

  it('has the fixture the toolchain described', () => {
    assert.equal(images.size, expected.items);
    for (const budget of ['1.0', '0.5']) assert.equal(typeof expected.accuracy[budget], 'number', `expected.json accuracy at ${budget}`);
  });

  for (const budget of ['1.0', '0.5']) {
    it(`reaches the measured accuracy within ${TOLERANCE} at budget ${budget}`, async () => {
      const want = expected.accuracy[budget] ?? NaN;
      const got = await accuracyAt(Number(budget));
      assert.ok(got >= want - TOLERANCE, `accuracy ${got} over HTTP; the toolchain measured ${want}`);
    });
  }
});
