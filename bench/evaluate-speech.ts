// Speech quality of a bundle on a split of the espeak-ng corpus, through the TypeScript runtime:
// WAV files decoded as /transcribe decodes them, cut into the model's windows, run by
// onnxruntime-node (model.onnx at each budget, dense.onnx for the dense model), and decoded both
// greedily and by the lexicon beam search with the bundle's language model. CER and WER are those
// of the toolchain (total edits over total reference length).
//
// The lexicon decoder runs with the settings of the bundle's manifest (ctc.decoder) unless options
// say otherwise; several --lm-weights / --word-bonuses make a grid, to choose the settings on the
// validation split. --json writes every row (models/toolchain/speech/decoder.py reads it).
//
//   (options: USAGE below, or --help)
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';
import { loadSpeechBundle } from '../server/speech/bundle.js';
import { decodeWav } from '../server/speech/audio.js';
import { SpeechAccountant } from '../server/speech/compute.js';
import { CtcDecoder } from '../server/speech/ctc.js';
import { beamOptions, Lexicon, LexiconBeamDecoder, type BeamOptions } from '../server/speech/lexicon-decoder.js';
import type { SpeechManifest } from '../server/speech/manifest.js';
import { NGramModel } from '../server/speech/ngram.js';
import { WindowCutter } from '../server/speech/windows.js';
import { disableOrtTelemetry } from '../server/ort-telemetry.js';
import { budgetArg, intArg, numberArg, parseCli, usageError } from './args.js';
import { errorRates } from './error-rate.js';
import { benchSessionOptions } from './model-inputs.js';
import { REPO } from './server-process.js';
import { printTable } from './table.js';

const USAGE = `
usage: npm run evaluate:speech -- [--model-dir models/speech-w2v2-acm] [--corpus .cache/speech/espeak-v1]
    [--split test] [--budgets 0.25,0.5,0.75,1] [--no-dense] [--limit N] [--lm ARPA] [--lm-weights 0.5,1]
    [--word-bonuses 0,1,2] [--beam 24] [--symbol-prunes 8,6] [--json FILE] [--transcripts FILE.jsonl]
CER and WER of the speech bundle (and its dense graph) per budget through the TypeScript runtime;
--budgets '' scores the dense graph alone; several --lm-weights / --word-bonuses / --symbol-prunes
make a grid (--symbol-prunes: symbols further than this many nats below a frame's best are not tried;
the bundle's own value when left out).
--transcripts writes every utterance's reference and hypotheses, one JSON line per utterance ({id, reference, hypotheses}), each
hypothesis keyed by its row: "dense, greedy", "acm @ 0.5, lexicon, lm 2, bonus 3, beam 128".
`;

const { values: opts } = parseCli(USAGE, {
  options: {
    'model-dir': { type: 'string', default: join(REPO, 'models', 'speech-w2v2-acm') },
    corpus: { type: 'string', default: join(REPO, '.cache', 'speech', 'espeak-v1') },
    split: { type: 'string', default: 'test' },
    budgets: { type: 'string', default: '0.25,0.5,0.75,1' },
    'no-dense': { type: 'boolean', default: false },
    limit: { type: 'string' },
    lm: { type: 'string' },
    'lm-weights': { type: 'string' },
    'word-bonuses': { type: 'string' },
    beam: { type: 'string' },
    'symbol-prunes': { type: 'string' },
    json: { type: 'string' },
    transcripts: { type: 'string' },
  },
});

interface Utterance { id: string; text: string; samples: Float32Array }
/** Kept frames of one utterance [frames][vocab], its GFLOPs, and the learner compute used when run by the ACM graph. */
interface Run { logits: Float32Array; frames: number; used?: number; gflops: number }
export interface SpeechRow {
  graph: string; budget: number | null; decoder: string; lm_weight: number | null; word_bonus: number | null; beam: number | null;
  symbol_prune: number | null; cer: number; wer: number; used: number | null; gflops: number; items: number; decode_ms_per_audio_s: number;
}

const list = (name: string, raw: string | undefined, fallback: number[], min: number, max: number,
  bounds: { minOpen?: boolean } = {}): number[] =>
  raw === undefined ? fallback : raw.split(',').map((x) => numberArg(name, x, NaN, min, max, bounds));

function readSplit(corpus: string, split: string, rate: number, limit: number): Utterance[] {
  const index = readFileSync(join(corpus, split, 'index.jsonl'), 'utf8').split('\n').filter((l) => l.trim())
    .map((l) => JSON.parse(l) as { id: string; text: string });
  return index.slice(0, limit).map((row) => ({ id: row.id, text: row.text,
    samples: decodeWav(readFileSync(join(corpus, split, `${row.id}.wav`)), rate, 3600).samples }));
}

/** Runs every window of every utterance, `batch` windows per session run. */
async function runGraph(session: ort.InferenceSession, m: SpeechManifest, utts: Utterance[], budget: number | null): Promise<Run[]> {
  const a = m.audio;
  const V = m.ctc.vocabulary.length;
  const accountant = new SpeechAccountant(m);
  const out: Run[] = [];
  for (const u of utts) {
    const cutter = new WindowCutter(a);
    cutter.push(u.samples);
    const windows = cutter.take(true);
    const logits = new Float32Array(windows.length * a.chunk_frames * V);
    const tally = accountant.tally();
    const batch = 32;
    for (let i = 0; i < windows.length; i += batch) {
      const part = windows.slice(i, i + batch);
      const input = new Float32Array(part.length * a.window_samples);
      part.forEach((w, j) => input.set(w, j * a.window_samples));
      const feeds: Record<string, ort.Tensor> = { [m.inputs.audio]: new ort.Tensor('float32', input, [part.length, a.window_samples]) };
      if (budget !== null) feeds[m.inputs.budget] = new ort.Tensor('float64', new Float64Array(part.length).fill(budget), [part.length]);
      const res = await session.run(feeds);
      const l = res[m.outputs.logits]!.data as Float32Array;
      const counts = budget === null ? undefined : res[m.outputs.learner_counts]!.data as BigInt64Array | Int32Array;
      for (let j = 0; j < part.length; j++) {
        const w0 = j * a.window_frames * V;
        logits.set(l.subarray(w0 + a.left_context_frames * V, w0 + a.window_frames * V), (i + j) * a.chunk_frames * V);
        if (counts) {
          const n = m.acms.length * a.window_frames;
          tally.add(Int32Array.from(counts.subarray(j * n, (j + 1) * n) as ArrayLike<number | bigint>, Number));
        }
      }
    }
    const frames = windows.length * a.chunk_frames;
    const report = budget === null ? undefined : tally.report(budget, frames);
    // The dense graph's cost is its multiply-adds per window, so both graphs' GFLOPs compare.
    out.push({ logits, frames, ...(report ? { used: report.used, gflops: report.gflops } : { gflops: windows.length * m.macs.dense / 1e9 }) });
  }
  return out;
}

function decodeAll(runs: Run[], decoder: () => { push(l: Float32Array, n: number): void; transcript(): string }, chunk: number, V: number): string[] {
  return runs.map((r) => {
    const d = decoder();
    // Chunk by chunk, as the server feeds a stream.
    for (let f = 0; f < r.frames; f += chunk) d.push(r.logits.subarray(f * V), Math.min(chunk, r.frames - f));
    return d.transcript();
  });
}

async function main(): Promise<void> {
  disableOrtTelemetry();
  const dir = resolve(opts['model-dir']);
  const bundle = await loadSpeechBundle(dir);
  const m = bundle.manifest;
  const limit = intArg('limit', opts.limit, Number.MAX_SAFE_INTEGER, 1);
  const budgets = opts.budgets.trim() === '' ? [] : opts.budgets.split(',').map((b) => budgetArg('budgets', b, NaN));
  if (budgets.length === 0 && opts['no-dense']) usageError("nothing to evaluate: --no-dense with --budgets ''");
  // Defaults: the decoder the bundle names, else DEFAULT_BEAM's settings with lm.arpa.gz.
  const spec = m.ctc.decoder;
  const base = beamOptions(spec);
  const weights = list('lm-weights', opts['lm-weights'], [base.lmWeight], 0, 100);
  const bonuses = list('word-bonuses', opts['word-bonuses'], [base.wordBonus], -100, 100);
  const beam = intArg('beam', opts.beam, base.beam, 1, 10_000);
  // The manifest's bounds for ctc.decoder.symbol_prune.
  const prunes = list('symbol-prunes', opts['symbol-prunes'], [base.symbolPrune], 0, 1000, { minOpen: true });
  const utts = readSplit(resolve(opts.corpus), opts.split, m.audio.sample_rate, limit);
  const refs = utts.map((u) => u.text);
  const seconds = utts.reduce((s, u) => s + u.samples.length, 0) / m.audio.sample_rate;
  console.log(`${utts.length} ${opts.split} utterances, ${seconds.toFixed(0)} s of audio`);
  const lmPath = opts.lm ?? join(dir, spec?.lm ?? 'lm.arpa.gz');
  let t = performance.now();
  const lexicon = new Lexicon(await NGramModel.load(lmPath), m.ctc.vocabulary, m.ctc.blank, m.ctc.word_delimiter);
  console.log(`language model ${lmPath}: order ${lexicon.lm.order}, lexicon of ${lexicon.words} words ` +
    `(${lexicon.skipped} unspellable skipped), loaded in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  const options = benchSessionOptions(2);
  const graphs: Array<{ name: string; budget: number | null; session: ort.InferenceSession }> = [];
  if (!opts['no-dense'] && m.dense_graph) graphs.push({ name: 'dense', budget: null, session: await ort.InferenceSession.create(join(dir, m.dense_graph), options) });
  if (budgets.length > 0) {
    const acm = await ort.InferenceSession.create(bundle.graphPath, options);
    for (const b of budgets) graphs.push({ name: 'acm', budget: b, session: acm });
  }
  const V = m.ctc.vocabulary.length;
  const rows: SpeechRow[] = [];
  // Per utterance: its hypothesis under each row's settings, keyed by the row's label.
  const hypotheses: Record<string, string>[] = utts.map(() => ({}));
  for (const g of graphs) {
    t = performance.now();
    const runs = await runGraph(g.session, m, utts, g.budget);
    const label = g.budget === null ? 'dense' : `acm @ ${g.budget}`;
    console.log(`${label}: ran in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    const mean = (f: (r: Run) => number | undefined): number => runs.reduce((s, r) => s + (f(r) ?? 0), 0) / runs.length;
    const common = { graph: g.name, budget: g.budget, used: g.budget === null ? null : mean((r) => r.used), gflops: mean((r) => r.gflops), items: utts.length };
    const measure = (decoder: string, make: () => { push(l: Float32Array, n: number): void; transcript(): string }, s: Partial<BeamOptions>): void => {
      const t0 = performance.now();
      const hyps = decodeAll(runs, make, m.audio.chunk_frames, V);
      const ms = performance.now() - t0;
      // The prune is named only when it was asked for, so keys stay as they were without it.
      const key = [label, decoder, ...(s.lmWeight === undefined ? [] : [`lm ${s.lmWeight}`, `bonus ${s.wordBonus}`, `beam ${s.beam}`]),
        ...(s.symbolPrune === undefined || opts['symbol-prunes'] === undefined ? [] : [`prune ${s.symbolPrune}`])].join(', ');
      hyps.forEach((h, i) => { hypotheses[i]![key] = h; });
      rows.push({ ...common, decoder, lm_weight: s.lmWeight ?? null, word_bonus: s.wordBonus ?? null, beam: s.beam ?? null,
        symbol_prune: s.symbolPrune ?? null,
        ...errorRates(hyps, refs), decode_ms_per_audio_s: ms / seconds });
    };
    measure('greedy', () => new CtcDecoder(m), {});
    for (const lmWeight of weights) {
      for (const wordBonus of bonuses) {
        for (const symbolPrune of prunes) {
          const s: BeamOptions = { ...base, beam, lmWeight, wordBonus, symbolPrune };
          measure('lexicon', () => new LexiconBeamDecoder(lexicon, m.ctc, m.audio.frame_ms, s), s);
        }
      }
    }
  }
  const f = (x: number | null, d: number): string => (x === null ? '-' : x.toFixed(d));
  printTable(`speech quality, ${opts.split} split`, ['graph', 'budget', 'decoder', 'lm weight', 'word bonus', 'prune', 'CER', 'WER', 'used', 'GFLOPs', 'decode ms / audio s'],
    rows.map((r) => [r.graph, f(r.budget, 2), r.decoder, f(r.lm_weight, 2), f(r.word_bonus, 2), f(r.symbol_prune, 1), f(r.cer, 4), f(r.wer, 4), f(r.used, 3), f(r.gflops, 3), f(r.decode_ms_per_audio_s, 2)]));
  if (opts.transcripts) {
    writeFileSync(opts.transcripts, utts.map((u, i) => JSON.stringify({ id: u.id, reference: u.text, hypotheses: hypotheses[i] })).join('\n') + '\n');
    console.log(`wrote ${opts.transcripts}`);
  }
  if (opts.json) {
    writeFileSync(opts.json, JSON.stringify({ split: opts.split, items: utts.length, audio_seconds: seconds, lm: lmPath, rows }, null, 1) + '\n');
    console.log(`wrote ${opts.json}`);
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
