// One decoding thread (decode-worker.ts) shared by every /transcribe request: requests queue in
// order, and a thread that dies fails only the request it held and is replaced on the next one.
import { Worker } from 'node:worker_threads';
import { AcmError } from '../errors.js';
import type { DecodedAudio } from './audio.js';
import type { DecodeReply, DecodeRequest } from './decode-worker.js';

interface Pending { resolve: (a: DecodedAudio) => void; reject: (e: Error) => void }

export class AudioDecoder {
  private worker?: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  decode(body: Buffer, rate: number, maxSeconds: number): Promise<DecodedAudio> {
    const worker = this.worker ?? this.spawn();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      // A copy, transferred: the request's Buffer may share its memory with Node's pool.
      const copy = new Uint8Array(body);
      const req: DecodeRequest = { id, body: copy, rate, maxSeconds };
      worker.postMessage(req, [copy.buffer]);
    });
  }

  /** Lets the thread go; requests in flight fail with not_ready. */
  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    this.failAll(new AcmError('not_ready', 'the server is shutting down'));
    await worker?.terminate();
  }

  private spawn(): Worker {
    const worker = new Worker(new URL('./decode-worker.js', import.meta.url));
    worker.on('message', (reply: DecodeReply) => {
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if ('error' in reply) p.reject(new AcmError(reply.error.code, reply.error.message));
      else p.resolve({ samples: reply.samples, source: reply.source });
    });
    worker.on('error', () => undefined);
    worker.on('exit', () => {
      if (this.worker === worker) this.worker = undefined;
      this.failAll(new AcmError('internal', 'the audio decoding thread stopped'));
    });
    // Idle, it must not keep the process alive.
    worker.unref();
    this.worker = worker;
    return worker;
  }

  private failAll(err: AcmError): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}
