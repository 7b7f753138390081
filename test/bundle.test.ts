// Bundle loading: the manifest is validated strictly per models/BUNDLE.md and every refusal names
// the bundle and the field; the ONNX metadata copy must equal acm.json; folders without acm.json
// are not bundles.
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { scanBundles } from '../server/bundle.js';
import { parseImageManifest } from '../server/manifest.js';
import { readOnnxMetadata } from '../server/onnx-metadata.js';
import { fakeManifest } from './support/fake.js';
import { scratchDir } from './support/scratch.js';
import { tinyModelsDir } from './support/tiny-bundle.js';

function refusal(overrides: Record<string, unknown>): string {
  try {
    parseImageManifest('fake', { ...fakeManifest(), ...overrides });
  } catch (err) {
    return (err as Error).message;
  }
  return assert.fail('expected the manifest to be refused');
}

/** Protobuf bytes: varint-keyed fields, enough to build a top-level ModelProto by hand. */
function varint(n: number): number[] {
  const out: number[] = [];
  do {
    out.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>>= 7;
  } while (n > 0);
  return out;
}
function lenField(field: number, bytes: Buffer): Buffer {
  return Buffer.concat([Buffer.from([...varint((field << 3) | 2), ...varint(bytes.length)]), bytes]);
}

describe('acm.json validation', () => {
  it('accepts a manifest that follows BUNDLE.md', () => {
    assert.equal(parseImageManifest('fake', fakeManifest()).name, 'fake-vit-acm');
  });

  it('names the bundle and the field of each breach', () => {
    const image = fakeManifest().image;
    const acm = fakeManifest().acms[1];
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ format: 'acm-bundle/2' }, /bundle "fake": acm.json field format must be "acm-bundle\/1"/],
      [{ labels: ['a', 'a'] }, /field labels must not repeat/],
      [{ image: { ...image, channels: 2 } }, /field image.channels must be 1 or 3; got 2/],
      [{ image: { ...image, mean: [0.1, 0.2] } }, /field image.mean must have 1 entries; got 2/],
      [{ image: { ...image, std: [0] } }, /field image.std\[0\] must be a number in \(0, /],
      [{ image: { ...image, resize: 'stretch' } }, /field image.resize must be one of contain\|cover\|fill/],
      [{ tokens: { count: 10, grid: [4, 4], grid_offset: 1 } }, /field tokens.grid places 4x4 patches from token 1, past tokens.count 10/],
      [{ acms: [{ ...acm, min_choice: 0 }] }, /field acms\[0\].min_choice must be an integer in \[1, 4\]; got 0/],
      [{ budget_floor: 0.5 }, /field budget_floor is 0.5 but the acms' min_choice learners force 0.05/],
      [{ default_budget: 0 }, /field default_budget must be a number in \(0, 1\]/],
      [{ graph: '../elsewhere.onnx' }, /field graph must match/],
      [{ budget_flor: 0.05 }, /field manifest.budget_flor is not part of acm-bundle\/1/],
      [{ macs: { fixed: 1 } }, /field macs.dense is missing/],
      [{ quality: [{ budget: 1, metric: 'accuracy', value: 0.9, dataset: 'x' }] }, /field quality\[0\].items is missing/],
    ];
    for (const [overrides, message] of cases) assert.match(refusal(overrides), message, JSON.stringify(overrides));
  });

  it('accepts free-form provenance under architecture and training, and measured used per quality point', () => {
    parseImageManifest('fake', { ...fakeManifest(), architecture: { family: 'vit' }, training: { epochs: 3 },
      quality: [{ budget: 0.5, metric: 'accuracy', value: 0.8, used: 0.45, dataset: 'x', items: 10 }] });
  });
});

describe('ONNX metadata', () => {
  it('reads metadata_props from the top level of a ModelProto, skipping the graph', async () => {
    const entry = Buffer.concat([lenField(1, Buffer.from('acm_manifest')), lenField(2, Buffer.from('{"a":1}'))]);
    const model = Buffer.concat([Buffer.from([0x08, 0x08]), lenField(7, Buffer.alloc(300, 7)), lenField(14, entry)]);
    const dir = scratchDir('acm-meta-');
    await writeFile(join(dir, 'm.onnx'), model);
    assert.deepEqual([...await readOnnxMetadata(join(dir, 'm.onnx'))], [['acm_manifest', '{"a":1}']]);
  });

  it('refuses a file whose fields run past its end', async () => {
    const dir = scratchDir('acm-meta-');
    await writeFile(join(dir, 'm.onnx'), lenField(7, Buffer.alloc(50)).subarray(0, 20));
    await assert.rejects(readOnnxMetadata(join(dir, 'm.onnx')), /runs past the end/);
  });
});

describe('scanning the models folder', () => {
  async function copyTiny(): Promise<{ root: string; dir: string }> {
    const src = join(await tinyModelsDir(), 'tiny-vit-acm');
    const root = scratchDir('acm-models-');
    const dir = join(root, 'tiny');
    await mkdir(dir);
    for (const f of ['acm.json', 'model.onnx', 'dense.onnx']) await copyFile(join(src, f), join(dir, f));
    return { root, dir };
  }

  it('loads bundles, skips folders without acm.json and reports other tasks', async () => {
    const { root } = await copyTiny();
    await mkdir(join(root, 'notes'));
    await mkdir(join(root, 'speech'));
    await writeFile(join(root, 'speech', 'acm.json'), JSON.stringify({ task: 'speech-recognition' }));
    const scan = await scanBundles(root);
    assert.deepEqual(scan.bundles.map((b) => b.manifest.name), ['tiny-vit-acm']);
    assert.equal(scan.bundles[0]?.embeddedManifest, true);
    assert.equal(scan.skipped.length, 1);
    assert.match(scan.skipped[0]?.reason ?? '', /speech-recognition/);
  });

  it('refuses a bundle whose acm.json differs from the manifest in the ONNX metadata', async () => {
    const { root, dir } = await copyTiny();
    const m = JSON.parse(await readFile(join(dir, 'acm.json'), 'utf8')) as { labels: string[] };
    m.labels[0] = 'renamed';
    await writeFile(join(dir, 'acm.json'), JSON.stringify(m));
    await assert.rejects(scanBundles(root), /bundle "tiny": acm.json field graph metadata acm_manifest differs from acm.json/);
  });

  it('refuses a bundle whose graph file is missing, and two bundles with one name', async () => {
    const { root, dir } = await copyTiny();
    const second = join(root, 'tiny2');
    await mkdir(second);
    for (const f of ['acm.json', 'model.onnx', 'dense.onnx']) await copyFile(join(dir, f), join(second, f));
    await assert.rejects(scanBundles(root), /bundle "tiny2": acm.json field name "tiny-vit-acm" is also used by/);
    await writeFile(join(second, 'model.onnx'), '');
    await copyFile(join(dir, 'acm.json'), join(second, 'acm.json'));
    const m = JSON.parse(await readFile(join(dir, 'acm.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(join(second, 'acm.json'), JSON.stringify({ ...m, name: 'other', graph: 'missing.onnx' }));
    await assert.rejects(scanBundles(root), /bundle "tiny2": acm.json field graph names missing.onnx, which does not exist/);
  });

  it('refuses acm.json that is not JSON', async () => {
    const { root, dir } = await copyTiny();
    await writeFile(join(dir, 'acm.json'), '{ nope');
    await assert.rejects(scanBundles(root), /bundle "tiny": acm.json field manifest is not valid JSON/);
  });
});
