// A direct reader for the one kind of image a tuned client sends most: a plain PNG already at the
// model's input size. For it, libvips' pipeline (header read, flatten, resize, colour conversion)
// changes no pixel, yet on a 28x28 image it costs over ten times what inflating and unfiltering the
// rows costs here (npm run bench:decode). Anything else — another size, bit depth or colour type, interlacing, a palette,
// transparency, colour-management chunks, a damaged file — is not read here: the caller falls back
// to libvips, which gives the same pixels or the same error as it always did.
//
// PNG format: W3C Portable Network Graphics Specification (Second Edition), sections 5 (chunks),
// 9 (filters) and 11 (IHDR).
import { inflateSync } from 'node:zlib';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Chunks that carry no pixel meaning libvips would apply: text, time, physical size, the sRGB tag. */
const INERT_CHUNKS: ReadonlySet<string> = new Set(['tEXt', 'zTXt', 'iTXt', 'tIME', 'pHYs', 'sRGB']);

/** PNG colour type for gray (1 channel) and RGB (3 channels), 8 bits per sample. */
const COLOUR_TYPE: Readonly<Record<number, number>> = { 1: 0, 3: 2 };

// zlib.crc32 exists from Node 20.15 only; the table is small enough to keep every Node 20 served.
const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

/** CRC-32 as PNG (and zlib) compute it. */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * The pixels (HWC bytes) of `bytes` when it is a PNG that needs no conversion for the contract:
 * `width` x `height`, 8-bit gray for 1 channel or 8-bit RGB for 3, not interlaced, every chunk
 * intact (CRC), none but IHDR, one run of IDAT, IEND and inert ones, nothing after IEND.
 * Otherwise undefined, never an error.
 */
export function readDirectPng(bytes: Uint8Array, width: number, height: number, channels: number): Uint8Array | undefined {
  const colourType = COLOUR_TYPE[channels];
  if (colourType === undefined || bytes.length < SIGNATURE.length + 25) return undefined;
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (!buf.subarray(0, 8).equals(SIGNATURE)) return undefined;
  const idat: Buffer[] = [];
  let offset = 8;
  let sawHeader = false;
  let ended = false;
  let previous = '';
  while (offset + 12 <= buf.length && !ended) {
    const length = buf.readUInt32BE(offset);
    const end = offset + 12 + length;
    if (end > buf.length) return undefined;
    const type = buf.toString('latin1', offset + 4, offset + 8);
    const data = buf.subarray(offset + 8, offset + 8 + length);
    if (crc32(buf.subarray(offset + 4, offset + 8 + length)) !== buf.readUInt32BE(offset + 8 + length)) return undefined;
    if (!sawHeader) {
      // IHDR first: width, height, bit depth, colour type, compression, filter, interlace.
      if (type !== 'IHDR' || length !== 13) return undefined;
      if (data.readUInt32BE(0) !== width || data.readUInt32BE(4) !== height) return undefined;
      if (data[8] !== 8 || data[9] !== colourType || data[10] !== 0 || data[11] !== 0 || data[12] !== 0) return undefined;
      sawHeader = true;
    } else if (type === 'IDAT') {
      // The data is one run of consecutive IDAT chunks.
      if (idat.length > 0 && previous !== 'IDAT') return undefined;
      idat.push(data);
    } else if (type === 'IEND') {
      ended = true;
    } else if (!INERT_CHUNKS.has(type)) {
      return undefined;
    }
    previous = type;
    offset = end;
  }
  if (!ended || offset !== buf.length || idat.length === 0) return undefined;
  const stride = width * channels;
  const expected = height * (stride + 1);
  let raw: Buffer;
  try {
    // One byte more than a whole image may hold, so a stream that inflates further is caught.
    raw = inflateSync(idat.length === 1 ? idat[0]! : Buffer.concat(idat), { maxOutputLength: expected + 1 });
  } catch {
    return undefined;
  }
  if (raw.length !== expected) return undefined;
  return unfilter(raw, width, height, channels);
}

/** Reverses the per-row filters (None, Sub, Up, Average, Paeth) of 8-bit samples. */
export function unfilter(raw: Uint8Array, width: number, height: number, bpp: number): Uint8Array | undefined {
  const stride = width * bpp;
  const out = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const src = y * (stride + 1) + 1;
    const row = y * stride;
    const prev = row - stride;
    for (let x = 0; x < stride; x++) {
      const a = x >= bpp ? out[row + x - bpp]! : 0;
      const b = y > 0 ? out[prev + x]! : 0;
      let predictor: number;
      switch (filter) {
        case 0: predictor = 0; break;
        case 1: predictor = a; break;
        case 2: predictor = b; break;
        case 3: predictor = (a + b) >>> 1; break;
        case 4: {
          const c = x >= bpp && y > 0 ? out[prev + x - bpp]! : 0;
          const p = a + b - c;
          const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
          predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default: return undefined;
      }
      out[row + x] = (raw[src + x]! + predictor) & 0xff;
    }
  }
  return out;
}
