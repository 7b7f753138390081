// GET /healthz on a fixed interval, the way an orchestrator's liveness probe does (a new
// connection each time), from its own thread so the load generator's event loop cannot delay or
// distort its timings. startProbe() runs it; stop() returns the latencies.
import { get } from 'node:http';
import { performance } from 'node:perf_hooks';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

interface ProbeInit { url: string; intervalMs: number; timeoutMs: number }
export interface ProbeResult { latenciesMs: number[]; failures: number }

function probeOnce(url: string, timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = get(`${url}/healthz`, { agent: false, timeout: timeoutMs }, (res) => {
      res.on('data', () => undefined);
      res.on('end', () => (res.statusCode === 200 ? resolve(performance.now() - t0) : reject(new Error(`status ${res.statusCode}`))));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

function runProbe(init: ProbeInit): void {
  const latencies: number[] = [];
  let failures = 0;
  const pending = new Set<Promise<void>>();
  // Fixed schedule: a slow answer does not postpone the next probe.
  const timer = setInterval(() => {
    const p = probeOnce(init.url, init.timeoutMs).then((ms) => { latencies.push(ms); }, () => { failures++; })
      .finally(() => pending.delete(p));
    pending.add(p);
  }, init.intervalMs);
  parentPort?.once('message', () => {
    clearInterval(timer);
    void Promise.all(pending).then(() => parentPort?.postMessage({ latenciesMs: latencies, failures } satisfies ProbeResult));
  });
}

if (!isMainThread && (workerData as { probe?: ProbeInit } | null)?.probe) runProbe((workerData as { probe: ProbeInit }).probe);

export interface Probe { stop(): Promise<ProbeResult> }

/** Starts probing `url` every intervalMs in a worker thread. */
export function startProbe(url: string, intervalMs = 50, timeoutMs = 2000): Probe {
  const worker = new Worker(new URL(import.meta.url), { workerData: { probe: { url, intervalMs, timeoutMs } } });
  const done = new Promise<ProbeResult>((resolve, reject) => {
    worker.once('message', (r: ProbeResult) => resolve(r));
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`healthz probe thread exited (code ${code}) before reporting`)));
  });
  return {
    async stop() {
      worker.postMessage('stop');
      const r = await done;
      await worker.terminate();
      return r;
    },
  };
}
