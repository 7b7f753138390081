// Where images are decoded: in `threads` decoding threads (image-decode-worker.ts) shared by every
// image model, or, with 0 threads, on the calling (HTTP) thread. A request goes to the thread with
// the fewest images pending. A thread that dies fails only the images it held and is replaced on
// the next request; an image not decoded within its time fails with deadline_exceeded.
import { Worker } from 'node:worker_threads';
import { AcmError } from './errors.js';
import type { DecodeImageReply, DecodeImageRequest } from './image-decode-worker.js';
import { readImage, type DecodedImage, type ImageContract } from './image.js';

export interface ImageDecoder {
  /** CHW floats per the contract and the reader used; AcmError (invalid_image, image_too_large, ...) for a bad image. */
  decode(bytes: Buffer, image: ImageContract, maxPixels: number, timeoutMs: number): Promise<DecodedImage>;
  /** Stops the threads; images in flight fail with not_ready. */
  close(): Promise<void>;
}

/** Decoding on the calling thread (`ACM_DECODE_THREADS=0`); `directPng` as in decodeImage. */
export function inlineDecoder(directPng = true): ImageDecoder {
  return {
    decode: (bytes, image, maxPixels) => readImage(bytes, { image }, maxPixels, directPng),
    close: () => Promise.resolve(),
  };
}

interface Pending { resolve: (p: DecodedImage) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }

interface Lane { worker?: Worker; readonly pending: Map<number, Pending> }

export class ThreadedImageDecoder implements ImageDecoder {
  private readonly lanes: Lane[];
  private nextId = 1;
  private closed = false;

  constructor(threads: number, private readonly workerUrl = new URL('./image-decode-worker.js', import.meta.url),
    private readonly directPng = true) {
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`decoding threads must be an integer >= 1; got ${threads}`);
    this.lanes = Array.from({ length: threads }, () => ({ pending: new Map<number, Pending>() }));
  }

  decode(bytes: Buffer, image: ImageContract, maxPixels: number, timeoutMs: number): Promise<DecodedImage> {
    if (this.closed) return Promise.reject(new AcmError('not_ready', 'the server is shutting down'));
    const lane = this.lanes.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    const worker = lane.worker ?? this.spawn(lane);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        lane.pending.delete(id);
        reject(new AcmError('deadline_exceeded', `image was not decoded within ${Math.round(timeoutMs)} ms`));
      }, Math.max(1, timeoutMs));
      lane.pending.set(id, { resolve, reject, timer });
      // A copy, transferred: the request's Buffer may share its memory with Node's pool.
      const copy = new Uint8Array(bytes);
      const req: DecodeImageRequest = { id, bytes: copy, image, maxPixels, directPng: this.directPng };
      try {
        worker.postMessage(req, [copy.buffer]);
      } catch (err) {
        this.settle(lane, id, new AcmError('internal', `could not hand the image to a decoding thread: ${(err as Error).message}`));
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const workers = this.lanes.flatMap((lane) => {
      const w = lane.worker;
      lane.worker = undefined;
      this.failAll(lane, new AcmError('not_ready', 'the server is shutting down'));
      return w ? [w] : [];
    });
    await Promise.all(workers.map((w) => w.terminate()));
  }

  private spawn(lane: Lane): Worker {
    const worker = new Worker(this.workerUrl);
    worker.on('message', (reply: DecodeImageReply) => {
      if ('error' in reply) this.settle(lane, reply.id, new AcmError(reply.error.code, reply.error.message));
      else this.settle(lane, reply.id, { pixels: reply.pixels, reader: reply.reader });
    });
    // The exit that follows fails what the thread held.
    worker.on('error', () => undefined);
    worker.on('exit', (code) => {
      if (lane.worker !== worker) return;
      lane.worker = undefined;
      this.failAll(lane, new AcmError('internal', `the image decoding thread stopped (code ${code})`));
    });
    // Idle, it must not keep the process alive; pending requests hold their own timers.
    worker.unref();
    lane.worker = worker;
    return worker;
  }

  private settle(lane: Lane, id: number, outcome: DecodedImage | Error): void {
    const p = lane.pending.get(id);
    if (!p) return;
    lane.pending.delete(id);
    clearTimeout(p.timer);
    if (outcome instanceof Error) p.reject(outcome);
    else p.resolve(outcome);
  }

  private failAll(lane: Lane, err: AcmError): void {
    for (const p of lane.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    lane.pending.clear();
  }
}

/** The decoder `ACM_DECODE_THREADS` and `ACM_DIRECT_PNG` ask for. */
export function imageDecoder(threads: number, directPng = true): ImageDecoder {
  return threads === 0 ? inlineDecoder(directPng) : new ThreadedImageDecoder(threads, undefined, directPng);
}
