// POST /transcribe: parse parameters, refuse early, read the WAV body within its limit, decode and
// resample, call the speech service, encode. Budget from X-Budget or ?budget= as for /classify.
import type { Express, Request, Response } from 'express';
import { AcmError, shown } from '../errors.js';
import { parseBudget, single } from '../params.js';
import { AudioDecoder } from './decoder.js';
import type { SpeechService } from './service.js';

export interface TranscribeRouteOptions {
  readonly maxAudioBytes: number;
  readonly maxAudioSeconds: number;
}

export const AUDIO_MEDIA_TYPES = new Set(['audio/wav', 'audio/x-wav', 'audio/wave', 'audio/vnd.wave', 'application/octet-stream']);

function tooLarge(res: Response, limit: number, got: string): AcmError {
  res.setHeader('Connection', 'close');
  return new AcmError('audio_too_large', `audio body must be at most ${limit} bytes; got ${got}`);
}

/** Reads at most `limit` bytes; a declared or actual body past it is refused without reading on. */
function readBody(req: Request, res: Response, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(tooLarge(res, limit, `Content-Length ${declared}`));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (err?: AcmError): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
      if (err) reject(err);
      else resolve(Buffer.concat(chunks, size));
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        req.pause();
        done(tooLarge(res, limit, `more than ${limit}`));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => done();
    const onError = (): void => done(new AcmError('client_closed', 'the client closed the connection while sending the body'));
    const onClose = (): void => {
      if (!req.complete) onError();
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

function ms(v: number): string {
  return v.toFixed(3);
}

export function registerSpeechRoutes(app: Express, speech: SpeechService, opts: TranscribeRouteOptions): void {
  const decoder = new AudioDecoder();
  speech.onShutdown(() => decoder.close());
  app.post('/transcribe', async (req: Request, res: Response) => {
    const arrivedAt = performance.now();
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
    if (!AUDIO_MEDIA_TYPES.has(type)) {
      res.setHeader('Connection', 'close');
      throw new AcmError('unsupported_media_type', `Content-Type must be one of ${[...AUDIO_MEDIA_TYPES].join(', ')}; got ${shown(type || 'none')}`);
    }
    const query = req.query as Record<string, unknown>;
    const header = req.headers['x-budget'];
    const budget = typeof header === 'string' ? parseBudget(header, 'X-Budget') : parseBudget(single(query.budget, 'budget'));
    const modelName = single(query.model, 'model');
    const admission = speech.admit(modelName);
    res.on('close', () => admission.release());
    res.locals.model = admission.model;
    const body = await readBody(req, res, opts.maxAudioBytes);
    if (body.length === 0) throw new AcmError('empty_body', 'the request has no body; send a WAV file');
    const rate = speech.resolve(admission.model).audio.sample_rate;
    const audio = await decoder.decode(body, rate, opts.maxAudioSeconds);
    const r = await speech.transcribe(admission.model, audio.samples, { budget, signal: abort.signal, arrivedAt });
    const { queueMs, inferenceMs, totalMs } = r.timings;
    res.setHeader('X-Budget-Used', String(r.compute.used));
    res.setHeader('X-Queue-Time-Ms', ms(queueMs));
    res.setHeader('X-Inference-Time-Ms', ms(inferenceMs));
    res.setHeader('X-Total-Time-Ms', ms(totalMs));
    res.setHeader('Server-Timing', `queue;dur=${ms(queueMs)}, inference;dur=${ms(inferenceMs)}, total;dur=${ms(totalMs)}`);
    res.json({ model: r.model, text: r.text, words: r.words, duration: audio.source.seconds, compute: r.compute });
  });
}
