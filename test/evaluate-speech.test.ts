// npm run evaluate:speech on a two-utterance corpus made from the committed test utterance: the
// bundled model's rows and the per-utterance transcripts agree (each row's CER and WER are those
// of its hypotheses against the references), and a wrong reference shows up as word errors.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { errorRates } from '../bench/error-rate.js';
import type { SpeechRow } from '../bench/evaluate-speech.js';
import { REPO_ROOT } from './helpers/paths.js';

const run = promisify(execFile);
const SCRIPT = fileURLToPath(new URL('../bench/evaluate-speech.js', import.meta.url));
const BUNDLE = join(REPO_ROOT, 'models', 'speech-w2v2-acm');
const FIXTURES = join(REPO_ROOT, 'test', 'fixtures', 'speech');

interface TranscriptLine { id: string; reference: string; hypotheses: Record<string, string> }

const rowKey = (r: SpeechRow): string => [r.budget === null ? 'dense' : `acm @ ${r.budget}`, r.decoder,
  ...(r.lm_weight === null ? [] : [`lm ${r.lm_weight}`, `bonus ${r.word_bonus}`, `beam ${r.beam}`])].join(', ');

describe('evaluate:speech', { skip: !existsSync(BUNDLE) && 'no speech bundle' }, () => {
  let dir: string;
  let text: string;
  let wrong: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'acm-eval-speech-'));
    ({ text } = JSON.parse(await readFile(join(FIXTURES, 'utterance.json'), 'utf8')) as { text: string });
    const split = join(dir, 'corpus', 'val');
    await mkdir(split, { recursive: true });
    await copyFile(join(FIXTURES, 'utterance.wav'), join(split, 'a.wav'));
    await copyFile(join(FIXTURES, 'utterance.wav'), join(split, 'b.wav'));
    // b's reference differs from what is said in one word: at least one word error there.
    wrong = text.split(' ').map((w, i) => (i === 1 ? 'zebra' : w)).join(' ');
    await writeFile(join(split, 'index.jsonl'), `${JSON.stringify({ id: 'a', text })}\n${JSON.stringify({ id: 'b', text: wrong })}\n`);
  });
  after(async () => { if (dir) await rm(dir, { recursive: true, force: true }); });

  it('writes rows and transcripts that agree with each other', { timeout: 120_000 }, async () => {
    const json = join(dir, 'rows.json');
    const transcripts = join(dir, 'transcripts.jsonl');
    await run(process.execPath, [SCRIPT, '--corpus', join(dir, 'corpus'), '--split', 'val', '--budgets', '0.5',
      '--lm-weights', '2', '--word-bonuses', '3', '--beam', '8', '--json', json, '--transcripts', transcripts], { timeout: 110_000 });

    const { rows } = JSON.parse(await readFile(json, 'utf8')) as { rows: SpeechRow[] };
    const lines = (await readFile(transcripts, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as TranscriptLine);
    assert.deepEqual(lines.map((l) => [l.id, l.reference]), [['a', text], ['b', wrong]]);
    assert.deepEqual(rows.map(rowKey).sort(), Object.keys(lines[0]!.hypotheses).sort());
    assert.equal(rows.length, 4, 'dense and acm @ 0.5, each greedy and lexicon');
    // Both graphs report their cost: the dense graph every multiply-add, the ACM graph less at 0.5.
    const denseGflops = rows.find((r) => r.budget === null)!.gflops;
    const acmGflops = rows.find((r) => r.budget === 0.5)!.gflops;
    assert.ok(acmGflops > 0 && acmGflops < denseGflops, `acm ${acmGflops} GFLOPs against dense ${denseGflops}`);
    for (const r of rows) {
      const key = rowKey(r);
      const hyps = lines.map((l) => l.hypotheses[key]!);
      assert.equal(hyps[0], hyps[1], `${key}: the same audio gives the same hypothesis`);
      const rates = errorRates(hyps, lines.map((l) => l.reference));
      assert.equal(r.cer, rates.cer, `${key} CER`);
      assert.equal(r.wer, rates.wer, `${key} WER`);
      assert.ok(r.wer >= 1 / (2 * text.split(' ').length), `${key}: the wrong reference costs at least one word`);
    }
    // The bundled model reads this utterance right with the lexicon decoder (as POST /transcribe does).
    assert.equal(lines[0]!.hypotheses['acm @ 0.5, lexicon, lm 2, bonus 3, beam 8'], text);
  });

  it('makes --symbol-prunes a grid dimension, named in rows and transcript keys; refuses 0', { timeout: 60_000 }, async () => {
    const json = join(dir, 'prunes.json');
    const transcripts = join(dir, 'prunes.jsonl');
    await run(process.execPath, [SCRIPT, '--corpus', join(dir, 'corpus'), '--split', 'val', '--budgets', '', '--beam', '8',
      '--lm-weights', '2', '--word-bonuses', '3', '--symbol-prunes', '8,0.5', '--json', json, '--transcripts', transcripts], { timeout: 55_000 });
    const { rows } = JSON.parse(await readFile(json, 'utf8')) as { rows: SpeechRow[] };
    assert.deepEqual(rows.map((r) => [r.decoder, r.symbol_prune]), [['greedy', null], ['lexicon', 8], ['lexicon', 0.5]]);
    const [line] = (await readFile(transcripts, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as TranscriptLine);
    const keys = Object.keys(line!.hypotheses);
    assert.ok(keys.includes('dense, lexicon, lm 2, bonus 3, beam 8, prune 8'), keys.join(' | '));
    assert.ok(keys.includes('dense, lexicon, lm 2, bonus 3, beam 8, prune 0.5'), keys.join(' | '));
    await assert.rejects(run(process.execPath, [SCRIPT, '--corpus', join(dir, 'corpus'), '--split', 'val', '--budgets', '', '--symbol-prunes', '8,0']),
      (err: { code: number; stderr: string }) => err.code === 2 && err.stderr.includes('--symbol-prunes must be a number in (0, 1000]; got "0"'));
  });

  it("scores the dense graph alone with --budgets ''; refuses to score nothing", { timeout: 60_000 }, async () => {
    const json = join(dir, 'dense.json');
    await run(process.execPath, [SCRIPT, '--corpus', join(dir, 'corpus'), '--split', 'val', '--budgets', '', '--beam', '8', '--json', json],
      { timeout: 55_000 });
    const { rows } = JSON.parse(await readFile(json, 'utf8')) as { rows: SpeechRow[] };
    assert.deepEqual(rows.map((r) => [r.graph, r.decoder]), [['dense', 'greedy'], ['dense', 'lexicon']]);
    await assert.rejects(run(process.execPath, [SCRIPT, '--corpus', join(dir, 'corpus'), '--split', 'val', '--budgets', '', '--no-dense']),
      (err: { code: number; stderr: string }) => err.code === 2 && /nothing to evaluate/.test(err.stderr));
  });
});
