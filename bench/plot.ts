// Turns the model benchmark's JSON into a PNG chart (ms per image vs budget, ACM and dense per
// batch size), rendered from an SVG by sharp, the image library the server already uses.
//
//   (options: USAGE below, or --help)
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import sharp from 'sharp';
import { checkModelBenchJson, modelPlotSvg } from './plot-svg.js';
import { intArg, parseCli, usageError } from './args.js';
import { REPO } from './server-process.js';


const USAGE = `
usage: npm run bench:plot -- [--in .cache/bench/model-fashion-vit-acm.json] [--out FILE.png] [--width 800]
    [--height 500]
Draws time per image against budget for the ACM and dense graphs from a bench:model JSON.
`;

const { values: opts } = parseCli(USAGE, {
  options: {
    in: { type: 'string', default: join(REPO, '.cache', 'bench', 'model-fashion-vit-acm.json') },
    out: { type: 'string' },
    width: { type: 'string', default: '800' },
    height: { type: 'string', default: '500' },
  },
});

const width = intArg('width', opts.width, 800, 300, 4000);
const height = intArg('height', opts.height, 500, 300, 4000);
const input = resolve(opts.in);
let data;
try {
  data = checkModelBenchJson(JSON.parse(readFileSync(input, 'utf8')));
} catch (err) {
  usageError(`--in ${input}: ${(err as Error).message} (write it with npm run bench:model)`);
}
const out = resolve(opts.out ?? input.replace(/\.json$/, '') + '.png');
await mkdir(dirname(out), { recursive: true });
await sharp(Buffer.from(modelPlotSvg(data, width, height))).png().toFile(out);
console.log(`wrote ${out}`);
