// Image decoding per the manifest's input contract: size, channels, normalisation and padding.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import sharp from 'sharp';
import { AcmError } from '../server/errors.js';
import { decodeImage, normalise } from '../server/image.js';
import { fakeManifest } from './support/fake.js';
import { bombPng } from './support/images.js';

const grey = fakeManifest();
const rgb = fakeManifest({ image: { ...grey.image, channels: 3, mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.5] } });

describe('image decoding', () => {
  it('normalises (byte / 255 - mean) / std into CHW planes', () => {
    const out = normalise(Uint8Array.from([255, 0, 51, 102, 204, 153]), 3, 2, [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]);
    const want = [(1 - 0.5) / 0.2, (0.4 - 0.5) / 0.2, (0 - 0.4) / 0.25, (0.8 - 0.4) / 0.25, (0.2 - 0.3) / 0.5, (0.6 - 0.3) / 0.5];
    out.forEach((v, i) => assert.ok(Math.abs(v - (want[i] ?? NaN)) < 1e-6, `${i}: ${v}`));
  });

  it('resizes a colour image to the model size and channels, padding with the background', async () => {
    const white = await sharp({ create: { width: 56, height: 28, channels: 3, background: '#ffffff' } }).png().toBuffer();
    const g = await decodeImage(white, grey, 1e6);
    assert.equal(g.length, 28 * 28);
    const padded = (0 - 0.286) / 0.353;
    const inside = (1 - 0.286) / 0.353;
    // 'contain' scales 56x28 to 28x14 and pads 7 rows above and below with black.
    assert.ok(Math.abs((g[0] ?? 0) - padded) < 1e-5, `corner ${g[0]}`);
    assert.ok(Math.abs((g[14 * 28 + 14] ?? 0) - inside) < 1e-5, `centre ${g[14 * 28 + 14]}`);
    const c = await decodeImage(white, rgb, 1e6);
    assert.equal(c.length, 3 * 28 * 28);
    assert.ok(Math.abs((c[2 * 784 + 14 * 28 + 14] ?? 0) - (1 - 0.3) / 0.5) < 1e-5, 'blue plane');
  });

  it('turns an image upright by its EXIF orientation before resizing', async () => {
    // Stored 40 wide and 20 high, left half white; Orientation 6 says a viewer turns it 90 degrees
    // clockwise, so it shows 20 wide and 40 high with the white half on top.
    const raw = Uint8Array.from({ length: 40 * 20 }, (_, i) => (i % 40 < 20 ? 255 : 0));
    const tagged = await sharp(raw, { raw: { width: 40, height: 20, channels: 1 } }).jpeg({ quality: 95 })
      .withMetadata({ orientation: 6 }).toBuffer();
    const g = await decodeImage(tagged, grey, 1e6);
    const mean = (rows: number[], cols: number[]): number => {
      let sum = 0;
      for (const y of rows) for (const x of cols) sum += g[y * 28 + x] ?? NaN;
      return sum / (rows.length * cols.length);
    };
    const white = (1 - 0.286) / 0.353;
    const black = (0 - 0.286) / 0.353;
    // 'contain' scales 20x40 to 14x28, centred in columns 7..20; rows 0..13 white, 14..27 black.
    const span = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);
    assert.ok(Math.abs(mean(span(2, 12), span(9, 19)) - white) < 0.1, `top ${mean(span(2, 12), span(9, 19))}`);
    assert.ok(Math.abs(mean(span(16, 26), span(9, 19)) - black) < 0.1, `bottom ${mean(span(16, 26), span(9, 19))}`);
  });

  it('flattens transparency onto the background', async () => {
    const clear = await sharp({ create: { width: 28, height: 28, channels: 4, background: { r: 255, g: 255, b: 255, alpha: 0 } } })
      .png().toBuffer();
    const g = await decodeImage(clear, grey, 1e6);
    assert.ok(Math.abs((g[400] ?? 0) - (0 - 0.286) / 0.353) < 1e-5);
  });

  it('passes an image already at the model size through unchanged', async () => {
    const raw = Uint8Array.from({ length: 28 * 28 }, (_, i) => (i * 37) % 256);
    const png = await sharp(raw, { raw: { width: 28, height: 28, channels: 1 } }).png().toBuffer();
    const g = await decodeImage(png, grey, 1e6);
    const want = normalise(raw, 1, 28 * 28, grey.image.mean, grey.image.std);
    assert.deepEqual(Array.from(g), Array.from(want));
  });

  it('checks the pixel limit from the header before decoding', async () => {
    const err = await decodeImage(bombPng(5000, 5000), grey, 1e6).catch((e: unknown) => e);
    assert.ok(err instanceof AcmError);
    assert.equal(err.code, 'image_too_large');
    assert.match(err.message, /at most 1000000 pixels; got 5000x5000 = 25000000/);
  });
});
