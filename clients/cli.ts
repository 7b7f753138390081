#!/usr/bin/env node
// acm: the command-line client. Human-readable output by default, JSON with --json. Any failure
// prints one line, "acm: <reason>", and exits 1 (2 for a mistake in the command line itself).
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { parseBudget, parseTopK } from '../server/params.js';
import { decodeWav } from '../server/speech/audio.js';
import { writeHeatmap, type ModelInput } from './heatmap.js';
import { AcmClient, AcmError, type ClassifyResult, type ModelInfo, type SpeechModelInfo, type StreamEvent, type TranscribeResult } from './sdk.js';

const USAGE = `usage: acm <command> [options]

commands:
  classify <image>    classify an image (PNG, JPEG, WebP, GIF, TIFF)
      --budget <b>      compute budget in (0, 1] (default: the server's)
      --top-k <k>       predictions to show (default 5)
      --model <name>    model to use (default: the server's first)
      --heatmap <png>   write the image with its compute map overlaid
  transcribe <wav>    transcribe a WAV file
      --stream          stream it over WebSocket /asr, printing partial text
      --budget <b>      compute budget in (0, 1]
      --model <name>    model to use
  models              list the server's models

options:
  --url <url>         server (default $ACM_URL, else http://localhost:8080)
  --json              print the server's JSON instead of text
  -h, --help          this text`;

/** A mistake in the command line: exit code 2. */
class UsageError extends Error {}

const OPTIONS = {
  url: { type: 'string' },
  budget: { type: 'string' },
  'top-k': { type: 'string' },
  model: { type: 'string' },
  heatmap: { type: 'string' },
  stream: { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

function option<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

async function readInput(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new Error(`cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function pct(v: number): string {
  return `${(v * 100).toFixed(1)}%`;
}

const SHADES = ' ░▒▓█';

function printClassify(r: ClassifyResult): void {
  const c = r.compute;
  console.log(`${r.model}: budget ${c.budget}, used ${c.used.toFixed(3)} (floor ${c.floor.toFixed(3)}), ` +
    `${c.gflops.toPrecision(3)} GFLOPs of ${c.dense_gflops.toPrecision(3)} dense`);
  const width = Math.max(...r.predictions.map((p) => p.label.length));
  r.predictions.forEach((p, i) => console.log(`  ${String(i + 1).padStart(2)}. ${p.label.padEnd(width)}  ${pct(p.score).padStart(6)}`));
  const [rows, cols] = c.map.grid;
  console.log(`compute map (${rows}x${cols} patches, share of learners run: ' ' none ... '█' all):`);
  for (const row of c.map.values) {
    console.log(`  ${row.map((v) => SHADES[Math.min(SHADES.length - 1, Math.round(v * (SHADES.length - 1)))]?.repeat(2) ?? '').join('')}`);
  }
  if (r.timings) console.log(`time: ${r.timings.totalMs.toFixed(1)} ms (queue ${r.timings.queueMs.toFixed(1)}, inference ${r.timings.inferenceMs.toFixed(1)})`);
}

function speechLine(compute: TranscribeResult['compute']): string {
  return `budget ${compute.budget}, used ${Number(compute.used).toFixed(3)}, ${Number(compute.gflops).toPrecision(3)} GFLOPs`;
}

async function classify(client: AcmClient, args: string[], v: Values): Promise<void> {
  const [path, ...rest] = args;
  if (!path || rest.length > 0) throw new UsageError('classify takes one image path');
  const budget = option(() => parseBudget(v.budget, '--budget'));
  const topK = option(() => parseTopK(v['top-k'], '--top-k'));
  const image = await readInput(path, 'image');
  const r = await client.classify(image, { budget, topK, model: v.model });
  if (v.heatmap) {
    const info = (await client.models()).find((m) => m.name === r.model) as ModelInfo & { input?: { width: number; height: number; resize: ModelInput['fit'] } };
    if (!info?.input) throw new Error(`model ${r.model} does not describe its input; cannot place the map`);
    const size = await writeHeatmap(image, r.compute.map, { width: info.input.width, height: info.input.height, fit: info.input.resize }, v.heatmap);
    if (!v.json) console.log(`heatmap: ${v.heatmap} (${size.width}x${size.height})`);
  }
  if (v.json) console.log(JSON.stringify({ model: r.model, predictions: r.predictions, compute: r.compute }));
  else printClassify(r);
}

/** Longest file --stream reads; the server applies its own limit to the stream. */
const MAX_STREAM_FILE_SECONDS = 24 * 3600;

function* chunks(samples: Float32Array, perChunk: number): Generator<Uint8Array> {
  for (let i = 0; i < samples.length; i += perChunk) {
    const part = samples.subarray(i, Math.min(samples.length, i + perChunk));
    yield new Uint8Array(part.buffer, part.byteOffset, part.byteLength);
  }
}

async function transcribe(client: AcmClient, args: string[], v: Values): Promise<void> {
  const [path, ...rest] = args;
  if (!path || rest.length > 0) throw new UsageError('transcribe takes one WAV path');
  const budget = option(() => parseBudget(v.budget, '--budget'));
  const bytes = await readInput(path, 'audio');
  if (!v.stream) {
    const r = await client.transcribe(bytes, { budget, model: v.model });
    if (v.json) console.log(JSON.stringify(r));
    else console.log(`${r.text}\n(${r.model}: ${speechLine(r.compute)})`);
    return;
  }
  // A stream must arrive at the model's rate: decode and resample here, as the server does for a file.
  const speechModels = (await client.models()).filter((m): m is SpeechModelInfo => m.task === 'speech-recognition');
  const model = v.model === undefined ? speechModels[0] : speechModels.find((m) => m.name === v.model);
  if (!model) {
    throw new Error(v.model === undefined ? 'the server has no speech model' : `the server has no speech model ${JSON.stringify(v.model)}`);
  }
  const sampleRate = model.input.sample_rate;
  const samples = decodeWav(bytes, sampleRate, MAX_STREAM_FILE_SECONDS).samples;
  const tty = process.stderr.isTTY;
  let final: StreamEvent | undefined;
  // 100 ms per message: small enough for timely partials, few enough messages for long files.
  for await (const e of client.stream(chunks(samples, Math.max(1, Math.round(sampleRate / 10))), { sampleRate, encoding: 'pcm_f32le', budget, model: model.name })) {
    if (v.json) console.log(JSON.stringify(e));
    else if (e.type === 'partial') process.stderr.write(tty ? `\r\x1b[K… ${e.text}` : `… ${e.text}\n`);
    if (e.type === 'final') final = e;
  }
  if (!v.json && final) {
    if (tty) process.stderr.write('\r\x1b[K');
    console.log(`${final.text}\n(${speechLine(final.compute)})`);
  }
}

async function models(client: AcmClient, v: Values): Promise<void> {
  const list = await client.models();
  if (v.json) {
    console.log(JSON.stringify({ models: list }));
    return;
  }
  for (const m of list) {
    const extra = 'labels' in m ? `, ${m.labels.length} classes` : `, ${m.input.sample_rate} Hz, ${m.vocabulary.length} symbols, ${m.decoder} decoding`;
    console.log(`${m.name}  ${m.task}${extra}, default budget ${String(m.default_budget)}, floor ${m.budget_floor}`);
  }
}

async function main(argv: string[]): Promise<number> {
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    console.error(`acm: ${(err as Error).message.replace(/\s*\n\s*/g, ' ')} (acm --help for usage)`);
    return 2;
  }
  const { values: v, positionals } = parsed;
  const [command, ...args] = positionals;
  if (v.help || command === 'help') {
    console.log(USAGE);
    return 0;
  }
  try {
    if (!command) throw new UsageError('no command given');
    if (!['classify', 'transcribe', 'models'].includes(command) || (command === 'models' && args.length > 0)) {
      throw new UsageError(`unknown command or arguments: ${positionals.join(' ')}`);
    }
    const url = v.url ?? (process.env.ACM_URL || 'http://localhost:8080');
    const client = option(() => new AcmClient({ url }));
    if (command === 'classify') await classify(client, args, v);
    else if (command === 'transcribe') await transcribe(client, args, v);
    else await models(client, v);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`acm: ${err.message} (acm --help for usage)`);
      return 2;
    }
    const message = err instanceof AcmError ? `${err.code}: ${err.message}` : (err as Error).message;
    console.error(`acm: ${message.replace(/\s*\n\s*/g, ' ')}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
