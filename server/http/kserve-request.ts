// Decoding and validating an Open Inference Protocol v2 inference request (JSON, REST) for an
// image model: one input, either encoded images as base64 BYTES or a preprocessed FP32 tensor
// laid out [B, C, H, W] per the manifest; the budget from the request parameters; the outputs
// the client asked for. Every refusal names the field, the bound and the value given.
import { AcmError, shown } from '../errors.js';
import type { InferInput } from '../inference.js';
import type { ImageManifest } from '../manifest.js';
import { checkBudget, parseBudget } from '../params.js';

/** Name of the BYTES input: each element one encoded image (PNG, JPEG, WebP, GIF, TIFF), base64. */
export const IMAGE_INPUT = 'image';

/** Output tensors, in response order. */
export const OUTPUTS = {
  probabilities: 'probabilities',
  tokenFractions: 'token_fractions',
  budgetUsed: 'budget_used',
  gflops: 'gflops',
} as const;
export const OUTPUT_NAMES: readonly string[] = Object.values(OUTPUTS);

export interface V2Request {
  readonly id?: string;
  readonly budget?: number;
  readonly items: readonly InferInput[];
  /** Requested outputs; undefined means all. */
  readonly outputs?: ReadonlySet<string>;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
/** Nesting deeper than [B, C, H, W] plus slack is malformed, and recursion must stay bounded. */
const MAX_DEPTH = 8;

function bad(message: string): AcmError {
  return new AcmError('bad_request', message);
}

/** A JSON value as the client wrote it, bounded for messages. */
function val(v: unknown): string {
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Row-major flattening of nested data arrays (the protocol allows both flat and nested). */
function flatten(data: unknown, field: string): unknown[] {
  if (!Array.isArray(data)) throw bad(`${field} must be an array; got ${val(data)}`);
  const out: unknown[] = [];
  const walk = (v: unknown[], depth: number): void => {
    if (depth > MAX_DEPTH) throw bad(`${field} nests deeper than ${MAX_DEPTH} levels`);
    for (const e of v) {
      if (Array.isArray(e)) walk(e, depth + 1);
      else out.push(e);
    }
  };
  walk(data, 1);
  return out;
}

function parseShape(raw: unknown, field: string): number[] {
  if (!Array.isArray(raw) || raw.length === 0 || !raw.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
    throw bad(`${field} must be a non-empty array of integers >= 0; got ${val(raw)}`);
  }
  return raw as number[];
}

function parseBudgetParameter(parameters: unknown): number | undefined {
  if (parameters === undefined) return undefined;
  if (!isObject(parameters)) throw bad(`parameters must be an object; got ${val(parameters)}`);
  const b = parameters.budget;
  if (b === undefined || b === null) return undefined;
  if (typeof b === 'number') return checkBudget(b, 'parameters.budget');
  if (typeof b === 'string') return parseBudget(b, 'parameters.budget') ?? checkBudget(NaN, 'parameters.budget', b);
  return checkBudget(NaN, 'parameters.budget', JSON.stringify(b));
}

function batchSize(shape: readonly number[], field: string, maxBatch: number): number {
  const b = shape[0] ?? 0;
  if (b < 1 || b > maxBatch) throw bad(`${field}[0] (batch) must be in [1, ${maxBatch}]; got ${b}`);
  return b;
}

function parseBytes(input: Record<string, unknown>, maxBatch: number, maxImageBytes: number): InferInput[] {
  const shape = parseShape(input.shape, 'inputs[0].shape');
  const b = batchSize(shape, 'inputs[0].shape', maxBatch);
  if (shape.length > 2 || (shape.length === 2 && shape[1] !== 1)) {
    throw bad(`inputs[0].shape must be [B] or [B, 1] for ${IMAGE_INPUT}; got ${val(shape)}`);
  }
  const data = flatten(input.data, 'inputs[0].data');
  if (data.length !== b) throw bad(`inputs[0].data must hold ${b} elements (shape ${JSON.stringify(shape)}); got ${data.length}`);
  return data.map((e, i) => {
    if (typeof e !== 'string') throw bad(`inputs[0].data[${i}] must be a base64 string; got ${val(e)}`);
    const text = e.replace(/\s+/g, '');
    if (!BASE64.test(text) || text.length % 4 === 1) {
      throw bad(`inputs[0].data[${i}] must be the image bytes in base64; got ${shown(e)}`);
    }
    const image = Buffer.from(text, 'base64');
    if (image.length > maxImageBytes) {
      throw new AcmError('image_too_large', `inputs[0].data[${i}] must decode to at most ${maxImageBytes} bytes; got ${image.length}`);
    }
    return { image };
  });
}

function parsePixels(input: Record<string, unknown>, m: ImageManifest, maxBatch: number): InferInput[] {
  const { channels: c, height: h, width: w } = m.image;
  const shape = parseShape(input.shape, 'inputs[0].shape');
  const b = batchSize(shape, 'inputs[0].shape', maxBatch);
  if (shape.length !== 4 || shape[1] !== c || shape[2] !== h || shape[3] !== w) {
    throw bad(`inputs[0].shape must be [B, ${c}, ${h}, ${w}] for ${m.inputs.pixels}; got ${val(shape)}`);
  }
  const data = flatten(input.data, 'inputs[0].data');
  const per = c * h * w;
  if (data.length !== b * per) {
    throw bad(`inputs[0].data must hold ${b * per} values (shape ${JSON.stringify(shape)}); got ${data.length}`);
  }
  const items: InferInput[] = [];
  for (let i = 0; i < b; i++) {
    const pixels = new Float32Array(per);
    for (let j = 0; j < per; j++) {
      const v = data[i * per + j];
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        throw bad(`inputs[0].data[${i * per + j}] must be a finite number; got ${val(v)}`);
      }
      pixels[j] = v;
    }
    items.push({ pixels });
  }
  return items;
}

function parseOutputs(raw: unknown): Set<string> | undefined {
  if (raw === undefined) return undefined;
  if (!Array.isArray(raw) || raw.length === 0) throw bad(`outputs must be a non-empty array; got ${val(raw)}`);
  const names = new Set<string>();
  raw.forEach((o, i) => {
    const name = isObject(o) ? o.name : undefined;
    if (typeof name !== 'string' || !OUTPUT_NAMES.includes(name)) {
      throw bad(`outputs[${i}].name must be one of ${OUTPUT_NAMES.join(', ')}; got ${val(name)}`);
    }
    names.add(name);
  });
  return names;
}

/** Parses the JSON body of POST /v2/models/{name}/infer for model m. */
export function parseV2Request(body: Buffer, m: ImageManifest, maxBatch: number, maxImageBytes: number): V2Request {
  if (body.length === 0) throw new AcmError('empty_body', 'request body is empty; send an inference request as JSON');
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw bad(`request body must be JSON: ${shown((err as Error).message)}`);
  }
  if (!isObject(json)) throw bad('request body must be a JSON object with "inputs"');
  if (json.id !== undefined && typeof json.id !== 'string') throw bad(`id must be a string; got ${val(json.id)}`);
  const budget = parseBudgetParameter(json.parameters);
  const inputs = json.inputs;
  if (!Array.isArray(inputs) || inputs.length !== 1) {
    throw bad(`inputs must be an array of exactly one tensor (${IMAGE_INPUT} BYTES or ${m.inputs.pixels} FP32); ` +
      `got ${Array.isArray(inputs) ? `${inputs.length} tensors` : val(inputs)}`);
  }
  const input: unknown = inputs[0];
  if (!isObject(input)) throw bad('inputs[0] must be an object with name, shape, datatype and data');
  let items: InferInput[];
  if (input.name === IMAGE_INPUT) {
    if (input.datatype !== 'BYTES') throw bad(`inputs[0].datatype must be BYTES for ${IMAGE_INPUT}; got ${val(input.datatype)}`);
    items = parseBytes(input, maxBatch, maxImageBytes);
  } else if (input.name === m.inputs.pixels) {
    if (input.datatype !== 'FP32') {
      throw bad(`inputs[0].datatype must be FP32 for ${m.inputs.pixels}; got ${val(input.datatype)}`);
    }
    items = parsePixels(input, m, maxBatch);
  } else {
    throw bad(`inputs[0].name must be ${IMAGE_INPUT} (BYTES) or ${m.inputs.pixels} (FP32); got ${val(input.name)}`);
  }
  const outputs = parseOutputs(json.outputs);
  return { ...(json.id !== undefined ? { id: json.id } : {}), budget, items, ...(outputs ? { outputs } : {}) };
}
