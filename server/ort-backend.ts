// Backend over onnxruntime sessions in worker threads. Each worker holds one session of the
// model and runs one batch at a time. A batch is packed into one Float32Array and transferred to
// the worker. A worker that crashes fails only the batch it held and is replaced.
// Workers are never terminated from outside: terminate() (or process exit) while onnxruntime is
// inside a native call aborts the whole process. A worker is instead *retired*: asked to close,
// it exits by itself once its current load or run returns. A hung worker is retired and replaced
// at once, so its requests fail with deadline_exceeded and new batches go to the replacement.
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { sizeOf, type Backend, type BackendInfo, type BatchItem, type ItemResult, type ModelShape } from './backend.js';
import { modelShape, type Bundle } from './bundle.js';
import { sessionThreads, type Config } from './config.js';
import { AcmError } from './errors.js';
import type { BackendFactory } from './inference.js';
import { checkGraph } from './graph-check.js';
import { checkSpeechGraph, speechShape, type SpeechBundle } from './speech/bundle.js';
import { disableOrtTelemetry } from './ort-telemetry.js';
import { DEFAULT_TUNING, ortLogSeverity, packBatch, type FromWorker, type OrtLogSeverity, type SessionTuning, type ToWorker, type WorkerInit } from './ort-protocol.js';

export interface OrtBackendOptions {
  /** An image or a speech bundle: the runtime only needs its graph, tensor shapes and names. */
  readonly bundle: Bundle | SpeechBundle;
  readonly provider: 'cpu' | 'cuda';
  readonly threads: number;
  readonly graphOptimization: WorkerInit['graphOptimization'];
  /** Inter-op threads, execution mode, spinning, memory arena; default: onnxruntime's defaults. */
  readonly tuning?: SessionTuning;
  /** onnxruntime's own log severity (see ortLogSeverity); default 3, errors only. */
  readonly ortLogSeverity?: OrtLogSeverity;
  /** Nice value of the worker threads (see WorkerInit.nice). */
  readonly nice?: number;
  readonly workers: number;
  /** Batches handed to one worker at a time: with 2, a worker starts its next batch the moment it
   * finishes one, without waiting for this thread to read the answer and send more; default 1. */
  readonly pipelineDepth?: number;
  /** A batch running longer than this is treated as a hung worker. */
  readonly runTimeoutMs: number;
  /** How long close() waits for workers to finish their current call; default 10 s. */
  readonly closeTimeoutMs?: number;
  readonly log: Logger;
  readonly onWorkerRestart?: () => void;
  /** Worker script; tests substitute one that misbehaves on purpose. */
  readonly workerUrl?: URL;
}

interface Run {
  readonly id: number;
  readonly batch: number;
  readonly input: Float32Array;
  readonly budgets: Float64Array;
  readonly resolve: (r: ItemResult[]) => void;
  readonly reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
  settled: boolean;
}

interface Slot {
  readonly index: number;
  worker?: Worker;
  ready: boolean;
  /** Batches sent to the worker and not yet answered, in the order sent (it runs them in turn). */
  runs: Run[];
  /** Failed starts in a row, for restart back-off. */
  failures: number;
}

const MAX_RESTART_DELAY_MS = 5000;
const START_TIMEOUT_MS = 300_000;
const shuttingDown = (): AcmError => new AcmError('not_ready', 'the server is shutting down');

export class OrtBackend implements Backend {
  readonly concurrency: number;
  private readonly depth: number;
  private readonly slots: Slot[] = [];
  private readonly waiting: Run[] = [];
  /** Workers asked to close, until they exit. Past `workers` of them no replacements start, so
   * threads stuck in onnxruntime cannot pile up. */
  private readonly retiring = new Map<Worker, { exited: Promise<void>; resolve: () => void }>();
  private readonly shape: ModelShape;
  private readonly name: string;
  private nextId = 1;
  private closing = false;
  private started?: { resolve: (i: BackendInfo) => void; reject: (e: Error) => void; pending: number; timer: NodeJS.Timeout };

  constructor(private readonly opts: OrtBackendOptions) {
    this.depth = Math.max(1, opts.pipelineDepth ?? 1);
    this.concurrency = opts.workers * this.depth;
    this.shape = isSpeech(opts.bundle) ? speechShape(opts.bundle.manifest) : modelShape(opts.bundle);
    this.name = opts.bundle.manifest.name;
    // Before any worker creates a session (see ort-telemetry.ts).
    disableOrtTelemetry();
  }

  start(): Promise<BackendInfo> {
    return new Promise((resolve, reject) => {
      // Bounded start: a session that never finishes loading fails start-up instead of hanging it.
      const timer = setTimeout(() => this.startFailed(new Error(`bundle ${JSON.stringify(this.name)}: ` +
        `inference workers did not load the graph within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS);
      this.started = { resolve, reject, pending: this.opts.workers, timer };
      for (let i = 0; i < this.opts.workers; i++) {
        const slot: Slot = { index: i, ready: false, runs: [], failures: 0 };
        this.slots.push(slot);
        this.spawn(slot);
      }
    });
  }

  run(items: readonly BatchItem[]): Promise<ItemResult[]> {
    if (this.closing) return Promise.reject(shuttingDown());
    let input: Float32Array;
    let budgets: Float64Array;
    try {
      ({ input, budgets } = packBatch(items, this.shape));
    } catch (err) {
      return Promise.reject(new AcmError('internal', (err as Error).message));
    }
    return new Promise((resolve, reject) => {
      const run: Run = { id: this.nextId++, batch: items.length, input, budgets, resolve, reject, settled: false };
      run.timer = setTimeout(() => this.timeOut(run), this.opts.runTimeoutMs);
      this.waiting.push(run);
      this.dispatch();
    });
  }

  /** Fails queued and running batches, then waits (bounded) for every worker to exit by itself. */
  async close(): Promise<void> {
    this.closing = true;
    this.takeStart()?.reject(shuttingDown());
    for (const run of this.waiting.splice(0)) this.settle(run, shuttingDown());
    for (const slot of this.slots) {
      for (const run of slot.runs) this.settle(run, shuttingDown());
      this.retire(slot);
    }
    const exits = [...this.retiring.values()].map((r) => r.exited);
    if (exits.length === 0) return;
    const limit = this.opts.closeTimeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), limit); });
    if (await Promise.race([Promise.all(exits).then(() => false), timedOut])) {
      this.opts.log.error({ model: this.name, workers: this.retiring.size }, `inference workers still inside onnxruntime ` +
        `after ${limit} ms; leaving them (stopping the process now may abort it)`);
    }
    clearTimeout(timer);
  }

  private spawn(slot: Slot): void {
    const b = this.opts.bundle;
    const m = b.manifest;
    const input = isSpeech(b) ? b.manifest.inputs.audio : b.manifest.inputs.pixels;
    const init: WorkerInit = {
      graphPath: b.graphPath, provider: this.opts.provider, threads: this.opts.threads,
      graphOptimization: this.opts.graphOptimization, tuning: this.opts.tuning ?? DEFAULT_TUNING, shape: this.shape,
      ortLogSeverity: this.opts.ortLogSeverity ?? 3,
      nice: this.opts.nice ?? 0,
      names: { input, budget: m.inputs.budget, logits: m.outputs.logits, counts: m.outputs.learner_counts },
    };
    const worker = new Worker(this.opts.workerUrl ?? new URL('./ort-worker.js', import.meta.url), { workerData: init });
    slot.worker = worker;
    slot.ready = false;
    worker.on('message', (msg: FromWorker) => this.onMessage(slot, worker, msg));
    worker.on('error', (err) => this.opts.log.error({ model: this.name, worker: slot.index, err }, 'inference worker crashed'));
    worker.on('exit', (code) => this.onExit(slot, worker, code));
    // Work in flight is held by requests (and their timers), not by workers: a retired worker
    // stuck in onnxruntime, or a backend never closed, must not keep the process alive. After the
    // listeners: adding a 'message' listener refs the worker again.
    worker.unref();
  }

  /** Detaches the slot's worker and asks it to exit once its current native call returns. Batches
   * it held and had not answered fail: their buffers went to that worker. */
  private retire(slot: Slot): void {
    const worker = slot.worker;
    slot.worker = undefined;
    slot.ready = false;
    for (const run of slot.runs.splice(0)) {
      this.settle(run, new AcmError('internal', 'the inference worker holding this batch was replaced'));
    }
    if (!worker) return;
    let resolve = (): void => undefined;
    const exited = new Promise<void>((r) => { resolve = r; });
    this.retiring.set(worker, { exited, resolve });
    const msg: ToWorker = { type: 'close' };
    worker.postMessage(msg);
  }

  private onMessage(slot: Slot, worker: Worker, msg: FromWorker): void {
    if (slot.worker !== worker) return;
    switch (msg.type) {
      case 'ready': {
        const b = this.opts.bundle;
        const problems = isSpeech(b) ? checkSpeechGraph(b.manifest, msg.inputs, msg.outputs) : checkGraph(b.manifest, msg.inputs, msg.outputs);
        if (problems.length > 0) {
          this.startFailed(new Error(`bundle ${JSON.stringify(this.name)}: graph does not match acm.json: ${problems.join('; ')}`));
          return;
        }
        if (msg.niceError !== undefined) {
          this.opts.log.warn({ model: this.name, worker: slot.index, nice: this.opts.nice, err: msg.niceError },
            'inference worker runs at the server\'s priority: setting its nice value failed');
        }
        slot.ready = true;
        slot.failures = 0;
        if (this.started && --this.started.pending === 0) {
          clearTimeout(this.started.timer);
          this.started.resolve({ provider: this.opts.provider, workers: this.opts.workers });
          this.started = undefined;
        }
        this.dispatch();
        return;
      }
      case 'fatal':
        // The worker exits by itself after reporting; onExit restarts it unless start-up failed.
        if (this.started) this.startFailed(new Error(`bundle ${JSON.stringify(this.name)}: ${msg.message}`));
        else this.opts.log.error({ model: this.name, worker: slot.index }, msg.message);
        return;
      case 'result':
      case 'failed': {
        const at = slot.runs.findIndex((r) => r.id === msg.id);
        const run = at >= 0 ? slot.runs.splice(at, 1)[0] : undefined;
        if (run) {
          if (msg.type === 'failed') this.settle(run, new AcmError('internal', `inference failed: ${msg.message}`));
          else this.finish(run, msg.logits, msg.counts);
        }
        this.dispatch();
        return;
      }
    }
  }

  private onExit(slot: Slot, worker: Worker, code: number): void {
    const retired = this.retiring.get(worker);
    if (retired) {
      this.retiring.delete(worker);
      retired.resolve();
      this.refill();
      return;
    }
    if (slot.worker !== worker) return;
    slot.worker = undefined;
    slot.ready = false;
    for (const run of slot.runs.splice(0)) {
      this.settle(run, new AcmError('internal', `inference worker exited (code ${code}) while running this batch`));
    }
    if (this.closing) return;
    if (this.started) {
      this.startFailed(new Error(`bundle ${JSON.stringify(this.name)}: inference worker exited during start-up (code ${code})`));
      return;
    }
    slot.failures++;
    const delay = Math.min(MAX_RESTART_DELAY_MS, 50 * 2 ** slot.failures);
    this.opts.log.warn({ model: this.name, worker: slot.index, code, delayMs: delay }, 'restarting inference worker');
    this.opts.onWorkerRestart?.();
    setTimeout(() => this.refill(), delay).unref();
  }

  /** Gives every empty slot a new worker, unless more retired workers than slots still run. */
  private refill(): void {
    for (const slot of this.slots) {
      if (this.closing || this.retiring.size > this.opts.workers) return;
      if (slot.worker === undefined) this.spawn(slot);
    }
  }

  /** The pending start(), if any, detached so it settles exactly once. */
  private takeStart(): { reject: (e: Error) => void } | undefined {
    const started = this.started;
    this.started = undefined;
    clearTimeout(started?.timer);
    return started;
  }

  private startFailed(err: Error): void {
    const started = this.takeStart();
    void this.close().finally(() => started?.reject(err));
  }

  private dispatch(): void {
    // Idle workers first, then a second batch for a busy one (pipelineDepth > 1).
    for (let held = 0; held < this.depth; held++) {
      for (const slot of this.slots) {
        if (this.waiting.length === 0) return;
        if (!slot.ready || slot.runs.length !== held || slot.worker === undefined) continue;
        const run = this.waiting.shift() as Run;
        slot.runs.push(run);
        const msg: ToWorker = { type: 'run', id: run.id, batch: run.batch, input: run.input, budgets: run.budgets };
        try {
          slot.worker.postMessage(msg, [run.input.buffer as ArrayBuffer, run.budgets.buffer as ArrayBuffer]);
        } catch (err) {
          // dispatch() also runs from worker events, where a throw would take the process down.
          slot.runs.pop();
          this.settle(run, new AcmError('internal', `could not hand the batch to a worker: ${(err as Error).message}`));
        }
      }
    }
  }

  private finish(run: Run, logits: Float32Array, counts: Int32Array): void {
    const { acms, tokens } = this.shape;
    const classes = sizeOf(this.shape.logits);
    const perCounts = acms * tokens;
    if (logits.length !== run.batch * classes || counts.length !== run.batch * perCounts) {
      this.settle(run, new AcmError('internal', `graph returned ${logits.length} logits and ${counts.length} learner counts ` +
        `for a batch of ${run.batch}; the manifest implies ${run.batch * classes} and ${run.batch * perCounts}`));
      return;
    }
    const results: ItemResult[] = [];
    for (let i = 0; i < run.batch; i++) {
      results.push({ logits: logits.subarray(i * classes, (i + 1) * classes),
        learnerCounts: counts.subarray(i * perCounts, (i + 1) * perCounts) });
    }
    this.settle(run, results);
  }

  private settle(run: Run, outcome: ItemResult[] | Error): void {
    if (run.settled) return;
    run.settled = true;
    clearTimeout(run.timer);
    if (outcome instanceof Error) run.reject(outcome);
    else run.resolve(outcome);
  }

  /** A run past its time: if a worker holds it, that worker is hung; it is retired and replaced. */
  private timeOut(run: Run): void {
    const queued = this.waiting.indexOf(run);
    if (queued >= 0) this.waiting.splice(queued, 1);
    this.settle(run, new AcmError('deadline_exceeded', `inference did not finish within ${this.opts.runTimeoutMs} ms`));
    const slot = this.slots.find((s) => s.runs.includes(run));
    if (!slot) return;
    this.opts.log.error({ model: this.name, worker: slot.index }, 'inference worker hung; replacing it');
    this.retire(slot);
    this.opts.onWorkerRestart?.();
    this.refill();
  }
}

function isSpeech(b: Bundle | SpeechBundle): b is SpeechBundle {
  return b.manifest.task === 'speech-recognition';
}

/** One OrtBackend per bundle, configured from the process configuration. */
export function ortBackends(config: Config, log: Logger, onWorkerRestart?: (model: string) => void): BackendFactory & ((b: SpeechBundle) => Backend) {
  const threads = sessionThreads(config);
  return (bundle: Bundle | SpeechBundle) => new OrtBackend({
    bundle, provider: config.executionProvider, threads, graphOptimization: config.graphOptimization,
    tuning: { interOpThreads: config.interOpThreads, executionMode: config.executionMode,
      intraOpSpinning: config.intraOpSpinning, cpuMemArena: config.cpuMemArena },
    ortLogSeverity: ortLogSeverity(config.logLevel),
    nice: config.inferenceNice, workers: config.workers, pipelineDepth: config.pipelineDepth, runTimeoutMs: config.requestTimeoutMs, log,
    ...(onWorkerRestart ? { onWorkerRestart: () => onWorkerRestart(bundle.manifest.name) } : {}),
  });
}
