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
  /** 2xx answers per second. */
  readonly throughputRps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Raw latencies of the 2xx answers, ms. */
  readonly latenciesMs: number[];
}

function result(seconds: number, latencies: number[], non2xx: number, errors: number): LoadResult {
  return {
    seconds, ok: latencies.length, non2xx, errors, throughputRps: seconds > 0 ? latencies.length / seconds : NaN,
    p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99), latenciesMs: latencies,
  };
}

const REQUEST_TIMEOUT_S = 30;

/** `connections` concurrent clients for warmupS + seconds; the warm-up's answers are dropped. */
export function closedLoop(target: Target, connections: number, warmupS: number, seconds: number): Promise<LoadResult> {
  const latencies: number[] = [];
  let non2xx = 0;
  let errors = 0;
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
      else non2xx++;
    });
    instance.on('reqError', () => {
      if (performance.now() >= from) errors++;
    });
  });
}

function post(agent: Agent, target: Target, body: Buffer): Promise<number> {
  const url = new URL(target.path, target.url);
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method: 'POST', agent, timeout: REQUEST_TIMEOUT_S * 1000,
      headers: { 'content-type': 'image/png', 'content-length': String(body.length), ...target.headers },
    }, (res) => {
      res.on('data', () => undefined);
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_S} s`)));
    req.on('error', reject);
    req.end(body);
  });
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
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity });
  const maxInFlight = o.maxInFlight ?? 4096;
  const interval = 1000 / o.rateRps;
  const total = Math.max(1, Math.floor((o.warmupS + o.seconds) * o.rateRps));
  const warmCount = Math.floor(o.warmupS * o.rateRps);
  const latencies: number[] = [];
  let non2xx = 0;
  let errors = 0;
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
        if (counted) errors++;
        continue;
      }
      inFlight++;
      const p = post(agent, target, target.images[index % target.images.length]!).then((status) => {
        if (!counted) return;
        if (status >= 200 && status < 300) latencies.push(performance.now() - scheduled);
        else non2xx++;
      }, () => {
        if (counted) errors++;
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
  return result(o.seconds, latencies, non2xx, errors);
}
