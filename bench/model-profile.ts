// Where an ACM graph's time goes, from onnxruntime's own profiler: every node's kernel time, split
// by what the node does for the model, next to the dense graph. It explains the gap between the
// measured speedup of bench:model and its FLOP-ideal, which counts multiply-adds only:
//
//   learners  the learner GEMMs (inside an ACM's scope) and their GELUs: the work the budget scales
//   gates     the gates' small MLPs
//   routing   the rest of each ACM (sorting tokens by learner count, gathering each group's rows,
//             concatenating and restoring the order, the per-request cap) and shape arithmetic
//   shared    work the dense graph does too and no budget touches: attention scores, softmax,
//             transposes, layer norms, patch embedding, residual adds, the head
//
// Times per image: the run time without the profiler (median of --runs, which the speedup uses),
// and each role's kernel time with it. What the kernels leave of a run is onnxruntime's work
// between nodes, which the profiler itself inflates. "kernels only" is the speedup the graph would
// have if routing and the time between nodes cost nothing: dense run time over learners + gates +
// shared; the FLOP-ideal over it is the part of the gap that no change to routing can close.
//
//   (options: USAGE below, or --help)
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { ComputeAccountant } from '../server/compute.js';
import { disableOrtTelemetry } from '../server/ort-telemetry.js';
import { budgetArg, imageBundleArg, intArg, parseCli, usageError } from './args.js';
import { benchSessionOptions, meanCompute, seededPixels } from './model-inputs.js';
import { median, timed } from './stats.js';
import { REPO } from './server-process.js';


const USAGE = `
usage: npm run bench:profile -- [--quick] [--bundle models/fashion-vit-acm] [--batch 8] [--budgets 1,0.25]
    [--runs 3] [--threads 1] [--json FILE]
onnxruntime's profile of an ACM bundle and its dense graph at one batch size: ms per image (run
time without the profiler) and kernel ms per image by role (learners, gates, routing, shared), the
speedup over dense, its FLOP-ideal, and the speedup from the learner, gate and shared kernels alone.
One warm-up run per graph and budget is not counted. --quick (batch 2, one run) checks that it runs.
`;

export type Role = 'learners' | 'gates' | 'routing' | 'shared';
export const ROLES: readonly Role[] = ['learners', 'gates', 'routing', 'shared'];

const GEMM_OPS = new Set(['MatMul', 'Gemm', 'FusedMatMul', 'MatMulInteger', 'FusedGemm']);
const GELU_OPS = new Set(['Gelu', 'BiasGelu', 'FastGelu']);
/** An ACM's scope in the exported graph: /layers.<i>/<q|k|v|o|mlp>/..., and qkv for the gate and cap q, k and v share.
 * A module the trace entered twice (q, k and v on both sides of a floor-path If) gets a suffix: q_1. */
const ACM_SCOPE = /\/layers\.\d+\/(q|k|v|o|mlp|qkv)(_\d+)?\//;
/** Operators that run subgraphs: the profile also times each node inside, so their own time would count twice. */
const SUBGRAPH_OPS = new Set(['If', 'Loop', 'Scan']);

/**
 * The role of one node of an exported ACM graph, from its name and operator. onnxruntime's
 * fusions name the nodes they make `<Op>_token_<n>`, without the scope: the graph's only GELUs
 * are the learners' (and the gates', whose tensors are a few percent of the size), and its other
 * fused nodes come from the ACMs' index arithmetic.
 */
export function nodeRole(name: string, op: string): Role {
  if (name.includes('/gate')) return 'gates';
  if (ACM_SCOPE.test(name)) return GEMM_OPS.has(op) ? 'learners' : 'routing';
  if (GELU_OPS.has(op)) return 'learners';
  if (name.includes('_token_')) return 'routing';
  return 'shared';
}

interface TraceEvent { cat?: string; name: string; ts: number; dur: number; args?: { op_name?: string } }

/** Kernel microseconds per role over the runs after the first `skip` (a profile's model_run spans). */
export function profileByRole(events: readonly TraceEvent[], skip: number): { runs: number; us: Record<Role, number>; total: number } {
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').sort((a, b) => a.ts - b.ts).slice(skip);
  const inRun = (ts: number): boolean => runs.some((r) => ts >= r.ts && ts <= r.ts + r.dur);
  const us: Record<Role, number> = { learners: 0, gates: 0, routing: 0, shared: 0 };
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || !inRun(e.ts) || SUBGRAPH_OPS.has(e.args?.op_name ?? '')) continue;
    us[nodeRole(e.name.slice(0, -'_kernel_time'.length), e.args?.op_name ?? '')] += e.dur;
  }
  return { runs: runs.length, us, total: runs.reduce((s, r) => s + r.dur, 0) };
}

/** Median ms of `runs` runs of `feeds` after one warm-up, without the profiler, and the warm-up's outputs. */
async function runTime(graph: string, threads: number, feeds: Record<string, ort.Tensor>, runs: number): Promise<[number, ort.InferenceSession.ReturnType]> {
  const session = await ort.InferenceSession.create(graph, benchSessionOptions(threads));
  try {
    const out = await session.run(feeds);
    const times: number[] = [];
    for (let i = 0; i < runs; i++) times.push((await timed(() => session.run(feeds)))[0]);
    return [median(times), out];
  } finally {
    await session.release();
  }
}

/** Runs `feeds` warm-up + runs times on a profiling session and returns the profile's events. */
async function profile(graph: string, threads: number, feeds: Record<string, ort.Tensor>, runs: number): Promise<TraceEvent[]> {
  const dir = mkdtempSync(join(tmpdir(), 'acm-profile-'));
  try {
    const session = await ort.InferenceSession.create(graph, { ...benchSessionOptions(threads), enableProfiling: true, profileFilePrefix: join(dir, 'run') });
    for (let i = 0; i <= runs; i++) await session.run(feeds);
    session.endProfiling();
    await session.release();
    const file = readdirSync(dir).find((f) => f.endsWith('.json'));
    if (file === undefined) throw new Error(`onnxruntime wrote no profile for ${graph}`);
    return JSON.parse(readFileSync(join(dir, file), 'utf8')) as TraceEvent[];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  disableOrtTelemetry();
  const { values: opts } = parseCli(USAGE, {
    options: {
      bundle: { type: 'string', default: join(REPO, 'models', 'fashion-vit-acm') },
      quick: { type: 'boolean', default: false },
      batch: { type: 'string' },
      budgets: { type: 'string', default: '1,0.25' },
      runs: { type: 'string' },
      threads: { type: 'string' },
      json: { type: 'string' },
    },
  });
  const batch = intArg('batch', opts.batch, opts.quick ? 2 : 8, 1, 4096);
  const runs = intArg('runs', opts.runs, opts.quick ? 1 : 3, 1, 1000);
  const threads = intArg('threads', opts.threads, 1, 1, 1024);
  const budgets = opts.budgets.split(',').map((b) => budgetArg('budgets', b, NaN));
  const bundle = await imageBundleArg('bundle', opts.bundle);
  const m = bundle.manifest;
  if (!m.dense_graph) usageError(`--bundle ${opts.bundle}: the bundle has no dense_graph to compare with`);
  const { channels, height, width } = m.image;
  const pixels = seededPixels(batch, channels, height, width);

  const denseGraph = join(bundle.dir, m.dense_graph);
  const denseMs = (await runTime(denseGraph, threads, { [m.inputs.pixels]: pixels }, runs))[0] / batch;
  console.log(`${m.name}: batch ${batch}, ${threads} thread(s), ${runs} runs each; dense ${denseMs.toFixed(2)} ms per image`);
  console.log('budget | used | ms/img | kernel ms/img: learners | gates | routing | shared | speedup | FLOP-ideal | kernels only');
  const accountant = new ComputeAccountant(m);
  const cells = m.acms.length * m.tokens.count;
  const rows = [];
  for (const budget of budgets) {
    const feeds = { [m.inputs.pixels]: pixels, [m.inputs.budget]: new ort.Tensor('float64', new Float64Array(batch).fill(budget), [batch]) };
    const [runMs, out] = await runTime(bundle.graphPath, threads, feeds, runs);
    const ms = runMs / batch;
    const { used, gflops } = meanCompute(accountant, out[m.outputs.learner_counts]!, batch, cells, budget);
    const p = profileByRole(await profile(bundle.graphPath, threads, feeds, runs), 1);
    const roles = Object.fromEntries(ROLES.map((r) => [r, p.us[r] / p.runs / batch / 1000])) as Record<Role, number>;
    const row = { budget, used, ms_per_image: ms, kernel_ms_per_image: roles, speedup: denseMs / ms, ideal: m.macs.dense / (gflops * 1e9),
      kernels_only: denseMs / (roles.learners + roles.gates + roles.shared) };
    rows.push(row);
    console.log(`${budget.toFixed(2).padStart(6)} | ${used.toFixed(3)} | ${ms.toFixed(2).padStart(6)} | ` +
      ROLES.map((r) => roles[r].toFixed(2).padStart(r === 'learners' ? 23 : r.length)).join(' | ') +
      ` | ${row.speedup.toFixed(2).padStart(6)}x | ${row.ideal.toFixed(2).padStart(9)}x | ${row.kernels_only.toFixed(2).padStart(11)}x`);
  }
  const outFile = opts.json ?? join(REPO, '.cache', 'bench', `profile-${basename(bundle.dir)}.json`);
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, JSON.stringify({ model: m.name, batch, threads, runs, quick: opts.quick, dense_ms_per_image: denseMs, rows }, null, 2));
  console.log(`wrote ${outFile}`);
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
