// The CLI's --heatmap: the image with its compute map blended over it, as a PNG, with a colour
// scale strip (0 at the left, 1 at the right) below. Small images are enlarged with nearest-
// neighbour sampling so their patches stay visible.
import sharp from 'sharp';
import { colour, patchLookup, type Fit, type MapGrid } from './heatmap-core.js';

const MIN_SIDE = 224;
const MAX_SIDE = 1024;
const ALPHA = 0.55;
const LEGEND = 16;

export interface ModelInput { width: number; height: number; fit: Fit }

/** Renders the overlay; returns the PNG's width and height. */
export async function writeHeatmap(image: Uint8Array, map: MapGrid, input: ModelInput, out: string): Promise<{ width: number; height: number }> {
  const meta = await sharp(image, { page: 0, pages: 1 }).metadata();
  // Drawn upright, as the server decodes it: EXIF orientations 5 to 8 turn the image a quarter,
  // so the stored width is the shown height.
  const storedW = meta.width ?? 0;
  const storedH = meta.pageHeight ?? meta.height ?? 0;
  const turned = (meta.orientation ?? 1) >= 5;
  const w = turned ? storedH : storedW;
  const h = turned ? storedW : storedH;
  if (w <= 0 || h <= 0) throw new Error('the image has no pixels');
  const scale = Math.min(MAX_SIDE / Math.max(w, h), Math.max(1, MIN_SIDE / Math.min(w, h)));
  const outW = Math.max(1, Math.round(w * scale));
  const outH = Math.max(1, Math.round(h * scale));
  const base = await sharp(image, { page: 0, pages: 1 })
    .rotate()
    .flatten({ background: { r: 0, g: 0, b: 0 } })
    .resize(outW, outH, { kernel: scale > 1 ? 'nearest' : 'lanczos3', fit: 'fill' })
    .toColourspace('srgb').removeAlpha().raw().toBuffer();
  const lookup = patchLookup(map, { width: w, height: h }, input, outW, outH);
  const pixels = Buffer.alloc(outW * (outH + LEGEND) * 3);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const i = (y * outW + x) * 3;
      const v = lookup(x, y);
      const c = v === undefined ? undefined : colour(v);
      for (let k = 0; k < 3; k++) {
        const b = base[i + k] ?? 0;
        pixels[i + k] = c ? Math.round(b * (1 - ALPHA) + (c[k] ?? 0) * ALPHA) : b;
      }
    }
  }
  for (let y = outH; y < outH + LEGEND; y++) {
    for (let x = 0; x < outW; x++) {
      const c = colour(outW === 1 ? 1 : x / (outW - 1));
      pixels.set(c, (y * outW + x) * 3);
    }
  }
  await sharp(pixels, { raw: { width: outW, height: outH + LEGEND, channels: 3 } }).png().toFile(out);
  return { width: outW, height: outH + LEGEND };
}
