// Accuracy of an image bundle on the held-out Fashion-MNIST test split, measured through the
// server's own runtime: PNG bytes decoded by sharp, the queue, the batcher and the ONNX worker,
// exactly as /classify serves them. Compares with the figures the manifest carries, measures where
// the compute went (garment patches against background patches), and with --figures draws the
// README's heatmap sheet and accuracy-against-GFLOPs plot.
//
//   (options: USAGE below, or --help)
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { scanBundles } from '../server/bundle.js';
import { loadConfig } from '../server/config.js';
import { InferenceService } from '../server/inference.js';
import { createLogger } from '../server/logger.js';
import { Metrics } from '../server/metrics.js';
import { ortBackends } from '../server/ort-backend.js';
import { heatmapSheet, linePlot, type Series } from './figures.js';
import { budgetArg, intArg, parseCli } from './args.js';
import { REPO } from './server-process.js';

/** What models/toolchain/build_bundle.py measured in PyTorch (docs/fashion-comparison.json). */
interface Comparison {
  dense: { accuracy: number; gflops: number };
  /** budget_weight: the budget loss weight it was trained with (DESIGN §2's 0.1 when absent). */
  per_target: Array<{ target: number; budget_weight?: number; accuracy: number; used: number; gflops: number }>;
}

const DATA = join(REPO, '.cache', 'fashion-mnist');
const SIDE = 28;
const IN_FLIGHT = 256;
/** A pixel (0..255) brighter than this is garment; Fashion-MNIST backgrounds are 0. */
const INK = 32;
/**
 * A patch is "garment" when at least half of its pixels are ink and "background" when none is;
 * patches on the outline (some ink, under half) count in neither.
 */
function patchKind(pixels: Uint8Array, side: number, grid: [number, number], r: number, c: number): PatchKind {
  const ph = side / grid[0], pw = side / grid[1];
  let ink = 0;
  for (let y = r * ph; y < (r + 1) * ph; y++) for (let x = c * pw; x < (c + 1) * pw; x++) if (pixels[y * side + x]! > INK) ink++;
  if (ink === 0) return 'background';
  return ink * 2 >= ph * pw ? 'garment' : 'edge';
}
type PatchKind = 'garment' | 'background' | 'edge';
interface Row {
  budget: number; accuracy: number; used: number; gflops: number; dense_gflops: number; manifest: number | null;
  garment_patch_compute: number; background_patch_compute: number; patches: Record<PatchKind, number>;
}
/** Sheet budgets and columns: the first test item of each class. */
const SHEET_BUDGETS = [0.25, 0.5];

const USAGE = `
usage: npm run evaluate -- [--model fashion-vit-acm] [--budgets 0.1,0.25,0.4,0.5,0.6,0.75,1] [--limit N]
    [--figures FOLDER] [--comparison docs/fashion-comparison.json] [--json FILE]
Test-split accuracy and compute per budget of the image bundle through the TypeScript runtime.
`;

const { values: opts } = parseCli(USAGE, {
  options: {
    model: { type: 'string', default: 'fashion-vit-acm' },
    budgets: { type: 'string', default: '0.1,0.25,0.4,0.5,0.6,0.75,1' },
    figures: { type: 'string' },
    comparison: { type: 'string', default: join(REPO, 'docs', 'fashion-comparison.json') },
    limit: { type: 'string' },
    json: { type: 'string', default: join(REPO, '.cache', 'eval', 'fashion-test.json') },
  },
});

function testSplit(): { images: Uint8Array; labels: Uint8Array } {
  const images = join(DATA, 'test-images.u8');
  if (!existsSync(images)) {
    // The toolchain owns the split rule (index >= 6000 in each class file); let it write the bytes.
    execFileSync(process.env.ACM_PYTHON ?? '/usr/bin/python3', ['-m', 'models.toolchain.data', 'test'], { cwd: REPO, stdio: 'inherit' });
  }
  return { images: readFileSync(images), labels: readFileSync(join(DATA, 'test-labels.u8')) };
}

const limit = intArg('limit', opts.limit, Number.MAX_SAFE_INTEGER, 1);
const budgets = opts.budgets.split(',').map((b) => budgetArg('budgets', b, NaN));

async function main(): Promise<void> {
  const { images, labels } = testSplit();
  const count = Math.min(labels.length, limit);
  const pngs = await Promise.all(Array.from({ length: count }, (_, i) =>
    sharp(images.subarray(i * SIDE * SIDE, (i + 1) * SIDE * SIDE), { raw: { width: SIDE, height: SIDE, channels: 1 } }).png().toBuffer()));

  const config = loadConfig({ ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' }, []);
  const log = createLogger(config.logLevel);
  const inference = new InferenceService(config, new Metrics({ defaultMetrics: false }), log);
  const scan = await scanBundles(config.modelsDir);
  const bundle = scan.bundles.find((b) => b.manifest.name === opts.model);
  if (!bundle) throw new Error(`no bundle named ${opts.model} under ${config.modelsDir}`);
  await inference.load([bundle], ortBackends(config, log));
  const manifest = bundle.manifest;

  const rows: Row[] = [];
  const sheetItems = manifest.labels.map((_, c) => labels.subarray(0, count).indexOf(c)).filter((i) => i >= 0);
  const sheetMaps = new Map<number, number[][][]>(sheetItems.map((i) => [i, []]));
  console.log(`${manifest.name}: ${count} test items through the server runtime`);
  console.log('budget | accuracy | manifest | used  | GFLOPs  | garment | background');
  for (const budget of budgets) {
    let correct = 0, used = 0, gflops = 0, dense = 0;
    const spent = { garment: 0, background: 0, edge: 0 }, patches = { garment: 0, background: 0, edge: 0 };
    for (let start = 0; start < count; start += IN_FLIGHT) {
      const idx = Array.from({ length: Math.min(IN_FLIGHT, count - start) }, (_, j) => start + j);
      const results = await Promise.all(idx.map((i) => inference.classify(manifest.name, pngs[i]!, { budget, topK: 1 })));
      results.forEach((r, j) => {
        const item = idx[j]!;
        if (r.predictions[0]!.label === manifest.labels[labels[item]!]) correct++;
        used += r.compute.used; gflops += r.compute.gflops; dense = r.compute.dense_gflops;
        const { grid, values } = r.compute.map;
        const pixels = images.subarray(item * SIDE * SIDE, (item + 1) * SIDE * SIDE);
        values.forEach((row, y) => row.forEach((v, x) => {
          const kind = patchKind(pixels, SIDE, grid, y, x);
          spent[kind] += v; patches[kind]++;
        }));
        if (SHEET_BUDGETS.includes(budget)) sheetMaps.get(item)?.push(values);
      });
    }
    const claimed = manifest.quality.find((q) => q.budget === budget)?.value;
    const row = {
      budget, accuracy: correct / count, used: used / count, gflops: gflops / count, dense_gflops: dense, manifest: claimed ?? null,
      garment_patch_compute: spent.garment / patches.garment, background_patch_compute: spent.background / patches.background,
      patches,
    };
    rows.push(row);
    console.log(`${budget.toFixed(2).padStart(6)} | ${(row.accuracy * 100).toFixed(2).padStart(7)}% | ` +
      `${claimed === undefined ? '   -   ' : (claimed * 100).toFixed(2).padStart(6) + '%'} | ${row.used.toFixed(3)} | ` +
      `${row.gflops.toFixed(5)} | ${row.garment_patch_compute.toFixed(3).padStart(7)} | ${row.background_patch_compute.toFixed(3)}`);
  }
  const dense = rows[0]?.dense_gflops ?? 0;
  console.log(`dense: ${dense.toFixed(5)} GFLOPs. garment/background: mean learner fraction on patches with >= half ` +
    `their pixels above ${INK} / with none above it.`);
  const diffs = rows.filter((r) => r.manifest !== null).map((r) => Math.abs(r.accuracy - r.manifest!) * 100);
  if (diffs.length) console.log(`largest difference to the manifest's accuracy: ${Math.max(...diffs).toFixed(2)} points`);

  if (opts.figures) {
    mkdirSync(opts.figures, { recursive: true });
    if (SHEET_BUDGETS.every((b) => rows.some((r) => r.budget === b))) {
      const sheet = await heatmapSheet(SIDE, sheetItems.map((i) => ({
        title: manifest.labels[labels[i]!]!, pixels: images.subarray(i * SIDE * SIDE, (i + 1) * SIDE * SIDE), maps: sheetMaps.get(i)!,
      })), SHEET_BUDGETS.map((b) => `budget ${b}`));
      writeFileSync(join(opts.figures, 'fashion-heatmaps.png'), sheet);
    }
    const series: Series[] = [{ label: `${manifest.name} (one model, every budget)`, colour: '#c0392b', line: true,
      points: rows.map((r) => ({ x: r.gflops, y: r.accuracy, note: String(r.budget) })) }];
    if (existsSync(opts.comparison)) {
      const cmp = JSON.parse(readFileSync(opts.comparison, 'utf8')) as Comparison;
      series.push({ label: 'one model per target (published way)', colour: '#2471a3', line: false,
        points: cmp.per_target.map((p) => {
          const weight = p.budget_weight !== undefined && p.budget_weight !== 0.1 ? ` (w ${p.budget_weight})` : '';
          return { x: p.gflops, y: p.accuracy, note: `${p.target}${weight}` };
        }) });
      series.push({ label: 'dense base', colour: '#222222', line: false, points: [{ x: cmp.dense.gflops, y: cmp.dense.accuracy }] });
    }
    writeFileSync(join(opts.figures, 'fashion-accuracy-gflops.png'), await linePlot(series, {
      x: 'GFLOPs per image', y: 'test accuracy', title: `Fashion-MNIST test split (${count} items)`,
    }));
    console.log(`wrote figures to ${opts.figures}`);
  }
  await inference.shutdown(1000);
  mkdirSync(dirname(opts.json), { recursive: true });
  writeFileSync(opts.json, JSON.stringify({ model: manifest.name, items: count, rows }, null, 2));
  console.log(`wrote ${opts.json}`);
}

await main();
