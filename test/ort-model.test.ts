// The server over a real ONNX bundle (the toolchain's tiny random model): the worker runtime
// reproduces PyTorch, answers follow the contract, and the budget bounds and steers compute.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import request from 'supertest';
import type { BatchItem, ItemResult } from '../server/backend.js';
import { scanBundles, type Bundle } from '../server/bundle.js';
import { createLogger } from '../server/logger.js';
import { OrtBackend } from '../server/ort-backend.js';
import type { TestApp } from './support/fake.js';
import { makeImage } from './support/images.js';
import { ortApp, tinyModelsDir } from './support/tiny-bundle.js';

interface ReferenceCase { budget: number[]; pixels: number[]; logits: number[]; learner_counts: number[] }
interface Answer {
  model: string;
  predictions: { label: string; score: number }[];
  compute: { budget: number; used: number; floor: number; gflops: number; dense_gflops: number;
    map: { grid: [number, number]; values: number[][] } };
}

describe('tiny ONNX bundle', () => {
  let modelsDir: string;
  let bundle: Bundle;
  let t: TestApp;
  let images: Buffer[];

  before(async () => {
    modelsDir = await tinyModelsDir();
    const scan = await scanBundles(modelsDir);
    assert.equal(scan.bundles.length, 1);
    bundle = scan.bundles[0] as Bundle;
    t = await ortApp(modelsDir);
    images = await Promise.all([0, 1, 2, 3, 4, 5].map((s) => makeImage(s, 'png')));
  });
  after(async () => {
    await t.inference.shutdown(1000);
  });

  it('carries its manifest in the ONNX metadata, and the loader checked it', () => {
    assert.equal(bundle.embeddedManifest, true);
  });

  /** The PyTorch reference cases the toolchain wrote beside the bundle. */
  async function referenceCases(): Promise<ReferenceCase[]> {
    return (JSON.parse(await readFile(join(bundle.dir, 'reference.json'), 'utf8')) as { cases: ReferenceCase[] }).cases;
  }

  /** One reference case as the batch the backend takes. */
  function referenceItems(c: ReferenceCase): BatchItem[] {
    const per = 28 * 28;
    return c.budget.map((budget, i) => ({ budget, input: Float32Array.from(c.pixels.slice(i * per, (i + 1) * per)) }));
  }

  /** Logits within 1e-4 and learner counts exactly as PyTorch computed them for the case. */
  function assertMatchesReference(results: ItemResult[], c: ReferenceCase, label: string): void {
    const classes = bundle.manifest.labels.length;
    const perCounts = bundle.manifest.acms.length * bundle.manifest.tokens.count;
    results.forEach((r, i) => {
      const want = c.logits.slice(i * classes, (i + 1) * classes);
      r.logits.forEach((v, j) => assert.ok(Math.abs(v - (want[j] ?? NaN)) < 1e-4, `${label}, logit ${j}: ${v} vs ${want[j]}`));
      assert.deepEqual(Array.from(r.learnerCounts), c.learner_counts.slice(i * perCounts, (i + 1) * perCounts), label);
    });
  }

  it('worker runtime reproduces the PyTorch reference for one request and a mixed-budget batch', async () => {
    const backend = new OrtBackend({ bundle, provider: 'cpu', threads: 1, graphOptimization: 'all', workers: 1,
      runTimeoutMs: 30_000, log: createLogger('silent') });
    await backend.start();
    try {
      for (const [n, c] of (await referenceCases()).entries()) assertMatchesReference(await backend.run(referenceItems(c)), c, `case ${n}`);
    } finally {
      await backend.close();
    }
  });

  it('with batches sent ahead (pipeline depth 2), the worker runs them in turn and answers each as the reference', async () => {
    const backend = new OrtBackend({ bundle, provider: 'cpu', threads: 1, graphOptimization: 'all', workers: 1, pipelineDepth: 2,
      runTimeoutMs: 30_000, log: createLogger('silent') });
    await backend.start();
    try {
      // Every case three times, all sent at once: the worker holds two at a time.
      const ref = await referenceCases();
      const cases = [...ref, ...ref, ...ref];
      const all = await Promise.all(cases.map((c) => backend.run(referenceItems(c))));
      all.forEach((results, n) => assertMatchesReference(results, cases[n]!, `case ${n}`));
    } finally {
      await backend.close();
    }
  });

  it('runs with every session knob away from its default and answers as with the defaults', async () => {
    // onnxruntime-node rejects malformed session options (e.g. a non-string config entry) at
    // session creation, so a session that starts and reproduces the default answers took them.
    const base = { bundle, provider: 'cpu' as const, threads: 1, graphOptimization: 'basic' as const, workers: 1,
      runTimeoutMs: 30_000, log: createLogger('silent') };
    const tuned = new OrtBackend({ ...base,
      tuning: { interOpThreads: 2, executionMode: 'parallel', intraOpSpinning: false, cpuMemArena: false } });
    const plain = new OrtBackend(base);
    await Promise.all([tuned.start(), plain.start()]);
    try {
      const items = [0.3, 1].map((budget, i) => ({ budget, input: new Float32Array(28 * 28).fill(0.1 + i / 3) }));
      const [a, b] = await Promise.all([tuned.run(items), plain.run(items)]);
      a.forEach((r, i) => {
        assert.deepEqual(Array.from(r.learnerCounts), Array.from(b[i]?.learnerCounts ?? []));
        r.logits.forEach((v, j) => assert.ok(Math.abs(v - (b[i]?.logits[j] ?? NaN)) < 1e-5, `logit ${j}`));
      });
    } finally {
      await Promise.all([tuned.close(), plain.close()]);
    }
  });

  it('lowers the priority of the inference threads only', { skip: process.platform !== 'linux' }, async () => {
    // Field 19 of /proc/<pid>/task/<tid>/stat is the thread's nice value; the name before it is
    // in parentheses and may hold spaces, so fields are counted from the last ')'. A thread that
    // ends between the listing and the read (a libuv or V8 helper) is left out.
    const niceByThread = (): Map<number, number> => new Map(readdirSync('/proc/self/task').flatMap((tid): [number, number][] => {
      let stat: string;
      try {
        stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw err;
      }
      return [[Number(tid), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])]];
    }));
    const beforeStart = niceByThread();
    const niced = new OrtBackend({ bundle, provider: 'cpu', threads: 2, graphOptimization: 'all', workers: 1,
      runTimeoutMs: 30_000, log: createLogger('silent'), nice: 7 });
    await niced.start();
    try {
      const items = [0.5, 1].map((budget) => ({ budget, input: new Float32Array(28 * 28).fill(0.2) }));
      assert.equal((await niced.run(items)).length, 2);
      const afterRun = niceByThread();
      const lowered = [...afterRun].filter(([tid, nice]) => !beforeStart.has(tid) && nice === 7);
      // The worker thread and the second intra-op thread onnxruntime starts for it.
      assert.ok(lowered.length >= 2, `threads at nice 7: ${lowered.length} of ${afterRun.size}`);
      assert.equal(afterRun.get(process.pid), beforeStart.get(process.pid), 'the HTTP thread keeps its priority');
    } finally {
      await niced.close();
    }
  });

  it('warns and still serves when the inference threads cannot take their nice value', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => { lines.push(JSON.parse(line) as Record<string, unknown>); } });
    // Out of the range the platform accepts (-20..19), so setting it fails everywhere.
    const backend = new OrtBackend({ bundle, provider: 'cpu', threads: 1, graphOptimization: 'all', workers: 1,
      runTimeoutMs: 30_000, log, nice: 25 });
    await backend.start();
    try {
      assert.equal((await backend.run([{ budget: 0.5, input: new Float32Array(28 * 28).fill(0.2) }])).length, 1);
      const warning = lines.find((l) => String(l.msg).includes('setting its nice value failed'));
      assert.ok(warning, `no warning among ${JSON.stringify(lines)}`);
      assert.equal(warning.nice, 25);
    } finally {
      await backend.close();
    }
  });

  it('closes during graph load and during a run without aborting the process', async () => {
    // Terminating a thread inside onnxruntime aborts the process; close() must let it finish.
    const options = { bundle, provider: 'cpu' as const, threads: 1, graphOptimization: 'all' as const, workers: 1,
      runTimeoutMs: 30_000, log: createLogger('silent') };
    const loading = new OrtBackend(options);
    const started = loading.start().then(() => 'started', (e: { code?: string }) => e.code);
    await loading.close();
    assert.equal(await started, 'not_ready');

    const running = new OrtBackend(options);
    await running.start();
    const items = Array.from({ length: 512 }, (_, i) => ({ budget: 1, input: new Float32Array(28 * 28).fill(i / 512) }));
    const outcome = running.run(items).then(() => 'done', (e: { code?: string }) => e.code);
    await running.close();
    assert.equal(await outcome, 'not_ready');
  });

  it('answers with labels from the manifest and the manifest token grid', async () => {
    const res = await request(t.app).post('/classify?top_k=10').set('X-Budget', '0.6').set('Content-Type', 'image/png')
      .send(images[0]).expect(200);
    const body = res.body as Answer;
    const m = bundle.manifest;
    assert.equal(body.model, m.name);
    assert.deepEqual(body.predictions.map((p) => p.label).sort(), [...m.labels].sort());
    const scores = body.predictions.map((p) => p.score);
    assert.deepEqual(scores, [...scores].sort((a, b) => b - a));
    assert.ok(Math.abs(scores.reduce((s, v) => s + v, 0) - 1) < 1e-6);
    assert.deepEqual(body.compute.map.grid, m.tokens.grid);
    assert.equal(body.compute.map.values.length, m.tokens.grid[0]);
    for (const row of body.compute.map.values) assert.equal(row.length, m.tokens.grid[1]);
    assert.equal(body.compute.floor, m.budget_floor);
    assert.equal(body.compute.dense_gflops, m.macs.dense / 1e9);
    assert.equal(res.headers['x-budget-used'], String(body.compute.used));
  });

  async function usedAt(budget: number): Promise<number[]> {
    const used: number[] = [];
    for (const image of images) {
      const res = await request(t.app).post(`/classify?budget=${budget}`).set('Content-Type', 'image/png').send(image).expect(200);
      const c = (res.body as Answer).compute;
      assert.ok(c.used <= Math.max(budget, c.floor) + 1e-9, `budget ${budget}: used ${c.used}, floor ${c.floor}`);
      assert.ok(c.used >= c.floor - 1e-9, `used ${c.used} below the floor ${c.floor}`);
      used.push(c.used);
    }
    return used;
  }
  const mean = (v: number[]): number => v.reduce((s, x) => s + x, 0) / v.length;

  it('never uses more than max(budget, floor), and uses less at budget 0.25 than at 1.0', async () => {
    // Budgets below the floor and below the projections' min_choice / n (0.25) included: there the
    // ACMs must share the budget, not each take it.
    for (const budget of [0.05, 0.1, 0.2]) await usedAt(budget);
    const quarter = await usedAt(0.25);
    await usedAt(0.5);
    const full = await usedAt(1);
    assert.ok(mean(quarter) < mean(full), `mean used at 0.25 (${mean(quarter)}) < at 1.0 (${mean(full)})`);
  });
});
