// What the web page and the CLI share to draw a compute map over an image: the colour scale and
// the geometry from image pixels to the model's patch grid. The server resizes an image to the
// model's input with the manifest's fit (contain pads, cover crops, fill stretches), so a patch
// covers a different part of the original image under each fit. No Node or DOM dependency.

export type Fit = 'contain' | 'cover' | 'fill';

export interface MapGrid {
  grid: [number, number];
  values: number[][];
}

/** Five stops of the viridis scale: low compute dark blue-purple, high compute yellow. */
const STOPS: readonly (readonly [number, number, number])[] = [
  [68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37],
];

/** Colour of a fraction in [0, 1] (clamped), as RGB bytes. */
export function colour(v: number): [number, number, number] {
  const x = Math.min(1, Math.max(0, Number.isFinite(v) ? v : 0)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const t = x - i;
  const a = STOPS[i] ?? STOPS[0]!;
  const b = STOPS[i + 1] ?? a;
  return [0, 1, 2].map((k) => Math.round((a[k] ?? 0) + ((b[k] ?? 0) - (a[k] ?? 0)) * t)) as [number, number, number];
}

/**
 * For an image of width x height shown at outW x outH, a function from an output pixel to the
 * map value of the patch the model saw there, or undefined where the model saw padding only.
 */
export function patchLookup(map: MapGrid, image: { width: number; height: number }, input: { width: number; height: number; fit: Fit },
  outW: number, outH: number): (x: number, y: number) => number | undefined {
  const [rows, cols] = map.grid;
  const { width: w, height: h } = image;
  let sx: number;
  let sy: number;
  if (input.fit === 'fill') {
    sx = input.width / w;
    sy = input.height / h;
  } else {
    const s = input.fit === 'contain' ? Math.min(input.width / w, input.height / h) : Math.max(input.width / w, input.height / h);
    sx = s;
    sy = s;
  }
  const offX = (input.width - w * sx) / 2;
  const offY = (input.height - h * sy) / 2;
  return (x, y) => {
    // Centre of the output pixel, in image pixels, then in model-input pixels.
    const u = ((x + 0.5) / outW) * w;
    const v = ((y + 0.5) / outH) * h;
    const xi = u * sx + offX;
    const yi = v * sy + offY;
    if (xi < 0 || yi < 0 || xi >= input.width || yi >= input.height) return undefined;
    const c = Math.min(cols - 1, Math.floor((xi / input.width) * cols));
    const r = Math.min(rows - 1, Math.floor((yi / input.height) * rows));
    return map.values[r]?.[c];
  };
}
