// The TypeScript SDK (clients/sdk.ts) against the real HTTP server in-process (fake backend):
// typed results equal to what the server answers, every failure an AcmError with the server's
// code and status, client-side failures (unreachable, aborted) with their own codes. stream()
// is checked against an in-test WebSocket server speaking the documented /asr protocol.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { WebSocketServer } from 'ws';
import { AcmClient, AcmError, sniffImageType, type StreamEvent } from '../clients/sdk.js';
import { buildApp, fakeApp, FakeBackend, LABELS, testConfig, type TestApp } from './support/fake.js';
import { makeImage, type Format } from './support/images.js';

async function listen(app: TestApp['app'] | ((req: never, res: never) => void)): Promise<{ server: Server; url: string }> {
  const server = createServer(app as Parameters<typeof createServer>[0]);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function rejectsWith(p: Promise<unknown>, code: string, status: number, message?: RegExp): Promise<AcmError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof AcmError, `an AcmError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.equal(err.status, status);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected AcmError ${code}`);
}

describe('SDK over HTTP', () => {
  let t: TestApp & { backend: FakeBackend };
  let server: Server;
  let client: AcmClient;
  let png: Buffer;
  before(async () => {
    t = await fakeApp();
    const l = await listen(t.app);
    server = l.server;
    client = new AcmClient({ url: l.url });
    png = await makeImage(5);
  });
  after(() => server.close());

  it('lists models', async () => {
    const models = await client.models();
    assert.equal(models.length, 1);
    assert.equal(models[0]?.name, 'fake-vit-acm');
    assert.deepEqual((models[0] as { labels?: unknown }).labels, LABELS);
    assert.equal(await client.ready(), true);
  });

  it('classifies bytes, ArrayBuffer and Blob alike, with the budget, top-k and timings', async () => {
    const r = await client.classify(png, { budget: 0.5, topK: 3 });
    assert.equal(r.model, 'fake-vit-acm');
    assert.equal(r.predictions.length, 3);
    assert.equal(r.compute.budget, 0.5);
    assert.ok(r.compute.used <= Math.max(0.5, r.compute.floor));
    assert.deepEqual(r.compute.map.grid, [4, 4]);
    assert.ok(r.timings && r.timings.totalMs >= 0 && r.timings.queueMs >= 0);
    const direct = await (await fetch(`${client.url}/classify?top_k=3`, { method: 'POST', headers: { 'Content-Type': 'image/png', 'X-Budget': '0.5' },
      body: new Uint8Array(png) })).json() as unknown;
    assert.deepEqual({ model: r.model, predictions: r.predictions, compute: r.compute }, direct, 'the result is the server JSON');
    const ab = new Uint8Array(png).buffer;
    assert.deepEqual((await client.classify(ab, { budget: 0.5, topK: 3 })).predictions, r.predictions);
    assert.deepEqual((await client.classify(new Blob([new Uint8Array(png)]), { budget: 0.5, topK: 3 })).predictions, r.predictions);
    assert.equal((await client.classify(png)).compute.budget, 1, 'no budget: the server default');
  });

  it('sends every supported format with its media type', async () => {
    for (const format of ['png', 'jpeg', 'webp', 'gif', 'tiff'] as Format[]) {
      const file = await makeImage(2, format);
      assert.equal(sniffImageType(file), `image/${format}`);
      await client.classify(file);
    }
    assert.equal(sniffImageType(Buffer.from('hello')), undefined);
  });

  it('raises AcmError with the server code, status and message', async () => {
    await rejectsWith(client.classify(png, { budget: 1.5 }), 'invalid_budget', 400, /X-Budget must be a number in \(0, 1\]; got "1.5"/);
    await rejectsWith(client.classify(png, { topK: 11 }), 'bad_request', 400, /top_k must be an integer in \[1, 10\]; got 11/);
    await rejectsWith(client.classify(png, { model: 'nope' }), 'unknown_model', 404, /got "nope"/);
    await rejectsWith(client.classify(Buffer.from('hello')), 'unsupported_media_type', 415, /Content-Type must be one of/);
    await rejectsWith(client.classify(Buffer.from('hello'), { contentType: 'image/png' }), 'invalid_image', 400);
    await rejectsWith(client.classify(new Uint8Array(0), { contentType: 'image/png' }), 'empty_body', 400);
  });

  it('aborts a request through its signal', async () => {
    t.backend.hold();
    try {
      const ac = new AbortController();
      const p = client.classify(png, { signal: ac.signal });
      setTimeout(() => ac.abort(), 50);
      await rejectsWith(p, 'aborted', 0);
    } finally {
      t.backend.release();
    }
  });

  it('gives up after timeoutMs', async () => {
    t.backend.hold();
    try {
      await rejectsWith(new AcmClient({ url: client.url, timeoutMs: 100 }).classify(png), 'timeout', 0, /within 100 ms/);
    } finally {
      t.backend.release();
    }
  });
});

describe('SDK failures without an answer', () => {
  it('reports a server that is not ready, with Retry-After', async () => {
    const t = buildApp(testConfig());
    const { server, url } = await listen(t.app);
    try {
      const client = new AcmClient({ url });
      assert.equal(await client.ready(), false);
      const e = await rejectsWith(client.classify(await makeImage(1)), 'not_ready', 503);
      assert.equal(e.retryAfterS, 1);
    } finally {
      server.close();
    }
  });

  it('reports an unreachable server and refuses a URL that is not http(s)', async () => {
    const { server, url } = await listen(() => undefined);
    server.close();
    await once(server, 'close');
    await rejectsWith(new AcmClient({ url }).models(), 'unreachable', 0, /cannot reach/);
    await rejectsWith(new AcmClient({ url }).stream([], { sampleRate: 16000 }).next(), 'unreachable', 0, /cannot open .*\/asr: .*ECONNREFUSED/);
    assert.throws(() => new AcmClient({ url: 'ftp://x' }), /url must be an http\(s\) URL; got "ftp:\/\/x"/);
  });
});

describe('SDK stream() against the documented /asr protocol', () => {
  /** A server following the protocol: ready after start, a partial per binary frame, final after stop. */
  async function asrDouble(behaviour: 'ok' | 'error' | 'close'): Promise<{ url: string; seen: unknown[]; paths: string[]; close: () => void }> {
    const http = createServer();
    const wss = new WebSocketServer({ server: http, path: '/asr' });
    const seen: unknown[] = [];
    const paths: string[] = [];
    wss.on('connection', (ws, req) => {
      paths.push(req.url ?? '');
      let bytes = 0;
      ws.on('message', (data, isBinary) => {
        if (isBinary) {
          bytes += (data as Buffer).length;
          seen.push(bytes);
          const compute = { budget: 0.5, used: 0.4, gflops: 0.1, frames: { frame_ms: 20, values: [0.4] } };
          ws.send(JSON.stringify({ type: 'partial', text: `heard ${bytes}`, compute }));
          return;
        }
        const msg = JSON.parse((data as Buffer).toString('utf8')) as { type: string };
        seen.push(msg);
        if (msg.type === 'start' && behaviour === 'error') {
          ws.send(JSON.stringify({ type: 'error', code: 'invalid_budget', message: 'budget must be a number in (0, 1]; got 7' }));
          ws.close(4401);
        } else if (msg.type === 'start' && behaviour === 'close') {
          ws.close(4504, 'shutting down');
        } else if (msg.type === 'start') {
          ws.send(JSON.stringify({ type: 'ready' }));
        } else if (msg.type === 'stop') {
          ws.send(JSON.stringify({ type: 'final', text: `heard ${bytes} bytes`, compute: { budget: 0.5, used: 0.45, gflops: 0.2, frames: { frame_ms: 20, values: [0.4, 0.5] } } }));
          ws.close(1000);
        }
      });
    });
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    return { url: `http://127.0.0.1:${(http.address() as AddressInfo).port}`, seen, paths, close: () => { wss.close(); http.close(); } };
  }

  it('names the model at the handshake, where the server chooses it, and not in the start message', async () => {
    const d = await asrDouble('ok');
    try {
      for await (const e of new AcmClient({ url: d.url }).stream([new Uint8Array(320)], { sampleRate: 16000, model: 'speech b&c' })) void e;
      assert.deepEqual(d.paths, ['/asr?model=speech+b%26c']);
      assert.deepEqual(d.seen[0], { type: 'start', sample_rate: 16000, encoding: 'pcm_s16le' });
      for await (const e of new AcmClient({ url: d.url }).stream([new Uint8Array(320)], { sampleRate: 16000 })) void e;
      assert.equal(d.paths[1], '/asr');
    } finally {
      d.close();
    }
  });

  it('sends start, waits for ready, sends the audio then stop, and yields partials then the final', async () => {
    const d = await asrDouble('ok');
    try {
      const chunks = [new Uint8Array(3200), new Int16Array(800), new Uint8Array(100).buffer];
      const events: StreamEvent[] = [];
      for await (const e of new AcmClient({ url: d.url }).stream(chunks, { sampleRate: 16000, encoding: 'pcm_s16le', budget: 0.5 })) events.push(e);
      assert.deepEqual(d.seen, [{ type: 'start', sample_rate: 16000, encoding: 'pcm_s16le', budget: 0.5 }, 3200, 4800, 4900, { type: 'stop' }]);
      assert.deepEqual(events.map((e) => [e.type, e.text]), [['partial', 'heard 3200'], ['partial', 'heard 4800'], ['partial', 'heard 4900'], ['final', 'heard 4900 bytes']]);
      assert.deepEqual(events.at(-1)?.compute.frames, { frame_ms: 20, values: [0.4, 0.5] });
    } finally {
      d.close();
    }
  });

  it('turns an error message into AcmError with the server code, message and close code', async () => {
    const d = await asrDouble('error');
    try {
      const it = new AcmClient({ url: d.url }).stream([new Uint8Array(10)], { sampleRate: 16000, budget: 7 });
      const e = await rejectsWith(it.next(), 'invalid_budget', 0, /budget must be a number in \(0, 1\]; got 7/);
      assert.equal(e.closeCode, 4401);
    } finally {
      d.close();
    }
  });

  it('fails at once when the server refuses, even while the audio source has nothing to give', { timeout: 10_000 }, async () => {
    const d = await asrDouble('error');
    try {
      const silent = (async function* (): AsyncGenerator<Uint8Array> {
        await new Promise(() => undefined);
        yield new Uint8Array(0);
      })();
      await rejectsWith(new AcmClient({ url: d.url }).stream(silent, { sampleRate: 16000, budget: 7 }).next(), 'invalid_budget', 0);
    } finally {
      d.close();
    }
  });

  it('reports a close without a final transcript or error message as stream_closed with the close code', async () => {
    const d = await asrDouble('close');
    try {
      const e = await rejectsWith(new AcmClient({ url: d.url }).stream([], { sampleRate: 16000 }).next(), 'stream_closed', 0,
        /closed before the final transcript \(close code 4504: shutting down\)/);
      assert.equal(e.closeCode, 4504);
    } finally {
      d.close();
    }
  });
});
