// The queue owns pending requests of one model and decides when they form a batch. A batch is
// capped by tokens first (requests x tokens per request), then by request count, and is released
// when full or when its oldest request has waited maxWaitMs. Each request carries a deadline and
// an AbortSignal; either removes it from the queue, so a client that left costs no compute.
import { AcmError } from './errors.js';

export interface QueueOptions {
  readonly maxBatchSize: number;
  readonly maxBatchTokens: number;
  readonly maxWaitMs: number;
  /** Most requests waiting (not yet in a batch). */
  readonly capacity: number;
  /** Retry-After sent with queue_full, in seconds. */
  readonly retryAfterS: number;
}

export interface SubmitOptions {
  /** Cost of this request in tokens (its padded length). */
  readonly tokens: number;
  /** Milliseconds from now until the request fails with deadline_exceeded. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

type State = 'queued' | 'running' | 'done';

/** One request as the batcher sees it. */
export class Job<I, R> {
  state: State = 'queued';
  timer?: NodeJS.Timeout;
  onAbort?: () => void;

  constructor(
    readonly item: I,
    readonly tokens: number,
    /** performance.now() at submission, for queue-time accounting. */
    readonly enqueuedAt: number,
    readonly resolve: (r: R) => void,
    readonly reject: (e: Error) => void,
    readonly signal?: AbortSignal,
  ) {}

  /** Settles once; later outcomes (a batch finishing after the deadline) are dropped. */
  succeed(result: R): void {
    if (this.finish()) this.resolve(result);
  }

  fail(err: Error): void {
    if (this.finish()) this.reject(err);
  }

  private finish(): boolean {
    if (this.state === 'done') return false;
    this.state = 'done';
    clearTimeout(this.timer);
    if (this.onAbort) this.signal?.removeEventListener('abort', this.onAbort);
    return true;
  }
}

export class RequestQueue<I, R> {
  private readonly jobs: Job<I, R>[] = [];
  private waiter?: (batch: Job<I, R>[] | undefined) => void;
  private waitTimer?: NodeJS.Timeout;
  private running = 0;
  private closed = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly opts: QueueOptions) {}

  /** Requests waiting for a batch. */
  get depth(): number {
    return this.jobs.length;
  }

  /** Whether a submit now would be refused; lets transports refuse before decoding. */
  get full(): boolean {
    return this.jobs.length >= this.opts.capacity;
  }

  submit(item: I, opts: SubmitOptions): Promise<R> {
    if (this.closed) return Promise.reject(new AcmError('not_ready', 'the server is shutting down'));
    if (this.full) {
      return Promise.reject(new AcmError('queue_full',
        `queue is full (${this.opts.capacity} requests waiting); retry after ${this.opts.retryAfterS} s`, this.opts.retryAfterS));
    }
    if (opts.signal?.aborted) return Promise.reject(new AcmError('client_closed', 'the client closed the request'));
    return new Promise<R>((resolve, reject) => {
      const job = new Job<I, R>(item, opts.tokens, performance.now(), resolve, reject, opts.signal);
      job.timer = setTimeout(() => this.drop(job, new AcmError('deadline_exceeded',
        `request did not finish within its deadline of ${opts.timeoutMs} ms`)), opts.timeoutMs);
      if (opts.signal) {
        job.onAbort = () => this.drop(job, new AcmError('client_closed', 'the client closed the request'));
        opts.signal.addEventListener('abort', job.onAbort, { once: true });
      }
      this.jobs.push(job);
      this.poll();
    });
  }

  /**
   * Resolves with the next batch once one is due, or undefined once the queue is closed and
   * empty. One caller at a time (the batcher).
   */
  next(): Promise<Job<I, R>[] | undefined> {
    if (this.waiter) return Promise.reject(new Error('RequestQueue.next() already has a caller'));
    // Closed between the batcher's batches: there is no waiter for close() to wake, so answer here.
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      this.waiter = resolve;
      this.poll();
    });
  }

  /** Marks a batch's jobs finished (they are settled by the caller); wakes idle() waiters. */
  release(batch: readonly Job<I, R>[]): void {
    this.running -= batch.length;
    this.checkIdle();
  }

  /** Resolves when nothing is queued or running; used by graceful shutdown. */
  idle(): Promise<void> {
    if (this.jobs.length === 0 && this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Refuses new work, fails what is still queued, and ends the batcher's next(). */
  close(reason = 'the server is shutting down'): void {
    this.closed = true;
    for (const job of this.jobs.splice(0)) job.fail(new AcmError('not_ready', reason));
    clearTimeout(this.waitTimer);
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.(undefined);
    this.checkIdle();
  }

  private drop(job: Job<I, R>, err: AcmError): void {
    if (job.state === 'queued') {
      const at = this.jobs.indexOf(job);
      if (at >= 0) this.jobs.splice(at, 1);
      this.checkIdle();
    }
    // A running job is failed now too; its batch result is dropped when it arrives.
    job.fail(err);
  }

  /** How many queued jobs, from the head, the next batch takes, and whether it is full. */
  private plan(): { take: number; full: boolean } {
    let take = 0;
    let tokens = 0;
    for (const job of this.jobs) {
      if (take >= this.opts.maxBatchSize) return { take, full: true };
      // The first job always fits, so a request larger than the token cap still runs, alone.
      if (take > 0 && tokens + job.tokens > this.opts.maxBatchTokens) return { take, full: true };
      take++;
      tokens += job.tokens;
    }
    return { take, full: take >= this.opts.maxBatchSize || tokens >= this.opts.maxBatchTokens };
  }

  private poll(): void {
    clearTimeout(this.waitTimer);
    this.waitTimer = undefined;
    if (!this.waiter || this.jobs.length === 0) return;
    const { take, full } = this.plan();
    const oldest = this.jobs[0] as Job<I, R>;
    const waited = performance.now() - oldest.enqueuedAt;
    if (!full && waited < this.opts.maxWaitMs) {
      this.waitTimer = setTimeout(() => this.poll(), Math.max(0, this.opts.maxWaitMs - waited));
      return;
    }
    const batch = this.jobs.splice(0, take);
    for (const job of batch) job.state = 'running';
    this.running += batch.length;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter(batch);
  }

  private checkIdle(): void {
    if (this.jobs.length > 0 || this.running > 0) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}
