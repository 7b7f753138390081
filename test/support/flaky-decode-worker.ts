// The image decoding thread with two faults on demand, for test/image-decoder.test.ts: a body
// starting with 0xde kills the thread; one starting with 0xaa holds it for 400 ms first. Any other
// body is decoded by the real worker, whose handler (attached when its module is imported, before
// this one) has already started on the message.
import { parentPort } from 'node:worker_threads';
import type { DecodeImageRequest } from '../../server/image-decode-worker.js';
import '../../server/image-decode-worker.js';

parentPort?.on('message', (req: DecodeImageRequest) => {
  if (req.bytes[0] === 0xde) process.exit(3);
  if (req.bytes[0] === 0xaa) {
    const until = Date.now() + 400;
    while (Date.now() < until) { /* busy: a decode that takes too long */ }
  }
});
