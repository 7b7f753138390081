// The server's one error map. Every failure a client can see is one of these codes; each code has
// exactly one HTTP status and one WebSocket close code, so transports never invent their own.

interface ErrorSpec {
  /** HTTP status the code answers with. */
  readonly http: number;
  /** WebSocket close code (4000-4999 is the application range) for streaming transports. */
  readonly ws: number;
}

export const ERROR_SPECS = {
  bad_request: { http: 400, ws: 4400 },
  invalid_budget: { http: 400, ws: 4401 },
  empty_body: { http: 400, ws: 4402 },
  invalid_image: { http: 400, ws: 4403 },
  unknown_model: { http: 404, ws: 4404 },
  not_found: { http: 404, ws: 4405 },
  method_not_allowed: { http: 405, ws: 4411 },
  invalid_audio: { http: 400, ws: 4406 },
  protocol_error: { http: 400, ws: 4407 },
  idle_timeout: { http: 408, ws: 4408 },
  body_timeout: { http: 408, ws: 4410 },
  message_too_large: { http: 413, ws: 4409 },
  image_too_large: { http: 413, ws: 4413 },
  audio_too_large: { http: 413, ws: 4414 },
  unsupported_media_type: { http: 415, ws: 4415 },
  client_closed: { http: 499, ws: 4499 },
  internal: { http: 500, ws: 4500 },
  queue_full: { http: 503, ws: 4503 },
  not_ready: { http: 503, ws: 4504 },
  deadline_exceeded: { http: 504, ws: 4505 },
  too_many_streams: { http: 503, ws: 4506 },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_SPECS;

export interface ErrorBody {
  error: { code: ErrorCode; message: string };
}

/** A failure with a stable code. Only messages of AcmError reach clients verbatim. */
export class AcmError extends Error {
  readonly status: number;
  readonly wsCloseCode: number;

  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Seconds a client should wait before retrying; sent as Retry-After. */
    readonly retryAfterS?: number,
  ) {
    super(message);
    this.name = 'AcmError';
    this.status = ERROR_SPECS[code].http;
    this.wsCloseCode = ERROR_SPECS[code].ws;
  }

  toBody(): ErrorBody {
    return { error: { code: this.code, message: this.message } };
  }
}

/** Shows a client-supplied value in a message, bounded so a huge value cannot bloat logs. */
export function shown(value: unknown): string {
  const text = typeof value === 'string' ? JSON.stringify(value) : String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

interface HttpLikeError {
  status?: unknown;
  statusCode?: unknown;
  type?: unknown;
  expose?: unknown;
  message?: unknown;
}

/**
 * Maps anything thrown into the error map. Errors raised by express or its body parsers carry a
 * status; 4xx ones keep their status family, everything unknown becomes `internal` with a
 * generic message so internals never leak.
 */
export function toAcmError(err: unknown): AcmError {
  if (err instanceof AcmError) return err;
  const e = (typeof err === 'object' && err !== null ? err : {}) as HttpLikeError;
  const status = typeof e.status === 'number' ? e.status : typeof e.statusCode === 'number' ? e.statusCode : 500;
  const message = typeof e.message === 'string' && e.expose !== false ? e.message : 'bad request';
  if (status === 413 || e.type === 'entity.too.large') return new AcmError('image_too_large', message);
  if (status === 415) return new AcmError('unsupported_media_type', message);
  if (status === 404) return new AcmError('not_found', message);
  if (status >= 400 && status < 500) return new AcmError('bad_request', message);
  return new AcmError('internal', 'internal error');
}
