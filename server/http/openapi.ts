// The OpenAPI 3.1 description served at GET /openapi.json. Each route the app registers is
// described here, keyed by its express path; the document lists exactly the routes the running
// app registered (walked from its router), and test/openapi.test.ts fails for a registered route
// that has no entry here. Error responses are generated from the one error map.
import type { Express } from 'express';
import { ERROR_SPECS, type ErrorCode } from '../errors.js';

export interface RegisteredRoute {
  readonly method: string;
  /** Express path, e.g. /v2/models/:name{/versions/:version}/infer */
  readonly path: string;
}

interface RouteLayer {
  route?: { path?: unknown; methods?: Record<string, boolean> };
}

/** Every method + path registered with app.get/post/...: what the server answers. */
export function registeredRoutes(app: Express): RegisteredRoute[] {
  const stack = (app.router as unknown as { stack: RouteLayer[] }).stack;
  const out: RegisteredRoute[] = [];
  for (const layer of stack) {
    const path = layer.route?.path;
    if (typeof path !== 'string') continue;
    for (const [method, on] of Object.entries(layer.route?.methods ?? {})) {
      if (on && method !== '_all') out.push({ method: method.toUpperCase(), path });
    }
  }
  return out;
}

/** Express path to OpenAPI paths: `:p` becomes `{p}`, an optional `{...}` group gives both variants. */
export function openApiPaths(expressPath: string): string[] {
  const open = expressPath.indexOf('{');
  if (open < 0) return [expressPath.replace(/:(\w+)/g, '{$1}')];
  const close = expressPath.indexOf('}', open);
  const without = expressPath.slice(0, open) + expressPath.slice(close + 1);
  const withGroup = expressPath.slice(0, open) + expressPath.slice(open + 1, close) + expressPath.slice(close + 1);
  return [...openApiPaths(without), ...openApiPaths(withGroup)];
}

type Json = Record<string, unknown>;

const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: Json, description: string): Json => ({ description, content: { 'application/json': { schema } } });
const TIMING_HEADERS: Json = {
  'X-Budget-Used': { $ref: '#/components/headers/X-Budget-Used' },
  'X-Queue-Time-Ms': { $ref: '#/components/headers/X-Queue-Time-Ms' },
  'X-Inference-Time-Ms': { $ref: '#/components/headers/X-Inference-Time-Ms' },
  'X-Total-Time-Ms': { $ref: '#/components/headers/X-Total-Time-Ms' },
  'Server-Timing': { $ref: '#/components/headers/Server-Timing' },
};

function isErrorCode(c: string): c is ErrorCode {
  return Object.hasOwn(ERROR_SPECS, c);
}

/**
 * Error responses of an operation, grouped by status, in the server's or the v2 error shape.
 * Codes are plain strings so that speech codes can be listed before a build defines them;
 * only codes of the error map are written.
 */
function errors(codes: readonly string[], v2 = false): Json {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const c of codes.filter(isErrorCode)) byStatus.set(ERROR_SPECS[c].http, [...(byStatus.get(ERROR_SPECS[c].http) ?? []), c]);
  const out: Json = {};
  for (const [status, cs] of byStatus) {
    const retry = cs.some((c) => c === 'queue_full' || c === 'not_ready');
    out[String(status)] = {
      description: `error codes: ${cs.join(', ')}`,
      ...(retry ? { headers: { 'Retry-After': { $ref: '#/components/headers/Retry-After' } } } : {}),
      content: { 'application/json': { schema: ref(v2 ? 'V2Error' : 'Error') } },
    };
  }
  return out;
}

/** What any route with a body may answer beside its own errors: admission, the deadline (for the body too), the runtime. */
const ADMISSION: readonly string[] = ['not_ready', 'queue_full', 'unknown_model', 'body_timeout', 'deadline_exceeded', 'internal', 'client_closed'];
const modelName = { name: 'name', in: 'path', required: true, schema: { type: 'string' }, description: 'model name from GET /v1/models' };
const modelVersion = { name: 'version', in: 'path', required: true, schema: { type: 'string', enum: ['1'] }, description: 'model version; every bundle is version 1' };

interface Described {
  readonly operation: Json;
  /** Served only with a speech model: absent from an image-only server without being stale. */
  readonly speech?: true;
}

/** One entry per registered route: "METHOD express-path". */
export const OPERATIONS: Readonly<Record<string, Described>> = {
  'GET /': { operation: { summary: 'The web page: classify an image, stream speech, see the compute map',
    responses: { 200: { description: 'HTML page; its scripts and styles come from /ui/ of this server only',
      content: { 'text/html': { schema: { type: 'string' } } } } } } },
  'GET /openapi.json': { operation: { summary: 'This document', responses: { 200: json({ type: 'object' }, 'OpenAPI 3.1 document') } } },
  'POST /classify': { operation: {
    summary: 'Classify an image within a compute budget',
    parameters: [{ $ref: '#/components/parameters/X-Budget' }, { $ref: '#/components/parameters/budget' },
      { $ref: '#/components/parameters/top_k' }, { $ref: '#/components/parameters/model' }],
    requestBody: { required: true, content: {
      'image/*': { schema: { type: 'string', format: 'binary' }, description: 'image/png, image/jpeg, image/webp, image/gif or image/tiff' },
      'multipart/form-data': { schema: { type: 'object', required: ['image'], properties: { image: { type: 'string', format: 'binary' },
        budget: { type: 'string' }, top_k: { type: 'string' }, model: { type: 'string' } } } } } },
    responses: { 200: { ...json(ref('ClassifyResponse'), 'predictions and compute report'), headers: TIMING_HEADERS },
      ...errors(['bad_request', 'invalid_budget', 'empty_body', 'invalid_image', 'image_too_large', 'unsupported_media_type', ...ADMISSION]) },
  } },
  'GET /v1/models': { operation: { summary: 'Loaded models', responses: { 200: json(ref('ModelList'), 'every loaded model') } } },
  'GET /healthz': { operation: { summary: 'Liveness', responses: { 200: json({ type: 'object', properties: { status: { const: 'ok' } } }, 'the process lives') } } },
  'GET /readyz': { operation: { summary: 'Readiness', responses: { 200: json({ type: 'object', properties: { status: { const: 'ready' } } }, 'every model loaded'),
    ...errors(['not_ready']) } } },
  'GET /metrics': { operation: { summary: 'Prometheus metrics (prefix acm_)', responses: { 200: { description: 'Prometheus text format',
    content: { 'text/plain': { schema: { type: 'string' } } } } } } },
  'GET /v2': { operation: { summary: 'Open Inference Protocol v2: server metadata', responses: { 200: json({ type: 'object', required: ['name', 'version', 'extensions'],
    properties: { name: { type: 'string' }, version: { type: 'string' }, extensions: { type: 'array', items: { type: 'string' } } } }, 'server metadata') } } },
  'GET /v2/health/live': { operation: { summary: 'v2 liveness', responses: { 200: json({ type: 'object', properties: { live: { const: true } } }, 'live') } } },
  'GET /v2/health/ready': { operation: { summary: 'v2 readiness (the protocol answers "not ready" with a 4xx status)',
    responses: { 200: json({ type: 'object', properties: { ready: { const: true } } }, 'ready'), 400: json(ref('V2Error'), 'not ready') } } },
  'GET /v2/models/:name{/versions/:version}': { operation: { summary: 'v2 model metadata', parameters: [modelName],
    responses: { 200: json(ref('V2ModelMetadata'), 'tensor names, datatypes and shapes'), ...errors(['unknown_model'], true) } } },
  'GET /v2/models/:name{/versions/:version}/ready': { operation: { summary: 'v2 model readiness', parameters: [modelName],
    responses: { 200: json({ type: 'object', properties: { name: { type: 'string' }, ready: { const: true } } }, 'ready'),
      400: json(ref('V2Error'), 'not ready'), ...errors(['unknown_model'], true) } } },
  'POST /v2/models/:name{/versions/:version}/infer': { operation: {
    summary: 'v2 inference: base64 images (BYTES input "image") or a normalised FP32 tensor [B, C, H, W]; parameters.budget in (0, 1]',
    parameters: [modelName],
    requestBody: { required: true, content: { 'application/json': { schema: ref('V2InferRequest') } } },
    responses: { 200: { ...json(ref('V2InferResponse'), 'output tensors; compute report in parameters'), headers: TIMING_HEADERS },
      ...errors(['bad_request', 'invalid_budget', 'empty_body', 'invalid_image', 'image_too_large', 'unsupported_media_type', ...ADMISSION], true) },
  } },
  'POST /transcribe': { speech: true, operation: {
    summary: 'Transcribe a WAV file within a compute budget',
    parameters: [{ $ref: '#/components/parameters/X-Budget' }, { $ref: '#/components/parameters/budget' }, { $ref: '#/components/parameters/model' }],
    requestBody: { required: true, content: Object.fromEntries(['audio/wav', 'audio/x-wav', 'audio/wave', 'audio/vnd.wave', 'application/octet-stream']
      .map((t) => [t, { schema: { type: 'string', format: 'binary' }, description: 'a WAV file: PCM, float, A-law, mu-law or IMA ADPCM; any rate and channel count' }])) },
    responses: { 200: { ...json(ref('TranscribeResponse'), 'text and per-frame compute'), headers: TIMING_HEADERS },
      ...errors(['bad_request', 'invalid_budget', 'empty_body', 'unsupported_media_type', 'invalid_audio', 'audio_too_large', ...ADMISSION]) },
  } },
};

/** WebSocket routes live on the HTTP server's upgrade path, not the router; described beside /transcribe. */
export const ASR_WEBSOCKET: Json = {
  summary: 'Streaming speech recognition over WebSocket (upgrade)',
  parameters: [{ $ref: '#/components/parameters/X-Budget' }, { $ref: '#/components/parameters/budget' }, { $ref: '#/components/parameters/model' }],
  description: 'Send {"type":"start","sample_rate":16000,"encoding":"pcm_s16le"|"pcm_f32le","budget":0.5} (sample_rate must be the model\'s), binary audio ' +
    'frames, then {"type":"stop"}. The server sends {"type":"ready"}, {"type":"partial","text","compute"} messages and ' +
    '{"type":"final","text","compute"}, then closes normally. Errors: {"type":"error","code","message"} and a close ' +
    'code 4xxx from the error map.',
  responses: { 101: { description: 'switching to the WebSocket protocol; later failures arrive as error messages and close codes' },
    ...errors(['not_ready', 'queue_full', 'too_many_streams', 'bad_request', 'invalid_budget', 'unknown_model', 'invalid_audio',
      'protocol_error', 'idle_timeout', 'message_too_large', 'audio_too_large', 'deadline_exceeded', 'internal']) },
};

const UI_ASSETS: Json = {
  summary: "The web page's scripts and styles (.js, .css, .map); revalidated with ETag (Cache-Control: no-cache)",
  parameters: [{ name: 'asset', in: 'path', required: true, schema: { type: 'string' }, description: 'e.g. web/app.js, web/style.css, sdk.js' }],
  responses: { 200: { description: 'the asset' }, ...errors(['not_found']) },
};

function components(): Json {
  const codes = Object.keys(ERROR_SPECS);
  const computeMap = { type: 'object', required: ['grid', 'values'], properties: {
    grid: { type: 'array', items: { type: 'integer' }, minItems: 2, maxItems: 2 },
    values: { type: 'array', items: { type: 'array', items: { type: 'number', minimum: 0, maximum: 1 } } } } };
  const budgetSchema = { type: 'number', exclusiveMinimum: 0, maximum: 1 };
  const timing = (what: string): Json => ({ description: `${what}, milliseconds`, schema: { type: 'string' } });
  return {
    parameters: {
      'X-Budget': { name: 'X-Budget', in: 'header', schema: budgetSchema,
        description: 'compute budget in (0, 1]; wins over ?budget=; default ACM_DEFAULT_BUDGET or the model default_budget; else 400 invalid_budget' },
      budget: { name: 'budget', in: 'query', schema: budgetSchema, description: 'compute budget in (0, 1] when X-Budget is absent' },
      top_k: { name: 'top_k', in: 'query', schema: { type: 'integer', minimum: 1 }, description: 'predictions returned, 1..classes (default 5)' },
      model: { name: 'model', in: 'query', schema: { type: 'string' }, description: 'model name (default: the first by name)' },
    },
    headers: {
      'X-Budget-Used': { description: 'fraction of learner compute executed (compute.used)', schema: { type: 'string' } },
      'X-Queue-Time-Ms': timing('time from arrival in the queue to batch start'),
      'X-Inference-Time-Ms': timing("the batch's runtime"),
      'X-Total-Time-Ms': timing('handler start to answer'),
      'Server-Timing': { description: 'queue;dur=…, inference;dur=…, total;dur=…', schema: { type: 'string' } },
      'Retry-After': { description: 'seconds to wait before retrying (queue_full, not_ready while loading)', schema: { type: 'string' } },
    },
    schemas: {
      Error: { type: 'object', required: ['error'], properties: { error: { type: 'object', required: ['code', 'message'], properties: {
        code: { type: 'string', enum: codes,
          description: codes.map((c) => `${c}: HTTP ${ERROR_SPECS[c as ErrorCode].http}, WebSocket close ${ERROR_SPECS[c as ErrorCode].ws}`).join('; ') },
        message: { type: 'string', description: 'names the field, the bound and the value given' } } } } },
      V2Error: { type: 'object', required: ['error'], properties: { error: { type: 'string' } } },
      Compute: { type: 'object', required: ['budget', 'used', 'floor', 'gflops', 'dense_gflops', 'map'], properties: {
        budget: budgetSchema, used: { type: 'number' }, floor: { type: 'number' }, gflops: { type: 'number' },
        dense_gflops: { type: 'number' }, map: computeMap } },
      ClassifyResponse: { type: 'object', required: ['model', 'predictions', 'compute'], properties: {
        model: { type: 'string' },
        predictions: { type: 'array', items: { type: 'object', required: ['label', 'score'],
          properties: { label: { type: 'string' }, score: { type: 'number' } } } },
        compute: ref('Compute') } },
      ModelList: { type: 'object', required: ['models'], properties: { models: { type: 'array', items: { type: 'object',
        required: ['name', 'task'], properties: { name: { type: 'string' }, task: { type: 'string' }, labels: { type: 'array', items: { type: 'string' } },
          input: { type: 'object' }, budget_floor: { type: 'number' }, default_budget: { type: 'number' },
          decoder: { type: 'string', description: 'speech models: "lexicon-beam" (lexicon and word n-gram model) or "greedy"' },
          vocabulary: { type: 'array', items: { type: 'string' } }, quality: { type: 'array' } } } } } },
      TranscribeResponse: { type: 'object', required: ['model', 'text', 'compute'], properties: {
        model: { type: 'string' }, text: { type: 'string' }, words: { type: 'array' },
        compute: { type: 'object', properties: { budget: budgetSchema, used: { type: 'number' }, gflops: { type: 'number' },
          frames: { type: 'object', properties: { frame_ms: { type: 'number' }, values: { type: 'array', items: { type: 'number' } } } } } } } },
      V2Tensor: { type: 'object', required: ['name', 'datatype', 'shape'], properties: {
        name: { type: 'string' }, datatype: { type: 'string' }, shape: { type: 'array', items: { type: 'integer' } },
        parameters: { type: 'object' }, data: { type: 'array' } } },
      V2ModelMetadata: { type: 'object', required: ['name', 'platform', 'inputs', 'outputs'], properties: {
        name: { type: 'string' }, versions: { type: 'array', items: { type: 'string' } }, platform: { type: 'string' },
        inputs: { type: 'array', items: ref('V2Tensor') }, outputs: { type: 'array', items: ref('V2Tensor') },
        parameters: { type: 'object', description: 'task, labels (probabilities order), budget_floor, default_budget, token grid' } } },
      V2InferRequest: { type: 'object', required: ['inputs'], properties: {
        id: { type: 'string' },
        parameters: { type: 'object', properties: { budget: budgetSchema } },
        inputs: { type: 'array', minItems: 1, maxItems: 1, items: ref('V2Tensor'),
          description: '"image" BYTES [B] of base64 encoded images, or the model\'s pixel input FP32 [B, C, H, W], normalised' },
        outputs: { type: 'array', items: { type: 'object', required: ['name'], properties: { name: { type: 'string',
          enum: ['probabilities', 'token_fractions', 'budget_used', 'gflops'] } } } } } },
      V2InferResponse: { type: 'object', required: ['model_name', 'outputs'], properties: {
        model_name: { type: 'string' }, model_version: { type: 'string' }, id: { type: 'string' },
        parameters: { type: 'object', description: 'budget, floor, used (mean over the batch), gflops and dense_gflops (sums), batch_size',
          properties: { budget: { type: 'number' }, floor: { type: 'number' }, used: { type: 'number' }, gflops: { type: 'number' },
            dense_gflops: { type: 'number' }, batch_size: { type: 'integer' } } },
        outputs: { type: 'array', items: ref('V2Tensor'),
          description: 'probabilities FP32 [B, classes], token_fractions FP32 [B, tokens], budget_used FP64 [B], gflops FP64 [B]' } } },
    },
  };
}

/** The document for the routes an app registered. Routes missing from OPERATIONS are left out (and fail the test). */
export function openApiDocument(routes: readonly RegisteredRoute[]): Json {
  const paths: Record<string, Json> = {};
  const add = (path: string, method: string, operation: Json): void => {
    paths[path] = { ...paths[path], [method.toLowerCase()]: operation };
  };
  for (const r of routes) {
    const described = OPERATIONS[`${r.method} ${r.path}`];
    if (!described) continue;
    for (const p of openApiPaths(r.path)) {
      const op = described.operation;
      const withVersion = p.includes('{version}') ? { ...op, parameters: [...(op.parameters as Json[]), modelVersion] } : op;
      add(p, r.method, withVersion);
    }
  }
  if (routes.some((r) => r.method === 'POST' && r.path === '/transcribe')) add('/asr', 'GET', ASR_WEBSOCKET);
  // The page's assets are served by a static middleware, not a route; they belong with the page.
  if (paths['/']) add('/ui/{asset}', 'GET', UI_ASSETS);
  return {
    openapi: '3.1.0',
    info: { title: 'ACM Serve', version: '1', description: 'Budget-controllable inference: every answer reports the compute ' +
      'budget requested, the fraction used and GFLOPs. Errors are {"error":{"code","message"}} with a stable code; ' +
      'the /v2 routes (Open Inference Protocol) answer {"error": "..."}.' },
    paths,
    components: components(),
  };
}
