// `npm run bench`: every benchmark in sequence (kernel, published mask loop, model, paper-size model, speech model,
// profile, decode, machine steadiness, server load, server memory, speech), each in its own process so one's threads
// and memory cannot colour the next. Each prints its tables and writes its JSON (default
// .cache/bench/; --out puts them all in one folder). The speech benches are skipped, saying why,
// when the models folder (ACM_MODELS_DIR, default models/) has no speech bundle; the speech model
// bench times the first one by name.
//
//   (options: USAGE below, or --help)
// Environment twins: ACM_BENCH_ONLY, ACM_BENCH_QUICK=1, ACM_BENCH_OUT. For a single bench's own
// options run it directly, e.g. `npm run bench:server -- --concurrency 8,32 --repeats 5`.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { speechBundleNames } from '../server/speech/bundle.js';
import { parseCli } from './args.js';

const dist = (rel: string): string => fileURLToPath(new URL(rel, import.meta.url));
const modelsDir = resolve(process.env.ACM_MODELS_DIR ?? dist('../../models'));
const speechBundle = speechBundleNames(modelsDir)[0];
const BENCHES = [
  { name: 'kernel', script: dist('../kernels/bench.js'), json: 'kernel.json', what: 'grouped-learner kernel vs dense FFN' },
  { name: 'peer', script: dist('../kernels/peer-ort.js'), json: 'peer.json',
    what: 'the published mask loop per learner (PyTorch) vs our kernel in PyTorch and onnxruntime' },
  { name: 'model', script: dist('./model-bench.js'), json: 'model-fashion-vit-acm.json', what: 'ACM bundle vs its dense graph' },
  { name: 'paper-model', script: dist('./paper-model.js'), json: 'model-vit-b16.json',
    what: 'ViT-B/16 geometry (random weights, floor path) vs dense ViT-B/16; exported on first use' },
  { name: 'speech-model', script: dist('./model-bench.js'), json: `model-${speechBundle ?? 'speech'}.json`,
    what: 'speech ACM bundle vs its dense graph, per window', args: speechBundle === undefined ? [] : ['--bundle', join(modelsDir, speechBundle)] },
  { name: 'profile', script: dist('./model-profile.js'), json: 'profile-fashion-vit-acm.json', what: 'where the ACM graph\'s time goes, by role' },
  { name: 'decode', script: dist('./decode-bench.js'), json: 'decode.json', what: 'image decoding, direct PNG vs libvips' },
  { name: 'steady', script: dist('./steadiness.js'), json: 'steadiness.json',
    what: 'how steady the machine\'s speed is, second by second, for the model and two loops' },
  { name: 'server', script: dist('./server-load.js'), json: 'server-load.json', what: 'HTTP load, batching on vs off' },
  { name: 'memory', script: dist('./server-memory.js'), json: 'server-memory.json', what: 'resident memory per model and under a soak' },
  { name: 'speech', script: dist('./speech-stream.js'), json: 'speech-stream.json', what: 'speech real-time factor and streaming latency' },
] as const;

/** Why a bench cannot run here, or undefined when it can. */
function skipReason(name: string): string | undefined {
  if (name !== 'speech' && name !== 'speech-model') return undefined;
  return speechBundle !== undefined ? undefined
    : `skipped: no speech bundle in ${modelsDir} (a sub-folder whose acm.json has task "speech-recognition"; set ACM_MODELS_DIR)`;
}

const USAGE = `
usage: npm run bench -- [--only kernel,peer,model,paper-model,speech-model,profile,decode,steady,server,memory,speech] [--quick] [--out FOLDER]
Every benchmark in sequence, each in its own process; each prints its tables and writes its JSON
(default .cache/bench/). --quick makes each a smoke run whose timings mean nothing.
`;

const { values: opts } = parseCli(USAGE, {
  options: {
    only: { type: 'string', default: process.env.ACM_BENCH_ONLY },
    quick: { type: 'boolean', default: ['1', 'true'].includes(process.env.ACM_BENCH_QUICK ?? '') },
    out: { type: 'string', default: process.env.ACM_BENCH_OUT },
  },
});

const names = BENCHES.map((b) => b.name) as string[];
const only = opts.only === undefined || opts.only === '' ? names : opts.only.split(',').map((s) => s.trim());
const unknown = only.filter((n) => !names.includes(n));
if (unknown.length > 0) {
  console.error(`--only: unknown bench ${unknown.map((n) => JSON.stringify(n)).join(', ')}; choose from ${names.join(', ')}`);
  process.exit(2);
}

const outcomes: string[] = [];
let failed = 0;
for (const bench of BENCHES.filter((b) => only.includes(b.name))) {
  const args = [bench.script, ...('args' in bench ? bench.args : [])];
  if (opts.quick) args.push('--quick');
  if (opts.out !== undefined) args.push('--json', join(resolve(opts.out), bench.json));
  console.log(`\n=== ${bench.name}: ${bench.what}${opts.quick ? ' (quick)' : ''} ===`);
  const skip = skipReason(bench.name);
  if (skip !== undefined) {
    console.log(skip);
    outcomes.push(`${bench.name}: ${skip}`);
    continue;
  }
  const t0 = Date.now();
  const child = spawn(process.execPath, args, { stdio: 'inherit' });
  const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
  const seconds = ((Date.now() - t0) / 1000).toFixed(0);
  if (code === 0) {
    outcomes.push(`${bench.name}: ok (${seconds} s)`);
  } else {
    failed++;
    outcomes.push(`${bench.name}: FAILED (${signal ?? `exit code ${code}`}) after ${seconds} s`);
  }
}
console.log(`\n${outcomes.join('\n')}`);
process.exit(failed > 0 ? 1 : 0);
