// Strict reader of acm.json (format acm-bundle/1, models/BUNDLE.md). A bundle that breaks the
// contract is refused at load time with a message naming the bundle and the field, because a
// wrong mean, label count or cost figure would otherwise surface as silently wrong answers.

export type AcmKind = 'ffn' | 'q' | 'k' | 'v' | 'o';
export type ResizeFit = 'contain' | 'cover' | 'fill';

export interface AcmSpec {
  readonly name: string;
  readonly layer: number;
  readonly kind: AcmKind;
  readonly n: number;
  readonly width: number;
  readonly min_choice: number;
  readonly learner_macs: number;
  readonly gate_macs: number;
}

export interface QualityPoint {
  readonly budget: number;
  readonly metric: string;
  readonly value: number;
  readonly dataset: string;
  readonly items: number;
  /** Mean fraction of learner compute used at this budget, when the exporter measured it. */
  readonly used?: number;
  /** Mean GFLOPs per item at this budget (fixed + gates + executed learners), when measured. */
  readonly gflops?: number;
}

export interface ImageManifest {
  readonly format: 'acm-bundle/1';
  readonly name: string;
  readonly task: 'image-classification';
  readonly graph: string;
  readonly dense_graph?: string;
  readonly inputs: { readonly pixels: string; readonly budget: string };
  readonly outputs: { readonly logits: string; readonly learner_counts: string };
  readonly image: {
    readonly height: number; readonly width: number; readonly channels: 1 | 3;
    readonly mean: readonly number[]; readonly std: readonly number[];
    readonly resize: ResizeFit; readonly background: readonly [number, number, number];
  };
  readonly labels: readonly string[];
  readonly tokens: { readonly count: number; readonly grid: readonly [number, number]; readonly grid_offset: number };
  readonly acms: readonly AcmSpec[];
  readonly macs: { readonly fixed: number; readonly dense: number };
  readonly budget_floor: number;
  readonly default_budget: number;
  readonly quality: readonly QualityPoint[];
  readonly architecture?: unknown;
  readonly training?: unknown;
}

export class ManifestError extends Error {
  constructor(bundle: string, field: string, problem: string) {
    super(`bundle ${JSON.stringify(bundle)}: acm.json field ${field} ${problem}`);
    this.name = 'ManifestError';
  }
}

type Obj = Record<string, unknown>;

/** Field-level checks bound to one bundle so every message names it. */
export class Reader {
  constructor(private readonly bundle: string) {}

  fail(field: string, problem: string): never {
    throw new ManifestError(this.bundle, field, problem);
  }

  obj(v: unknown, field: string, keys: readonly string[], optional: readonly string[] = []): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(field, `must be an object; got ${JSON.stringify(v)}`);
    const o = v as Obj;
    for (const k of keys) if (!(k in o)) this.fail(`${field}.${k}`, 'is missing');
    // Unknown keys are refused: a misspelt optional field would otherwise be silently ignored.
    for (const k of Object.keys(o)) {
      if (!keys.includes(k) && !optional.includes(k)) this.fail(`${field}.${k}`, 'is not part of acm-bundle/1');
    }
    return o;
  }

  str(v: unknown, field: string, pattern?: RegExp): string {
    if (typeof v !== 'string' || v.length === 0) this.fail(field, `must be a non-empty string; got ${JSON.stringify(v)}`);
    if (pattern && !pattern.test(v)) this.fail(field, `must match ${String(pattern)}; got ${JSON.stringify(v)}`);
    return v;
  }

  num(v: unknown, field: string, min: number, max: number, opts: { int?: boolean; minOpen?: boolean } = {}): number {
    const ok = typeof v === 'number' && Number.isFinite(v) && (opts.minOpen ? v > min : v >= min) && v <= max &&
      (!opts.int || Number.isInteger(v));
    if (!ok) {
      const what = opts.int ? 'an integer' : 'a number';
      this.fail(field, `must be ${what} in ${opts.minOpen ? '(' : '['}${min}, ${max}]; got ${JSON.stringify(v)}`);
    }
    return v;
  }

  arr(v: unknown, field: string, minLen: number, len?: number): unknown[] {
    if (!Array.isArray(v)) this.fail(field, `must be an array; got ${JSON.stringify(v)}`);
    if (len !== undefined && v.length !== len) this.fail(field, `must have ${len} entries; got ${v.length}`);
    if (v.length < minLen) this.fail(field, `must have at least ${minLen} entries; got ${v.length}`);
    return v as unknown[];
  }

  oneOf<T extends string>(v: unknown, field: string, values: readonly T[]): T {
    if (typeof v !== 'string' || !values.includes(v as T)) {
      this.fail(field, `must be one of ${values.join('|')}; got ${JSON.stringify(v)}`);
    }
    return v as T;
  }
}

/** A file name inside the bundle folder: no absolute paths, no climbing out. */
export const RELATIVE_FILE = /^(?!\/)(?!.*(^|\/)\.\.(\/|$))[\w.\-/]+$/;
export const MODEL_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const TOP_KEYS = ['format', 'name', 'task', 'graph', 'inputs', 'outputs', 'image', 'labels', 'tokens', 'acms',
  'macs', 'budget_floor', 'default_budget', 'quality'] as const;
const MAX = Number.MAX_SAFE_INTEGER;
/** Relative slack between the declared floor and the floor recomputed from the ACM layout. */
const FLOOR_TOLERANCE = 1e-6;

/** Floor implied by the layout: cost-weighted share of the min_choice learners. */
export function layoutFloor(acms: readonly AcmSpec[]): number {
  let forced = 0;
  let all = 0;
  for (const a of acms) {
    forced += a.min_choice * a.learner_macs;
    all += a.n * a.learner_macs;
  }
  return all > 0 ? forced / all : 0;
}

/** Validates a parsed acm.json of an image-classification bundle; throws ManifestError. */
export function parseImageManifest(bundle: string, raw: unknown): ImageManifest {
  // Annotated so TypeScript narrows after r.fail(), which returns never.
  const r: Reader = new Reader(bundle);
  // architecture and training are free-form provenance written by the exporter.
  const m = r.obj(raw, 'manifest', TOP_KEYS, ['dense_graph', 'architecture', 'training']);
  if (m.format !== 'acm-bundle/1') r.fail('format', `must be "acm-bundle/1"; got ${JSON.stringify(m.format)}`);
  r.str(m.name, 'name', MODEL_NAME);
  r.oneOf(m.task, 'task', ['image-classification']);
  r.str(m.graph, 'graph', RELATIVE_FILE);
  if (m.dense_graph !== undefined) r.str(m.dense_graph, 'dense_graph', RELATIVE_FILE);

  const inputs = r.obj(m.inputs, 'inputs', ['pixels', 'budget']);
  r.str(inputs.pixels, 'inputs.pixels');
  r.str(inputs.budget, 'inputs.budget');
  const outputs = r.obj(m.outputs, 'outputs', ['logits', 'learner_counts']);
  r.str(outputs.logits, 'outputs.logits');
  r.str(outputs.learner_counts, 'outputs.learner_counts');

  const img = r.obj(m.image, 'image', ['height', 'width', 'channels', 'mean', 'std', 'resize', 'background']);
  r.num(img.height, 'image.height', 1, 8192, { int: true });
  r.num(img.width, 'image.width', 1, 8192, { int: true });
  const channels = img.channels;
  if (channels !== 1 && channels !== 3) r.fail('image.channels', `must be 1 or 3; got ${JSON.stringify(channels)}`);
  r.arr(img.mean, 'image.mean', 1, channels).forEach((v, i) => r.num(v, `image.mean[${i}]`, -1e6, 1e6));
  r.arr(img.std, 'image.std', 1, channels).forEach((v, i) => r.num(v, `image.std[${i}]`, 0, 1e6, { minOpen: true }));
  r.oneOf(img.resize, 'image.resize', ['contain', 'cover', 'fill']);
  r.arr(img.background, 'image.background', 3, 3).forEach((v, i) => r.num(v, `image.background[${i}]`, 0, 255, { int: true }));

  const labels = r.arr(m.labels, 'labels', 2);
  labels.forEach((v, i) => r.str(v, `labels[${i}]`));
  if (new Set(labels).size !== labels.length) r.fail('labels', 'must not repeat a label');

  const tokens = r.obj(m.tokens, 'tokens', ['count', 'grid', 'grid_offset']);
  const count = r.num(tokens.count, 'tokens.count', 1, 1_000_000, { int: true });
  const [rows, cols] = r.arr(tokens.grid, 'tokens.grid', 2, 2).map((v, i) => r.num(v, `tokens.grid[${i}]`, 1, 100_000, { int: true }));
  const offset = r.num(tokens.grid_offset, 'tokens.grid_offset', 0, count - 1, { int: true });
  if (offset + (rows ?? 0) * (cols ?? 0) > count) {
    r.fail('tokens.grid', `places ${rows}x${cols} patches from token ${offset}, past tokens.count ${count}`);
  }

  const acmNames = new Set<string>();
  r.arr(m.acms, 'acms', 1).forEach((v, i) => {
    const f = `acms[${i}]`;
    const a = r.obj(v, f, ['name', 'layer', 'kind', 'n', 'width', 'min_choice', 'learner_macs', 'gate_macs']);
    const name = r.str(a.name, `${f}.name`);
    if (acmNames.has(name)) r.fail(`${f}.name`, `repeats ${JSON.stringify(name)}`);
    acmNames.add(name);
    r.num(a.layer, `${f}.layer`, 0, 10_000, { int: true });
    const kind = r.oneOf(a.kind, `${f}.kind`, ['ffn', 'q', 'k', 'v', 'o']);
    const n = r.num(a.n, `${f}.n`, 1, 64, { int: true });
    r.num(a.width, `${f}.width`, 1, 1_000_000, { int: true });
    // DESIGN §2: an FFN sits under a residual and may skip all learners; projections may not.
    r.num(a.min_choice, `${f}.min_choice`, kind === 'ffn' ? 0 : 1, n, { int: true });
    r.num(a.learner_macs, `${f}.learner_macs`, 0, MAX, { minOpen: true });
    r.num(a.gate_macs, `${f}.gate_macs`, 0, MAX);
  });

  const macs = r.obj(m.macs, 'macs', ['fixed', 'dense']);
  r.num(macs.fixed, 'macs.fixed', 0, MAX);
  r.num(macs.dense, 'macs.dense', 0, MAX, { minOpen: true });

  const floor = r.num(m.budget_floor, 'budget_floor', 0, 1);
  const implied = layoutFloor(m.acms as AcmSpec[]);
  if (Math.abs(floor - implied) > FLOOR_TOLERANCE * Math.max(1, implied)) {
    r.fail('budget_floor', `is ${floor} but the acms' min_choice learners force ${implied}`);
  }
  r.num(m.default_budget, 'default_budget', 0, 1, { minOpen: true });

  r.arr(m.quality, 'quality', 0).forEach((v, i) => {
    const f = `quality[${i}]`;
    const q = r.obj(v, f, ['budget', 'metric', 'value', 'dataset', 'items'], ['used', 'gflops']);
    r.num(q.budget, `${f}.budget`, 0, 1, { minOpen: true });
    r.str(q.metric, `${f}.metric`);
    r.num(q.value, `${f}.value`, -MAX, MAX);
    r.str(q.dataset, `${f}.dataset`);
    r.num(q.items, `${f}.items`, 1, MAX, { int: true });
    if (q.used !== undefined) r.num(q.used, `${f}.used`, 0, 1);
    if (q.gflops !== undefined) r.num(q.gflops, `${f}.gflops`, 0, MAX, { minOpen: true });
  });
  return raw as ImageManifest;
}
