// Audio for the speech benchmark: the first WAV files (by name) of a folder, decoded to the model's
// rate, each also re-encoded as a 16-bit WAV at that rate so /transcribe and /asr are given the same
// samples. Without a folder of test utterances, a few fixed sentences are synthesized once with
// espeak-ng into .cache/bench/speech-wavs/.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import wavefile from 'wavefile';
import { decodeWav } from '../server/speech/audio.js';
import { REPO } from './server-process.js';

const run = promisify(execFile);

/** The espeak-ng test utterances of the speech toolchain (models/README.md), when generated. */
export const DEFAULT_WAVS_DIR = join(REPO, '.cache', 'speech', 'espeak-v1', 'test');
export const SYNTH_DIR = join(REPO, '.cache', 'bench', 'speech-wavs');

const SENTENCES = [
  'the quick brown fox jumps over the lazy dog',
  'please call stella and ask her to bring these things with her from the store',
  'a budget controls how much of the model runs for every frame of audio',
  'she sells sea shells by the sea shore on a bright and windy morning',
  'we will meet at nine in the evening near the old railway station',
];

export interface Clip {
  readonly name: string;
  /** Mono samples at the model's rate. */
  readonly samples: Float32Array;
  readonly seconds: number;
  /** The same samples as a 16-bit mono WAV file at the model's rate. */
  readonly wav: Buffer;
}

function wavOf(samples: Float32Array, rate: number): Buffer {
  const w = new wavefile.WaveFile();
  w.fromScratch(1, rate, '16', Array.from(samples, (v) => Math.max(-32768, Math.min(32767, Math.round(v * 32767)))));
  return Buffer.from(w.toBuffer());
}

/** The first `count` .wav files of `dir` by name, at `rate`. */
export async function loadClips(dir: string, count: number, rate: number): Promise<Clip[]> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.toLowerCase().endsWith('.wav')).sort().slice(0, count);
  } catch (err) {
    throw new Error(`--wavs: cannot list ${dir}: ${(err as Error).message}`);
  }
  if (names.length === 0) throw new Error(`--wavs: no .wav files in ${dir}`);
  const clips: Clip[] = [];
  for (const name of names) {
    let samples: Float32Array;
    try {
      samples = decodeWav(await readFile(join(dir, name)), rate, 3600).samples;
    } catch (err) {
      throw new Error(`--wavs: ${join(dir, name)}: ${(err as Error).message}`);
    }
    clips.push({ name, samples, seconds: samples.length / rate, wav: wavOf(samples, rate) });
  }
  return clips;
}

/** SYNTH_DIR with one espeak-ng WAV per fixed sentence, synthesized the first time. */
export async function synthesizedDir(): Promise<string> {
  await mkdir(SYNTH_DIR, { recursive: true });
  for (const [i, text] of SENTENCES.entries()) {
    const file = join(SYNTH_DIR, `sentence-${i}.wav`);
    if (existsSync(file)) continue;
    try {
      // Written beside, then renamed: an interrupted run leaves no truncated file behind.
      await run('espeak-ng', ['-w', `${file}.part`, text], { timeout: 30_000 });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new Error(e.code === 'ENOENT'
        ? 'espeak-ng is not installed: install it (apt-get install espeak-ng) or pass --wavs <folder of WAV files>'
        : `espeak-ng failed on sentence ${i}: ${e.message}`);
    }
    await rename(`${file}.part`, file);
  }
  return SYNTH_DIR;
}
