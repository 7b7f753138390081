// The server as an operator runs it: `node dist/server/main.js` in a child process, its JSON log
// lines collected as they arrive, and waits for the port it bound and for readiness.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../../server/main.js', import.meta.url));

export interface ServerProcess {
  readonly child: ChildProcess;
  /** stdout, one parsed pino line each, in order. */
  readonly lines: Record<string, unknown>[];
  readonly stderr: string[];
}

/** Starts the server on a free port of 127.0.0.1 with one intra-op thread; `env` adds to or overrides that. */
export function startServer(env: Record<string, string>, args: string[] = []): ServerProcess {
  const child = spawn(process.execPath, [MAIN, ...args], {
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: '0', ACM_INTRA_OP_THREADS: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  let pending = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    const parts = pending.split('\n');
    pending = parts.pop() ?? '';
    for (const line of parts) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
  });
  child.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
  return { child, lines, stderr };
}

/** Polls `probe` every 50 ms until it gives a value; fails the test naming `what` after `ms`. */
export async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await probe();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  return assert.fail(`timed out waiting for ${what}`);
}

/** Waits for the `listening` log line and then for /readyz to answer 200; returns the bound port. */
export async function untilReady(s: ServerProcess, ms = 20_000): Promise<number> {
  const port = await until('listening', () => s.lines.find((l) => l.msg === 'listening')?.port as number | undefined, ms);
  await until('ready', async () => ((await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200 ? true : undefined), ms);
  return port;
}
