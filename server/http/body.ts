// Reading a body (an image; a WAV file for /transcribe) out of a request without ever holding
// more than the byte limit: a raw body is streamed with a running count, a multipart image body
// goes through busboy with the same limit on its one file. A body that breaks a limit ends the connection (Connection: close) so Node does
// not keep draining an unbounded upload after the answer. A body must also arrive within the
// request's deadline: a client that stalls mid-upload holds an admission slot until then, and
// is answered body_timeout, not dropped by Node's own socket timer with a bare status line.
import type { Request, Response } from 'express';
import busboy from 'busboy';
import { AcmError } from '../errors.js';
import { CLASSIFY_PARAMS } from '../params.js';

export interface MultipartImage {
  readonly image: Buffer;
  /** Small text fields sent beside the image (budget, top_k, model). */
  readonly fields: ReadonlyMap<string, string>;
}

const FORM_FIELDS = new Set(CLASSIFY_PARAMS);
/** Room for multipart boundaries, part headers and the small text fields beside the image. */
const MULTIPART_OVERHEAD = 64 * 1024;

/** What a body holds; names the error (image_too_large, audio_too_large) and its message. */
export type BodyKind = 'image' | 'audio';

function tooLarge(res: Response, limit: number, got: string, kind: BodyKind = 'image'): AcmError {
  res.setHeader('Connection', 'close');
  return new AcmError(`${kind}_too_large`, `${kind} body must be at most ${limit} bytes; got ${got}`);
}

function clientClosed(): AcmError {
  return new AcmError('client_closed', 'the client closed the connection while sending the body');
}

/**
 * Fails a body read that has not finished `timeoutMs` after it started: body_timeout, naming the
 * deadline and how much of the body came. Returns the cancel function for when the read ends.
 */
function bodyDeadline(req: Request, res: Response, timeoutMs: number | undefined, received: () => number,
  fail: (err: AcmError) => void): () => void {
  if (timeoutMs === undefined) return () => undefined;
  const timer = setTimeout(() => {
    res.setHeader('Connection', 'close');
    const declared = Number(req.headers['content-length']);
    const of = Number.isFinite(declared) ? ` of ${declared}` : '';
    fail(new AcmError('body_timeout', `the request body did not arrive within ${timeoutMs} ms (ACM_REQUEST_TIMEOUT_MS); ` +
      `received ${received()}${of} bytes`));
  }, timeoutMs);
  return () => clearTimeout(timer);
}

/**
 * Tells a client waiting on `Expect: 100-continue` to send its body now. Only a server built by
 * httpServer leaves that to the route; elsewhere Node has already answered 100 Continue.
 */
function acceptBody(req: Request, res: Response): void {
  if (req.headers.expect?.toLowerCase() === '100-continue' && !res.headersSent) res.writeContinue();
}

/** A body whose declared length is already over the limit is refused from the header alone. */
function declaredTooLarge(req: Request, res: Response, limit: number, overhead: number, kind: BodyKind = 'image'): AcmError | undefined {
  const declared = Number(req.headers['content-length']);
  return Number.isFinite(declared) && declared > limit + overhead ? tooLarge(res, limit, `Content-Length ${declared}`, kind) : undefined;
}

/**
 * Reads a raw body of at most `limit` bytes; a declared or actual body past it is refused without
 * reading on, and one still arriving after `timeoutMs` fails with body_timeout.
 */
export function readRawBody(req: Request, res: Response, limit: number, kind: BodyKind = 'image', timeoutMs?: number): Promise<Buffer> {
  const early = declaredTooLarge(req, res, limit, 0, kind);
  if (early) return Promise.reject(early);
  acceptBody(req, res);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    // A refusal mid-body: stop listening and reading; the error handler closes the connection.
    const stop = (err: AcmError): void => {
      cleanup();
      req.pause();
      reject(err);
    };
    const cancelDeadline = bodyDeadline(req, res, timeoutMs, () => size, stop);
    const cleanup = (): void => {
      cancelDeadline();
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        stop(tooLarge(res, limit, `more than ${limit}`, kind));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(Buffer.concat(chunks, size));
    };
    const onError = (): void => {
      cleanup();
      reject(clientClosed());
    };
    const onClose = (): void => {
      if (!req.complete) {
        cleanup();
        reject(clientClosed());
      }
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

/**
 * Reads multipart/form-data: the file field `image` (at most `limit` bytes) and small text fields;
 * a body still arriving after `timeoutMs` fails with body_timeout.
 */
export function readMultipartImage(req: Request, res: Response, limit: number, timeoutMs?: number): Promise<MultipartImage> {
  const early = declaredTooLarge(req, res, limit, MULTIPART_OVERHEAD);
  if (early) return Promise.reject(early);
  return new Promise((resolve, reject) => {
    let bb: busboy.Busboy;
    try {
      bb = busboy({ headers: req.headers, limits: { files: 1, fileSize: limit, fields: 8, fieldSize: 1024, parts: 16, headerPairs: 64 } });
    } catch (err) {
      reject(new AcmError('bad_request', `multipart body cannot be read: ${(err as Error).message}`));
      return;
    }
    let image: Buffer | undefined;
    let failed: AcmError | undefined;
    let received = 0;
    const fields = new Map<string, string>();
    const fail = (err: AcmError): void => {
      cancelDeadline();
      if (failed) return;
      failed = err;
      req.unpipe(bb);
      req.pause();
      reject(err);
    };
    const cancelDeadline = bodyDeadline(req, res, timeoutMs, () => received, fail);
    req.on('data', (chunk: Buffer) => { received += chunk.length; });
    bb.on('file', (name, stream) => {
      if (name !== 'image') {
        stream.resume();
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('data', (chunk: Buffer) => {
        size += chunk.length;
        chunks.push(chunk);
      });
      stream.on('limit', () => fail(tooLarge(res, limit, `more than ${limit}`)));
      stream.on('end', () => {
        if (!failed) image = Buffer.concat(chunks, size);
      });
    });
    bb.on('field', (name, value) => {
      if (FORM_FIELDS.has(name)) fields.set(name, value);
    });
    bb.on('error', (err: Error) => fail(new AcmError('bad_request', `multipart body cannot be read: ${err.message}`)));
    bb.on('close', () => {
      cancelDeadline();
      if (failed) return;
      if (image === undefined) {
        fail(new AcmError('empty_body', 'multipart body has no file field "image"; send the image as field image'));
        return;
      }
      resolve({ image, fields });
    });
    req.on('close', () => {
      if (!req.complete) fail(clientClosed());
    });
    // Only now, with a readable multipart head, is the body asked for.
    acceptBody(req, res);
    req.pipe(bb);
  });
}
