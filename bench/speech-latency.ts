// Latency of streamed recognition, from what a client saw: when it sent each audio frame, and when
// each partial and the final arrived with the per-frame compute they carry. A partial covers the
// audio of the frames recognised so far ((compute.frames.start + values.length) * frame_ms); its
// latency is its arrival time minus the send time of the audio frame that completed that much
// audio. That includes any audio the model waits for past the covered point (its lookahead).
import { median } from './stats.js';

/** One audio frame as sent: the audio sent up to and including it, and when it was sent. */
export interface SentFrame {
  /** Samples sent up to the end of this frame. */
  endSample: number;
  /** performance.now() just before the frame was handed to the socket. */
  at: number;
}

/** A partial or final message as received. */
export interface Update {
  type: 'partial' | 'final';
  /** performance.now() when the message arrived. */
  at: number;
  frames: { frame_ms: number; start: number; length: number };
}

/** Samples of audio the recognised frames of an update cover. */
export function coveredSamples(u: Update, rate: number): number {
  return Math.round(((u.frames.start + u.frames.length) * u.frames.frame_ms * rate) / 1000);
}

/**
 * The send time of the first frame whose audio reaches `samples` (the frame that completed it);
 * the last frame when the recognised frames reach past the audio sent (the final rounds up to a
 * whole frame). Undefined when nothing was sent. `frames` is in send order.
 */
export function completedAt(frames: readonly SentFrame[], samples: number): number | undefined {
  if (frames.length === 0) return undefined;
  let lo = 0;
  let hi = frames.length - 1;
  if (frames[hi]!.endSample <= samples) return frames[hi]!.at;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (frames[mid]!.endSample >= samples) hi = mid;
    else lo = mid + 1;
  }
  return frames[lo]!.at;
}

/** Latency (ms) of each partial, in arrival order; partials that cover no audio yet are skipped. */
export function partialLatencies(frames: readonly SentFrame[], updates: readonly Update[], rate: number): number[] {
  const out: number[] = [];
  for (const u of updates) {
    if (u.type !== 'partial') continue;
    const covered = coveredSamples(u, rate);
    if (covered <= 0) continue;
    const sent = completedAt(frames, covered);
    if (sent !== undefined) out.push(Math.max(0, u.at - sent));
  }
  return out;
}

/** Thresholds of the falling-behind verdict. */
export const BEHIND = {
  /** The last quarter's median partial latency may exceed the first quarter's by this much. */
  growthMs: 1000,
  /** The final may arrive this long after stop. */
  finalMs: 2000,
} as const;

export interface BehindVerdict {
  behind: boolean;
  /** Median latency of the first and the last quarter of the partials (NaN with fewer than 4). */
  first_quarter_ms: number;
  last_quarter_ms: number;
  /** Why the stream counts as behind; empty when it does not. */
  reasons: string[];
}

/**
 * Whether a stream fell behind real time: its partial latency grew (the last quarter's median more
 * than BEHIND.growthMs above the first quarter's), or its final came more than BEHIND.finalMs after
 * stop, or never came (finalMs undefined).
 */
export function fellBehind(latencies: readonly number[], finalMs: number | undefined): BehindVerdict {
  const q = Math.floor(latencies.length / 4);
  const first = q > 0 ? median(latencies.slice(0, q)) : NaN;
  const last = q > 0 ? median(latencies.slice(-q)) : NaN;
  const reasons: string[] = [];
  if (last - first > BEHIND.growthMs) {
    reasons.push(`partial latency grew from ${first.toFixed(0)} ms to ${last.toFixed(0)} ms (first to last quarter)`);
  }
  if (finalMs === undefined) reasons.push('no final transcript');
  else if (finalMs > BEHIND.finalMs) reasons.push(`final ${finalMs.toFixed(0)} ms after stop`);
  return { behind: reasons.length > 0, first_quarter_ms: first, last_quarter_ms: last, reasons };
}
