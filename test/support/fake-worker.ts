// A stand-in for ort-worker that speaks its protocol without onnxruntime, and misbehaves on cue:
// budget 0.123 makes the thread exit mid-batch, budget 0.456 makes it never answer (nor honour
// close, like a call stuck inside onnxruntime), budget 0.789 makes it answer 50 ms late (while the
// batches sent after it are answered at once). Every logit is the batch's first budget, so an
// answer shows which batch it belongs to. Imported as a module (the test runner loads every file
// under test/) it does nothing.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { FromWorker, ToWorker, WorkerInit } from '../../server/ort-protocol.js';

export const CRASH_BUDGET = 0.123;
export const HANG_BUDGET = 0.456;
export const SLOW_BUDGET = 0.789;

if (!isMainThread && parentPort) {
  const port = parentPort;
  const init = workerData as WorkerInit;
  const { acms, tokens } = init.shape;
  const classes = init.shape.logits[0] ?? 0;
  const post = (msg: FromWorker, transfer: ArrayBuffer[] = []): void => port.postMessage(msg, transfer);
  post({
    type: 'ready',
    // Always declares one channel, so a manifest asking for three is caught by the graph check.
    inputs: [{ name: init.names.input, type: 'float32', shape: ['batch', 1, 28, 28] },
      { name: init.names.budget, type: 'float64', shape: ['batch'] }],
    outputs: [{ name: init.names.logits, type: 'float32', shape: ['batch', classes] },
      { name: init.names.counts, type: 'int64', shape: ['batch', acms, tokens] }],
  });
  let stuck = false;
  port.on('message', (msg: ToWorker) => {
    if (msg.type === 'close') {
      if (!stuck) process.exit(0);
      return;
    }
    if (msg.budgets.includes(CRASH_BUDGET)) process.exit(7);
    if (msg.budgets.includes(HANG_BUDGET)) {
      stuck = true;
      return;
    }
    const logits = new Float32Array(msg.batch * classes).fill(msg.budgets[0] ?? 0);
    const counts = new Int32Array(msg.batch * acms * tokens).fill(1);
    const answer = (): void => post({ type: 'result', id: msg.id, logits, counts }, [logits.buffer, counts.buffer]);
    if (msg.budgets.includes(SLOW_BUDGET)) setTimeout(answer, 50);
    else answer();
  });
}
