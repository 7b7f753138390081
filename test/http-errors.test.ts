// Misuse of POST /classify: each bad input gets its 4xx JSON error with a stable code and a
// message naming the field, bound and value; and the server keeps serving afterwards.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { request as httpRequest, type Server } from 'node:http';
import { once } from 'node:events';
import { connect, type AddressInfo } from 'node:net';
import request from 'supertest';
import { httpServer } from '../server/http/app.js';
import { fakeApp, FakeBackend, type TestApp } from './support/fake.js';
import { stalledUpload } from './support/stalled-upload.js';
import { bombPng, makeImage, truncated } from './support/images.js';

interface ErrorAnswer { error: { code: string; message: string } }

describe('bad input to POST /classify', () => {
  let t: TestApp & { backend: FakeBackend };
  let png: Buffer;
  let jpeg: Buffer;
  before(async () => {
    t = await fakeApp({ ACM_MAX_IMAGE_BYTES: '65536' });
    png = await makeImage(4, 'png', 64, 64);
    jpeg = await makeImage(4, 'jpeg', 64, 64);
  });

  async function refused(req: request.Test, status: number, code: string, message?: RegExp): Promise<ErrorAnswer> {
    const res = await req.expect(status).expect('Content-Type', /json/);
    const body = res.body as ErrorAnswer;
    assert.deepEqual(Object.keys(body), ['error']);
    assert.equal(body.error.code, code);
    if (message) assert.match(body.error.message, message);
    // The server is still serving.
    await request(t.app).post('/classify').set('Content-Type', 'image/png').send(png).expect(200);
    return body;
  }

  const post = (query = '') => request(t.app).post(`/classify${query}`);

  it('refuses an empty body', async () => {
    await refused(post().set('Content-Type', 'image/png').send(Buffer.alloc(0)), 400, 'empty_body');
  });

  it('refuses bytes that are not an image', async () => {
    await refused(post().set('Content-Type', 'image/png').send(Buffer.from('definitely not a png')), 400, 'invalid_image');
  });

  it('refuses a truncated PNG', async () => {
    await refused(post().set('Content-Type', 'image/png').send(truncated(png)), 400, 'invalid_image', /truncated|damaged/);
  });

  it('refuses a truncated JPEG', async () => {
    await refused(post().set('Content-Type', 'image/jpeg').send(truncated(jpeg)), 400, 'invalid_image');
  });

  it('refuses Content-Type text/plain', async () => {
    await refused(post().set('Content-Type', 'text/plain').send('hello'), 415, 'unsupported_media_type', /got "text\/plain"/);
  });

  it('refuses Content-Type image/svg+xml', async () => {
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>';
    await refused(post().set('Content-Type', 'image/svg+xml').send(svg), 415, 'unsupported_media_type');
  });

  it('refuses an SVG sent as image/png by its decoded format', async () => {
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>');
    await refused(post().set('Content-Type', 'image/png').send(svg), 415, 'unsupported_media_type', /got "svg"/);
  });

  it('refuses a body without Content-Type', async () => {
    const req = post();
    req.unset('Content-Type');
    await refused(req.send(png), 415, 'unsupported_media_type');
  });

  it('refuses an image over the byte limit with 413', async () => {
    const body = await refused(post().set('Content-Type', 'image/png').send(Buffer.alloc(70_000, 1)), 413, 'image_too_large');
    assert.match(body.error.message, /65536/);
  });

  it('refuses a multipart image over the byte limit with 413', async () => {
    // Under limit + multipart overhead by Content-Length, so the limit is enforced while streaming.
    await refused(post().attach('image', Buffer.alloc(70_000, 1), 'big.png'), 413, 'image_too_large', /got more than 65536/);
    await refused(post().attach('image', Buffer.alloc(200_000, 1), 'big.png'), 413, 'image_too_large', /got Content-Length/);
  });

  it('refuses a multipart body without field "image"', async () => {
    await refused(post().attach('picture', png, 'x.png'), 400, 'empty_body', /field image/);
  });

  it('refuses an image over the pixel limit (a header declaring 20000x20000)', async () => {
    await refused(post().set('Content-Type', 'image/png').send(bombPng(20000, 20000)), 413, 'image_too_large',
      /at most 40000000 pixels; got 20000x20000/);
  });

  it('refuses a budget that is not a number', async () => {
    await refused(post().set('X-Budget', 'abc').set('Content-Type', 'image/png').send(png), 400, 'invalid_budget',
      /^X-Budget must be a number in \(0, 1\]; got "abc"$/);
  });

  it('refuses a budget in hexadecimal rather than reading it as 1', async () => {
    await refused(post('?budget=0x1').set('Content-Type', 'image/png').send(png), 400, 'invalid_budget', /got "0x1"/);
  });

  it('refuses a budget <= 0', async () => {
    await refused(post('?budget=0').set('Content-Type', 'image/png').send(png), 400, 'invalid_budget', /got "0"/);
    await refused(post('?budget=-0.5').set('Content-Type', 'image/png').send(png), 400, 'invalid_budget', /got "-0.5"/);
  });

  it('refuses a budget > 1', async () => {
    await refused(post('?budget=1.5').set('Content-Type', 'image/png').send(png), 400, 'invalid_budget', /\(0, 1\]; got "1.5"/);
  });

  it('refuses a budget given twice in the query', async () => {
    await refused(post('?budget=0.5&budget=0.6').set('Content-Type', 'image/png').send(png), 400, 'bad_request', /once/);
  });

  it('refuses a query parameter it does not take, naming it and the ones it takes', async () => {
    // A misspelt budget must not run at the default budget.
    await refused(post('?budegt=0.25').set('Content-Type', 'image/png').send(png), 400, 'bad_request',
      /POST \/classify takes the query parameters budget, top_k, model; got "budegt"/);
    await refused(post('?budget=0.5&topk=3').set('Content-Type', 'image/png').send(png), 400, 'bad_request', /got "topk"/);
  });

  it('refuses an unknown model with 404', async () => {
    await refused(post('?model=nope').set('Content-Type', 'image/png').send(png), 404, 'unknown_model',
      /one of fake-vit-acm; got "nope"/);
  });

  it('refuses top_k that is not an integer, 0, or above the class count', async () => {
    await refused(post('?top_k=abc').set('Content-Type', 'image/png').send(png), 400, 'bad_request', /top_k/);
    await refused(post('?top_k=0').set('Content-Type', 'image/png').send(png), 400, 'bad_request', /top_k/);
    await refused(post('?top_k=11').set('Content-Type', 'image/png').send(png), 400, 'bad_request', /\[1, 10\]; got 11/);
  });

  it('answers a runtime failure with a JSON 500 that leaks no internals', async () => {
    t.backend.failWith = new Error('secret stack detail');
    try {
      const res = await post().set('Content-Type', 'image/png').send(png).expect(500).expect('Content-Type', /json/);
      const body = res.body as ErrorAnswer;
      assert.equal(body.error.code, 'internal');
      assert.doesNotMatch(body.error.message, /secret/);
    } finally {
      t.backend.failWith = undefined;
    }
    await post().set('Content-Type', 'image/png').send(png).expect(200);
  });
});

describe('overload and disconnects', () => {
  let t: TestApp & { backend: FakeBackend };
  let server: Server;
  let png: Buffer;
  before(async () => {
    t = await fakeApp({ ACM_MAX_BATCH_SIZE: '1', ACM_QUEUE_CAPACITY: '1', ACM_MAX_WAIT_MS: '0' });
    server = t.app.listen(0);
    png = await makeImage(5);
  });
  after(() => {
    t.backend.release();
    server.close();
  });

  const depth = (): number => t.inference.queueDepth('fake-vit-acm');

  async function until(cond: () => boolean): Promise<void> {
    for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
    assert.ok(cond(), 'condition reached');
  }

  it('answers queue_full with 503 and Retry-After, and removes the work of a client that disconnects', async () => {
    t.backend.hold();
    const first = request(server).post('/classify?budget=0.9').set('Content-Type', 'image/png').send(png);
    const firstDone = first.then((r) => r.status);
    await until(() => t.backend.batches.length === 1);

    // A raw client that will hang up while its request waits in the queue.
    const { port } = server.address() as AddressInfo;
    const quitter = httpRequest({ port, method: 'POST', path: '/classify?budget=0.2', headers: { 'Content-Type': 'image/png' } });
    quitter.on('error', () => undefined);
    quitter.end(png);
    await until(() => depth() === 1);

    const full = await request(server).post('/classify').set('Content-Type', 'image/png').send(png).expect(503);
    assert.equal((full.body as ErrorAnswer).error.code, 'queue_full');
    assert.equal(full.headers['retry-after'], '1');

    quitter.destroy();
    await until(() => depth() === 0);
    t.backend.release();
    assert.equal(await firstDone, 200);
    await request(server).post('/classify?budget=0.7').set('Content-Type', 'image/png').send(png).expect(200);
    assert.deepEqual(t.backend.batches, [[0.9], [0.7]], 'the disconnected request never reached the backend');
  });

  it('counts uploads still being read against the room, and frees it when they hang up', async () => {
    const { port } = server.address() as AddressInfo;
    // Room is queue capacity 1 + one running batch of 1: two stalled uploads fill it.
    const stalled = [0, 1].map(() => {
      const req = httpRequest({ port, method: 'POST', path: '/classify', headers: { 'Content-Type': 'image/png', 'Content-Length': '100' } });
      req.on('error', () => undefined);
      req.write(Buffer.alloc(10));
      return req;
    });
    await until(() => t.inference.inFlight('fake-vit-acm') === 2);
    assert.equal(depth(), 0, 'nothing is queued yet');
    const full = await request(server).post('/classify').set('Content-Type', 'image/png').send(png).expect(503);
    assert.match((full.body as ErrorAnswer).error.message, /2 in flight \(limit 2\)/);
    for (const req of stalled) req.destroy();
    await until(() => t.inference.inFlight('fake-vit-acm') === 0);
    await request(server).post('/classify').set('Content-Type', 'image/png').send(png).expect(200);
  });
});

describe('Expect: 100-continue', () => {
  let t: TestApp & { backend: FakeBackend };
  let server: Server;
  before(async () => {
    t = await fakeApp();
    server = httpServer(t.app).listen(0, '127.0.0.1');
    await once(server, 'listening');
  });
  after(() => server.close());

  /** Sends a head with Expect: 100-continue; the body only once the server says 100. Everything the socket received, as text. */
  function expecting(path: string, body: Buffer): Promise<{ text: string; sentBody: boolean }> {
    const { port } = server.address() as AddressInfo;
    return new Promise((resolve, reject) => {
      let text = '';
      let sentBody = false;
      const socket = connect(port, '127.0.0.1', () => {
        socket.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: ${body.length}\r\n` +
          'Expect: 100-continue\r\nConnection: close\r\n\r\n');
      });
      socket.on('data', (d: Buffer) => {
        text += d.toString('latin1');
        if (!sentBody && text.startsWith('HTTP/1.1 100 Continue\r\n\r\n')) {
          sentBody = true;
          socket.write(body);
        }
      });
      socket.on('end', () => resolve({ text, sentBody }));
      socket.on('error', reject);
    });
  }

  it('refuses a request from its head without asking for the body', async () => {
    const r = await expecting('/classify?budget=2', await makeImage(7));
    assert.equal(r.sentBody, false, 'no 100 Continue: the upload never started');
    assert.match(r.text, /^HTTP\/1.1 400 Bad Request\r\n/);
    assert.match(r.text, /"code":"invalid_budget"/);
  });

  it('asks for the body of a request it will read, then answers it', async () => {
    const r = await expecting('/classify?budget=0.5', await makeImage(7));
    assert.equal(r.sentBody, true);
    assert.match(r.text, /^HTTP\/1.1 100 Continue\r\n\r\nHTTP\/1.1 200 OK\r\n/);
    assert.match(r.text, /"predictions":/);
  });
});

describe('a body that stops arriving', () => {
  let t: TestApp & { backend: FakeBackend };
  let server: Server;
  before(async () => {
    t = await fakeApp({ ACM_REQUEST_TIMEOUT_MS: '300' });
    server = t.app.listen(0);
  });
  after(() => server.close());

  for (const [what, path, headers, sent] of [
    ['a raw image', '/classify', { 'Content-Type': 'image/png' }, Buffer.alloc(10)],
    ['a multipart image', '/classify', { 'Content-Type': 'multipart/form-data; boundary=xx' },
      Buffer.from('--xx\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\nabc')],
    ['a v2 request', '/v2/models/fake-vit-acm/infer', { 'Content-Type': 'application/json' }, Buffer.from('{"inputs": [')],
  ] as const) {
    it(`answers ${what} still arriving at the request deadline with 408 body_timeout, and frees its room`, async () => {
      const r = await stalledUpload((server.address() as AddressInfo).port, path, headers, sent, 1000);
      assert.equal(r.status, 408);
      // The v2 protocol's error body is { error: message }; the server's own is { error: { code, message } }.
      const error = (r.body as { error: string | ErrorAnswer['error'] }).error;
      const message = typeof error === 'string' ? error : error.message;
      if (typeof error !== 'string') assert.equal(error.code, 'body_timeout');
      assert.match(message, new RegExp(`did not arrive within 300 ms \\(ACM_REQUEST_TIMEOUT_MS\\); received ${sent.length} of 1000 bytes`));
      assert.equal(r.connection, 'close');
      assert.ok(r.ms >= 290 && r.ms < 5000, `answered after ${r.ms.toFixed(0)} ms`);
      assert.equal(t.inference.inFlight('fake-vit-acm'), 0, 'the stalled upload no longer holds room');
      await request(server).post('/classify').set('Content-Type', 'image/png').send(await makeImage(6)).expect(200);
    });
  }
});
