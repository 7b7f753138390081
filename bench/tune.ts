// Knob sweep: for each server knob, one server per alternative value (everything else at the
// configuration the bench's environment gives), all running at once and loaded in turn, repeat by
// repeat, at one concurrency (default 32, closed loop). Reports throughput and p50/p99 latency as
// median [min-max] over repeats, and each alternative's throughput relative to the default value.
//
//   (options: USAGE below, or --help)
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { intArg, numberArg, parseCli } from './args.js';
import { closedLoop, type LoadResult, type Target } from './load.js';
import { baseServerEnv, DEFAULT_IMAGES_DIR, loadImages, REPO, ServerProcess } from './server-process.js';
import { fmt, summarize, type Summary } from './stats.js';
import { printTable } from './table.js';

interface Alternative { label: string; env: Record<string, string>; isDefault: boolean }
interface Knob { name: string; what: string; alternatives: Alternative[] }

const cores = availableParallelism();
const one = (env: string, values: readonly string[], def: string): Alternative[] =>
  [...new Set(values)].map((v) => ({ label: `${env}=${v}`, env: { [env]: v }, isDefault: v === def }));

/** Every knob and the values tried; the server's defaults (server/config.ts) are marked. */
const KNOBS: Knob[] = [
  { name: 'intra-op-threads', what: 'threads per onnxruntime session (0 = cores / workers)',
    alternatives: one('ACM_INTRA_OP_THREADS', ['0', '1', '2', String(cores)], '0') },
  { name: 'execution-mode', what: 'sequential, or parallel with 1 or 2 inter-op threads',
    alternatives: [
      { label: 'sequential', env: { ACM_EXECUTION_MODE: 'sequential' }, isDefault: true },
      { label: 'parallel, 1 inter-op', env: { ACM_EXECUTION_MODE: 'parallel', ACM_INTER_OP_THREADS: '1' }, isDefault: false },
      { label: 'parallel, 2 inter-op', env: { ACM_EXECUTION_MODE: 'parallel', ACM_INTER_OP_THREADS: '2' }, isDefault: false },
    ] },
  { name: 'spinning', what: 'idle intra-op threads spin', alternatives: one('ACM_INTRA_OP_SPINNING', ['true', 'false'], 'true') },
  { name: 'mem-arena', what: "onnxruntime's CPU memory arena", alternatives: one('ACM_CPU_MEM_ARENA', ['true', 'false'], 'true') },
  { name: 'graph-optimization', what: 'onnxruntime graph optimisation level',
    alternatives: one('ACM_GRAPH_OPTIMIZATION', ['disabled', 'basic', 'extended', 'all'], 'all') },
  { name: 'workers', what: 'inference worker threads (sessions) per model', alternatives: one('ACM_WORKERS', ['1', '2'], '1') },
  { name: 'pipeline-depth', what: 'batches handed to each worker at a time', alternatives: one('ACM_PIPELINE_DEPTH', ['1', '2'], '1') },
  { name: 'max-batch-size', what: 'most requests per batch', alternatives: one('ACM_MAX_BATCH_SIZE', ['8', '16', '32', '64'], '32') },
  { name: 'max-batch-tokens', what: 'most tokens per batch', alternatives: one('ACM_MAX_BATCH_TOKENS', ['1024', '2048', '8192'], '8192') },
  { name: 'inference-nice', what: 'nice value of the inference threads', alternatives: one('ACM_INFERENCE_NICE', ['0', '10'], '0') },
  { name: 'max-wait-ms', what: 'longest wait for a batch to fill', alternatives: one('ACM_MAX_WAIT_MS', ['0', '2', '5', '10'], '0') },
];

const USAGE = `
usage: npm run bench:tune -- [--quick] [--knobs workers,max-batch-size,...] [--models-dir models] [--model NAME]
    [--concurrency 32] [--duration 10] [--warmup 2] [--repeats 3] [--images 16] [--images-dir FOLDER] [--json FILE]
Server throughput and latency for each setting of each knob, side by side.
`;

const { values: opts } = parseCli(USAGE, {
  options: {
    quick: { type: 'boolean', default: false },
    knobs: { type: 'string' },
    'models-dir': { type: 'string' },
    model: { type: 'string' },
    concurrency: { type: 'string', default: '32' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    repeats: { type: 'string' },
    images: { type: 'string', default: '16' },
    'images-dir': { type: 'string', default: DEFAULT_IMAGES_DIR },
    json: { type: 'string', default: join(REPO, '.cache', 'bench', 'tune.json') },
  },
});


const quick = opts.quick;
const settings = {
  quick,
  concurrency: intArg('concurrency', opts.concurrency, 32, 1, 10_000),
  durationS: numberArg('duration', opts.duration, quick ? 0.5 : 10, 0.1),
  warmupS: numberArg('warmup', opts.warmup, quick ? 0.2 : 2, 0),
  repeats: intArg('repeats', opts.repeats, quick ? 1 : 3, 1),
  images: intArg('images', opts.images, 16, 1),
};

interface Row {
  knob: string;
  value: string;
  env: Record<string, string>;
  is_default: boolean;
  error: string | null;
  throughput_rps: Summary;
  p50_ms: Summary;
  p99_ms: Summary;
  vs_default: number | null;
  failures: number;
}

async function sweep(knob: Knob, base: Record<string, string>, path: string, images: Buffer[]): Promise<Row[]> {
  const servers: (ServerProcess | Error)[] = [];
  try {
    for (const alt of knob.alternatives) {
      servers.push(await ServerProcess.start({ label: `${knob.name} ${alt.label}`, env: alt.env }, base).catch((e: unknown) => e as Error));
    }
    const target = (s: ServerProcess): Target => ({ url: s.url, path, images });
    for (const s of servers) if (!(s instanceof Error)) await closedLoop(target(s), settings.concurrency, 0, Math.min(2, settings.durationS));
    const runs: LoadResult[][] = knob.alternatives.map(() => []);
    for (let rep = 0; rep < settings.repeats; rep++) {
      for (const [i, s] of servers.entries()) {
        if (s instanceof Error) continue;
        runs[i]!.push(await closedLoop(target(s), settings.concurrency, settings.warmupS, settings.durationS));
      }
    }
    const rows = knob.alternatives.map((alt, i): Row => {
      const s = servers[i];
      const r = runs[i]!;
      return {
        knob: knob.name, value: alt.label, env: alt.env, is_default: alt.isDefault,
        error: s instanceof Error ? s.message.split('\n').slice(0, 3).join(' ') : null,
        throughput_rps: summarize(r.map((x) => x.throughputRps)), p50_ms: summarize(r.map((x) => x.p50Ms)),
        p99_ms: summarize(r.map((x) => x.p99Ms)), vs_default: null, failures: r.reduce((n, x) => n + x.non2xx + x.errors, 0),
      };
    });
    const def = rows.find((r) => r.is_default && r.error === null);
    for (const r of rows) {
      const ratio = def && r.error === null ? r.throughput_rps.median / def.throughput_rps.median : NaN;
      r.vs_default = Number.isFinite(ratio) ? ratio : null;
    }
    return rows;
  } finally {
    for (const s of servers) if (!(s instanceof Error)) await s.stop();
  }
}

async function main(): Promise<void> {
  const names = KNOBS.map((k) => k.name);
  const chosen = opts.knobs === undefined ? names : opts.knobs.split(',').map((s) => s.trim());
  const unknown = chosen.filter((n) => !names.includes(n));
  if (unknown.length > 0) throw new Error(`--knobs: unknown ${unknown.join(', ')}; choose from ${names.join(', ')}`);
  const images = loadImages(resolve(opts['images-dir']), settings.images);
  const base = baseServerEnv();
  if (opts['models-dir'] !== undefined) base.ACM_MODELS_DIR = resolve(opts['models-dir']);
  const path = opts.model !== undefined ? `/classify?model=${encodeURIComponent(opts.model)}` : '/classify';
  const started = new Date().toISOString();
  const loadBefore = loadavg();
  console.log(`tune: concurrency ${settings.concurrency}, cells of ${settings.durationS} s, ${settings.repeats} repeats, ` +
    `base env ${JSON.stringify(base)}${quick ? ' (quick)' : ''}`);
  const rows: Row[] = [];
  for (const knob of KNOBS.filter((k) => chosen.includes(k.name))) {
    // A knob the bench's environment already sets would be overridden per alternative; say so.
    const shadowed = knob.alternatives.flatMap((a) => Object.keys(a.env)).filter((k) => k in base);
    if (shadowed.length > 0) console.log(`  note: ${[...new Set(shadowed)].join(', ')} from the environment is replaced by each alternative`);
    const knobRows = await sweep(knob, base, path, images);
    rows.push(...knobRows);
    printTable(`${knob.name}: ${knob.what} (concurrency ${settings.concurrency}; median [min-max])`,
      ['value', 'req/s', 'p50 ms', 'p99 ms', 'vs default', 'fail'],
      knobRows.map((r) => r.error !== null ? [r.value + (r.is_default ? ' (default)' : ''), `did not start: ${r.error}`, '', '', '', ''] : [
        r.value + (r.is_default ? ' (default)' : ''), fmt(r.throughput_rps), fmt(r.p50_ms), fmt(r.p99_ms),
        r.vs_default === null ? 'n/a' : `${r.vs_default.toFixed(2)}x`, String(r.failures)]));
  }
  const out = resolve(opts.json);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({
    bench: 'tune', started, finished: new Date().toISOString(),
    host: { cpus: cpus().length, node: process.version, loadavg_before: loadBefore, loadavg_after: loadavg() },
    settings: { ...settings, base_env: base }, rows,
  }, null, 2));
  console.log(`wrote ${out}`);
}

await main();
