// The bundled speech model (models/speech-w2v2-acm, trained by the toolchain) on a committed
// utterance of the corpus' test split (a voice and a sentence never heard in training):
// POST /transcribe gives its text, and streaming the same audio over /asr in 100 ms frames ends
// on the same text and the same per-frame compute, at two budgets.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AcmClient, type StreamEvent } from '../clients/sdk.js';
import { decodeWav } from '../server/speech/audio.js';
import { REPO_ROOT } from './helpers/paths.js';
import { speechServer, type SpeechTestServer } from './support/tiny-speech.js';

const FIXTURES = join(REPO_ROOT, 'test', 'fixtures', 'speech');
const MODELS = join(REPO_ROOT, 'models');

describe('bundled speech model on a committed test utterance', { skip: !existsSync(join(MODELS, 'speech-w2v2-acm')) && 'no speech bundle' }, () => {
  let s: SpeechTestServer;
  let client: AcmClient;
  let wav: Buffer;
  let expected: { id: string; text: string };
  before(async () => {
    s = await speechServer({ ACM_MODELS_DIR: MODELS });
    client = new AcmClient({ url: s.url });
    expected = JSON.parse(await readFile(join(FIXTURES, 'utterance.json'), 'utf8')) as { id: string; text: string };
    wav = await readFile(join(FIXTURES, 'utterance.wav'));
  });
  after(() => s?.close());

  for (const budget of [0.5, 1.0]) {
    it(`transcribes it whole and streamed to its text at budget ${budget}`, async () => {
      const whole = await client.transcribe(wav, { budget });
      assert.equal(whole.model, 'speech-w2v2-acm');
      assert.equal(whole.text, expected.text);
      assert.ok(whole.compute.used > 0 && whole.compute.used <= budget + 1e-9, `used ${whole.compute.used} within ${budget}`);
      const { samples } = decodeWav(wav, 16000, 60);
      const ints = Int16Array.from(samples, (v) => Math.max(-32768, Math.min(32767, Math.round(v * 32767))));
      const frames = function* (): Generator<Uint8Array> {
        for (let i = 0; i < ints.length; i += 1600) yield new Uint8Array(ints.buffer, i * 2, Math.min(1600, ints.length - i) * 2);
      };
      const events: StreamEvent[] = [];
      for await (const e of client.stream(frames(), { sampleRate: 16000, encoding: 'pcm_s16le', budget })) events.push(e);
      const final = events.at(-1);
      assert.equal(final?.type, 'final');
      assert.equal(final?.text, expected.text);
      assert.deepEqual(final?.compute.frames.values, whole.compute.frames.values);
      assert.ok(events.length >= 2, 'at least one partial before the final');
    });
  }
});
