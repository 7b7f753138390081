// The HTTP contract over a fake backend: answer shape and headers, labels from the manifest,
// model listing, readiness before and after load, metrics, multipart upload, and the 404 shape.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it, before } from 'node:test';
import request from 'supertest';
import { buildApp, fakeApp, fakeBundle, FakeBackend, LABELS, testConfig, type TestApp } from './support/fake.js';
import { makeImage, type Format } from './support/images.js';
import { REPO_ROOT } from './support/tiny-bundle.js';

interface Answer {
  model: string;
  predictions: { label: string; score: number }[];
  compute: { budget: number; used: number; floor: number; gflops: number; dense_gflops: number;
    map: { grid: [number, number]; values: number[][] } };
}

describe('POST /classify contract', () => {
  let t: TestApp;
  let png: Buffer;
  before(async () => {
    t = await fakeApp();
    png = await makeImage(1);
  });

  it('answers model, top-k predictions and the compute report with timing headers', async () => {
    const res = await request(t.app).post('/classify?budget=0.5').set('Content-Type', 'image/png').send(png).expect(200);
    const body = res.body as Answer;
    assert.deepEqual(Object.keys(body).sort(), ['compute', 'model', 'predictions']);
    assert.equal(body.model, 'fake-vit-acm');
    assert.equal(body.predictions.length, 5, 'top_k defaults to 5');
    for (const p of body.predictions) {
      assert.ok(LABELS.includes(p.label), `label ${p.label} comes from the manifest`);
      assert.ok(p.score >= 0 && p.score <= 1);
    }
    const scores = body.predictions.map((p) => p.score);
    assert.deepEqual(scores, [...scores].sort((a, b) => b - a), 'scores are sorted, best first');
    assert.ok(scores.reduce((s, v) => s + v, 0) <= 1 + 1e-9);
    const c = body.compute;
    assert.deepEqual(Object.keys(c).sort(), ['budget', 'dense_gflops', 'floor', 'gflops', 'map', 'used']);
    assert.equal(c.budget, 0.5);
    assert.equal(c.floor, 0.05);
    assert.equal(c.dense_gflops, 400_000 / 1e9);
    assert.ok(c.gflops > 0 && c.gflops < c.dense_gflops + 1);
    assert.deepEqual(c.map.grid, [4, 4]);
    assert.equal(c.map.values.length, 4);
    for (const row of c.map.values) {
      assert.equal(row.length, 4);
      for (const v of row) assert.ok(v >= 0 && v <= 1);
    }
    assert.equal(Number(res.headers['x-budget-used']), c.used);
    for (const h of ['x-queue-time-ms', 'x-inference-time-ms', 'x-total-time-ms']) {
      assert.ok(Number.isFinite(Number(res.headers[h])) && Number(res.headers[h]) >= 0, `${h} is a duration`);
    }
    assert.match(String(res.headers['server-timing']), /^queue;dur=[\d.]+, inference;dur=[\d.]+, total;dur=[\d.]+$/);
  });

  it('keeps used <= max(budget, floor) on every answer', async () => {
    for (const budget of [0.01, 0.05, 0.2, 0.33, 0.5, 0.8, 1]) {
      const res = await request(t.app).post('/classify').set('X-Budget', String(budget)).set('Content-Type', 'image/png').send(png).expect(200);
      const c = (res.body as Answer).compute;
      assert.ok(c.used <= Math.max(budget, c.floor) + 1e-12, `budget ${budget}: used ${c.used}`);
    }
  });

  it('takes the X-Budget header over ?budget=, and top_k up to the class count', async () => {
    const res = await request(t.app).post('/classify?budget=0.9&top_k=10').set('X-Budget', '0.25')
      .set('Content-Type', 'image/png').send(png).expect(200);
    const body = res.body as Answer;
    assert.equal(body.compute.budget, 0.25);
    assert.equal(body.predictions.length, 10);
    assert.ok(Math.abs(body.predictions.reduce((s, p) => s + p.score, 0) - 1) < 1e-9, 'all classes sum to 1');
  });

  it('uses the default budget when none is given', async () => {
    const res = await request(t.app).post('/classify').set('Content-Type', 'image/png').send(png).expect(200);
    assert.equal((res.body as Answer).compute.budget, 1);
  });

  it('accepts every supported format', async () => {
    for (const format of ['png', 'jpeg', 'webp', 'gif', 'tiff'] as Format[]) {
      const file = await makeImage(2, format, 40, 30);
      await request(t.app).post('/classify').set('Content-Type', `image/${format}`).send(file).expect(200);
    }
  });

  it('accepts a multipart upload in field "image" with form fields', async () => {
    const res = await request(t.app).post('/classify').attach('image', png, { filename: 'x.png', contentType: 'image/png' })
      .field('budget', '0.4').field('top_k', '3').expect(200);
    const body = res.body as Answer;
    assert.equal(body.compute.budget, 0.4);
    assert.equal(body.predictions.length, 3);
  });

  it('names the model by ?model=', async () => {
    await request(t.app).post('/classify?model=fake-vit-acm').set('Content-Type', 'image/png').send(png).expect(200);
  });
});

describe('service routes', () => {
  it('GET /v1/models lists name, task, labels, input, floor, default budget and quality', async () => {
    const t = await fakeApp();
    const res = await request(t.app).get('/v1/models').expect(200);
    const [model] = (res.body as { models: Record<string, unknown>[] }).models;
    assert.ok(model);
    assert.equal(model.name, 'fake-vit-acm');
    assert.equal(model.task, 'image-classification');
    assert.deepEqual(model.labels, LABELS);
    assert.deepEqual(model.input, fakeBundle().manifest.image);
    assert.equal(model.budget_floor, 0.05);
    assert.equal(model.default_budget, 1);
    assert.ok(Array.isArray(model.quality));
  });

  it('ACM_DEFAULT_BUDGET overrides the model default_budget', async () => {
    const t = await fakeApp({ ACM_DEFAULT_BUDGET: '0.3' });
    const res = await request(t.app).post('/classify').set('Content-Type', 'image/png').send(await makeImage(3)).expect(200);
    assert.equal((res.body as Answer).compute.budget, 0.3);
    const models = await request(t.app).get('/v1/models').expect(200);
    assert.equal((models.body as { models: { default_budget: number }[] }).models[0]?.default_budget, 0.3);
  });

  it('/readyz is 503 before models load and 200 after; /healthz is 200 throughout', async () => {
    const t = buildApp(testConfig());
    await request(t.app).get('/healthz').expect(200);
    const before = await request(t.app).get('/readyz').expect(503);
    assert.equal((before.body as { error: { code: string } }).error.code, 'not_ready');
    const refused = await request(t.app).post('/classify').set('Content-Type', 'image/png').send(await makeImage(1)).expect(503);
    assert.equal((refused.body as { error: { code: string } }).error.code, 'not_ready');
    await t.inference.load([fakeBundle()], () => new FakeBackend());
    await request(t.app).get('/readyz').expect(200);
    await request(t.app).get('/healthz').expect(200);
  });

  it('GET /metrics exposes acm_ metrics in Prometheus text format', async () => {
    const t = await fakeApp();
    await request(t.app).post('/classify').set('X-Budget', '0.5').set('Content-Type', 'image/png').send(await makeImage(1)).expect(200);
    await request(t.app).post('/classify').set('X-Budget', 'x').set('Content-Type', 'image/png').send(await makeImage(1)).expect(400);
    // A gray PNG at the model's input size: read directly, not through libvips (makeImage's is RGB).
    const atSize = readFileSync(join(REPO_ROOT, 'test', 'fixtures', 'fashion-test', 'shirt-6000.png'));
    await request(t.app).post('/classify').set('Content-Type', 'image/png').send(atSize).expect(200);
    const res = await request(t.app).get('/metrics').expect(200);
    assert.match(String(res.headers['content-type']), /^text\/plain/);
    const text = res.text;
    for (const name of ['acm_http_requests_total', 'acm_http_request_duration_seconds_bucket', 'acm_queue_depth', 'acm_requests_in_flight',
      'acm_batch_size_bucket', 'acm_batch_tokens_bucket', 'acm_batch_gflops_bucket', 'acm_budget_used_bucket', 'acm_errors_total']) {
      assert.ok(text.includes(name), `${name} is exported`);
    }
    assert.match(text, /acm_http_requests_total\{route="\/classify",method="POST",status="200"\} 2/);
    assert.match(text, /acm_errors_total\{code="invalid_budget"\} 1/);
    assert.match(text, /acm_images_decoded_total\{reader="libvips"\} 1/);
    assert.match(text, /acm_images_decoded_total\{reader="png"\} 1/);
    for (const line of text.split('\n')) {
      if (line && !line.startsWith('#')) assert.ok(line.startsWith('acm_'), `every metric has the acm_ prefix: ${line}`);
    }
  });

  it('answers an unknown route with a 404 JSON error, and keeps the connection of a request without a body', async () => {
    const t = await fakeApp();
    const res = await request(t.app).get('/nope').expect(404).expect('Content-Type', /json/);
    assert.equal((res.body as { error: { code: string } }).error.code, 'not_found');
    // Over a kept-alive connection (supertest asks for Connection: close itself).
    const server = t.app.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const agent = new Agent({ keepAlive: true });
    try {
      const { port } = server.address() as AddressInfo;
      const ask = (method: string, body?: Buffer): Promise<{ status: number; connection: string | undefined }> => new Promise((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port, method, path: '/nope', agent,
          headers: body ? { 'Content-Type': 'image/png', 'Content-Length': String(body.length) } : {} }, (r) => {
          r.resume();
          r.on('end', () => resolve({ status: r.statusCode ?? 0, connection: r.headers.connection }));
        });
        req.on('error', reject);
        req.end(body);
      });
      assert.deepEqual(await ask('GET'), { status: 404, connection: 'keep-alive' }, 'no body to drain: the connection stays');
      assert.deepEqual(await ask('POST', Buffer.alloc(100)), { status: 404, connection: 'close' }, 'an unread body is not drained');
    } finally {
      agent.destroy();
      server.close();
    }
  });

  it('answers a known path asked with another method with 405 and Allow, and OPTIONS with Allow alone', async () => {
    const t = await fakeApp();
    const cases: [string, string, string][] = [
      ['get', '/classify', 'POST'], ['post', '/healthz', 'GET, HEAD'], ['delete', '/v1/models', 'GET, HEAD'],
      ['get', '/v2/models/fake-vit-acm/infer', 'POST'], ['put', '/v2/models/fake-vit-acm/versions/1/infer', 'POST'],
      ['get', '/Classify/', 'POST'],
    ];
    for (const [method, path, allow] of cases) {
      const res = await request(t.app)[method as 'get'](path).expect(405);
      assert.equal(res.headers.allow, allow, `${method} ${path}`);
      const message = path.startsWith('/v2/') ? (res.body as { error: string }).error
        : (res.body as { error: { code: string; message: string } }).error.message;
      if (!path.startsWith('/v2/')) assert.equal((res.body as { error: { code: string } }).error.code, 'method_not_allowed');
      assert.equal(message, `${path} takes ${allow}; got ${method.toUpperCase()}`);
    }
    const options = await request(t.app).options('/classify').expect(204);
    assert.equal(options.headers.allow, 'POST');
    await request(t.app).options('/nope').expect(404);
  });
});
