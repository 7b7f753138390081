// GET /healthz on a fixed interval, the way an orchestrator's liveness probe does (a new
// connection each time), from its own thread so the load generator's event loop cannot delay or
// distort its timings. A ProbeThread is made once and probes one window at a time: start() begins
// probing a URL, stop() returns the window's latencies.
//
// On Linux a thread inherits the nice value of the thread that creates it, so the probe thread
// must be made before the load generator lowers its own priority (server-load --client-nice):
// made after, it would run at the load generator's priority and measure its own wait for a core.
import { get } from 'node:http';
import { performance } from 'node:perf_hooks';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

interface ProbeStart { type: 'start'; url: string; intervalMs: number; timeoutMs: number }
type ToProbe = ProbeStart | { type: 'stop' };
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

function serveProbes(): void {
  let window: { timer: NodeJS.Timeout; latencies: number[]; failures: number; pending: Set<Promise<void>> } | undefined;
  parentPort?.on('message', (msg: ToProbe) => {
    if (msg.type === 'start') {
      const w = { latencies: [] as number[], failures: 0, pending: new Set<Promise<void>>(), timer: undefined as unknown as NodeJS.Timeout };
      // Fixed schedule: a slow answer does not postpone the next probe.
      w.timer = setInterval(() => {
        const p = probeOnce(msg.url, msg.timeoutMs).then((ms) => { w.latencies.push(ms); }, () => { w.failures++; })
          .finally(() => w.pending.delete(p));
        w.pending.add(p);
      }, msg.intervalMs);
      window = w;
      return;
    }
    const w = window;
    window = undefined;
    if (!w) {
      parentPort?.postMessage({ latenciesMs: [], failures: 0 } satisfies ProbeResult);
      return;
    }
    clearInterval(w.timer);
    void Promise.all(w.pending).then(() => parentPort?.postMessage({ latenciesMs: w.latencies, failures: w.failures } satisfies ProbeResult));
  });
}

if (!isMainThread && (workerData as { prober?: boolean } | null)?.prober) serveProbes();

export interface Probe { stop(): Promise<ProbeResult> }

/** One probing thread, reused for every window; close() when done. */
export class ProbeThread {
  private readonly worker = new Worker(new URL(import.meta.url), { workerData: { prober: true } });
  private failed: Error | undefined;

  constructor() {
    this.worker.on('error', (err) => { this.failed = err; });
  }

  /** Starts probing `url` every intervalMs until the returned probe's stop(). */
  start(url: string, intervalMs = 50, timeoutMs = 2000): Probe {
    if (this.failed) throw this.failed;
    const done = new Promise<ProbeResult>((resolve, reject) => {
      const onExit = (code: number): void => reject(new Error(`healthz probe thread exited (code ${code}) before reporting`));
      this.worker.once('exit', onExit);
      this.worker.once('message', (r: ProbeResult) => { this.worker.off('exit', onExit); resolve(r); });
    });
    this.worker.postMessage({ type: 'start', url, intervalMs, timeoutMs } satisfies ToProbe);
    return {
      stop: async () => {
        this.worker.postMessage({ type: 'stop' } satisfies ToProbe);
        return done;
      },
    };
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
