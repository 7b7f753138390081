// The direct PNG reader: for a plain PNG at the input size it gives exactly the pixels libvips
// gives, through every row filter and split data; for anything it does not handle it declines,
// and decodeImage then answers exactly as it does with the reader off (same pixels or same error).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32, deflateSync } from 'node:zlib';
import { describe, it } from 'node:test';
import sharp from 'sharp';
import { decodeImage, type ImageContract } from '../server/image.js';
import { crc32 as pngCrc32, readDirectPng } from '../server/png.js';
import { chunk } from './support/images.js';
import { REPO_ROOT } from './support/tiny-bundle.js';

const FIXTURES = join(REPO_ROOT, 'test', 'fixtures', 'fashion-test');

interface PngOptions {
  /** Filter type of row y: filters[y % filters.length]. */
  filters?: number[];
  /** IDAT pieces the compressed data is cut into. */
  pieces?: number;
  /** Chunks placed between IHDR and the first IDAT. */
  extra?: [string, Uint8Array][];
  bitDepth?: number;
  colourType?: number;
  interlace?: number;
}

/** A PNG written by hand, so each row can carry the filter a test asks for. */
function encodePng(pixels: Uint8Array, width: number, height: number, channels: number, o: PngOptions = {}): Buffer {
  const filters = o.filters ?? [0];
  const stride = width * channels;
  const raw = Buffer.alloc(height * (stride + 1));
  for (let y = 0; y < height; y++) {
    const f = filters[y % filters.length]!;
    raw[y * (stride + 1)] = f;
    for (let x = 0; x < stride; x++) {
      const v = pixels[y * stride + x]!;
      const a = x >= channels ? pixels[y * stride + x - channels]! : 0;
      const b = y > 0 ? pixels[(y - 1) * stride + x]! : 0;
      const c = x >= channels && y > 0 ? pixels[(y - 1) * stride + x - channels]! : 0;
      const p = a + b - c;
      const paeth = Math.abs(p - a) <= Math.abs(p - b) && Math.abs(p - a) <= Math.abs(p - c) ? a : Math.abs(p - b) <= Math.abs(p - c) ? b : c;
      const predictor = [0, a, b, (a + b) >> 1, paeth][f]!;
      raw[y * (stride + 1) + 1 + x] = (v - predictor) & 0xff;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = o.bitDepth ?? 8;
  ihdr[9] = o.colourType ?? (channels === 1 ? 0 : 2);
  ihdr[12] = o.interlace ?? 0;
  const z = deflateSync(raw);
  const pieces = o.pieces ?? 1;
  const size = Math.ceil(z.length / pieces);
  const idat = Array.from({ length: pieces }, (_, i) => chunk('IDAT', z.subarray(i * size, (i + 1) * size)));
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr),
    ...(o.extra ?? []).map(([t, d]) => chunk(t, d)), ...idat, chunk('IEND', new Uint8Array(0))]);
}

/** The PNG with a tEXt chunk moved in between its (two) IDAT chunks. */
function splitIdat(png: Buffer): Buffer {
  const first = 8 + 25; // signature, IHDR
  const firstLength = png.readUInt32BE(first);
  const cut = first + 12 + firstLength;
  return Buffer.concat([png.subarray(0, cut), chunk('tEXt', Buffer.from('Comment\0between')), png.subarray(cut)]);
}

function noise(n: number, seed: number): Uint8Array {
  let s = seed;
  return Uint8Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s >> 23;
  });
}

const contract = (channels: 1 | 3, width = 28, height = 28): ImageContract => ({
  height, width, channels, mean: channels === 1 ? [0.286] : [0.5, 0.4, 0.3], std: channels === 1 ? [0.353] : [0.25, 0.2, 0.3],
  resize: 'contain', background: [0, 0, 0],
});

/** The pixels libvips decodes from a PNG, as HWC bytes of gray (1 channel) or sRGB (3). */
const libvips = async (png: Buffer, channels = 1): Promise<Uint8Array> =>
  new Uint8Array(await sharp(png).toColourspace(channels === 1 ? 'b-w' : 'srgb').raw().toBuffer());

/** decodeImage with and without the direct reader: both results, or both error codes. */
async function bothWays(png: Buffer, image: ImageContract): Promise<[unknown, unknown]> {
  const run = (direct: boolean): Promise<unknown> => decodeImage(png, { image }, 1e6, direct).then((t) => Array.from(t),
    (e: unknown) => `error ${(e as { code?: string }).code}`);
  return [await run(true), await run(false)];
}

describe('direct PNG reader', () => {
  it('reads every committed test image exactly as libvips does, and decodeImage gives the same tensor', async () => {
    const files = readdirSync(FIXTURES).filter((f) => f.endsWith('.png'));
    assert.ok(files.length >= 100);
    for (const f of files) {
      const png = readFileSync(join(FIXTURES, f));
      const direct = readDirectPng(png, 28, 28, 1);
      assert.ok(direct !== undefined, `${f} is read directly`);
      assert.deepEqual(direct, await libvips(png), f);
    }
    const png = readFileSync(join(FIXTURES, files[0]!));
    const [direct, viaLibvips] = await bothWays(png, contract(1));
    assert.deepEqual(direct, viaLibvips);
  });

  for (const channels of [1, 3] as const) {
    it(`reverses every row filter, over split data and inert chunks (${channels} channel${channels > 1 ? 's' : ''})`, async () => {
      const pixels = noise(28 * 28 * channels, channels);
      for (const filters of [[0], [1], [2], [3], [4], [0, 1, 2, 3, 4]]) {
        const png = encodePng(pixels, 28, 28, channels, { filters, pieces: 3, extra: [['tEXt', Buffer.from('Comment\0test')], ['pHYs', Buffer.alloc(9)]] });
        assert.deepEqual(await libvips(png, channels), pixels, 'the test encoder is right');
        assert.deepEqual(readDirectPng(png, 28, 28, channels), pixels, `filters ${filters.join(',')}`);
      }
      const png = encodePng(pixels, 28, 28, channels, { filters: [4] });
      const [direct, viaLibvips] = await bothWays(png, contract(channels));
      assert.deepEqual(direct, viaLibvips);
    });
  }

  it('declines what it does not handle, and decodeImage then answers as it does without it', async () => {
    const gray = noise(28 * 28, 7);
    const rgb = noise(28 * 28 * 3, 8);
    const good = encodePng(gray, 28, 28, 1);
    const badCrc = Buffer.from(good);
    badCrc[badCrc.length - 20] = 0xff ^ badCrc[badCrc.length - 20]!; // a byte of the IDAT data
    const cases: [string, Buffer, ImageContract][] = [
      ['another size', encodePng(noise(30 * 28, 1), 30, 28, 1), contract(1)],
      ['RGB for a one-channel model', encodePng(rgb, 28, 28, 3), contract(1)],
      ['gray for a three-channel model', good, contract(3)],
      ['gray with alpha', encodePng(noise(28 * 28 * 2, 2), 28, 28, 2, { colourType: 4 }), contract(1)],
      ['RGBA', encodePng(noise(28 * 28 * 4, 3), 28, 28, 4, { colourType: 6 }), contract(3)],
      ['a transparent colour (tRNS)', encodePng(gray, 28, 28, 1, { extra: [['tRNS', Buffer.from([0, 0])]] }), contract(1)],
      ['a gamma chunk', encodePng(gray, 28, 28, 1, { extra: [['gAMA', Buffer.from([0, 0, 0xb1, 0x8f])]] }), contract(1)],
      ['a damaged chunk (CRC)', badCrc, contract(1)],
      ['a file cut short', good.subarray(0, good.length - 30), contract(1)],
      ['not a PNG', Buffer.from('GIF89a not really'), contract(1)],
      ['bytes after IEND', Buffer.concat([good, Buffer.from('trailing')]), contract(1)],
      ['a chunk between IDATs', splitIdat(encodePng(gray, 28, 28, 1, { pieces: 2 })), contract(1)],
    ];
    const interlaced = await sharp(Buffer.from(gray), { raw: { width: 28, height: 28, channels: 1 } }).png({ progressive: true }).toBuffer();
    const palette = await sharp(Buffer.from(rgb), { raw: { width: 28, height: 28, channels: 3 } }).png({ palette: true }).toBuffer();
    const sixteen = await sharp(Buffer.from(gray), { raw: { width: 28, height: 28, channels: 1 } }).toColourspace('grey16').png().toBuffer();
    cases.push(['interlaced', interlaced, contract(1)], ['a palette', palette, contract(3)], ['16-bit', sixteen, contract(1)]);
    for (const [what, png, image] of cases) {
      assert.equal(readDirectPng(png, image.width, image.height, image.channels), undefined, what);
      const [direct, viaLibvips] = await bothWays(png, image);
      assert.deepEqual(direct, viaLibvips, what);
    }
    assert.ok((await sharp(sixteen).metadata()).depth === 'ushort', 'the 16-bit case is 16-bit');
    assert.ok((await sharp(interlaced).metadata()).isProgressive, 'the interlaced case is interlaced');
  });

  it('computes CRC-32 as zlib does', () => {
    for (const data of [new Uint8Array(0), Buffer.from('IEND'), noise(1000, 9)]) assert.equal(pngCrc32(data), crc32(data));
  });

  it('declines data that inflates to more than the image holds, without inflating it all', () => {
    const big = encodePng(noise(28 * 56, 4), 28, 56, 1);
    // The same data under a header that says 28x28.
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(28, 0);
    ihdr.writeUInt32BE(28, 4);
    ihdr[8] = 8;
    const lying = Buffer.concat([big.subarray(0, 8), chunk('IHDR', ihdr), big.subarray(8 + 25)]);
    assert.equal(readDirectPng(lying, 28, 28, 1), undefined);
  });
});
