// Load generators for the server benchmarks.
//
// closedLoop: a fixed number of connections, each sending its next request as soon as the last
// one is answered (autocannon); measures throughput at a concurrency.
// openLoop: requests sent on a fixed schedule whatever the server's speed; latency is counted from
// the scheduled send time, so a server that falls behind is charged for the queue it builds (no
// coordinated omission). Measures latency at a given fraction of capacity.
//
// Both drop the first warmupS seconds, rotate through the given images, and count only 2xx
// answers as served; other statuses and transport errors are counted separately.
import { Agent, request } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';
import { percentile } from './stats.js';

export interface Target {
  /** Server base URL, e.g. http://127.0.0.1:8080. */
  readonly url: string;
  /** Path with query, e.g. /classify or /classify?model=x. */
  readonly path: string;
  readonly images: readonly Buffer[];
  /** Extra request headers (e.g. X-Budget). */
  readonly headers?: Readonly<Record<string, string>>;
}

export interface LoadResult {
  /** Seconds measured (after warm-up). */
  readonly seconds: number;
  /** 2xx answers in the measured window. */
  readonly ok: number;
  readonly non2xx: number;
  readonly errors: number;
  /** The errors by kind: the error's code (ECONNRESET, ...), else its message. */
  readonly errorKinds: Readonly<Record<string, number>>;
  /** The non-2xx answers by status ("HTTP 503"). */
  readonly non2xxKinds: Readonly<Record<string, number>>;
  /** 2xx answers per second. */
  readonly throughputRps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Raw latencies of the 2xx answers, ms. */
  readonly latenciesMs: number[];
  /** Open loop only: the 2xx answers that carried the server's timing headers, with their latency. */
  readonly timed?: { latencyMs: number; timings: ServerTimings }[];
}

/** Transport errors counted by kind. */
export class ErrorTally {
  readonly kinds: Record<string, number> = {};
  total = 0;

  add(err: unknown): void {
    const e = err as { code?: unknown; message?: unknown; idleMs?: unknown } | undefined;
    const base = typeof e?.code === 'string' ? e.code : typeof e?.message === 'string' ? e.message : String(err);
    // A reset on a kept-alive connection says how long it had been idle: near the server's
    // keep-alive timeout it is the HTTP/1.1 race of a request sent as the server closes.
    const idleS = typeof e?.idleMs === 'number' ? Math.floor(e.idleMs / 1000) : undefined;
    const kind = idleS === undefined ? base : `${base} on a kept-alive connection idle ${idleS}-${idleS + 1} s`;
    this.count(kind);
  }

  /** One more of `kind`. */
  count(kind: string): void {
    this.kinds[kind] = (this.kinds[kind] ?? 0) + 1;
    this.total++;
  }
}

/** "3 ECONNRESET, 1 no answer within 30 s" for a report line; empty for none. */
export function errorKindsText(kinds: Readonly<Record<string, number>>): string {
  return Object.entries(kinds).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${n} ${k}`).join(', ');
}

/** "2 non-2xx (2 HTTP 503), 3 errors (3 ECONNRESET)": a run's failures for a report line. */
export function failuresText(non2xx: number, errors: number, kinds: Readonly<Record<string, number>>,
  statuses: Readonly<Record<string, number>> = {}): string {
  const byStatus = errorKindsText(statuses);
  return `${non2xx} non-2xx${non2xx > 0 && byStatus ? ` (${byStatus})` : ''}, ${errors} errors${errors > 0 ? ` (${errorKindsText(kinds)})` : ''}`;
}

function result(seconds: number, latencies: number[], non2xx: ErrorTally, errors: ErrorTally): LoadResult {
  return {
    seconds, ok: latencies.length, non2xx: non2xx.total, non2xxKinds: non2xx.kinds, errors: errors.total, errorKinds: errors.kinds,
    throughputRps: seconds > 0 ? latencies.length / seconds : NaN,
    p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99), latenciesMs: latencies,
  };
}

const REQUEST_TIMEOUT_S = 30;

/** `connections` concurrent clients for warmupS + seconds; the warm-up's answers are dropped. */
export function closedLoop(target: Target, connections: number, warmupS: number, seconds: number): Promise<LoadResult> {
  const latencies: number[] = [];
  const non2xx = new ErrorTally();
  const errors = new ErrorTally();
  const t0 = performance.now();
  const from = t0 + warmupS * 1000;
  return new Promise((resolve, reject) => {
    const instance = autocannon({
      url: target.url,
      connections,
      pipelining: 1,
      duration: warmupS + seconds,
      timeout: REQUEST_TIMEOUT_S,
      requests: target.images.map((body) => ({
        method: 'POST' as const, path: target.path, body,
        headers: { 'content-type': 'image/png', ...target.headers },
      })),
    }, (err: unknown) => {
      if (err) {
        reject(err instanceof Error ? err : new Error(`autocannon failed: ${JSON.stringify(err)}`));
        return;
      }
      const measured = (performance.now() - from) / 1000;
      resolve(result(measured, latencies, non2xx, errors));
    });
    instance.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => {
      if (performance.now() < from) return;
      if (status >= 200 && status < 300) latencies.push(ms);
      else non2xx.count(`HTTP ${status}`);
    });
    instance.on('reqError', (err: unknown) => {
      if (performance.now() >= from) errors.add(err);
    });
  });
}

/** The server's own timings of one answer (X-Queue-Time-Ms, X-Inference-Time-Ms, X-Total-Time-Ms). */
export interface ServerTimings { queueMs: number; inferenceMs: number; totalMs: number }

/** When each kept-alive socket of the open loop's agents last went idle. */
const idleSince = new WeakMap<Socket, number>();

/**
 * Longest a kept-alive socket of the open loop waits idle before the client closes it. Below the
 * server's keep-alive timeout, so a request is never sent on a connection the server is closing
 * (that race answers ECONNRESET). An agent with a timeout also obeys a server's shorter
 * `Keep-Alive: timeout=` hint (less 1 s); without one, Node's agent ignores the hint. It must differ
 * from the request timeout: Node leaves a reused socket's idle timeout in place for a request whose
 * timeout equals the agent's.
 */
export const IDLE_SOCKET_MS = 2000;

export function keepAliveAgent(): Agent {
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity, timeout: IDLE_SOCKET_MS });
  agent.on('free', (socket: Socket) => idleSince.set(socket, performance.now()));
  return agent;
}

function post(agent: Agent, target: Target, body: Buffer): Promise<{ status: number; timings?: ServerTimings }> {
  const url = new URL(target.path, target.url);
  return new Promise((resolve, reject) => {
    let idleMs: number | undefined;
    const req = request(url, {
      method: 'POST', agent, timeout: REQUEST_TIMEOUT_S * 1000,
      headers: { 'content-type': 'image/png', 'content-length': String(body.length), ...target.headers },
    }, (res) => {
      const h = (name: string): number => Number(res.headers[name]);
      const timings = { queueMs: h('x-queue-time-ms'), inferenceMs: h('x-inference-time-ms'), totalMs: h('x-total-time-ms') };
      res.on('data', () => undefined);
      res.on('end', () => resolve({ status: res.statusCode ?? 0,
        ...(Object.values(timings).every(Number.isFinite) ? { timings } : {}) }));
      res.on('error', reject);
    });
    req.on('socket', (socket: Socket) => {
      const since = req.reusedSocket ? idleSince.get(socket) : undefined;
      if (since !== undefined) idleMs = performance.now() - since;
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_S} s`)));
    req.on('error', (err) => reject(idleMs === undefined ? err : Object.assign(err, { idleMs })));
    req.end(body);
  });
}

/**
 * Where a group of requests spent their time, in mean ms: `outside` is the latency the server's
 * own total does not cover (the client falling behind its schedule, the connection, reading the
 * request before the handler runs, writing the answer), then the server's queue wait, its
 * inference, and the rest of its total (decoding, turn-around on the HTTP thread).
 */
export interface LatencySplit { requests: number; latencyMs: number; outsideMs: number; queueMs: number; inferenceMs: number; restMs: number }

export function latencySplit(samples: readonly { latencyMs: number; timings: ServerTimings }[]): LatencySplit | null {
  if (samples.length === 0) return null;
  const mean = (f: (x: { latencyMs: number; timings: ServerTimings }) => number): number =>
    samples.reduce((sum, x) => sum + f(x), 0) / samples.length;
  return {
    requests: samples.length,
    latencyMs: mean((x) => x.latencyMs),
    outsideMs: mean((x) => x.latencyMs - x.timings.totalMs),
    queueMs: mean((x) => x.timings.queueMs),
    inferenceMs: mean((x) => x.timings.inferenceMs),
    restMs: mean((x) => x.timings.totalMs - x.timings.queueMs - x.timings.inferenceMs),
  };
}

/** The split of the slowest 1% of answers (at or above p99) and of those around the median (p45-p55). */
export function tailSplit(samples: readonly { latencyMs: number; timings: ServerTimings }[]): { median: LatencySplit | null; p99: LatencySplit | null } {
  const sorted = [...samples].sort((a, b) => a.latencyMs - b.latencyMs);
  const at = (q: number): number => Math.floor(q * (sorted.length - 1));
  return { median: latencySplit(sorted.slice(at(0.45), at(0.55) + 1)), p99: latencySplit(sorted.slice(at(0.99))) };
}

export interface OpenLoopOptions {
  readonly rateRps: number;
  readonly warmupS: number;
  readonly seconds: number;
  /** Most requests outstanding; a schedule needing more counts the extra as errors, not as load. */
  readonly maxInFlight?: number;
  /** Called once per second with the seconds since the start (memory sampling hooks in here). */
  readonly onSecond?: (elapsedS: number) => void;
}

/**
 * Requests at a constant rate for warmupS + seconds. Latency runs from each request's scheduled
 * time to its last byte; requests scheduled during the warm-up are not counted.
 */
export async function openLoop(target: Target, o: OpenLoopOptions): Promise<LoadResult> {
  if (!(o.rateRps > 0)) throw new Error(`open-loop rate must be > 0 requests/s; got ${o.rateRps}`);
  const agent = keepAliveAgent();
  const maxInFlight = o.maxInFlight ?? 4096;
  const interval = 1000 / o.rateRps;
  const total = Math.max(1, Math.floor((o.warmupS + o.seconds) * o.rateRps));
  const warmCount = Math.floor(o.warmupS * o.rateRps);
  const latencies: number[] = [];
  const timed: { latencyMs: number; timings: ServerTimings }[] = [];
  const non2xx = new ErrorTally();
  const errors = new ErrorTally();
  let inFlight = 0;
  let sent = 0;
  let second = 0;
  const pending = new Set<Promise<void>>();
  const t0 = performance.now();
  while (sent < total) {
    const now = performance.now();
    while (sent < total && t0 + sent * interval <= now) {
      const index = sent++;
      const scheduled = t0 + index * interval;
      const counted = index >= warmCount;
      if (inFlight >= maxInFlight) {
        if (counted) errors.add(new Error(`more than ${maxInFlight} requests outstanding`));
        continue;
      }
      inFlight++;
      const p = post(agent, target, target.images[index % target.images.length]!).then(({ status, timings }) => {
        if (!counted) return;
        if (status >= 200 && status < 300) {
          const latencyMs = performance.now() - scheduled;
          latencies.push(latencyMs);
          if (timings) timed.push({ latencyMs, timings });
        } else {
          non2xx.count(`HTTP ${status}`);
        }
      }, (err: unknown) => {
        if (counted) errors.add(err);
      }).finally(() => {
        inFlight--;
        pending.delete(p);
      });
      pending.add(p);
    }
    const elapsed = (now - t0) / 1000;
    if (o.onSecond && elapsed >= second + 1) {
      second = Math.floor(elapsed);
      o.onSecond(second);
    }
    const next = t0 + sent * interval - performance.now();
    await new Promise((r) => setTimeout(r, Math.max(0, Math.min(next, 50))));
  }
  await Promise.all(pending);
  agent.destroy();
  return { ...result(o.seconds, latencies, non2xx, errors), timed };
}
