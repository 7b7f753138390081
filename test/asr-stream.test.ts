// The /asr WebSocket protocol over the tiny random speech bundle (real onnxruntime): a stream's
// partials and final, the final text equal to POST /transcribe of the same audio, streams batched
// together, and every misuse answered with its error message and close code.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as connectTcp } from 'node:net';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import wavefile from 'wavefile';
import WebSocket from 'ws';
import { pcm16, speechServer, testTone, type SpeechTestServer } from './support/tiny-speech.js';

type Msg = Record<string, unknown> & { type: string };

interface Session {
  ws: WebSocket;
  messages: Msg[];
  closed: Promise<{ code: number; reason: string }>;
}

function connect(url: string, headers: Record<string, string> = {}): Promise<Session> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    const messages: Msg[] = [];
    const closed = new Promise<{ code: number; reason: string }>((r) => ws.on('close', (code, reason) => r({ code, reason: reason.toString() })));
    ws.on('message', (data: Buffer) => messages.push(JSON.parse(data.toString('utf8')) as Msg));
    ws.on('open', () => resolve({ ws, messages, closed }));
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body, headers: res.headers })));
    });
    ws.on('error', reject);
  });
}

/** Streams `audio` as s16le in frames of `frame` samples, then stop; resolves with every message and the close. */
async function stream(url: string, audio: Float32Array, frame: number, start: Record<string, unknown> = {}): Promise<Session & { close: { code: number; reason: string } }> {
  const s = await connect(url);
  s.ws.send(JSON.stringify({ type: 'start', sample_rate: 16000, encoding: 'pcm_s16le', ...start }));
  const bytes = pcm16(audio);
  for (let i = 0; i < bytes.length; i += frame * 2) s.ws.send(bytes.subarray(i, i + frame * 2));
  s.ws.send(JSON.stringify({ type: 'stop' }));
  return { ...s, close: await s.closed };
}

async function misuse(url: string, send: (ws: WebSocket) => void): Promise<{ error: Msg | undefined; code: number }> {
  const s = await connect(url);
  send(s.ws);
  const { code } = await s.closed;
  return { error: s.messages.find((m) => m.type === 'error'), code };
}

async function until(probe: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > end) assert.fail('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const start = JSON.stringify({ type: 'start', sample_rate: 16000, encoding: 'pcm_s16le', budget: 0.5 });

describe('/asr streaming', () => {
  let s: SpeechTestServer;
  const audio = testTone(3.1, 16000, 2);
  before(async () => {
    s = await speechServer({ ACM_MAX_STREAMS: '3', ACM_STREAM_IDLE_TIMEOUT_MS: '400', ACM_MAX_MESSAGE_BYTES: '40000',
      ACM_MAX_STREAM_SECONDS: '5' });
  });
  after(async () => s?.close());

  it('answers ready, partials at least every 500 ms of audio, then the final, and closes with 1000', async () => {
    const r = await stream(s.ws, audio, 1000, { budget: 0.5 });
    assert.equal(r.close.code, 1000);
    const types = r.messages.map((m) => m.type);
    assert.equal(types[0], 'ready');
    assert.equal(types.at(-1), 'final');
    assert.ok(types.slice(1, -1).every((t) => t === 'partial'));
    // 3.1 s of audio: at least one partial per 0.5 s of audio received before the stop.
    assert.ok(types.filter((t) => t === 'partial').length >= 6, `${types.filter((t) => t === 'partial').length} partials`);
    const final = r.messages.at(-1) as Msg & { text: string; compute: { budget: number; used: number; frames: { values: number[] } } };
    assert.equal(final.compute.budget, 0.5);
    assert.ok(final.compute.used <= 0.5 + 1e-12);
    assert.equal(final.compute.frames.values.length, Math.ceil(audio.length / 320));
    // Partials carry the frames since the previous message: together they tile the stream.
    const partials = r.messages.filter((m) => m.type === 'partial') as unknown as { compute: { frames: { start: number; values: number[] } } }[];
    let next = 0;
    for (const p of partials) {
      assert.equal(p.compute.frames.start, next);
      next += p.compute.frames.values.length;
    }
  });

  it('gives the same final text as POST /transcribe of the same audio, whatever the frame size', async () => {
    const w = new wavefile.WaveFile();
    const bytes = pcm16(audio);
    w.fromScratch(1, 16000, '16', Array.from({ length: bytes.length / 2 }, (_, i) => bytes.readInt16LE(2 * i)));
    const whole = (await request(s.url).post('/transcribe?budget=0.5').set('Content-Type', 'audio/wav').send(Buffer.from(w.toBuffer())).expect(200)).body as { text: string; compute: { used: number } };
    assert.ok(whole.text.length > 0);
    for (const frame of [160, 3333, 16000]) {
      const r = await stream(s.ws, audio, frame, { budget: 0.5 });
      const final = r.messages.at(-1) as unknown as { text: string; compute: { used: number } };
      assert.equal(final.text, whole.text, `frames of ${frame} samples`);
      assert.equal(final.compute.used, whole.compute.used);
    }
  });

  it('runs concurrent streams in shared batches', async () => {
    const sizes: number[] = [];
    s.speech.onBatch((b) => sizes.push(b.size));
    const results = await Promise.all([stream(s.ws, audio, 16000), stream(s.ws, audio, 16000), stream(s.ws, testTone(3, 16000, 5), 16000)]);
    for (const r of results) assert.equal(r.close.code, 1000);
    assert.ok(Math.max(...sizes) > 1, `batch sizes ${sizes.join(',')}`);
  });

  it('counts open and ended streams in the metrics', async () => {
    // The server sees a socket close a moment after the client does.
    let text = '';
    for (let i = 0; i < 100 && !/acm_asr_streams_open 0/.test(text); i++) {
      text = await s.metrics.registry.metrics();
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.match(text, /acm_asr_streams_open 0/);
    assert.match(text, /acm_asr_streams_total\{outcome="final"\} [1-9]/);
  });

  it('accepts pcm_f32le', async () => {
    const sess = await connect(s.ws);
    sess.ws.send(JSON.stringify({ type: 'start', sample_rate: 16000, encoding: 'pcm_f32le' }));
    const f32 = Buffer.from(testTone(0.8).buffer);
    sess.ws.send(f32.subarray(0, 25600));
    sess.ws.send(f32.subarray(25600));
    sess.ws.send(JSON.stringify({ type: 'stop' }));
    assert.equal((await sess.closed).code, 1000);
    assert.equal(sess.messages.at(-1)?.type, 'final');
  });

  const cases: [string, (ws: WebSocket) => void, string, number, RegExp][] = [
    ['bad JSON', (ws) => ws.send('{"type": "start",'), 'protocol_error', 4407, /must be JSON objects/],
    ['an unknown message type', (ws) => ws.send('{"type":"pause"}'), 'protocol_error', 4407, /must be "start" or "stop"; got "pause"/],
    ['audio frames before start', (ws) => ws.send(Buffer.alloc(640)), 'protocol_error', 4407, /must follow a start message/],
    ['stop before start', (ws) => ws.send('{"type":"stop"}'), 'protocol_error', 4407, /stop before start/],
    ['a second start', (ws) => { ws.send(start); ws.send(start); }, 'protocol_error', 4407, /start was already received/],
    ['a wrong sample rate', (ws) => ws.send('{"type":"start","sample_rate":44100}'), 'invalid_audio', 4406, /sample_rate must be 16000 .*got 44100/],
    ['an unknown encoding', (ws) => ws.send('{"type":"start","sample_rate":16000,"encoding":"mp3"}'), 'invalid_audio', 4406, /encoding must be one of pcm_s16le, pcm_f32le/],
    ['an odd byte count', (ws) => { ws.send(start); ws.send(Buffer.alloc(641)); }, 'invalid_audio', 4406, /whole 2-byte samples; got 641 bytes/],
    ['a bad budget', (ws) => ws.send('{"type":"start","sample_rate":16000,"budget":"lots"}'), 'invalid_budget', 4401, /budget must be a number in \(0, 1\]/],
    ['a misspelt field in start', (ws) => ws.send('{"type":"start","sample_rate":16000,"budgett":0.25}'), 'protocol_error', 4407,
      /a start message takes the fields type, sample_rate, encoding, budget; got "budgett"/],
    ['a model in start', (ws) => ws.send('{"type":"start","sample_rate":16000,"model":"other"}'), 'protocol_error', 4407,
      /choose the model at the handshake: \/asr\?model=NAME\); got "model"/],
    ['a field in stop', (ws) => { ws.send(start); ws.send('{"type":"stop","now":true}'); }, 'protocol_error', 4407, /a stop message takes the fields type; got "now"/],
    ['an oversized frame', (ws) => { ws.send(start); ws.send(Buffer.alloc(50000)); }, 'message_too_large', 4409, /at most 40000 bytes \(ACM_MAX_MESSAGE_BYTES\); got 50000/],
    ['audio past the stream limit', (ws) => { ws.send(start); for (let i = 0; i < 6; i++) ws.send(Buffer.alloc(32000)); }, 'audio_too_large', 4414, /at most 5 s of audio/],
    ['audio after stop', (ws) => { ws.send(start); ws.send('{"type":"stop"}'); ws.send(Buffer.alloc(64)); }, 'protocol_error', 4407, /must not follow a stop/],
  ];
  for (const [name, send, code, close, message] of cases) {
    it(`answers ${name} with ${code} and close code ${close}`, async () => {
      const r = await misuse(s.ws, send);
      assert.equal(r.error?.code, code, JSON.stringify(r.error));
      assert.match(String(r.error?.message), message);
      assert.equal(r.code, close);
    });
  }

  it('closes a stream that stays silent past the idle timeout with idle_timeout 4408', async () => {
    const sess = await connect(s.ws);
    sess.ws.send(start);
    const { code } = await sess.closed;
    assert.equal(code, 4408);
    assert.equal(sess.messages.at(-1)?.code, 'idle_timeout');
  });

  it('refuses the upgrade past ACM_MAX_STREAMS with 503 too_many_streams, and frees the slot on close', async () => {
    const open = await Promise.all([connect(s.ws), connect(s.ws), connect(s.ws)]);
    const refused = await connect(s.ws).then(() => assert.fail('the fourth stream must be refused'), (e: unknown) => e as { status: number; body: string; headers: Record<string, string> });
    assert.equal(refused.status, 503);
    assert.equal((JSON.parse(refused.body) as { error: { code: string } }).error.code, 'too_many_streams');
    assert.equal(refused.headers['retry-after'], '1');
    for (const o of open) o.ws.close();
    await Promise.all(open.map((o) => o.closed));
    const again = await connect(s.ws);
    again.ws.close();
    await again.closed;
  });

  it('frees the stream slot of a handshake the WebSocket layer rejects', async () => {
    const port = new URL(s.url).port;
    for (let i = 0; i < 4; i++) {
      // No Sec-WebSocket-Key: ws answers 400 itself and never opens the stream.
      const sock = connectTcp(Number(port), '127.0.0.1');
      sock.end('GET /asr HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n');
      sock.resume();
      await once(sock, 'close');
    }
    await until(() => s.speech.openStreams === 0);
    const ok = await connect(s.ws);
    ok.ws.close();
    await ok.closed;
  });

  it('refuses a bad budget and an unknown model at the handshake', async () => {
    const bad = await connect(`${s.ws}?budget=2`).then(() => assert.fail('refused'), (e: unknown) => e as { status: number; body: string });
    assert.equal(bad.status, 400);
    assert.equal((JSON.parse(bad.body) as { error: { code: string } }).error.code, 'invalid_budget');
    const header = await connect(s.ws, { 'X-Budget': 'abc' }).then(() => assert.fail('refused'), (e: unknown) => e as { status: number });
    assert.equal(header.status, 400);
    const unknown = await connect(`${s.ws}?model=nope`).then(() => assert.fail('refused'), (e: unknown) => e as { status: number });
    assert.equal(unknown.status, 404);
    const misspelt = await connect(`${s.ws}?budegt=0.25`).then(() => assert.fail('refused'), (e: unknown) => e as { status: number; body: string });
    assert.equal(misspelt.status, 400);
    assert.match((JSON.parse(misspelt.body) as { error: { message: string } }).error.message,
      /the \/asr handshake takes the query parameters budget, model; got "budegt"/);
  });
});
