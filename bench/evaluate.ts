// Accuracy of an image bundle on the held-out Fashion-MNIST test split, measured through the
// server's own runtime: PNG bytes decoded by sharp, the queue, the batcher and the ONNX worker,
// exactly as /classify serves them. Compares with the figures the manifest carries.
//
//   npm run evaluate -- [--model fashion-vit-acm] [--budgets 0.25,0.5,0.75,1] [--limit N] [--json out.json]
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { scanBundles } from '../server/bundle.js';
import { loadConfig } from '../server/config.js';
import { InferenceService } from '../server/inference.js';
import { createLogger } from '../server/logger.js';
import { Metrics } from '../server/metrics.js';
import { ortBackends } from '../server/ort-backend.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DATA = join(REPO, '.cache', 'fashion-mnist');
const SIDE = 28;
const IN_FLIGHT = 256;

const { values: opts } = parseArgs({
  options: {
    model: { type: 'string', default: 'fashion-vit-acm' },
    budgets: { type: 'string', default: '0.25,0.5,0.75,1' },
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

async function main(): Promise<void> {
  const { images, labels } = testSplit();
  const count = Math.min(labels.length, opts.limit ? Number(opts.limit) : labels.length);
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

  const rows = [];
  console.log(`${manifest.name}: ${count} test items through the server runtime`);
  console.log('budget | accuracy | manifest | used  | GFLOPs  | dense GFLOPs');
  for (const budget of opts.budgets.split(',').map(Number)) {
    let correct = 0, used = 0, gflops = 0, dense = 0;
    for (let start = 0; start < count; start += IN_FLIGHT) {
      const idx = Array.from({ length: Math.min(IN_FLIGHT, count - start) }, (_, j) => start + j);
      const results = await Promise.all(idx.map((i) => inference.classify(manifest.name, pngs[i]!, { budget, topK: 1 })));
      results.forEach((r, j) => {
        if (r.predictions[0]!.label === manifest.labels[labels[idx[j]!]!]) correct++;
        used += r.compute.used; gflops += r.compute.gflops; dense = r.compute.dense_gflops;
      });
    }
    const claimed = manifest.quality.find((q) => q.budget === budget)?.value;
    const row = { budget, accuracy: correct / count, used: used / count, gflops: gflops / count, dense_gflops: dense, manifest: claimed ?? null };
    rows.push(row);
    console.log(`${budget.toFixed(2).padStart(6)} | ${(row.accuracy * 100).toFixed(2).padStart(7)}% | ` +
      `${claimed === undefined ? '   -   ' : (claimed * 100).toFixed(2).padStart(6) + '%'} | ${row.used.toFixed(3)} | ${row.gflops.toFixed(5)} | ${dense.toFixed(5)}`);
  }
  await inference.shutdown(1000);
  mkdirSync(dirname(opts.json), { recursive: true });
  writeFileSync(opts.json, JSON.stringify({ model: manifest.name, items: count, rows }, null, 2));
  console.log(`wrote ${opts.json}`);
}

await main();
