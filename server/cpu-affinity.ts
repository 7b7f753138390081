// Reserves CPUs for the thread that serves HTTP. On a machine with few cores the HTTP thread
// shares them with onnxruntime's threads, image decoding, libuv's pool and V8's helpers, and a
// /healthz probe or a new request waits for a core behind a batch. With ACM_HTTP_CPUS the HTTP
// (main) thread is confined to the reserved CPUs and every other thread of the process to the rest.
//
// Node has no call for a thread's CPU affinity, so the standard `taskset` (util-linux) sets it:
// first every thread of the process to the other CPUs, then the main thread to the reserved ones.
// Threads inherit their creator's affinity, but some are made later (onnxruntime's pools when a
// model loads, libvips's on the first image, libuv's pool by whichever thread first needs it), so
// the assignment is applied again after the models load and then at a fixed interval.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Logger } from './logger.js';

/** Parses a Linux CPU list ("0", "0-3", "0,2-3") into sorted, distinct CPU numbers. */
export function parseCpuList(text: string): number[] {
  const cpus = new Set<number>();
  for (const part of text.split(',')) {
    const m = /^\s*(\d+)(?:-(\d+))?\s*$/.exec(part);
    if (m === null) throw new Error(`got "${text}", which is not a CPU list`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo) throw new Error(`got "${text}", whose range ${lo}-${hi} runs backwards`);
    if (hi > 4095) throw new Error(`got "${text}", which names CPU ${hi}; the highest Linux CPU number is 4095`);
    for (let c = lo; c <= hi; c++) cpus.add(c);
  }
  return [...cpus].sort((a, b) => a - b);
}

/**
 * A CPU list given as a setting (an environment variable or a command-line option); throws a
 * message that names the setting, what it takes and the value.
 */
export function parseCpuListSetting(setting: string, text: string): number[] {
  try {
    return parseCpuList(text);
  } catch (err) {
    throw new Error(`${setting} must be a Linux CPU list (examples: 0, 0-1, 0,2-3); ${(err as Error).message}`);
  }
}

/** Throws, naming the setting, when `cpus` holds a CPU this process may not use. */
export function checkAllowedCpus(setting: string, cpus: readonly number[], allowed: readonly number[]): void {
  const outside = cpus.filter((c) => !allowed.includes(c));
  if (outside.length > 0) {
    throw new Error(`${setting} names CPU ${formatCpuList(outside)}, which this process may not use ` +
      `(it may use ${formatCpuList(allowed)})`);
  }
}

export function formatCpuList(cpus: readonly number[]): string {
  return cpus.join(',');
}

/** The CPUs this process may run on, or undefined where /proc does not say (not Linux). */
export function allowedCpus(statusPath = '/proc/self/status'): number[] | undefined {
  let status: string;
  try {
    status = readFileSync(statusPath, 'utf8');
  } catch {
    return undefined;
  }
  const m = /^Cpus_allowed_list:\s*(\S+)\s*$/m.exec(status);
  return m?.[1] === undefined ? undefined : parseCpuList(m[1]);
}

export interface CpuPlan { readonly http: number[]; readonly rest: number[] }

/**
 * Splits the allowed CPUs into the reserved ones and the rest. Throws, naming the setting, the
 * value and the CPUs the process may use, when a reserved CPU is not allowed or nothing is left.
 */
export function planCpus(spec: string, allowed: readonly number[]): CpuPlan {
  const http = parseCpuList(spec);
  checkAllowedCpus(`ACM_HTTP_CPUS=${spec}`, http, allowed);
  const rest = allowed.filter((c) => !http.includes(c));
  if (rest.length === 0) {
    throw new Error(`ACM_HTTP_CPUS=${spec} leaves no CPU for inference: this process may use ` +
      `${formatCpuList(allowed)}; reserve fewer, or leave ACM_HTTP_CPUS unset`);
  }
  return { http, rest };
}

type Run = (file: string, args: string[]) => Promise<void>;

const runFile: Run = (file, args) => new Promise((resolve, reject) => {
  execFile(file, args, { timeout: 5000 }, (err, _stdout, stderr) => {
    if (err) reject(new Error(`${file} ${args.join(' ')}: ${stderr.trim() || err.message}`));
    else resolve();
  });
});

/** Applies a CpuPlan to this process now, after the models load, and every intervalMs. */
export class HttpCpuReservation {
  private timer: NodeJS.Timeout | undefined;
  private warned = false;
  private applying: Promise<void> | undefined;

  constructor(private readonly plan: CpuPlan, private readonly log: Logger, private readonly intervalMs = 10_000,
    private readonly run: Run = runFile, private readonly pid = process.pid) {}

  start(): void {
    void this.apply();
    this.timer = setInterval(() => void this.apply(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One pass; concurrent calls share it. Failures are logged once and never stop the server. */
  apply(): Promise<void> {
    this.applying ??= this.pass().finally(() => { this.applying = undefined; });
    return this.applying;
  }

  private async pass(): Promise<void> {
    const pid = String(this.pid);
    try {
      await this.run('taskset', ['-a', '-p', '-c', formatCpuList(this.plan.rest), pid]);
      await this.run('taskset', ['-p', '-c', formatCpuList(this.plan.http), pid]);
    } catch (err) {
      if (this.warned) return;
      this.warned = true;
      this.stop();
      this.log.warn({ err: (err as Error).message },
        'ACM_HTTP_CPUS is set but the CPU affinity could not be applied; every thread shares every CPU');
    }
  }
}
