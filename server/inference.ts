// The one inference service every transport calls. It owns the image models (a model pool:
// queue, batcher and backend each), admits or refuses requests, decodes images, and turns a batch
// result into the answer: top-k labels, compute report and timings. Transports only parse and encode.
import type { Backend } from './backend.js';
import type { Bundle } from './bundle.js';
import { ComputeAccountant, type ComputeReport } from './compute.js';
import type { Config } from './config.js';
import { AcmError, shown } from './errors.js';
import { imageDecoder, type ImageDecoder } from './image-decoder.js';
import type { Logger } from './logger.js';
import type { QualityPoint } from './manifest-fields.js';
import type { ImageManifest } from './manifest.js';
import type { BatchStats, Metrics } from './metrics.js';
import { ModelPool, RETRY_AFTER_S, type Admission, type PooledModel } from './model-pool.js';
import { checkBudget, checkTopK } from './params.js';

export type { Admission } from './model-pool.js';

export interface ClassifyOptions {
  readonly budget?: number;
  readonly topK?: number;
  readonly signal?: AbortSignal;
  /** performance.now() when the request arrived; the deadline and total time count from it. */
  readonly arrivedAt?: number;
  /** From admit(), when the transport admitted the request before reading its body. */
  readonly admission?: Admission;
}

export interface Prediction { label: string; score: number }

/** What a transport hands to infer(): encoded image bytes, or a tensor already laid out per the manifest. */
export type InferInput =
  | { readonly image: Buffer }
  /** CHW floats, already normalised ((byte / 255 - mean) / std), C*H*W values. */
  | { readonly pixels: Float32Array };

/** The full output of one request, for transports that expose tensors (KServe v2). */
export interface InferResult {
  model: string;
  /** Softmax over every class, manifest label order. */
  probabilities: Float64Array;
  /** Per token (class token included): cost-weighted fraction of its learners that ran. */
  tokenFractions: Float64Array;
  compute: ComputeReport;
  timings: { queueMs: number; inferenceMs: number; totalMs: number };
  batchSize: number;
}

export interface ClassifyResult {
  model: string;
  predictions: Prediction[];
  compute: ComputeReport;
  timings: { queueMs: number; inferenceMs: number; totalMs: number };
  /** Requests in the batch that served this one. */
  batchSize: number;
}

export interface ModelInfo {
  name: string;
  task: 'image-classification';
  labels: readonly string[];
  input: ImageManifest['image'];
  budget_floor: number;
  default_budget: number;
  quality: readonly QualityPoint[];
}

type Model = PooledModel<Bundle, ComputeAccountant>;

export type BackendFactory = (bundle: Bundle) => Backend;

const DEFAULT_TOP_K = 5;

export class InferenceService {
  private readonly pool: ModelPool<Bundle, ComputeAccountant>;
  /** Images are decoded here, off the HTTP thread unless ACM_DECODE_THREADS=0. */
  private readonly decoder: ImageDecoder;
  private isReady = false;

  constructor(private readonly config: Config, private readonly metrics: Metrics, log: Logger) {
    this.pool = new ModelPool(config, metrics, log);
    this.decoder = imageDecoder(config.decodeThreads, config.directPng);
    this.pool.onShutdown(() => this.decoder.close());
  }

  /** Starts every model's runtime; the service is ready once all run. Throws on the first failure. */
  async load(bundles: readonly Bundle[], backendFor: BackendFactory): Promise<void> {
    await this.pool.load(bundles, { item: 'request', tokensPerItem: (b) => b.manifest.tokens.count,
      accountant: (b) => new ComputeAccountant(b.manifest), backend: backendFor });
    this.isReady = this.pool.size > 0;
  }

  get ready(): boolean {
    return this.isReady;
  }

  /** Observes every executed batch of every model. */
  onBatch(listener: (s: BatchStats) => void): void {
    this.pool.onBatch(listener);
  }

  listModels(): ModelInfo[] {
    return this.pool.all().map(({ manifest: m, accountant }) => ({
      name: m.name, task: m.task, labels: m.labels, input: m.image, budget_floor: accountant.floor,
      default_budget: this.defaultBudget(m), quality: m.quality,
    }));
  }

  /** The loaded image models' names, by name. */
  get modelNames(): readonly string[] {
    return this.pool.names;
  }

  /** Whether an image model of this name is loaded. */
  serves(name: string): boolean {
    return this.pool.get(name) !== undefined;
  }

  /** A request's deadline from its arrival (ACM_REQUEST_TIMEOUT_MS): its body must have come by then too. */
  get requestTimeoutMs(): number {
    return this.config.requestTimeoutMs;
  }

  /**
   * Refuses what can be refused before the body is read: not ready, unknown model, no room. Room
   * counts every admitted request (bodies being read and images being decoded hold memory before
   * they reach the queue): at most the queue capacity plus the batches that can run at once.
   */
  admit(modelName: string | undefined): Admission {
    if (!this.isReady) throw new AcmError('not_ready', 'models are still loading; retry shortly', RETRY_AFTER_S);
    const model = this.resolve(modelName);
    const limit = this.config.queueCapacity + this.config.maxBatchSize * Math.max(1, model.backend.concurrency);
    if (model.queue.full || model.inFlight >= limit) {
      throw new AcmError('queue_full', `model ${JSON.stringify(model.manifest.name)} has no room: ${model.queue.depth} ` +
        `requests queued (capacity ${this.config.queueCapacity}), ${model.inFlight} in flight (limit ${limit}); ` +
        `retry after ${RETRY_AFTER_S} s`, RETRY_AFTER_S);
    }
    return this.pool.admission(model);
  }

  /** Requests admitted and not yet answered, per model; for metrics. */
  inFlight(model: string): number {
    return this.pool.get(model)?.inFlight ?? 0;
  }

  /** Requests waiting in a model's queue now (-1 for a model not loaded). */
  queueDepth(model: string): number {
    return this.pool.get(model)?.queue.depth ?? -1;
  }

  async classify(modelName: string | undefined, image: Buffer, opts: ClassifyOptions = {}): Promise<ClassifyResult> {
    const admission = opts.admission ?? this.admit(modelName);
    try {
      const model = this.resolve(admission.model);
      const labels = model.manifest.labels;
      // Checked before the image is decoded or queued: a bad top_k costs no inference.
      const topK = checkTopK(opts.topK ?? Math.min(DEFAULT_TOP_K, labels.length), labels.length);
      const r = await this.run(model, { image }, opts);
      return { model: r.model, predictions: topOf(r.probabilities, labels, topK), compute: r.compute,
        timings: r.timings, batchSize: r.batchSize };
    } finally {
      if (!opts.admission) admission.release();
    }
  }

  /** One request through the same admission, queue and batcher as classify, with the full outputs. */
  async infer(modelName: string | undefined, input: InferInput, opts: ClassifyOptions = {}): Promise<InferResult> {
    const admission = opts.admission ?? this.admit(modelName);
    try {
      return await this.run(this.resolve(admission.model), input, opts);
    } finally {
      // A transport's admission lives until its response closes; ours ends with the answer.
      if (!opts.admission) admission.release();
    }
  }

  /** The manifest of a loaded model (the first one when name is empty); unknown_model otherwise. */
  manifestOf(modelName: string | undefined): ImageManifest {
    return this.resolve(modelName).manifest;
  }

  private async run(model: Model, input: InferInput, opts: ClassifyOptions): Promise<InferResult> {
    const arrivedAt = opts.arrivedAt ?? performance.now();
    const m = model.manifest;
    const budget = opts.budget === undefined ? this.defaultBudget(m) : checkBudget(opts.budget);

    const left = (): number => this.config.requestTimeoutMs - (performance.now() - arrivedAt);
    let pixels: Float32Array;
    if ('image' in input) {
      const decoded = await this.decoder.decode(input.image, m.image, this.config.maxImagePixels, left());
      this.metrics.imageDecoded(decoded.reader);
      pixels = decoded.pixels;
    } else {
      pixels = checkPixels(input.pixels, m);
    }
    if (opts.signal?.aborted) throw new AcmError('client_closed', 'the client closed the request');
    const remaining = left();
    if (remaining <= 0) throw new AcmError('deadline_exceeded', `request did not finish within ${this.config.requestTimeoutMs} ms`);

    const outcome = await model.queue.submit({ input: pixels, budget }, { tokens: m.tokens.count, timeoutMs: remaining, signal: opts.signal });
    const compute = model.accountant.report(outcome.result.learnerCounts, budget);
    this.metrics.observeRequest(m.name, compute.used, outcome.queueMs);
    return {
      model: m.name,
      probabilities: softmax(outcome.result.logits),
      tokenFractions: model.accountant.tokenFractions(outcome.result.learnerCounts),
      compute,
      timings: { queueMs: outcome.queueMs, inferenceMs: outcome.inferenceMs, totalMs: performance.now() - arrivedAt },
      batchSize: outcome.batchSize,
    };
  }

  /** Stops admitting, lets queued and running requests finish within graceMs, then stops runtimes. */
  async shutdown(graceMs: number): Promise<void> {
    this.isReady = false;
    await this.pool.shutdown(graceMs);
  }

  private defaultBudget(m: ImageManifest): number {
    return this.config.defaultBudget ?? m.default_budget;
  }

  private resolve(name: string | undefined): Model {
    const model = this.pool.find(name);
    if (model) return model;
    if (name === undefined || name === '') throw new AcmError('not_ready', 'no model is loaded');
    throw new AcmError('unknown_model', `model must be one of ${this.pool.names.join(', ')}; got ${shown(name)}`);
  }
}

/** Softmax in float64, max-shifted for stability. */
export function softmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  const exps = Float64Array.from(logits, (v) => Math.exp(v - max));
  const sum = exps.reduce((s, v) => s + v, 0);
  return exps.map((e) => e / sum);
}

/** A preprocessed tensor must have the manifest's C*H*W finite values. */
function checkPixels(pixels: Float32Array, m: ImageManifest): Float32Array {
  const { channels, height, width } = m.image;
  const want = channels * height * width;
  if (pixels.length !== want) {
    throw new AcmError('bad_request', `pixel tensor must hold ${channels}x${height}x${width} = ${want} values; got ${pixels.length}`);
  }
  for (let i = 0; i < pixels.length; i++) {
    if (!Number.isFinite(pixels[i])) throw new AcmError('bad_request', `pixel tensor value ${i} must be finite; got ${pixels[i]}`);
  }
  return pixels;
}

/** Softmax in float64, then the topK classes by score. */
export function topPredictions(logits: Float32Array, labels: readonly string[], topK: number): Prediction[] {
  return topOf(softmax(logits), labels, topK);
}

function topOf(probabilities: Float64Array, labels: readonly string[], topK: number): Prediction[] {
  return Array.from(probabilities, (score, i) => ({ i, score }))
    .sort((a, b) => b.score - a.score || a.i - b.i)
    .slice(0, topK)
    .map(({ i, score }) => ({ label: labels[i] ?? String(i), score }));
}
