// The server process with an image and a speech bundle side by side: both load and are listed
// with their task, /transcribe and /asr answer, and SIGTERM ends an open stream with not_ready
// (4504) before a clean exit.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { tinyModelsDir } from './support/tiny-bundle.js';
import { pcm16, testTone, tinySpeechDir } from './support/tiny-speech.js';

const MAIN = fileURLToPath(new URL('../server/main.js', import.meta.url));

async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await probe();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  return assert.fail(`timed out waiting for ${what}`);
}

describe('server process with a speech bundle', () => {
  it('serves both models, transcribes, and closes open streams with not_ready on SIGTERM', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'acm-both-'));
    await cp(join(await tinyModelsDir(), 'tiny-vit-acm'), join(dir, 'tiny-vit-acm'), { recursive: true });
    await cp(join(await tinySpeechDir(), 'tiny-speech-acm'), join(dir, 'tiny-speech-acm'), { recursive: true });
    const child = spawn(process.execPath, [MAIN], { stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: '0', ACM_INTRA_OP_THREADS: '1', ACM_MODELS_DIR: dir } });
    const lines: Record<string, unknown>[] = [];
    let pending = '';
    child.stdout.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      const parts = pending.split('\n');
      pending = parts.pop() ?? '';
      for (const line of parts) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
    });
    const exited = once(child, 'exit');
    try {
      const port = await until('listening', () => lines.find((l) => l.msg === 'listening')?.port as number | undefined);
      const base = `http://127.0.0.1:${port}`;
      await until('ready', async () => ((await fetch(`${base}/readyz`)).status === 200 ? true : undefined));
      const models = (await (await fetch(`${base}/v1/models`)).json()) as { models: { name: string; task: string }[] };
      assert.deepEqual(models.models.map((m) => [m.name, m.task]).sort(),
        [['tiny-speech-acm', 'speech-recognition'], ['tiny-vit-acm', 'image-classification']]);
      assert.ok(!lines.some((l) => String(l.msg).startsWith('bundle skipped')), 'the speech bundle is not reported as skipped');

      const wav = await fetch(`${base}/transcribe`, { method: 'POST', headers: { 'Content-Type': 'audio/wav' },
        body: new Uint8Array(wavOf(testTone(1))) });
      assert.equal(wav.status, 200);

      const ws = new WebSocket(`ws://127.0.0.1:${port}/asr?budget=0.5`);
      const messages: { type: string; code?: string }[] = [];
      ws.on('message', (d: Buffer) => messages.push(JSON.parse(d.toString('utf8')) as { type: string }));
      const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
      await once(ws, 'open');
      ws.send(JSON.stringify({ type: 'start', sample_rate: 16000 }));
      ws.send(pcm16(testTone(0.5)));
      await until('ready message', () => (messages.some((m) => m.type === 'ready') ? true : undefined));
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

function wavOf(samples: Float32Array): Buffer {
  const data = pcm16(samples);
  const h = Buffer.alloc(44);
  h.write('RIFF', 0);
  h.writeUInt32LE(36 + data.length, 4);
  h.write('WAVEfmt ', 8);
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20);
  h.writeUInt16LE(1, 22);
  h.writeUInt32LE(16000, 24);
  h.writeUInt32LE(32000, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write('data', 36);
  h.writeUInt32LE(data.length, 40);
  return Buffer.concat([h, data]);
}
