// Strict reader of an image-classification acm.json (format acm-bundle/1, models/BUNDLE.md). A
// bundle that breaks the contract is refused at load time with a message naming the bundle and the
// field, because a wrong mean, label count or cost figure would otherwise surface as silently wrong
// answers. The fields every task shares are checked by manifest-fields.ts; the image contract here.
import { checkAcmLayout, checkHeader, checkTensorNames, Reader, type ManifestCommon } from './manifest-fields.js';

export type ResizeFit = 'contain' | 'cover' | 'fill';

export interface ImageManifest extends ManifestCommon<'image-classification'> {
  readonly inputs: { readonly pixels: string; readonly budget: string };
  readonly image: {
    readonly height: number; readonly width: number; readonly channels: 1 | 3;
    readonly mean: readonly number[]; readonly std: readonly number[];
    readonly resize: ResizeFit; readonly background: readonly [number, number, number];
  };
  readonly labels: readonly string[];
  readonly tokens: { readonly count: number; readonly grid: readonly [number, number]; readonly grid_offset: number };
}

const TOP_KEYS = ['format', 'name', 'task', 'graph', 'inputs', 'outputs', 'image', 'labels', 'tokens', 'acms',
  'macs', 'budget_floor', 'default_budget', 'quality'] as const;

/** Validates a parsed acm.json of an image-classification bundle; throws ManifestError. */
export function parseImageManifest(bundle: string, raw: unknown): ImageManifest {
  // Annotated so TypeScript narrows after r.fail(), which returns never.
  const r: Reader = new Reader(bundle);
  const m = checkHeader(r, raw, 'image-classification', TOP_KEYS);
  checkTensorNames(r, m.inputs, 'inputs', ['pixels', 'budget']);
  checkTensorNames(r, m.outputs, 'outputs', ['logits', 'learner_counts']);

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

  checkAcmLayout(r, m);
  return raw as ImageManifest;
}
