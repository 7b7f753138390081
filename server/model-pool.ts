// The runtimes of one service's models: per bundle a request queue, a batcher and a backend,
// started together, tracked in the metrics, drained and stopped together at shutdown. The image
// service (inference.ts) and the speech service (speech/service.ts) each hold one pool and keep
// what differs between them: admission limits, budgets, inputs and answers.
import type { Backend, BackendInfo, BatchItem } from './backend.js';
import { Batcher, type ItemOutcome } from './batcher.js';
import type { Config } from './config.js';
import { AcmError } from './errors.js';
import type { Logger } from './logger.js';
import type { BatchStats, Metrics } from './metrics.js';
import { RequestQueue } from './queue.js';

/** Seconds a client refused for lack of room or readiness is told to wait (`Retry-After`). */
export const RETRY_AFTER_S = 1;

/** A request's place among a model's requests in flight; release() exactly once when answered. */
export interface Admission {
  readonly model: string;
  release(): void;
}

/** What the pool needs of a loaded bundle. */
export interface PoolBundle {
  readonly graphPath: string;
  readonly embeddedManifest: boolean;
  readonly manifest: { readonly name: string; readonly task: string };
}

/** What the pool needs of a model's compute accountant: the cost of one item's learner counts. */
export interface ItemCost {
  gflops(learnerCounts: Int32Array): number;
}

export interface PooledModel<B extends PoolBundle, A extends ItemCost> {
  readonly bundle: B;
  readonly manifest: B['manifest'];
  readonly queue: RequestQueue<BatchItem, ItemOutcome>;
  readonly batcher: Batcher;
  readonly backend: Backend;
  readonly accountant: A;
  info?: BackendInfo;
  /** Admitted and not yet answered: reading the body, decoding, queued or running. */
  inFlight: number;
}

export interface PoolSpec<B extends PoolBundle, A extends ItemCost> {
  /** Tokens one queued item of this bundle holds; ACM_MAX_BATCH_TOKENS must fit one. */
  tokensPerItem(bundle: B): number;
  /** What one queued item is, for the message when it does not fit ("request", "window"). */
  readonly item: string;
  accountant(bundle: B): A;
  backend(bundle: B): Backend;
}

export class ModelPool<B extends PoolBundle, A extends ItemCost> {
  private readonly models = new Map<string, PooledModel<B, A>>();
  private readonly batchListeners: ((s: BatchStats) => void)[] = [];
  private readonly shutdownHooks: (() => Promise<void>)[] = [];
  private readonly answeredWaiters: (() => void)[] = [];
  private stopped = false;

  constructor(private readonly config: Config, private readonly metrics: Metrics, private readonly log: Logger) {}

  /** Starts every bundle's runtime. Throws on the first failure, leaving nothing running. */
  async load(bundles: readonly B[], spec: PoolSpec<B, A>): Promise<void> {
    // A shutdown that came first must not be followed by runtimes starting behind its back.
    if (this.stopped) throw new AcmError('not_ready', 'the server is shutting down');
    const maxTokens = this.config.maxBatchTokens;
    for (const bundle of bundles) {
      const tokens = spec.tokensPerItem(bundle);
      if (tokens > maxTokens) {
        throw new Error(`bundle ${JSON.stringify(bundle.manifest.name)} needs ${tokens} tokens per ${spec.item} but ` +
          `ACM_MAX_BATCH_TOKENS is ${maxTokens}; raise ACM_MAX_BATCH_TOKENS to at least ${tokens}`);
      }
    }
    for (const bundle of bundles) this.add(bundle, spec);
    try {
      await Promise.all([...this.models.values()].map(async (model) => {
        model.info = await model.backend.start();
        model.batcher.start();
        this.log.info({ model: model.manifest.name, task: model.manifest.task, provider: model.info.provider,
          workers: model.info.workers, graph: model.bundle.graphPath, embeddedManifest: model.bundle.embeddedManifest },
        'model loaded');
      }));
    } catch (err) {
      // Runtimes that did start hold threads; release them so a failed load leaves nothing behind.
      await this.shutdown(0);
      throw err;
    }
  }

  get size(): number {
    return this.models.size;
  }

  /** Names of the loaded models, in load order. */
  get names(): string[] {
    return [...this.models.keys()];
  }

  all(): PooledModel<B, A>[] {
    return [...this.models.values()];
  }

  /** The model of exactly this name, if loaded. */
  get(name: string): PooledModel<B, A> | undefined {
    return this.models.get(name);
  }

  /** The named model, the first one when the name is empty; undefined when there is none. */
  find(name: string | undefined): PooledModel<B, A> | undefined {
    if (name === undefined || name === '') return this.models.values().next().value;
    return this.models.get(name);
  }

  /** Observes every executed batch of every model, after the metrics have recorded it. */
  onBatch(listener: (s: BatchStats) => void): void {
    this.batchListeners.push(listener);
  }

  /** Resolves once no model has a request in flight (admitted and not yet released). */
  private allAnswered(): Promise<void> {
    if (this.all().every((m) => m.inFlight === 0)) return Promise.resolve();
    return new Promise((resolve) => { this.answeredWaiters.push(resolve); });
  }

  /** Counts one more request in flight on the model until its release(); release twice counts once. */
  admission(model: PooledModel<B, A>): Admission {
    model.inFlight++;
    let released = false;
    return {
      model: model.manifest.name,
      release: () => {
        if (released) return;
        released = true;
        model.inFlight--;
        if (model.inFlight === 0 && this.all().every((m) => m.inFlight === 0)) {
          for (const wake of this.answeredWaiters.splice(0)) wake();
        }
      },
    };
  }

  /** Runs `hook` at shutdown, after the runtimes stop or fail to (the services' and transports' own threads, e.g. decoding). */
  onShutdown(hook: () => Promise<void>): void {
    this.shutdownHooks.push(hook);
  }

  /** Stops loading, lets queued and running items finish within graceMs, then stops the runtimes. */
  async shutdown(graceMs: number): Promise<void> {
    this.stopped = true;
    const models = this.all();
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => { timer = setTimeout(resolve, graceMs); });
    // Admitted requests may not have reached a queue yet (an image still decoding in its thread):
    // the queues close only once every admitted request is answered, or the grace period ends.
    await Promise.race([Promise.all([...models.map((m) => m.queue.idle()), this.allAnswered()]), grace]);
    clearTimeout(timer);
    try {
      for (const m of models) m.queue.close();
      await Promise.all(models.map((m) => m.backend.close()));
      await Promise.all(models.map((m) => m.batcher.stopped()));
    } finally {
      await Promise.all(this.shutdownHooks.map((h) => h()));
    }
  }

  private add(bundle: B, spec: PoolSpec<B, A>): void {
    const m = bundle.manifest;
    const queue = new RequestQueue<BatchItem, ItemOutcome>({ maxBatchSize: this.config.maxBatchSize,
      maxBatchTokens: this.config.maxBatchTokens, maxWaitMs: this.config.maxWaitMs,
      capacity: this.config.queueCapacity, retryAfterS: RETRY_AFTER_S });
    const accountant = spec.accountant(bundle);
    const backend = spec.backend(bundle);
    const batcher = new Batcher(queue, backend, { model: m.name,
      gflopsOf: (r) => accountant.gflops(r.learnerCounts),
      onBatch: (s) => {
        this.metrics.observeBatch(s);
        for (const l of this.batchListeners) l(s);
      },
      onError: (err) => this.log.error({ err, model: m.name }, 'batch failed unexpectedly') });
    const model: PooledModel<B, A> = { bundle, manifest: m, queue, batcher, backend, accountant, inFlight: 0 };
    this.models.set(m.name, model);
    this.metrics.trackModel(m.name, { queueDepth: () => queue.depth, inFlight: () => model.inFlight });
  }
}
