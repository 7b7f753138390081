// Images for tests, made in memory: valid ones of every accepted format, and the broken ones the
// server must refuse (truncated files, a header that declares a decompression bomb).
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';

export type Format = 'png' | 'jpeg' | 'webp' | 'gif' | 'tiff';

/** A deterministic textured image: a gradient plus a square whose position depends on seed. */
export async function makeImage(seed: number, format: Format = 'png', width = 28, height = 28): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3);
  const sx = (seed * 7) % width;
  const sy = (seed * 11) % height;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const inSquare = Math.abs(x - sx) < width / 4 && Math.abs(y - sy) < height / 4;
      const base = ((x * 9 + y * 5 + seed * 37) % 200) + (inSquare ? 55 : 0);
      const i = (y * width + x) * 3;
      raw[i] = base;
      raw[i + 1] = (base + seed * 13) % 256;
      raw[i + 2] = 255 - base;
    }
  }
  return sharp(raw, { raw: { width, height, channels: 3 } }).toFormat(format).toBuffer();
}

/** The first half of a valid file: a header that promises more than the data holds. */
export function truncated(file: Buffer): Buffer {
  return file.subarray(0, Math.floor(file.length / 2));
}

/** One PNG chunk: length, type, data, CRC. */
export function chunk(type: string, data: Uint8Array): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/**
 * A PNG whose header declares width x height pixels while its data is a few bytes: what a
 * decompression bomb looks like to the header check. Building a real 20000x20000 PNG would cost
 * seconds of CPU for the same test.
 */
export function bombPng(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // greyscale
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.alloc(1024))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}
