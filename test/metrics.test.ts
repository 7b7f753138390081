// The HTTP thread's event-loop delay in /metrics: a blocked loop shows in the window it was blocked
// in, and a scrape starts a new window.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Metrics } from '../server/metrics.js';

function quantile(text: string, q: string): number {
  const m = new RegExp(`^acm_event_loop_delay_seconds\\{quantile="${q.replace('.', '\\.')}"\\} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `acm_event_loop_delay_seconds{quantile="${q}"} missing`);
  return Number(m[1]);
}

describe('event-loop delay metric', () => {
  it('shows a blocked loop in the window it happened in, then starts a new window', async () => {
    const metrics = new Metrics();
    await new Promise((r) => setTimeout(r, 20));
    await metrics.registry.metrics();
    // The monitor starts timing again on its first tick after a scrape.
    await new Promise((r) => setTimeout(r, 10));
    const until = Date.now() + 80;
    while (Date.now() < until) { /* the HTTP thread held by synchronous work */ }
    await new Promise((r) => setTimeout(r, 20));
    const blocked = await metrics.registry.metrics();
    assert.ok(quantile(blocked, '1') >= 0.07, `max ${quantile(blocked, '1')} s after an 80 ms block`);
    assert.ok(quantile(blocked, '0.5') < 0.07, 'one long delay is the max, not the median');
    await new Promise((r) => setTimeout(r, 30));
    const next = await metrics.registry.metrics();
    assert.ok(quantile(next, '1') < 0.07, `the next window does not repeat the block (max ${quantile(next, '1')} s)`);
  });
});
