// How steady this machine's speed is, as the server's work sees it. Three workloads take turns in
// short slots for --seconds, on this one thread:
//   model        the image bundle's ACM graph at a fixed batch and budget on one onnxruntime
//                thread, as the server's inference runs it;
//   throughput   eight independent multiply-add chains over an array that fits in L1: it needs
//                the core's execution units, so it slows when something else takes them (another
//                hardware thread on the same core, a neighbour on the host);
//   latency      one dependent chain of multiply-adds and remainders: it uses little of the core
//                and slows only when the clock itself does.
// Per wall-clock second, each workload's rate (work per second of its own slots) is divided by
// its median over the run. A second in which the model ran below 0.7 of its median is one in
// which a server loaded to 70% of its median capacity could not keep up, and a queue grew. The seconds the model and the throughput loop dip together, while
// the latency loop holds, point at the machine rather than at the server.
//
//   (options: USAGE below, or --help)
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { disableOrtTelemetry } from '../server/ort-telemetry.js';
import { budgetArg, imageBundleArg, intArg, numberArg, parseCli } from './args.js';
import { benchSessionOptions, seededPixels } from './model-inputs.js';
import { REPO } from './server-process.js';
import { median, percentile } from './stats.js';
import { printTable } from './table.js';

const USAGE = `
usage: npm run bench:steady -- [--quick] [--bundle models/fashion-vit-acm] [--seconds 60] [--batch 1]
    [--budget 1] [--slot-ms 50] [--open-loop-seconds 20] [--fraction 0.7] [--max-batch 32] [--wait-ms 0]
    [--repeats 3] [--json FILE]
The machine's speed second by second for three workloads in turns: the bundle's graph on one
onnxruntime thread, a throughput-bound loop and a latency-bound loop. Each second's rate over the
workload's median; the seconds below 0.85 and 0.7; how the model's rate follows the other two.
Then the model alone under an open loop at --fraction of its capacity, batching what has arrived:
p50, p99 and p99/p50 per repeat. --wait-ms 0,4 compares batching policies in the same run, each
repeat running every one in turn at the same rate: a free model waits until the oldest arrival has waited that
long (or --max-batch have arrived), as the server's ACM_MAX_WAIT_MS does.
`;

const WORKLOADS = ['model', 'throughput', 'latency'] as const;
type Workload = (typeof WORKLOADS)[number];

/** L1-resident operands: 4096 doubles, 32 KiB. */
const operands = Float64Array.from({ length: 4096 }, (_, i) => (i % 97) * 1e-3);

/** Eight independent chains: as many multiply-adds in flight as the core can issue. */
function throughputLoop(rounds: number): number {
  let a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < operands.length; i += 8) {
      a0 += operands[i]! * 1.1; a1 += operands[i + 1]! * 1.2; a2 += operands[i + 2]! * 1.3; a3 += operands[i + 3]! * 1.4;
      a4 += operands[i + 4]! * 1.5; a5 += operands[i + 5]! * 1.6; a6 += operands[i + 6]! * 1.7; a7 += operands[i + 7]! * 1.8;
    }
  }
  return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}

/** One chain: each step waits for the one before. */
function latencyLoop(steps: number): number {
  let x = 0;
  for (let i = 0; i < steps; i++) x = (x * 1.0000001 + i) % 1e9;
  return x;
}

/** Pearson correlation of two equally long series; NaN when either is constant. */
function correlation(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  if (n < 2) return NaN;
  const ma = a.slice(0, n).reduce((s, v) => s + v, 0) / n;
  const mb = b.slice(0, n).reduce((s, v) => s + v, 0) / n;
  let sab = 0, saa = 0, sbb = 0;
  for (let i = 0; i < n; i++) {
    const da = a[i]! - ma, db = b[i]! - mb;
    sab += da * db; saa += da * da; sbb += db * db;
  }
  return saa === 0 || sbb === 0 ? NaN : sab / Math.sqrt(saa * sbb);
}

/** Each second's rate over the series' median. */
function relativeToMedian(rates: readonly number[]): number[] {
  const m = median(rates);
  return rates.map((r) => r / m);
}

interface ModelOpenLoop {
  wait_ms: number; capacity_per_s: number; rate_per_s: number; items: number; p50_ms: number; p99_ms: number; p99_over_p50: number;
  mean_batch: number; largest_batch: number;
  /** Fraction of the loop's time the model was running a batch. */
  busy: number;
}

/** Items per second of back-to-back batches of maxBatch for seconds; `runBatch(b)` runs one batch of b items. */
async function capacityOf(runBatch: (b: number) => Promise<void>, maxBatch: number, seconds: number): Promise<number> {
  let ran = 0;
  const c0 = performance.now();
  while (performance.now() - c0 < seconds * 1000) {
    await runBatch(maxBatch);
    ran += maxBatch;
  }
  return ran / ((performance.now() - c0) / 1000);
}

/**
 * Items arrive every 1 / (fraction x capacity) s for seconds; when the model is free and the
 * oldest arrived item has waited waitMs (at once with 0), or maxBatch items have arrived, it runs
 * every arrived item, at most maxBatch, and each item's latency is the batch's end minus the
 * item's scheduled arrival. Waits by spinning, as an onnxruntime thread does between runs, so
 * that no timer's lateness counts.
 */
async function modelOpenLoop(runBatch: (b: number) => Promise<void>, maxBatch: number, fraction: number, capacity: number,
  seconds: number, waitMs: number): Promise<ModelOpenLoop> {
  const rate = fraction * capacity;
  const items = Math.max(1, Math.floor(rate * seconds));
  const latencies: number[] = [];
  const sizes: number[] = [];
  const t0 = performance.now();
  const due = (i: number): number => t0 + (i * 1000) / rate;
  let next = 0;
  let busyMs = 0;
  while (next < items) {
    const now = performance.now();
    let arrived = 0;
    while (next + arrived < items && arrived < maxBatch && due(next + arrived) <= now) arrived++;
    if (arrived === 0) continue;
    // The last items do not wait for arrivals that will never come.
    if (arrived < maxBatch && next + arrived < items && now - due(next) < waitMs) continue;
    await runBatch(arrived);
    const end = performance.now();
    busyMs += end - now;
    for (let i = 0; i < arrived; i++) latencies.push(end - due(next + i));
    sizes.push(arrived);
    next += arrived;
  }
  const p50 = percentile(latencies, 50);
  const p99 = percentile(latencies, 99);
  return { wait_ms: waitMs, capacity_per_s: capacity, rate_per_s: rate, items, p50_ms: p50, p99_ms: p99, p99_over_p50: p99 / p50,
    mean_batch: items / sizes.length, largest_batch: Math.max(...sizes), busy: busyMs / (performance.now() - t0) };
}

async function main(): Promise<void> {
  disableOrtTelemetry();
  const { values: opts } = parseCli(USAGE, {
    options: {
      quick: { type: 'boolean', default: false },
      bundle: { type: 'string', default: join(REPO, 'models', 'fashion-vit-acm') },
      seconds: { type: 'string' },
      batch: { type: 'string' },
      budget: { type: 'string' },
      'slot-ms': { type: 'string' },
      'open-loop-seconds': { type: 'string' },
      fraction: { type: 'string' },
      'max-batch': { type: 'string' },
      'wait-ms': { type: 'string' },
      repeats: { type: 'string' },
      json: { type: 'string' },
    },
  });
  const seconds = intArg('seconds', opts.seconds, opts.quick ? 3 : 60, 2, 86_400);
  const batch = intArg('batch', opts.batch, 1, 1, 4096);
  const budget = budgetArg('budget', opts.budget, 1);
  const slotMs = intArg('slot-ms', opts['slot-ms'], 50, 5, 1000);
  const openSeconds = numberArg('open-loop-seconds', opts['open-loop-seconds'], opts.quick ? 1 : 20, 0.1, 3600);
  const fraction = numberArg('fraction', opts.fraction, 0.7, 0, 1, { minOpen: true });
  const maxBatch = intArg('max-batch', opts['max-batch'], 32, 1, 1024);
  const waits = (opts['wait-ms'] ?? '0').split(',').map((w) => numberArg('wait-ms', w, NaN, 0, 10_000));
  const repeats = intArg('repeats', opts.repeats, opts.quick ? 1 : 3, 1, 100);
  const bundle = await imageBundleArg('bundle', opts.bundle);
  const m = bundle.manifest;
  const { channels, height, width } = m.image;
  const session = await ort.InferenceSession.create(bundle.graphPath, benchSessionOptions(1));
  const feedsFor = (b: number): Record<string, ort.Tensor> => ({ [m.inputs.pixels]: seededPixels(b, channels, height, width),
    [m.inputs.budget]: new ort.Tensor('float64', new Float64Array(b).fill(budget), [b]) });
  const feeds = feedsFor(batch);

  let sink = 0;
  const step: Record<Workload, () => Promise<void>> = {
    model: async () => { await session.run(feeds); },
    throughput: () => { sink += throughputLoop(16); return Promise.resolve(); },
    latency: () => { sink += latencyLoop(100_000); return Promise.resolve(); },
  };
  for (let i = 0; i < 20; i++) for (const w of WORKLOADS) await step[w]();

  // Per second: steps done and ms spent in each workload's slots; each model run timed alone too.
  const done: Record<Workload, number[]> = { model: [], throughput: [], latency: [] };
  const spent: Record<Workload, number[]> = { model: [], throughput: [], latency: [] };
  const runMs: number[] = [];
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    for (const w of WORKLOADS) {
      const start = performance.now();
      const second = Math.floor((start - t0) / 1000);
      let steps = 0;
      let now = start;
      while (now - start < slotMs) {
        await step[w]();
        const after = performance.now();
        if (w === 'model') runMs.push(after - now);
        now = after;
        steps++;
      }
      done[w][second] = (done[w][second] ?? 0) + steps;
      spent[w][second] = (spent[w][second] ?? 0) + (now - start);
    }
  }
  if (!Number.isFinite(sink)) throw new Error('the loops computed a non-finite sum');

  // Whole seconds only: the last one was cut short by the end of the run.
  const whole = Math.min(seconds, ...WORKLOADS.map((w) => done[w].length));
  const relative = Object.fromEntries(WORKLOADS.map((w) => {
    const rates = Array.from({ length: whole }, (_, s) => (done[w][s] ?? 0) / ((spent[w][s] ?? 0) / 1000));
    return [w, { perSecond: median(rates), relative: relativeToMedian(rates) }];
  })) as Record<Workload, { perSecond: number; relative: number[] }>;

  console.log(`${m.name} at batch ${batch}, budget ${budget}, one onnxruntime thread; three workloads in turns, ` +
    `${slotMs} ms slots, ${whole} whole seconds; each second's rate over the workload's median`);
  const rows = WORKLOADS.map((w) => {
    const r = relative[w].relative;
    return { workload: w, per_second: relative[w].perSecond, p10: percentile(r, 10), min: Math.min(...r), max: Math.max(...r),
      below_085: r.filter((v) => v < 0.85).length, below_07: r.filter((v) => v < 0.7).length };
  });
  printTable('Rate per second, relative to the median', ['workload', 'median steps/s', 'p10', 'min', 'max', 'seconds < 0.85', 'seconds < 0.7'],
    rows.map((r) => [r.workload, r.per_second.toFixed(1), r.p10.toFixed(2), r.min.toFixed(2), r.max.toFixed(2),
      `${r.below_085} of ${whole}`, `${r.below_07} of ${whole}`]));
  const runs = { count: runMs.length, p50_ms: percentile(runMs, 50), p90_ms: percentile(runMs, 90), p99_ms: percentile(runMs, 99),
    max_ms: runMs.length > 0 ? runMs.reduce((a, b) => Math.max(a, b), -Infinity) : NaN };
  console.log(`model runs: ${runs.count}, ms per run p50 ${runs.p50_ms.toFixed(2)}, p90 ${runs.p90_ms.toFixed(2)}, ` +
    `p99 ${runs.p99_ms.toFixed(2)}, max ${runs.max_ms.toFixed(2)}`);
  const followsThroughput = correlation(relative.model.relative, relative.throughput.relative);
  const followsLatency = correlation(relative.model.relative, relative.latency.relative);
  console.log(`second by second, the model's rate correlates ${followsThroughput.toFixed(2)} with the throughput loop's ` +
    `and ${followsLatency.toFixed(2)} with the latency loop's`);

  // The model alone under an open loop.
  const byBatch = Array.from({ length: maxBatch + 1 }, (_, b) => (b === 0 ? undefined : feedsFor(b)));
  for (let b = 1; b <= maxBatch; b++) await session.run(byBatch[b]!);
  const openLoops = [];
  const runBatch = (b: number): Promise<void> => session.run(byBatch[b]!).then(() => undefined);
  for (let rep = 0; rep < repeats; rep++) {
    // One capacity per repeat: every policy of the repeat gets the same arrival schedule.
    const capacity = await capacityOf(runBatch, maxBatch, opts.quick ? 0.5 : 5);
    for (const waitMs of waits) {
      openLoops.push({ repeat: rep + 1, ...await modelOpenLoop(runBatch, maxBatch, fraction, capacity, openSeconds, waitMs) });
    }
  }
  await session.release();
  printTable(`The model alone under an open loop at ${Math.round(fraction * 100)}% of its capacity (batches of what has arrived, ` +
    `at most ${maxBatch}; latency from scheduled arrival)`,
  ['repeat', 'wait ms', 'capacity items/s', 'rate', 'p50 ms', 'p99 ms', 'p99/p50', 'mean batch', 'largest batch', 'model busy'],
  openLoops.map((r) => [String(r.repeat), String(r.wait_ms), r.capacity_per_s.toFixed(0), r.rate_per_s.toFixed(0), r.p50_ms.toFixed(2),
    r.p99_ms.toFixed(2), r.p99_over_p50.toFixed(2), r.mean_batch.toFixed(1), String(r.largest_batch), r.busy.toFixed(2)]));
  for (const waitMs of waits) {
    const mine = openLoops.filter((r) => r.wait_ms === waitMs);
    console.log(`wait ${waitMs} ms: p99/p50 median ${median(mine.map((r) => r.p99_over_p50)).toFixed(2)}, p99 median ` +
      `${median(mine.map((r) => r.p99_ms)).toFixed(2)} ms over ${repeats} repeat(s)`);
  }

  const out = opts.json ?? join(REPO, '.cache', 'bench', 'steadiness.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ model: m.name, batch, budget, slot_ms: slotMs, seconds: whole, quick: opts.quick, rows, runs,
    correlation: { model_throughput: followsThroughput, model_latency: followsLatency },
    series: Object.fromEntries(WORKLOADS.map((w) => [w, relative[w].relative])),
    open_loop: { fraction, max_batch: maxBatch, wait_ms: waits, seconds: openSeconds, repeats: openLoops } }, null, 2));
  console.log(`wrote ${out}`);
}

await main();
