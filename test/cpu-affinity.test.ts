// ACM_HTTP_CPUS: CPU lists parse or are refused with the value named, a plan never reserves a CPU
// the process may not use nor leaves inference without one, the reservation runs taskset in the
// right order and survives its absence, and in a real server the threads end up where the plan says.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import { allowedCpus, formatCpuList, HttpCpuReservation, parseCpuList, planCpus } from '../server/cpu-affinity.js';
import { createLogger } from '../server/logger.js';
import { startServer, until, untilReady } from './support/server-process.js';
import { tinyModelsDir } from './support/tiny-bundle.js';

describe('CPU lists', () => {
  it('parses single CPUs, ranges and their union, sorted and distinct', () => {
    assert.deepEqual(parseCpuList('0'), [0]);
    assert.deepEqual(parseCpuList('2-4'), [2, 3, 4]);
    assert.deepEqual(parseCpuList('3,0-1,1'), [0, 1, 3]);
  });

  it('refuses what is not a CPU list, naming the value', () => {
    assert.throws(() => parseCpuList('a'), /got "a", which is not a CPU list/);
    assert.throws(() => parseCpuList('3-1'), /range 3-1 runs backwards/);
    assert.throws(() => parseCpuList(''), /got "", which is not a CPU list/);
    assert.throws(() => parseCpuList('4096'), /highest Linux CPU number is 4095/);
  });

  it('reads the allowed CPUs from a status file', () => {
    const self = allowedCpus();
    if (process.platform === 'linux') assert.ok(self !== undefined && self.length >= 1);
    assert.equal(allowedCpus('/nonexistent/status'), undefined);
  });
});

describe('CPU plans', () => {
  it('gives the reserved CPUs to HTTP and the rest to every other thread', () => {
    assert.deepEqual(planCpus('0', [0, 1, 2, 3]), { http: [0], rest: [1, 2, 3] });
    assert.deepEqual(planCpus('1,3', [0, 1, 2, 3]), { http: [1, 3], rest: [0, 2] });
  });

  it('refuses a CPU the process may not use, and a plan that leaves inference none', () => {
    assert.throws(() => planCpus('5', [0, 1]), /ACM_HTTP_CPUS=5 names CPU 5, which this process may not use \(it may use 0,1\)/);
    assert.throws(() => planCpus('0-1', [0, 1]), /ACM_HTTP_CPUS=0-1 leaves no CPU for inference/);
  });
});

describe('HTTP CPU reservation', () => {
  const log = createLogger('silent');

  it('confines every thread to the rest first, then the main thread to its own CPUs', async () => {
    const calls: string[] = [];
    const r = new HttpCpuReservation({ http: [0], rest: [1, 2] }, log, 60_000, (file, args) => {
      calls.push(`${file} ${args.join(' ')}`);
      return Promise.resolve();
    }, 1234);
    await r.apply();
    assert.deepEqual(calls, ['taskset -a -p -c 1,2 1234', 'taskset -p -c 0 1234']);
  });

  it('shares one pass between overlapping calls and keeps serving when taskset fails', async () => {
    let runs = 0;
    const r = new HttpCpuReservation({ http: [0], rest: [1] }, log, 60_000, () => {
      runs++;
      return Promise.reject(new Error('spawn taskset ENOENT'));
    });
    await Promise.all([r.apply(), r.apply()]);
    assert.equal(runs, 1, 'one pass for two overlapping calls, stopped at its first failure');
    await r.apply();
    assert.equal(runs, 2, 'a later call tries again and resolves');
  });
});

/** Each thread's allowed CPUs, read the way the server reads its own. */
function affinities(pid: number): Map<number, number[] | undefined> {
  return new Map(readdirSync(`/proc/${pid}/task`).map((tid) => [Number(tid), allowedCpus(`/proc/${pid}/task/${tid}/status`)]));
}

describe('server with ACM_HTTP_CPUS', () => {
  const allowed = allowedCpus();
  const skip = allowed === undefined || allowed.length < 2 ? 'needs Linux and two allowed CPUs' : false;

  it('runs its HTTP thread on the reserved CPU and every other thread elsewhere', { skip }, async () => {
    const cpus = allowed ?? [];
    const s = startServer({ ACM_MODELS_DIR: await tinyModelsDir(), ACM_HTTP_CPUS: String(cpus[0]) });
    try {
      await untilReady(s);
      const pid = s.child.pid ?? 0;
      const rest = cpus.slice(1);
      const same = (a: number[] | undefined, b: number[]): boolean => a !== undefined && a.join(',') === b.join(',');
      // The pass after loading is asynchronous; wait until it has reached every thread.
      const threads = await until('affinities applied', () => {
        const a = affinities(pid);
        const others = [...a].filter(([tid]) => tid !== pid);
        return same(a.get(pid), cpus.slice(0, 1)) && others.every(([, c]) => same(c, rest)) ? a : undefined;
      }, 5000);
      assert.ok(threads.size > 2, `a server has more threads than the HTTP one (${threads.size})`);
    } finally {
      s.child.kill('SIGKILL');
    }
  });

  it('exits 2 naming the value when the reserved CPUs leave none for inference', { skip }, async () => {
    const s = startServer({ ACM_MODELS_DIR: await tinyModelsDir(), ACM_HTTP_CPUS: formatCpuList(allowed ?? []) });
    const [code] = (await once(s.child, 'exit')) as [number];
    assert.equal(code, 2);
    // Refused with the other configuration problems, before anything starts.
    assert.match(s.stderr.join(''), /invalid configuration:\n {2}- ACM_HTTP_CPUS=.* leaves no CPU for inference/);
    assert.equal(s.lines.find((l) => l.msg === 'listening'), undefined);
  });
});
