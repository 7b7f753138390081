// The shared drawing geometry of the web page and the CLI heatmap: which patch of the model's
// input each displayed pixel shows, under each resize fit of the manifest, and the colour scale.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { colour, patchLookup, type MapGrid } from '../clients/heatmap-core.js';
import { writeHeatmap } from '../clients/heatmap.js';

/** 2x2 grid with a distinct value per patch. */
const MAP: MapGrid = { grid: [2, 2], values: [[0.1, 0.2], [0.3, 0.4]] };

describe('heatmap geometry and colours', () => {
  it('draws a photo upright by its EXIF orientation, as the server decodes it', async () => {
    // Stored 40 wide and 20 high, left half white; Orientation 6 shows it 20 wide and 40 high, white on top.
    const raw = Uint8Array.from({ length: 40 * 20 }, (_, i) => (i % 40 < 20 ? 255 : 0));
    const tagged = await sharp(raw, { raw: { width: 40, height: 20, channels: 1 } }).jpeg({ quality: 95 })
      .withMetadata({ orientation: 6 }).toBuffer();
    const dir = await mkdtemp(join(tmpdir(), 'acm-heatmap-'));
    try {
      const out = join(dir, 'map.png');
      const size = await writeHeatmap(tagged, MAP, { width: 28, height: 28, fit: 'contain' }, out);
      // Enlarged to 224 on its short side, plus the 16-pixel colour strip.
      assert.deepEqual(size, { width: 224, height: 448 + 16 });
      const { data } = await sharp(out).greyscale().raw().toBuffer({ resolveWithObject: true });
      const rowMean = (y0: number, y1: number): number => {
        let sum = 0;
        for (let y = y0; y < y1; y++) for (let x = 0; x < 224; x++) sum += data[y * 224 + x] ?? NaN;
        return sum / ((y1 - y0) * 224);
      };
      assert.ok(rowMean(20, 200) > rowMean(248, 428) + 60, `top ${rowMean(20, 200)}, bottom ${rowMean(248, 428)}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('maps a square image onto the grid quadrant by quadrant', () => {
    const at = patchLookup(MAP, { width: 10, height: 10 }, { width: 28, height: 28, fit: 'contain' }, 100, 100);
    assert.deepEqual([at(0, 0), at(99, 0), at(0, 99), at(99, 99), at(49, 49), at(50, 50)], [0.1, 0.2, 0.3, 0.4, 0.1, 0.4]);
  });

  it('contain: a wide image fills the width and covers the middle rows; the model saw padding elsewhere', () => {
    // 40x20 into 28x28: scaled to 28x14, centred: rows 7..21 of the input, so it spans both grid rows.
    const at = patchLookup(MAP, { width: 40, height: 20 }, { width: 28, height: 28, fit: 'contain' }, 40, 20);
    assert.equal(at(0, 0), 0.1);
    assert.equal(at(39, 19), 0.4);
    assert.equal(at(0, 9), 0.1, 'just above the middle of the image is the upper grid row');
    assert.equal(at(0, 10), 0.3, 'just below it is the lower grid row');
  });

  it('cover: the parts of a wide image the model cropped away get no value', () => {
    // 40x20 into 28x28: scaled to 56x28, centred: the outer 14 input pixels on each side are cropped.
    const at = patchLookup(MAP, { width: 40, height: 20 }, { width: 28, height: 28, fit: 'cover' }, 40, 20);
    assert.equal(at(0, 0), undefined);
    assert.equal(at(39, 0), undefined);
    assert.equal(at(10, 0), 0.1, 'the first kept column');
    assert.equal(at(29, 19), 0.4, 'the last kept column');
    assert.equal(at(30, 19), undefined);
  });

  it('fill: each axis stretches on its own', () => {
    const at = patchLookup(MAP, { width: 40, height: 20 }, { width: 28, height: 28, fit: 'fill' }, 40, 20);
    assert.deepEqual([at(0, 0), at(39, 0), at(0, 19), at(39, 19)], [0.1, 0.2, 0.3, 0.4]);
  });

  it('colours run from the scale start to its end and clamp outside [0, 1]', () => {
    assert.deepEqual(colour(0), [68, 1, 84]);
    assert.deepEqual(colour(1), [253, 231, 37]);
    assert.deepEqual(colour(0.5), [33, 145, 140]);
    assert.deepEqual(colour(-3), colour(0));
    assert.deepEqual(colour(7), colour(1));
    assert.deepEqual(colour(Number.NaN), colour(0));
  });
});
