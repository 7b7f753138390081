// Finds and checks model bundles: every sub-folder of the models folder holding acm.json. The
// check happens once, at start-up, so a broken bundle stops the server with a message instead of
// answering wrongly later.
import { readdir, readFile, stat } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import { join } from 'node:path';
import type { ModelShape } from './backend.js';
import { ManifestError } from './manifest-fields.js';
import { parseImageManifest, type ImageManifest } from './manifest.js';
import { readOnnxMetadata } from './onnx-metadata.js';

export interface Bundle {
  /** Folder holding acm.json. */
  readonly dir: string;
  /** Absolute path of the ONNX graph the server runs. */
  readonly graphPath: string;
  readonly manifest: ImageManifest;
  /** Whether the ONNX metadata carried the manifest (and so was checked against acm.json). */
  readonly embeddedManifest: boolean;
}

export interface SkippedBundle {
  readonly dir: string;
  readonly reason: string;
}

export interface BundleScan {
  readonly bundles: readonly Bundle[];
  /** Folders with acm.json for a task this server does not serve; reported, not fatal. */
  readonly skipped: readonly SkippedBundle[];
}

/** Tensor sizes a runtime needs to pack inputs and unpack outputs of this bundle's graph. */
export function modelShape(b: Bundle): ModelShape {
  const m = b.manifest;
  return { input: [m.image.channels, m.image.height, m.image.width], logits: [m.labels.length],
    acms: m.acms.length, tokens: m.tokens.count };
}

const MANIFEST_FILE = 'acm.json';
const METADATA_KEY = 'acm_manifest';
/** acm.json is a few kilobytes; anything far larger is not a manifest. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

export async function readJson(bundle: string, path: string): Promise<unknown> {
  const info = await stat(path);
  if (info.size > MAX_MANIFEST_BYTES) {
    throw new ManifestError(bundle, 'manifest', `file is ${info.size} bytes, over ${MAX_MANIFEST_BYTES}`);
  }
  const text = await readFile(path, 'utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ManifestError(bundle, 'manifest', `is not valid JSON: ${(err as Error).message}`);
  }
}

/** The exporter writes the same manifest into the ONNX metadata; two copies that disagree mean a
 * graph was swapped or a manifest hand-edited, and neither copy can then be trusted. */
export async function checkEmbeddedManifest(bundle: string, graphPath: string, manifest: unknown): Promise<boolean> {
  let meta: Map<string, string>;
  try {
    meta = await readOnnxMetadata(graphPath);
  } catch (err) {
    throw new ManifestError(bundle, 'graph', `is not a readable ONNX file: ${(err as Error).message}`);
  }
  const embedded = meta.get(METADATA_KEY);
  if (embedded === undefined) return false;
  let parsed: unknown;
  try {
    parsed = JSON.parse(embedded);
  } catch {
    throw new ManifestError(bundle, 'graph', `metadata ${METADATA_KEY} is not valid JSON`);
  }
  if (!isDeepStrictEqual(parsed, manifest)) {
    throw new ManifestError(bundle, 'graph', `metadata ${METADATA_KEY} differs from acm.json; re-export the bundle`);
  }
  return true;
}

/** Loads and checks one bundle folder (which must hold acm.json). */
export async function loadBundle(dir: string): Promise<Bundle | SkippedBundle> {
  const folder = dir.split('/').filter(Boolean).pop() ?? dir;
  const raw = await readJson(folder, join(dir, MANIFEST_FILE));
  const task = (raw as { task?: unknown } | null)?.task;
  if (task !== 'image-classification' && typeof task === 'string' && /^[a-z-]+$/.test(task)) {
    return { dir, reason: `task ${JSON.stringify(task)} is not served by this server` };
  }
  const manifest = parseImageManifest(folder, raw);
  const graphPath = join(dir, manifest.graph);
  if (!(await isFile(graphPath))) throw new ManifestError(folder, 'graph', `names ${manifest.graph}, which does not exist`);
  if (manifest.dense_graph !== undefined && !(await isFile(join(dir, manifest.dense_graph)))) {
    throw new ManifestError(folder, 'dense_graph', `names ${manifest.dense_graph}, which does not exist`);
  }
  const embeddedManifest = await checkEmbeddedManifest(folder, graphPath, raw);
  return { dir, graphPath, manifest, embeddedManifest };
}

/** Loads every bundle under modelsDir, in name order so "the first model" is stable. */
export async function scanBundles(modelsDir: string): Promise<BundleScan> {
  let entries;
  try {
    entries = await readdir(modelsDir, { withFileTypes: true });
  } catch (err) {
    throw new Error(`models folder ${modelsDir} cannot be read (${(err as Error).message}); set ACM_MODELS_DIR`);
  }
  const bundles: Bundle[] = [];
  const skipped: SkippedBundle[] = [];
  const byName = new Map<string, string>();
  for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    const dir = join(modelsDir, entry.name);
    if (!entry.isDirectory() || !(await isFile(join(dir, MANIFEST_FILE)))) continue;
    const loaded = await loadBundle(dir);
    if (!('manifest' in loaded)) {
      skipped.push(loaded);
      continue;
    }
    const other = byName.get(loaded.manifest.name);
    if (other !== undefined) {
      throw new ManifestError(entry.name, 'name', `${JSON.stringify(loaded.manifest.name)} is also used by ${other}`);
    }
    byName.set(loaded.manifest.name, dir);
    bundles.push(loaded);
  }
  return { bundles, skipped };
}
