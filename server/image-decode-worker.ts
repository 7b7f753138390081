// Decodes, resizes and normalises images off the thread that serves HTTP. Each sharp call spends
// about as long on the calling thread (parsing its options, setting up libvips) as libvips spends
// on the image itself, so on the HTTP thread every request held the event loop for it.
import { parentPort } from 'node:worker_threads';
import { AcmError } from './errors.js';
import { readImage, type ImageContract, type ImageReader } from './image.js';

export interface DecodeImageRequest { id: number; bytes: Uint8Array; image: ImageContract; maxPixels: number; directPng: boolean }
export type DecodeImageReply =
  | { id: number; pixels: Float32Array; reader: ImageReader }
  | { id: number; error: { code: AcmError['code']; message: string } };

const port = parentPort;
if (port === null) throw new Error('image-decode-worker must run as a worker thread');

port.on('message', (req: DecodeImageRequest) => {
  const bytes = Buffer.from(req.bytes.buffer, req.bytes.byteOffset, req.bytes.byteLength);
  readImage(bytes, { image: req.image }, req.maxPixels, req.directPng).then(({ pixels, reader }) => {
    port.postMessage({ id: req.id, pixels, reader } satisfies DecodeImageReply, [pixels.buffer as ArrayBuffer]);
  }, (err: unknown) => {
    const error = err instanceof AcmError ? { code: err.code, message: err.message }
      : { code: 'internal' as const, message: `image decoding failed: ${(err as Error).message}` };
    port.postMessage({ id: req.id, error } satisfies DecodeImageReply);
  });
});
