// Model-level timing: an ACM bundle against its dense graph (the bundle's dense_graph), in one
// process with the same session settings, at several batch sizes and budgets, runs interleaved so
// both see the same machine. Reports milliseconds per image (median, with min-max spread), the
// measured speedup over dense, and the FLOP-ideal speedup: dense multiply-adds over the
// multiply-adds the ACM model actually executed (fixed part + gates + learners chosen).
//
//   (options: USAGE below, or --help)
// --quick (batches 1 and 8, 2 repeats) checks that it runs; its timings mean little.
// --against <bundle> times that bundle's ACM graph too, interleaved with this one's, on the same
// inputs (a graph exported by another kernel or exporter, the same weights), and says whether the
// two give the same logits and learner counts.
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { ComputeAccountant } from '../server/compute.js';
import { median, spread, timed, timingSettings } from './stats.js';
import { imageBundleArg, intArg, parseCli, usageError } from './args.js';
import { meanCompute, outputDifference, seededPixels } from './model-inputs.js';
import type { ImageManifest } from '../server/manifest.js';
import { disableOrtTelemetry } from '../server/ort-telemetry.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BUDGETS = [1.0, 0.75, 0.5, 0.25];

const USAGE = `
usage: npm run bench:model -- [--quick] [--bundle models/fashion-vit-acm] [--batches 1,8,32] [--repeats 5]
    [--threads 2] [--against FOLDER] [--json FILE]
An ACM bundle against its dense graph in one process: ms per image per batch and budget, the
speedup over dense and the FLOP-ideal speedup. --against FOLDER: another bundle of the same model
(e.g. re-exported by another kernel), its ACM graph timed beside this one's, and whether both give
the same outputs.
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

/** Why two bundles cannot be timed on the same inputs, or undefined when they can. */
function contractMismatch(a: ImageManifest, b: ImageManifest): string | undefined {
  const key = (m: ImageManifest): string => JSON.stringify([m.image, m.tokens.count, m.acms.length, m.inputs, m.outputs, m.macs.dense]);
  return key(a) === key(b) ? undefined : 'its image contract, tokens, ACMs, graph inputs/outputs or dense MACs differ';
}

async function main(): Promise<void> {
  disableOrtTelemetry();
  const bundle = await imageBundleArg('bundle', opts.bundle);
  const m = bundle.manifest;
  if (!m.dense_graph) usageError(`--bundle ${opts.bundle}: the bundle has no dense_graph to compare with`);
  const other = opts.against === undefined ? undefined : await imageBundleArg('against', opts.against);
  const mismatch = other && contractMismatch(m, other.manifest);
  if (mismatch) usageError(`--against ${opts.against}: not the same model as --bundle ${opts.bundle}: ${mismatch}`);
  const options: ort.InferenceSession.SessionOptions = {
    intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential',
  };
  const acm = await ort.InferenceSession.create(bundle.graphPath, options);
  const dense = await ort.InferenceSession.create(join(bundle.dir, m.dense_graph), options);
  const otherAcm = other && await ort.InferenceSession.create(other.graphPath, options);
  const accountant = new ComputeAccountant(m);
  const { channels, height, width } = m.image;
  const cells = m.acms.length * m.tokens.count;
  const rows = [];
  const againstRows = [];
  console.log(`${m.name}: ${m.acms.length} ACMs, ${m.tokens.count} tokens, dense ${(m.macs.dense / 1e9).toFixed(3)} GMACs/image; ` +
    `${timingSettings(threads, repeats)} (ms per image)`);
  console.log('batch | dense ms | ' + BUDGETS.map((b) => `b=${b}: ms  used  speedup/ideal`).join(' | '));
  for (const batch of batchSizes) {
    const pixels = seededPixels(batch, channels, height, width);
    const variants = BUDGETS.map((budget) => ({
      budget, times: [] as number[], used: 0, macs: 0, otherTimes: [] as number[], maxAbs: 0, differing: 0,
      feeds: { [m.inputs.pixels]: pixels, [m.inputs.budget]: new ort.Tensor('float64', new Float64Array(batch).fill(budget), [batch]) },
    }));
    const denseTimes: number[] = [];
    for (let rep = -1; rep < repeats; rep++) {
      const [dt] = await timed(() => dense.run({ [m.inputs.pixels]: pixels }));
      if (rep >= 0) denseTimes.push(dt / batch);
      for (const v of variants) {
        const [ms, out] = await timed(() => acm.run(v.feeds));
        if (rep >= 0) v.times.push(ms / batch);
        const { used, gflops } = meanCompute(accountant, out[m.outputs.learner_counts]!, batch, cells, v.budget);
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
      return { budget: v.budget, ms_per_image: ms, spread: spread(v.times), used: v.used,
        speedup: denseMs / ms, ideal: m.macs.dense / v.macs, efficiency: (denseMs / ms) / (m.macs.dense / v.macs) };
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
    console.log(`\n--against ${other.dir}: its ACM graph, same inputs, interleaved (ms per image; ratio = its time / this bundle's)`);
    console.log('batch | ' + BUDGETS.map((b) => `b=${b}: ms  ratio  outputs`).join(' | '));
    for (const r of againstRows) {
      console.log(`${String(r.batch).padStart(5)} | ` + r.acm.map((c) => `${c.ms_per_image.toFixed(2).padStart(8)} ${c.ratio.toFixed(3)} ` +
        (c.differing_elements === 0 ? 'same' : `${c.differing_elements} differ (max ${c.max_abs_difference.toExponential(1)})`)).join(' | '));
    }
  }
  const out = opts.json ?? join(REPO, '.cache', 'bench', `model-${basename(bundle.dir)}.json`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ model: m.name, threads, repeats, quick: opts.quick, rows,
    ...(other ? { against: { bundle: other.dir, rows: againstRows } } : {}) }, null, 2));
  console.log(`wrote ${out}`);
  await acm.release();
  await dense.release();
  await otherAcm?.release();
}

await main();
