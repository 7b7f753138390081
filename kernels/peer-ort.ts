// The published way as a peer: the reference implementation's boolean-mask loop per learner,
// re-expressed in PyTorch (kernels/peer_bench.py), against our grouped kernel in PyTorch and as the
// server runs it (onnxruntime, the graph of kernels/emit_bench.py), on the same weights, the same
// token choices and the same thread count. PyTorch times its two first, interleaved, in its own
// process; this one then times onnxruntime on the inputs and choices it wrote, after checking
// that the outputs agree.
//
//   (options: USAGE below, or --help)
// --quick (256 tokens, budgets 1 and 0.25, 2 repeats) checks that it runs; its timings mean little.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { budgetArg, intArg, parseCli, usageError } from '../bench/args.js';
import { median, spread, timed } from '../bench/stats.js';
import { emitGraphs, REPO } from './graphs.js';

const USAGE = `
usage: npm run bench:peer -- [--quick] [--tokens 256,1024,4096] [--budgets 1,0.75,0.5,0.25] [--repeats 7]
    [--threads 2] [--dim 768] [--mlp 3072] [--dir .cache/bench] [--json FILE]
The reference implementation's mask loop per learner (PyTorch) against our grouped kernel, in
PyTorch and in onnxruntime as served, on the same weights, token choices and threads.
--tokens must be multiples of the graph's 64 tokens per request.
`;

const { values: opts } = parseCli(USAGE, {
  options: {
    quick: { type: 'boolean', default: false },
    tokens: { type: 'string' },
    budgets: { type: 'string' },
    repeats: { type: 'string' },
    threads: { type: 'string', default: '2' },
    dim: { type: 'string', default: '768' },
    mlp: { type: 'string', default: '3072' },
    dir: { type: 'string', default: join(REPO, '.cache', 'bench') },
    json: { type: 'string' },
  },
});

const TOKENS_PER_REQUEST = 64;
const tokenSizes = (opts.tokens ?? (opts.quick ? '256' : '256,1024,4096')).split(',').map((t) => {
  const v = intArg('tokens', t, 0, TOKENS_PER_REQUEST, 1 << 20);
  if (v % TOKENS_PER_REQUEST !== 0) usageError(`--tokens must be multiples of ${TOKENS_PER_REQUEST}; got ${JSON.stringify(t)}`);
  return v;
});
const budgets = (opts.budgets ?? (opts.quick ? '1,0.25' : '1,0.75,0.5,0.25')).split(',').map((b) => budgetArg('budgets', b, 1));
const repeats = intArg('repeats', opts.repeats, opts.quick ? 2 : 7, 1, 1000);
const threads = intArg('threads', opts.threads, 2, 1, 1024);
const dim = intArg('dim', opts.dim, 768, 1, 65536);
const mlp = intArg('mlp', opts.mlp, 3072, 4, 1 << 20);
if (mlp % 4 !== 0) usageError(`--mlp must be a multiple of 4, the learner count; got ${JSON.stringify(opts.mlp)}`);
const jsonOut = opts.json ?? join(opts.dir, 'peer.json');

/** One row of peer_bench.py: PyTorch's timings and where it left that cell's inputs. */
interface PeerRow { tokens: number; budget: number; used: number; mask_ms: number; grouped_ms: number; inputs: string }

/** A file's bytes as their own ArrayBuffer (small reads share Node's buffer pool). */
function bytes(path: string): ArrayBuffer {
  const b = readFileSync(path);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
}

async function main(): Promise<void> {
  const shape = emitGraphs(opts.dir, dim, mlp);
  if (shape.tokens_per_request !== TOKENS_PER_REQUEST) throw new Error(`${opts.dir}/shape.json: ${shape.tokens_per_request} tokens per request, expected ${TOKENS_PER_REQUEST}`);
  const torchJson = join(opts.dir, 'peer-torch.json');
  execFileSync(process.env.ACM_PYTHON ?? '/usr/bin/python3', ['-m', 'kernels.peer_bench', '--dim', String(dim), '--mlp', String(mlp),
    '--n', String(shape.n), '--tokens', tokenSizes.join(','), '--budgets', budgets.join(','), '--repeats', String(repeats),
    '--threads', String(threads), '--json', torchJson], { cwd: REPO, stdio: ['ignore', 'inherit', 'inherit'] });
  const peer = JSON.parse(readFileSync(torchJson, 'utf8')) as { dim: number; mlp: number; torch: string; rows: PeerRow[] };

  const session = await ort.InferenceSession.create(join(opts.dir, 'acm_ffn.onnx'),
    { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential' });
  const t = shape.tokens_per_request;
  console.log(`\nthe same cells in onnxruntime, ${threads} threads, median of ${repeats} (ms)`);
  console.log('tokens | budget | used  | mask loop (torch) | grouped (torch) | grouped (onnxruntime, served) | served vs mask loop');
  const rows = [];
  for (const row of peer.rows) {
    const stem = join(opts.dir, 'peer-inputs', row.inputs);
    const x = new Float32Array(bytes(`${stem}.x.f32`));
    const k = new BigInt64Array(bytes(`${stem}.k.i64`));
    const ref = new Float32Array(bytes(`${stem}.y.f32`));
    const r = row.tokens / t;
    // Budget 1 makes the cap a no-op, so the graph runs exactly the choices the mask loop ran.
    const feeds = { x: new ort.Tensor('float32', x, [r, t, peer.dim]), desired: new ort.Tensor('int64', k, [r, t]),
      budget: new ort.Tensor('float64', new Float64Array(r).fill(1), [r]) };
    const times: number[] = [];
    let worst = 0;
    for (let rep = -1; rep < repeats; rep++) {
      const [ms, res] = await timed(() => session.run(feeds));
      if (rep < 0) {
        const y = res.y!.data as Float32Array;
        for (let i = 0; i < y.length; i++) worst = Math.max(worst, Math.abs(y[i]! - ref[i]!));
      } else times.push(ms);
    }
    if (worst > 1e-3) throw new Error(`onnxruntime and the PyTorch mask loop disagree by ${worst} at ${row.tokens} tokens, budget ${row.budget}`);
    const ms = median(times);
    rows.push({ ...row, ort_ms: ms, ort_spread: spread(times), ort_max_abs_diff: worst });
    console.log(`${String(row.tokens).padStart(6)} | ${row.budget.toFixed(2).padStart(6)} | ${row.used.toFixed(3)} | ` +
      `${row.mask_ms.toFixed(2).padStart(17)} | ${row.grouped_ms.toFixed(2).padStart(15)} | ${ms.toFixed(2).padStart(29)} | ${(row.mask_ms / ms).toFixed(2)}x`);
  }
  await session.release();
  mkdirSync(dirname(jsonOut), { recursive: true });
  writeFileSync(jsonOut, JSON.stringify({ shape, threads, repeats, quick: opts.quick, torch: peer.torch, rows }, null, 2));
  console.log(`wrote ${jsonOut}`);
}

await main();
