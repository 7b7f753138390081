// Configuration: defaults, environment and flag twins (flags win), bounds, and the cross-field
// mistakes that must stop start-up with a remedy.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ConfigError, FIELDS, loadConfig, sessionThreads, usage } from '../server/config.js';

function problems(env: Record<string, string>, argv: string[] = []): string {
  try {
    loadConfig(env, argv);
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.message;
  }
  return assert.fail('expected a ConfigError');
}

describe('config', () => {
  it('has the documented defaults and is frozen', () => {
    const c = loadConfig({}, []);
    assert.equal(c.port, 8080);
    assert.equal(c.maxBatchSize, 32);
    assert.equal(c.maxWaitMs, 0);
    assert.equal(c.queueCapacity, 256);
    assert.equal(c.requestTimeoutMs, 30_000);
    assert.equal(c.maxImageBytes, 10 * 1024 * 1024);
    assert.equal(c.maxImagePixels, 40_000_000);
    assert.equal(c.defaultBudget, undefined, "unset: each model's default_budget applies");
    assert.equal(c.executionProvider, 'cpu');
    assert.match(c.modelsDir, /\/models$/);
    assert.ok(Object.isFrozen(c));
  });

  it('reads environment variables, and flags over them in both spellings', () => {
    const c = loadConfig({ PORT: '9000', ACM_MAX_BATCH_SIZE: '8', ACM_DEFAULT_BUDGET: '0.5' }, ['--port', '9100', '--max-wait-ms=7']);
    assert.equal(c.port, 9100);
    assert.equal(c.maxBatchSize, 8);
    assert.equal(c.maxWaitMs, 7);
    assert.equal(c.defaultBudget, 0.5);
  });

  it('gives every field an environment twin and a flag twin', () => {
    for (const f of FIELDS) {
      assert.match(f.env, /^[A-Z_]+$/);
      assert.match(f.flag, /^--[a-z-]+$/);
      assert.ok(usage().includes(f.flag) && usage().includes(f.env));
    }
    // An unset default is shown as what it means, not as another field's rule.
    const row = (flag: string): string => usage().split('\n').find((l) => l.trimStart().startsWith(`${flag} `)) ?? '';
    assert.match(row('--http-cpus'), /ACM_HTTP_CPUS\s+unset\s/);
    assert.match(row('--default-budget'), /ACM_DEFAULT_BUDGET\s+\(model\)\s/);
  });

  it('is documented field by field in server/README.md', () => {
    const readme = readFileSync(new URL('../../server/README.md', import.meta.url), 'utf8');
    for (const f of FIELDS) assert.match(readme, new RegExp(`\\| \`${f.env}\` \\| \`${f.flag}\` \\|`), f.env);
  });

  it('refuses out-of-bounds and malformed values, naming the variable, bound and value', () => {
    assert.match(problems({ PORT: '70000' }), /PORT must be an integer in \[0, 65535\] \(port\); got "70000"/);
    assert.match(problems({ ACM_MAX_BATCH_SIZE: '4.5' }), /ACM_MAX_BATCH_SIZE must be an integer/);
    assert.match(problems({ ACM_DEFAULT_BUDGET: '0' }), /ACM_DEFAULT_BUDGET must be a number in \(0, 1\]; got "0"/);
    assert.match(problems({ ACM_EXECUTION_PROVIDER: 'tpu' }), /one of cpu\|cuda; got "tpu"/);
    assert.match(problems({}, ['--max-batch-size', 'many']), /--max-batch-size must be an integer/);
    assert.match(problems({ ACM_KEEP_ALIVE_TIMEOUT_MS: '500' }), /ACM_KEEP_ALIVE_TIMEOUT_MS must be an integer in \[1000, 600000\] \(ms\); got "500"/);
  });

  it('refuses unknown flags and a flag without its value', () => {
    assert.match(problems({}, ['--prot', '80']), /unknown argument "--prot"/);
    assert.match(problems({}, ['--port']), /--port needs a value/);
  });

  it('lists every problem at once', () => {
    const message = problems({ PORT: 'x', ACM_WORKERS: '0' });
    assert.match(message, /PORT/);
    assert.match(message, /ACM_WORKERS/);
  });

  it('stops a queue smaller than one batch, with the remedy', () => {
    assert.match(problems({ ACM_QUEUE_CAPACITY: '8', ACM_MAX_BATCH_SIZE: '32' }),
      /raise ACM_QUEUE_CAPACITY to at least 32 or lower ACM_MAX_BATCH_SIZE/);
  });

  it('keeps onnxruntime session defaults and parses the session knobs', () => {
    const d = loadConfig({}, []);
    assert.deepEqual([d.interOpThreads, d.executionMode, d.intraOpSpinning, d.cpuMemArena], [1, 'sequential', true, true]);
    const c = loadConfig({ ACM_INTRA_OP_SPINNING: 'false', ACM_CPU_MEM_ARENA: '0', ACM_EXECUTION_MODE: 'parallel' },
      ['--inter-op-threads=2']);
    assert.deepEqual([c.interOpThreads, c.executionMode, c.intraOpSpinning, c.cpuMemArena], [2, 'parallel', false, false]);
    assert.equal(loadConfig({ ACM_CPU_MEM_ARENA: '1' }, []).cpuMemArena, true);
    assert.match(problems({ ACM_INTRA_OP_SPINNING: 'yes' }), /ACM_INTRA_OP_SPINNING must be one of true\|false\|1\|0; got "yes"/);
    assert.match(problems({ ACM_EXECUTION_MODE: 'async' }), /one of sequential\|parallel; got "async"/);
    assert.match(problems({ ACM_INTER_OP_THREADS: '0' }), /ACM_INTER_OP_THREADS must be an integer in \[1, 256\]/);
  });

  it('shares the cores among sessions, leaving one to the HTTP thread on one or two cores', () => {
    const d = loadConfig({}, []);
    assert.equal(sessionThreads(d, 1), 1);
    assert.equal(sessionThreads(d, 2), 1, 'two cores: one for onnxruntime, one for HTTP and decoding');
    assert.equal(sessionThreads(d, 4), 4);
    assert.equal(sessionThreads(loadConfig({ ACM_WORKERS: '2' }, []), 8), 4);
    assert.equal(sessionThreads(loadConfig({ ACM_WORKERS: '2' }, []), 2), 1);
    assert.equal(sessionThreads(loadConfig({ ACM_INTRA_OP_THREADS: '2' }, []), 2), 2, 'a configured count wins');
  });

  it('stops inter-op threads that sequential execution would ignore, with the remedy', () => {
    assert.match(problems({ ACM_INTER_OP_THREADS: '2' }),
      /ACM_INTER_OP_THREADS \(2\) has no effect with ACM_EXECUTION_MODE=sequential; set ACM_EXECUTION_MODE=parallel or ACM_INTER_OP_THREADS=1/);
  });

  it('stops a batch wait that is not below the request deadline, with the remedy', () => {
    assert.match(problems({ ACM_MAX_WAIT_MS: '1000', ACM_REQUEST_TIMEOUT_MS: '1000' }),
      /lower ACM_MAX_WAIT_MS or raise ACM_REQUEST_TIMEOUT_MS/);
  });

  it('refuses an HTTP CPU list that is malformed or that the process cannot apply, naming the setting', () => {
    const both = (env: Record<string, string>, argv: string[], cpus: number[]): string => {
      try {
        loadConfig(env, argv, () => cpus);
      } catch (err) {
        assert.ok(err instanceof ConfigError);
        return err.message;
      }
      return assert.fail('expected a ConfigError');
    };
    assert.match(both({ ACM_HTTP_CPUS: 'first' }, [], [0, 1]), /ACM_HTTP_CPUS must be a Linux CPU list \(examples: 0, 0-1, 0,2-3\); got "first"/);
    assert.match(both({}, ['--http-cpus', '2-1'], [0, 1]), /--http-cpus must be a Linux CPU list .*range 2-1 runs backwards/);
    assert.match(both({ ACM_HTTP_CPUS: '3' }, [], [0, 1]), /ACM_HTTP_CPUS=3 names CPU 3, which this process may not use \(it may use 0,1\)/);
    assert.match(both({ ACM_HTTP_CPUS: '0-1' }, [], [0, 1]), /ACM_HTTP_CPUS=0-1 leaves no CPU for inference/);
    assert.equal(loadConfig({ ACM_HTTP_CPUS: ' 1 ' }, [], () => [0, 1]).httpCpus, '1');
    // Where the platform does not say which CPUs are allowed, only the syntax is checked.
    assert.equal(loadConfig({ ACM_HTTP_CPUS: '7' }, [], () => undefined).httpCpus, '7');
  });
});
