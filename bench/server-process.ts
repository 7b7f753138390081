// The real server as a child process, as an operator runs it (`node dist/server/main.js`), for the
// server-level benchmarks: a free port, the configuration as environment variables, readiness from
// GET /readyz, resident memory from /proc, and a stop that never leaves a server behind.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const MAIN = fileURLToPath(new URL('../server/main.js', import.meta.url));

/**
 * The node flags the server is launched with (`npm start`, the Docker image; test/launch.test.ts
 * keeps the three in step). --max-semi-space-size=4 caps V8's young generation of the HTTP
 * thread at 4 MiB per semi-space: left to grow to its default 16 MiB, it did so in steps under
 * steady load, long after warm-up, and resident memory grew with it.
 */
export const SERVER_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];

export interface ServerOptions {
  /** Name in messages, e.g. "batching-off". */
  readonly label: string;
  /** Configuration as the server's environment variables (server/README.md); applied over `base`. */
  readonly env?: Readonly<Record<string, string>>;
  /** How long loading the models may take. */
  readonly readyTimeoutMs?: number;
  /** Node flags instead of SERVER_NODE_FLAGS (comparing launch settings). */
  readonly nodeFlags?: readonly string[];
}

const live = new Set<ChildProcess>();
// A bench that crashes or is interrupted must not leave servers running and loading the machine.
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});
process.once('SIGINT', () => process.exit(130));
process.once('SIGTERM', () => process.exit(143));

/** Process settings outside the server's configuration that a bench passes on: glibc's malloc
 * arenas and libuv's thread pool change the memory and CPU a server uses. */
const PROCESS_ENV = new Set(['LOG_LEVEL', 'MALLOC_ARENA_MAX', 'UV_THREADPOOL_SIZE']);

/**
 * ACM_* settings, LOG_LEVEL, MALLOC_ARENA_MAX and UV_THREADPOOL_SIZE of the bench's own
 * environment: the base every started server gets. Servers log at warn unless LOG_LEVEL says
 * otherwise, so per-request log lines (info) cost nothing unless asked for.
 */
export function baseServerEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if ((k.startsWith('ACM_') || PROCESS_ENV.has(k)) && v !== undefined && v !== '') out[k] = v;
  }
  return out;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const address = srv.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  srv.close();
  await once(srv, 'close');
  return port;
}

export interface Memory { rssKiB: number; hwmKiB: number }

/** VmRSS (now) and VmHWM (peak) of a process: every thread, workers included, shares them. */
export function readMemory(pid: number): Memory {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch (err) {
    throw new Error(`cannot read /proc/${pid}/status (the memory benchmark needs Linux): ${(err as Error).message}`);
  }
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
    if (!m) throw new Error(`/proc/${pid}/status has no ${name} line`);
    return Number(m[1]);
  };
  return { rssKiB: field('VmRSS'), hwmKiB: field('VmHWM') };
}

export class ServerProcess {
  private readonly lines: string[] = [];
  private exited: Promise<number | null>;
  private exitCode: number | null | undefined;

  private constructor(readonly label: string, readonly url: string, private readonly child: ChildProcess) {
    const keep = (chunk: Buffer): void => {
      for (const line of chunk.toString().split('\n')) if (line.trim()) this.lines.push(line);
      if (this.lines.length > 40) this.lines.splice(0, this.lines.length - 40);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.exited = new Promise((resolve) => child.once('exit', (code) => {
      live.delete(child);
      this.exitCode = code;
      resolve(code);
    }));
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** The last lines the server wrote (logs at the bench's level, and stderr). */
  tail(): string {
    return this.lines.join('\n');
  }

  memory(): Memory {
    return readMemory(this.pid);
  }

  /**
   * Starts `node dist/server/main.js` on a free local port and resolves once /readyz answers 200.
   * Rejects with the server's last output if it exits or does not become ready in time.
   */
  static async start(opts: ServerOptions, base: Readonly<Record<string, string>> = baseServerEnv()): Promise<ServerProcess> {
    const port = await freePort();
    const env = { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn', ...base, ...opts.env, HOST: '127.0.0.1', PORT: String(port) };
    const child = spawn(process.execPath, [...(opts.nodeFlags ?? SERVER_NODE_FLAGS), MAIN], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    const server = new ServerProcess(opts.label, `http://127.0.0.1:${port}`, child);
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 180_000);
    while (Date.now() < deadline) {
      if (server.exitCode !== undefined) {
        throw new Error(`server ${opts.label} exited with code ${String(server.exitCode)} before it was ready:\n${server.tail()}`);
      }
      try {
        const res = await fetch(`${server.url}/readyz`, { signal: AbortSignal.timeout(2000) });
        await res.arrayBuffer();
        if (res.status === 200) return server;
      } catch {
        // Not listening yet.
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    await server.stop();
    throw new Error(`server ${opts.label} was not ready within ${(opts.readyTimeoutMs ?? 180_000) / 1000} s:\n${server.tail()}`);
  }

  /** SIGTERM (graceful), then SIGKILL if it has not exited within 20 s. Resolves with the exit code. */
  async stop(): Promise<number | null> {
    if (this.exitCode !== undefined) return this.exitCode;
    this.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((r) => { timer = setTimeout(() => r('late'), 20_000); });
    const outcome = await Promise.race([this.exited, late]);
    clearTimeout(timer);
    if (outcome === 'late') {
      this.child.kill('SIGKILL');
      return this.exited;
    }
    return outcome;
  }
}

/** `count` committed test images spread evenly over the sorted PNGs of `dir`, so load rotates classes. */
export function loadImages(dir: string, count: number): Buffer[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.png')).sort();
  } catch (err) {
    throw new Error(`cannot list test images in ${dir}: ${(err as Error).message}`);
  }
  if (names.length === 0) throw new Error(`no .png test images in ${dir}`);
  const n = Math.min(count, names.length);
  return Array.from({ length: n }, (_, i) => readFileSync(join(dir, names[Math.floor((i * names.length) / n)]!)));
}

export const DEFAULT_IMAGES_DIR = join(REPO, 'test', 'fixtures', 'fashion-test');
