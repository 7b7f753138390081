// The SDK and the CLI against the real speech routes (tiny random speech bundle, real
// onnxruntime): transcribe() and stream() give the server's answers, a stream's final text
// equals the whole file's, errors carry the server's codes; `acm transcribe` with and without
// --stream prints the same text; the OpenAPI document of a speech server describes its routes.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { AcmClient, AcmError, type StreamEvent } from '../clients/sdk.js';
import { OPERATIONS, registeredRoutes } from '../server/http/openapi.js';
import { REPO_ROOT } from './helpers/paths.js';
import { speechServer, testTone, type SpeechTestServer } from './support/tiny-speech.js';
import { wavFile } from './support/wav.js';

const CLI = join(REPO_ROOT, 'dist', 'clients', 'cli.js');

function acm(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ACM_URL: '' }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

describe('SDK and CLI against the speech routes', () => {
  let s: SpeechTestServer;
  let client: AcmClient;
  let dir: string;
  let wav: Buffer;
  let wavPath: string;
  before(async () => {
    s = await speechServer();
    client = new AcmClient({ url: s.url });
    dir = await mkdtemp(join(tmpdir(), 'acm-speech-clients-'));
    wav = wavFile(testTone(2.5));
    wavPath = join(dir, 'tone.wav');
    await writeFile(wavPath, wav);
  });
  after(async () => {
    await s.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('transcribe() returns the server JSON with timings; stream() yields partials then the same final text', async () => {
    const whole = await client.transcribe(wav, { budget: 0.5 });
    const direct = (await request(s.app).post('/transcribe').set('X-Budget', '0.5').set('Content-Type', 'audio/wav').send(wav).expect(200)).body as unknown;
    const { timings, ...rest } = whole;
    assert.deepEqual(rest, direct);
    assert.ok(timings && timings.totalMs >= 0);
    assert.equal(whole.compute.budget, 0.5);
    assert.equal(whole.compute.frames.values.length, 2.5 * 1000 / whole.compute.frames.frame_ms);

    const samples = testTone(2.5);
    const pieces = function* (): Generator<Float32Array> {
      for (let i = 0; i < samples.length; i += 1600) yield samples.subarray(i, i + 1600);
    };
    const events: StreamEvent[] = [];
    for await (const e of client.stream(pieces(), { sampleRate: 16000, encoding: 'pcm_f32le', budget: 0.5 })) events.push(e);
    const final = events.at(-1);
    assert.equal(final?.type, 'final');
    assert.ok(events.length >= 3 && events.slice(0, -1).every((e) => e.type === 'partial'), `partials first (${events.length} events)`);
    // f32 samples equal the s16 file's only to 16-bit precision, so compare the s16 stream to the file.
    const ints = Int16Array.from(samples, (v) => Math.max(-32768, Math.min(32767, Math.round(v * 32767))));
    const s16: StreamEvent[] = [];
    for await (const e of client.stream([new Uint8Array(ints.buffer)], { sampleRate: 16000, encoding: 'pcm_s16le', budget: 0.5 })) s16.push(e);
    assert.equal(s16.at(-1)?.text, whole.text, 'the streamed final text equals the whole file');
    assert.deepEqual(s16.at(-1)?.compute.frames.values, whole.compute.frames.values);
  });

  it('raises the server codes: a bad budget over HTTP, a wrong sample rate over the stream', async () => {
    await assert.rejects(client.transcribe(wav, { budget: 2 }), (e: unknown) =>
      e instanceof AcmError && e.code === 'invalid_budget' && e.status === 400 && /got "2"/.test(e.message));
    await assert.rejects(client.stream([new Uint8Array(3200)], { sampleRate: 8000 }).next(), (e: unknown) =>
      e instanceof AcmError && e.code === 'invalid_audio' && e.closeCode === 4406 && /sample_rate/.test(e.message));
  });

  it('streams from the model named in the options, and refuses a name the server does not know', async () => {
    const name = (await client.models()).find((m) => m.task === 'speech-recognition')?.name;
    assert.ok(name, 'the server lists its speech model');
    const events: StreamEvent[] = [];
    for await (const e of client.stream([new Uint8Array(3200)], { sampleRate: 16000, model: name })) events.push(e);
    assert.equal(events.at(-1)?.type, 'final');
    await assert.rejects(client.stream([new Uint8Array(3200)], { sampleRate: 16000, model: 'no-such-model' }).next(), (e: unknown) => {
      // A browser's WebSocket hides the refusal's body, so the SDK names the handshake it tried.
      assert.ok(e instanceof AcmError, String(e));
      assert.match(e.message, /cannot open http:\/\/.*\/asr\?model=no-such-model: .*404/);
      return true;
    });
  });

  it('acm transcribe prints the text, from the file and streamed alike', async () => {
    const file = await acm(['transcribe', wavPath, '--budget', '0.5', '--url', s.url, '--json']);
    assert.equal(file.code, 0, file.stderr);
    const whole = JSON.parse(file.stdout) as { text: string; compute: { budget: number } };
    assert.equal(whole.compute.budget, 0.5);
    const streamed = await acm(['transcribe', wavPath, '--stream', '--budget', '0.5', '--url', s.url, '--json']);
    assert.equal(streamed.code, 0, streamed.stderr);
    const lines = streamed.stdout.trim().split('\n').map((l) => JSON.parse(l) as StreamEvent);
    assert.equal(lines.at(-1)?.type, 'final');
    assert.ok(lines.slice(0, -1).every((e) => e.type === 'partial') && lines.length >= 2, 'partials, then the final, one JSON per line');
    assert.equal(lines.at(-1)?.text, whole.text);
    const text = await acm(['transcribe', wavPath, '--budget', '0.5', '--url', s.url]);
    assert.equal(text.code, 0, text.stderr);
    const [first, second, ...more] = text.stdout.split('\n');
    assert.equal(first, whole.text);
    assert.match(second ?? '', /^\(tiny-speech-acm: budget 0\.5, used 0\.\d{3}, [\d.e-]+ GFLOPs\)$/);
    assert.deepEqual(more, ['']);
    const bad = await acm(['transcribe', join(dir, 'none.wav'), '--url', s.url]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^acm: cannot read audio .*none\.wav: ENOENT\n$/);
  });

  it('documents the speech routes the server registers', () => {
    const routes = registeredRoutes(s.app);
    assert.ok(routes.some((r) => r.method === 'POST' && r.path === '/transcribe'));
    assert.deepEqual(routes.filter((r) => !OPERATIONS[`${r.method} ${r.path}`]).map((r) => `${r.method} ${r.path}`), []);
  });

  it('serves /asr in the OpenAPI document of a speech server', async () => {
    const doc = (await request(s.app).get('/openapi.json').expect(200)).body as { paths: Record<string, Record<string, unknown>> };
    assert.ok(doc.paths['/transcribe']?.post);
    assert.ok(doc.paths['/asr']?.get);
  });
});
