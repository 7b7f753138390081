// Audio in for speech: the windowed-sinc resampler (frequency kept, alias removed), WAV decoding
// across rates, channel counts and bit depths, stream PCM frames, the window cutter (streamed
// pushes give the whole-file windows) and greedy CTC decoding with word timings.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import wavefile from 'wavefile';
import { AcmError } from '../server/errors.js';
import { decodePcm, decodeWav } from '../server/speech/audio.js';
import { CtcDecoder } from '../server/speech/ctc.js';
import type { SpeechManifest } from '../server/speech/manifest.js';
import { resample } from '../server/speech/resample.js';
import { WindowCutter } from '../server/speech/windows.js';

function sine(freq: number, rate: number, seconds: number, amp = 0.5): Float32Array {
  return Float32Array.from({ length: Math.round(rate * seconds) }, (_, i) => amp * Math.sin(2 * Math.PI * freq * i / rate));
}

/** Frequency from upward zero crossings over the middle of the signal (edges skipped). */
function frequency(x: Float32Array, rate: number): number {
  const from = Math.floor(x.length * 0.1);
  const to = Math.floor(x.length * 0.9);
  let first = -1;
  let last = -1;
  let crossings = 0;
  for (let i = from + 1; i < to; i++) {
    if ((x[i - 1] ?? 0) < 0 && (x[i] ?? 0) >= 0) {
      if (first < 0) first = i;
      else crossings++;
      last = i;
    }
  }
  return crossings / ((last - first) / rate);
}

function rms(x: Float32Array, skip = 0.1): number {
  const a = Math.floor(x.length * skip);
  const b = Math.floor(x.length * (1 - skip));
  let s = 0;
  for (let i = a; i < b; i++) s += (x[i] ?? 0) ** 2;
  return Math.sqrt(s / (b - a));
}

function wav(channels: number, rate: number, depth: string, data: Float32Array[]): Buffer {
  const full: Record<string, number> = { '8': 127, '16': 32767, '24': 8388607, '32': 2147483647 };
  const scale = full[depth];
  const samples = data.map((ch) => Array.from(ch, (v) => (scale === undefined ? v : depth === '8' ? Math.round(v * scale) + 128 : Math.round(v * scale))));
  const w = new wavefile.WaveFile();
  w.fromScratch(channels, rate, depth, channels === 1 ? (samples[0] ?? []) : samples);
  return Buffer.from(w.toBuffer());
}

/**
 * A WAV written by hand: `tag` in the fmt chunk (or, with `extensible`, WAVE_FORMAT_EXTENSIBLE whose
 * subformat GUID starts with `tag`), then `payload` as the data chunk.
 */
function rawWav(tag: number, channels: number, rate: number, bits: number, payload: Buffer, extensible = false): Buffer {
  const fmt = Buffer.alloc(extensible ? 40 : 16);
  const block = channels * bits / 8;
  fmt.writeUInt16LE(extensible ? 0xfffe : tag, 0);
  fmt.writeUInt16LE(channels, 2);
  fmt.writeUInt32LE(rate, 4);
  fmt.writeUInt32LE(rate * block, 8);
  fmt.writeUInt16LE(block, 12);
  fmt.writeUInt16LE(bits, 14);
  if (extensible) {
    fmt.writeUInt16LE(22, 16); // cbSize
    fmt.writeUInt16LE(bits, 18); // valid bits
    fmt.writeUInt32LE(channels === 2 ? 3 : 4, 20); // channel mask
    // KSDATAFORMAT_SUBTYPE_*: the format tag, then 0000-0010-8000-00aa00389b71.
    Buffer.from([tag & 0xff, tag >> 8, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71]).copy(fmt, 24);
  }
  const chunk = (id: string, body: Buffer): Buffer => {
    const head = Buffer.alloc(8);
    head.write(id, 0, 'latin1');
    head.writeUInt32LE(body.length, 4);
    return Buffer.concat([head, body]);
  };
  const body = Buffer.concat([Buffer.from('WAVE', 'latin1'), chunk('fmt ', fmt), chunk('data', payload)]);
  return Buffer.concat([chunk('RIFF', body).subarray(0, 8), body]);
}

describe('resampler', () => {
  for (const [from, to] of [[44100, 16000], [48000, 16000], [8000, 16000], [22050, 16000]] as const) {
    it(`keeps a 440 Hz sine at 440 Hz from ${from} Hz to ${to} Hz, with the length scaled`, () => {
      const x = sine(440, from, 1);
      const y = resample(x, from, to);
      assert.equal(y.length, Math.round(x.length * to / from));
      assert.ok(Math.abs(frequency(y, to) - 440) < 1.5, `frequency ${frequency(y, to)}`);
      assert.ok(Math.abs(rms(y) / rms(x) - 1) < 0.02, `gain ${rms(y) / rms(x)}`);
    });
  }

  it('removes what the lower rate cannot hold instead of aliasing it (10 kHz at 48 kHz -> 16 kHz)', () => {
    const x = sine(10_000, 48000, 0.5);
    const y = resample(x, 48000, 16000);
    // Plain decimation would fold it to 6 kHz at full level.
    assert.ok(rms(y) / rms(x) < 0.01, `leak ${rms(y) / rms(x)}`);
  });
});

describe('WAV decoding to 16 kHz mono', () => {
  const cases: [string, number, number, string][] = [
    ['16-bit stereo 44.1 kHz', 2, 44100, '16'], ['8-bit mono 8 kHz', 1, 8000, '8'], ['24-bit mono 48 kHz', 1, 48000, '24'],
    ['32-bit mono 16 kHz', 1, 16000, '32'], ['float 32-bit stereo 22.05 kHz', 2, 22050, '32f'], ['float 64-bit mono 32 kHz', 1, 32000, '64'],
  ];
  for (const [name, channels, rate, depth] of cases) {
    it(`${name}: duration, level and a 440 Hz tone kept`, () => {
      const tone = sine(440, rate, 0.8);
      const decoded = decodeWav(wav(channels, rate, depth, Array.from({ length: channels }, () => tone)), 16000, 60);
      assert.equal(decoded.source.sampleRate, rate);
      assert.equal(decoded.source.channels, channels);
      assert.ok(Math.abs(decoded.samples.length - 0.8 * 16000) <= 1, `${decoded.samples.length} samples`);
      assert.ok(Math.abs(frequency(decoded.samples, 16000) - 440) < 2, `frequency ${frequency(decoded.samples, 16000)}`);
      assert.ok(Math.abs(rms(decoded.samples) - 0.5 / Math.SQRT2) < 0.02, `rms ${rms(decoded.samples)}`);
    });
  }

  it('reads 32-bit float inside WAVE_FORMAT_EXTENSIBLE as floats, as multi-channel writers store them', () => {
    const tone = sine(440, 22050, 0.8);
    const stereo = new Float32Array(tone.length * 2);
    tone.forEach((v, i) => { stereo[2 * i] = v; stereo[2 * i + 1] = v; });
    const payload = Buffer.from(stereo.buffer);
    const plain = decodeWav(rawWav(3, 2, 22050, 32, payload), 16000, 60);
    const extensible = decodeWav(rawWav(3, 2, 22050, 32, payload, true), 16000, 60);
    assert.deepEqual(Array.from(extensible.samples), Array.from(plain.samples));
    assert.ok(Math.abs(rms(extensible.samples) - 0.5 / Math.SQRT2) < 0.02, `rms ${rms(extensible.samples)}`);
    assert.equal(extensible.source.bitDepth, '32f');
  });

  it('refuses a format it does not decode instead of reading it as PCM, naming the tag, and samples that are not numbers', () => {
    const payload = Buffer.alloc(3200, 7);
    const mp3 = (): unknown => decodeWav(rawWav(0x55, 1, 16000, 16, payload), 16000, 60);
    assert.throws(mp3, (e: unknown) => e instanceof AcmError && e.code === 'invalid_audio' &&
      /WAV audio format must be one of PCM \(1\), IEEE float \(3\), A-law \(6\), mu-law \(7\), IMA ADPCM \(17\); got 85$/.test(e.message));
    assert.throws(() => decodeWav(rawWav(6, 1, 16000, 8, payload, true), 16000, 60),
      (e: unknown) => e instanceof AcmError && /got 6 inside WAVE_FORMAT_EXTENSIBLE/.test(e.message));
    // A float that is no number is refused, as in a stream, rather than silencing its windows.
    const stereo = new Float32Array(200).fill(0.25);
    stereo[151] = Number.NaN;
    assert.throws(() => decodeWav(rawWav(3, 2, 16000, 32, Buffer.from(stereo.buffer)), 16000, 60),
      (e: unknown) => e instanceof AcmError && e.code === 'invalid_audio' && /WAV sample 75 \(channel 1\) is not finite/.test(e.message));
    // 64 bits is a float depth only: 64-bit integer PCM is refused, not read as doubles.
    assert.throws(() => decodeWav(rawWav(1, 1, 16000, 64, Buffer.alloc(1600)), 16000, 60),
      (e: unknown) => e instanceof AcmError && /bit depth must be 8, 16, 24, 32 or float 32\/64; got "64"/.test(e.message));
  });

  it('averages channels (opposite channels cancel)', () => {
    const tone = sine(300, 16000, 0.5);
    const decoded = decodeWav(wav(2, 16000, '16', [tone, tone.map((v) => -v)]), 16000, 60);
    assert.ok(rms(decoded.samples) < 1e-3);
  });

  it('refuses bytes that are not WAV, audio past the duration limit, and files without samples', () => {
    assert.throws(() => decodeWav(Buffer.from('RIFF....WAVEnot really'), 16000, 60), (e: unknown) => e instanceof AcmError && e.code === 'invalid_audio');
    assert.throws(() => decodeWav(wav(1, 8000, '16', [sine(100, 8000, 2)]), 16000, 1.5),
      (e: unknown) => e instanceof AcmError && e.code === 'audio_too_large' && /at most 1.5 s; got 2.00 s/.test(e.message));
    assert.throws(() => decodeWav(wav(1, 8000, '16', [new Float32Array(0)]), 16000, 60), (e: unknown) => e instanceof AcmError && e.code === 'empty_body');
  });
});

describe('stream PCM frames', () => {
  it('decodes s16le and f32le, and refuses a byte count that splits a sample', () => {
    const s16 = Buffer.alloc(4);
    s16.writeInt16LE(16384, 0);
    s16.writeInt16LE(-32768, 2);
    assert.deepEqual(Array.from(decodePcm(s16, 'pcm_s16le')), [0.5, -1]);
    const f32 = Buffer.alloc(8);
    f32.writeFloatLE(0.25, 0);
    f32.writeFloatLE(-0.75, 4);
    assert.deepEqual(Array.from(decodePcm(f32, 'pcm_f32le')), [0.25, -0.75]);
    assert.throws(() => decodePcm(Buffer.alloc(3), 'pcm_s16le'), /pcm_s16le frames must hold whole 2-byte samples; got 3 bytes/);
    assert.throws(() => decodePcm(Buffer.alloc(6), 'pcm_f32le'), /whole 4-byte samples; got 6 bytes/);
  });
});

const AUDIO = { sample_rate: 16000, frame_ms: 20, frame_samples: 320, lookahead_samples: 80, chunk_frames: 10,
  left_context_frames: 15, chunk_samples: 3200, left_context_samples: 4800, window_samples: 8080, window_frames: 25 };

describe('window cutter', () => {
  it('gives a stream, pushed in odd-sized pieces, exactly the windows of the whole file', () => {
    const audio = Float32Array.from({ length: 3200 * 4 + 1234 }, (_, i) => Math.sin(i * 0.37) * 0.5);
    const whole = new WindowCutter(AUDIO);
    whole.push(audio);
    const expected = whole.take(true);
    assert.equal(expected.length, 5, 'ceil(14034 / 3200) chunks');
    const stream = new WindowCutter(AUDIO);
    const got: Float32Array[] = [];
    let at = 0;
    for (const size of [1, 777, 3199, 80, 5000, 1, 2999]) {
      stream.push(audio.subarray(at, at + size));
      at += size;
      got.push(...stream.take(false));
    }
    stream.push(audio.subarray(at));
    got.push(...stream.take(false), ...stream.take(true));
    assert.deepEqual(got.map((w) => Array.from(w)), expected.map((w) => Array.from(w)));
  });

  it('places chunk c at samples [c*chunk - left, (c+1)*chunk + lookahead), zeros outside the audio', () => {
    const audio = Float32Array.from({ length: 7000 }, (_, i) => i + 1);
    const c = new WindowCutter(AUDIO);
    c.push(audio);
    const [w0, w1, w2] = c.take(true);
    assert.equal(w0?.[4800], 1, 'chunk 0 starts after 4800 samples of zero context');
    assert.equal(w0?.[4799], 0);
    assert.equal(w1?.[1599], 0, 'chunk 1 starts 1600 samples before the audio');
    assert.equal(w1?.[1600], 1);
    assert.equal(w1?.[4800], 3201);
    assert.equal(w2?.[4800], 6401);
    assert.equal(w2?.[4800 + 599], 7000);
    assert.equal(w2?.[4800 + 600], 0, 'zeros after the end');
    assert.equal(c.take(true).length, 0);
  });

  it('waits for the lookahead before cutting a chunk of a stream', () => {
    const c = new WindowCutter(AUDIO);
    c.push(new Float32Array(3200 + 79));
    assert.equal(c.take(false).length, 0);
    c.push(new Float32Array(1));
    assert.equal(c.take(false).length, 1);
  });
});

describe('greedy CTC decoding', () => {
  const vocab = ['<blank>', ' ', "'", 'a', 'b', 'c', 'd'];
  const manifest = { ctc: { blank: 0, vocabulary: vocab, word_delimiter: ' ' }, audio: AUDIO } as unknown as SpeechManifest;
  const logitsOf = (path: number[]): Float32Array => {
    const out = new Float32Array(path.length * vocab.length).fill(-3);
    path.forEach((id, f) => (out[f * vocab.length + id] = 3));
    return out;
  };

  it('collapses repeats, drops blanks, splits words, and times them from the alignment', () => {
    // frames:        0  1  2  3  4  5  6  7  8  9
    const path = [0, 3, 3, 0, 3, 4, 1, 1, 5, 6];
    const d = new CtcDecoder(manifest);
    d.push(logitsOf(path.slice(0, 4)), 4);
    d.push(logitsOf(path.slice(4)), 6); // chunk boundary in the middle of a word: same result
    assert.equal(d.transcript(), 'aab cd');
    assert.deepEqual(d.timings(), [{ word: 'aab', start: 0.02, end: 0.12 }, { word: 'cd', start: 0.16, end: 0.2 }]);
  });

  it('keeps a repeated label split by a blank, and trims leading and trailing spaces', () => {
    const d = new CtcDecoder(manifest);
    d.push(logitsOf([1, 3, 0, 3, 1, 1]), 6);
    assert.equal(d.transcript(), 'aa');
  });
});
