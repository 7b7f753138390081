// The speech exporter's parity check and the runtime over a real speech bundle: onnxruntime-node
// reproduces PyTorch on the tiny random speech model, for one window and for a batch of windows
// with different budgets, through the same worker runtime the server uses (with q/k/v/o as ACMs
// and with the FFNs only); and the loader refuses a speech manifest whose window geometry does
// not add up.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { createLogger } from '../server/logger.js';
import { OrtBackend } from '../server/ort-backend.js';
import { loadSpeechBundle, type SpeechBundle } from '../server/speech/bundle.js';
import { parseSpeechManifest } from '../server/speech/manifest.js';
import { tinySpeechDir, tinySpeechFfnDir } from './support/tiny-speech.js';

interface ReferenceCase { budget: number[]; audio: number[]; shape: number[]; logits: number[]; learner_counts: number[]; counts_shape: number[] }

describe('speech bundle (tiny random model)', () => {
  let bundle: SpeechBundle;
  before(async () => {
    bundle = await loadSpeechBundle(join(await tinySpeechDir(), 'tiny-speech-acm'));
  });

  it('loads with its manifest embedded in the ONNX metadata', () => {
    assert.equal(bundle.embeddedManifest, true);
    assert.equal(bundle.manifest.task, 'speech-recognition');
    assert.equal(bundle.manifest.audio.window_samples, 8080);
  });

  it('ONNX in the worker runtime matches PyTorch: logits within 1e-4, identical learner counts', async () => {
    await assertParity(bundle);
  });

  it('the same with ACMs in the FFNs only (attention dense)', async () => {
    const ffn = await loadSpeechBundle(join(await tinySpeechFfnDir(), 'tiny-speech-ffn'));
    assert.deepEqual(new Set(ffn.manifest.acms.map((a) => a.kind)), new Set(['ffn']));
    assert.equal(ffn.manifest.acms.length, bundle.manifest.acms.length / 5);
    await assertParity(ffn);
  });

  it('refuses a manifest whose audio geometry or vocabulary does not add up, naming the field', async () => {
    const raw = JSON.parse(await readFile(join(bundle.dir, 'acm.json'), 'utf8')) as Record<string, unknown>;
    const audio = raw.audio as Record<string, number>;
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ audio: { ...audio, window_samples: 8000 } }, /field audio.window_samples is 8000 but the other audio fields imply 8080/],
      [{ audio: { ...audio, chunk_samples: 3000 } }, /field audio.chunk_samples is 3000 but the other audio fields imply 3200/],
      [{ tokens: { count: 10 } }, /field tokens.count must equal audio.window_frames \(25\); got 10/],
      [{ ctc: { blank: 0, vocabulary: ['<blank>', 'a', 'a'], word_delimiter: ' ' } }, /field ctc.vocabulary must not repeat an entry/],
      [{ ctc: { blank: 0, vocabulary: ['<blank>', 'a'], word_delimiter: ' ' } }, /field ctc.word_delimiter " " is not in ctc.vocabulary/],
    ];
    for (const [patch, pattern] of cases) assert.throws(() => parseSpeechManifest('tiny', { ...raw, ...patch }), pattern);
  });
});

/** ORT through the worker runtime against the PyTorch outputs in the bundle's reference.json. */
async function assertParity(bundle: SpeechBundle): Promise<void> {
  const ref = JSON.parse(await readFile(join(bundle.dir, 'reference.json'), 'utf8')) as { cases: ReferenceCase[] };
  const backend = new OrtBackend({ bundle, provider: 'cpu', threads: 1, graphOptimization: 'all', workers: 1,
    runTimeoutMs: 60_000, log: createLogger('silent') });
  await backend.start();
  try {
    const m = bundle.manifest;
    const per = m.audio.window_samples;
    const perLogits = m.audio.window_frames * m.ctc.vocabulary.length;
    const perCounts = m.acms.length * m.audio.window_frames;
    for (const c of ref.cases) {
      const items = c.budget.map((budget, i) => ({ budget, input: Float32Array.from(c.audio.slice(i * per, (i + 1) * per)) }));
      const results = await backend.run(items);
      assert.equal(results.length, c.budget.length);
      let worst = 0;
      results.forEach((r, i) => {
        r.logits.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - (c.logits[i * perLogits + j] ?? NaN)))));
        assert.deepEqual(Array.from(r.learnerCounts), c.learner_counts.slice(i * perCounts, (i + 1) * perCounts));
      });
      assert.ok(worst <= 1e-4, `max |ORT - PyTorch| = ${worst}`);
    }
    const mixed = ref.cases[1] as ReferenceCase;
    assert.ok(new Set(mixed.learner_counts).size >= 3, 'the gates choose at least three distinct counts');
  } finally {
    await backend.close();
  }
}
