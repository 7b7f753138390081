// The loop between a model's queue and its backend: takes each due batch, runs it, hands every
// request its own result, and records what the batch cost. It keeps at most
// backend.concurrency batches in flight so work waits in the queue, where deadlines, aborts and
// the capacity bound apply, rather than inside the runtime.
import type { Backend, BatchItem, ItemResult } from './backend.js';
import { toAcmError } from './errors.js';
import type { BatchStats } from './metrics.js';
import type { Job, RequestQueue } from './queue.js';

/** What one request gets back from its batch. */
export interface ItemOutcome {
  readonly result: ItemResult;
  /** From submission to the batch starting, in ms. */
  readonly queueMs: number;
  /** Backend time of the batch, in ms. */
  readonly inferenceMs: number;
  /** Requests in the batch that served this one. */
  readonly batchSize: number;
}

export interface BatcherOptions {
  readonly model: string;
  /** GFLOPs of one result, for batch cost accounting. */
  readonly gflopsOf: (r: ItemResult) => number;
  readonly onBatch?: (stats: BatchStats) => void;
  readonly onError?: (err: unknown) => void;
}

/** Answers of one batch settled before the event loop gets a turn (I/O, timers, other requests). */
const ANSWERS_PER_TURN = 2;

export class Batcher {
  private readonly inFlight = new Set<Promise<void>>();
  private readonly delivering = new Set<Promise<void>>();
  private loopDone?: Promise<void>;
  private readonly listeners: ((s: BatchStats) => void)[] = [];

  constructor(
    private readonly queue: RequestQueue<BatchItem, ItemOutcome>,
    private readonly backend: Backend,
    private readonly opts: BatcherOptions,
  ) {
    if (opts.onBatch) this.listeners.push(opts.onBatch);
  }

  /** Adds an observer of every executed batch (metrics, tests). */
  onBatch(listener: (s: BatchStats) => void): void {
    this.listeners.push(listener);
  }

  start(): void {
    this.loopDone ??= this.loop();
  }

  /** Resolves when the queue is closed and every batch in flight has finished. */
  async stopped(): Promise<void> {
    await this.loopDone;
    await Promise.all(this.inFlight);
    await Promise.all(this.delivering);
  }

  private async loop(): Promise<void> {
    for (;;) {
      while (this.inFlight.size >= Math.max(1, this.backend.concurrency)) await Promise.race(this.inFlight);
      const batch = await this.queue.next();
      if (batch === undefined) return;
      const running = this.execute(batch).catch((err: unknown) => this.opts.onError?.(err));
      this.inFlight.add(running);
      void running.finally(() => this.inFlight.delete(running));
    }
  }

  private async execute(batch: Job<BatchItem, ItemOutcome>[]): Promise<void> {
    // Requests that expired or were abandoned between forming and running cost nothing.
    const live = batch.filter((j) => j.state === 'running');
    let delivery: Promise<void> | undefined;
    try {
      if (live.length === 0) return;
      const started = performance.now();
      let results: ItemResult[];
      try {
        results = await this.backend.run(live.map((j) => j.item));
      } catch (err) {
        const e = toAcmError(err);
        for (const job of live) job.fail(e);
        return;
      }
      const inferenceMs = performance.now() - started;
      let gflops = 0;
      for (const result of results.slice(0, live.length)) gflops += this.opts.gflopsOf(result);
      const stats: BatchStats = { model: this.opts.model, size: live.length, tokens: live.reduce((s, j) => s + j.tokens, 0),
        gflops, durationMs: inferenceMs };
      for (const listener of this.listeners) listener(stats);
      // The backend is free for the next batch while this one's answers go out.
      delivery = this.deliver(live, results, started, inferenceMs);
      this.delivering.add(delivery);
    } finally {
      if (delivery === undefined) {
        this.queue.release(batch);
      } else {
        const d = delivery;
        void d.finally(() => {
          this.delivering.delete(d);
          this.queue.release(batch);
        });
      }
    }
  }

  /**
   * Hands each request its result, ANSWERS_PER_TURN at a time with a turn of the event loop in
   * between: each answer is encoded and written on this thread as soon as its promise settles,
   * and a whole batch in one go would hold the loop (and a /healthz probe) for all of them.
   */
  private async deliver(live: Job<BatchItem, ItemOutcome>[], results: ItemResult[], started: number, inferenceMs: number): Promise<void> {
    for (let i = 0; i < live.length; i++) {
      if (i > 0 && i % ANSWERS_PER_TURN === 0) await new Promise<void>((r) => setImmediate(r));
      const job = live[i]!;
      const result = results[i];
      if (result === undefined) job.fail(toAcmError(new Error('backend returned fewer results than items')));
      else job.succeed({ result, queueMs: started - job.enqueuedAt, inferenceMs, batchSize: live.length });
    }
  }
}
