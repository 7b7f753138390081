// One inference worker thread: owns one onnxruntime session and runs whole batches on it.
// onnxruntime-node's run() blocks the thread it runs on, so it lives here, never on the thread
// that serves HTTP. Inputs arrive as transferred buffers and outputs leave the same way, so a
// batch is never copied between threads.
//
// The thread ends itself: on 'close' it exits as soon as no onnxruntime call is in progress,
// because a thread terminated inside one aborts the whole process.
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { learnerCounts, type WorkerInit, type FromWorker, type ToWorker, type ValueInfo } from './ort-protocol.js';

const init = workerData as WorkerInit;
// On Linux a nice value belongs to a thread, and threads inherit it from the thread that starts
// them: set here, before the session exists, it covers this thread and onnxruntime's pool.
// Raising one's own nice value needs no privilege; where the platform refuses, run as is (a
// priority is a preference, never a reason not to serve) and say so in the ready message.
let niceError: string | undefined;
if (init.nice) {
  try {
    setPriority(init.nice);
  } catch (err) {
    niceError = (err as Error).message;
  }
}
const port = parentPort;
if (port === null) throw new Error('ort-worker must run as a worker thread');

let session: ort.InferenceSession | undefined;
/** True while onnxruntime is loading the graph. */
let loading = true;
let closing = false;
/** Batches received and not yet answered, and the promise the next one runs after. */
let queued = 0;
let chain: Promise<void> = Promise.resolve();

function exitWhenIdle(code = 0): void {
  // Never while onnxruntime is inside a native call: loading the graph or running a batch.
  if (loading || queued > 0) return;
  // process.exit() in a worker ends this thread only.
  process.exit(code);
}

function describe(list: readonly ort.InferenceSession.ValueMetadata[]): ValueInfo[] {
  return list.map((m) => (m.isTensor ? { name: m.name, type: m.type, shape: [...m.shape] } : { name: m.name, type: 'non-tensor', shape: [] }));
}

function post(msg: FromWorker, transfer: ArrayBuffer[] = []): void {
  port?.postMessage(msg, transfer);
}

// Listening from the start, so a close that arrives while the graph loads is not lost.
port.on('message', (msg: ToWorker) => {
  if (msg.type === 'close') {
    closing = true;
    exitWhenIdle();
    return;
  }
  if (session === undefined || closing) {
    post({ type: 'failed', id: msg.id, message: 'inference worker is not running' });
    return;
  }
  // Batches run one after another in the order they came, however many the backend sends ahead.
  const s = session;
  queued++;
  chain = chain.then(() => (closing ? post({ type: 'failed', id: msg.id, message: 'inference worker is closing' }) : runBatch(s, msg)))
    .finally(() => {
      queued--;
      if (closing) exitWhenIdle();
    });
});

async function load(): Promise<void> {
  try {
    session = await ort.InferenceSession.create(init.graphPath, {
      executionProviders: [init.provider],
      intraOpNumThreads: init.threads,
      interOpNumThreads: init.tuning.interOpThreads,
      executionMode: init.tuning.executionMode,
      graphOptimizationLevel: init.graphOptimization,
      enableCpuMemArena: init.tuning.cpuMemArena,
      logSeverityLevel: init.ortLogSeverity,
      // Session config entry session.intra_op.allow_spinning; the Node binding takes strings only.
      extra: { session: { intra_op: { allow_spinning: init.tuning.intraOpSpinning ? '1' : '0' } } },
    });
  } catch (err) {
    post({ type: 'fatal', message: `cannot create a ${init.provider} session for ${init.graphPath}: ${(err as Error).message}` });
    loading = false;
    exitWhenIdle(1);
    return;
  }
  loading = false;
  if (closing) {
    exitWhenIdle();
    return;
  }
  post({ type: 'ready', inputs: describe(session.inputMetadata), outputs: describe(session.outputMetadata), niceError });
}

async function runBatch(s: ort.InferenceSession, msg: Extract<ToWorker, { type: 'run' }>): Promise<void> {
  try {
    const feeds = {
      [init.names.input]: new ort.Tensor('float32', msg.input, [msg.batch, ...init.shape.input]),
      [init.names.budget]: new ort.Tensor('float64', msg.budgets, [msg.batch]),
    };
    const out = await s.run(feeds, [init.names.logits, init.names.counts]);
    const logitsT = out[init.names.logits];
    const countsT = out[init.names.counts];
    if (logitsT === undefined || countsT === undefined) throw new Error('the graph did not return logits and learner counts');
    // Copies: the output tensors may view memory onnxruntime reuses, and the copies are what is
    // transferred back without a second copy.
    const logits = Float32Array.from(logitsT.data as Float32Array);
    const counts = learnerCounts(countsT.data as BigInt64Array);
    post({ type: 'result', id: msg.id, logits, counts }, [logits.buffer, counts.buffer]);
  } catch (err) {
    post({ type: 'failed', id: msg.id, message: (err as Error).message });
  }
}

void load();
