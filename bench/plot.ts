// Turns the model benchmark's JSON into a PNG chart (ms per image vs budget, ACM and dense per
// batch size), rendered from an SVG by sharp, the image library the server already uses.
//
//   npm run bench:plot -- [--in .cache/bench/model-fashion-vit-acm.json] [--out <file>.png] [--width 800] [--height 500]
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { checkModelBenchJson, modelPlotSvg } from './plot-svg.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

const { values: opts } = parseArgs({
  options: {
    in: { type: 'string', default: join(REPO, '.cache', 'bench', 'model-fashion-vit-acm.json') },
    out: { type: 'string' },
    width: { type: 'string', default: '800' },
    height: { type: 'string', default: '500' },
  },
});

const input = resolve(opts.in);
let data;
try {
  data = checkModelBenchJson(JSON.parse(readFileSync(input, 'utf8')));
} catch (err) {
  throw new Error(`${input}: ${(err as Error).message} (write it with npm run bench:model)`);
}
const width = Number(opts.width);
const height = Number(opts.height);
for (const [name, v] of [['width', width], ['height', height]] as const) {
  if (!Number.isInteger(v) || v < 300 || v > 4000) throw new Error(`--${name} must be an integer in [300, 4000]; got ${v}`);
}
const out = resolve(opts.out ?? input.replace(/\.json$/, '') + '.png');
await mkdir(dirname(out), { recursive: true });
await sharp(Buffer.from(modelPlotSvg(data, width, height))).png().toFile(out);
console.log(`wrote ${out}`);
