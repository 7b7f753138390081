// POST /classify: parse parameters, refuse early, read the image, call the inference service,
// encode the answer with its timing headers. Everything else lives in the service.
import type { Request, Response } from 'express';
import { AcmError, shown } from '../errors.js';
import { IMAGE_MEDIA_TYPES } from '../image.js';
import type { ClassifyResult, InferenceService } from '../inference.js';
import { CLASSIFY_PARAMS, onlyKnownParams, parseBudget, parseTopK, single } from '../params.js';
import { readMultipartImage, readRawBody } from './body.js';

export interface ClassifyRouteOptions {
  readonly maxImageBytes: number;
}

const ACCEPTED = [...IMAGE_MEDIA_TYPES, 'multipart/form-data'].join(', ');

/** The request's media type, lower case and without parameters; '' when there is none. */
export function mediaType(req: Request): string {
  return (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
}

function ms(v: number): string {
  return v.toFixed(3);
}

/** The compute and timing headers every inference answer carries (documented in GET /openapi.json). */
export function setTimingHeaders(res: Response, used: number, timings: ClassifyResult['timings']): void {
  const { queueMs, inferenceMs, totalMs } = timings;
  res.setHeader('X-Budget-Used', String(used));
  res.setHeader('X-Queue-Time-Ms', ms(queueMs));
  res.setHeader('X-Inference-Time-Ms', ms(inferenceMs));
  res.setHeader('X-Total-Time-Ms', ms(totalMs));
  res.setHeader('Server-Timing', `queue;dur=${ms(queueMs)}, inference;dur=${ms(inferenceMs)}, total;dur=${ms(totalMs)}`);
}

export function classifyHandler(inference: InferenceService, opts: ClassifyRouteOptions) {
  return async (req: Request, res: Response): Promise<void> => {
    const arrivedAt = performance.now();
    // Aborting on a closed connection removes the request from the queue: nobody waits for it.
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });

    const type = mediaType(req);
    const multipart = type === 'multipart/form-data';
    if (!multipart && !IMAGE_MEDIA_TYPES.has(type)) {
      res.setHeader('Connection', 'close');
      throw new AcmError('unsupported_media_type', `Content-Type must be one of ${ACCEPTED}; got ${shown(type || 'none')}`);
    }
    const query = req.query as Record<string, unknown>;
    onlyKnownParams(Object.keys(query), CLASSIFY_PARAMS, 'POST /classify');
    const header = req.headers['x-budget'];
    let budgetRaw = typeof header === 'string' ? header : single(query.budget, 'budget');
    let budgetField = typeof header === 'string' ? 'X-Budget' : 'budget';
    let topKRaw = single(query.top_k, 'top_k');
    const modelName = single(query.model, 'model');
    // Refuse before reading the body: bad parameters, unknown model, not ready, no room.
    parseBudget(budgetRaw, budgetField);
    parseTopK(topKRaw);
    let admission = inference.admit(modelName);
    res.on('close', () => admission.release());

    let image: Buffer;
    if (multipart) {
      const form = await readMultipartImage(req, res, opts.maxImageBytes, inference.requestTimeoutMs);
      image = form.image;
      if (budgetRaw === undefined && form.fields.has('budget')) {
        budgetRaw = form.fields.get('budget');
        budgetField = 'budget';
      }
      topKRaw ??= form.fields.get('top_k');
      if (query.model === undefined && form.fields.has('model')) {
        admission.release();
        admission = inference.admit(form.fields.get('model'));
      }
    } else {
      image = await readRawBody(req, res, opts.maxImageBytes, 'image', inference.requestTimeoutMs);
    }
    res.locals.model = admission.model;
    const result = await inference.classify(admission.model, image, {
      admission,
      budget: parseBudget(budgetRaw, budgetField),
      topK: parseTopK(topKRaw),
      signal: abort.signal,
      arrivedAt,
    });
    setTimingHeaders(res, result.compute.used, result.timings);
    res.json({ model: result.model, predictions: result.predictions, compute: result.compute });
  };
}
