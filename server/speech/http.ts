// POST /transcribe: parse parameters, refuse early, read the WAV body within its limit, decode and
// resample, call the speech service, encode. Budget from X-Budget or ?budget= as for /classify.
import type { Express, Request, Response } from 'express';
import { AcmError, shown } from '../errors.js';
import { readRawBody } from '../http/body.js';
import { mediaType, setTimingHeaders } from '../http/classify.js';
import { onlyKnownParams, parseBudget, single, SPEECH_PARAMS } from '../params.js';
import { AudioDecoder } from './decoder.js';
import type { SpeechService } from './service.js';

export interface TranscribeRouteOptions {
  readonly maxAudioBytes: number;
  readonly maxAudioSeconds: number;
}

export const AUDIO_MEDIA_TYPES = new Set(['audio/wav', 'audio/x-wav', 'audio/wave', 'audio/vnd.wave', 'application/octet-stream']);

export function registerSpeechRoutes(app: Express, speech: SpeechService, opts: TranscribeRouteOptions): void {
  const decoder = new AudioDecoder();
  speech.onShutdown(() => decoder.close());
  app.post('/transcribe', async (req: Request, res: Response) => {
    const arrivedAt = performance.now();
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    const type = mediaType(req);
    if (!AUDIO_MEDIA_TYPES.has(type)) {
      res.setHeader('Connection', 'close');
      throw new AcmError('unsupported_media_type', `Content-Type must be one of ${[...AUDIO_MEDIA_TYPES].join(', ')}; got ${shown(type || 'none')}`);
    }
    const query = req.query as Record<string, unknown>;
    onlyKnownParams(Object.keys(query), SPEECH_PARAMS, 'POST /transcribe');
    const header = req.headers['x-budget'];
    const budget = typeof header === 'string' ? parseBudget(header, 'X-Budget') : parseBudget(single(query.budget, 'budget'));
    const modelName = single(query.model, 'model');
    const admission = speech.admit(modelName);
    res.on('close', () => admission.release());
    res.locals.model = admission.model;
    const body = await readRawBody(req, res, opts.maxAudioBytes, 'audio', speech.requestTimeoutMs);
    if (body.length === 0) throw new AcmError('empty_body', 'the request has no body; send a WAV file');
    const rate = speech.resolve(admission.model).audio.sample_rate;
    const audio = await decoder.decode(body, rate, opts.maxAudioSeconds);
    const r = await speech.transcribe(admission.model, audio.samples, { budget, signal: abort.signal, arrivedAt });
    setTimingHeaders(res, r.compute.used, r.timings);
    res.json({ model: r.model, text: r.text, words: r.words, duration: audio.source.seconds, compute: r.compute });
  });
}
