// Speech bundles: sub-folders of the models folder whose acm.json has task "speech-recognition".
// Loaded and refused exactly like image bundles (manifest, graph file, embedded manifest copy).
import { readdirSync, readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ModelShape } from '../backend.js';
import { checkEmbeddedManifest, isFile, readJson } from '../bundle.js';
import { ManifestError } from '../manifest-fields.js';
import type { ValueInfo } from '../ort-protocol.js';
import { checkOne } from '../graph-check.js';
import { parseSpeechManifest, type SpeechManifest } from './manifest.js';

export interface SpeechBundle {
  readonly dir: string;
  readonly graphPath: string;
  readonly manifest: SpeechManifest;
  readonly embeddedManifest: boolean;
}

const MANIFEST_FILE = 'acm.json';
export const SPEECH_TASK = 'speech-recognition';

export async function loadSpeechBundle(dir: string): Promise<SpeechBundle> {
  const folder = dir.split('/').filter(Boolean).pop() ?? dir;
  const raw = await readJson(folder, join(dir, MANIFEST_FILE));
  const manifest = parseSpeechManifest(folder, raw);
  const graphPath = join(dir, manifest.graph);
  if (!(await isFile(graphPath))) throw new ManifestError(folder, 'graph', `names ${manifest.graph}, which does not exist`);
  if (manifest.dense_graph !== undefined && !(await isFile(join(dir, manifest.dense_graph)))) {
    throw new ManifestError(folder, 'dense_graph', `names ${manifest.dense_graph}, which does not exist`);
  }
  const embeddedManifest = await checkEmbeddedManifest(folder, graphPath, raw);
  return { dir, graphPath, manifest, embeddedManifest };
}

/** Every speech bundle under modelsDir, in folder-name order; none is not an error. */
export async function scanSpeechBundles(modelsDir: string): Promise<SpeechBundle[]> {
  let entries;
  try {
    entries = await readdir(modelsDir, { withFileTypes: true });
  } catch (err) {
    throw new Error(`models folder ${modelsDir} cannot be read (${(err as Error).message}); set ACM_MODELS_DIR`);
  }
  const out: SpeechBundle[] = [];
  const names = new Map<string, string>();
  for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    const dir = join(modelsDir, entry.name);
    if (!entry.isDirectory() || !(await isFile(join(dir, MANIFEST_FILE)))) continue;
    const raw = await readJson(entry.name, join(dir, MANIFEST_FILE));
    if ((raw as { task?: unknown } | null)?.task !== SPEECH_TASK) continue;
    const bundle = await loadSpeechBundle(dir);
    const other = names.get(bundle.manifest.name);
    if (other !== undefined) throw new ManifestError(entry.name, 'name', `${JSON.stringify(bundle.manifest.name)} is also used by ${other}`);
    names.set(bundle.manifest.name, dir);
    out.push(bundle);
  }
  return out;
}

export function speechShape(m: SpeechManifest): ModelShape {
  return { input: [m.audio.window_samples], logits: [m.audio.window_frames, m.ctc.vocabulary.length],
    acms: m.acms.length, tokens: m.audio.window_frames };
}

/** Mismatches between a loaded speech graph and its manifest (BUNDLE.md "Speech" table). */
export function checkSpeechGraph(m: SpeechManifest, inputs: readonly ValueInfo[], outputs: readonly ValueInfo[]): string[] {
  const problems: string[] = [];
  const byName = (list: readonly ValueInfo[], name: string): ValueInfo | undefined => list.find((v) => v.name === name);
  const a = m.audio;
  checkOne(byName(inputs, m.inputs.audio), { role: 'input', name: m.inputs.audio, types: ['float32'], dims: [undefined, a.window_samples] }, problems);
  checkOne(byName(inputs, m.inputs.budget), { role: 'input', name: m.inputs.budget, types: ['float64'], dims: [undefined] }, problems);
  checkOne(byName(outputs, m.outputs.logits), { role: 'output', name: m.outputs.logits, types: ['float32'],
    dims: [undefined, a.window_frames, m.ctc.vocabulary.length] }, problems);
  checkOne(byName(outputs, m.outputs.learner_counts), { role: 'output', name: m.outputs.learner_counts, types: ['int64'],
    dims: [undefined, m.acms.length, a.window_frames] }, problems);
  const known = new Set([m.inputs.audio, m.inputs.budget]);
  for (const input of inputs) {
    if (!known.has(input.name)) problems.push(`graph input ${JSON.stringify(input.name)} is not named by the manifest, so the server cannot feed it`);
  }
  return problems;
}

/** Whether any sub-folder of modelsDir holds a speech manifest; a quick synchronous look at start-up
 * (the full check is scanSpeechBundles), so the routes can be registered before models load. */
export function hasSpeechBundles(modelsDir: string): boolean {
  let names: string[];
  try {
    names = readdirSync(modelsDir);
  } catch {
    return false;
  }
  return names.some((name) => {
    try {
      const raw = JSON.parse(readFileSync(join(modelsDir, name, MANIFEST_FILE), 'utf8')) as { task?: unknown } | null;
      return raw?.task === SPEECH_TASK;
    } catch {
      return false;
    }
  });
}
