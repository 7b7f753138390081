// The server process with an image and a speech bundle side by side: both load and are listed
// with their task, /transcribe and /asr answer, and SIGTERM ends an open stream with not_ready
// (4504) before a clean exit.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { startServer, until, untilReady } from './support/server-process.js';
import { tinyModelsDir } from './support/tiny-bundle.js';
import { pcm16, testTone, tinySpeechDir } from './support/tiny-speech.js';
import { wavFile } from './support/wav.js';

/** Two models load here, so start-up may take longer than with one. */
const WAIT_MS = 30_000;

describe('server process with a speech bundle', () => {
  it('serves both models, transcribes, and closes open streams with not_ready on SIGTERM', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'acm-both-'));
    await cp(join(await tinyModelsDir(), 'tiny-vit-acm'), join(dir, 'tiny-vit-acm'), { recursive: true });
    await cp(join(await tinySpeechDir(), 'tiny-speech-acm'), join(dir, 'tiny-speech-acm'), { recursive: true });
    const s = startServer({ ACM_MODELS_DIR: dir });
    const { child, lines } = s;
    const exited = once(child, 'exit');
    try {
      const port = await untilReady(s, WAIT_MS);
      const base = `http://127.0.0.1:${port}`;
      const models = (await (await fetch(`${base}/v1/models`)).json()) as { models: { name: string; task: string }[] };
      assert.deepEqual(models.models.map((m) => [m.name, m.task]).sort(),
        [['tiny-speech-acm', 'speech-recognition'], ['tiny-vit-acm', 'image-classification']]);
      assert.ok(!lines.some((l) => String(l.msg).startsWith('bundle skipped')), 'the speech bundle is not reported as skipped');

      const wav = await fetch(`${base}/transcribe`, { method: 'POST', headers: { 'Content-Type': 'audio/wav' },
        body: new Uint8Array(wavFile(testTone(1))) });
      assert.equal(wav.status, 200);

      const ws = new WebSocket(`ws://127.0.0.1:${port}/asr?budget=0.5`);
      const messages: { type: string; code?: string }[] = [];
      ws.on('message', (d: Buffer) => messages.push(JSON.parse(d.toString('utf8')) as { type: string }));
      const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
      await once(ws, 'open');
      ws.send(JSON.stringify({ type: 'start', sample_rate: 16000 }));
      ws.send(pcm16(testTone(0.5)));
      await until('ready message', () => (messages.some((m) => m.type === 'ready') ? true : undefined), WAIT_MS);
      child.kill('SIGTERM');
      assert.equal(await closed, 4504);
      assert.equal(messages.at(-1)?.code, 'not_ready');
      const [code] = (await exited) as [number];
      assert.equal(code, 0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
