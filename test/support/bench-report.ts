// Checks shared by the tests that run a bench and read its JSON report.
import assert from 'node:assert/strict';
import type { Summary } from '../../bench/stats.js';

/** A measured figure of the report: `samples` finite positive values, and a median and spread to match. */
export function assertPositiveSummary(s: Summary, samples: number, what: string): void {
  assert.equal(s.samples.length, samples, `${what}: ${samples} sample(s)`);
  for (const v of [s.median, ...s.spread, ...s.samples]) assert.ok(Number.isFinite(v) && v > 0, `${what}: ${v} is not a positive number`);
}
