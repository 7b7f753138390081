// GET /openapi.json against the routes the express app really registers: every registered
// route must be described (a route added without documentation fails here), every description
// must belong to a registered route, and the document must carry the budget header, the timing
// and Retry-After headers, and every stable error code of server/errors.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import request from 'supertest';
import { ERROR_SPECS } from '../server/errors.js';
import { ASR_WEBSOCKET, OPERATIONS, openApiPaths, registeredRoutes } from '../server/http/openapi.js';
import { fakeApp } from './support/fake.js';

type Json = Record<string, unknown>;

describe('GET /openapi.json', () => {
  it('documents every route the app registers, and only those', async () => {
    const t = await fakeApp();
    const routes = registeredRoutes(t.app);
    assert.ok(routes.length >= 10, `the router walk finds the routes (${routes.length})`);
    const undocumented = routes.filter((r) => !OPERATIONS[`${r.method} ${r.path}`]).map((r) => `${r.method} ${r.path}`);
    assert.deepEqual(undocumented, [], 'describe these routes in server/http/openapi.ts OPERATIONS');
    const registered = new Set(routes.map((r) => `${r.method} ${r.path}`));
    const stale = Object.entries(OPERATIONS).filter(([key, d]) => !registered.has(key) && !d.speech).map(([key]) => key);
    assert.deepEqual(stale, [], 'OPERATIONS describes routes the app does not register');

    const doc = (await request(t.app).get('/openapi.json').expect(200)).body as Json;
    assert.match(String(doc.openapi), /^3\.\d+\.\d+$/);
    const paths = doc.paths as Record<string, Record<string, Json>>;
    for (const r of routes) {
      for (const p of openApiPaths(r.path)) {
        const op = paths[p]?.[r.method.toLowerCase()];
        assert.ok(op, `${r.method} ${p} is in the served document`);
        assert.ok(op.responses && Object.keys(op.responses).length > 0, `${r.method} ${p} lists its responses`);
        for (const param of p.match(/\{\w+\}/g) ?? []) {
          const names = ((op.parameters ?? []) as Json[]).map((x) => x.name);
          assert.ok(names.includes(param.slice(1, -1)), `${r.method} ${p} documents path parameter ${param}`);
        }
      }
    }
    assert.ok(!('/transcribe' in paths), 'routes the server does not register are not served');
  });

  it('expands optional express groups into both OpenAPI paths', () => {
    assert.deepEqual(openApiPaths('/v2/models/:name{/versions/:version}/infer'),
      ['/v2/models/{name}/infer', '/v2/models/{name}/versions/{version}/infer']);
    assert.deepEqual(openApiPaths('/classify'), ['/classify']);
  });

  it('carries X-Budget, the timing and Retry-After headers, and every error code with its status', async () => {
    const t = await fakeApp();
    const doc = (await request(t.app).get('/openapi.json').expect(200)).body as Json;
    const components = doc.components as Record<string, Record<string, Json>>;
    assert.equal(components.parameters?.['X-Budget']?.in, 'header');
    for (const h of ['X-Budget-Used', 'X-Queue-Time-Ms', 'X-Inference-Time-Ms', 'X-Total-Time-Ms', 'Server-Timing', 'Retry-After']) {
      assert.ok(components.headers?.[h], `header ${h} is described`);
    }
    const paths = doc.paths as Record<string, Record<string, Json>>;
    const classify = paths['/classify']?.post as Json;
    assert.ok(((classify.parameters ?? []) as Json[]).some((p) => p.$ref === '#/components/parameters/X-Budget'));
    const ok = (classify.responses as Record<string, Json>)['200'] as Json;
    assert.deepEqual(Object.keys(ok.headers as Json).sort(), ['Server-Timing', 'X-Budget-Used', 'X-Inference-Time-Ms', 'X-Queue-Time-Ms', 'X-Total-Time-Ms']);
    const busy = (classify.responses as Record<string, Json>)['503'] as Json;
    assert.ok((busy.headers as Json)['Retry-After'], '503 carries Retry-After');

    const errorSchema = components.schemas?.Error as Json;
    const code = ((errorSchema.properties as Json).error as Json).properties as Record<string, Json>;
    assert.deepEqual(code.code?.enum, Object.keys(ERROR_SPECS), 'the Error schema lists every stable code');
    // Every code is answered by some described operation (served or speech-only), under its own HTTP status.
    const seen = new Set<string>();
    for (const op of [...Object.values(OPERATIONS).map((d) => d.operation), ASR_WEBSOCKET]) {
      {
        for (const [status, r] of Object.entries((op.responses ?? {}) as Record<string, Json>)) {
          const m = /^error codes: (.*)$/.exec(String(r.description));
          for (const c of m?.[1]?.split(', ') ?? []) {
            assert.equal(String(ERROR_SPECS[c as keyof typeof ERROR_SPECS].http), status, `${c} is documented under its status`);
            seen.add(c);
          }
        }
      }
    }
    // not_found is what every unknown path answers, method_not_allowed a known path asked with
    // another method; neither has an operation of its own.
    assert.deepEqual(Object.keys(ERROR_SPECS).filter((c) => !seen.has(c)), ['not_found', 'method_not_allowed'],
      'document these codes under the operations that answer them in server/http/openapi.ts');
  });
});
