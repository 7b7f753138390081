// The README's figures, drawn as SVG and rendered to PNG by sharp (no plotting dependency):
// test images with their compute maps, and accuracy against GFLOPs.
import sharp from 'sharp';

/** A colour ramp from dark blue (no learners) through red to yellow (every learner). */
const RAMP: ReadonlyArray<readonly [number, number, number]> = [
  [13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33],
];

export function heatColour(v: number): [number, number, number] {
  const x = Math.min(1, Math.max(0, v)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const f = x - i;
  const a = RAMP[i]!, b = RAMP[i + 1]!;
  return [0, 1, 2].map((c) => Math.round(a[c]! + f * (b[c]! - a[c]!))) as [number, number, number];
}

function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export interface SheetColumn {
  title: string;
  /** Greyscale pixels, side x side. */
  pixels: Uint8Array;
  /** One compute map (rows of per-patch fractions) per sheet row after the image row. */
  maps: number[][][];
}

/**
 * Columns of test images: the image itself, then one row per budget with the compute map blended
 * over it (55% heat, 45% image), and a colour legend.
 */
export async function heatmapSheet(side: number, columns: SheetColumn[], rowTitles: string[]): Promise<Buffer> {
  const scale = 4, tile = side * scale, gap = 6, left = 110, top = 22, legendH = 46;
  const rows = 1 + rowTitles.length;
  const width = left + columns.length * (tile + gap);
  const height = top + rows * (tile + gap) + legendH;
  const rgb = Buffer.alloc(width * height * 3, 255);
  const put = (x: number, y: number, c: readonly number[]): void => {
    const o = (y * width + x) * 3;
    rgb[o] = c[0]!; rgb[o + 1] = c[1]!; rgb[o + 2] = c[2]!;
  };
  columns.forEach((col, ci) => {
    const x0 = left + ci * (tile + gap);
    for (let r = 0; r < rows; r++) {
      const y0 = top + r * (tile + gap);
      const map = r === 0 ? undefined : col.maps[r - 1];
      const gr = map?.length ?? 1, gc = map?.[0]?.length ?? 1;
      for (let y = 0; y < tile; y++) {
        for (let x = 0; x < tile; x++) {
          const g = col.pixels[Math.floor(y / scale) * side + Math.floor(x / scale)]!;
          if (!map) { put(x0 + x, y0 + y, [g, g, g]); continue; }
          const v = map[Math.min(gr - 1, Math.floor((y / tile) * gr))]![Math.min(gc - 1, Math.floor((x / tile) * gc))]!;
          const h = heatColour(v);
          put(x0 + x, y0 + y, h.map((c) => Math.round(0.55 * c + 0.45 * g)));
        }
      }
    }
  });
  // Legend: the ramp from 0 to 1.
  const lx = left, ly = top + rows * (tile + gap) + 8, lw = Math.min(360, width - left - 30), lh = 12;
  for (let x = 0; x < lw; x++) {
    const c = heatColour(x / (lw - 1));
    for (let y = 0; y < lh; y++) put(lx + x, ly + y, c);
  }
  const text = [
    ...columns.map((c, i) => `<text x="${left + i * (tile + gap) + tile / 2}" y="${top - 7}" text-anchor="middle" font-size="12">${escape(c.title)}</text>`),
    ...['image', ...rowTitles].map((t, r) => `<text x="${left - 8}" y="${top + r * (tile + gap) + tile / 2 + 4}" text-anchor="end" font-size="13">${escape(t)}</text>`),
    `<text x="${lx - 4}" y="${ly + lh - 1}" text-anchor="end" font-size="11">0</text>`,
    `<text x="${lx + lw + 4}" y="${ly + lh - 1}" font-size="11">1</text>`,
    `<text x="${lx}" y="${ly + lh + 16}" font-size="11">fraction of learners run per patch (all ACMs)</text>`,
  ];
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="DejaVu Sans, sans-serif">${text.join('')}</svg>`;
  return sharp(rgb, { raw: { width, height, channels: 3 } })
    .composite([{ input: Buffer.from(svg), top: 0, left: 0 }])
    .png({ compressionLevel: 9 })
    .toBuffer();
}

export interface Series {
  label: string;
  colour: string;
  points: Array<{ x: number; y: number; note?: string }>;
  /** Draw a line through the points (else markers only). */
  line: boolean;
}

/** A scatter/line plot with linear axes, ticks and a legend. */
export async function linePlot(series: Series[], axes: { x: string; y: string; title: string }): Promise<Buffer> {
  const W = 720, H = 440, L = 70, R = 20, T = 40, B = 55;
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  const ys = series.flatMap((s) => s.points.map((p) => p.y));
  const nice = (lo: number, hi: number): [number, number, number] => {
    const span = hi - lo || 1;
    const step = 10 ** Math.floor(Math.log10(span / 5));
    const best = [1, 2, 5, 10].map((m) => m * step).find((s) => span / s <= 8) ?? 10 * step;
    return [Math.floor(lo / best) * best, Math.ceil(hi / best) * best, best];
  };
  const [x0, x1, xs_] = nice(0, Math.max(...xs) * 1.05);
  const [y0, y1, ys_] = nice(Math.min(...ys) - 0.01, Math.max(...ys) + 0.005);
  const px = (x: number): number => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const py = (y: number): number => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  const parts: string[] = [`<rect width="${W}" height="${H}" fill="white"/>`];
  for (let x = x0; x <= x1 + 1e-12; x += xs_) {
    parts.push(`<line x1="${px(x)}" y1="${T}" x2="${px(x)}" y2="${H - B}" stroke="#e4e4e4"/>`,
      `<text x="${px(x)}" y="${H - B + 16}" text-anchor="middle" font-size="11">${+x.toPrecision(3)}</text>`);
  }
  for (let y = y0; y <= y1 + 1e-12; y += ys_) {
    parts.push(`<line x1="${L}" y1="${py(y)}" x2="${W - R}" y2="${py(y)}" stroke="#e4e4e4"/>`,
      `<text x="${L - 6}" y="${py(y) + 4}" text-anchor="end" font-size="11">${+(y * 100).toPrecision(3)}%</text>`);
  }
  parts.push(`<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#444"/>`,
    `<text x="${(L + W - R) / 2}" y="${H - 14}" text-anchor="middle" font-size="13">${escape(axes.x)}</text>`,
    `<text x="16" y="${(T + H - B) / 2}" text-anchor="middle" font-size="13" transform="rotate(-90 16 ${(T + H - B) / 2})">${escape(axes.y)}</text>`,
    `<text x="${(L + W - R) / 2}" y="24" text-anchor="middle" font-size="15">${escape(axes.title)}</text>`);
  for (const s of series) {
    if (s.line && s.points.length > 1) {
      parts.push(`<polyline fill="none" stroke="${s.colour}" stroke-width="2" points="${s.points.map((p) => `${px(p.x)},${py(p.y)}`).join(' ')}"/>`);
    }
    s.points.forEach((p, i) => {
      parts.push(`<circle cx="${px(p.x)}" cy="${py(p.y)}" r="4.5" fill="${s.colour}"/>`);
      // Notes alternate below and above their points, so neighbours do not overwrite each other.
      if (p.note) parts.push(`<text x="${px(p.x) + 6}" y="${py(p.y) + (i % 2 ? -8 : 15)}" font-size="10" fill="${s.colour}">${escape(p.note)}</text>`);
    });
  }
  series.forEach((s, i) => {
    const y = H - B - 14 - i * 18;
    parts.push(`<circle cx="${W - R - 300}" cy="${y - 4}" r="4.5" fill="${s.colour}"/>`,
      `<text x="${W - R - 290}" y="${y}" font-size="12">${escape(s.label)}</text>`);
  });
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="DejaVu Sans, sans-serif">${parts.join('')}</svg>`;
  return sharp(Buffer.from(svg)).png({ compressionLevel: 9 }).toBuffer();
}
