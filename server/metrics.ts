// Prometheus metrics, all under the acm_ prefix. Each server instance owns its registry (no
// global default), so tests can build many apps in one process.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ImageReader } from './image.js';

const PREFIX = 'acm_';
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Sampling tick of the event-loop delay monitor; a tick that fires on time shows as this interval. */
const LOOP_TICK_MS = 1;
const FRACTION_BUCKETS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];

export interface BatchStats {
  readonly model: string;
  /** Requests in the batch. */
  readonly size: number;
  /** Tokens in the batch (requests x tokens per request). */
  readonly tokens: number;
  /** Multiply-adds the batch executed, in GFLOPs. */
  readonly gflops: number;
  readonly durationMs: number;
}

/** Per-model values read at scrape time rather than updated on every change. */
export interface ModelGauges {
  readonly queueDepth: () => number;
  readonly inFlight: () => number;
}

/**
 * acm_event_loop_delay_seconds{quantile}: how late a 1 ms timer on the HTTP thread fired, since
 * the previous scrape (p50, p99, max). Anything that holds the HTTP thread (request handling,
 * JSON, garbage collection, or the OS giving the thread no core) shows here; a /healthz answer
 * waits at least this long. prom-client's acm_nodejs_eventloop_lag_* sample every 10 ms and
 * include that interval in every value; these subtract the tick.
 */
function eventLoopDelayGauge(registers: Registry[]): void {
  const histogram = monitorEventLoopDelay({ resolution: LOOP_TICK_MS });
  histogram.enable();
  const late = (ns: number): number => Math.max(0, ns / 1e9 - LOOP_TICK_MS / 1000);
  new Gauge({ name: `${PREFIX}event_loop_delay_seconds`, help: 'HTTP thread event-loop delay since the previous scrape',
    labelNames: ['quantile'], registers, collect() {
      if (histogram.count === 0) return;
      this.set({ quantile: '0.5' }, late(histogram.percentile(50)));
      this.set({ quantile: '0.99' }, late(histogram.percentile(99)));
      this.set({ quantile: '1' }, late(histogram.max));
      histogram.reset();
    } });
}

export class Metrics {
  readonly registry = new Registry();
  private readonly httpRequests: Counter<'route' | 'method' | 'status'>;
  private readonly httpLatency: Histogram<'route'>;
  private readonly errors: Counter<'code'>;
  private readonly batchSize: Histogram<'model'>;
  private readonly batchTokens: Histogram<'model'>;
  private readonly batchGflops: Histogram<'model'>;
  private readonly batchDuration: Histogram<'model'>;
  private readonly budgetUsed: Histogram<'model'>;
  private readonly queueWait: Histogram<'model'>;
  private readonly workerRestarts: Counter<'model'>;
  private readonly imagesDecoded: Counter<'reader'>;
  private readonly sources = new Map<string, ModelGauges>();
  private readonly streamsEnded: Counter<'outcome'>;
  private openStreams: () => number = () => 0;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (opts.defaultMetrics ?? true) {
      collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
      eventLoopDelayGauge(registers);
    }
    this.httpRequests = new Counter({ name: `${PREFIX}http_requests_total`, help: 'HTTP requests answered',
      labelNames: ['route', 'method', 'status'], registers });
    this.httpLatency = new Histogram({ name: `${PREFIX}http_request_duration_seconds`, help: 'HTTP request latency',
      labelNames: ['route'], buckets: LATENCY_BUCKETS, registers });
    this.errors = new Counter({ name: `${PREFIX}errors_total`, help: 'Error answers by error code',
      labelNames: ['code'], registers });
    this.batchSize = new Histogram({ name: `${PREFIX}batch_size`, help: 'Requests per executed batch',
      labelNames: ['model'], buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256], registers });
    this.batchTokens = new Histogram({ name: `${PREFIX}batch_tokens`, help: 'Tokens per executed batch',
      labelNames: ['model'], buckets: [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768], registers });
    this.batchGflops = new Histogram({ name: `${PREFIX}batch_gflops`, help: 'GFLOPs executed per batch',
      labelNames: ['model'], buckets: [0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100], registers });
    this.batchDuration = new Histogram({ name: `${PREFIX}batch_duration_seconds`, help: 'Backend time per batch',
      labelNames: ['model'], buckets: LATENCY_BUCKETS, registers });
    this.budgetUsed = new Histogram({ name: `${PREFIX}budget_used`, help: 'Fraction of learner compute used per request',
      labelNames: ['model'], buckets: FRACTION_BUCKETS, registers });
    this.queueWait = new Histogram({ name: `${PREFIX}queue_wait_seconds`, help: 'Time requests waited for a batch',
      labelNames: ['model'], buckets: LATENCY_BUCKETS, registers });
    this.workerRestarts = new Counter({ name: `${PREFIX}worker_restarts_total`, help: 'Inference workers replaced after a crash or hang',
      labelNames: ['model'], registers });
    this.imagesDecoded = new Counter({ name: `${PREFIX}images_decoded_total`,
      help: 'Images decoded, by reader: png (plain PNG at the input size, read directly) or libvips', labelNames: ['reader'], registers });
    this.streamsEnded = new Counter({ name: `${PREFIX}asr_streams_total`,
      help: '/asr streams ended, by outcome: final, client_closed, or the error code', labelNames: ['outcome'], registers });
    const streams = (): number => this.openStreams();
    new Gauge({ name: `${PREFIX}asr_streams_open`, help: 'Open /asr streams', registers, collect() {
      this.set(streams());
    } });
    const sources = this.sources;
    new Gauge({ name: `${PREFIX}queue_depth`, help: 'Requests waiting for a batch', labelNames: ['model'], registers,
      collect() {
        for (const [model, g] of sources) this.set({ model }, g.queueDepth());
      } });
    new Gauge({ name: `${PREFIX}requests_in_flight`, help: 'Requests admitted and not yet answered', labelNames: ['model'],
      registers, collect() {
        for (const [model, g] of sources) this.set({ model }, g.inFlight());
      } });
  }

  /** Registers a model's gauges, read at scrape time. */
  trackModel(model: string, gauges: ModelGauges): void {
    this.sources.set(model, gauges);
  }

  observeHttp(route: string, method: string, status: number, seconds: number): void {
    this.httpRequests.inc({ route, method, status: String(status) });
    this.httpLatency.observe({ route }, seconds);
  }

  observeError(code: string): void {
    this.errors.inc({ code });
  }

  observeBatch(s: BatchStats): void {
    this.batchSize.observe({ model: s.model }, s.size);
    this.batchTokens.observe({ model: s.model }, s.tokens);
    this.batchGflops.observe({ model: s.model }, s.gflops);
    this.batchDuration.observe({ model: s.model }, s.durationMs / 1000);
  }

  /** Reads the number of open /asr streams at scrape time. */
  trackStreams(open: () => number): void {
    this.openStreams = open;
  }

  streamEnded(outcome: string): void {
    this.streamsEnded.inc({ outcome });
  }

  observeRequest(model: string, used: number, queueMs: number): void {
    this.budgetUsed.observe({ model }, used);
    this.queueWait.observe({ model }, queueMs / 1000);
  }

  workerRestarted(model: string): void {
    this.workerRestarts.inc({ model });
  }

  imageDecoded(reader: ImageReader): void {
    this.imagesDecoded.inc({ reader });
  }
}
