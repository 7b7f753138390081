// What bench:model and bench:profile feed a bundle's graphs and read back from them: the same
// fixed pseudo-random pixels (image bundles) or windows of a committed utterance (speech bundles),
// the compute the ACM graph reports for a batch, and how far two graphs' outputs are apart.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import type { ComputeAccountant } from '../server/compute.js';
import { learnerCounts } from '../server/ort-protocol.js';
import { decodeWav } from '../server/speech/audio.js';
import type { SpeechAccountant } from '../server/speech/compute.js';
import type { SpeechManifest } from '../server/speech/manifest.js';
import { WindowCutter } from '../server/speech/windows.js';
import { REPO } from './server-process.js';

/** The utterance the speech tests transcribe (a voice and a sentence the model never trained on). */
export const SPEECH_FIXTURE = join(REPO, 'test', 'fixtures', 'speech', 'utterance.wav');

/**
 * The session settings every model-level bench times a graph with: `threads` intra-op threads,
 * one node at a time, every graph optimisation, and onnxruntime's errors only (a floor-path
 * graph, or a random-weight bundle's equal zero biases, makes its optimiser warn hundreds of times
 * before the table).
 */
export function benchSessionOptions(threads: number): ort.InferenceSession.SessionOptions {
  return { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential', logSeverityLevel: 3 };
}

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

/**
 * `batch` windows [batch, window_samples] of the fixture utterance, cut as the server cuts a file,
 * in order and starting over when the utterance has fewer: real speech and pauses, so the gates
 * decide as they do when serving.
 */
export function speechWindows(m: SpeechManifest, batch: number): ort.Tensor {
  const { samples } = decodeWav(readFileSync(SPEECH_FIXTURE), m.audio.sample_rate, 600);
  const cutter = new WindowCutter(m.audio);
  cutter.push(samples);
  const windows = cutter.take(true);
  const size = m.audio.window_samples;
  const data = new Float32Array(batch * size);
  for (let i = 0; i < batch; i++) data.set(windows[i % windows.length]!, i * size);
  return new ort.Tensor('float32', data, [batch, size]);
}

/** Mean learner fraction used and GFLOPs per window of one batch of windows, from the graph's
 * counts, by the server's own accounting of a request's windows. */
export function meanSpeechCompute(accountant: SpeechAccountant, m: SpeechManifest, counts: ort.Tensor,
  batch: number, budget: number): { used: number; gflops: number } {
  const k = learnerCounts(counts.data as BigInt64Array);
  const cells = m.acms.length * m.audio.window_frames;
  const tally = accountant.tally();
  for (let i = 0; i < batch; i++) tally.add(k.subarray(i * cells, (i + 1) * cells));
  const r = tally.report(budget, 0);
  return { used: r.used, gflops: r.gflops / batch };
}
