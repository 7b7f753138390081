// The standalone FFN graphs the kernel benches time, emitted by kernels/emit_bench.py into a
// folder and reused while their shape still matches.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** What emit_bench.py wrote into shape.json. */
export interface Shape { dim: number; mlp: number; n: number; tokens_per_request: number }

/**
 * acm_ffn.onnx (capped, grouped learners) and dense_ffn.onnx of the given width in `dir`,
 * emitted again when the folder holds none or graphs of another shape. Returns their shape.
 */
export function emitGraphs(dir: string, dim: number, mlp: number): Shape {
  const shapeFile = join(dir, 'shape.json');
  const current = existsSync(shapeFile) ? (JSON.parse(readFileSync(shapeFile, 'utf8')) as Shape) : undefined;
  if (!current || current.dim !== dim || current.mlp !== mlp || !existsSync(join(dir, 'acm_ffn.onnx'))) {
    mkdirSync(dir, { recursive: true });
    execFileSync(process.env.ACM_PYTHON ?? '/usr/bin/python3',
      ['-m', 'kernels.emit_bench', '--out', dir, '--dim', String(dim), '--mlp', String(mlp)], { cwd: REPO, stdio: ['ignore', 'ignore', 'inherit'] });
  }
  return JSON.parse(readFileSync(shapeFile, 'utf8')) as Shape;
}
