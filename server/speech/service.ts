// The speech side of the inference service: per speech model a queue, a batcher and a backend
// (the same model pool /classify runs on), so the windows of every /transcribe request and every
// /asr stream of a model meet in one queue and run in shared batches. A Recognition is one
// request's or one stream's progress: audio in, windows out to the queue, transcript and compute
// accumulated in window order.
import { getMaxListeners, setMaxListeners } from 'node:events';
import type { Backend } from '../backend.js';
import type { Config } from '../config.js';
import { AcmError, shown } from '../errors.js';
import type { Logger } from '../logger.js';
import type { QualityPoint } from '../manifest-fields.js';
import type { BatchStats, Metrics } from '../metrics.js';
import { ModelPool, RETRY_AFTER_S, type Admission, type PooledModel } from '../model-pool.js';
import { checkBudget } from '../params.js';
import { loadLexicon, type SpeechBundle } from './bundle.js';
import { SpeechAccountant, type ComputeTally, type SpeechComputeReport } from './compute.js';
import { CtcDecoder, type TranscriptDecoder, type WordTiming } from './ctc.js';
import { beamOptions, LexiconBeamDecoder } from './lexicon-decoder.js';
import type { AudioContract, SpeechManifest } from './manifest.js';
import { WindowCutter } from './windows.js';

export interface SpeechModelInfo {
  name: string;
  task: 'speech-recognition';
  vocabulary: readonly string[];
  input: AudioContract;
  budget_floor: number;
  default_budget: number;
  /** How transcripts are decoded: "lexicon-beam" (with the bundle's language model) or "greedy". */
  decoder: string;
  /** The lexicon beam search's hypotheses per frame (absent for greedy). */
  beam?: number;
  quality: readonly QualityPoint[];
}

export interface TranscribeResult {
  model: string;
  text: string;
  words: WordTiming[];
  compute: SpeechComputeReport;
  timings: { queueMs: number; inferenceMs: number; totalMs: number };
}

/** Longest stretch of decoding between two yields of the thread. */
const YIELD_AFTER_MS = 5;

type SpeechModel = PooledModel<SpeechBundle, SpeechAccountant>;
/** Makes a decoder per request or stream; `kind` and `beam` (lexicon search only) are reported per model. */
type DecoderFactory = (() => TranscriptDecoder) & { readonly kind: string; readonly beam?: number };

export class SpeechService {
  private readonly pool: ModelPool<SpeechBundle, SpeechAccountant>;
  private isReady = false;
  private streams = 0;
  private readonly decoders = new Map<string, DecoderFactory>();

  constructor(private readonly config: Config, private readonly metrics: Metrics, private readonly log: Logger) {
    this.pool = new ModelPool(config, metrics, log);
  }

  /** Starts every speech model's runtime. Throws on the first failure, leaving nothing running. */
  async load(bundles: readonly SpeechBundle[], backendFor: (b: SpeechBundle) => Backend): Promise<void> {
    // Language models first: a bundle whose model cannot be read is refused before any runtime starts.
    for (const b of bundles) this.decoders.set(b.manifest.name, await this.decoderFor(b));
    await this.pool.load(bundles, { item: 'window', tokensPerItem: (b) => b.manifest.audio.window_frames,
      accountant: (b) => new SpeechAccountant(b.manifest), backend: backendFor });
    this.isReady = true;
  }

  private async decoderFor(b: SpeechBundle): Promise<DecoderFactory> {
    const m = b.manifest;
    const spec = m.ctc.decoder;
    const greedy = Object.assign(() => new CtcDecoder(m), { kind: 'greedy' });
    if (!spec || this.config.speechDecoder === 'greedy') return greedy;
    const started = performance.now();
    const lexicon = await loadLexicon(b);
    if (!lexicon) return greedy;
    // The manifest's quality was measured at its own beam; the log names both when ACM_SPEECH_BEAM differs.
    const opts = { ...beamOptions(spec), ...(this.config.speechBeam === undefined ? {} : { beam: this.config.speechBeam }) };
    this.log.info({ model: m.name, lm: spec.lm, order: lexicon.lm.order, words: lexicon.words, skipped: lexicon.skipped,
      beam: opts.beam, bundleBeam: spec.beam, ms: Math.round(performance.now() - started) }, 'language model loaded');
    return Object.assign(() => new LexiconBeamDecoder(lexicon, m.ctc, m.audio.frame_ms, opts), { kind: spec.type, beam: opts.beam });
  }

  get ready(): boolean {
    return this.isReady;
  }

  /** Observes every executed batch of every speech model. */
  onBatch(listener: (s: BatchStats) => void): void {
    this.pool.onBatch(listener);
  }

  /** Streams open now. */
  get openStreams(): number {
    return this.streams;
  }

  listModels(): SpeechModelInfo[] {
    return this.pool.all().map(({ manifest: m, accountant }) => {
      const decoder = this.decoders.get(m.name);
      return {
        name: m.name, task: m.task, vocabulary: m.ctc.vocabulary, input: m.audio, budget_floor: accountant.floor,
        default_budget: this.config.defaultBudget ?? m.default_budget, decoder: decoder?.kind ?? 'greedy',
        ...(decoder?.beam === undefined ? {} : { beam: decoder.beam }), quality: m.quality,
      };
    });
  }

  /** The model a request names (the first speech model when none), ready to take work. */
  resolve(name: string | undefined): SpeechManifest {
    return this.model(name).manifest;
  }

  /** A request's deadline from its arrival (ACM_REQUEST_TIMEOUT_MS): its body must have come by then too. */
  get requestTimeoutMs(): number {
    return this.config.requestTimeoutMs;
  }

  /** Refuses before a body is read or a stream opens: not ready, unknown model, no queue room. */
  admit(name: string | undefined): Admission {
    const model = this.model(name);
    if (model.queue.full) {
      throw new AcmError('queue_full', `model ${JSON.stringify(model.manifest.name)} has ${model.queue.depth} windows queued ` +
        `(capacity ${this.config.queueCapacity}); retry after ${RETRY_AFTER_S} s`, RETRY_AFTER_S);
    }
    return this.pool.admission(model);
  }

  /** Reserves a stream slot; throws too_many_streams past ACM_MAX_STREAMS. */
  openStream(): () => void {
    if (this.streams >= this.config.maxStreams) {
      throw new AcmError('too_many_streams', `${this.streams} streams are open (ACM_MAX_STREAMS ${this.config.maxStreams}); ` +
        `retry after ${RETRY_AFTER_S} s`, RETRY_AFTER_S);
    }
    this.streams++;
    let closed = false;
    return () => {
      if (!closed) {
        closed = true;
        this.streams--;
      }
    };
  }

  /** Budget a request runs at: its own (checked), else the configured default, else the model's. */
  budgetFor(name: string | undefined, budget: number | undefined): number {
    return budget === undefined ? this.config.defaultBudget ?? this.model(name).manifest.default_budget : checkBudget(budget);
  }

  recognition(name: string | undefined, budget: number, signal?: AbortSignal): Recognition {
    const model = this.model(name);
    return new Recognition(model, this.decoder(model), budget, this.config.requestTimeoutMs, this.config.queueCapacity, signal);
  }

  /** Whole-file transcription: every window of the audio, batched with whatever else is queued. */
  async transcribe(name: string | undefined, samples: Float32Array, opts: { budget?: number; signal?: AbortSignal; arrivedAt?: number } = {}): Promise<TranscribeResult> {
    const arrivedAt = opts.arrivedAt ?? performance.now();
    const model = this.model(name);
    const budget = this.budgetFor(name, opts.budget);
    const r = new Recognition(model, this.decoder(model), budget, this.config.requestTimeoutMs, this.config.queueCapacity, opts.signal);
    // A whole file has one deadline, counted from its arrival, however many windows it needs.
    r.deadline = arrivedAt + this.config.requestTimeoutMs;
    r.push(samples);
    await r.advance(true);
    const compute = r.compute();
    this.metrics.observeRequest(model.manifest.name, compute.used, r.queueMs);
    return { model: model.manifest.name, text: r.text(), words: r.words(), compute,
      timings: { queueMs: r.queueMs, inferenceMs: r.inferenceMs, totalMs: performance.now() - arrivedAt } };
  }

  /** Runs `hook` at shutdown, after the queues drain (transports' own threads, e.g. audio decoding). */
  onShutdown(hook: () => Promise<void>): void {
    this.pool.onShutdown(hook);
  }

  async shutdown(graceMs: number): Promise<void> {
    this.isReady = false;
    await this.pool.shutdown(graceMs);
  }

  private decoder(model: SpeechModel): TranscriptDecoder {
    const make = this.decoders.get(model.manifest.name);
    return make ? make() : new CtcDecoder(model.manifest);
  }

  private model(name: string | undefined): SpeechModel {
    if (!this.isReady) throw new AcmError('not_ready', 'models are still loading; retry shortly', RETRY_AFTER_S);
    const model = this.pool.find(name);
    if (model) return model;
    if (name === undefined || name === '') throw new AcmError('unknown_model', 'no speech-recognition model is loaded');
    throw new AcmError('unknown_model', `model must be one of the speech models ${this.pool.names.join(', ')}; got ${shown(name)}`);
  }
}

/**
 * One request's or stream's recognition. push() audio, advance() to run the windows that are
 * complete (all of them with `final`); the transcript grows in window order. advance() calls must
 * not overlap (a stream chains them).
 */
export class Recognition {
  private readonly cutter: WindowCutter;
  private readonly tally: ComputeTally;
  queueMs = 0;
  inferenceMs = 0;
  /** performance.now() by which every window must be answered; unset: each window gets timeoutMs. */
  deadline?: number;

  private readonly slice: number;

  constructor(private readonly model: SpeechModel, private readonly decoder: TranscriptDecoder, readonly budget: number,
    private readonly timeoutMs: number, queueCapacity: number, private readonly signal?: AbortSignal) {
    this.slice = Math.max(1, Math.floor(queueCapacity / 2));
    // Every window in flight listens for the abort; a long file has many at once.
    if (signal) setMaxListeners(Math.max(getMaxListeners(signal), this.slice + 10), signal);
    this.cutter = new WindowCutter(model.manifest.audio);
    this.tally = model.accountant.tally();
  }

  get modelName(): string {
    return this.model.manifest.name;
  }

  /** Samples received so far. */
  get samples(): number {
    return this.cutter.samples;
  }

  push(samples: Float32Array): void {
    this.cutter.push(samples);
  }

  /** Runs the windows that are ready; resolves with how many were decoded. */
  async advance(final: boolean): Promise<number> {
    const windows = this.cutter.take(final);
    if (windows.length === 0) return 0;
    const m = this.model.manifest;
    const { queue } = this.model;
    // Submitted in slices of at most half the queue, so one long file cannot fill the queue that
    // live streams also need; each slice still batches with whatever else is queued.
    for (let i = 0; i < windows.length; i += this.slice) {
      const part = windows.slice(i, i + this.slice);
      const timeoutMs = this.deadline === undefined ? this.timeoutMs : this.deadline - performance.now();
      if (timeoutMs <= 0) throw new AcmError('deadline_exceeded', `request did not finish within its deadline of ${this.timeoutMs} ms`);
      const outcomes = await Promise.all(part.map((w) => queue.submit({ input: w, budget: this.budget },
        { tokens: m.audio.window_frames, timeoutMs, ...(this.signal ? { signal: this.signal } : {}) })));
      let since = performance.now();
      for (const o of outcomes) {
        const keep = m.audio.left_context_frames * m.ctc.vocabulary.length;
        this.decoder.push(o.result.logits.subarray(keep), m.audio.chunk_frames);
        this.tally.add(o.result.learnerCounts);
        this.queueMs = Math.max(this.queueMs, o.queueMs);
        this.inferenceMs += o.inferenceMs;
        // The beam search costs a few milliseconds per second of audio: a long file yields the
        // thread between windows so streams and other requests are served meanwhile.
        if (performance.now() - since > YIELD_AFTER_MS) {
          await new Promise((resolve) => setImmediate(resolve));
          since = performance.now();
        }
      }
    }
    return windows.length;
  }

  text(): string {
    return this.decoder.transcript();
  }

  words(): WordTiming[] {
    return this.decoder.timings();
  }

  /** Compute so far; per-frame values for the frames that hold received audio. */
  compute(): SpeechComputeReport {
    const frames = Math.ceil(this.cutter.samples / this.model.manifest.audio.frame_samples);
    return this.tally.report(this.budget, frames);
  }
}

