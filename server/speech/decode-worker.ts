// Decodes and resamples WAV bodies off the thread that serves HTTP and WebSocket traffic: a long
// file at 48 kHz takes hundreds of millions of multiply-adds to resample, which would otherwise
// stall every stream's partials while it runs.
import { parentPort } from 'node:worker_threads';
import { AcmError } from '../errors.js';
import { decodeWav } from './audio.js';

export interface DecodeRequest { id: number; body: Uint8Array; rate: number; maxSeconds: number }
export type DecodeReply =
  | { id: number; samples: Float32Array; source: { sampleRate: number; channels: number; bitDepth: string; seconds: number } }
  | { id: number; error: { code: AcmError['code'] | 'internal'; message: string } };

const port = parentPort;
port?.on('message', (req: DecodeRequest) => {
  try {
    const out = decodeWav(Buffer.from(req.body.buffer, req.body.byteOffset, req.body.byteLength), req.rate, req.maxSeconds);
    const reply: DecodeReply = { id: req.id, samples: out.samples, source: out.source };
    port.postMessage(reply, [out.samples.buffer as ArrayBuffer]);
  } catch (err) {
    const error = err instanceof AcmError ? { code: err.code, message: err.message } : { code: 'internal' as const, message: 'audio decoding failed' };
    port.postMessage({ id: req.id, error } satisfies DecodeReply);
  }
});
