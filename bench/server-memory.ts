// Server memory benchmark: resident memory (VmRSS of the server process; its worker threads, and
// so the onnxruntime sessions, share it) read from /proc/<pid>/status.
//
//  1. Per model, repeated: a fresh runtime-only process (bench/runtime-baseline.ts: the server's
//     modules and ACM_WORKERS idle threads with onnxruntime loaded, no session) against a fresh
//     server with the model loaded and ready, then after requests one at a time, then after a
//     saturating closed-loop load (VmHWM: the peak). Model = ready - runtime.
//  2. Soak: open-loop load at 70% of the saturating load's throughput for --soak-duration seconds
//     (default 600), RSS sampled every second. Growth = median RSS of the last 30 s against the
//     median of the first 30 s after the warm-up (--soak-warmup, default 60 s). Target <= 5%.
//
//   (options: USAGE below, or --help)
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { intArg, numberArg, parseCli } from './args.js';
import { closedLoop, failuresText, openLoop, type Target } from './load.js';
import { baseServerEnv, DEFAULT_IMAGES_DIR, loadImages, readMemory, REPO, SERVER_NODE_FLAGS, ServerProcess } from './server-process.js';
import { fmt, median, summarize, type Summary } from './stats.js';
import { printTable } from './table.js';

const USAGE = `
usage: npm run bench:memory -- [--quick] [--models-dir models] [--model NAME] [--repeats 3] [--concurrency 64]
    [--load-duration 10] [--soak-duration 600] [--soak-warmup 60] [--soak-fraction 0.7] [--rate REQ_PER_S]
    [--sample-ms 1000] [--images 16] [--images-dir FOLDER] [--json FILE]
Resident memory of the server per loaded model, then under a saturating load and an open-loop soak.
`;

const { values: opts } = parseCli(USAGE, {
  options: {
    quick: { type: 'boolean', default: false },
    'models-dir': { type: 'string' },
    model: { type: 'string' },
    repeats: { type: 'string' },
    concurrency: { type: 'string', default: '64' },
    'load-duration': { type: 'string' },
    'soak-duration': { type: 'string' },
    'soak-warmup': { type: 'string' },
    'soak-fraction': { type: 'string', default: '0.7' },
    rate: { type: 'string' },
    'sample-ms': { type: 'string', default: '1000' },
    images: { type: 'string', default: '16' },
    'images-dir': { type: 'string', default: DEFAULT_IMAGES_DIR },
    json: { type: 'string', default: join(REPO, '.cache', 'bench', 'server-memory.json') },
  },
});


const quick = opts.quick;
const settings = {
  quick,
  repeats: intArg('repeats', opts.repeats, quick ? 1 : 3, 1),
  concurrency: intArg('concurrency', opts.concurrency, 64, 1, 10_000),
  loadDurationS: numberArg('load-duration', opts['load-duration'], quick ? 1 : 10, 0.1),
  soakDurationS: numberArg('soak-duration', opts['soak-duration'], quick ? 8 : 600, 0),
  soakWarmupS: numberArg('soak-warmup', opts['soak-warmup'], quick ? 2 : 60, 0),
  soakFraction: numberArg('soak-fraction', opts['soak-fraction'], 0.7, 0.01, 1),
  rate: opts.rate === undefined ? undefined : numberArg('rate', opts.rate, 0, 0.01),
  sampleMs: numberArg('sample-ms', opts['sample-ms'], 1000, 50),
  images: intArg('images', opts.images, 16, 1),
};
if (settings.soakDurationS > 0 && settings.soakWarmupS >= settings.soakDurationS) {
  throw new Error(`--soak-warmup (${settings.soakWarmupS} s) must be below --soak-duration (${settings.soakDurationS} s), ` +
    'which includes it; growth is measured after the warm-up');
}
const MIB = 1024;

/** Median of a few reads a moment apart: RSS moves with the garbage collector. */
async function settledRss(pid: number): Promise<number> {
  await new Promise((r) => setTimeout(r, quick ? 200 : 1000));
  const reads: number[] = [];
  for (let i = 0; i < 5; i++) {
    reads.push(readMemory(pid).rssKiB);
    await new Promise((r) => setTimeout(r, 100));
  }
  return median(reads);
}

async function runtimeBaseline(base: Record<string, string>): Promise<number> {
  const script = fileURLToPath(new URL('./runtime-baseline.js', import.meta.url));
  const child = spawn(process.execPath, [...SERVER_NODE_FLAGS, script], { env: { PATH: process.env.PATH ?? '', ...base }, stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (c: Buffer) => { err += c.toString(); });
  try {
    await new Promise<void>((ok, fail) => {
      child.stdout.on('data', (c: Buffer) => { if (c.toString().includes('ready')) ok(); });
      child.once('exit', (code) => fail(new Error(`runtime baseline exited (code ${code}) before it was ready: ${err}`)));
    });
    return await settledRss(child.pid ?? -1);
  } finally {
    child.kill('SIGTERM');
  }
}

interface Static {
  /** Every model the server loaded: model_mib is their total. */
  models: string[];
  runtime_mib: Summary;
  ready_mib: Summary;
  model_mib: Summary;
  after_sequential_mib: Summary;
  after_load_mib: Summary;
  peak_mib: Summary;
  load_throughput_rps: Summary;
}

async function measureStatic(base: Record<string, string>, target: (s: ServerProcess) => Target): Promise<Static> {
  let models: string[] = [];
  const rows = { runtime: [] as number[], ready: [] as number[], seq: [] as number[], load: [] as number[], peak: [] as number[], rps: [] as number[] };
  for (let rep = 0; rep < settings.repeats; rep++) {
    rows.runtime.push(await runtimeBaseline(base));
    const server = await ServerProcess.start({ label: 'memory' }, base);
    try {
      rows.ready.push(await settledRss(server.pid));
      const listed = (await (await fetch(`${server.url}/v1/models`)).json()) as { models: { name: string }[] };
      models = listed.models.map((m) => m.name).sort();
      await closedLoop(target(server), 1, 0, settings.loadDurationS / 2);
      rows.seq.push(await settledRss(server.pid));
      const run = await closedLoop(target(server), settings.concurrency, settings.loadDurationS / 5, settings.loadDurationS);
      rows.rps.push(run.throughputRps);
      rows.load.push(await settledRss(server.pid));
      // The kernel updates VmHWM lazily, so it can trail an RSS read taken just before.
      rows.peak.push(Math.max(server.memory().hwmKiB, rows.ready.at(-1)!, rows.seq.at(-1)!, rows.load.at(-1)!));
      if (run.non2xx + run.errors > 0) {
        console.log(`  warning: ${failuresText(run.non2xx, run.errors, run.errorKinds, run.non2xxKinds)} under load`);
      }
    } finally {
      await server.stop();
    }
    console.log(`  rep ${rep + 1}: runtime ${(rows.runtime.at(-1)! / MIB).toFixed(1)} MiB, ready ${(rows.ready.at(-1)! / MIB).toFixed(1)} MiB, ` +
      `after load ${(rows.load.at(-1)! / MIB).toFixed(1)} MiB, peak ${(rows.peak.at(-1)! / MIB).toFixed(1)} MiB`);
  }
  const mib = (xs: number[]): Summary => summarize(xs.map((x) => x / MIB));
  return {
    models,
    runtime_mib: mib(rows.runtime), ready_mib: mib(rows.ready),
    model_mib: mib(rows.ready.map((r, i) => r - rows.runtime[i]!)),
    after_sequential_mib: mib(rows.seq), after_load_mib: mib(rows.load), peak_mib: mib(rows.peak),
    load_throughput_rps: summarize(rows.rps),
  };
}

interface Soak {
  rate_rps: number;
  duration_s: number;
  warmup_s: number;
  window_s: number;
  start_mib: number;
  end_mib: number;
  max_mib: number;
  growth_percent: number;
  max_growth_percent: number;
  p50_ms: number;
  p99_ms: number;
  achieved_rps: number;
  /** non2xx + errors. */
  failures: number;
  non2xx: number;
  errors: number;
  /** Load-generator errors by kind (bench/load.ts ErrorTally). */
  error_kinds: Readonly<Record<string, number>>;
  /** Answers other than 2xx by status (a full queue answers 503 with Retry-After). */
  non2xx_kinds: Readonly<Record<string, number>>;
  samples: { t_s: number; rss_kib: number }[];
}

async function soak(base: Record<string, string>, target: (s: ServerProcess) => Target, rate: number): Promise<Soak> {
  const server = await ServerProcess.start({ label: 'soak' }, base);
  const samples: { t_s: number; rss_kib: number }[] = [];
  const t0 = Date.now();
  const timer = setInterval(() => {
    try {
      samples.push({ t_s: (Date.now() - t0) / 1000, rss_kib: server.memory().rssKiB });
    } catch {
      // The server exited; the load reports the failures.
    }
  }, settings.sampleMs);
  let run;
  try {
    console.log(`soak: ${settings.soakDurationS} s open loop at ${rate.toFixed(1)} req/s (growth measured after ${settings.soakWarmupS} s)`);
    run = await openLoop(target(server), { rateRps: rate, warmupS: settings.soakWarmupS, seconds: settings.soakDurationS - settings.soakWarmupS,
      onSecond: (s) => { if (s % 60 === 0) console.log(`  ${s} s: ${((samples.at(-1)?.rss_kib ?? 0) / MIB).toFixed(1)} MiB`); } });
  } finally {
    clearInterval(timer);
    await server.stop();
  }
  const after = samples.filter((s) => s.t_s >= settings.soakWarmupS);
  if (after.length < 2) throw new Error(`soak: ${after.length} RSS samples after the warm-up; lengthen --soak-duration or shorten --soak-warmup`);
  const window = Math.max(1, Math.min(Math.round(30_000 / settings.sampleMs), Math.floor(after.length / 4)));
  const start = median(after.slice(0, window).map((s) => s.rss_kib));
  const end = median(after.slice(-window).map((s) => s.rss_kib));
  const max = Math.max(...after.map((s) => s.rss_kib));
  return {
    rate_rps: rate, duration_s: settings.soakDurationS, warmup_s: settings.soakWarmupS, window_s: (window * settings.sampleMs) / 1000,
    start_mib: start / MIB, end_mib: end / MIB, max_mib: max / MIB,
    growth_percent: ((end - start) / start) * 100, max_growth_percent: ((max - start) / start) * 100,
    p50_ms: run.p50Ms, p99_ms: run.p99Ms, achieved_rps: run.throughputRps, failures: run.non2xx + run.errors,
    non2xx: run.non2xx, errors: run.errors, error_kinds: run.errorKinds, non2xx_kinds: run.non2xxKinds, samples,
  };
}

async function main(): Promise<void> {
  const images = loadImages(resolve(opts['images-dir']), settings.images);
  const base = baseServerEnv();
  if (opts['models-dir'] !== undefined) base.ACM_MODELS_DIR = resolve(opts['models-dir']);
  const path = opts.model !== undefined ? `/classify?model=${encodeURIComponent(opts.model)}` : '/classify';
  const target = (s: ServerProcess): Target => ({ url: s.url, path, images });
  const started = new Date().toISOString();
  const loadBefore = loadavg();
  console.log(`server-memory: base env ${JSON.stringify(base)}, ${settings.repeats} repeats${quick ? ' (quick)' : ''}`);

  const stat = await measureStatic(base, target);
  printTable('Resident memory (MiB), median [min-max] over fresh processes', ['stage', 'RSS MiB'], [
    ['runtime only (no model)', fmt(stat.runtime_mib)],
    ['server ready, model loaded', fmt(stat.ready_mib)],
    [`= models (ready - runtime): ${stat.models.join(', ')}`, fmt(stat.model_mib)],
    ['after sequential requests', fmt(stat.after_sequential_mib)],
    [`after load at concurrency ${settings.concurrency}`, fmt(stat.after_load_mib)],
    ['peak (VmHWM)', fmt(stat.peak_mib)],
  ]);

  let soakResult: Soak | undefined;
  const targets = [];
  if (settings.soakDurationS > 0) {
    const rate = settings.rate ?? settings.soakFraction * stat.load_throughput_rps.median;
    if (!(rate > 0)) throw new Error('soak: the saturating load answered nothing, so there is no rate to hold; pass --rate');
    soakResult = await soak(base, target, rate);
    printTable('Soak', ['rate req/s', 'seconds', 'start MiB', 'end MiB', 'max MiB', 'growth %', 'max growth %', 'p50 ms', 'p99 ms', 'fail'], [[
      soakResult.rate_rps.toFixed(1), String(soakResult.duration_s), soakResult.start_mib.toFixed(1), soakResult.end_mib.toFixed(1),
      soakResult.max_mib.toFixed(1), soakResult.growth_percent.toFixed(2), soakResult.max_growth_percent.toFixed(2),
      soakResult.p50_ms.toFixed(1), soakResult.p99_ms.toFixed(1), String(soakResult.failures)]]);
    const pass = soakResult.growth_percent <= 5 && soakResult.failures === 0;
    targets.push({ name: 'RSS growth after warm-up', value: soakResult.growth_percent, threshold: '<= 5%', pass });
    console.log(`\nTarget: RSS growth after warm-up ${soakResult.growth_percent.toFixed(2)}% (<= 5%): ${pass ? 'PASS' : 'FAIL'}` +
      `${soakResult.failures > 0 ? ` (failed requests: ${failuresText(soakResult.non2xx, soakResult.errors, soakResult.error_kinds, soakResult.non2xx_kinds)})` : ''}`);
  }
  const out = resolve(opts.json);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({
    bench: 'server-memory', started, finished: new Date().toISOString(),
    host: { cpus: cpus().length, node: process.version, loadavg_before: loadBefore, loadavg_after: loadavg() },
    settings: { ...settings, base_env: base }, static: stat, soak: soakResult ?? null, targets,
  }, null, 2));
  console.log(`wrote ${out}`);
}

await main();
