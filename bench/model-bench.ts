// Model-level timing: an ACM bundle against its dense graph (the bundle's dense_graph), in one
// process with the same session settings, at several batch sizes and budgets, runs interleaved so
// both see the same machine. Reports milliseconds per item (an image, or a speech window), median
// with min-max spread, the measured speedup over dense (the median of each repeat's dense time over
// its ACM time), and the FLOP-ideal speedup: dense
// multiply-adds over the multiply-adds the ACM model actually executed (fixed part + gates +
// learners chosen). Image bundles get fixed pseudo-random pixels; speech bundles the windows of a
// committed utterance (model-inputs.ts).
//
//   (options: USAGE below, or --help)
// --quick (batches 1 and 8, 2 repeats) checks that it runs; its timings mean little.
// --against <bundle> times that bundle's ACM graph too, interleaved with this one's, on the same
// inputs (a graph exported by another kernel or exporter, the same weights), and says whether the
// two give the same logits and learner counts.
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { ComputeAccountant } from '../server/compute.js';
import { SpeechAccountant } from '../server/speech/compute.js';
import { median, spread, timed, timingSettings } from './stats.js';
import { intArg, modelBundleArg, parseCli, usageError } from './args.js';
import { benchSessionOptions, meanCompute, meanSpeechCompute, outputDifference, seededPixels, speechWindows } from './model-inputs.js';
import { disableOrtTelemetry } from '../server/ort-telemetry.js';
import { REPO } from './server-process.js';

const BUDGETS = [1.0, 0.75, 0.5, 0.25];

const USAGE = `
usage: npm run bench:model -- [--quick] [--bundle models/fashion-vit-acm] [--batches 1,8,32] [--repeats 5]
    [--threads 2] [--against FOLDER] [--json FILE]
An ACM bundle (image or speech) against its dense graph in one process: ms per image or per speech
window, per batch and budget, the speedup over dense and the FLOP-ideal speedup. --against FOLDER:
another bundle of the same model (e.g. re-exported by another kernel), its ACM graph timed beside
this one's, and whether both give the same outputs.
`;

const { values: opts } = parseCli(USAGE, {
  options: {
    bundle: { type: 'string', default: join(REPO, 'models', 'fashion-vit-acm') },
    quick: { type: 'boolean', default: false },
    batches: { type: 'string' },
    repeats: { type: 'string' },
    threads: { type: 'string', default: '2' },
    against: { type: 'string' },
    json: { type: 'string' },
  },
});

const batchSizes = (opts.batches ?? (opts.quick ? '1,8' : '1,8,32')).split(',').map((b) => intArg('batches', b, 0, 1, 4096));
const repeats = intArg('repeats', opts.repeats, opts.quick ? 2 : 5, 1, 1000);
const threads = intArg('threads', opts.threads, 2, 1, 1024);

/** What the bench needs of a bundle, whichever its family. */
interface Subject {
  readonly name: string;
  readonly dir: string;
  readonly graphPath: string;
  /** The dense graph's path, when the bundle has one. */
  readonly densePath: string | undefined;
  /** 'image' or 'window': what one row of a batch is. */
  readonly unit: string;
  readonly acms: number;
  readonly tokens: number;
  readonly denseMacs: number;
  readonly outputs: { readonly logits: string; readonly learner_counts: string };
  /** What two bundles must share to be timed on the same inputs. */
  readonly contract: string;
  /** The ACM graph's budget input. */
  readonly budgetInput: string;
  /** The inputs of one batch but the budget, which both graphs share. */
  inputs(batch: number): Record<string, ort.Tensor>;
  /** Mean learner fraction used and GFLOPs per row, from the ACM graph's learner counts. */
  compute(counts: ort.Tensor, batch: number, budget: number): { used: number; gflops: number };
}

async function subjectArg(name: string, raw: string): Promise<Subject> {
  const loaded = await modelBundleArg(name, raw);
  const { bundle } = loaded;
  const m = bundle.manifest;
  // What either family's manifest says the same way.
  const common = {
    name: m.name, dir: bundle.dir, graphPath: bundle.graphPath, densePath: m.dense_graph && join(bundle.dir, m.dense_graph),
    acms: m.acms.length, denseMacs: m.macs.dense, outputs: m.outputs, budgetInput: m.inputs.budget,
  };
  if (loaded.kind === 'speech') {
    const sm = loaded.bundle.manifest;
    const accountant = new SpeechAccountant(sm);
    return {
      ...common, unit: 'window', tokens: sm.audio.window_frames,
      contract: JSON.stringify([sm.audio, sm.acms.length, sm.inputs, sm.outputs, sm.macs.dense]),
      inputs: (batch) => ({ [sm.inputs.audio]: speechWindows(sm, batch) }),
      compute: (counts, batch, budget) => meanSpeechCompute(accountant, sm, counts, batch, budget),
    };
  }
  const im = loaded.bundle.manifest;
  const accountant = new ComputeAccountant(im);
  const cells = im.acms.length * im.tokens.count;
  return {
    ...common, unit: 'image', tokens: im.tokens.count,
    contract: JSON.stringify([im.image, im.tokens.count, im.acms.length, im.inputs, im.outputs, im.macs.dense]),
    inputs: (batch) => ({ [im.inputs.pixels]: seededPixels(batch, im.image.channels, im.image.height, im.image.width) }),
    compute: (counts, batch, budget) => meanCompute(accountant, counts, batch, cells, budget),
  };
}

async function main(): Promise<void> {
  disableOrtTelemetry();
  const m = await subjectArg('bundle', opts.bundle);
  if (m.densePath === undefined) usageError(`--bundle ${opts.bundle}: the bundle has no dense_graph to compare with`);
  const other = opts.against === undefined ? undefined : await subjectArg('against', opts.against);
  if (other && other.contract !== m.contract) {
    usageError(`--against ${opts.against}: not the same model as --bundle ${opts.bundle}: its input contract, tokens, ACMs, ` +
      'graph inputs/outputs or dense MACs differ');
  }
  const options = benchSessionOptions(threads);
  const acm = await ort.InferenceSession.create(m.graphPath, options);
  const dense = await ort.InferenceSession.create(m.densePath, options);
  const otherAcm = other && await ort.InferenceSession.create(other.graphPath, options);
  const rows = [];
  const againstRows = [];
  console.log(`${m.name}: ${m.acms} ACMs, ${m.tokens} tokens, dense ${(m.denseMacs / 1e9).toFixed(3)} GMACs/${m.unit}; ` +
    `${timingSettings(threads, repeats)} (ms per ${m.unit})`);
  console.log('batch | dense ms | ' + BUDGETS.map((b) => `b=${b}: ms  used  speedup/ideal`).join(' | '));
  for (const batch of batchSizes) {
    const inputs = m.inputs(batch);
    const variants = BUDGETS.map((budget) => ({
      budget, times: [] as number[], used: 0, macs: 0, otherTimes: [] as number[], maxAbs: 0, differing: 0,
      feeds: { ...inputs, [m.budgetInput]: new ort.Tensor('float64', new Float64Array(batch).fill(budget), [batch]) },
    }));
    const denseTimes: number[] = [];
    for (let rep = -1; rep < repeats; rep++) {
      const [dt] = await timed(() => dense.run(inputs));
      if (rep >= 0) denseTimes.push(dt / batch);
      for (const v of variants) {
        const [ms, out] = await timed(() => acm.run(v.feeds));
        if (rep >= 0) v.times.push(ms / batch);
        const { used, gflops } = m.compute(out[m.outputs.learner_counts]!, batch, v.budget);
        v.used = used;
        v.macs = gflops * 1e9;
        if (otherAcm === undefined) continue;
        const [otherMs, otherOut] = await timed(() => otherAcm.run(v.feeds));
        if (rep >= 0) v.otherTimes.push(otherMs / batch);
        for (const name of [m.outputs.logits, m.outputs.learner_counts]) {
          const d = outputDifference(out[name]!, otherOut[name]!);
          v.maxAbs = Math.max(v.maxAbs, d.maxAbs);
          v.differing += d.differing;
        }
      }
    }
    const denseMs = median(denseTimes);
    const acmCells = variants.map((v) => {
      const ms = median(v.times);
      // Each repeat's dense run and ACM run are seconds apart, the repeats minutes apart on a long
      // run: the ratio within each repeat cancels the machine's drift that a ratio of the two
      // medians keeps, so the printed speedup is the median of the per-repeat ratios.
      const ratios = v.times.map((t, i) => denseTimes[i]! / t);
      const paired = median(ratios);
      const ideal = m.denseMacs / v.macs;
      return { budget: v.budget, ms_per_image: ms, spread: spread(v.times), used: v.used,
        speedup_of_medians: denseMs / ms, speedup: paired, speedup_spread: spread(ratios), ideal, efficiency: paired / ideal };
    });
    rows.push({ batch, dense_ms_per_image: denseMs, dense_spread: spread(denseTimes), acm: acmCells });
    console.log(`${String(batch).padStart(5)} | ${denseMs.toFixed(2).padStart(8)} | ` + acmCells.map((c) =>
      `${c.ms_per_image.toFixed(2).padStart(8)} ${c.used.toFixed(3)} ${c.speedup.toFixed(2)}x/${c.ideal.toFixed(2)}x`).join(' | '));
    if (otherAcm !== undefined) {
      againstRows.push({ batch, acm: variants.map((v) => ({ budget: v.budget, ms_per_image: median(v.otherTimes), spread: spread(v.otherTimes),
        ratio: median(v.otherTimes) / median(v.times), max_abs_difference: v.maxAbs, differing_elements: v.differing })) });
    }
  }
  if (other !== undefined) {
    console.log(`\n--against ${other.dir}: its ACM graph, same inputs, interleaved (ms per ${m.unit}; ratio = its time / this bundle's)`);
    console.log('batch | ' + BUDGETS.map((b) => `b=${b}: ms  ratio  outputs`).join(' | '));
    for (const r of againstRows) {
      console.log(`${String(r.batch).padStart(5)} | ` + r.acm.map((c) => `${c.ms_per_image.toFixed(2).padStart(8)} ${c.ratio.toFixed(3)} ` +
        (c.differing_elements === 0 ? 'same' : `${c.differing_elements} differ (max ${c.max_abs_difference.toExponential(1)})`)).join(' | '));
    }
  }
  const out = opts.json ?? join(REPO, '.cache', 'bench', `model-${basename(m.dir)}.json`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ model: m.name, unit: m.unit, threads, repeats, quick: opts.quick, rows,
    ...(other ? { against: { bundle: other.dir, rows: againstRows } } : {}) }, null, 2));
  console.log(`wrote ${out}`);
  await acm.release();
  await dense.release();
  await otherAcm?.release();
}

await main();
