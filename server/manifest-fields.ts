// What every acm.json holds whatever its task (models/BUNDLE.md): the field reader whose messages
// name the bundle and the field, the header (format, name, task, graphs), the tensor names, and the
// ACM layout with its costs, budgets and measured quality. Image and speech manifests check their
// own input contract between these, in manifest.ts and speech/manifest.ts.

export type AcmKind = 'ffn' | 'q' | 'k' | 'v' | 'o';

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
  /** How the output was decoded, where there is a choice (speech: "greedy" or "lexicon-beam"). */
  readonly decoder?: string;
}

/** The fields of acm.json that every task has (models/BUNDLE.md), for the task named T. */
export interface ManifestCommon<T extends string> {
  readonly format: 'acm-bundle/1';
  readonly name: string;
  readonly task: T;
  readonly graph: string;
  readonly dense_graph?: string;
  readonly outputs: { readonly logits: string; readonly learner_counts: string };
  readonly acms: readonly AcmSpec[];
  /** Per item the graph runs on: an image, a speech window. */
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

export type Obj = Record<string, unknown>;

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
/** Top-level fields any task may add: the dense graph, and free-form provenance from the exporter. */
const OPTIONAL_TOP_KEYS = ['dense_graph', 'architecture', 'training'] as const;
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

/**
 * Checks the manifest object (exactly `topKeys`, plus the optional ones) and its header: format,
 * name, task, graph and dense graph. Returns the object for the task's own checks.
 */
export function checkHeader(r: Reader, raw: unknown, task: string, topKeys: readonly string[]): Obj {
  const m = r.obj(raw, 'manifest', topKeys, OPTIONAL_TOP_KEYS);
  if (m.format !== 'acm-bundle/1') r.fail('format', `must be "acm-bundle/1"; got ${JSON.stringify(m.format)}`);
  r.str(m.name, 'name', MODEL_NAME);
  r.oneOf(m.task, 'task', [task]);
  r.str(m.graph, 'graph', RELATIVE_FILE);
  if (m.dense_graph !== undefined) r.str(m.dense_graph, 'dense_graph', RELATIVE_FILE);
  return m;
}

/** A map from roles to graph tensor names (`inputs`, `outputs`): exactly these keys, each a name. */
export function checkTensorNames(r: Reader, v: unknown, field: string, keys: readonly string[]): void {
  const names = r.obj(v, field, keys);
  for (const k of keys) r.str(names[k], `${field}.${k}`);
}

/** The ACM layout, its costs, the floor it forces, the default budget and the quality table. */
export function checkAcmLayout(r: Reader, m: Obj): void {
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
    const q = r.obj(v, f, ['budget', 'metric', 'value', 'dataset', 'items'], ['used', 'gflops', 'decoder']);
    r.num(q.budget, `${f}.budget`, 0, 1, { minOpen: true });
    r.str(q.metric, `${f}.metric`);
    r.num(q.value, `${f}.value`, -MAX, MAX);
    r.str(q.dataset, `${f}.dataset`);
    r.num(q.items, `${f}.items`, 1, MAX, { int: true });
    if (q.used !== undefined) r.num(q.used, `${f}.used`, 0, 1);
    if (q.gflops !== undefined) r.num(q.gflops, `${f}.gflops`, 0, MAX, { minOpen: true });
    if (q.decoder !== undefined) r.str(q.decoder, `${f}.decoder`);
  });
}
