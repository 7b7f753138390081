// The benchmark and evaluation commands as a user meets them: --help prints the usage and exits 0;
// an unknown option or a value out of bounds ends the command at once with a message naming the
// option (its bounds and the value where it has them) and exit status 2, never a stack trace.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

interface Outcome { code: number | null; stdout: string; stderr: string }

function runCommand(script: string, args: string[]): Promise<Outcome> {
  const path = fileURLToPath(new URL(`../${script}`, import.meta.url));
  return new Promise((resolve) => {
    execFile(process.execPath, [path, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const COMMANDS: { script: string; npm: string }[] = [
  { script: 'bench/run.js', npm: 'npm run bench --' },
  { script: 'kernels/bench.js', npm: 'npm run bench:kernel --' },
  { script: 'kernels/peer-ort.js', npm: 'npm run bench:peer --' },
  { script: 'bench/model-bench.js', npm: 'npm run bench:model --' },
  { script: 'bench/model-profile.js', npm: 'npm run bench:profile --' },
  { script: 'bench/paper-model.js', npm: 'npm run bench:paper --' },
  { script: 'bench/decode-bench.js', npm: 'npm run bench:decode --' },
  { script: 'bench/steadiness.js', npm: 'npm run bench:steady --' },
  { script: 'bench/plot.js', npm: 'npm run bench:plot --' },
  { script: 'bench/server-load.js', npm: 'npm run bench:server --' },
  { script: 'bench/server-memory.js', npm: 'npm run bench:memory --' },
  { script: 'bench/speech-stream.js', npm: 'npm run bench:speech --' },
  { script: 'bench/tune.js', npm: 'npm run bench:tune --' },
  { script: 'bench/evaluate.js', npm: 'npm run evaluate --' },
  { script: 'bench/evaluate-speech.js', npm: 'npm run evaluate:speech --' },
];

function assertNoStack(text: string): void {
  assert.doesNotMatch(text, /^\s+at /m, `no stack trace expected:\n${text}`);
}

describe('bench command lines', () => {
  for (const { script, npm } of COMMANDS) {
    it(`${script}: --help prints its usage; an unknown option exits 2 with a message`, async () => {
      const help = await runCommand(script, ['--help']);
      assert.equal(help.code, 0, help.stderr);
      assert.ok(help.stdout.startsWith(`usage: ${npm} [`), help.stdout);
      const short = await runCommand(script, ['-h']);
      assert.equal(short.stdout, help.stdout);

      const wrong = await runCommand(script, ['--no-such-option']);
      assert.equal(wrong.code, 2, wrong.stderr);
      assert.match(wrong.stderr, /Unknown option '--no-such-option'/);
      assert.match(wrong.stderr, /--help lists the options/);
      assertNoStack(wrong.stderr);
    });
  }

  const badValues: { script: string; args: string[]; message: RegExp }[] = [
    { script: 'bench/server-load.js', args: ['--repeats', '0'], message: /--repeats must be a number in \[1, \d+\]; got "0"/ },
    { script: 'bench/server-load.js', args: ['--concurrency', '8,x'], message: /--concurrency must be a number in \[1, 10000\]; got "x"/ },
    { script: 'bench/server-load.js', args: ['--client-nice', '2.5'], message: /--client-nice must be an integer in \[0, 19\]; got "2.5"/ },
    { script: 'bench/model-bench.js', args: ['--threads', 'two'], message: /--threads must be a number in \[1, 1024\]; got "two"/ },
    { script: 'bench/model-bench.js', args: ['--batches', '1,0'], message: /--batches must be a number in \[1, 4096\]; got "0"/ },
    { script: 'bench/model-bench.js', args: ['--bundle', '/nonexistent'], message: /--bundle must be a bundle folder; "\/nonexistent": .*acm\.json/ },
    { script: 'bench/model-bench.js', args: ['--against', '/nonexistent'], message: /--against must be a bundle folder; "\/nonexistent": .*acm\.json/ },
    { script: 'bench/server-load.js', args: ['--also', 'x:ACM_A=1,--cpu-prof'],
      message: /--also x: each setting must be ACM_NAME=value, .* or node=--flag .*; got "--cpu-prof"/ },
    { script: 'bench/server-load.js', args: ['--also', 'batching-on:ACM_A=1'], message: /--also must be 'label:ACM_X=value,...' with a new label/ },
    { script: 'bench/server-load.js', args: ['--also', 'a:ACM_A=1', '--also', 'a:ACM_B=2'], message: /--also labels must differ from each other/ },
    { script: 'bench/decode-bench.js', args: ['--images-dir', '/nonexistent'], message: /--images-dir must be a folder of PNG files; "\/nonexistent": / },
    { script: 'bench/steadiness.js', args: ['--slot-ms', '2'], message: /--slot-ms must be a number in \[5, 1000\]; got "2"/ },
    { script: 'bench/steadiness.js', args: ['--fraction', '0'], message: /--fraction must be a number in \(0, 1\]; got "0"/ },
    { script: 'bench/steadiness.js', args: ['--seconds', '1'], message: /--seconds must be a number in \[2, 86400\]; got "1"/ },
    { script: 'bench/steadiness.js', args: ['--wait-ms', '0,-1'], message: /--wait-ms must be a number in \[0, 10000\]; got "-1"/ },
    { script: 'bench/decode-bench.js', args: ['--count', '0'], message: /--count must be a number in \[1, 10000000\]; got "0"/ },
    { script: 'bench/model-profile.js', args: ['--budgets', '1,0'], message: /--budgets must be a number in \(0, 1\]; got "0"/ },
    { script: 'bench/model-profile.js', args: ['--batch', '0'], message: /--batch must be a number in \[1, 4096\]; got "0"/ },
    { script: 'bench/model-profile.js', args: ['--bundle', 'models'], message: /--bundle must be an image bundle folder; "models": / },
    { script: 'kernels/bench.js', args: ['--tokens', '64,-1'], message: /--tokens must be a number in \[1, \d+\]; got "-1"/ },
    { script: 'kernels/peer-ort.js', args: ['--tokens', '256,100'], message: /--tokens must be multiples of 64; got "100"/ },
    { script: 'kernels/peer-ort.js', args: ['--budgets', '1,0'], message: /--budgets must be a number in \(0, 1\]; got "0"/ },
    { script: 'kernels/peer-ort.js', args: ['--mlp', '30'], message: /--mlp must be a multiple of 4, the learner count; got "30"/ },
    { script: 'bench/plot.js', args: ['--width', '10'], message: /--width must be a number in \[300, 4000\]; got "10"/ },
    { script: 'bench/evaluate.js', args: ['--budgets', '0.5,1.5'], message: /--budgets must be a number in \(0, 1\]; got "1.5"/ },
    { script: 'bench/server-load.js', args: ['--budget', '0'], message: /--budget must be a number in \(0, 1\]; got "0"/ },
    { script: 'bench/server-load.js', args: ['--client-cpus', '1-0'], message: /--client-cpus must be a Linux CPU list .*range 1-0 runs backwards/ },
    { script: 'bench/server-load.js', args: ['--client-cpus', '4095'], message: /--client-cpus names CPU 4095, which this process may not use/ },
    { script: 'bench/speech-stream.js', args: ['--budgets', '0.5,NaN'], message: /--budgets must be a number in \(0, 1\]; got "NaN"/ },
    { script: 'bench/speech-stream.js', args: ['--streams', ''], message: /--streams must be a number in \[1, 10000\]; got ""/ },
  ];
  for (const { script, args, message } of badValues) {
    it(`${script} ${args.join(' ')}: refused with the option, its bounds and the value`, async () => {
      const out = await runCommand(script, args);
      assert.equal(out.code, 2, out.stderr);
      assert.match(out.stderr, message);
      assertNoStack(out.stderr);
    });
  }

  it('a missing --in for the chart names the file, without a stack trace', async () => {
    const out = await runCommand('bench/plot.js', ['--in', '/nonexistent/model.json']);
    assert.equal(out.code, 2);
    assert.match(out.stderr, /--in \/nonexistent\/model\.json: .*ENOENT.*npm run bench:model/);
    assertNoStack(out.stderr);
  });
});
