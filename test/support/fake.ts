// A hand-written manifest and a fake backend, so the queue, the service and the HTTP contract
// are tested without any model. The fake honours the per-request contract the real graph has:
// each item's output depends on that item only, and learner counts respect the budget cap.
import type { Backend, BackendInfo, BatchItem, ItemResult } from '../../server/backend.js';
import type { Bundle } from '../../server/bundle.js';
import { loadConfig, type Config } from '../../server/config.js';
import { createApp } from '../../server/http/app.js';
import { InferenceService } from '../../server/inference.js';
import { createLogger, type Logger } from '../../server/logger.js';
import type { ImageManifest } from '../../server/manifest.js';
import { Metrics } from '../../server/metrics.js';

export const LABELS = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];

/** 28x28 greyscale, 17 tokens (class + 4x4 patches), one FFN ACM and one q ACM. */
export function fakeManifest(overrides: Record<string, unknown> = {}): ImageManifest {
  return {
    format: 'acm-bundle/1',
    name: 'fake-vit-acm',
    task: 'image-classification',
    graph: 'model.onnx',
    inputs: { pixels: 'pixel_values', budget: 'budget' },
    outputs: { logits: 'logits', learner_counts: 'learner_counts' },
    image: { height: 28, width: 28, channels: 1, mean: [0.286], std: [0.353], resize: 'contain', background: [0, 0, 0] },
    labels: LABELS,
    tokens: { count: 17, grid: [4, 4], grid_offset: 1 },
    acms: [
      { name: 'encoder.layers.0.mlp', layer: 0, kind: 'ffn', n: 4, width: 16, min_choice: 0, learner_macs: 1024, gate_macs: 100 },
      { name: 'encoder.layers.0.attn.q', layer: 0, kind: 'q', n: 4, width: 4, min_choice: 1, learner_macs: 256, gate_macs: 50 },
    ],
    macs: { fixed: 50_000, dense: 400_000 },
    budget_floor: 256 / (4 * 1024 + 4 * 256),
    default_budget: 1.0,
    quality: [{ budget: 1, metric: 'accuracy', value: 0.5, dataset: 'none', items: 1 }],
    ...overrides,
  };
}

export function fakeBundle(manifest = fakeManifest()): Bundle {
  return { dir: '/nonexistent', graphPath: '/nonexistent/model.onnx', manifest, embeddedManifest: true };
}

/** Deterministic output of one item: class from the mean pixel, k per token capped by the budget. */
export function fakeResult(m: ImageManifest, item: BatchItem): ItemResult {
  const classes = m.labels.length;
  const mean = item.input.reduce((s, v) => s + v, 0) / item.input.length;
  const top = Math.abs(Math.floor(mean * 7)) % classes;
  const logits = Float32Array.from({ length: classes }, (_, c) => (c === top ? 3 : -Math.abs(c - top) / 2));
  const T = m.tokens.count;
  const counts = new Int32Array(m.acms.length * T);
  m.acms.forEach((a, ai) => {
    for (let t = 0; t < T; t++) {
      // Tokens "decide" (t-dependent) within the request's cap, never below min_choice.
      const want = (t + ai) % (a.n + 1);
      const cap = Math.floor(item.budget * a.n);
      counts[ai * T + t] = Math.max(a.min_choice, Math.min(want, cap));
    }
  });
  return { logits, learnerCounts: counts };
}

export class FakeBackend implements Backend {
  concurrency = 1;
  /** Budgets of every executed batch, in order. */
  readonly batches: number[][] = [];
  delayMs = 0;
  failWith?: Error;
  private held?: Promise<void>;
  private releaseHeld?: () => void;

  constructor(private readonly m: ImageManifest = fakeManifest()) {}

  /** Batches wait until release(): lets a test fill the queue behind a running batch. */
  hold(): void {
    this.held = new Promise((resolve) => { this.releaseHeld = resolve; });
  }

  release(): void {
    this.releaseHeld?.();
    this.held = undefined;
  }

  start(): Promise<BackendInfo> {
    return Promise.resolve({ provider: 'fake', workers: this.concurrency });
  }

  async run(items: readonly BatchItem[]): Promise<ItemResult[]> {
    this.batches.push(items.map((i) => i.budget));
    if (this.held) await this.held;
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.failWith) throw this.failWith;
    return items.map((item) => fakeResult(this.m, item));
  }

  close(): Promise<void> {
    this.release();
    return Promise.resolve();
  }
}

export function testConfig(env: Record<string, string> = {}): Config {
  return loadConfig({ LOG_LEVEL: 'silent', ACM_MAX_WAIT_MS: '2', ACM_INTRA_OP_THREADS: '1', ...env }, []);
}

export interface TestApp {
  app: ReturnType<typeof createApp>;
  inference: InferenceService;
  metrics: Metrics;
  config: Config;
  log: Logger;
}

/** App and service without loaded models; call load() (or loadFake) to make it ready. */
export function buildApp(config: Config): TestApp {
  const log = createLogger(config.logLevel);
  const metrics = new Metrics({ defaultMetrics: false });
  const inference = new InferenceService(config, metrics, log);
  const app = createApp({ inference, metrics, log, maxImageBytes: config.maxImageBytes });
  return { app, inference, metrics, config, log };
}

export async function fakeApp(env: Record<string, string> = {}, backend = new FakeBackend()): Promise<TestApp & { backend: FakeBackend }> {
  const t = buildApp(testConfig(env));
  await t.inference.load([fakeBundle()], () => backend);
  return { ...t, backend };
}
