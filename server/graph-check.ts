// Checks a loaded ONNX graph's inputs and outputs against the bundle manifest (BUNDLE.md table).
// Mismatched names or fixed dimensions would otherwise fail on the first request, or worse,
// silently mis-read a tensor; here they stop the server at start-up.
import type { ImageManifest } from './manifest.js';
import type { ValueInfo } from './ort-protocol.js';

export interface Expected {
  role: string;
  name: string;
  types: readonly string[];
  /** Fixed sizes per dimension; undefined leaves a dimension (the batch) free. */
  dims: ReadonlyArray<number | undefined>;
}

export function checkOne(found: ValueInfo | undefined, want: Expected, problems: string[]): void {
  if (found === undefined) {
    problems.push(`${want.role} ${JSON.stringify(want.name)} is not in the graph`);
    return;
  }
  if (!want.types.includes(found.type)) {
    problems.push(`${want.role} ${JSON.stringify(want.name)} has type ${found.type}; the manifest contract needs ${want.types.join(' or ')}`);
  }
  // An empty shape means onnxruntime knows no shape; the run-time size checks cover that case.
  if (found.shape.length === 0) return;
  if (found.shape.length !== want.dims.length) {
    problems.push(`${want.role} ${JSON.stringify(want.name)} has rank ${found.shape.length}; expected ${want.dims.length}`);
    return;
  }
  want.dims.forEach((size, i) => {
    const got = found.shape[i];
    if (size !== undefined && typeof got === 'number' && got > 0 && got !== size) {
      problems.push(`${want.role} ${JSON.stringify(want.name)} dimension ${i} is ${got}; the manifest implies ${size}`);
    }
  });
  const batch = found.shape[0];
  if (typeof batch === 'number' && batch > 0) {
    problems.push(`${want.role} ${JSON.stringify(want.name)} has a fixed batch dimension ${batch}; re-export with a dynamic batch axis`);
  }
}

/** A tensor's name in the graph and its sizes per dimension (undefined: free, the batch). */
interface Tensor {
  readonly name: string;
  readonly dims: ReadonlyArray<number | undefined>;
}

/** The four tensors of every task's graph (BUNDLE.md tables), with the sizes its manifest implies. */
export interface GraphContract {
  /** The float32 data input: pixels or audio. */
  readonly input: Tensor;
  /** Name of the float64 per-request budget input. */
  readonly budget: string;
  readonly logits: Tensor;
  readonly learnerCounts: Tensor;
}

/** Every mismatch between a graph's inputs and outputs and the contract; empty when they agree. */
export function checkTensors(c: GraphContract, inputs: readonly ValueInfo[], outputs: readonly ValueInfo[]): string[] {
  const problems: string[] = [];
  const byName = (list: readonly ValueInfo[], name: string): ValueInfo | undefined => list.find((v) => v.name === name);
  checkOne(byName(inputs, c.input.name), { role: 'input', name: c.input.name, types: ['float32'], dims: c.input.dims }, problems);
  // float64 so the graph's cap floor(budget * n * T) sees exactly the budget the request gave.
  checkOne(byName(inputs, c.budget), { role: 'input', name: c.budget, types: ['float64'], dims: [undefined] }, problems);
  checkOne(byName(outputs, c.logits.name), { role: 'output', name: c.logits.name, types: ['float32'], dims: c.logits.dims }, problems);
  checkOne(byName(outputs, c.learnerCounts.name), { role: 'output', name: c.learnerCounts.name, types: ['int64'],
    dims: c.learnerCounts.dims }, problems);
  const known = new Set([c.input.name, c.budget]);
  for (const input of inputs) {
    if (!known.has(input.name)) problems.push(`graph input ${JSON.stringify(input.name)} is not named by the manifest, so the server cannot feed it`);
  }
  return problems;
}

/** Returns every mismatch between an image graph and its manifest; empty when they agree. */
export function checkGraph(m: ImageManifest, inputs: readonly ValueInfo[], outputs: readonly ValueInfo[]): string[] {
  const { channels, height, width } = m.image;
  return checkTensors({ input: { name: m.inputs.pixels, dims: [undefined, channels, height, width] }, budget: m.inputs.budget,
    logits: { name: m.outputs.logits, dims: [undefined, m.labels.length] },
    learnerCounts: { name: m.outputs.learner_counts, dims: [undefined, m.acms.length, m.tokens.count] } }, inputs, outputs);
}
