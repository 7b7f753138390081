// The speech benchmark: its latency rules on hand-made timelines, and a quick run end to end
// against a real server process serving the tiny random speech bundle. Nothing here asserts a
// speed (timings on a shared machine are not reproducible), only the report's structure and sanity.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { completedAt, fellBehind, partialLatencies, type SentFrame, type Update } from '../bench/speech-latency.js';
import type { Summary } from '../bench/stats.js';
import { assertPositiveSummary } from './support/bench-report.js';
import { tinyModelsDir } from './support/tiny-bundle.js';
import { testTone, tinySpeechDir } from './support/tiny-speech.js';
import { wavFile } from './support/wav.js';

const run = promisify(execFile);
const BENCH = fileURLToPath(new URL('../bench/speech-stream.js', import.meta.url));

/** 100 ms frames of 1600 samples, frame k sent at 1000 + 100 k ms. */
const frames: SentFrame[] = Array.from({ length: 10 }, (_, k) => ({ endSample: (k + 1) * 1600, at: 1000 + 100 * k }));
const partial = (at: number, start: number, length: number): Update => ({ type: 'partial', at, frames: { frame_ms: 20, start, length } });

describe('speech bench latency rules', () => {
  it('times a partial from the send of the frame that completed the audio it covers', () => {
    assert.equal(completedAt(frames, 1600), 1000, 'exactly the first frame');
    assert.equal(completedAt(frames, 1601), 1100, 'one sample more needs the second frame');
    assert.equal(completedAt(frames, 99_999), 1900, 'past the audio sent: the last frame');
    assert.equal(completedAt([], 10), undefined);
    // 10 frames of 20 ms = 3200 samples, completed by frame 1 (sent at 1100); then 20 more frames
    // (frames 10..29, 9600 samples) completed by frame 5 (sent at 1500). A partial with nothing
    // recognised yet has no latency; the final is not a partial.
    const updates = [partial(1150, 0, 0), partial(1250, 0, 10), partial(1580, 10, 20), { ...partial(2100, 0, 30), type: 'final' as const }];
    assert.deepEqual(partialLatencies(frames, updates, 16000), [150, 80]);
  });

  it('calls a stream behind when its latency grows by more than a second or its final is late', () => {
    const steady = [100, 120, 110, 130, 100, 120, 110, 125];
    assert.equal(fellBehind(steady, 50).behind, false);
    const growing = [100, 120, 400, 700, 900, 1100, 1200, 1300];
    const g = fellBehind(growing, 50);
    assert.equal(g.behind, true);
    assert.deepEqual([g.first_quarter_ms, g.last_quarter_ms], [110, 1250]);
    assert.match(g.reasons.join(), /grew from 110 ms to 1250 ms/);
    // Growth of exactly one second is still within the rule.
    assert.equal(fellBehind([100, 100, 600, 700, 900, 1000, 1100, 1100], 50).behind, false);
    assert.deepEqual(fellBehind(steady, 2500).reasons, ['final 2500 ms after stop']);
    assert.deepEqual(fellBehind(steady, undefined).reasons, ['no final transcript']);
    assert.equal(fellBehind([5000], 10).behind, false, 'too few partials to compare quarters');
  });
});

type Stat = Summary;
interface Report {
  bench: string;
  model: string;
  sample_rate: number;
  settings: { files_used: { name: string; seconds: number }[]; repeats: number };
  rtf: { budget: number; stream: Stat; transcribe: Stat; stream_used: number; transcribe_used: number; stream_vs_whole_cer: number; failures: string[] }[];
  concurrent: {
    streams: number; budget: number; partials: number; streams_behind: number; failures: number;
    latency_ms: { p50: number; p95: number; max: number }; final_ms: { p50: number; max: number };
    per_stream: { stream: number; audio_s: number; partials: number; final_ms: number | null; behind: boolean; error: string | null }[];
  };
}

describe('speech bench', () => {
  it('measures RTF per budget and concurrent stream latency against the server process', { timeout: 120_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'acm-bench-speech-'));
    try {
      // The server needs its image bundle beside the speech bundle.
      const models = join(dir, 'models');
      await cp(join(await tinyModelsDir(), 'tiny-vit-acm'), join(models, 'tiny-vit-acm'), { recursive: true });
      await cp(join(await tinySpeechDir(), 'tiny-speech-acm'), join(models, 'tiny-speech-acm'), { recursive: true });
      const wavs = join(dir, 'wavs');
      await mkdir(wavs);
      for (let i = 0; i < 3; i++) await writeFile(join(wavs, `clip-${i}.wav`), wavFile(testTone(1 + 0.5 * i, 16000, i + 1)));
      const out = join(dir, 'speech-stream.json');
      await run(process.execPath, [BENCH, '--quick', '--models-dir', models, '--wavs', wavs, '--streams', '3', '--seconds', '2',
        '--json', out], { timeout: 110_000, env: { PATH: process.env.PATH ?? '', ACM_INTRA_OP_THREADS: '1' } });
      const r = JSON.parse(await readFile(out, 'utf8')) as Report;
      assert.equal(r.bench, 'speech-stream');
      assert.equal(r.model, 'tiny-speech-acm');
      assert.equal(r.sample_rate, 16000);
      assert.deepEqual(r.settings.files_used.map((f) => f.name), ['clip-0.wav', 'clip-1.wav', 'clip-2.wav']);
      assert.equal(r.settings.repeats, 1);

      assert.deepEqual(r.rtf.map((x) => x.budget), [0.25, 0.5, 1]);
      for (const row of r.rtf) {
        assertPositiveSummary(row.stream, 3, `/asr RTF at ${row.budget}`);
        assertPositiveSummary(row.transcribe, 3, `/transcribe RTF at ${row.budget}`);
        assert.deepEqual(row.failures, []);
        for (const used of [row.stream_used, row.transcribe_used]) assert.ok(used > 0 && used <= 1, `compute used ${used} in (0, 1]`);
        // Streams are cut into the same windows as whole files: the same text.
        assert.equal(row.stream_vs_whole_cer, 0, `streamed vs whole CER at ${row.budget}`);
      }

      const c = r.concurrent;
      assert.equal(c.streams, 3);
      assert.equal(c.budget, 0.5);
      assert.equal(c.failures, 0);
      assert.equal(c.per_stream.length, 3);
      for (const s of c.per_stream) {
        assert.equal(s.error, null, `stream ${s.stream} failed`);
        assert.equal(s.audio_s, 2, `stream ${s.stream} sent all its audio`);
        assert.ok(s.partials > 0, `stream ${s.stream} timed its partials`);
        assert.ok(s.final_ms !== null && s.final_ms >= 0, `stream ${s.stream} final latency ${s.final_ms}`);
        assert.equal(typeof s.behind, 'boolean');
      }
      assert.equal(c.partials, c.per_stream.reduce((n, s) => n + s.partials, 0));
      const { p50, p95, max } = c.latency_ms;
      assert.ok(p50 >= 0 && p50 <= p95 && p95 <= max && Number.isFinite(max), `partial latency p50 ${p50} <= p95 ${p95} <= max ${max}`);
      assert.ok(c.final_ms.p50 >= 0 && c.final_ms.p50 <= c.final_ms.max);
      assert.ok(Number.isInteger(c.streams_behind) && c.streams_behind >= 0 && c.streams_behind <= 3);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a models folder without a speech bundle, naming it', async () => {
    const models = await tinyModelsDir();
    await assert.rejects(run(process.execPath, [BENCH, '--quick', '--models-dir', models], { timeout: 30_000, env: { PATH: process.env.PATH ?? '' } }),
      (err: { code?: number; stderr?: string }) => {
        assert.notEqual(err.code, 0);
        assert.ok(err.stderr?.includes(`no speech bundle in ${models}`), err.stderr);
        return true;
      });
  });
});
