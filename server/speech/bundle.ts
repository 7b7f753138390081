// Speech bundles: sub-folders of the models folder whose acm.json has task "speech-recognition".
// Loaded and refused exactly like image bundles (bundle-files.ts: manifest, graph file, embedded copy).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelShape } from '../backend.js';
import { bundleDirs, MANIFEST_FILE, ModelNames, manifestTask, openBundle, readManifest, type LoadedBundle } from '../bundle-files.js';
import type { ValueInfo } from '../ort-protocol.js';
import { checkTensors } from '../graph-check.js';
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
  const a = m.audio;
  return checkTensors({ input: { name: m.inputs.audio, dims: [undefined, a.window_samples] }, budget: m.inputs.budget,
    logits: { name: m.outputs.logits, dims: [undefined, a.window_frames, m.ctc.vocabulary.length] },
    learnerCounts: { name: m.outputs.learner_counts, dims: [undefined, m.acms.length, a.window_frames] } }, inputs, outputs);
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
