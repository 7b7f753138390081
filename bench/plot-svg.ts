// The model benchmark's JSON (bench/model-bench.ts) as an SVG line chart: milliseconds per image (or window)
// against the requested budget, one solid line per batch size for the ACM graph (with the
// repeats' min-max as error bars) and a dashed line at the same colour for the dense graph, which
// does not depend on the budget. Pure string building, so it is testable without rendering.
import { timingSettings } from './stats.js';

export interface ModelBenchJson {
  model: string;
  /** What one row of a batch is: 'image' (absent in reports from before speech bundles) or 'window'. */
  unit?: string;
  threads: number;
  repeats: number;
  rows: {
    batch: number;
    dense_ms_per_image: number;
    dense_spread?: [number, number];
    acm: { budget: number; ms_per_image: number; spread?: [number, number]; used?: number }[];
  }[];
}

const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];

/** Checks the fields the chart reads; a message names the first one missing or not finite. */
export function checkModelBenchJson(data: unknown): ModelBenchJson {
  const d = data as Partial<ModelBenchJson>;
  if (typeof d?.model !== 'string' || !Array.isArray(d.rows) || d.rows.length === 0) {
    throw new Error('not a model-bench JSON: expected { model, threads, repeats, rows: [...] } with at least one row');
  }
  for (const [i, r] of d.rows.entries()) {
    if (!Number.isFinite(r.batch) || !Number.isFinite(r.dense_ms_per_image) || !Array.isArray(r.acm) || r.acm.length === 0) {
      throw new Error(`rows[${i}]: expected a finite batch, dense_ms_per_image and a non-empty acm list`);
    }
    for (const [j, c] of r.acm.entries()) {
      if (!Number.isFinite(c.budget) || !Number.isFinite(c.ms_per_image)) throw new Error(`rows[${i}].acm[${j}]: budget and ms_per_image must be finite`);
    }
  }
  return d as ModelBenchJson;
}

function niceStep(range: number, ticks: number): number {
  const raw = range / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const n = raw / mag;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * mag;
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function modelPlotSvg(data: ModelBenchJson, width = 800, height = 500): string {
  const m = { left: 70, right: 170, top: 50, bottom: 60 };
  const unit = typeof data.unit === 'string' ? data.unit : 'image';
  const w = width - m.left - m.right;
  const h = height - m.top - m.bottom;
  const ys = data.rows.flatMap((r) => [r.dense_ms_per_image, ...(r.dense_spread ?? []),
    ...r.acm.flatMap((c) => [c.ms_per_image, ...(c.spread ?? [])])]).filter(Number.isFinite);
  const step = niceStep(Math.max(...ys) * 1.05 || 1, 6);
  const yMax = Math.ceil((Math.max(...ys) * 1.05) / step) * step || 1;
  const x = (b: number): number => m.left + b * w;
  const y = (v: number): number => m.top + h - (v / yMax) * h;
  const parts: string[] = [];
  parts.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  parts.push(`<text x="${width / 2}" y="28" text-anchor="middle" font-size="17" font-family="sans-serif">` +
    `${esc(data.model)}: time per ${esc(unit)} vs budget (${timingSettings(data.threads, data.repeats)})</text>`);
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    parts.push(`<line x1="${m.left}" x2="${m.left + w}" y1="${y(v)}" y2="${y(v)}" stroke="#e0e0e0"/>`);
    parts.push(`<text x="${m.left - 8}" y="${y(v) + 4}" text-anchor="end" font-size="12" font-family="sans-serif">${+v.toPrecision(6)}</text>`);
  }
  for (let b = 0; b <= 1.0001; b += 0.25) {
    parts.push(`<line x1="${x(b)}" x2="${x(b)}" y1="${m.top + h}" y2="${m.top + h + 5}" stroke="black"/>`);
    parts.push(`<text x="${x(b)}" y="${m.top + h + 20}" text-anchor="middle" font-size="12" font-family="sans-serif">${b}</text>`);
  }
  parts.push(`<line x1="${m.left}" x2="${m.left + w}" y1="${m.top + h}" y2="${m.top + h}" stroke="black"/>`);
  parts.push(`<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${m.top + h}" stroke="black"/>`);
  parts.push(`<text x="${m.left + w / 2}" y="${height - 15}" text-anchor="middle" font-size="13" font-family="sans-serif">requested budget</text>`);
  parts.push(`<text transform="translate(18 ${m.top + h / 2}) rotate(-90)" text-anchor="middle" font-size="13" font-family="sans-serif">ms per ${esc(unit)}</text>`);
  data.rows.forEach((r, i) => {
    const colour = COLOURS[i % COLOURS.length]!;
    const pts = [...r.acm].sort((a, b) => a.budget - b.budget);
    parts.push(`<polyline class="acm" fill="none" stroke="${colour}" stroke-width="2" points="${pts.map((c) => `${x(c.budget)},${y(c.ms_per_image)}`).join(' ')}"/>`);
    for (const c of pts) {
      if (c.spread) parts.push(`<line x1="${x(c.budget)}" x2="${x(c.budget)}" y1="${y(c.spread[0])}" y2="${y(c.spread[1])}" stroke="${colour}"/>`);
      parts.push(`<circle cx="${x(c.budget)}" cy="${y(c.ms_per_image)}" r="3.5" fill="${colour}"/>`);
    }
    parts.push(`<line class="dense" x1="${x(0)}" x2="${x(1)}" y1="${y(r.dense_ms_per_image)}" y2="${y(r.dense_ms_per_image)}" ` +
      `stroke="${colour}" stroke-width="1.5" stroke-dasharray="6 4"/>`);
    const ly = m.top + 10 + i * 40;
    parts.push(`<line x1="${m.left + w + 15}" x2="${m.left + w + 40}" y1="${ly}" y2="${ly}" stroke="${colour}" stroke-width="2"/>`);
    parts.push(`<text x="${m.left + w + 46}" y="${ly + 4}" font-size="12" font-family="sans-serif">ACM, batch ${r.batch}</text>`);
    parts.push(`<line x1="${m.left + w + 15}" x2="${m.left + w + 40}" y1="${ly + 18}" y2="${ly + 18}" stroke="${colour}" stroke-width="1.5" stroke-dasharray="6 4"/>`);
    parts.push(`<text x="${m.left + w + 46}" y="${ly + 22}" font-size="12" font-family="sans-serif">dense, batch ${r.batch}</text>`);
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">${parts.join('')}</svg>`;
}
