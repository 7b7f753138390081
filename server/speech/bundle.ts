// Speech bundles: sub-folders of the models folder whose acm.json has task "speech-recognition".
// Loaded and refused exactly like image bundles (bundle-files.ts: manifest, graph file, embedded copy).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelShape } from '../backend.js';
import { bundleDirs, MANIFEST_FILE, ModelNames, manifestTask, openBundle, readManifest, type LoadedBundle } from '../bundle-files.js';
import type { ValueInfo } from '../ort-protocol.js';
import { checkOne } from '../graph-check.js';
import { parseSpeechManifest, type SpeechManifest } from './manifest.js';

export type SpeechBundle = LoadedBundle<SpeechManifest>;

export const SPEECH_TASK = 'speech-recognition';

export async function loadSpeechBundle(dir: string): Promise<SpeechBundle> {
  const { folder, raw } = await readManifest(dir);
  return openBundle(dir, folder, raw, parseSpeechManifest);
}

/** Every speech bundle under modelsDir, in folder-name order; none is not an error. */
export async function scanSpeechBundles(modelsDir: string): Promise<SpeechBundle[]> {
  const out: SpeechBundle[] = [];
  const names = new ModelNames();
  for (const { name, dir } of await bundleDirs(modelsDir)) {
    const { folder, raw } = await readManifest(dir);
    if (manifestTask(raw) !== SPEECH_TASK) continue;
    const bundle = await openBundle(dir, folder, raw, parseSpeechManifest);
    names.claim(name, bundle.manifest.name, dir);
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
      return manifestTask(JSON.parse(readFileSync(join(modelsDir, name, MANIFEST_FILE), 'utf8'))) === SPEECH_TASK;
    } catch {
      return false;
    }
  });
}
