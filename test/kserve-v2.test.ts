// KServe / Open Inference Protocol v2 over a fake backend: health, server and model metadata in
// the protocol's shape, inference from base64 images and from preprocessed FP32 tensors (which
// must agree with each other and with POST /classify), batches that equal their singles, the
// budget parameter's validation, and every malformed request answered as {"error": "..."}.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import request from 'supertest';
import { decodeImage } from '../server/image.js';
import { buildApp, fakeApp, fakeBundle, fakeManifest, FakeBackend, LABELS, testConfig, type TestApp } from './support/fake.js';
import { makeImage } from './support/images.js';

interface Tensor { name: string; datatype: string; shape: number[]; data: number[] }
interface InferResponse { model_name: string; model_version: string; id?: string; parameters: Record<string, number>; outputs: Tensor[] }

function output(body: InferResponse, name: string): Tensor {
  const t = body.outputs.find((o) => o.name === name);
  assert.ok(t, `output ${name} is present`);
  return t;
}

function bytesRequest(images: Buffer[], budget?: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { ...(budget === undefined ? {} : { parameters: { budget } }),
    inputs: [{ name: 'image', datatype: 'BYTES', shape: [images.length], data: images.map((b) => b.toString('base64')) }], ...extra };
}

function errorOf(res: request.Response): string {
  const body = res.body as { error?: unknown };
  assert.deepEqual(Object.keys(body), ['error'], 'v2 errors are {"error": "..."}');
  assert.equal(typeof body.error, 'string');
  return body.error as string;
}

describe('KServe v2 health and metadata', () => {
  it('answers live at once, ready with 4xx until models load and 200 after, and server metadata', async () => {
    const t = buildApp(testConfig());
    await request(t.app).get('/v2/health/live').expect(200, { live: true });
    const notReady = await request(t.app).get('/v2/health/ready').expect(400);
    assert.match(errorOf(notReady), /loading/);
    const refused = await request(t.app).post('/v2/models/fake-vit-acm/infer').send(bytesRequest([await makeImage(1)])).expect(503);
    assert.match(errorOf(refused), /loading/);
    assert.equal(refused.headers['retry-after'], '1');
    await t.inference.load([fakeBundle()], () => new FakeBackend());
    await request(t.app).get('/v2/health/ready').expect(200, { ready: true });
    const meta = await request(t.app).get('/v2').expect(200);
    assert.equal((meta.body as { name: string }).name, 'acm-serve');
    assert.equal(typeof (meta.body as { version: unknown }).version, 'string');
    assert.deepEqual((meta.body as { extensions: unknown }).extensions, []);
  });

  it('describes the model: name, versions, platform, input and output tensors with datatype and shape', async () => {
    const t = await fakeApp();
    for (const path of ['/v2/models/fake-vit-acm', '/v2/models/fake-vit-acm/versions/1']) {
      const res = await request(t.app).get(path).expect(200);
      const body = res.body as Record<string, unknown>;
      assert.equal(body.name, 'fake-vit-acm');
      assert.deepEqual(body.versions, ['1']);
      assert.equal(body.platform, 'onnxruntime_onnx');
      assert.deepEqual(body.inputs, [
        { name: 'image', datatype: 'BYTES', shape: [-1] },
        { name: 'pixel_values', datatype: 'FP32', shape: [-1, 1, 28, 28] },
      ]);
      assert.deepEqual(body.outputs, [
        { name: 'probabilities', datatype: 'FP32', shape: [-1, 10] },
        { name: 'token_fractions', datatype: 'FP32', shape: [-1, 17] },
        { name: 'budget_used', datatype: 'FP64', shape: [-1] },
        { name: 'gflops', datatype: 'FP64', shape: [-1] },
      ]);
      const params = body.parameters as Record<string, unknown>;
      assert.deepEqual(params.labels, LABELS);
      assert.equal(params.budget_floor, 0.05);
    }
    await request(t.app).get('/v2/models/fake-vit-acm/ready').expect(200, { name: 'fake-vit-acm', ready: true });
    await request(t.app).get('/v2/models/fake-vit-acm/versions/1/ready').expect(200);
    assert.match(errorOf(await request(t.app).get('/v2/models/nope').expect(404)), /model must be one of fake-vit-acm; got "nope"/);
    assert.match(errorOf(await request(t.app).get('/v2/models/nope/ready').expect(404)), /"nope"/);
    assert.match(errorOf(await request(t.app).get('/v2/models/fake-vit-acm/versions/2').expect(404)), /version 1 only; got version "2"/);
    assert.match(errorOf(await request(t.app).get('/v2/nothing').expect(404)), /no route GET \/v2\/nothing/);
  });
});

describe('POST /v2/models/{name}/infer', () => {
  let t: TestApp & { backend: FakeBackend };
  let png: Buffer;
  before(async () => {
    t = await fakeApp();
    png = await makeImage(4);
  });

  it('classifies a base64 image like POST /classify: probabilities, token fractions and compute parameters', async () => {
    const res = await request(t.app).post('/v2/models/fake-vit-acm/infer').send(bytesRequest([png], 0.5, { id: 'req-7' })).expect(200);
    const body = res.body as InferResponse;
    assert.equal(body.model_name, 'fake-vit-acm');
    assert.equal(body.model_version, '1');
    assert.equal(body.id, 'req-7', 'the request id is echoed');
    assert.deepEqual(body.outputs.map((o) => o.name), ['probabilities', 'token_fractions', 'budget_used', 'gflops']);
    const probs = output(body, 'probabilities');
    assert.equal(probs.datatype, 'FP32');
    assert.deepEqual(probs.shape, [1, 10]);
    assert.ok(Math.abs(probs.data.reduce((s, v) => s + v, 0) - 1) < 1e-5, 'probabilities sum to 1');
    const tokens = output(body, 'token_fractions');
    assert.deepEqual([tokens.datatype, tokens.shape], ['FP32', [1, 17]]);
    for (const v of tokens.data) assert.ok(v >= 0 && v <= 1);

    const classic = await request(t.app).post('/classify?top_k=10').set('X-Budget', '0.5').set('Content-Type', 'image/png').send(png).expect(200);
    const c = classic.body as { predictions: { label: string; score: number }[];
      compute: { budget: number; used: number; floor: number; gflops: number; dense_gflops: number; map: { values: number[][] } } };
    for (const p of c.predictions) {
      assert.ok(Math.abs((probs.data[LABELS.indexOf(p.label)] ?? -1) - p.score) < 1e-6, `probability of ${p.label} matches /classify`);
    }
    // Patch (r, c) of the map is token grid_offset + r * cols + c.
    assert.deepEqual(c.compute.map.values.flat().map((v) => Math.fround(v)), tokens.data.slice(1));
    assert.deepEqual(body.parameters, { budget: 0.5, floor: c.compute.floor, used: c.compute.used, gflops: c.compute.gflops,
      dense_gflops: c.compute.dense_gflops, batch_size: 1 });
    assert.deepEqual(output(body, 'budget_used'), { name: 'budget_used', datatype: 'FP64', shape: [1], data: [c.compute.used] });
    assert.equal(Number(res.headers['x-budget-used']), c.compute.used);
    assert.match(String(res.headers['server-timing']), /^queue;dur=[\d.]+, inference;dur=[\d.]+, total;dur=[\d.]+$/);
  });

  it('gives the same answer for a preprocessed FP32 tensor [1, C, H, W] as for the encoded image', async () => {
    const pixels = await decodeImage(png, fakeManifest(), 1e6);
    const tensor = { parameters: { budget: 0.5 }, inputs: [{ name: 'pixel_values', datatype: 'FP32', shape: [1, 1, 28, 28], data: Array.from(pixels) }] };
    const fromPixels = (await request(t.app).post('/v2/models/fake-vit-acm/infer').send(tensor).expect(200)).body as InferResponse;
    const fromBytes = (await request(t.app).post('/v2/models/fake-vit-acm/infer').send(bytesRequest([png], 0.5)).expect(200)).body as InferResponse;
    assert.deepEqual(fromPixels.outputs, fromBytes.outputs);
    // Nested data (row-major) is the same tensor.
    const nested = { ...tensor, inputs: [{ ...tensor.inputs[0], data: [[Array.from({ length: 28 }, (_, r) => Array.from(pixels.subarray(r * 28, r * 28 + 28)))]] }] };
    const fromNested = (await request(t.app).post('/v2/models/fake-vit-acm/infer').send(nested).expect(200)).body as InferResponse;
    assert.deepEqual(fromNested.outputs, fromBytes.outputs);
  });

  it('answers a batch of B images element by element, each element queued through the batcher at the request budget', async () => {
    const other = await makeImage(9);
    t.backend.batches.length = 0;
    const batch = (await request(t.app).post('/v2/models/fake-vit-acm/infer').send(bytesRequest([png, other], 0.3)).expect(200)).body as InferResponse;
    assert.deepEqual(t.backend.batches.flat(), [0.3, 0.3], 'both elements reached the backend with the request budget');
    const one = (await request(t.app).post('/v2/models/fake-vit-acm/infer').send(bytesRequest([png], 0.3)).expect(200)).body as InferResponse;
    const two = (await request(t.app).post('/v2/models/fake-vit-acm/infer').send(bytesRequest([other], 0.3)).expect(200)).body as InferResponse;
    for (const name of ['probabilities', 'token_fractions', 'budget_used', 'gflops']) {
      const b = output(batch, name);
      assert.equal(b.shape[0], 2);
      assert.deepEqual(b.data, [...output(one, name).data, ...output(two, name).data], `${name} of the batch = the singles`);
    }
    assert.equal(batch.parameters.batch_size, 2);
    assert.ok(Math.abs((batch.parameters.gflops ?? 0) - (one.parameters.gflops ?? 0) - (two.parameters.gflops ?? 0)) < 1e-12);
  });

  it('returns only the outputs asked for', async () => {
    const body = (await request(t.app).post('/v2/models/fake-vit-acm/infer')
      .send(bytesRequest([png], undefined, { outputs: [{ name: 'token_fractions' }] })).expect(200)).body as InferResponse;
    assert.deepEqual(body.outputs.map((o) => o.name), ['token_fractions']);
    assert.equal(body.parameters.budget, 1, 'no budget parameter: the default budget');
  });

  it('validates parameters.budget like X-Budget: 400 naming the value and the range', async () => {
    for (const [budget, shownAs] of [[0, '0'], [1.5, '1.5'], [-0.2, '-0.2'], ['abc', '"abc"'], [true, '"true"']] as const) {
      const res = await request(t.app).post('/v2/models/fake-vit-acm/infer').send(bytesRequest([png], budget)).expect(400);
      assert.equal(errorOf(res), `parameters.budget must be a number in (0, 1]; got ${shownAs}`);
    }
    const asText = (await request(t.app).post('/v2/models/fake-vit-acm/infer').send(bytesRequest([png], '0.25')).expect(200)).body as InferResponse;
    assert.equal(asText.parameters.budget, 0.25);
  });

  it('refuses malformed requests with 4xx and a message naming the field', async () => {
    const post = (body: unknown, type = 'application/json'): request.Test =>
      request(t.app).post('/v2/models/fake-vit-acm/infer').set('Content-Type', type).send(typeof body === 'string' ? body : JSON.stringify(body));
    const cases: [unknown, number, RegExp][] = [
      ['{"inputs": [', 400, /request body must be JSON/],
      [[1, 2], 400, /must be a JSON object/],
      [{ inputs: [] }, 400, /exactly one tensor/],
      [{ inputs: [{ name: 'x', datatype: 'BYTES', shape: [1], data: ['AA=='] }] }, 400, /inputs\[0\]\.name must be image \(BYTES\) or pixel_values \(FP32\); got "x"/],
      [{ inputs: [{ name: 'image', datatype: 'FP32', shape: [1], data: [1] }] }, 400, /datatype must be BYTES for image; got "FP32"/],
      [{ inputs: [{ name: 'image', datatype: 'BYTES', shape: [2], data: ['AA=='] }] }, 400, /must hold 2 elements/],
      [{ inputs: [{ name: 'image', datatype: 'BYTES', shape: [0], data: [] }] }, 400, /batch\) must be in \[1, 64\]; got 0/],
      [{ inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: ['not base64!'] }] }, 400, /must be the image bytes in base64/],
      [{ inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: [Buffer.from('hello').toString('base64')] }] }, 400, /image could not be decoded/],
      [{ inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: [''] }] }, 400, /image body is empty/],
      [{ inputs: [{ name: 'pixel_values', datatype: 'FP32', shape: [1, 3, 28, 28], data: [] }] }, 400, /shape must be \[B, 1, 28, 28\] for pixel_values; got \[1,3,28,28\]/],
      [{ inputs: [{ name: 'pixel_values', datatype: 'FP32', shape: [1, 1, 28, 28], data: [1, 2] }] }, 400, /must hold 784 values/],
      [{ inputs: [{ name: 'pixel_values', datatype: 'FP32', shape: [1, 1, 28, 28], data: [...new Array<number>(783).fill(0), 'x'] }] }, 400, /data\[783\] must be a finite number; got "x"/],
      [{ inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: ['AA=='] }], outputs: [{ name: 'logits' }] }, 400, /outputs\[0\]\.name must be one of probabilities, token_fractions, budget_used, gflops; got "logits"/],
      ['', 400, /request body is empty/],
    ];
    for (const [body, status, message] of cases) {
      const res = await post(body).expect(status);
      assert.match(errorOf(res), message, `${JSON.stringify(body).slice(0, 80)}`);
    }
    assert.match(errorOf(await post('{}', 'text/plain').expect(415)), /Content-Type must be application\/json; got "text\/plain"/);
    assert.match(errorOf(await request(t.app).post('/v2/models/nope/infer').send(bytesRequest([png])).expect(404)), /got "nope"/);
  });

  it('refuses a body over the limit with 413 before reading it all', async () => {
    const small = await fakeApp({ ACM_MAX_IMAGE_BYTES: '1000' });
    const huge = JSON.stringify(bytesRequest([Buffer.alloc(2_000_000, 1)]));
    const res = await request(small.app).post('/v2/models/fake-vit-acm/infer').set('Content-Type', 'application/json').send(huge).expect(413);
    assert.match(errorOf(res), /must be at most \d+ bytes/);
    const one = await request(small.app).post('/v2/models/fake-vit-acm/infer').send(bytesRequest([Buffer.alloc(1001, 1)])).expect(413);
    assert.equal(errorOf(one), 'inputs[0].data[0] must decode to at most 1000 bytes; got 1001');
  });
});
