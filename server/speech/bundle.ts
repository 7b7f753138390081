// Speech bundles: sub-folders of the models folder whose acm.json has task "speech-recognition".
// Loaded and refused exactly like image bundles (bundle-files.ts: manifest, graph file, embedded copy).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelShape } from '../backend.js';
import { bundleDirs, isFile, MANIFEST_FILE, ModelNames, manifestTask, openBundle, readManifest, type LoadedBundle } from '../bundle-files.js';
import type { ValueInfo } from '../ort-protocol.js';
import { checkTensors } from '../graph-check.js';
import { ManifestError } from '../manifest-fields.js';
import { Lexicon } from './lexicon-decoder.js';
import { NGramModel } from './ngram.js';
import { parseSpeechManifest, type SpeechManifest } from './manifest.js';

export type SpeechBundle = LoadedBundle<SpeechManifest>;

export const SPEECH_TASK = 'speech-recognition';

export async function loadSpeechBundle(dir: string): Promise<SpeechBundle> {
  const { folder, raw } = await readManifest(dir);
  return openSpeechBundle(dir, folder, raw);
}

/** openBundle for a speech manifest; also refuses a decoder that names a file the bundle lacks. */
async function openSpeechBundle(dir: string, folder: string, raw: unknown): Promise<SpeechBundle> {
  const bundle = await openBundle(dir, folder, raw, parseSpeechManifest);
  const lm = bundle.manifest.ctc.decoder?.lm;
  if (lm !== undefined && !(await isFile(join(bundle.dir, lm)))) {
    throw new ManifestError(folder, 'ctc.decoder.lm', `names ${lm}, which does not exist`);
  }
  return bundle;
}

/** The bundle's lexicon and language model, or undefined when it decodes greedily. */
export async function loadLexicon(bundle: SpeechBundle): Promise<Lexicon | undefined> {
  const m = bundle.manifest;
  const spec = m.ctc.decoder;
  if (!spec) return undefined;
  const path = join(bundle.dir, spec.lm);
  let lm: NGramModel;
  try {
    lm = await NGramModel.load(path, spec.lm);
  } catch (err) {
    throw new ManifestError(m.name, 'ctc.decoder.lm', `is not a usable ARPA language model: ${(err as Error).message}`);
  }
  const lexicon = new Lexicon(lm, m.ctc.vocabulary, m.ctc.blank, m.ctc.word_delimiter);
  if (lexicon.words === 0) throw new ManifestError(m.name, 'ctc.decoder.lm', 'has no word the vocabulary can spell');
  return lexicon;
}

/** Every speech bundle under modelsDir, in folder-name order; none is not an error. */
export async function scanSpeechBundles(modelsDir: string): Promise<SpeechBundle[]> {
  const out: SpeechBundle[] = [];
  const names = new ModelNames();
  for (const { name, dir } of await bundleDirs(modelsDir)) {
    const { folder, raw } = await readManifest(dir);
    if (manifestTask(raw) !== SPEECH_TASK) continue;
    const bundle = await openSpeechBundle(dir, folder, raw);
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
  return speechBundleNames(modelsDir).length > 0;
}

/** The sub-folders of `modelsDir` whose acm.json has the speech task, by name (none when unreadable). */
export function speechBundleNames(modelsDir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(modelsDir).sort();
  } catch {
    return [];
  }
  return names.filter((name) => {
    try {
      return manifestTask(JSON.parse(readFileSync(join(modelsDir, name, MANIFEST_FILE), 'utf8'))) === SPEECH_TASK;
    } catch {
      return false;
    }
  });
}
