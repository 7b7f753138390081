// The server's runtime without a model: the modules main.ts loads (HTTP app, image and speech
// services, onnxruntime-node, sharp, pino, prom-client) and ACM_WORKERS idle worker threads that load
// onnxruntime-node but create no session. Its resident memory is what a server costs before any
// model; bench/server-memory.ts subtracts it from a ready server's to get the memory a model costs.
// Prints "ready" on stdout, then waits for SIGTERM or the end of stdin.
import { isMainThread, parentPort, Worker } from 'node:worker_threads';

if (isMainThread) {
  await import('onnxruntime-node');
  await import('../server/http/app.js');
  await import('../server/inference.js');
  await import('../server/metrics.js');
  await import('../server/ort-backend.js');
  await import('../server/image.js');
  await import('../server/logger.js');
  await import('../server/bundle.js');
  await import('../server/speech/asr-socket.js');
  await import('../server/speech/service.js');
  const workers = Number(process.env.ACM_WORKERS ?? '1');
  if (!Number.isInteger(workers) || workers < 1) throw new Error(`ACM_WORKERS must be an integer >= 1; got ${process.env.ACM_WORKERS}`);
  const threads = Array.from({ length: workers }, () => new Worker(new URL(import.meta.url)));
  await Promise.all(threads.map((w) => new Promise<void>((resolve, reject) => {
    w.once('message', () => resolve());
    w.once('error', reject);
  })));
  // Alive until SIGTERM or until stdin closes: a bench that dies without stopping it closes the pipe.
  process.stdin.resume();
  process.stdin.once('end', () => process.exit(0));
  process.once('SIGTERM', () => process.exit(0));
  console.log('ready');
} else {
  await import('onnxruntime-node');
  parentPort?.postMessage('ready');
  // An idle worker like an inference worker between batches: alive, listening.
  parentPort?.on('message', () => undefined);
}
