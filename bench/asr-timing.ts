// A timed /asr client for the speech benchmark, on the ws package directly so every send and every
// arrival is stamped where it happens: start, wait for ready, audio frames (paced by the wall clock
// or as fast as the socket drains), stop, wait for the final. It never throws: a refused
// handshake, an error message, a close before the final or a timeout ends up in `error`, and the
// socket is closed (terminated if the close handshake stalls) before it resolves.
import WebSocket, { type RawData } from 'ws';
import type { SentFrame, Update } from './speech-latency.js';

export interface TimedStreamOptions {
  /** ws://host:port/asr, with ?model= when a model is named. */
  readonly url: string;
  readonly budget: number;
  readonly rate: number;
  readonly audio: Float32Array;
  readonly frameSamples: number;
  /** Frame k is sent at (first frame) + k frame durations; otherwise as fast as the server takes them. */
  readonly paced: boolean;
  /** Wait after ready before the first frame (spreads concurrent streams over a frame period). */
  readonly delayMs?: number;
  /** Handshake and ready, each. */
  readonly openTimeoutMs: number;
  /** From stop to the final. */
  readonly finalTimeoutMs: number;
}

export interface TimedStream {
  sent: SentFrame[];
  updates: Update[];
  stopAt?: number;
  finalAt?: number;
  final?: { text: string; budget: number; used: number };
  error?: string;
}

/** Bytes the socket may hold unsent before a fast sender waits for it to drain. */
const HIGH_WATER = 256 * 1024;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function pcm16(samples: Float32Array): Buffer {
  const out = Buffer.alloc(samples.length * 2);
  for (let i = 0; i < samples.length; i++) out.writeInt16LE(Math.max(-32768, Math.min(32767, Math.round(samples[i]! * 32767))), 2 * i);
  return out;
}

interface Message { type?: unknown; text?: unknown; code?: unknown; message?: unknown;
  compute?: { budget?: unknown; used?: unknown; frames?: { frame_ms?: unknown; start?: unknown; values?: unknown } } }

export async function timedStream(o: TimedStreamOptions): Promise<TimedStream> {
  const out: TimedStream = { sent: [], updates: [] };
  const pcm = pcm16(o.audio);
  const ws = new WebSocket(o.url, { handshakeTimeout: o.openTimeoutMs, perMessageDeflate: false });
  let closed = false;
  let settle: (() => void) | undefined;
  const fail = (why: string): void => {
    out.error ??= why;
    settle?.();
  };
  const readyOrEnd = new Promise<void>((resolve) => {
    ws.on('message', (data: RawData, isBinary: boolean) => {
      const at = performance.now();
      if (isBinary) return fail('the server sent a binary message');
      let msg: Message;
      try {
        msg = JSON.parse(Buffer.isBuffer(data) ? data.toString('utf8') : Buffer.from(data as ArrayBuffer).toString('utf8')) as Message;
      } catch {
        return fail('the server sent a message that is not JSON');
      }
      if (msg.type === 'ready') return resolve();
      if (msg.type === 'error') return fail(`${String(msg.code)}: ${String(msg.message)}`);
      if (msg.type !== 'partial' && msg.type !== 'final') return;
      const f = msg.compute?.frames;
      if (typeof f?.frame_ms !== 'number' || typeof f.start !== 'number' || !Array.isArray(f.values)) {
        return fail(`a ${msg.type} message without compute.frames {frame_ms, start, values}`);
      }
      out.updates.push({ type: msg.type, at, frames: { frame_ms: f.frame_ms, start: f.start, length: f.values.length } });
      if (msg.type === 'final') {
        out.finalAt = at;
        out.final = { text: String(msg.text), budget: Number(msg.compute?.budget), used: Number(msg.compute?.used) };
        settle?.();
      }
    });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => { body += c.toString(); });
      res.on('end', () => {
        fail(`handshake refused with HTTP ${res.statusCode}: ${body.slice(0, 300)}`);
        ws.terminate();
      });
    });
    ws.on('error', (err) => fail(`socket error: ${err.message}`));
    ws.on('close', (code, reason) => {
      closed = true;
      if (out.finalAt === undefined) fail(`closed before the final (code ${code}${reason.length ? `: ${reason.toString()}` : ''})`);
      settle?.();
      resolve();
    });
  });
  const ended = new Promise<void>((resolve) => { settle = resolve; });

  try {
    const opened = await within(new Promise<boolean>((resolve) => {
      ws.once('open', () => resolve(true));
      ws.once('close', () => resolve(false));
    }), o.openTimeoutMs + 1000);
    if (opened !== true) {
      fail(opened === 'timeout' ? `no connection within ${o.openTimeoutMs} ms` : 'the connection closed before it opened');
      return out;
    }
    ws.send(JSON.stringify({ type: 'start', sample_rate: o.rate, encoding: 'pcm_s16le', budget: o.budget }));
    if ((await within(readyOrEnd, o.openTimeoutMs)) === 'timeout') fail(`no ready message within ${o.openTimeoutMs} ms of start`);
    if (out.error !== undefined || closed) return out;
    if (o.delayMs) await sleep(o.delayMs);
    await sendFrames(ws, pcm, o, out, () => out.error !== undefined || closed);
    if (out.error !== undefined || closed) return out;
    out.stopAt = performance.now();
    ws.send(JSON.stringify({ type: 'stop' }));
    if ((await within(ended, o.finalTimeoutMs)) === 'timeout' && out.finalAt === undefined) {
      fail(`no final within ${o.finalTimeoutMs} ms of stop`);
    }
    return out;
  } finally {
    await closeSocket(ws, () => closed);
  }
}

async function sendFrames(ws: WebSocket, pcm: Buffer, o: TimedStreamOptions, out: TimedStream, stopped: () => boolean): Promise<void> {
  const frameBytes = o.frameSamples * 2;
  const frameMs = (o.frameSamples / o.rate) * 1000;
  let first: number | undefined;
  for (let k = 0, off = 0; off < pcm.length; k++, off += frameBytes) {
    if (stopped()) return;
    if (o.paced && first !== undefined) {
      const due = first + k * frameMs - performance.now();
      if (due > 0) await sleep(due);
    } else if (!o.paced && ws.bufferedAmount > HIGH_WATER) {
      while (ws.bufferedAmount > HIGH_WATER / 2 && !stopped()) await sleep(1);
    }
    if (stopped()) return;
    const frame = pcm.subarray(off, Math.min(pcm.length, off + frameBytes));
    const at = performance.now();
    first ??= at;
    ws.send(frame);
    out.sent.push({ endSample: (off + frame.length) / 2, at });
  }
}

/** The promise's value, or 'timeout' after `ms`. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), ms); });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function closeSocket(ws: WebSocket, isClosed: () => boolean): Promise<void> {
  if (isClosed() || ws.readyState === WebSocket.CLOSED) return;
  const done = new Promise<void>((r) => ws.once('close', () => r()));
  if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
  else ws.close(1000, 'bench done');
  if ((await within(done, 2000)) === 'timeout') ws.terminate();
}
