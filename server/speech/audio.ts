// Audio in: WAV files of any common layout (PCM 8/16/24/32-bit, float 32/64, A-law, mu-law, IMA
// ADPCM; any rate; any channel count) to the model's mono float rate, and raw PCM frames of a
// stream. Channels are averaged; the rate is converted by resample.ts.
import wavefile from 'wavefile';
import { AcmError } from '../errors.js';
import { resample } from './resample.js';

export interface DecodedAudio {
  /** Mono samples in [-1, 1] at the target rate. */
  readonly samples: Float32Array;
  /** What the file held, for logs and errors. */
  readonly source: { readonly sampleRate: number; readonly channels: number; readonly bitDepth: string; readonly seconds: number };
}

interface Fmt { audioFormat?: number; numChannels?: number; sampleRate?: number; bitsPerSample?: number; subformat?: number[] }

/** WAVE format tags decoded here. Anything else (MP3 or GSM in a WAV, say) is refused, not read as PCM. */
const FORMATS: Readonly<Record<number, string>> = { 1: 'PCM', 3: 'IEEE float', 6: 'A-law', 7: 'mu-law', 17: 'IMA ADPCM' };
/** WAVE_FORMAT_EXTENSIBLE: the real tag is the first two bytes of the subformat GUID. */
const EXTENSIBLE = 0xfffe;

/** The file's format tag, looking inside WAVE_FORMAT_EXTENSIBLE (multi-channel or high-depth files use it). */
function formatTag(fmt: Fmt): { tag: number; extensible: boolean } {
  const extensible = fmt.audioFormat === EXTENSIBLE;
  return { tag: extensible ? (fmt.subformat?.[0] ?? 0) & 0xffff : fmt.audioFormat ?? 0, extensible };
}

/** IEEE float samples straight from the data chunk's bytes (32- or 64-bit; big-endian in an RIFX file). */
function floatSamples(bytes: Uint8Array, bits: number, littleEndian: boolean): Float64Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const size = bits / 8;
  const out = new Float64Array(Math.floor(bytes.byteLength / size));
  for (let i = 0; i < out.length; i++) out[i] = size === 4 ? view.getFloat32(i * 4, littleEndian) : view.getFloat64(i * 8, littleEndian);
  return out;
}

/** Full-scale value of each integer PCM depth; floats are already in [-1, 1]. */
const SCALE: Record<string, number> = { '8': 128, '16': 32768, '24': 8388608, '32': 2147483648 };
const FLOAT_DEPTHS = new Set(['32f', '64']);

/** Decodes a WAV body and converts it to mono float at `rate`. Refuses before decoding what is too long. */
export function decodeWav(body: Buffer, rate: number, maxSeconds: number): DecodedAudio {
  const wav = new wavefile.WaveFile();
  try {
    wav.fromBuffer(body);
  } catch (err) {
    throw new AcmError('invalid_audio', `body is not a readable WAV file: ${(err as Error).message}`);
  }
  const fmt = wav.fmt as Fmt;
  const { tag, extensible } = formatTag(fmt);
  if (FORMATS[tag] === undefined || (extensible && tag !== 1 && tag !== 3)) {
    const known = Object.entries(FORMATS).map(([t, name]) => `${name} (${t})`).join(', ');
    throw new AcmError('invalid_audio', `WAV audio format must be one of ${known}` +
      `${extensible ? ', and PCM or IEEE float inside WAVE_FORMAT_EXTENSIBLE' : ''}; got ${tag}${extensible ? ' inside WAVE_FORMAT_EXTENSIBLE' : ''}`);
  }
  try {
    // Compressed encodings become 16-bit PCM first.
    if (tag === 6) wav.fromALaw();
    else if (tag === 7) wav.fromMuLaw();
    else if (tag === 17) wav.fromIMAADPCM();
  } catch (err) {
    throw new AcmError('invalid_audio', `WAV audio format ${FORMATS[tag]} could not be decoded: ${(err as Error).message}`);
  }
  const channels = fmt.numChannels ?? 0;
  const sampleRate = fmt.sampleRate ?? 0;
  // The reader names a depth by bits alone outside format 3, so 32-bit float inside
  // WAVE_FORMAT_EXTENSIBLE would read as 32-bit integers, and 64-bit PCM as floats: the tag decides.
  const float = tag === 3;
  const bits = fmt.bitsPerSample ?? 0;
  const depth = float ? (bits === 32 ? '32f' : String(bits)) : wav.bitDepth;
  if (!(channels >= 1 && channels <= 64)) throw new AcmError('invalid_audio', `WAV channel count must be in [1, 64]; got ${channels}`);
  if (!(sampleRate >= 1000 && sampleRate <= 384_000)) {
    throw new AcmError('invalid_audio', `WAV sample rate must be in [1000, 384000] Hz; got ${sampleRate}`);
  }
  const scale = float ? undefined : SCALE[depth];
  if (float ? !FLOAT_DEPTHS.has(depth) : scale === undefined) {
    throw new AcmError('invalid_audio', `WAV bit depth must be 8, 16, 24, 32 or float 32/64; got ${JSON.stringify(depth)}`);
  }
  const data = (wav as unknown as { data: { samples: Uint8Array } }).data.samples;
  const bytesPerSample = depth === '64' ? 8 : depth === '32f' ? 4 : Number(depth) / 8;
  const frames = Math.floor(data.length / (bytesPerSample * channels));
  const seconds = frames / sampleRate;
  if (seconds > maxSeconds) {
    throw new AcmError('audio_too_large', `audio must be at most ${maxSeconds} s; got ${seconds.toFixed(2)} s`);
  }
  if (frames === 0) throw new AcmError('empty_body', 'the WAV file holds no audio samples');
  const interleaved = float ? floatSamples(data, bits, wav.container !== 'RIFX') : wav.getSamples(true, Float64Array);
  if (float) {
    // One NaN or infinity would turn every window it falls in into NaN, and its text into nothing.
    const bad = interleaved.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      throw new AcmError('invalid_audio', `WAV sample ${Math.floor(bad / channels)} (channel ${bad % channels}) is not finite; ` +
        'float samples must be finite numbers');
    }
  }
  const mono = new Float32Array(frames);
  const offset = depth === '8' ? 128 : 0; // 8-bit PCM is unsigned
  const div = (scale ?? 1) * channels;
  for (let f = 0; f < frames; f++) {
    let sum = 0;
    for (let c = 0; c < channels; c++) sum += (interleaved[f * channels + c] ?? 0) - offset;
    mono[f] = Math.max(-1, Math.min(1, sum / div));
  }
  return { samples: resample(mono, sampleRate, rate), source: { sampleRate, channels, bitDepth: depth, seconds } };
}

export type PcmEncoding = 'pcm_s16le' | 'pcm_f32le';
export const PCM_ENCODINGS: readonly PcmEncoding[] = ['pcm_s16le', 'pcm_f32le'];

/** One binary frame of a stream to float samples; a byte count that splits a sample is refused. */
export function decodePcm(frame: Buffer, encoding: PcmEncoding): Float32Array {
  const width = encoding === 'pcm_s16le' ? 2 : 4;
  if (frame.length % width !== 0) {
    throw new AcmError('invalid_audio', `${encoding} frames must hold whole ${width}-byte samples; got ${frame.length} bytes`);
  }
  const n = frame.length / width;
  const out = new Float32Array(n);
  if (encoding === 'pcm_s16le') {
    for (let i = 0; i < n; i++) out[i] = frame.readInt16LE(2 * i) / 32768;
  } else {
    for (let i = 0; i < n; i++) {
      const v = frame.readFloatLE(4 * i);
      if (!Number.isFinite(v)) throw new AcmError('invalid_audio', `pcm_f32le sample ${i} of this frame is not finite`);
      out[i] = Math.max(-1, Math.min(1, v));
    }
  }
  return out;
}
