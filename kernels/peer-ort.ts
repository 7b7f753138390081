// The grouped kernel as the server runs it (onnxruntime, the exported graph of kernels/emit_bench.py)
// on exactly the inputs and token choices kernels/peer_bench.py timed in PyTorch, so the served
// kernel, the same kernel in PyTorch and the reference mask loop appear side by side.
//
//   npm run bench:peer        (runs peer_bench.py first)
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { median, spread, timed } from '../bench/stats.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DIR = join(REPO, '.cache', 'bench');

/** A file's bytes as their own ArrayBuffer (small reads share Node's buffer pool). */
function bytes(path: string): ArrayBuffer {
  const b = readFileSync(path);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
}

interface PeerRow { tokens: number; budget: number; used: number; mask_ms: number; grouped_ms: number }

async function main(): Promise<void> {
  const peer = JSON.parse(readFileSync(join(DIR, 'peer.json'), 'utf8')) as { dim: number; mlp: number; rows: PeerRow[] };
  const shape = JSON.parse(readFileSync(join(DIR, 'shape.json'), 'utf8')) as { dim: number; mlp: number; tokens_per_request: number };
  if (shape.dim !== peer.dim || shape.mlp !== peer.mlp) throw new Error('emit_bench and peer_bench shapes differ; rerun both with the same --dim/--mlp');
  if (!existsSync(join(DIR, 'acm_ffn.onnx'))) throw new Error('run npm run bench first to emit acm_ffn.onnx');
  const session = await ort.InferenceSession.create(join(DIR, 'acm_ffn.onnx'),
    { intraOpNumThreads: 2, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential' });
  const t = shape.tokens_per_request;
  console.log('tokens | budget | used  | mask loop (torch) | grouped (torch) | grouped (onnxruntime, served) | served vs mask loop');
  const out = [];
  for (const row of peer.rows) {
    const stem = join(DIR, 'peer-inputs', `${row.tokens}-${row.budget % 1 === 0 ? row.budget.toFixed(1) : row.budget}`);
    const x = new Float32Array(bytes(`${stem}.x.f32`));
    const k = new BigInt64Array(bytes(`${stem}.k.i64`));
    const ref = new Float32Array(bytes(`${stem}.y.f32`));
    const r = row.tokens / t;
    // Budget 1 makes the cap a no-op, so the graph runs exactly the given choices.
    const feeds = { x: new ort.Tensor('float32', x, [r, t, peer.dim]), desired: new ort.Tensor('int64', k, [r, t]),
      budget: new ort.Tensor('float64', new Float64Array(r).fill(1), [r]) };
    const times: number[] = [];
    let worst = 0;
    for (let rep = -1; rep < 7; rep++) {
      const [ms, res] = await timed(() => session.run(feeds));
      if (rep < 0) {
        const y = res.y!.data as Float32Array;
        for (let i = 0; i < y.length; i++) worst = Math.max(worst, Math.abs(y[i]! - ref[i]!));
      } else times.push(ms);
    }
    if (worst > 1e-3) throw new Error(`onnxruntime and the PyTorch mask loop disagree by ${worst}`);
    const ms = median(times);
    out.push({ ...row, ort_ms: ms, ort_spread: spread(times) });
    console.log(`${String(row.tokens).padStart(6)} | ${row.budget.toFixed(2).padStart(6)} | ${row.used.toFixed(3)} | ` +
      `${row.mask_ms.toFixed(2).padStart(17)} | ${row.grouped_ms.toFixed(2).padStart(15)} | ${ms.toFixed(2).padStart(29)} | ${(row.mask_ms / ms).toFixed(2)}x`);
  }
  writeFileSync(join(DIR, 'peer-ort.json'), JSON.stringify(out, null, 2));
  await session.release();
}

await main();
