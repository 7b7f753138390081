// The server is launched with the same node flags everywhere an operator or a benchmark starts it:
// `npm start`, the Docker image and bench/server-process.ts (whose flags are the ones measured).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { SERVER_NODE_FLAGS } from '../bench/server-process.js';

const read = (path: string): string => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');

describe('server launch flags', () => {
  it('npm start runs node with the benchmarked flags', () => {
    const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string> };
    assert.equal(pkg.scripts.start, `node ${SERVER_NODE_FLAGS.join(' ')} dist/server/main.js`);
  });

  it('the Docker image runs node with the benchmarked flags', () => {
    const cmd = /^CMD (\[.*\])$/m.exec(read('Dockerfile'));
    assert.ok(cmd, 'Dockerfile has an exec-form CMD');
    assert.deepEqual(JSON.parse(cmd[1]!), ['node', ...SERVER_NODE_FLAGS, 'dist/server/main.js']);
  });
});
