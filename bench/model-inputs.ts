// What bench:model and bench:profile both feed an image bundle's graphs and read back from them:
// the same fixed pseudo-random pixels, the compute the ACM graph reports for a batch, and how far
// two graphs' outputs are apart.
import * as ort from 'onnxruntime-node';
import type { ComputeAccountant } from '../server/compute.js';
import { learnerCounts } from '../server/ort-protocol.js';

/** A [batch, channels, height, width] float tensor of fixed pseudo-random values in [-1, 1). */
export function seededPixels(batch: number, channels: number, height: number, width: number): ort.Tensor {
  let seed = 12345;
  return new ort.Tensor('float32', Float32Array.from({ length: batch * channels * height * width }, () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 1073741824 - 1;
  }), [batch, channels, height, width]);
}

/** Mean learner fraction used and GFLOPs per image of one batch, from the graph's learner counts. */
export function meanCompute(accountant: ComputeAccountant, counts: ort.Tensor, batch: number, cells: number,
  budget: number): { used: number; gflops: number } {
  const k = learnerCounts(counts.data as BigInt64Array);
  let used = 0, gflops = 0;
  for (let i = 0; i < batch; i++) {
    const r = accountant.report(k.subarray(i * cells, (i + 1) * cells), budget);
    used += r.used; gflops += r.gflops;
  }
  return { used: used / batch, gflops: gflops / batch };
}

/** The largest absolute difference between two outputs and how many elements differ at all. */
export function outputDifference(a: ort.Tensor, b: ort.Tensor): { maxAbs: number; differing: number } {
  const x = a.data as ArrayLike<number | bigint>, y = b.data as ArrayLike<number | bigint>;
  if (x.length !== y.length) return { maxAbs: Infinity, differing: Math.max(x.length, y.length) };
  let maxAbs = 0, differing = 0;
  for (let i = 0; i < x.length; i++) {
    if (x[i] === y[i]) continue;
    differing++;
    maxAbs = Math.max(maxAbs, Math.abs(Number(x[i]) - Number(y[i])));
  }
  return { maxAbs, differing };
}
