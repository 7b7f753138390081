// Server-level load benchmark: the real server (`node dist/server/main.js`) started twice, with
// batching on (the default configuration) and off (ACM_MAX_BATCH_SIZE=1), both running for the
// whole bench, loaded in turn (interleaved cell by cell and repeat by repeat) so both see the same
// machine. POST /classify with committed test images, rotating.
//
//  1. closed loop at each concurrency: throughput (2xx/s), p50 and p99 latency; meanwhile a
//     separate thread probes GET /healthz every 50 ms (its p50/p99: does the HTTP thread stay
//     responsive while inference saturates the machine?), and the server's own event-loop delay
//     over the same window (acm_event_loop_delay_seconds from /metrics): a slow /healthz with a
//     small loop delay was held outside the server's JavaScript (no core free, the kernel's
//     network path), one with a large loop delay by work on the HTTP thread;
//  2. open loop at 70% of each mode's highest throughput from step 1: p50 and p99 latency counted
//     from each request's scheduled send time.
// Every figure is the median over repeats with its [min-max] spread. Targets are reported as
// pass/fail. Settings from the environment (ACM_WORKERS, ACM_INTRA_OP_THREADS, ...) apply to every
// server. `--also 'label:ACM_X=1,...'` (repeatable) adds a batching-on server with other settings
// (`node=--flag` replaces the node flags it is launched with),
// measured side by side with the two; `--client-nice 10` lowers the load generator's priority
// (does the client starve the server?), `--client-cpus 1` confines it to those CPUs (with
// ACM_HTTP_CPUS, keeps it off the HTTP thread's); `--closed-only` skips step 2.
//
//   (options: USAGE below, or --help)
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, setPriority } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { ProbeThread } from './healthz-probe.js';
import { budgetArg, cpuListArg, intArg, numberArg, parseCli, usageError } from './args.js';
import { closedLoop, failuresText, openLoop, tailSplit, type LatencySplit, type LoadResult, type Target } from './load.js';
import { baseServerEnv, DEFAULT_IMAGES_DIR, loadImages, REPO, ServerProcess } from './server-process.js';
import { fmt, percentile, summarize, type Summary } from './stats.js';
import { printTable } from './table.js';

const USAGE = `
usage: npm run bench:server -- [--quick] [--models-dir models] [--model NAME] [--budget B] [--concurrency 1,8,32,64]
    [--duration 10] [--warmup 2] [--repeats 3] [--images 16] [--images-dir FOLDER] [--open-loop-fraction 0.7]
    [--open-loop-duration 20] [--healthz-interval 50] [--also 'LABEL:ACM_X=v,...'] [--closed-only]
    [--client-nice 0-19] [--client-cpus LIST] [--json FILE]
POST /classify load, batching on and off side by side: closed loop per concurrency (throughput, p50,
p99, GET /healthz while loaded), then an open loop at a fraction of each server's maximum.
`;

const { values: opts } = parseCli(USAGE, {
  options: {
    quick: { type: 'boolean', default: false },
    'models-dir': { type: 'string' },
    model: { type: 'string' },
    budget: { type: 'string' },
    concurrency: { type: 'string', default: '1,8,32,64' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    repeats: { type: 'string' },
    images: { type: 'string', default: '16' },
    'images-dir': { type: 'string', default: DEFAULT_IMAGES_DIR },
    'open-loop-fraction': { type: 'string', default: '0.7' },
    'open-loop-duration': { type: 'string' },
    'healthz-interval': { type: 'string', default: '50' },
    also: { type: 'string', multiple: true },
    'closed-only': { type: 'boolean', default: false },
    'client-nice': { type: 'string' },
    'client-cpus': { type: 'string' },
    json: { type: 'string', default: join(REPO, '.cache', 'bench', 'server-load.json') },
  },
});


const quick = opts.quick;
const settings = {
  quick,
  concurrency: opts.concurrency.split(',').map((c) => intArg('concurrency', c, 0, 1, 10_000)),
  durationS: numberArg('duration', opts.duration, quick ? 1 : 10, 0.1),
  warmupS: numberArg('warmup', opts.warmup, quick ? 0.3 : 2, 0),
  repeats: intArg('repeats', opts.repeats, quick ? 1 : 3, 1),
  images: intArg('images', opts.images, 16, 1),
  openLoopFraction: numberArg('open-loop-fraction', opts['open-loop-fraction'], 0.7, 0.01, 1),
  openLoopDurationS: numberArg('open-loop-duration', opts['open-loop-duration'], quick ? 2 : 20, 0.1),
  healthzIntervalMs: numberArg('healthz-interval', opts['healthz-interval'], 50, 5),
  /** Niceness of the load generator's thread (the /healthz probe thread keeps the default). */
  clientNice: opts['client-nice'] === undefined ? null : intArg('client-nice', opts['client-nice'], 0, 0, 19),
  /** CPUs the load generator's thread is confined to (a Linux CPU list); the probe thread keeps all. */
  clientCpus: opts['client-cpus'] === undefined ? null : cpuListArg('client-cpus', opts['client-cpus']),
};

interface Mode { name: string; env: Record<string, string>; what: string; nodeFlags?: string[] }
type ModeName = string;

/** `--also 'label:ACM_X=1,ACM_Y=2'`: one more server with these settings over the base environment. */
function extraMode(spec: string): Mode {
  const colon = spec.indexOf(':');
  const name = spec.slice(0, colon).trim();
  if (colon <= 0 || !/^[\w.-]+$/.test(name) || name === 'batching-on' || name === 'batching-off') {
    usageError(`--also must be 'label:ACM_X=value,...' with a new label of letters, digits, '.', '_' or '-'; got ${JSON.stringify(spec)}`);
  }
  const env: Record<string, string> = {};
  let nodeFlags: string[] | undefined;
  for (const pair of spec.slice(colon + 1).split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const eq = pair.indexOf('=');
    const key = pair.slice(0, eq);
    if (key === 'node') {
      // node=--flag=value: launch flags instead of the usual ones (repeatable; node= alone: none).
      nodeFlags = [...(nodeFlags ?? []), ...(pair.slice(eq + 1) === '' ? [] : [pair.slice(eq + 1)])];
      continue;
    }
    if (eq <= 0 || !/^(ACM_\w+|UV_THREADPOOL_SIZE|MALLOC_ARENA_MAX)$/.test(key)) {
      usageError(`--also ${name}: each setting must be ACM_NAME=value, UV_THREADPOOL_SIZE=value, MALLOC_ARENA_MAX=value ` +
        `or node=--flag (one per setting: node=--a,node=--b); got ${JSON.stringify(pair)}`);
    }
    env[key] = pair.slice(eq + 1);
  }
  const what = [...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...(nodeFlags ? [`node ${nodeFlags.join(' ') || '(no flags)'}`] : [])];
  return { name, env, what: what.join(' ') || 'base environment', ...(nodeFlags ? { nodeFlags } : {}) };
}

const MODES: Mode[] = [
  { name: 'batching-on', env: {}, what: 'default configuration' },
  { name: 'batching-off', env: { ACM_MAX_BATCH_SIZE: '1' }, what: 'ACM_MAX_BATCH_SIZE=1' },
  ...(opts.also ?? []).map(extraMode),
];
if (new Set(MODES.map((m) => m.name)).size !== MODES.length) usageError('--also labels must differ from each other');

interface Cell {
  mode: ModeName;
  concurrency: number;
  throughput_rps: Summary;
  p50_ms: Summary;
  p99_ms: Summary;
  healthz_p50_ms: Summary;
  healthz_p99_ms: Summary;
  healthz_failures: number;
  /** The server's own event-loop delay over the measured window (acm_event_loop_delay_seconds). */
  loop_delay_p99_ms: Summary;
  loop_delay_max_ms: Summary;
  /** Over the measured window (from /metrics and this process's CPU time): see Usage. */
  batch_size: Summary;
  inference_busy: Summary;
  server_cores: Summary;
  client_cores: Summary;
  non2xx: number;
  non2xx_kinds: Record<string, number>;
  errors: number;
  error_kinds: Record<string, number>;
}

interface OpenCell {
  mode: ModeName;
  max_throughput_rps: number;
  rate_rps: number;
  achieved_rps: Summary;
  p50_ms: Summary;
  p99_ms: Summary;
  p99_over_p50: Summary;
  /**
   * Where the answers around the median and the slowest 1% spent their time (all repeats pooled;
   * bench/load.ts latencySplit): outside the server's own total, queued, in inference, the rest.
   */
  split: { median: LatencySplit | null; p99: LatencySplit | null };
  /**
   * Second by second over the measured window (all repeats pooled; from the server's /metrics):
   * the fraction of each second the model ran batches, the mean requests per batch, batch time per
   * request, and the mean wait in the queue.
   */
  per_second: { busy: Summary; batch_size: Summary; ms_per_request: Summary; queue_wait_ms: Summary };
  non2xx: number;
  non2xx_kinds: Record<string, number>;
  errors: number;
  error_kinds: Record<string, number>;
}

/** Counts by kind over several runs: the errors', or with `pick`, the non-2xx statuses'. */
function mergeKinds(runs: readonly LoadResult[], pick = (r: LoadResult) => r.errorKinds): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of runs) for (const [k, n] of Object.entries(pick(r))) out[k] = (out[k] ?? 0) + n;
  return out;
}

interface TargetCheck { name: string; value: number | null; threshold: string; pass: boolean | null; detail: string }

async function modelName(server: ServerProcess): Promise<string> {
  const res = await fetch(`${server.url}/v1/models`);
  const body = (await res.json()) as { models: { name: string; task?: string }[] };
  // /classify serves image models only; speech models are listed too.
  const names = body.models.filter((m) => m.task === undefined || m.task === 'image-classification').map((m) => m.name).sort();
  if (opts.model !== undefined) {
    if (!names.includes(opts.model)) throw new Error(`--model ${JSON.stringify(opts.model)} is not loaded; loaded: ${names.join(', ')}`);
    return opts.model;
  }
  if (names.length === 0) throw new Error('the server lists no image-classification model');
  return names[0]!;
}

/** What one scrape of /metrics gives the bench: counters to difference over a window. */
interface Scrape {
  /** The server's event-loop delay since the previous scrape, in ms; null when not exposed. */
  loop: { p99: number; max: number } | null;
  /** Batches of the model run so far, the requests in them, and their backend seconds. */
  batches: number;
  items: number;
  batchSeconds: number;
  /** Requests that have left the queue for a batch so far, and their seconds waiting in it. */
  queued: number;
  queueSeconds: number;
  /** CPU seconds of the whole server process so far (every thread). */
  cpuSeconds: number;
}

/** One scrape of the server's /metrics (a scrape also starts a new event-loop-delay window). */
async function scrape(url: string, model: string): Promise<Scrape> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const value = (name: string, labels = ''): number | undefined => {
    const m = new RegExp(`^${name}${labels.replace(/[.{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  };
  const p99 = value('acm_event_loop_delay_seconds', '{quantile="0.99"}');
  const max = value('acm_event_loop_delay_seconds', '{quantile="1"}');
  const of = `{model="${model}"}`;
  return {
    loop: p99 === undefined || max === undefined ? null : { p99: p99 * 1000, max: max * 1000 },
    batches: value('acm_batch_size_count', of) ?? 0, items: value('acm_batch_size_sum', of) ?? 0,
    batchSeconds: value('acm_batch_duration_seconds_sum', of) ?? 0,
    queued: value('acm_queue_wait_seconds_count', of) ?? 0, queueSeconds: value('acm_queue_wait_seconds_sum', of) ?? 0,
    cpuSeconds: value('acm_process_cpu_seconds_total') ?? NaN,
  };
}

/** Where a cell's work went over its measured window. */
interface Usage {
  /** Mean requests per batch. */
  batchSize: number;
  /** Fraction of the window the backend was running a batch. */
  inferenceBusy: number;
  /** CPU cores the server process used, and this process (the load generator and the /healthz probe). */
  serverCores: number;
  clientCores: number;
}

function usage(first: Scrape, last: Scrape, seconds: number, clientCpu: NodeJS.CpuUsage): Usage {
  const batches = last.batches - first.batches;
  return {
    batchSize: batches > 0 ? (last.items - first.items) / batches : NaN,
    inferenceBusy: (last.batchSeconds - first.batchSeconds) / seconds,
    serverCores: (last.cpuSeconds - first.cpuSeconds) / seconds,
    clientCores: (clientCpu.user + clientCpu.system) / 1e6 / seconds,
  };
}

/** One interval between two scrapes of an open loop (about a second). */
interface SecondRow {
  /** Fraction of the interval the model was running a batch. */
  busy: number;
  /** Mean requests per batch, ms of batch time per request, and mean ms a request waited in the queue. */
  batchSize: number;
  msPerRequest: number;
  queueWaitMs: number;
}

/**
 * The open loop second by second, from scrapes taken at its start, about once a second, and at its
 * end: intervals that end within the warm-up, or last under half a second (the end's remainder),
 * are left out, as are intervals in which no batch ran.
 */
function perSecond(marks: readonly { at: number; scrape: Scrape }[], warmupS: number): SecondRow[] {
  const sorted = [...marks].sort((a, b) => a.at - b.at);
  const start = sorted[0]?.at ?? 0;
  const rows: SecondRow[] = [];
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!, b = sorted[i]!;
    const seconds = (b.at - a.at) / 1000;
    const batches = b.scrape.batches - a.scrape.batches;
    const items = b.scrape.items - a.scrape.items;
    if (b.at - start < warmupS * 1000 || seconds < 0.5 || batches <= 0 || items <= 0) continue;
    const batchSeconds = b.scrape.batchSeconds - a.scrape.batchSeconds;
    const queued = b.scrape.queued - a.scrape.queued;
    rows.push({ busy: batchSeconds / seconds, batchSize: items / batches, msPerRequest: (batchSeconds * 1000) / items,
      queueWaitMs: queued > 0 ? ((b.scrape.queueSeconds - a.scrape.queueSeconds) * 1000) / queued : NaN });
  }
  return rows;
}

/** The per-second rows of an open loop as OpenCell.per_second: median [min-max] of each column. */
function summarizeSeconds(rows: readonly SecondRow[]): OpenCell['per_second'] {
  return { busy: summarize(rows.map((r) => r.busy)), batch_size: summarize(rows.map((r) => r.batchSize)),
    ms_per_request: summarize(rows.map((r) => r.msPerRequest)),
    queue_wait_ms: summarize(rows.map((r) => r.queueWaitMs).filter(Number.isFinite)) };
}

async function main(): Promise<void> {
  const images = loadImages(resolve(opts['images-dir']), settings.images);
  const base = baseServerEnv();
  if (opts['models-dir'] !== undefined) base.ACM_MODELS_DIR = resolve(opts['models-dir']);
  const headers: Record<string, string> = opts.budget !== undefined ? { 'x-budget': String(budgetArg('budget', opts.budget, 1)) } : {};
  const path = opts.model !== undefined ? `/classify?model=${encodeURIComponent(opts.model)}` : '/classify';
  const started = new Date().toISOString();
  const loadBefore = loadavg();

  const servers = new Map<ModeName, ServerProcess>();
  let prober: ProbeThread | undefined;
  try {
    // Started together (start-up is not measured); a failed start stops the others in `finally`.
    const starts = MODES.map((mode) => ServerProcess.start({ label: mode.name, env: mode.env, ...(mode.nodeFlags ? { nodeFlags: mode.nodeFlags } : {}) }, base)
      .then((s) => { servers.set(mode.name, s); }));
    const failures = (await Promise.allSettled(starts)).filter((r) => r.status === 'rejected');
    if (failures.length > 0) throw (failures[0] as PromiseRejectedResult).reason;
    // After the servers and the probe thread started (children and new threads inherit the
    // niceness): only this thread, which runs the load generator, yields the cores; the servers
    // and the probe thread keep theirs.
    prober = new ProbeThread();
    if (settings.clientNice !== null) setPriority(settings.clientNice);
    // The main thread's id is the process id: this confines the load generator alone.
    if (settings.clientCpus !== null) execFileSync('taskset', ['-p', '-c', settings.clientCpus, String(process.pid)], { stdio: 'ignore' });
    const model = await modelName(servers.get('batching-on')!);
    const target = (mode: ModeName): Target => ({ url: servers.get(mode)!.url, path, images, headers });
    console.log(`server-load: model ${model}, ${images.length} images, base env ${JSON.stringify(base)}; ` +
      `cells of ${settings.durationS} s after ${settings.warmupS} s warm-up, ${settings.repeats} repeats${quick ? ' (quick)' : ''}`);

    // One short pass per server first: the first batches pay for onnxruntime's allocations.
    for (const mode of MODES) await closedLoop(target(mode.name), Math.max(...settings.concurrency), 0, Math.min(2, settings.durationS));

    const raw = new Map<string, { runs: LoadResult[]; healthz: number[][]; healthzFailures: number; loop: { p99: number; max: number }[]; usage: Usage[] }>();
    for (let rep = 0; rep < settings.repeats; rep++) {
      for (const c of settings.concurrency) {
        for (const mode of MODES) {
          const key = `${mode.name}@${c}`;
          const entry = raw.get(key) ?? { runs: [], healthz: [], healthzFailures: 0, loop: [], usage: [] };
          raw.set(key, entry);
          const url = servers.get(mode.name)!.url;
          let probe: ReturnType<ProbeThread['start']> | undefined;
          let windowStart: Promise<Scrape | null> = Promise.resolve(null);
          let windowAt = 0;
          let clientAt: NodeJS.CpuUsage | undefined;
          const probeTimer = setTimeout(() => {
            probe = prober?.start(url, settings.healthzIntervalMs);
            windowAt = performance.now();
            clientAt = process.cpuUsage();
            windowStart = scrape(url, model).catch(() => null);
          }, settings.warmupS * 1000);
          const run = await closedLoop(target(mode.name), c, settings.warmupS, settings.durationS);
          clearTimeout(probeTimer);
          const first = await windowStart;
          const seconds = (performance.now() - windowAt) / 1000;
          const clientCpu = process.cpuUsage(clientAt);
          const last = await scrape(url, model).catch(() => null);
          const loop = last?.loop;
          if (loop) entry.loop.push(loop);
          const used = first && last ? usage(first, last, seconds, clientCpu) : undefined;
          if (used) entry.usage.push(used);
          const h = probe ? await probe.stop() : { latenciesMs: [], failures: 0 };
          entry.runs.push(run);
          entry.healthz.push(h.latenciesMs);
          entry.healthzFailures += h.failures;
          process.stdout.write(`  rep ${rep + 1} c=${c} ${mode.name}: ${run.throughputRps.toFixed(1)} req/s, ` +
            `p50 ${run.p50Ms.toFixed(1)} ms, p99 ${run.p99Ms.toFixed(1)} ms, healthz p99 ${percentile(h.latenciesMs, 99).toFixed(1)} ms` +
            `${loop ? `, loop delay p99 ${loop.p99.toFixed(1)} ms, max ${loop.max.toFixed(1)} ms` : ''}` +
            `${used ? `, batch ${used.batchSize.toFixed(1)}, inference busy ${(used.inferenceBusy * 100).toFixed(0)}%, ` +
              `cores: server ${used.serverCores.toFixed(2)}, load generator ${used.clientCores.toFixed(2)}` : ''}` +
            `${run.non2xx + run.errors > 0 ? `, ${failuresText(run.non2xx, run.errors, run.errorKinds, run.non2xxKinds)}` : ''}\n`);
        }
      }
    }
    const cells: Cell[] = [];
    for (const c of settings.concurrency) {
      for (const mode of MODES) {
        const e = raw.get(`${mode.name}@${c}`)!;
        cells.push({
          mode: mode.name, concurrency: c,
          throughput_rps: summarize(e.runs.map((r) => r.throughputRps)),
          p50_ms: summarize(e.runs.map((r) => r.p50Ms)),
          p99_ms: summarize(e.runs.map((r) => r.p99Ms)),
          healthz_p50_ms: summarize(e.healthz.filter((h) => h.length > 0).map((h) => percentile(h, 50))),
          healthz_p99_ms: summarize(e.healthz.filter((h) => h.length > 0).map((h) => percentile(h, 99))),
          healthz_failures: e.healthzFailures,
          loop_delay_p99_ms: summarize(e.loop.map((l) => l.p99)),
          loop_delay_max_ms: summarize(e.loop.map((l) => l.max)),
          batch_size: summarize(e.usage.map((u) => u.batchSize)),
          inference_busy: summarize(e.usage.map((u) => u.inferenceBusy)),
          server_cores: summarize(e.usage.map((u) => u.serverCores)),
          client_cores: summarize(e.usage.map((u) => u.clientCores)),
          non2xx: e.runs.reduce((s, r) => s + r.non2xx, 0),
          non2xx_kinds: mergeKinds(e.runs, (r) => r.non2xxKinds),
          errors: e.runs.reduce((s, r) => s + r.errors, 0),
          error_kinds: mergeKinds(e.runs),
        });
      }
    }

    // Open loop at a fraction of each mode's best closed-loop throughput.
    const maxRps = new Map<ModeName, number>(MODES.map((m) => [m.name,
      Math.max(...cells.filter((c) => c.mode === m.name).map((c) => c.throughput_rps.median))]));
    const openRaw = new Map<ModeName, LoadResult[]>(MODES.map((m) => [m.name, []]));
    const openSeconds = new Map<ModeName, SecondRow[]>(MODES.map((m) => [m.name, []]));
    for (let rep = 0; rep < (opts['closed-only'] ? 0 : settings.repeats); rep++) {
      for (const mode of MODES) {
        const rate = settings.openLoopFraction * maxRps.get(mode.name)!;
        if (!(rate > 0)) throw new Error(`${mode.name}: no successful requests in the closed-loop cells, so no open-loop rate`);
        // The server's counters about once a second, to see how its batches went second by second.
        const url = servers.get(mode.name)!.url;
        const marks: { at: number; scrape: Scrape }[] = [];
        const scrapes: Promise<void>[] = [];
        const mark = (): Promise<void> => {
          const taken = scrape(url, model).then((s) => { marks.push({ at: performance.now(), scrape: s }); }, () => undefined);
          scrapes.push(taken);
          return taken;
        };
        await mark();
        const run = await openLoop(target(mode.name), { rateRps: rate, warmupS: settings.warmupS, seconds: settings.openLoopDurationS,
          onSecond: () => { void mark(); } });
        await mark();
        await Promise.all(scrapes);
        openRaw.get(mode.name)!.push(run);
        openSeconds.get(mode.name)!.push(...perSecond(marks, settings.warmupS));
        const tail = tailSplit(run.timed ?? []).p99;
        console.log(`  rep ${rep + 1} open loop ${mode.name} at ${rate.toFixed(1)} req/s: p50 ${run.p50Ms.toFixed(1)} ms, p99 ${run.p99Ms.toFixed(1)} ms` +
          (tail ? `; slowest 1%: ${splitText(tail)}` : '') + (run.non2xx + run.errors > 0
            ? `; ${failuresText(run.non2xx, run.errors, run.errorKinds, run.non2xxKinds)}` : ''));
      }
    }
    const open: OpenCell[] = opts['closed-only'] ? [] : MODES.map((m) => {
      const runs = openRaw.get(m.name)!;
      return {
        mode: m.name, max_throughput_rps: maxRps.get(m.name)!, rate_rps: settings.openLoopFraction * maxRps.get(m.name)!,
        achieved_rps: summarize(runs.map((r) => r.throughputRps)),
        p50_ms: summarize(runs.map((r) => r.p50Ms)), p99_ms: summarize(runs.map((r) => r.p99Ms)),
        p99_over_p50: summarize(runs.map((r) => r.p99Ms / r.p50Ms)),
        split: tailSplit(runs.flatMap((r) => r.timed ?? [])),
        per_second: summarizeSeconds(openSeconds.get(m.name)!),
        non2xx: runs.reduce((s, r) => s + r.non2xx, 0), non2xx_kinds: mergeKinds(runs, (r) => r.non2xxKinds),
        errors: runs.reduce((s, r) => s + r.errors, 0),
        error_kinds: mergeKinds(runs),
      };
    });

    const targets = checkTargets(cells, open);
    report(cells, open, targets);
    const out = resolve(opts.json);
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, JSON.stringify({
      bench: 'server-load', started, finished: new Date().toISOString(), model,
      host: { cpus: cpus().length, node: process.version, loadavg_before: loadBefore, loadavg_after: loadavg() },
      settings: { ...settings, base_env: base, budget: opts.budget ?? null,
        modes: MODES.map((m) => ({ name: m.name, env: m.env, what: m.what })) },
      cells, open_loop: open, targets,
    }, null, 2));
    console.log(`wrote ${out}`);
  } finally {
    await prober?.close();
    for (const s of servers.values()) await s.stop();
  }
}

function checkTargets(cells: readonly Cell[], open: readonly OpenCell[]): TargetCheck[] {
  const cell = (mode: ModeName, c: number): Cell | undefined => cells.find((x) => x.mode === mode && x.concurrency === c);
  const out: TargetCheck[] = [];
  const on32 = cell('batching-on', 32);
  const off32 = cell('batching-off', 32);
  if (on32 && off32) {
    const ratio = on32.throughput_rps.median / off32.throughput_rps.median;
    out.push({ name: 'batching speedup at concurrency 32', value: ratio, threshold: '>= 3x', pass: ratio >= 3,
      detail: `${on32.throughput_rps.median.toFixed(1)} vs ${off32.throughput_rps.median.toFixed(1)} req/s` });
  } else {
    out.push({ name: 'batching speedup at concurrency 32', value: null, threshold: '>= 3x', pass: null,
      detail: 'concurrency 32 not measured (--concurrency)' });
  }
  const o = open.find((x) => x.mode === 'batching-on');
  if (o) {
    const ratio = o.p99_over_p50.median;
    out.push({ name: `p99/p50 at ${Math.round(settings.openLoopFraction * 100)}% of max throughput`, value: ratio, threshold: '<= 2',
      pass: ratio <= 2, detail: `open loop at ${o.rate_rps.toFixed(1)} req/s: p50 ${o.p50_ms.median.toFixed(1)} ms, p99 ${o.p99_ms.median.toFixed(1)} ms` });
  }
  const top = Math.max(...settings.concurrency);
  for (const mode of MODES.filter((m) => m.name !== 'batching-off')) {
    const sat = cell(mode.name, top);
    if (!sat) continue;
    const p99 = sat.healthz_p99_ms.median;
    out.push({ name: `GET /healthz p99 while saturated (concurrency ${top}${mode.name === 'batching-on' ? '' : `, ${mode.name}`})`,
      value: p99, threshold: '< 20 ms',
      pass: Number.isFinite(p99) && p99 < 20 && sat.healthz_failures === 0,
      detail: `p50 ${sat.healthz_p50_ms.median.toFixed(1)} ms, ${sat.healthz_failures} failed probes; the server's own ` +
        `event-loop delay p99 ${sat.loop_delay_p99_ms.median.toFixed(1)} ms, max ${sat.loop_delay_max_ms.median.toFixed(1)} ms` });
  }
  const failures = (x: { non2xx: number; non2xx_kinds: Record<string, number>; errors: number; error_kinds: Record<string, number> }): string =>
    failuresText(x.non2xx, x.errors, x.error_kinds, x.non2xx_kinds);
  const failed = [
    ...cells.filter((c) => c.non2xx + c.errors > 0).map((c) => `${c.mode}@${c.concurrency}: ${failures(c)}`),
    ...open.filter((o) => o.non2xx + o.errors > 0).map((o) => `open loop ${o.mode}: ${failures(o)}`),
  ];
  if (failed.length > 0) {
    out.push({ name: 'every request answered 2xx', value: null, threshold: '0 failures', pass: false, detail: failed.join('; ') });
  }
  return out;
}

function splitText(x: LatencySplit): string {
  return `${x.latencyMs.toFixed(1)} ms = outside ${x.outsideMs.toFixed(1)} + queue ${x.queueMs.toFixed(1)} + ` +
    `inference ${x.inferenceMs.toFixed(1)} + rest ${x.restMs.toFixed(1)}`;
}

function report(cells: readonly Cell[], open: readonly OpenCell[], targets: readonly TargetCheck[]): void {
  printTable('Closed loop: median [min-max] over repeats', ['mode', 'conc', 'req/s', 'p50 ms', 'p99 ms', 'healthz p50', 'healthz p99',
    'loop delay p99', 'loop delay max', 'fail'],
    cells.map((c) => [c.mode, String(c.concurrency), fmt(c.throughput_rps), fmt(c.p50_ms), fmt(c.p99_ms),
      fmt(c.healthz_p50_ms, 2), fmt(c.healthz_p99_ms, 2), fmt(c.loop_delay_p99_ms, 2), fmt(c.loop_delay_max_ms, 2),
      String(c.non2xx + c.errors + c.healthz_failures)]));
  printTable('Closed loop: where the work went (median over repeats; cores = CPU seconds per second)',
    ['mode', 'conc', 'requests per batch', 'inference busy', 'server cores', 'load generator cores'],
    cells.map((c) => [c.mode, String(c.concurrency), c.batch_size.median.toFixed(1), `${(c.inference_busy.median * 100).toFixed(0)}%`,
      c.server_cores.median.toFixed(2), c.client_cores.median.toFixed(2)]));
  printTable(`Open loop at ${Math.round(settings.openLoopFraction * 100)}% of max throughput (latency from scheduled send)`,
    ['mode', 'max req/s', 'rate', 'achieved', 'p50 ms', 'p99 ms', 'p99/p50', 'fail'],
    open.map((o) => [o.mode, o.max_throughput_rps.toFixed(1), o.rate_rps.toFixed(1), fmt(o.achieved_rps), fmt(o.p50_ms), fmt(o.p99_ms),
      fmt(o.p99_over_p50, 2), String(o.non2xx + o.errors)]));
  printTable('Open loop, second by second (median [min-max] over the seconds of all repeats; from the server\'s /metrics)',
    ['mode', 'seconds', 'model busy', 'requests per batch', 'batch ms per request', 'queue wait ms'],
    open.map((o) => [o.mode, String(o.per_second.busy.samples.length), fmt(o.per_second.busy, 2), fmt(o.per_second.batch_size),
      fmt(o.per_second.ms_per_request, 3), fmt(o.per_second.queue_wait_ms)]));
  printTable('Open loop: where the time went (mean ms; all repeats; outside = not in the server\'s own total)',
    ['mode', 'answers', 'latency', 'outside', 'queue', 'inference', 'rest'],
    open.flatMap((o) => (['median', 'p99'] as const).map((which) => {
      const x = o.split[which];
      return [`${o.mode} ${which === 'median' ? 'p45-p55' : '>= p99'}`, String(x?.requests ?? 0),
        ...(x ? [x.latencyMs, x.outsideMs, x.queueMs, x.inferenceMs, x.restMs].map((v) => v.toFixed(1)) : ['-', '-', '-', '-', '-'])];
    })));
  printTable('Targets', ['target', 'value', 'threshold', 'result', 'detail'], targets.map((t) => [t.name,
    t.value === null ? 'n/a' : t.value.toFixed(2), t.threshold, t.pass === null ? 'not measured' : t.pass ? 'PASS' : 'FAIL', t.detail]));
}

await main();
