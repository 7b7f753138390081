// POST /transcribe and the model listing over the tiny random speech bundle (real onnxruntime):
// answer shape, compute bound, per-frame values, WAV layouts, and every refusal with its code.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import wavefile from 'wavefile';
import { fakeApp } from './support/fake.js';
import { stalledUpload } from './support/stalled-upload.js';
import { pcm16, speechServer, testTone, tinySpeechDir, type SpeechTestServer } from './support/tiny-speech.js';

interface Answer {
  model: string;
  text: string;
  words: { word: string; start: number; end: number }[];
  duration: number;
  compute: { budget: number; used: number; floor: number; gflops: number; dense_gflops: number; frames: { frame_ms: number; values: number[] } };
}

function wav16k(samples: Float32Array, rate = 16000, channels = 1): Buffer {
  const w = new wavefile.WaveFile();
  const ints = Array.from(samples, (v) => Math.round(v * 32767));
  w.fromScratch(channels, rate, '16', channels === 1 ? ints : Array.from({ length: channels }, () => ints));
  return Buffer.from(w.toBuffer());
}

describe('POST /transcribe', () => {
  let s: SpeechTestServer;
  const audio = testTone(2.3);
  before(async () => {
    s = await speechServer();
  });
  after(async () => s?.close());

  it('answers text, word timings and the compute report with one value per 20 ms frame', async () => {
    const res = await request(s.url).post('/transcribe?budget=0.5').set('Content-Type', 'audio/wav').send(wav16k(audio)).expect(200);
    const body = res.body as Answer;
    assert.deepEqual(Object.keys(body).sort(), ['compute', 'duration', 'model', 'text', 'words']);
    assert.equal(body.model, 'tiny-speech-acm');
    assert.equal(typeof body.text, 'string');
    assert.ok(body.text.length > 0, 'the random model spells something');
    assert.equal(body.words.map((w) => w.word).join(' '), body.text);
    for (const w of body.words) assert.ok(w.start >= 0 && w.end > w.start && w.end <= 2.3 + 0.2);
    const c = body.compute;
    assert.equal(c.budget, 0.5);
    assert.ok(c.used > 0 && c.used <= 0.5 + 1e-12, `used ${c.used}`);
    assert.equal(c.frames.frame_ms, 20);
    assert.equal(c.frames.values.length, Math.ceil(audio.length / 320));
    for (const v of c.frames.values) assert.ok(v >= 0 && v <= 1);
    assert.ok(c.gflops > 0 && c.gflops <= c.dense_gflops * 1.2);
    assert.equal(Number(res.headers['x-budget-used']), c.used);
    assert.match(String(res.headers['server-timing']), /^queue;dur=[\d.]+, inference;dur=[\d.]+, total;dur=[\d.]+$/);
  });

  it('spends less at a lower budget (X-Budget wins over ?budget=)', async () => {
    const at = async (budget: string): Promise<Answer> =>
      (await request(s.url).post('/transcribe?budget=0.9').set('X-Budget', budget).set('Content-Type', 'audio/wav').send(wav16k(audio)).expect(200)).body as Answer;
    const [low, high] = [await at('0.2'), await at('1')];
    assert.equal(low.compute.budget, 0.2);
    assert.ok(low.compute.used <= 0.2 + 1e-12);
    assert.ok(low.compute.gflops < high.compute.gflops);
  });

  it('gives the same text for the same audio as 16 kHz mono and as 16 kHz stereo of identical channels', async () => {
    const mono = (await request(s.url).post('/transcribe').set('Content-Type', 'audio/wav').send(wav16k(audio)).expect(200)).body as Answer;
    const stereo = (await request(s.url).post('/transcribe').set('Content-Type', 'audio/x-wav').send(wav16k(audio, 16000, 2)).expect(200)).body as Answer;
    assert.equal(stereo.text, mono.text);
  });

  it('accepts other rates (resampled) and reports the duration of the file', async () => {
    const at48 = testTone(1.5, 48000);
    const body = (await request(s.url).post('/transcribe').set('Content-Type', 'audio/wav').send(wav16k(at48, 48000)).expect(200)).body as Answer;
    assert.equal(body.duration, 1.5);
    assert.equal(body.compute.frames.values.length, Math.ceil(1.5 * 16000 / 320));
  });

  it('refuses what it cannot take, with the code and the bound', async () => {
    const post = (type: string, body: Buffer, query = ''): request.Test => request(s.url).post(`/transcribe${query}`).set('Content-Type', type).send(body);
    let res = await post('image/png', wav16k(audio)).expect(415);
    assert.equal((res.body as { error: { code: string } }).error.code, 'unsupported_media_type');
    res = await post('audio/wav', Buffer.from('RIFF0000WAVEjunkjunk')).expect(400);
    assert.equal((res.body as { error: { code: string } }).error.code, 'invalid_audio');
    res = await post('audio/wav', Buffer.alloc(0)).expect(400);
    assert.equal((res.body as { error: { code: string } }).error.code, 'empty_body');
    res = await post('audio/wav', wav16k(audio), '?budget=1.5').expect(400);
    assert.match((res.body as { error: { message: string } }).error.message, /budget must be a number in \(0, 1\]; got "1.5"/);
    res = await post('audio/wav', wav16k(audio), '?model=nope').expect(404);
    assert.equal((res.body as { error: { code: string } }).error.code, 'unknown_model');
    res = await post('audio/wav', wav16k(audio), '?budget=0.5&beam=8').expect(400);
    assert.match((res.body as { error: { message: string } }).error.message, /POST \/transcribe takes the query parameters budget, model; got "beam"/);
  });

  it('refuses audio over the duration and byte limits with 413 audio_too_large', async () => {
    const short = await speechServer({ ACM_MAX_AUDIO_SECONDS: '1', ACM_MAX_AUDIO_BYTES: '100000' });
    try {
      let res = await request(short.url).post('/transcribe').set('Content-Type', 'audio/wav').send(wav16k(testTone(1.2))).expect(413);
      assert.match((res.body as { error: { message: string } }).error.message, /at most 1 s; got 1.20 s/);
      const big = Buffer.concat([wav16k(testTone(0.5)), pcm16(testTone(3))]);
      res = await request(short.url).post('/transcribe').set('Content-Type', 'audio/wav').send(big).expect(413);
      assert.equal((res.body as { error: { code: string } }).error.code, 'audio_too_large');
      assert.equal((res.body as { error: { message: string } }).error.message,
        `audio body must be at most 100000 bytes; got Content-Length ${big.length}`);
    } finally {
      await short.close();
    }
  });

  it('points a v2 request for a speech model to the speech routes', async () => {
    const name = s.speech.listModels()[0]?.name ?? '';
    for (const res of [await request(s.url).get(`/v2/models/${name}`), await request(s.url).post(`/v2/models/${name}/infer`).send({ inputs: [] })]) {
      assert.equal(res.status, 404);
      assert.equal((res.body as { error: string }).error, `model "${name}" is a speech model: transcribe with POST /transcribe?model=${name} ` +
        `or stream over /asr?model=${name}; the v2 protocol here serves image models only, and none is loaded`);
    }
  });

  it('answers a WAV body still arriving at the request deadline with 408 body_timeout', async () => {
    const slow = await speechServer({ ACM_REQUEST_TIMEOUT_MS: '300' });
    try {
      const answer = await stalledUpload(Number(new URL(slow.url).port), '/transcribe', { 'Content-Type': 'audio/wav' },
        wav16k(testTone(0.05)).subarray(0, 100), 5000);
      const { error } = answer.body as { error: { code: string; message: string } };
      assert.equal(answer.status, 408);
      assert.equal(error.code, 'body_timeout');
      assert.match(error.message, /did not arrive within 300 ms \(ACM_REQUEST_TIMEOUT_MS\); received 100 of 5000 bytes/);
    } finally {
      await slow.close();
    }
  });

  it('transcribes an utterance to the text the toolchain served path gives in PyTorch', async () => {
    const ref = JSON.parse(await readFile(join(await tinySpeechDir(), 'tiny-speech-acm', 'reference.json'), 'utf8')) as
      { utterance: { audio: number[]; budget: number; text: string } };
    const w = new wavefile.WaveFile();
    // Float WAV: the server sees exactly the samples PyTorch saw.
    w.fromScratch(1, 16000, '32f', ref.utterance.audio);
    const body = (await request(s.url).post(`/transcribe?budget=${ref.utterance.budget}`).set('Content-Type', 'audio/wav')
      .send(Buffer.from(w.toBuffer())).expect(200)).body as Answer;
    assert.ok(ref.utterance.text.length > 0);
    assert.equal(body.text, ref.utterance.text);
  });

  it('lists the speech model with its task, vocabulary and audio contract', async () => {
    const body = (await request(s.url).get('/v1/models').expect(200)).body as { models: Record<string, unknown>[] };
    const m = body.models.find((x) => x.name === 'tiny-speech-acm');
    assert.ok(m);
    assert.equal(m.task, 'speech-recognition');
    assert.equal((m.vocabulary as string[])[0], '<blank>');
    assert.equal((m.input as { sample_rate: number }).sample_rate, 16000);
  });

  it('does not exist on a server without a speech bundle', async () => {
    const t = await fakeApp();
    await request(t.app).post('/transcribe').set('Content-Type', 'audio/wav').send(wav16k(audio)).expect(404);
  });
});
