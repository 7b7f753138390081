// Messages between OrtBackend (main thread) and ort-worker (worker thread). Kept in one place so
// both sides agree on every field.
import { endianness } from 'node:os';
import { sizeOf, type BatchItem, type ModelShape } from './backend.js';
import type { LogLevel } from './config.js';

export interface WorkerInit {
  readonly graphPath: string;
  readonly provider: 'cpu' | 'cuda';
  readonly threads: number;
  readonly graphOptimization: 'disabled' | 'basic' | 'extended' | 'all';
  readonly tuning: SessionTuning;
  /** onnxruntime's log severity for the session: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal. */
  readonly ortLogSeverity: OrtLogSeverity;
  /** Nice value the worker thread sets on itself before onnxruntime starts its threads (0: unchanged). */
  readonly nice?: number;
  /** Graph input and output names from the manifest. */
  readonly names: { readonly input: string; readonly budget: string; readonly logits: string; readonly counts: string };
  readonly shape: ModelShape;
}

export type OrtLogSeverity = 0 | 1 | 2 | 3 | 4;

/**
 * onnxruntime writes its own log lines to stderr, outside the server's JSON log. Its warnings only
 * follow debug and trace: they are about its optimiser (a floor-path graph, whose If branches read
 * initializers it cannot merge, gives several per session), not about requests. Its errors show
 * at every level but fatal and silent; a failed session also comes back as an exception, which the server logs.
 */
export function ortLogSeverity(level: LogLevel): OrtLogSeverity {
  switch (level) {
    case 'trace': return 1;
    case 'debug': return 2;
    case 'fatal': case 'silent': return 4;
    default: return 3;
  }
}

/** onnxruntime session settings beyond threads and optimisation level (server/config.ts documents each). */
export interface SessionTuning {
  readonly interOpThreads: number;
  readonly executionMode: 'sequential' | 'parallel';
  readonly intraOpSpinning: boolean;
  readonly cpuMemArena: boolean;
}

/** onnxruntime's own defaults, which the server's configuration defaults keep. */
export const DEFAULT_TUNING: SessionTuning = Object.freeze({
  interOpThreads: 1, executionMode: 'sequential', intraOpSpinning: true, cpuMemArena: true,
});

export interface ValueInfo {
  readonly name: string;
  readonly type: string;
  /** Numbers for fixed dimensions, strings for symbolic ones. */
  readonly shape: ReadonlyArray<number | string>;
}

export type ToWorker =
  /** Budgets travel as float64, the graph's input type, so the cap sees the request's exact value. */
  | { type: 'run'; id: number; batch: number; input: Float32Array; budgets: Float64Array }
  /** Exit once the current load or run returns: terminating a thread inside onnxruntime aborts the process. */
  | { type: 'close' };

export type FromWorker =
  /** niceError: why the worker could not set WorkerInit.nice (it then runs at the server's priority). */
  | { type: 'ready'; inputs: ValueInfo[]; outputs: ValueInfo[]; niceError?: string }
  | { type: 'fatal'; message: string }
  | { type: 'result'; id: number; logits: Float32Array; counts: Int32Array }
  | { type: 'failed'; id: number; message: string };

/** One Float32Array for the whole batch ([B, ...shape.input]) and one Float64Array of budgets, both transferable. */
export function packBatch(items: readonly BatchItem[], shape: ModelShape): { input: Float32Array; budgets: Float64Array } {
  const per = sizeOf(shape.input);
  const input = new Float32Array(items.length * per);
  const budgets = new Float64Array(items.length);
  items.forEach((item, i) => {
    if (item.input.length !== per) throw new Error(`input tensor has ${item.input.length} values; expected ${per}`);
    input.set(item.input, i * per);
    budgets[i] = item.budget;
  });
  return { input, budgets };
}

const LITTLE_ENDIAN = endianness() === 'LE';

/**
 * The graph's int64 learner counts as an Int32Array. Counts lie in [0, N], so on a little-endian
 * machine each value is the low half of its 8 bytes, read through an Int32 view without creating
 * a BigInt per value (a batch of 32 of the bundled model holds 32,000 of them); any value the low
 * half cannot hold falls back to converting every value.
 */
export function learnerCounts(raw: BigInt64Array): Int32Array<ArrayBuffer> {
  const counts = new Int32Array(raw.length);
  if (LITTLE_ENDIAN) {
    const words = new Int32Array(raw.buffer, raw.byteOffset, raw.length * 2);
    let fits = true;
    for (let i = 0; i < raw.length; i++) {
      const low = words[2 * i]!;
      if (words[2 * i + 1] !== (low < 0 ? -1 : 0)) {
        fits = false;
        break;
      }
      counts[i] = low;
    }
    if (fits) return counts;
  }
  for (let i = 0; i < raw.length; i++) counts[i] = Number(raw[i]);
  return counts;
}
