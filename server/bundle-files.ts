// The files of a bundle folder, whatever its task: acm.json (read with a size bound), the graph
// files it names, the manifest copy inside the ONNX metadata, and the walk over the models folder.
// bundle.ts (image) and speech/bundle.ts each parse the manifest of their own task in between.
import { readdir, readFile, stat } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import { join } from 'node:path';
import { ManifestError } from './manifest-fields.js';
import { readOnnxMetadata } from './onnx-metadata.js';

/** A bundle whose manifest, graph files and embedded manifest copy have been checked. */
export interface LoadedBundle<M> {
  /** Folder holding acm.json. */
  readonly dir: string;
  /** Absolute path of the ONNX graph the server runs. */
  readonly graphPath: string;
  readonly manifest: M;
  /** Whether the ONNX metadata carried the manifest (and so was checked against acm.json). */
  readonly embeddedManifest: boolean;
}

/** What the file checks need of a parsed manifest. */
interface GraphFiles {
  readonly graph: string;
  readonly dense_graph?: string;
}

export const MANIFEST_FILE = 'acm.json';
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

/** The `task` of a parsed acm.json, before it is checked (undefined when there is none). */
export function manifestTask(raw: unknown): unknown {
  return (raw as { task?: unknown } | null)?.task;
}

/** A bundle folder's acm.json, parsed as JSON only; `folder` names the bundle in error messages. */
export async function readManifest(dir: string): Promise<{ folder: string; raw: unknown }> {
  const folder = dir.split('/').filter(Boolean).pop() ?? dir;
  return { folder, raw: await readJson(folder, join(dir, MANIFEST_FILE)) };
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

/** Parses `raw` with the task's parser, then checks the graph files it names and the embedded copy. */
export async function openBundle<M extends GraphFiles>(dir: string, folder: string, raw: unknown,
  parse: (bundle: string, raw: unknown) => M): Promise<LoadedBundle<M>> {
  const manifest = parse(folder, raw);
  const graphPath = join(dir, manifest.graph);
  if (!(await isFile(graphPath))) throw new ManifestError(folder, 'graph', `names ${manifest.graph}, which does not exist`);
  if (manifest.dense_graph !== undefined && !(await isFile(join(dir, manifest.dense_graph)))) {
    throw new ManifestError(folder, 'dense_graph', `names ${manifest.dense_graph}, which does not exist`);
  }
  const embeddedManifest = await checkEmbeddedManifest(folder, graphPath, raw);
  return { dir, graphPath, manifest, embeddedManifest };
}

/** Sub-folders of modelsDir that hold acm.json, in name order so "the first model" is stable. */
export async function bundleDirs(modelsDir: string): Promise<{ name: string; dir: string }[]> {
  let entries;
  try {
    entries = await readdir(modelsDir, { withFileTypes: true });
  } catch (err) {
    throw new Error(`models folder ${modelsDir} cannot be read (${(err as Error).message}); set ACM_MODELS_DIR`);
  }
  const dirs: { name: string; dir: string }[] = [];
  for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    const dir = join(modelsDir, entry.name);
    if (entry.isDirectory() && (await isFile(join(dir, MANIFEST_FILE)))) dirs.push({ name: entry.name, dir });
  }
  return dirs;
}

/** Model names taken so far in one scan: a name is how requests pick a model, so two bundles may not share one. */
export class ModelNames {
  private readonly dirs = new Map<string, string>();

  /** Records that the bundle in `dir` (folder `folder`) serves `name`; throws if another bundle does. */
  claim(folder: string, name: string, dir: string): void {
    const other = this.dirs.get(name);
    if (other !== undefined) throw new ManifestError(folder, 'name', `${JSON.stringify(name)} is also used by ${other}`);
    this.dirs.set(name, dir);
  }
}
