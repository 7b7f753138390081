// Command-line options for the benches: `--help` prints the command's usage, and a wrong option
// or value ends the command with a message naming the option, its bounds and the value (exit
// status 2), never a stack trace.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { resolve } from 'node:path';
import { loadBundle, type Bundle } from '../server/bundle.js';
import { manifestTask, readManifest } from '../server/bundle-files.js';
import { loadSpeechBundle, SPEECH_TASK, type SpeechBundle } from '../server/speech/bundle.js';
import { allowedCpus, checkAllowedCpus, parseCpuListSetting } from '../server/cpu-affinity.js';

/** Ends the command: the message and a pointer to --help on stderr, exit status 2. */
export function usageError(message: string): never {
  process.stderr.write(`${message}\n(--help lists the options)\n`);
  process.exit(2);
}

/** parseArgs (strict) with `--help`/`-h`, which prints `usage` and exits 0. */
export function parseCli<T extends ParseArgsConfig>(usage: string, config: T): ReturnType<typeof parseArgs<T>> {
  const args = config.args ?? process.argv.slice(2);
  const end = args.indexOf('--');
  if ((end < 0 ? args : args.slice(0, end)).some((a) => a === '--help' || a === '-h')) {
    process.stdout.write(`${usage.trim()}\n`);
    process.exit(0);
  }
  try {
    return parseArgs(config);
  } catch (err) {
    return usageError((err as Error).message);
  }
}

/** The option's value as a number: `fallback` when absent, NaN when empty. */
function toNumber(raw: string | undefined, fallback: number): number {
  return raw === undefined ? fallback : raw.trim() === '' ? NaN : Number(raw);
}

/** A number in [min, max], or in (min, max] with `minOpen`. */
export function numberArg(name: string, raw: string | undefined, fallback: number, min: number, max = Infinity,
  { minOpen = false } = {}): number {
  const v = toNumber(raw, fallback);
  if (!Number.isFinite(v) || (minOpen ? v <= min : v < min) || v > max) {
    usageError(`--${name} must be a number in ${minOpen ? '(' : '['}${min}, ${max}]; got ${JSON.stringify(raw)}`);
  }
  return v;
}

/** A compute budget, as the server takes it: 0 < budget <= 1. */
export function budgetArg(name: string, raw: string | undefined, fallback: number): number {
  return numberArg(name, raw, fallback, 0, 1, { minOpen: true });
}

export function intArg(name: string, raw: string | undefined, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = numberArg(name, raw, fallback, min, max);
  if (!Number.isInteger(v)) usageError(`--${name} must be an integer in [${min}, ${max}]; got ${JSON.stringify(raw)}`);
  return v;
}

/** A Linux CPU list ("1", "0-1", "0,2-3") of CPUs this process may use, returned as given. */
export function cpuListArg(name: string, raw: string): string {
  try {
    const cpus = parseCpuListSetting(`--${name}`, raw);
    const allowed = allowedCpus();
    if (allowed !== undefined) checkAllowedCpus(`--${name}`, cpus, allowed);
  } catch (err) {
    return usageError((err as Error).message);
  }
  return raw.trim();
}

/** The image bundle in folder `raw`, checked as the server checks it; a folder that is not one ends the command. */
export async function imageBundleArg(name: string, raw: string): Promise<Bundle> {
  let loaded: Awaited<ReturnType<typeof loadBundle>>;
  try {
    loaded = await loadBundle(resolve(raw));
  } catch (err) {
    return usageError(`--${name} must be an image bundle folder; ${JSON.stringify(raw)}: ${(err as Error).message}`);
  }
  if (!('manifest' in loaded)) return usageError(`--${name} must be an image bundle folder; ${JSON.stringify(raw)}: ${loaded.reason}`);
  return loaded;
}

/** An image or speech bundle in folder `raw`, each checked as the server checks it. */
export async function modelBundleArg(name: string, raw: string): Promise<{ kind: 'image'; bundle: Bundle } | { kind: 'speech'; bundle: SpeechBundle }> {
  let task: unknown;
  try {
    task = manifestTask((await readManifest(resolve(raw))).raw);
  } catch (err) {
    return usageError(`--${name} must be a bundle folder; ${JSON.stringify(raw)}: ${(err as Error).message}`);
  }
  if (task !== SPEECH_TASK) return { kind: 'image', bundle: await imageBundleArg(name, raw) };
  try {
    return { kind: 'speech', bundle: await loadSpeechBundle(resolve(raw)) };
  } catch (err) {
    return usageError(`--${name} must be a bundle folder; ${JSON.stringify(raw)}: ${(err as Error).message}`);
  }
}
