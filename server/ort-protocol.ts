// Messages between OrtBackend (main thread) and ort-worker (worker thread). Kept in one place so
// both sides agree on every field.
import type { ModelShape } from './backend.js';

export interface WorkerInit {
  readonly graphPath: string;
  readonly provider: 'cpu' | 'cuda';
  readonly threads: number;
  readonly graphOptimization: 'disabled' | 'basic' | 'extended' | 'all';
  /** Graph input and output names from the manifest. */
  readonly names: { readonly pixels: string; readonly budget: string; readonly logits: string; readonly counts: string };
  readonly shape: ModelShape;
}

export interface ValueInfo {
  readonly name: string;
  readonly type: string;
  /** Numbers for fixed dimensions, strings for symbolic ones. */
  readonly shape: ReadonlyArray<number | string>;
}

/** Budgets travel as float64, the graph's input type, so the cap sees the request's exact value.
 * There is no close message: the backend terminates workers, which also works on a hung one. */
export type ToWorker = { type: 'run'; id: number; batch: number; pixels: Float32Array; budgets: Float64Array };

export type FromWorker =
  | { type: 'ready'; inputs: ValueInfo[]; outputs: ValueInfo[] }
  | { type: 'fatal'; message: string }
  | { type: 'result'; id: number; logits: Float32Array; counts: Int32Array }
  | { type: 'failed'; id: number; message: string };
