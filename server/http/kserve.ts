// KServe / Open Inference Protocol v2 over HTTP/REST: server and model health, metadata and
// inference for image models. Inference goes through the same InferenceService (admission,
// queue, batcher) as POST /classify; each element of a request's batch is one queued request,
// so its answer does not depend on the other elements. Errors use the protocol's shape,
// {"error": "..."}, written by the app's one error handler.
import { readFileSync } from 'node:fs';
import type { Express, Request, Response } from 'express';
import { AcmError, shown } from '../errors.js';
import type { Admission, InferenceService, InferResult } from '../inference.js';
import type { ImageManifest } from '../manifest.js';
import { readRawBody } from './body.js';
import { mediaType, setTimingHeaders } from './classify.js';
import { IMAGE_INPUT, OUTPUTS, parseV2Request } from './kserve-request.js';

export interface KserveOptions {
  readonly maxImageBytes: number;
  /** Most elements in one request's batch dimension. */
  readonly maxBatch: number;
  /**
   * For a name that is no image model: where that model is served instead, if anywhere (a speech
   * model), so the refusal can say so rather than only list the image models.
   */
  readonly servedElsewhere?: (name: string) => string | undefined;
}

/** Bundles carry no version of their own: every model is served as version "1". */
export const MODEL_VERSION = '1';
const PLATFORM = 'onnxruntime_onnx';
/** Room for the JSON around the base64 text: ids, parameters, shapes, output names. */
const JSON_OVERHEAD = 1024 * 1024;

const SERVER_VERSION = ((): string => {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
})();

/** The most bytes a v2 JSON body may have: one largest image as base64, plus the JSON around it. */
export function v2BodyLimit(maxImageBytes: number): number {
  return Math.ceil(maxImageBytes / 3) * 4 + JSON_OVERHEAD;
}

/** Is this path answered in the v2 error shape? */
export function isV2Path(path: string): boolean {
  return path === '/v2' || path.startsWith('/v2/');
}

function modelParam(req: Request, inference: InferenceService, opts: KserveOptions): string {
  const { name, version } = req.params as { name?: string; version?: string };
  if (version !== undefined && version !== MODEL_VERSION) {
    throw new AcmError('unknown_model', `model ${JSON.stringify(name)} has version ${MODEL_VERSION} only; got version ${shown(version)}`);
  }
  // Looked up only for a name no image model has, so the hot path pays one map lookup.
  const elsewhere = name === undefined || inference.serves(name) ? undefined : opts.servedElsewhere?.(name);
  if (elsewhere !== undefined) {
    const images = inference.modelNames;
    const served = images.length > 0 ? `the image models (${images.join(', ')})` : 'image models only, and none is loaded';
    throw new AcmError('unknown_model', `model ${JSON.stringify(name)} is ${elsewhere}; the v2 protocol here serves ${served}`);
  }
  return name ?? '';
}

function metadata(m: ImageManifest, floor: number, defaultBudget: number): Record<string, unknown> {
  const { channels, height, width } = m.image;
  return {
    name: m.name,
    versions: [MODEL_VERSION],
    platform: PLATFORM,
    inputs: [
      { name: IMAGE_INPUT, datatype: 'BYTES', shape: [-1] },
      { name: m.inputs.pixels, datatype: 'FP32', shape: [-1, channels, height, width] },
    ],
    outputs: [
      { name: OUTPUTS.probabilities, datatype: 'FP32', shape: [-1, m.labels.length] },
      { name: OUTPUTS.tokenFractions, datatype: 'FP32', shape: [-1, m.tokens.count] },
      { name: OUTPUTS.budgetUsed, datatype: 'FP64', shape: [-1] },
      { name: OUTPUTS.gflops, datatype: 'FP64', shape: [-1] },
    ],
    parameters: { task: m.task, labels: m.labels, budget_floor: floor, default_budget: defaultBudget,
      token_grid: m.tokens.grid, token_grid_offset: m.tokens.grid_offset },
  };
}

function tensor(name: string, datatype: 'FP32' | 'FP64', rows: readonly ArrayLike<number>[], perRow?: number): Record<string, unknown> {
  const data: number[] = [];
  for (const r of rows) for (let i = 0; i < r.length; i++) data.push(datatype === 'FP32' ? Math.fround(r[i] ?? 0) : r[i] ?? 0);
  return { name, datatype, shape: perRow === undefined ? [rows.length * (rows[0]?.length ?? 0)] : [rows.length, perRow], data };
}

function encode(results: readonly InferResult[], wanted: ReadonlySet<string> | undefined, id: string | undefined): Record<string, unknown> {
  const first = results[0];
  if (!first) throw new AcmError('internal', 'no result');
  const outputs = [
    tensor(OUTPUTS.probabilities, 'FP32', results.map((r) => r.probabilities), first.probabilities.length),
    tensor(OUTPUTS.tokenFractions, 'FP32', results.map((r) => r.tokenFractions), first.tokenFractions.length),
    tensor(OUTPUTS.budgetUsed, 'FP64', [results.map((r) => r.compute.used)]),
    tensor(OUTPUTS.gflops, 'FP64', [results.map((r) => r.compute.gflops)]),
  ].filter((o) => !wanted || wanted.has(o.name as string));
  const sum = (f: (r: InferResult) => number): number => results.reduce((s, r) => s + f(r), 0);
  return {
    model_name: first.model,
    model_version: MODEL_VERSION,
    ...(id !== undefined ? { id } : {}),
    // Scalars only, as the protocol's parameters are: per-element figures are the FP64 outputs.
    parameters: {
      budget: first.compute.budget,
      floor: first.compute.floor,
      used: sum((r) => r.compute.used) / results.length,
      gflops: sum((r) => r.compute.gflops),
      dense_gflops: sum((r) => r.compute.dense_gflops),
      batch_size: results.length,
    },
    outputs,
  };
}

function inferHandler(inference: InferenceService, opts: KserveOptions) {
  const limit = v2BodyLimit(opts.maxImageBytes);
  return async (req: Request, res: Response): Promise<void> => {
    const arrivedAt = performance.now();
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    const name = modelParam(req, inference, opts);
    const type = mediaType(req);
    if (type !== '' && type !== 'application/json') {
      res.setHeader('Connection', 'close');
      throw new AcmError('unsupported_media_type', `Content-Type must be application/json; got ${shown(type)}`);
    }
    if (req.headers['inference-header-content-length'] !== undefined) {
      res.setHeader('Connection', 'close');
      throw new AcmError('bad_request', 'the binary tensor data extension is not supported; send tensors as JSON');
    }
    // Refuse before reading the body: not ready, unknown model, no room for even one element.
    const admissions: Admission[] = [inference.admit(name)];
    res.on('close', () => admissions.forEach((a) => a.release()));
    res.locals.model = name;
    const body = await readRawBody(req, res, limit, 'image', inference.requestTimeoutMs);
    const parsed = parseV2Request(body, inference.manifestOf(name), opts.maxBatch, opts.maxImageBytes);
    while (admissions.length < parsed.items.length) admissions.push(inference.admit(name));

    let results: InferResult[];
    try {
      results = await Promise.all(parsed.items.map((input, i) => inference.infer(name, input, {
        admission: admissions[i], budget: parsed.budget, signal: abort.signal, arrivedAt })));
    } catch (err) {
      // One failed element fails the request: the others need not keep their queue places.
      abort.abort();
      throw err;
    }
    const timings = {
      queueMs: Math.max(...results.map((r) => r.timings.queueMs)),
      inferenceMs: Math.max(...results.map((r) => r.timings.inferenceMs)),
      totalMs: performance.now() - arrivedAt,
    };
    setTimingHeaders(res, results.reduce((s, r) => s + r.compute.used, 0) / results.length, timings);
    res.json(encode(results, parsed.outputs, parsed.id));
  };
}

/** Registers the v2 routes on app. `{/versions/:version}` makes the version segment optional. */
export function registerKserveRoutes(app: Express, inference: InferenceService, opts: KserveOptions): void {
  app.get('/v2', (_req, res) => {
    res.json({ name: 'acm-serve', version: SERVER_VERSION, extensions: [] });
  });

  app.get('/v2/health/live', (_req, res) => {
    res.json({ live: true });
  });

  // The protocol answers "not ready" with a 4xx status, not 503.
  app.get('/v2/health/ready', (_req, res) => {
    if (!inference.ready) {
      res.status(400).json({ error: 'models are still loading or the server is shutting down' });
      return;
    }
    res.json({ ready: true });
  });

  app.get('/v2/models/:name{/versions/:version}', (req, res) => {
    const name = modelParam(req, inference, opts);
    const m = inference.manifestOf(name);
    const info = inference.listModels().find((i) => i.name === m.name);
    res.json(metadata(m, info?.budget_floor ?? m.budget_floor, info?.default_budget ?? m.default_budget));
  });

  app.get('/v2/models/:name{/versions/:version}/ready', (req, res) => {
    const m = inference.manifestOf(modelParam(req, inference, opts));
    if (!inference.ready) {
      res.status(400).json({ error: `model ${JSON.stringify(m.name)} is not ready` });
      return;
    }
    res.json({ name: m.name, ready: true });
  });

  app.post('/v2/models/:name{/versions/:version}/infer', inferHandler(inference, opts));
}
