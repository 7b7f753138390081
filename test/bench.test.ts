// The benchmark harness, at tiny scale: the server-load bench runs end to end against real server
// processes and writes a complete report, and the model-bench chart draws every series. Nothing
// here asserts a speed: on a shared machine timings are not reproducible, only their structure is.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { getPriority, setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { ProbeThread } from '../bench/healthz-probe.js';
import { errorKindsText, ErrorTally, failuresText, IDLE_SOCKET_MS, keepAliveAgent, latencySplit, openLoop, tailSplit, type LatencySplit, type LoadResult } from '../bench/load.js';
import { outputDifference, speechWindows } from '../bench/model-inputs.js';
import { nodeRole, profileByRole, ROLES } from '../bench/model-profile.js';
import { checkModelBenchJson, modelPlotSvg, type ModelBenchJson } from '../bench/plot-svg.js';
import type { Summary } from '../bench/stats.js';
import { assertPositiveSummary } from './support/bench-report.js';
import { getKeptAlive } from './support/kept-alive.js';
import { tinyModelsDir } from './support/tiny-bundle.js';

const run = promisify(execFile);
const SERVER_LOAD = fileURLToPath(new URL('../bench/server-load.js', import.meta.url));
const MODEL_PROFILE = fileURLToPath(new URL('../bench/model-profile.js', import.meta.url));
const PAPER_MODEL = fileURLToPath(new URL('../bench/paper-model.js', import.meta.url));
const STEADINESS = fileURLToPath(new URL('../bench/steadiness.js', import.meta.url));
const PEER = fileURLToPath(new URL('../kernels/peer-ort.js', import.meta.url));

type Stat = Summary;
interface Report {
  bench: string;
  model: string;
  cells: { mode: string; concurrency: number; throughput_rps: Stat; p50_ms: Stat; p99_ms: Stat; healthz_p50_ms: Stat;
    healthz_p99_ms: Stat; non2xx: number; errors: number; batch_size: Stat; inference_busy: Stat; server_cores: Stat;
    client_cores: Stat }[];
  open_loop: { mode: string; rate_rps: number; achieved_rps: Stat; p50_ms: Stat; p99_ms: Stat; p99_over_p50: Stat;
    split: Record<'median' | 'p99', LatencySplit | null>;
    per_second: Record<'busy' | 'batch_size' | 'ms_per_request' | 'queue_wait_ms', Stat> }[];
  targets: { name: string; value: number | null; pass: boolean | null }[];
}

/** One repeat per cell in these quick runs. */
const positive = (s: Stat, what: string): void => assertPositiveSummary(s, 1, what);

/** An open loop (by default 0.4 s at 100 requests/s: 40 requests) against a local server with `handler`. */
async function openLoopAgainst(handler: RequestListener, o = { rateRps: 100, seconds: 0.4 }): Promise<LoadResult> {
  const server = createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const { port } = server.address() as AddressInfo;
    return await openLoop({ url: `http://127.0.0.1:${port}`, path: '/classify', images: [Buffer.from('x')] },
      { rateRps: o.rateRps, warmupS: 0, seconds: o.seconds });
  } finally {
    server.closeAllConnections();
    server.close();
  }
}

describe('load generator errors', () => {
  it('counts transport errors by kind and says which, most frequent first', () => {
    const t = new ErrorTally();
    t.add(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
    t.add(new Error('no answer within 30 s'));
    t.add(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
    assert.equal(t.total, 3);
    assert.deepEqual(t.kinds, { ECONNRESET: 2, 'no answer within 30 s': 1 });
    assert.equal(errorKindsText(t.kinds), '2 ECONNRESET, 1 no answer within 30 s');
    assert.equal(errorKindsText({}), '');
    t.add(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET', idleMs: 4870 }));
    assert.match(errorKindsText(t.kinds), /, 1 ECONNRESET on a kept-alive connection idle 4-5 s$/, 'a reused connection says how long it idled');
  });

  it('an open loop against a server that drops every other connection reports those as ECONNRESET, with the idle time of a reused one', async () => {
    let n = 0;
    const r = await openLoopAgainst((req, res) => {
      if (n++ % 2 === 1) {
        req.socket.destroy();
        return;
      }
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    assert.equal(r.ok + r.errors + r.non2xx, 40);
    assert.ok(r.errors > 0 && r.ok > 0, `errors ${r.errors}, ok ${r.ok}`);
    const kinds = Object.keys(r.errorKinds);
    assert.ok(kinds.every((k) => /^ECONNRESET( on a kept-alive connection idle \d+-\d+ s)?$/.test(k)), kinds.join('; '));
    assert.ok(kinds.includes('ECONNRESET on a kept-alive connection idle 0-1 s'), `a reset on a reused connection is labelled: ${kinds.join('; ')}`);
    assert.equal(Object.values(r.errorKinds).reduce((a, b) => a + b, 0), r.errors);
  });
});

describe('load generator connections', () => {
  it('close a kept-alive socket idle past the client limit, before a server that keeps it longer would', { timeout: 20_000 }, async () => {
    const server = createServer((req, res) => res.end('ok'));
    server.keepAliveTimeout = 60_000;
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const agent = keepAliveAgent();
    try {
      const { port } = server.address() as AddressInfo;
      const { socket } = await getKeptAlive(agent, port, '/');
      const idleFrom = performance.now();
      await once(socket, 'close');
      const idleMs = performance.now() - idleFrom;
      assert.ok(idleMs >= IDLE_SOCKET_MS - 200 && idleMs < IDLE_SOCKET_MS + 5000, `closed after ${Math.round(idleMs)} ms`);
    } finally {
      agent.destroy();
      server.closeAllConnections();
      server.close();
    }
  });

  it('wait for a slow answer on a reused socket past the idle limit, up to the request timeout', { timeout: 20_000 }, async () => {
    // The first request is answered at once and frees its socket; the next ones reuse it and take
    // longer than IDLE_SOCKET_MS, which must not read as the socket's idle timeout.
    let n = 0;
    const r = await openLoopAgainst((req, res) => {
      const delay = n++ === 0 ? 0 : IDLE_SOCKET_MS + 500;
      req.resume();
      req.on('end', () => setTimeout(() => res.end('ok'), delay));
    }, { rateRps: 2, seconds: 1 });
    assert.deepEqual({ ok: r.ok, errors: r.errorKinds }, { ok: 2, errors: {} });
  });
});

describe('load generator non-2xx answers', () => {
  it('are counted by status, and the failure line names them', async () => {
    let n = 0;
    const r = await openLoopAgainst((req, res) => {
      req.resume();
      req.on('end', () => {
        res.statusCode = n++ % 2 === 1 ? 503 : 200;
        res.end('x');
      });
    });
    assert.equal(r.ok + r.non2xx, 40);
    assert.deepEqual(r.non2xxKinds, { 'HTTP 503': r.non2xx });
    assert.ok(r.non2xx > 0);
    assert.equal(failuresText(r.non2xx, 0, {}, r.non2xxKinds), `${r.non2xx} non-2xx (${r.non2xx} HTTP 503), 0 errors`);
  });
});

describe('open-loop latency split', () => {
  const t = (queueMs: number, inferenceMs: number, totalMs: number) => ({ queueMs, inferenceMs, totalMs });
  it('averages each part of a group, the part outside the server being latency minus its total', () => {
    const x = latencySplit([{ latencyMs: 10, timings: t(2, 3, 6) }, { latencyMs: 20, timings: t(4, 5, 12) }]);
    assert.deepEqual(x, { requests: 2, latencyMs: 15, outsideMs: 6, queueMs: 3, inferenceMs: 4, restMs: 2 });
    assert.equal(latencySplit([]), null);
  });

  it('takes the answers from p99 up as the tail and p45-p55 as the median group', () => {
    const samples = Array.from({ length: 201 }, (_, i) => ({ latencyMs: 200 - i, timings: t(0, 1, 1) }));
    const { median, p99 } = tailSplit(samples);
    assert.deepEqual([p99?.requests, p99?.latencyMs], [3, 199]); // 198, 199, 200
    assert.deepEqual([median?.requests, median?.latencyMs], [21, 100]); // 90..110
  });
});

describe('server-load bench', () => {
  it('measures both modes at every concurrency and writes a complete report', { timeout: 90_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'acm-bench-'));
    try {
      const out = join(dir, 'server-load.json');
      await run(process.execPath, [SERVER_LOAD, '--quick', '--models-dir', await tinyModelsDir(), '--concurrency', '1,3',
        '--duration', '0.4', '--warmup', '0.1', '--open-loop-duration', '0.5', '--images', '4', '--json', out],
      { timeout: 80_000, env: { PATH: process.env.PATH ?? '', ACM_INTRA_OP_THREADS: '1' } });
      const r = JSON.parse(await readFile(out, 'utf8')) as Report;
      assert.equal(r.bench, 'server-load');
      assert.equal(r.model, 'tiny-vit-acm');
      assert.deepEqual(r.cells.map((c) => `${c.mode}@${c.concurrency}`).sort(),
        ['batching-off@1', 'batching-off@3', 'batching-on@1', 'batching-on@3']);
      for (const c of r.cells) {
        const at = `${c.mode}@${c.concurrency}`;
        positive(c.throughput_rps, `${at} throughput`);
        positive(c.p50_ms, `${at} p50`);
        positive(c.p99_ms, `${at} p99`);
        positive(c.healthz_p50_ms, `${at} healthz p50`);
        assert.ok(c.p99_ms.median >= c.p50_ms.median, `${at}: p99 below p50`);
        assert.deepEqual([c.non2xx, c.errors], [0, 0], `${at}: every request answered 2xx`);
        // Where the work went, from the server's /metrics and this side's CPU time over the window.
        if (c.mode === 'batching-off') assert.equal(c.batch_size.median, 1, `${at}: one request per batch`);
        else assert.ok(c.batch_size.median >= 1 && c.batch_size.median <= c.concurrency, `${at}: batch size ${c.batch_size.median}`);
        assert.ok(c.inference_busy.median > 0 && c.inference_busy.median < 1.5, `${at}: inference busy ${c.inference_busy.median}`);
        positive(c.server_cores, `${at} server cores`);
        positive(c.client_cores, `${at} load generator cores`);
      }
      assert.deepEqual(r.open_loop.map((o) => o.mode).sort(), ['batching-off', 'batching-on']);
      for (const o of r.open_loop) {
        assert.ok(Number.isFinite(o.rate_rps) && o.rate_rps > 0);
        positive(o.achieved_rps, `${o.mode} open-loop rate`);
        positive(o.p50_ms, `${o.mode} open-loop p50`);
        positive(o.p99_over_p50, `${o.mode} p99/p50`);
        // Second by second from the server's counters: the 0.5 s loop is one interval.
        const ps = o.per_second;
        assert.ok(ps.busy.samples.length >= 1, `${o.mode}: no second measured`);
        assert.ok(ps.busy.samples.every((b) => b > 0 && b < 1.5), `${o.mode}: model busy ${ps.busy.samples.join(', ')}`);
        if (o.mode === 'batching-off') assert.ok(ps.batch_size.samples.every((b) => b === 1), `${o.mode}: one request per batch`);
        else assert.ok(ps.batch_size.samples.every((b) => b >= 1), `${o.mode}: batch size ${ps.batch_size.samples.join(', ')}`);
        assert.ok(ps.ms_per_request.samples.every((v) => v > 0) && ps.queue_wait_ms.samples.every((v) => v >= 0), `${o.mode}: per-request times`);
        // Every answer carried the server's timing headers, so both groups are split.
        for (const which of ['median', 'p99'] as const) {
          const x = o.split[which];
          assert.ok(x && x.requests >= 1 && x.latencyMs > 0, `${o.mode} ${which} split present`);
          assert.ok(Math.abs(x.outsideMs + x.queueMs + x.inferenceMs + x.restMs - x.latencyMs) < 1e-6, `${o.mode} ${which}: parts add up`);
          assert.ok(x.inferenceMs > 0 && x.queueMs >= 0, `${o.mode} ${which}: inference time read from the headers`);
        }
      }
      const targets = new Map(r.targets.map((t) => [t.name, t]));
      // Concurrency 32 was not measured: the batching target says so instead of passing or failing.
      const speedup = targets.get('batching speedup at concurrency 32');
      assert.ok(speedup, 'the batching target is listed');
      assert.deepEqual([speedup.value, speedup.pass], [null, null]);
      for (const name of ['p99/p50 at 70% of max throughput', 'GET /healthz p99 while saturated (concurrency 3)']) {
        const t = targets.get(name);
        assert.ok(t && Number.isFinite(t.value) && typeof t.pass === 'boolean', `target ${name} evaluated`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('model bench --against', () => {
  const MODEL_BENCH = fileURLToPath(new URL('../bench/model-bench.js', import.meta.url));

  it('times a second graph of the same model beside the first and finds the same outputs', { timeout: 60_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'acm-against-'));
    try {
      const bundle = join(await tinyModelsDir(), 'tiny-vit-acm');
      const out = join(dir, 'model.json');
      const { stdout } = await run(process.execPath, [MODEL_BENCH, '--quick', '--threads', '1', '--bundle', bundle, '--against', bundle,
        '--json', out], { timeout: 50_000 });
      assert.match(stdout, /--against .*tiny-vit-acm: its ACM graph/);
      const r = JSON.parse(await readFile(out, 'utf8')) as { rows: { batch: number }[];
        against: { rows: { batch: number; acm: { budget: number; ms_per_image: number; ratio: number; differing_elements: number }[] }[] } };
      assert.deepEqual(r.against.rows.map((x) => x.batch), r.rows.map((x) => x.batch));
      for (const row of r.against.rows) {
        assert.equal(row.acm.length, 4);
        for (const c of row.acm) {
          assert.ok(c.ms_per_image > 0 && c.ratio > 0, `batch ${row.batch} budget ${c.budget}: timed`);
          assert.equal(c.differing_elements, 0, `batch ${row.batch} budget ${c.budget}: the same graph gives the same outputs`);
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a bundle of another model before timing anything', async () => {
    const tiny = join(await tinyModelsDir(), 'tiny-vit-acm');
    const bundled = fileURLToPath(new URL('../../models/fashion-vit-acm', import.meta.url));
    await assert.rejects(run(process.execPath, [MODEL_BENCH, '--quick', '--bundle', bundled, '--against', tiny], { timeout: 20_000 }),
      (err: { code?: number; stderr?: string }) => err.code === 2 && /--against .*: not the same model as --bundle/.test(err.stderr ?? ''));
  });

  it('counts the elements two outputs differ in and the largest difference', () => {
    const a = new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4]), [4]);
    const b = new ort.Tensor('float32', Float32Array.from([1, 2.5, 3, 3]), [4]);
    assert.deepEqual(outputDifference(a, b), { maxAbs: 1, differing: 2 });
    assert.deepEqual(outputDifference(a, a), { maxAbs: 0, differing: 0 });
    const k = new ort.Tensor('int64', BigInt64Array.from([1n, 4n]), [2]);
    assert.deepEqual(outputDifference(k, new ort.Tensor('int64', BigInt64Array.from([1n, 2n]), [2])), { maxAbs: 2, differing: 1 });
  });
});

describe('model bench on a speech bundle', () => {
  const MODEL_BENCH = fileURLToPath(new URL('../bench/model-bench.js', import.meta.url));

  it('times the bundled speech model per window against its dense graph, on windows of real speech', { timeout: 60_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'acm-speech-model-'));
    try {
      const bundle = fileURLToPath(new URL('../../models/speech-w2v2-acm', import.meta.url));
      const out = join(dir, 'model.json');
      const { stdout } = await run(process.execPath, [MODEL_BENCH, '--quick', '--threads', '1', '--batches', '1,4', '--bundle', bundle,
        '--json', out], { timeout: 50_000 });
      assert.match(stdout, /speech-w2v2-acm: \d+ ACMs, 50 tokens, dense [\d.]+ GMACs\/window/);
      const r = JSON.parse(await readFile(out, 'utf8')) as { unit: string; rows: { batch: number; dense_ms_per_image: number;
        acm: { budget: number; ms_per_image: number; used: number; ideal: number; speedup: number; speedup_spread: [number, number];
          efficiency: number }[] }[] };
      assert.equal(r.unit, 'window');
      assert.deepEqual(r.rows.map((x) => x.batch), [1, 4]);
      for (const row of r.rows) {
        assert.ok(row.dense_ms_per_image > 0);
        const byBudget = new Map(row.acm.map((c) => [c.budget, c]));
        const full = byBudget.get(1)!, quarter = byBudget.get(0.25)!;
        // The window cap holds, and spending less leaves a higher FLOP ideal.
        assert.ok(quarter.used <= 0.25 + 1e-9 && quarter.used < full.used, `batch ${row.batch}: ${quarter.used} vs ${full.used}`);
        assert.ok(quarter.ideal > full.ideal && full.ideal > 1, `batch ${row.batch}: ideal ${quarter.ideal} vs ${full.ideal}`);
        for (const c of row.acm) {
          // The speedup is the median of per-repeat ratios: inside their range, and the efficiency follows from it.
          assert.ok(c.speedup >= c.speedup_spread[0] && c.speedup <= c.speedup_spread[1], `budget ${c.budget}: ${c.speedup} in ${c.speedup_spread.join("-")}`);
          assert.ok(Math.abs(c.efficiency - c.speedup / c.ideal) < 1e-12);
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('cuts speech windows from the committed utterance, consecutive windows different, starting over past its end', async () => {
    const { loadSpeechBundle } = await import('../server/speech/bundle.js');
    const m = (await loadSpeechBundle(fileURLToPath(new URL('../../models/speech-w2v2-acm', import.meta.url)))).manifest;
    const x = speechWindows(m, 40);
    const size = m.audio.window_samples;
    assert.deepEqual(x.dims, [40, size]);
    const data = x.data as Float32Array;
    const row = (i: number): Float32Array => data.subarray(i * size, (i + 1) * size);
    const energy = (v: Float32Array): number => v.reduce((s, a) => s + a * a, 0);
    assert.ok(energy(row(2)) > 0, 'a window inside the utterance holds sound');
    assert.notDeepEqual(row(1), row(2));
    // 40 windows are more than the utterance of a few seconds has: the batch starts over from its first window.
    const again = [...Array(40).keys()].findIndex((i) => i > 0 && row(i).every((v, j) => v === row(0)[j]!));
    assert.ok(again > 1 && again < 40, `the first window comes back at row ${again}`);
    assert.deepEqual(row(again + 1), row(1));
  });
});

describe('model profile by role', () => {
  it('sorts the nodes of an exported ACM graph into learners, gates, routing and shared work', () => {
    assert.equal(nodeRole('/layers.3/mlp/MatMul/MatMulAddFusion', 'Gemm'), 'learners');
    assert.equal(nodeRole('/layers.0/q/MatMul_2', 'MatMul'), 'learners');
    assert.equal(nodeRole('BiasGelu_token_7', 'BiasGelu'), 'learners', 'fused GELUs lose their scope');
    assert.equal(nodeRole('/layers.3/mlp/gate/gate.0/MatMul', 'MatMul'), 'gates');
    assert.equal(nodeRole('/layers.11/o/Gather_4', 'Gather'), 'routing');
    assert.equal(nodeRole('/layers.2/k/TopK', 'TopK'), 'routing');
    assert.equal(nodeRole('/layers.1/qkv/TopK', 'TopK'), 'routing', 'the cap q, k and v share');
    assert.equal(nodeRole('/layers.1/qkv/gate/MatMul_1', 'MatMul'), 'gates', 'the gate q, k and v share');
    assert.equal(nodeRole('/layers.1/q_1/MatMul_3', 'MatMul'), 'learners', 'q entered twice by the trace (floor path)');
    assert.equal(nodeRole('/layers.1/v_1/Gather', 'Gather'), 'routing');
    assert.equal(nodeRole('Squeeze_token_3', 'Squeeze'), 'routing');
    assert.equal(nodeRole('/layers.3/MatMul/MatMulScaleFusion/', 'FusedMatMul'), 'shared', 'attention scores');
    assert.equal(nodeRole('/layers.3/Softmax', 'Softmax'), 'shared');
    assert.equal(nodeRole('/conv_proj/Conv', 'Conv'), 'shared');
    assert.equal(nodeRole('/head/Gemm', 'Gemm'), 'shared');
  });

  it('counts kernel time per role over the runs after the skipped ones only', () => {
    const run = (ts: number, dur: number) => ({ cat: 'Session', name: 'model_run', ts, dur });
    const node = (ts: number, name: string, op: string, dur: number) => ({ cat: 'Node', name: `${name}_kernel_time`, ts, dur, args: { op_name: op } });
    const events = [
      run(0, 100), node(10, '/layers.0/mlp/MatMul', 'MatMul', 50), // warm-up: not counted
      run(200, 100), node(210, '/layers.0/mlp/MatMul', 'MatMul', 40), node(260, '/layers.0/mlp/Gather', 'Gather', 5),
      { cat: 'Node', name: '/layers.0/mlp/Gather_fence', ts: 270, dur: 99, args: { op_name: 'Gather' } }, // not a kernel time
      run(400, 80), node(410, '/layers.0/mlp/gate/gate.0/MatMul', 'MatMul', 3), node(420, '/layers.0/Softmax', 'Softmax', 7),
      node(430, '/layers.0/o/If', 'If', 60), // its branch's nodes have their own events: not counted twice
    ];
    const p = profileByRole(events, 1);
    assert.equal(p.runs, 2);
    assert.equal(p.total, 180);
    assert.deepEqual(p.us, { learners: 40, gates: 3, routing: 5, shared: 7 });
  });

  it('profiles a real bundle: every role is measured, and the lower budget uses less compute', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'acm-profile-'));
    try {
      const json = join(dir, 'profile.json');
      await run(process.execPath, [MODEL_PROFILE, '--bundle', join(await tinyModelsDir(), 'tiny-vit-acm'), '--batch', '4',
        '--budgets', '1,0.25', '--runs', '2', '--json', json], { timeout: 120_000 });
      const report = JSON.parse(await readFile(json, 'utf8')) as {
        batch: number; dense_ms_per_image: number;
        rows: { budget: number; used: number; ms_per_image: number; kernel_ms_per_image: Record<string, number>; speedup: number; ideal: number;
          kernels_only: number }[];
      };
      assert.equal(report.batch, 4);
      assert.ok(report.dense_ms_per_image > 0);
      assert.deepEqual(report.rows.map((r) => r.budget), [1, 0.25]);
      for (const r of report.rows) {
        for (const role of ROLES) assert.ok(r.kernel_ms_per_image[role]! > 0, `budget ${r.budget}: ${role} time measured`);
        assert.ok(r.ms_per_image > 0);
        assert.equal(r.speedup, report.dense_ms_per_image / r.ms_per_image);
        const { learners, gates, shared } = r.kernel_ms_per_image;
        assert.equal(r.kernels_only, report.dense_ms_per_image / (learners! + gates! + shared!));
      }
      assert.ok(report.rows[1]!.used < report.rows[0]!.used);
      assert.ok(report.rows[1]!.ideal > report.rows[0]!.ideal);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('model-bench chart', () => {
  const data: ModelBenchJson = {
    model: 'm<1>', threads: 2, repeats: 3,
    rows: [1, 8, 32].map((batch) => ({
      batch, dense_ms_per_image: 10 / batch, dense_spread: [9 / batch, 11 / batch],
      acm: [1, 0.5, 0.25].map((budget) => ({ budget, ms_per_image: (12 * budget) / batch, spread: [(11 * budget) / batch, (13 * budget) / batch] })),
    })),
  };

  it('draws one ACM line and one dense line per batch size, and renders to a PNG of the asked size', async () => {
    const svg = modelPlotSvg(data, 640, 400);
    assert.equal(svg.match(/<polyline class="acm"/g)?.length, 3);
    assert.equal(svg.match(/<line class="dense"/g)?.length, 3);
    assert.ok(svg.includes('m&lt;1&gt;'), 'the model name is escaped');
    for (const batch of [1, 8, 32]) assert.ok(svg.includes(`ACM, batch ${batch}`) && svg.includes(`dense, batch ${batch}`));
    const png = await sharp(Buffer.from(svg)).png().toBuffer();
    const meta = await sharp(png).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 640, 400]);
  });

  it('labels the time per image, or per window for a speech report', () => {
    assert.ok(modelPlotSvg(data).includes('>ms per image</text>'));
    const speech = modelPlotSvg({ ...data, unit: 'window' });
    assert.ok(speech.includes('>ms per window</text>') && speech.includes('time per window vs budget'));
    assert.ok(!speech.includes('per image'));
  });

  it('refuses JSON that is not a model-bench report, naming what is wrong', () => {
    assert.throws(() => checkModelBenchJson({ rows: [] }), /not a model-bench JSON/);
    const bad = structuredClone(data);
    bad.rows[1]!.acm[2]!.ms_per_image = NaN;
    assert.throws(() => checkModelBenchJson(bad), /rows\[1\]\.acm\[2\]: budget and ms_per_image must be finite/);
  });
});

describe('healthz probe thread', () => {
  // Field 19 of /proc/self/task/<tid>/stat is a thread's nice value, counted after the last ')'.
  const niceByThread = (): Map<number, number> => new Map(readdirSync('/proc/self/task').map((tid) => {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    return [Number(tid), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])];
  }));

  it('probes at the priority it was made with after the load generator lowers its own',
    { skip: process.platform !== 'linux' }, async () => {
      const server = createServer((_req, res) => res.end('ok')).listen(0, '127.0.0.1');
      await once(server, 'listening');
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const before = niceByThread();
      const base = getPriority();
      const prober = new ProbeThread();
      try {
        const first = await prober.start(url, 5).stop();
        const probeThreads = [...niceByThread().keys()].filter((tid) => !before.has(tid));
        assert.ok(probeThreads.length > 0, 'the probe thread is running');
        // What server-load --client-nice does (this file's process keeps the lower priority).
        setPriority(Math.min(base + 3, 19));
        await new Promise((r) => setTimeout(r, 60));
        const window = prober.start(url, 5);
        await new Promise((r) => setTimeout(r, 60));
        const result = await window.stop();
        assert.ok(first.latenciesMs.length + result.latenciesMs.length > 0, 'probes answered');
        const now = niceByThread();
        for (const tid of probeThreads) assert.equal(now.get(tid), base, `probe thread ${tid} kept nice ${base}`);
        assert.equal(now.get(process.pid), Math.min(base + 3, 19), 'the main thread did lower its priority');
      } finally {
        await prober.close();
        server.close();
      }
    });
});

describe('paper-size model bench (bench:paper)', () => {
  it('exports the bundle on first use with the floor path, times it, and refuses to reuse it as a plain one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'acm-paper-'));
    try {
      const bundle = join(dir, 'bundle');
      const json = join(dir, 'model.json');
      await run(process.execPath, [PAPER_MODEL, '--quick', '--dir', bundle, '--json', json], { timeout: 120_000 });
      const manifest = JSON.parse(await readFile(join(bundle, 'acm.json'), 'utf8')) as { training: { floor_path: boolean } };
      assert.equal(manifest.training.floor_path, true);
      const report = JSON.parse(await readFile(json, 'utf8')) as { rows: { batch: number; acm: { budget: number; ms_per_image: number }[] }[] };
      assert.deepEqual(report.rows.map((r) => r.batch), [1, 8]);
      assert.ok(report.rows.every((r) => r.acm.length === 4 && r.acm.every((a) => a.ms_per_image > 0)));

      // Reused while the toolchain is the one it was exported with; exported again once it is not.
      const again = await run(process.execPath, [PAPER_MODEL, '--quick', '--dir', bundle, '--json', json, '--batches', '1'], { timeout: 120_000 });
      assert.match(again.stdout, /reusing the bundle there/);
      await writeFile(join(bundle, 'toolchain.sha256'), 'an older toolchain\n');
      const stale = await run(process.execPath, [PAPER_MODEL, '--quick', '--dir', bundle, '--json', json, '--batches', '1'], { timeout: 120_000 });
      assert.match(stale.stdout, /the toolchain has changed since the bundle there was exported/);
      assert.match(stale.stdout, /exporting the tiny bundle/);
      assert.notEqual((await readFile(join(bundle, 'toolchain.sha256'), 'utf8')).trim(), 'an older toolchain');

      const plain = await run(process.execPath, [PAPER_MODEL, '--quick', '--plain', '--dir', bundle, '--json', json], { timeout: 60_000 })
        .then(() => ({ code: 0, stderr: '' }), (err: { code: number; stderr: string }) => err);
      assert.equal(plain.code, 2);
      assert.match(plain.stderr, /holds a bundle exported with the floor path; give another --dir/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('published mask loop bench (bench:peer)', () => {
  it('times the mask loop and our kernel on the same choices in PyTorch and onnxruntime, which agree', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'acm-peer-'));
    try {
      const json = join(dir, 'peer.json');
      await run(process.execPath, [PEER, '--quick', '--tokens', '128,256', '--dim', '32', '--mlp', '64', '--dir', dir, '--json', json],
        { timeout: 120_000 });
      const report = JSON.parse(await readFile(json, 'utf8')) as { shape: { dim: number; mlp: number };
        rows: { tokens: number; budget: number; used: number; mask_ms: number; grouped_ms: number; ort_ms: number; ort_max_abs_diff: number }[] };
      assert.deepEqual(report.shape.dim, 32);
      assert.deepEqual(report.rows.map((r) => [r.tokens, r.budget]), [[128, 1], [128, 0.25], [256, 1], [256, 0.25]]);
      for (const r of report.rows) {
        assert.ok(r.mask_ms > 0 && r.grouped_ms > 0 && r.ort_ms > 0, JSON.stringify(r));
        assert.ok(r.ort_max_abs_diff <= 1e-3, `onnxruntime against the mask loop: ${r.ort_max_abs_diff}`);
      }
      // Budget 1 runs every learner; below it the choices scatter around the budget.
      assert.ok(report.rows.filter((r) => r.budget === 1).every((r) => r.used === 1));
      assert.ok(report.rows.filter((r) => r.budget === 0.25).every((r) => r.used > 0.1 && r.used < 0.45), JSON.stringify(report.rows));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('machine steadiness bench (bench:steady)', () => {
  it('reports each workload second by second, relative to its own median', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'acm-steady-'));
    try {
      const json = join(dir, 'steadiness.json');
      const { stdout } = await run(process.execPath, [STEADINESS, '--quick', '--seconds', '2', '--slot-ms', '20', '--max-batch', '4',
        '--open-loop-seconds', '0.3', '--repeats', '2', '--wait-ms', '0,10000', '--json', json], { timeout: 60_000 });
      assert.match(stdout, /Rate per second, relative to the median/);
      assert.match(stdout, /The model alone under an open loop at 70% of its capacity/);
      const report = JSON.parse(await readFile(json, 'utf8')) as { seconds: number; runs: { count: number; p50_ms: number; p99_ms: number };
        rows: { workload: string; per_second: number; min: number; max: number; below_085: number; below_07: number }[];
        series: Record<string, number[]>; correlation: Record<string, number | null>;
        open_loop: { fraction: number; max_batch: number; wait_ms: number[]; repeats: { repeat: number; wait_ms: number; capacity_per_s: number;
          rate_per_s: number; items: number; p50_ms: number; p99_ms: number; p99_over_p50: number; mean_batch: number; largest_batch: number;
          busy: number }[] } };
      assert.equal(report.seconds, 2);
      assert.deepEqual(report.rows.map((r) => r.workload), ['model', 'throughput', 'latency']);
      for (const row of report.rows) {
        const series = report.series[row.workload]!;
        assert.equal(series.length, 2, row.workload);
        assert.ok(row.per_second > 0, `${row.workload} made progress`);
        // Two seconds: the median is their mean, so the two relative rates average exactly 1.
        assert.ok(Math.abs((series[0]! + series[1]!) / 2 - 1) < 1e-9, `${row.workload}: ${series.join(', ')}`);
        assert.equal(row.min, Math.min(...series));
        assert.equal(row.below_085, series.filter((v) => v < 0.85).length);
        assert.equal(row.below_07, series.filter((v) => v < 0.7).length);
      }
      assert.ok(report.runs.count > 0 && report.runs.p50_ms > 0 && report.runs.p99_ms >= report.runs.p50_ms);
      // Pearson over two points is +1 or -1 (null in JSON when a series is flat).
      for (const c of Object.values(report.correlation)) assert.ok(c === null || Math.abs(Math.abs(c) - 1) < 1e-9, String(c));

      // Every repeat runs each policy in turn.
      assert.deepEqual(report.open_loop.wait_ms, [0, 10000]);
      assert.deepEqual(report.open_loop.repeats.map((r) => [r.repeat, r.wait_ms]), [[1, 0], [1, 10000], [2, 0], [2, 10000]]);
      assert.match(stdout, /wait 0 ms: p99\/p50 median [\d.]+/);
      assert.match(stdout, /wait 10000 ms: p99\/p50 median [\d.]+/);
      for (const rep of [1, 2]) {
        const mine = report.open_loop.repeats.filter((r) => r.repeat === rep);
        assert.equal(mine[0]!.capacity_per_s, mine[1]!.capacity_per_s, 'the policies of a repeat share its arrival rate');
      }
      for (const r of report.open_loop.repeats) {
        assert.ok(r.busy > 0 && r.busy <= 1, `busy ${r.busy}`);
        assert.ok(Math.abs(r.rate_per_s - 0.7 * r.capacity_per_s) < 1e-6 * r.capacity_per_s, `rate ${r.rate_per_s} of ${r.capacity_per_s}`);
        assert.equal(r.items, Math.floor(r.rate_per_s * 0.3));
        assert.ok(r.p50_ms > 0 && r.p99_ms >= r.p50_ms && Math.abs(r.p99_over_p50 - r.p99_ms / r.p50_ms) < 1e-9);
        assert.ok(r.largest_batch >= 1 && r.largest_batch <= 4, `largest batch ${r.largest_batch} over --max-batch 4`);
        assert.ok(r.mean_batch >= 1 && r.mean_batch <= r.largest_batch);
        // A wait longer than the loop holds every batch until --max-batch items have arrived; the
        // last takes what is left.
        if (r.wait_ms === 10000) assert.equal(r.mean_batch, r.items / Math.ceil(r.items / 4), `mean batch ${r.mean_batch} of ${r.items} items`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
