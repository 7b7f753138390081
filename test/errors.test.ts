// The error map: every code has one HTTP status and one WebSocket close code, and errors thrown
// by express or its parsers land in the same closed set.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AcmError, ERROR_SPECS, toAcmError, type ErrorCode } from '../server/errors.js';

describe('error map', () => {
  it('gives each code a distinct 4xxx WebSocket close code and an HTTP error status', () => {
    const ws = new Set<number>();
    for (const [code, spec] of Object.entries(ERROR_SPECS)) {
      assert.ok(spec.http >= 400 && spec.http < 600, code);
      assert.ok(spec.ws >= 4000 && spec.ws < 5000, code);
      assert.ok(!ws.has(spec.ws), `${code} reuses close code ${spec.ws}`);
      ws.add(spec.ws);
    }
  });

  it('pins the statuses clients rely on', () => {
    const expected: Partial<Record<ErrorCode, number>> = { invalid_budget: 400, empty_body: 400, invalid_image: 400,
      unsupported_media_type: 415, image_too_large: 413, unknown_model: 404, queue_full: 503, not_ready: 503,
      deadline_exceeded: 504, internal: 500 };
    for (const [code, status] of Object.entries(expected)) assert.equal(new AcmError(code as ErrorCode, 'x').status, status, code);
  });

  it('serialises as { error: { code, message } }', () => {
    assert.deepEqual(new AcmError('invalid_budget', 'budget must be a number in (0, 1]; got "abc"').toBody(),
      { error: { code: 'invalid_budget', message: 'budget must be a number in (0, 1]; got "abc"' } });
  });

  it('maps express and body-parser errors by status, and hides unknown errors', () => {
    assert.equal(toAcmError({ status: 413, type: 'entity.too.large', message: 'request entity too large' }).code, 'image_too_large');
    assert.equal(toAcmError({ status: 400, type: 'entity.parse.failed', message: 'Unexpected token' }).code, 'bad_request');
    assert.equal(toAcmError({ statusCode: 415, message: 'unsupported charset' }).code, 'unsupported_media_type');
    const hidden = toAcmError(new Error('ECONNREFUSED 10.0.0.3:5432'));
    assert.equal(hidden.code, 'internal');
    assert.equal(hidden.message, 'internal error');
    const same = new AcmError('queue_full', 'full', 1);
    assert.equal(toAcmError(same), same);
  });
});
