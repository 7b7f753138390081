// Finds and checks image-classification bundles: every sub-folder of the models folder holding
// acm.json. The check happens once, at start-up, so a broken bundle stops the server with a message
// instead of answering wrongly later. The file checks every task shares are in bundle-files.ts.
import type { ModelShape } from './backend.js';
import { bundleDirs, ModelNames, manifestTask, openBundle, readManifest, type LoadedBundle } from './bundle-files.js';
import { parseImageManifest, type ImageManifest } from './manifest.js';

export type Bundle = LoadedBundle<ImageManifest>;

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

/** Loads and checks one bundle folder (which must hold acm.json). */
export async function loadBundle(dir: string): Promise<Bundle | SkippedBundle> {
  const { folder, raw } = await readManifest(dir);
  const task = manifestTask(raw);
  if (task !== 'image-classification' && typeof task === 'string' && /^[a-z-]+$/.test(task)) {
    return { dir, reason: `task ${JSON.stringify(task)} is not served by this server` };
  }
  return openBundle(dir, folder, raw, parseImageManifest);
}

/** Loads every image bundle under modelsDir, in name order so "the first model" is stable. */
export async function scanBundles(modelsDir: string): Promise<BundleScan> {
  const bundles: Bundle[] = [];
  const skipped: SkippedBundle[] = [];
  const names = new ModelNames();
  for (const { name, dir } of await bundleDirs(modelsDir)) {
    const loaded = await loadBundle(dir);
    if (!('manifest' in loaded)) {
      skipped.push(loaded);
      continue;
    }
    names.claim(name, loaded.manifest.name, dir);
    bundles.push(loaded);
  }
  return { bundles, skipped };
}
