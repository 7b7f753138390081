// The server process as an operator runs it: start-up log names the execution provider, readiness
// follows model loading, SIGTERM lets an in-flight request finish before a clean exit, and bad
// configuration or a missing models folder stop start-up with the reason.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { Agent } from 'node:http';
import { describe, it } from 'node:test';
import { makeImage } from './support/images.js';
import { disableOrtTelemetry } from '../server/ort-telemetry.js';
import { getKeptAlive } from './support/kept-alive.js';
import { scratchDir } from './support/scratch.js';
import { startServer, until, untilReady } from './support/server-process.js';
import { tinyFloorModelsDir, tinyModelsDir } from './support/tiny-bundle.js';

describe('server process', () => {
  it('logs its provider, becomes ready, and drains an in-flight request on SIGTERM', async () => {
    // A long batch wait keeps the request in flight when the signal arrives.
    const s = startServer({ ACM_MODELS_DIR: await tinyModelsDir(), ACM_MAX_WAIT_MS: '400' });
    try {
      const base = `http://127.0.0.1:${await untilReady(s)}`;
      await until('provider log', () => (s.lines.some((l) => l.msg === 'inference runs on the CPU execution provider') ? true : undefined), 2000);

      const inFlight = fetch(`${base}/classify?budget=0.5`, { method: 'POST', headers: { 'Content-Type': 'image/png' },
        body: new Uint8Array(await makeImage(3)) });
      // Decoding and queueing take milliseconds; the batch waits 400 ms, so the signal lands mid-request.
      await new Promise((r) => setTimeout(r, 100));
      s.child.kill('SIGTERM');
      const res = await inFlight;
      assert.equal(res.status, 200, 'the in-flight request is answered');
      assert.equal(((await res.json()) as { model: string }).model, 'tiny-vit-acm');
      const [code] = (await once(s.child, 'exit')) as [number];
      assert.equal(code, 0);
      const msgs = s.lines.map((l) => (l.path === '/classify' ? `classify ${String(l.status)}` : l.msg));
      const draining = msgs.indexOf('shutting down: draining in-flight requests');
      assert.ok(draining >= 0 && msgs.indexOf('classify 200') > draining, `the request finished after the signal: ${msgs.join(' | ')}`);
      assert.equal(msgs.at(-1), 'stopped');
    } finally {
      s.child.kill('SIGKILL');
    }
  });

  it("keeps onnxruntime's optimiser warnings off stderr unless LOG_LEVEL is debug or trace", { timeout: 60_000 }, async () => {
    // A floor-path graph's If branches read initializers onnxruntime cannot merge; it warns per session.
    const dir = await tinyFloorModelsDir();
    const ortLines = async (level: string): Promise<string[]> => {
      const s = startServer({ ACM_MODELS_DIR: dir, LOG_LEVEL: level });
      try {
        const base = `http://127.0.0.1:${await untilReady(s)}`;
        const res = await fetch(`${base}/classify?budget=0.5`, { method: 'POST', headers: { 'Content-Type': 'image/png' },
          body: new Uint8Array(await makeImage(3)) });
        assert.equal(res.status, 200);
        s.child.kill('SIGTERM');
        await once(s.child, 'exit');
        return s.stderr.join('').split('\n').filter((l) => l.includes('onnxruntime'));
      } finally {
        s.child.kill('SIGKILL');
      }
    };
    assert.deepEqual(await ortLines('info'), []);
    const debug = await ortLines('debug');
    assert.ok(debug.length > 0 && debug.every((l) => l.includes('[W:onnxruntime')), debug.join('\n'));
  });

  it('exits 0, not aborted, on SIGTERM while the models load', async () => {
    // Stopping a thread inside onnxruntime aborts the process; shutdown must wait for the load.
    const s = startServer({ ACM_MODELS_DIR: await tinyModelsDir() });
    try {
      await until('loading', () => (s.lines.some((l) => l.msg === 'inference runs on the CPU execution provider') ? true : undefined));
      s.child.kill('SIGTERM');
      const [code, signal] = (await once(s.child, 'exit')) as [number | null, string | null];
      assert.deepEqual({ code, signal }, { code: 0, signal: null }, s.stderr.join(''));
    } finally {
      s.child.kill('SIGKILL');
    }
  });

  it('announces its keep-alive timeout and closes a connection left idle that long', { timeout: 20_000 }, async () => {
    const s = startServer({ ACM_MODELS_DIR: await tinyModelsDir(), ACM_KEEP_ALIVE_TIMEOUT_MS: '2000' });
    const agent = new Agent({ keepAlive: true });
    try {
      const { headers, socket } = await getKeptAlive(agent, await untilReady(s), '/healthz');
      assert.equal(headers['keep-alive'], 'timeout=2');
      // The server, not the client, ends the idle connection (the agent has no timeout of its own).
      const idleFrom = performance.now();
      await once(socket, 'end');
      assert.ok(performance.now() - idleFrom >= 1500, `closed after ${Math.round(performance.now() - idleFrom)} ms`);
    } finally {
      agent.destroy();
      s.child.kill('SIGKILL');
    }
  });

  it('keeps onnxruntime\'s telemetry off unless the operator turns it on', async () => {
    // The library leaves its session and log files in TMPDIR when its telemetry runs: their
    // absence shows it did not, and ORT_DISABLE_TELEMETRY=0 shows the check would see them.
    const telemetryFiles = (dir: string): string[] => readdirSync(dir).filter((f) => f === '.ses' || f.startsWith('mat-debug-'));
    for (const [env, expected] of [[{}, 'off'], [{ ORT_DISABLE_TELEMETRY: '0' }, 'on']] as const) {
      const tmp = scratchDir('acm-telemetry-');
      const s = startServer({ ACM_MODELS_DIR: await tinyModelsDir(), TMPDIR: tmp, ...env });
      try {
        await untilReady(s);
        const provider = s.lines.find((l) => l.msg === 'inference runs on the CPU execution provider');
        assert.equal(provider?.onnxruntimeTelemetry, expected);
        if (expected === 'on') await until('telemetry files', () => (telemetryFiles(tmp).length > 0 ? true : undefined), 5000);
        else assert.deepEqual(telemetryFiles(tmp), []);
      } finally {
        s.child.kill('SIGKILL');
      }
    }
  });

  it('sets ORT_DISABLE_TELEMETRY=1 only where the environment leaves it unset', () => {
    const unset: NodeJS.ProcessEnv = {};
    assert.equal(disableOrtTelemetry(unset), true);
    assert.equal(unset.ORT_DISABLE_TELEMETRY, '1');
    const chosen: NodeJS.ProcessEnv = { ORT_DISABLE_TELEMETRY: '0' };
    assert.equal(disableOrtTelemetry(chosen), false);
    assert.equal(chosen.ORT_DISABLE_TELEMETRY, '0');
  });

  it('exits 2 with the problem on bad configuration', async () => {
    const s = startServer({}, ['--port', 'abc']);
    const [code] = (await once(s.child, 'exit')) as [number];
    assert.equal(code, 2);
    assert.match(s.stderr.join(''), /--port must be an integer in \[0, 65535\] \(port\); got "abc"/);
  });

  it('exits 1 naming the folder when the models folder cannot be read', async () => {
    const s = startServer({ ACM_MODELS_DIR: '/nonexistent/models' });
    const [code] = (await once(s.child, 'exit')) as [number];
    assert.equal(code, 1);
    const fatal = s.lines.find((l) => l.level === 60);
    assert.match(String(fatal?.msg), /models folder \/nonexistent\/models cannot be read.*set ACM_MODELS_DIR/);
  });
});
