// The language model reader and the lexicon beam search, on hand-made ARPA files and hand-made
// frame probabilities; then the speech service with a bundle that names the decoder.
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { loadConfig } from '../server/config.js';
import { CtcDecoder } from '../server/speech/ctc.js';
import { loadSpeechBundle } from '../server/speech/bundle.js';
import { kthLargest, Lexicon, LexiconBeamDecoder, type BeamOptions } from '../server/speech/lexicon-decoder.js';
import { NGramModel } from '../server/speech/ngram.js';
import { speechServer, tinySpeechLmDir, type SpeechTestServer } from './support/tiny-speech.js';

const VOCAB = ['<blank>', ' ', "'", ...'abcdefghijklmnopqrstuvwxyz'];
const CTC = { blank: 0, vocabulary: VOCAB, word_delimiter: ' ' };
const LN10 = Math.LN10;

const ARPA = `\\data\\
ngram 1=7
ngram 2=3
ngram 3=1

\\1-grams:
-1.0\t</s>
-99\t<s>\t-0.5
-1.0\ti\t-0.3
-1.2\tsee\t-0.2
-1.0\tsea
-1.1\tcat
-1.3\tthe

\\2-grams:
-0.1\ti see
-0.2\t<s> i\t-0.4
-0.6\tsee </s>

\\3-grams:
-0.05\t<s> i see

\\end\\
`;

/** Frames of logits from per-frame probabilities of named symbols; the blank takes the rest. */
function frames(spec: Array<Record<string, number>>): Float32Array {
  const out = new Float32Array(spec.length * VOCAB.length);
  spec.forEach((probs, f) => {
    const p = new Float64Array(VOCAB.length).fill(1e-4);
    for (const [s, v] of Object.entries(probs)) p[VOCAB.indexOf(s)] = v;
    const rest = 1 - p.reduce((a, b) => a + b, 0) + p[0]!;
    p[0] = Math.max(rest, 1e-4);
    p.forEach((v, i) => (out[f * VOCAB.length + i] = Math.log(v)));
  });
  return out;
}

/** Each character of `text` for one frame, then a blank frame. */
const spell = (text: string, p = 0.9): Array<Record<string, number>> => [...text].flatMap((c) => [{ [c]: p }, {}]);

const opts = (o: Partial<BeamOptions> = {}): BeamOptions => ({ beam: 16, lmWeight: 1, wordBonus: 0, symbolPrune: 12, ...o });

function decode(lexicon: Lexicon, logits: Float32Array, o: BeamOptions, chunk = Infinity): LexiconBeamDecoder {
  const d = new LexiconBeamDecoder(lexicon, CTC, 20, o);
  const n = logits.length / VOCAB.length;
  for (let f = 0; f < n; f += chunk) d.push(logits.subarray(f * VOCAB.length), Math.min(chunk, n - f));
  return d;
}

/** A unigram model over `words`, all equally likely. */
function uniform(words: string[]): NGramModel {
  const lines = ['</s>', ...words].map((w) => `-1.0\t${w}`);
  return NGramModel.parse(`\\data\\\nngram 1=${lines.length + 1}\n\n\\1-grams:\n-99\t<s>\n${lines.join('\n')}\n\n\\end\\\n`);
}

describe('ARPA language model', () => {
  const lm = NGramModel.parse(ARPA);
  const id = (w: string): number => lm.id(w)!;

  it('returns the stored probability of a seen n-gram', () => {
    assert.ok(Math.abs(lm.logProb([id('i')], id('see')) - -0.1 * LN10) < 1e-12);
    assert.ok(Math.abs(lm.logProb([id('<s>'), id('i')], id('see')) - -0.05 * LN10) < 1e-12);
    assert.ok(Math.abs(lm.logProb([], id('cat')) - -1.1 * LN10) < 1e-12);
  });

  it('backs off through every shorter history, adding the back-off weights', () => {
    // "i sea" is not stored: back-off of "i" plus the unigram.
    assert.ok(Math.abs(lm.logProb([id('i')], id('sea')) - (-0.3 - 1.0) * LN10) < 1e-12);
    // "<s> i sea": back-off of "<s> i", then of "i", then the unigram.
    assert.ok(Math.abs(lm.logProb([id('<s>'), id('i')], id('sea')) - (-0.4 - 0.3 - 1.0) * LN10) < 1e-12);
    // A history never seen as a context costs nothing: "sea" has no back-off weight.
    assert.ok(Math.abs(lm.logProb([id('sea')], id('cat')) - -1.1 * LN10) < 1e-12);
    // Only the last order - 1 words of a longer history count.
    assert.equal(lm.logProb([id('cat'), id('<s>'), id('i')], id('see')), lm.logProb([id('<s>'), id('i')], id('see')));
  });

  it('refuses malformed files, naming the line and the problem', () => {
    assert.throws(() => NGramModel.parse('ngram 1=1\n', 'x.arpa'), /x\.arpa: line \d+: no \\data\\ section/);
    assert.throws(() => NGramModel.parse(ARPA.replace('ngram 2=3', 'ngram 2=4')), /declares 4 2-grams, the file has 3/);
    assert.throws(() => NGramModel.parse(ARPA.replace('-0.1\ti see', '-0.1\ti saw')), /line 16: the word "saw" has no unigram entry/);
    assert.throws(() => NGramModel.parse(ARPA.replace('-1.1\tcat', 'x\tcat')), /line 12: a probability or back-off is not a number/);
    assert.throws(() => NGramModel.parse('\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0\tcat\n\n\\end\\\n'), /no unigram entry for <\/s>/);
  });
});

describe('lexicon beam search', () => {
  it('spells only lexicon words: a misheard letter is corrected to the word the lexicon has', () => {
    const lexicon = new Lexicon(uniform(['the', 'cat', 'dog']), VOCAB, 0, ' ');
    // "the cap" by the best symbol of every frame, but "cap" is no word of the lexicon.
    const logits = frames([...spell('the ca'), { p: 0.55, t: 0.4 }, {}]);
    const greedy = new CtcDecoder({ ctc: CTC, audio: { frame_ms: 20 } } as never);
    greedy.push(logits, logits.length / VOCAB.length);
    assert.equal(greedy.transcript(), 'the cap');
    assert.equal(decode(lexicon, logits, opts()).transcript(), 'the cat');
  });

  it('lets the language model choose between words the audio cannot tell apart', () => {
    const lexicon = new Lexicon(NGramModel.parse(ARPA), VOCAB, 0, ' ');
    // The last letter sounds slightly more like "a": "i sea" by the audio alone, "i see" by the LM.
    const logits = frames([...spell('i se'), { a: 0.46, e: 0.44 }, {}]);
    assert.equal(decode(lexicon, logits, opts({ lmWeight: 0 })).transcript(), 'i sea');
    assert.equal(decode(lexicon, logits, opts({ lmWeight: 1 })).transcript(), 'i see');
  });

  it('needs a blank between two equal letters, as CTC does', () => {
    const lexicon = new Lexicon(uniform(['se', 'see']), VOCAB, 0, ' ');
    assert.equal(decode(lexicon, frames([{ s: 0.9 }, { e: 0.9 }, { e: 0.9 }, {}]), opts()).transcript(), 'se');
    assert.equal(decode(lexicon, frames([{ s: 0.9 }, { e: 0.9 }, {}, { e: 0.9 }, {}]), opts()).transcript(), 'see');
  });

  it('gives the same transcript and word timings whether frames come one by one, in chunks, or all at once', () => {
    const lexicon = new Lexicon(NGramModel.parse(ARPA), VOCAB, 0, ' ');
    // Noisy frames: every symbol gets a random share, the spelled one most of it.
    let seed = 7;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const spec = spell('i see the cat i see the sea', 0.6).map((f) => {
      const noisy: Record<string, number> = { ...f };
      for (const c of 'aeistch ') noisy[c] = (noisy[c] ?? 0) + rand() * 0.05;
      return noisy;
    });
    const logits = frames(spec);
    const whole = decode(lexicon, logits, opts({ beam: 8, wordBonus: 3 }));
    assert.equal(whole.transcript(), 'i see the cat i see the sea');
    for (const chunk of [1, 7, 25]) {
      const d = decode(lexicon, logits, opts({ beam: 8, wordBonus: 3 }), chunk);
      assert.equal(d.transcript(), whole.transcript(), `chunks of ${chunk}`);
      assert.deepEqual(d.timings(), whole.timings(), `chunks of ${chunk}`);
    }
  });

  it('times each word from its first letter\'s frame to the end of its last one\'s', () => {
    const lexicon = new Lexicon(NGramModel.parse(ARPA), VOCAB, 0, ' ');
    // Frames: i _ ' ' _ s _ e _ e _ (20 ms each).
    const d = decode(lexicon, frames(spell('i see')), opts());
    assert.deepEqual(d.timings(), [{ word: 'i', start: 0, end: 0.02 }, { word: 'see', start: 0.08, end: 0.18 }]);
  });

  it('remembers word probabilities under keys that tell every history apart', () => {
    // <s> listed first has id 0: a history starting with it must not read as the shorter one.
    const lm = NGramModel.parse(ARPA.replace('-1.0\t</s>\n-99\t<s>\t-0.5\n', '-99\t<s>\t-0.5\n-1.0\t</s>\n'));
    assert.equal(lm.id('<s>'), 0);
    const lexicon = new Lexicon(lm, VOCAB, 0, ' ');
    const ids = lm.words.map((_, i) => i);
    // Every history the decoder can hold (up to order - 1 words, then one more at the sentence
    // end), each asked twice: the second answer comes from the memo and must still be its own.
    const histories: number[][] = [[], ...ids.map((a) => [a]), ...ids.flatMap((a) => ids.map((b) => [a, b])), [3, 1, 2]];
    for (const pass of [0, 1]) {
      for (const h of pass ? [...histories].reverse() : histories) {
        for (const w of ids) assert.equal(lexicon.wordLogProb(h, w), lm.logProb(h, w), `history [${h.join(",")}], word ${w}, pass ${pass}`);
      }
    }
  });

  it('finds the k-th largest value as a sort would, ties and -Infinity included', () => {
    let seed = 11;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (const n of [1, 2, 3, 10, 257]) {
      // Few distinct values, so most selections land on ties.
      const values = Array.from({ length: n }, () => [-Infinity, 0, 1, 2.5, -3][Math.floor(rand() * 5)]!);
      const sorted = [...values].sort((a, b) => b - a);
      for (let k = 1; k <= n; k++) assert.equal(kthLargest(Float64Array.from(values), k), sorted[k - 1], `n ${n}, k ${k}`);
    }
    assert.throws(() => kthLargest(new Float64Array(3), 4), /k must be in \[1, 3\]; got 4/);
    assert.throws(() => kthLargest(new Float64Array(3), 0), /k must be in \[1, 3\]; got 0/);
  });

  it('builds the lexicon from the words the vocabulary can spell, skipping the others', () => {
    const lexicon = new Lexicon(uniform(['cat', 'Cat', 'naïve', 'it\'s']), VOCAB, 0, ' ');
    assert.equal(lexicon.words, 2);
    assert.equal(lexicon.skipped, 2);
  });
});

describe('speech service with a lexicon decoder', () => {
  let dir: string;
  before(async () => {
    dir = await tinySpeechLmDir();
  });

  it('loads the language model named by the manifest and reports the decoder per model', async () => {
    const s: SpeechTestServer = await speechServer({ ACM_MODELS_DIR: dir });
    try {
      assert.deepEqual(s.speech.listModels().map((m) => [m.name, m.decoder]), [['tiny-speech-lm', 'lexicon-beam']]);
      const manifest = (await loadSpeechBundle(join(dir, 'tiny-speech-lm'))).manifest;
      assert.equal(s.speech.listModels()[0]?.beam, manifest.ctc.decoder?.beam);
      const r = await s.speech.transcribe(undefined, new Float32Array(16000).map((_, i) => Math.sin(i / 7) * 0.3), { budget: 0.5 });
      // Whatever the random model hears, the beam search can only spell words of its lexicon.
      const words = new Set(['i', 'see', 'the', 'sea', 'we', 'a', 'cat', 'sat', 'on', 'mat', 'dog', 'and', 'an']);
      for (const w of r.text.split(' ').filter((x) => x)) assert.ok(words.has(w), `${w} is a lexicon word`);
    } finally {
      await s.close();
    }
    const greedy = await speechServer({ ACM_MODELS_DIR: dir, ACM_SPEECH_DECODER: 'greedy' });
    try {
      assert.equal(greedy.speech.listModels()[0]?.decoder, 'greedy');
      assert.equal('beam' in (greedy.speech.listModels()[0] ?? {}), false);
    } finally {
      await greedy.close();
    }
  });

  it('builds its decoders with the beam ACM_SPEECH_BEAM sets instead of the bundle\'s, as the listing reports', async () => {
    const narrow = await speechServer({ ACM_MODELS_DIR: dir, ACM_SPEECH_BEAM: '1' });
    try {
      // The listing reads the beam of the options object every decoder of the model is built with
      // (SpeechService.decoderFor); the transcript itself does not show which beam made it.
      assert.notEqual(narrow.speech.listModels()[0]?.beam, undefined);
      assert.equal(narrow.speech.listModels()[0]?.beam, 1);
    } finally {
      await narrow.close();
    }
    assert.equal(loadConfig({ ACM_SPEECH_BEAM: '300' }, []).speechBeam, 300);
    assert.equal(loadConfig({}, []).speechBeam, undefined);
    assert.throws(() => loadConfig({ ACM_SPEECH_BEAM: '0' }, []), /ACM_SPEECH_BEAM/);
  });

  it('refuses a bundle whose decoder names a missing or unreadable language model', async () => {
    const copy = await mkdtemp(join(tmpdir(), 'acm-lm-'));
    try {
      await cp(join(dir, 'tiny-speech-lm'), join(copy, 'b'), { recursive: true });
      await writeFile(join(copy, 'b', 'lm.arpa'), 'not an arpa file\n');
      const s = speechServer({ ACM_MODELS_DIR: copy });
      await assert.rejects(s, /field ctc\.decoder\.lm is not a usable ARPA language model: lm\.arpa: line \d+: no \\data\\ section/);
      await rm(join(copy, 'b', 'lm.arpa'));
      await assert.rejects(loadSpeechBundle(join(copy, 'b')), /field ctc\.decoder\.lm names lm\.arpa, which does not exist/);
    } finally {
      await rm(copy, { recursive: true, force: true });
    }
  });

  it('takes ACM_SPEECH_DECODER from the environment and refuses an unknown value', () => {
    assert.equal(loadConfig({ ACM_SPEECH_DECODER: 'greedy' }, []).speechDecoder, 'greedy');
    assert.equal(loadConfig({}, []).speechDecoder, 'bundle');
    assert.throws(() => loadConfig({ ACM_SPEECH_DECODER: 'beam' }, []), /ACM_SPEECH_DECODER/);
  });

  it('keeps the manifest copy in the graph equal to acm.json (the loader checks it)', async () => {
    const b = await loadSpeechBundle(join(dir, 'tiny-speech-lm'));
    assert.equal(b.embeddedManifest, true);
    const raw = JSON.parse(await readFile(join(dir, 'tiny-speech-lm', 'acm.json'), 'utf8')) as { ctc: { decoder: unknown } };
    assert.deepEqual(raw.ctc.decoder, b.manifest.ctc.decoder);
  });
});
