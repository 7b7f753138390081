// Speech benchmark against the real server process (`node dist/server/main.js`) with a speech bundle:
//
//  1. Real-time factor of one stream at a time, per budget (--budgets, default 0.25,0.5,1.0): each
//     WAV streamed over /asr as fast as the server takes it (no pacing), RTF = wall time from the
//     first frame to the final / audio seconds; and the same WAV through POST /transcribe (request
//     sent to answer read). Median [min-max] over files x repeats; budgets interleaved per file.
//     Also the CER of the streamed finals against the whole-file texts (0 when they are identical).
//  2. --streams (16) streams at once, each at real-time speed (--frame-ms 100 frames paced by the
//     wall clock, starts spread over one frame period), each looping over the WAVs for --seconds
//     (20) of audio, at --budget (0.5). Latency of every partial (bench/speech-latency.ts): its
//     arrival minus the send time of the frame that completed the audio it covers. p50/p95/max
//     over all partials, the final's latency after stop, and which streams fell behind real time.
//
//   (options: USAGE below, or --help)
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { hasSpeechBundles } from '../server/speech/bundle.js';
import { budgetArg, intArg, numberArg, parseCli } from './args.js';
import { timedStream } from './asr-timing.js';
import { errorRates } from './error-rate.js';
import { BEHIND, fellBehind, partialLatencies } from './speech-latency.js';
import { DEFAULT_WAVS_DIR, loadClips, synthesizedDir, type Clip } from './speech-wavs.js';
import { baseServerEnv, REPO, ServerProcess } from './server-process.js';
import { fmt, median, percentile, summarize, type Summary } from './stats.js';
import { printTable } from './table.js';

const USAGE = `
usage: npm run bench:speech -- [--quick] [--models-dir models] [--model NAME] [--wavs FOLDER] [--files 20]
    [--budgets 0.25,0.5,1.0] [--repeats N] [--streams 16] [--seconds 20] [--budget 0.5] [--frame-ms 100]
    [--final-timeout 60] [--json FILE]
Real-time factor of one stream per budget, then --streams concurrent streams at real-time speed:
latency from audio arrival to the partial that covers it.
`;

const { values: opts } = parseCli(USAGE, {
  options: {
    quick: { type: 'boolean', default: false },
    'models-dir': { type: 'string' },
    model: { type: 'string' },
    wavs: { type: 'string' },
    files: { type: 'string' },
    budgets: { type: 'string', default: '0.25,0.5,1.0' },
    repeats: { type: 'string' },
    streams: { type: 'string' },
    seconds: { type: 'string' },
    budget: { type: 'string' },
    'frame-ms': { type: 'string' },
    'final-timeout': { type: 'string' },
    json: { type: 'string', default: join(REPO, '.cache', 'bench', 'speech-stream.json') },
  },
});

const quick = opts.quick;
const settings = {
  quick,
  files: intArg('files', opts.files, quick ? 3 : 20, 1, 10_000),
  budgets: opts.budgets.split(',').map((b) => budgetArg('budgets', b, NaN)),
  repeats: opts.repeats === undefined ? undefined : intArg('repeats', opts.repeats, 1, 1, 100),
  streams: intArg('streams', opts.streams, quick ? 4 : 16, 1, 10_000),
  seconds: numberArg('seconds', opts.seconds, quick ? 3 : 20, 0.1, 3600),
  budget: budgetArg('budget', opts.budget, 0.5),
  frameMs: intArg('frame-ms', opts['frame-ms'], 100, 10, 1000),
  finalTimeoutS: numberArg('final-timeout', opts['final-timeout'], 60, 1, 3600),
};
const OPEN_TIMEOUT_MS = 10_000;
const modelsDir = resolve(opts['models-dir'] ?? process.env.ACM_MODELS_DIR ?? join(REPO, 'models'));

interface SpeechModel { name: string; task: string; input: { sample_rate: number } }

async function speechModel(server: ServerProcess): Promise<SpeechModel> {
  const res = await fetch(`${server.url}/v1/models`, { signal: AbortSignal.timeout(10_000) });
  const { models } = (await res.json()) as { models: SpeechModel[] };
  const speech = models.filter((m) => m.task === 'speech-recognition');
  const chosen = opts.model === undefined ? speech[0] : speech.find((m) => m.name === opts.model);
  if (!chosen) {
    throw new Error(speech.length === 0
      ? `the server loaded no speech model from ${modelsDir} (its bundles: ${models.map((m) => `${m.name} (${m.task})`).join(', ') || 'none'}); ` +
        'pass --models-dir with a speech-recognition bundle'
      : `--model must be one of the speech models ${speech.map((m) => m.name).join(', ')}; got ${JSON.stringify(opts.model)}`);
  }
  return chosen;
}

interface Target { server: ServerProcess; model: string; rate: number; frameSamples: number }

const wsUrl = (t: Target): string => `${t.server.url.replace(/^http/, 'ws')}/asr?model=${encodeURIComponent(t.model)}`;

/** Seconds of wall time per second of audio, streamed unpaced; an Error when the stream failed. */
async function streamRtf(t: Target, clip: Clip, budget: number): Promise<{ rtf: number; used: number; text: string } | Error> {
  const s = await timedStream({ url: wsUrl(t), budget, rate: t.rate, audio: clip.samples, frameSamples: t.frameSamples, paced: false,
    openTimeoutMs: OPEN_TIMEOUT_MS, finalTimeoutMs: settings.finalTimeoutS * 1000 });
  if (s.error !== undefined || s.finalAt === undefined || s.sent.length === 0) return new Error(`/asr ${clip.name}: ${s.error ?? 'no final'}`);
  return { rtf: (s.finalAt - s.sent[0]!.at) / 1000 / clip.seconds, used: s.final?.used ?? NaN, text: s.final?.text ?? '' };
}

async function transcribeRtf(t: Target, clip: Clip, budget: number): Promise<{ rtf: number; used: number; text: string } | Error> {
  const t0 = performance.now();
  try {
    const res = await fetch(`${t.server.url}/transcribe?model=${encodeURIComponent(t.model)}`, {
      method: 'POST', headers: { 'Content-Type': 'audio/wav', 'X-Budget': String(budget) }, body: new Uint8Array(clip.wav),
      signal: AbortSignal.timeout(settings.finalTimeoutS * 1000) });
    const body = (await res.json()) as { text?: string; compute?: { used?: number }; message?: string };
    if (res.status !== 200) return new Error(`/transcribe ${clip.name}: HTTP ${res.status}: ${body.message ?? ''}`);
    return { rtf: (performance.now() - t0) / 1000 / clip.seconds, used: body.compute?.used ?? NaN, text: body.text ?? '' };
  } catch (err) {
    return new Error(`/transcribe ${clip.name}: ${(err as Error).message}`);
  }
}

interface RtfRow {
  budget: number; stream: Summary; transcribe: Summary; stream_used: number; transcribe_used: number;
  /** CER of the streamed finals against the /transcribe texts of the same files (0: identical). */
  stream_vs_whole_cer: number; failures: string[];
}

async function measureRtf(t: Target, clips: Clip[], repeats: number): Promise<RtfRow[]> {
  // Not counted: the first requests pay for lazily built state (sessions' first runs, the decoder thread).
  for (const r of [await streamRtf(t, clips[0]!, 1), await transcribeRtf(t, clips[0]!, 1)]) if (r instanceof Error) throw r;
  const rows = settings.budgets.map((budget) => ({ budget, s: [] as number[], h: [] as number[], su: [] as number[], hu: [] as number[],
    streamed: [] as string[], whole: [] as string[], failures: [] as string[] }));
  for (let rep = 0; rep < repeats; rep++) {
    for (const clip of clips) {
      for (const row of rows) {
        const s = await streamRtf(t, clip, row.budget);
        if (s instanceof Error) row.failures.push(s.message);
        else { row.s.push(s.rtf); row.su.push(s.used); }
        const h = await transcribeRtf(t, clip, row.budget);
        if (h instanceof Error) row.failures.push(h.message);
        else { row.h.push(h.rtf); row.hu.push(h.used); }
        if (!(s instanceof Error) && !(h instanceof Error)) {
          row.streamed.push(s.text);
          row.whole.push(h.text);
        }
      }
    }
    console.log(`  repeat ${rep + 1}/${repeats}: ${clips.length} files x ${rows.length} budgets`);
  }
  return rows.map((r) => ({ budget: r.budget, stream: summarize(r.s), transcribe: summarize(r.h),
    stream_used: r.su.length ? median(r.su) : NaN, transcribe_used: r.hu.length ? median(r.hu) : NaN,
    stream_vs_whole_cer: r.whole.length ? errorRates(r.streamed, r.whole).cer : NaN, failures: r.failures }));
}

/** `seconds` of audio: the clips one after another from clip `first`, looping, cut to length. */
function loopedAudio(clips: Clip[], first: number, seconds: number, rate: number): Float32Array {
  const out = new Float32Array(Math.round(seconds * rate));
  for (let at = 0, i = first; at < out.length; i++) {
    const c = clips[i % clips.length]!.samples;
    out.set(c.subarray(0, Math.min(c.length, out.length - at)), at);
    at += c.length;
  }
  return out;
}

interface StreamRow { stream: number; audio_s: number; partials: number; p50_ms: number; max_ms: number; final_ms: number | null;
  first_quarter_ms: number | null; last_quarter_ms: number | null; behind: boolean; reasons: string[]; send_late_max_ms: number; error: string | null }

async function measureConcurrent(t: Target, clips: Clip[]) {
  const frameMs = (t.frameSamples / t.rate) * 1000;
  const runs = await Promise.all(Array.from({ length: settings.streams }, (_, i) => timedStream({
    url: wsUrl(t), budget: settings.budget, rate: t.rate, audio: loopedAudio(clips, i, settings.seconds, t.rate),
    frameSamples: t.frameSamples, paced: true, delayMs: (i * frameMs) / settings.streams,
    openTimeoutMs: OPEN_TIMEOUT_MS, finalTimeoutMs: settings.finalTimeoutS * 1000 })));
  const all: number[] = [];
  const finals: number[] = [];
  const rows: StreamRow[] = runs.map((s, i) => {
    const lat = partialLatencies(s.sent, s.updates, t.rate);
    all.push(...lat);
    const finalMs = s.finalAt !== undefined && s.stopAt !== undefined ? s.finalAt - s.stopAt : undefined;
    if (finalMs !== undefined) finals.push(finalMs);
    const v = fellBehind(lat, finalMs);
    const late = s.sent.map((f, k) => f.at - (s.sent[0]!.at + k * frameMs));
    const orNull = (x: number): number | null => (Number.isFinite(x) ? x : null);
    return { stream: i, audio_s: (s.sent.at(-1)?.endSample ?? 0) / t.rate, partials: lat.length, p50_ms: median(lat), max_ms: lat.length ? Math.max(...lat) : NaN,
      final_ms: finalMs ?? null, first_quarter_ms: orNull(v.first_quarter_ms), last_quarter_ms: orNull(v.last_quarter_ms),
      behind: v.behind, reasons: v.reasons, send_late_max_ms: late.length ? Math.max(...late) : 0, error: s.error ?? null };
  });
  return {
    streams: settings.streams, budget: settings.budget, seconds_per_stream: settings.seconds, frame_ms: frameMs,
    behind_rule: `last quarter's median partial latency > first quarter's + ${BEHIND.growthMs} ms, or final > ${BEHIND.finalMs} ms after stop`,
    partials: all.length,
    latency_ms: { p50: percentile(all, 50), p95: percentile(all, 95), max: all.length ? Math.max(...all) : NaN },
    final_ms: { p50: percentile(finals, 50), max: finals.length ? Math.max(...finals) : NaN },
    streams_behind: rows.filter((r) => r.behind).length,
    failures: rows.filter((r) => r.error !== null).length,
    send_late_max_ms: Math.max(0, ...rows.map((r) => r.send_late_max_ms)),
    per_stream: rows,
  };
}

async function main(): Promise<void> {
  if (!hasSpeechBundles(modelsDir)) {
    throw new Error(`no speech bundle in ${modelsDir} (a sub-folder whose acm.json has task "speech-recognition"); ` +
      'pass --models-dir with one');
  }
  const base = baseServerEnv();
  base.ACM_MODELS_DIR = modelsDir;
  // The concurrent part must not be refused at the stream limit.
  if (base.ACM_MAX_STREAMS === undefined && settings.streams > 64) base.ACM_MAX_STREAMS = String(settings.streams);
  const wavsDir = resolve(opts.wavs ?? (existsSync(DEFAULT_WAVS_DIR) ? DEFAULT_WAVS_DIR : await synthesizedDir()));
  const started = new Date().toISOString();
  const loadBefore = loadavg();
  const server = await ServerProcess.start({ label: 'speech' }, base);
  try {
    const model = await speechModel(server);
    const rate = model.input.sample_rate;
    const clips = await loadClips(wavsDir, settings.files, rate);
    const repeats = settings.repeats ?? (clips.length >= 3 ? 1 : 3);
    const t: Target = { server, model: model.name, rate, frameSamples: Math.round((rate * settings.frameMs) / 1000) };
    const audio = clips.reduce((s, c) => s + c.seconds, 0);
    console.log(`speech-stream: ${model.name}, ${clips.length} WAVs from ${wavsDir} (${audio.toFixed(1)} s of audio), ` +
      `base env ${JSON.stringify(base)}${quick ? ' (quick)' : ''}`);

    console.log(`\nReal-time factor, one stream at a time (${repeats} repeat${repeats > 1 ? 's' : ''})`);
    const rtf = await measureRtf(t, clips, repeats);
    printTable(`Real-time factor (wall s / audio s; below 1 = faster than real time), median [min-max] over ${clips.length} files x ${repeats}`,
      ['budget', '/asr unpaced', 'used', 'POST /transcribe', 'used', 'CER streamed vs whole', 'failed'],
      rtf.map((r) => [r.budget.toFixed(2), fmt(r.stream, 3), r.stream_used.toFixed(3), fmt(r.transcribe, 3), r.transcribe_used.toFixed(3),
        r.stream_vs_whole_cer.toFixed(4), String(r.failures.length)]));

    console.log(`\n${settings.streams} real-time streams of ${settings.seconds} s at budget ${settings.budget}`);
    const conc = await measureConcurrent(t, clips);
    const ms = (x: number | null): string => (x === null || !Number.isFinite(x) ? 'n/a' : x.toFixed(0));
    printTable(`Partial latency (arrival - send of the frame completing the covered audio), ${conc.partials} partials`,
      ['streams', 'p50 ms', 'p95 ms', 'max ms', 'final p50 ms', 'final max ms', 'behind', 'failed', 'send late max ms'],
      [[String(conc.streams), ms(conc.latency_ms.p50), ms(conc.latency_ms.p95), ms(conc.latency_ms.max), ms(conc.final_ms.p50),
        ms(conc.final_ms.max), String(conc.streams_behind), String(conc.failures), ms(conc.send_late_max_ms)]]);
    for (const r of conc.per_stream.filter((x) => x.behind || x.error !== null)) {
      console.log(`  stream ${r.stream}: ${r.error ?? r.reasons.join('; ')}`);
    }
    console.log(`Behind real time: ${conc.behind_rule}. ${conc.streams_behind} of ${conc.streams} streams fell behind.`);

    const failures = [...rtf.flatMap((r) => r.failures), ...conc.per_stream.flatMap((r) => (r.error !== null ? [`stream ${r.stream}: ${r.error}`] : []))];
    for (const f of failures.slice(0, 10)) console.log(`  failed: ${f}`);
    const out = resolve(opts.json);
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, JSON.stringify({
      bench: 'speech-stream', started, finished: new Date().toISOString(),
      host: { cpus: cpus().length, node: process.version, loadavg_before: loadBefore, loadavg_after: loadavg() },
      settings: { ...settings, repeats, base_env: base, wavs_dir: wavsDir, files_used: clips.map((c) => ({ name: c.name, seconds: c.seconds })) },
      model: model.name, sample_rate: rate, rtf, concurrent: conc,
    }, null, 2));
    console.log(`wrote ${out}`);
    // A report with failed requests is incomplete: say so in the exit code too.
    if (failures.length > 0) process.exitCode = 1;
  } finally {
    await server.stop();
  }
}

try {
  await main();
} catch (err) {
  // The reason alone (no server is left running: main stops its own); the stack adds nothing.
  console.error(`speech-stream: ${(err as Error).message}`);
  process.exitCode = 1;
}
