// Grouped-learner kernel microbenchmark: the capped, grouped ACM FFN against a dense FFN of the
// same shape, timed side by side (interleaved) in one process, as medians over repeats.
//
//   (options: USAGE below, or --help)
// --quick (64 and 256 tokens, 2 repeats) checks that it runs; its timings mean little.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { median, spread, timed } from '../bench/stats.js';
import { intArg, parseCli } from '../bench/args.js';
import { emitGraphs, REPO } from './graphs.js';

const BUDGETS = [1.0, 0.75, 0.5, 0.25];

const USAGE = `
usage: npm run bench:kernel -- [--quick] [--tokens 64,256,1024,4096,8192] [--repeats 7] [--threads 2]
    [--dim 768] [--mlp 3072] [--dir .cache/bench] [--json FILE]
The capped, grouped ACM FFN against a dense FFN of the same shape, interleaved in one process.
`;

const { values: opts } = parseCli(USAGE, {
  options: {
    dir: { type: 'string', default: join(REPO, '.cache', 'bench') },
    quick: { type: 'boolean', default: false },
    tokens: { type: 'string' },
    repeats: { type: 'string' },
    threads: { type: 'string', default: '2' },
    dim: { type: 'string', default: '768' },
    mlp: { type: 'string', default: '3072' },
    json: { type: 'string', default: join(REPO, '.cache', 'bench', 'kernel.json') },
  },
});

const tokenSizes = (opts.tokens ?? (opts.quick ? '64,256' : '64,256,1024,4096,8192')).split(',').map((t) => intArg('tokens', t, 0, 1, 1 << 20));
const repeats = intArg('repeats', opts.repeats, opts.quick ? 2 : 7, 1, 1000);
const threads = intArg('threads', opts.threads, 2, 1, 1024);
const dim = intArg('dim', opts.dim, 768, 1, 65536);
const mlp = intArg('mlp', opts.mlp, 3072, 1, 1 << 20);

/** Small seeded PRNG so every run times the same inputs and choices. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(next: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
}

function timeRun(session: ort.InferenceSession, feeds: Record<string, ort.Tensor>): Promise<[number, ort.InferenceSession.OnnxValueMapType]> {
  return timed(() => session.run(feeds));
}

async function main(): Promise<void> {
  const shape = emitGraphs(opts.dir, dim, mlp);
  const options: ort.InferenceSession.SessionOptions = {
    intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential',
  };
  const acm = await ort.InferenceSession.create(join(opts.dir, 'acm_ffn.onnx'), options);
  const dense = await ort.InferenceSession.create(join(opts.dir, 'dense_ffn.onnx'), options);
  const t = shape.tokens_per_request;
  const rows = [];
  console.log(`FFN ${shape.dim} -> ${shape.mlp} -> ${shape.dim}, N = ${shape.n}, ${t} tokens per request, ${threads} threads, median of ${repeats}`);
  console.log('tokens | dense ms | ' + BUDGETS.map((b) => `b=${b}: ms  used  speedup/ideal  eff`).join(' | '));
  for (const tokens of tokenSizes) {
    const requests = Math.max(1, Math.round(tokens / t));
    const m = requests * t;
    const next = rng(tokens);
    const x = new ort.Tensor('float32', Float32Array.from({ length: m * shape.dim }, () => gaussian(next)), [requests, t, shape.dim]);
    const variants = BUDGETS.map((budget) => {
      // At budget 1 every token asks for every learner (the kernel's overhead against dense); below
      // it, the gate's wishes scatter around the budget so every group occurs, and the cap trims.
      const desired = BigInt64Array.from({ length: m }, () => budget === 1 ? BigInt(shape.n) :
        BigInt(Math.min(shape.n, Math.max(0, Math.round(budget * shape.n + 1.5 * gaussian(next))))));
      return {
        budget,
        feeds: {
          x,
          desired: new ort.Tensor('int64', desired, [requests, t]),
          budget: new ort.Tensor('float64', new Float64Array(requests).fill(budget), [requests]),
        },
        times: [] as number[],
        used: 0,
      };
    });
    const denseTimes: number[] = [];
    for (let rep = -2; rep < repeats; rep++) {
      const [dt] = await timeRun(dense, { x });
      if (rep >= 0) denseTimes.push(dt);
      for (const v of variants) {
        const [ms, out] = await timeRun(acm, v.feeds);
        if (rep >= 0) v.times.push(ms);
        const k = out.k!.data as BigInt64Array;
        let sum = 0;
        for (const c of k) sum += Number(c);
        v.used = sum / (m * shape.n);
      }
    }
    const denseMs = median(denseTimes);
    const cells = variants.map((v) => {
      const ms = median(v.times);
      const speedup = denseMs / ms;
      const ideal = 1 / v.used;
      return { budget: v.budget, ms, used: v.used, speedup, ideal, efficiency: speedup / ideal,
        spread: spread(v.times) };
    });
    rows.push({ tokens: m, dense_ms: denseMs, dense_spread: spread(denseTimes), acm: cells });
    console.log(`${String(m).padStart(6)} | ${denseMs.toFixed(3).padStart(8)} | ` + cells.map((c) =>
      `${c.ms.toFixed(3).padStart(8)} ${c.used.toFixed(3)} ${c.speedup.toFixed(2)}x/${c.ideal.toFixed(2)}x ${(c.efficiency * 100).toFixed(0).padStart(3)}%`).join(' | '));
  }
  mkdirSync(dirname(opts.json), { recursive: true });
  writeFileSync(opts.json, JSON.stringify({ shape, threads, repeats, quick: opts.quick, rows }, null, 2));
  console.log(`wrote ${opts.json}`);
  await acm.release();
  await dense.release();
}

await main();
