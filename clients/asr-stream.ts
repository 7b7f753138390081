// Streams audio to /asr at real-time speed and prints the partial transcripts as they arrive,
// then the final text:
//
//   node dist/clients/asr-stream.js speech.wav                     # any WAV: resampled to 16 kHz mono
//   arecord -f S16_LE -r 16000 -c 1 | node dist/clients/asr-stream.js -   # raw PCM s16le 16 kHz mono
//
// Options: --url http://host:8080 (default), --budget 0.5, --model name, --frame-ms 100,
// --fast (send as fast as the server takes it instead of in real time), --json (one JSON line per
// message). Exit code 0 after the final transcript, 1 on a server or connection error, 2 on a
// usage error. Built on the SDK's stream(), which waits for "ready" and applies back-pressure.
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { decodeWav } from '../server/speech/audio.js';
import { AcmClient, AcmError, type StreamEvent } from './sdk.js';

const RATE = 16000;
const USAGE = 'usage: asr-stream [--url URL] [--budget B] [--model NAME] [--frame-ms MS] [--fast] [--json] (FILE.wav | -)';

class UsageError extends Error {}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Float samples -> s16le frames of `frame` samples each. */
function* wavFrames(samples: Float32Array, frame: number): Generator<Uint8Array> {
  for (let i = 0; i < samples.length; i += frame) {
    const part = samples.subarray(i, i + frame);
    const out = Buffer.alloc(part.length * 2);
    part.forEach((v, j) => out.writeInt16LE(Math.max(-32768, Math.min(32767, Math.round(v * 32767))), 2 * j));
    yield out;
  }
}

/** stdin as s16le frames of `frame` samples (whole samples only; the last frame may be short). */
async function* stdinFrames(frame: number): AsyncGenerator<Uint8Array> {
  let pending = Buffer.alloc(0);
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= frame * 2) {
      yield pending.subarray(0, frame * 2);
      pending = pending.subarray(frame * 2);
    }
  }
  const whole = pending.length - (pending.length % 2);
  if (whole > 0) yield pending.subarray(0, whole);
}

/** Releases frames no faster than the audio they hold plays. */
async function* realTime(frames: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const started = performance.now();
  let sent = 0;
  for await (const f of frames) {
    const due = (sent / RATE) * 1000 - (performance.now() - started);
    if (due > 0) await sleep(due);
    yield f;
    sent += f.length / 2;
  }
}

async function main(): Promise<void> {
  let args;
  try {
    args = parseArgs({ allowPositionals: true, options: {
      url: { type: 'string', default: 'http://localhost:8080' }, budget: { type: 'string' }, model: { type: 'string' },
      'frame-ms': { type: 'string', default: '100' }, fast: { type: 'boolean', default: false }, json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false } } });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = args.values;
  if (v.help) {
    console.log(USAGE);
    return;
  }
  const [input, ...rest] = args.positionals;
  if (input === undefined || rest.length > 0) throw new UsageError('give one WAV file, or - for raw PCM s16le 16 kHz mono on stdin');
  const frameMs = Number(v['frame-ms']);
  if (!Number.isInteger(frameMs) || frameMs < 10 || frameMs > 5000) throw new UsageError(`--frame-ms must be an integer in [10, 5000]; got ${v['frame-ms']}`);
  const budget = v.budget === undefined ? undefined : Number(v.budget);
  if (budget !== undefined && !(budget > 0 && budget <= 1)) throw new UsageError(`--budget must be a number in (0, 1]; got ${v.budget}`);
  const frame = Math.round((RATE * frameMs) / 1000);
  let frames: AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
  if (input === '-') {
    frames = stdinFrames(frame);
  } else {
    const audio = decodeWav(await readFile(input), RATE, Number.POSITIVE_INFINITY);
    frames = wavFrames(audio.samples, frame);
  }
  const client = new AcmClient({ url: v.url });
  const tty = process.stderr.isTTY;
  let final: StreamEvent | undefined;
  for await (const e of client.stream(v.fast ? frames : realTime(frames), { sampleRate: RATE, encoding: 'pcm_s16le', budget, model: v.model })) {
    if (v.json) console.log(JSON.stringify(e));
    else if (e.type === 'partial') process.stderr.write(tty ? `\r\x1b[K… ${e.text}` : `… ${e.text}\n`);
    if (e.type === 'final') final = e;
  }
  if (!v.json && final) {
    if (tty) process.stderr.write('\r\x1b[K');
    console.log(final.text);
    console.error(`(budget ${final.compute.budget}, used ${final.compute.used.toFixed(3)}, ${final.compute.gflops.toFixed(3)} GFLOPs)`);
  }
}

main().catch((err: unknown) => {
  if (err instanceof UsageError) {
    console.error(`${err.message}\n${USAGE}`);
    process.exit(2);
  }
  console.error(err instanceof AcmError ? `error ${err.code}: ${err.message}` : `error: ${(err as Error).message}`);
  process.exit(1);
});
