// Image decoding cost per image: the server's decodeImage on the committed test images, with the
// direct PNG reader (server/png.ts) and through libvips, interleaved repeat by repeat. Reports wall
// milliseconds per image (one image at a time on this thread) and CPU milliseconds per image
// (process.cpuUsage, which counts libvips' own threads too), median with [min-max] over repeats.
//
//   (options: USAGE below, or --help)
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { decodeImage } from '../server/image.js';
import { imageBundleArg, intArg, parseCli, usageError } from './args.js';
import { fmt, summarize } from './stats.js';
import { REPO } from './server-process.js';


const USAGE = `
usage: npm run bench:decode -- [--quick] [--bundle models/fashion-vit-acm] [--images-dir test/fixtures/fashion-test]
    [--count 2000] [--repeats 5] [--json FILE]
decodeImage per image with the direct PNG reader and through libvips, for the bundle's input
contract: wall and CPU ms per image.
`;

const { values: opts } = parseCli(USAGE, {
  options: {
    quick: { type: 'boolean', default: false },
    bundle: { type: 'string', default: join(REPO, 'models', 'fashion-vit-acm') },
    'images-dir': { type: 'string', default: join(REPO, 'test', 'fixtures', 'fashion-test') },
    count: { type: 'string' },
    repeats: { type: 'string' },
    json: { type: 'string' },
  },
});
const count = intArg('count', opts.count, opts.quick ? 50 : 2000, 1, 1e7);
const repeats = intArg('repeats', opts.repeats, opts.quick ? 2 : 5, 1, 1000);
let files: string[];
try {
  files = readdirSync(opts['images-dir']).filter((f) => f.endsWith('.png')).sort();
} catch (err) {
  usageError(`--images-dir must be a folder of PNG files; ${JSON.stringify(opts['images-dir'])}: ${(err as Error).message}`);
}
if (files.length === 0) usageError(`--images-dir must be a folder of PNG files; ${JSON.stringify(opts['images-dir'])} holds none`);
const images = files.map((f) => readFileSync(join(opts['images-dir'], f)));
const { image } = (await imageBundleArg('bundle', opts.bundle)).manifest;

const modes = [{ name: 'direct PNG', direct: true }, { name: 'libvips', direct: false }];
const wall: number[][] = modes.map(() => []);
const cpu: number[][] = modes.map(() => []);
for (let rep = -1; rep < repeats; rep++) {
  for (const [i, mode] of modes.entries()) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < count; k++) await decodeImage(images[k % images.length]!, { image }, 1e8, mode.direct);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const used = process.cpuUsage(c0);
    if (rep < 0) continue; // warm-up
    wall[i]!.push(ms / count);
    cpu[i]!.push((used.user + used.system) / 1000 / count);
  }
}
console.log(`decodeImage for ${image.width}x${image.height}x${image.channels} inputs, ${images.length} images from ` +
  `${opts['images-dir']}, ${count} per repeat, median [min-max] of ${repeats}`);
const rows = modes.map((m, i) => ({ mode: m.name, wall_ms_per_image: summarize(wall[i]!), cpu_ms_per_image: summarize(cpu[i]!) }));
for (const r of rows) console.log(`${r.mode.padStart(10)}: wall ${fmt(r.wall_ms_per_image, 3)} ms, CPU ${fmt(r.cpu_ms_per_image, 3)} ms per image`);
const out = opts.json ?? join(REPO, '.cache', 'bench', 'decode.json');
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify({ images: images.length, count, repeats, quick: opts.quick, rows }, null, 2));
console.log(`wrote ${out}`);
