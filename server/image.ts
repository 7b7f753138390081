// Turns request bytes into the model's input tensor, following the bundle's input contract:
// decode (first frame), turn it upright by its EXIF orientation, flatten alpha onto the
// background, resize with the manifest's fit, convert to the manifest's channels, then
// (byte / 255 - mean) / std laid out CHW. A plain PNG that needs none of those steps is read
// directly (png.ts); everything else goes through libvips. The pixel count is checked from the
// header before any pixel is decoded: an image that declares 20000x20000 is refused without
// allocating it.
import sharp from 'sharp';
import { AcmError, shown } from './errors.js';
import type { ImageManifest } from './manifest.js';
import { readDirectPng } from './png.js';

/** Formats the server decodes; sharp knows more (SVG, PDF, HEIF), but each is attack surface. */
export const IMAGE_FORMATS = ['png', 'jpeg', 'webp', 'gif', 'tiff'] as const;

/** Content-Type subtypes accepted for a raw image body, and what they mean. */
export const IMAGE_MEDIA_TYPES: ReadonlySet<string> = new Set([
  'image/png', 'image/jpeg', 'image/jpg', 'image/pjpeg', 'image/webp', 'image/gif', 'image/tiff',
]);

const FORMAT_SET: ReadonlySet<string> = new Set(IMAGE_FORMATS);

// Every request brings a new image, so libvips' operation cache would only hold memory.
sharp.cache(false);

interface Header {
  format: string;
  width: number;
  height: number;
}

async function readHeader(bytes: Buffer): Promise<Header> {
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch {
    throw new AcmError('invalid_image', `image could not be decoded: the ${bytes.length} bytes given are not a ` +
      `${IMAGE_FORMATS.join(', ')} image`);
  }
  const format = meta.format ?? 'unknown';
  if (!FORMAT_SET.has(format)) {
    throw new AcmError('unsupported_media_type', `image format must be one of ${IMAGE_FORMATS.join(', ')}; got ${shown(format)}`);
  }
  const width = meta.width ?? 0;
  // Multi-frame images (GIF, TIFF) report the stacked height; only the first frame is used.
  const height = meta.pageHeight ?? meta.height ?? 0;
  if (width <= 0 || height <= 0) throw new AcmError('invalid_image', `image has no pixels (${width}x${height})`);
  return { format, width, height };
}

/** The part of a manifest decoding reads: the input contract. */
export type ImageContract = ImageManifest['image'];

/** Which reader decoded an image: png.ts directly, or libvips through sharp. */
export type ImageReader = 'png' | 'libvips';

/** A decoded image: CHW floats for the graph, and the reader that produced them. */
export interface DecodedImage { readonly pixels: Float32Array; readonly reader: ImageReader }

/**
 * Decodes and normalises one image into a CHW Float32Array for the bundle's graph. With `directPng`,
 * a plain PNG already at the input size (8-bit gray for one channel, RGB for three) is read
 * without libvips (png.ts): the same pixels, without its set-up cost.
 */
export async function decodeImage(bytes: Buffer, m: { readonly image: ImageContract }, maxPixels: number,
  directPng = true): Promise<Float32Array> {
  return (await readImage(bytes, m, maxPixels, directPng)).pixels;
}

/** decodeImage, also saying which reader decoded the image. */
export async function readImage(bytes: Buffer, m: { readonly image: ImageContract }, maxPixels: number,
  directPng = true): Promise<DecodedImage> {
  if (bytes.length === 0) throw new AcmError('empty_body', 'image body is empty; send the image bytes');
  const { height, width, channels, mean, std, resize } = m.image;
  if (directPng && width * height <= maxPixels) {
    const hwc = readDirectPng(bytes, width, height, channels);
    if (hwc !== undefined) return { pixels: normalise(hwc, channels, height * width, mean, std), reader: 'png' };
  }
  const header = await readHeader(bytes);
  const pixels = header.width * header.height;
  if (pixels > maxPixels) {
    throw new AcmError('image_too_large', `image must have at most ${maxPixels} pixels; got ` +
      `${header.width}x${header.height} = ${pixels}`);
  }
  const [r, g, b] = m.image.background;
  const background = { r, g, b, alpha: 1 };
  // rotate() with no angle orients by the EXIF Orientation tag: a camera stores a portrait photo
  // as landscape pixels plus that tag, and the model must see what a viewer shows.
  let pipeline = sharp(bytes, { limitInputPixels: maxPixels, failOn: 'truncated', page: 0, pages: 1 })
    .rotate()
    .flatten({ background })
    .resize(width, height, { fit: resize, background });
  pipeline = channels === 1 ? pipeline.toColourspace('b-w') : pipeline.toColourspace('srgb').removeAlpha();
  let data: Buffer;
  let info: sharp.OutputInfo;
  try {
    ({ data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true }));
  } catch (err) {
    const reason = (err as Error).message.split('\n')[0] ?? 'decode failed';
    throw new AcmError('invalid_image', `image could not be decoded (damaged or truncated ${header.format}): ${shown(reason)}`);
  }
  if (info.channels !== channels || info.width !== width || info.height !== height) {
    throw new AcmError('internal', `image pipeline produced ${info.width}x${info.height}x${info.channels}; ` +
      `expected ${width}x${height}x${channels}`);
  }
  return { pixels: normalise(data, channels, height * width, mean, std), reader: 'libvips' };
}

/** Interleaved HWC bytes to planar CHW floats: (byte / 255 - mean[c]) / std[c]. */
export function normalise(hwc: Uint8Array, channels: number, area: number, mean: readonly number[],
  std: readonly number[]): Float32Array {
  const out = new Float32Array(channels * area);
  for (let c = 0; c < channels; c++) {
    const mu = mean[c] ?? 0;
    const sigma = std[c] ?? 1;
    const plane = c * area;
    for (let i = 0; i < area; i++) out[plane + i] = ((hwc[i * channels + c] ?? 0) / 255 - mu) / sigma;
  }
  return out;
}
