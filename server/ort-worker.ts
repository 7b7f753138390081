// One inference worker thread: owns one onnxruntime session and runs whole batches on it.
// onnxruntime-node's run() blocks the thread it runs on, so it lives here, never on the thread
// that serves HTTP. Inputs arrive as transferred buffers and outputs leave the same way, so a
// batch is never copied between threads.
import { parentPort, workerData } from 'node:worker_threads';
import ort from 'onnxruntime-node';
import type { WorkerInit, FromWorker, ToWorker, ValueInfo } from './ort-protocol.js';

const init = workerData as WorkerInit;
const port = parentPort;
if (port === null) throw new Error('ort-worker must run as a worker thread');

function describe(list: readonly ort.InferenceSession.ValueMetadata[]): ValueInfo[] {
  return list.map((m) => (m.isTensor ? { name: m.name, type: m.type, shape: [...m.shape] } : { name: m.name, type: 'non-tensor', shape: [] }));
}

function post(msg: FromWorker, transfer: ArrayBuffer[] = []): void {
  port?.postMessage(msg, transfer);
}

async function main(): Promise<void> {
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(init.graphPath, {
      executionProviders: [init.provider],
      intraOpNumThreads: init.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: init.graphOptimization,
    });
  } catch (err) {
    post({ type: 'fatal', message: `cannot create a ${init.provider} session for ${init.graphPath}: ${(err as Error).message}` });
    return;
  }
  post({ type: 'ready', inputs: describe(session.inputMetadata), outputs: describe(session.outputMetadata) });

  const { channels, height, width } = init.shape;
  port?.on('message', (msg: ToWorker) => {
    void runBatch(session, msg.id, msg.batch, msg.pixels, msg.budgets, [channels, height, width]);
  });
}

async function runBatch(session: ort.InferenceSession, id: number, batch: number, pixels: Float32Array,
  budgets: Float64Array, chw: [number, number, number]): Promise<void> {
  try {
    const feeds = {
      [init.names.pixels]: new ort.Tensor('float32', pixels, [batch, ...chw]),
      [init.names.budget]: new ort.Tensor('float64', budgets, [batch]),
    };
    const out = await session.run(feeds, [init.names.logits, init.names.counts]);
    const logitsT = out[init.names.logits];
    const countsT = out[init.names.counts];
    if (logitsT === undefined || countsT === undefined) throw new Error('the graph did not return logits and learner counts');
    // Copies: the output tensors may view memory onnxruntime reuses, and the copies are what is
    // transferred back without a second copy.
    const logits = Float32Array.from(logitsT.data as Float32Array);
    const raw = countsT.data as BigInt64Array | Int32Array;
    const counts = new Int32Array(raw.length);
    for (let i = 0; i < raw.length; i++) counts[i] = Number(raw[i]);
    post({ type: 'result', id, logits, counts }, [logits.buffer, counts.buffer]);
  } catch (err) {
    post({ type: 'failed', id, message: (err as Error).message });
  }
}

main().catch((err: unknown) => {
  post({ type: 'fatal', message: (err as Error).message });
});
