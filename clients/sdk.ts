// TypeScript client for ACM Serve, for Node.js (20+) and browsers: it uses only fetch and
// WebSocket (in Node without a global WebSocket it loads the `ws` package). Results are typed
// as the server writes them; every failure is an AcmError carrying the server's stable code.
// The web page (clients/web) uses this same module.
import type { ComputeReport } from '../server/compute.js';
import type { ErrorCode } from '../server/errors.js';
import type { ModelInfo as ImageModelInfo, Prediction } from '../server/inference.js';
import type { WordTiming } from '../server/speech/ctc.js';
import type { SpeechComputeReport } from '../server/speech/compute.js';
import type { SpeechModelInfo } from '../server/speech/service.js';

export type { ComputeReport, ErrorCode, ImageModelInfo, Prediction, SpeechComputeReport, SpeechModelInfo, WordTiming };

/**
 * Failures the client detects itself, with no server code to carry: no connection, the caller's
 * abort, the client's time limit, an answer that is not the server's JSON, a stream that closed
 * without a final transcript or an error message.
 */
export type ClientErrorCode = 'unreachable' | 'aborted' | 'timeout' | 'bad_response' | 'stream_closed';

export class AcmError extends Error {
  constructor(
    /** The server's stable code (server/errors.ts), or a client-side one when no answer came. */
    readonly code: ErrorCode | ClientErrorCode,
    message: string,
    /** HTTP status of the answer; 0 for WebSocket and client-side failures. */
    readonly status: number,
    /** Seconds the server asked to wait before retrying (Retry-After). */
    readonly retryAfterS?: number,
    /** WebSocket close code (4xxx for server errors), for stream failures. */
    readonly closeCode?: number,
  ) {
    super(message);
    this.name = 'AcmError';
  }
}

export interface Timings { queueMs: number; inferenceMs: number; totalMs: number }

export interface ClassifyResult {
  model: string;
  predictions: Prediction[];
  compute: ComputeReport;
  /** From the X-*-Time-Ms headers; undefined when a proxy dropped them. */
  timings?: Timings;
}

/** Per-frame compute; in a streamed partial only the frames since the previous message, from index `start`. */
export type SpeechCompute = Omit<SpeechComputeReport, 'frames'> & { frames: SpeechComputeReport['frames'] & { start?: number } };

export interface TranscribeResult {
  model: string;
  text: string;
  words: WordTiming[];
  /** Seconds of audio. */
  duration: number;
  compute: SpeechComputeReport;
  timings?: Timings;
}

export interface StreamEvent {
  type: 'partial' | 'final';
  /** The whole transcript so far. */
  text: string;
  /** Only on the final. */
  words?: WordTiming[];
  compute: SpeechCompute;
}

export type ModelInfo = ImageModelInfo | SpeechModelInfo;

export type ImageInput = Uint8Array | ArrayBuffer | Blob;
export type AudioChunk = Uint8Array | ArrayBuffer | ArrayBufferView;
export type AudioEncoding = 'pcm_s16le' | 'pcm_f32le';

export interface RequestOptions {
  /** Compute budget in (0, 1]; the server's default when absent. */
  budget?: number;
  /** Model name from models(); the server's first model of the kind when absent. */
  model?: string;
  signal?: AbortSignal;
}

export interface ClassifyOptions extends RequestOptions {
  topK?: number;
  /** image/png, image/jpeg, ...; sniffed from the bytes (or the Blob's type) when absent. */
  contentType?: string;
}

export interface StreamOptions extends RequestOptions {
  sampleRate: number;
  encoding?: AudioEncoding;
}

/** The browser's WebSocket API, which the `ws` package also offers. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: string | ArrayBufferLike | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ClientOptions {
  /** Server URL; default http://localhost:8080. */
  url?: string;
  /** Per-request time limit in ms for HTTP calls (default 60000; 0 = none). */
  timeoutMs?: number;
  fetch?: typeof fetch;
  WebSocket?: WebSocketConstructor;
}

const OPEN = 1;
/** Audio is held back while this much is still queued on the socket. */
const MAX_BUFFERED = 1 << 20;

/** Media type from the first bytes; undefined when the format is not one the server reads. */
export function sniffImageType(bytes: Uint8Array): string | undefined {
  const b = (i: number): number => bytes[i] ?? -1;
  if (b(0) === 0x89 && b(1) === 0x50 && b(2) === 0x4e && b(3) === 0x47) return 'image/png';
  if (b(0) === 0xff && b(1) === 0xd8 && b(2) === 0xff) return 'image/jpeg';
  if (b(0) === 0x47 && b(1) === 0x49 && b(2) === 0x46) return 'image/gif';
  if (b(0) === 0x52 && b(1) === 0x49 && b(2) === 0x46 && b(3) === 0x46 && b(8) === 0x57 && b(9) === 0x45 && b(10) === 0x42 && b(11) === 0x50) return 'image/webp';
  if ((b(0) === 0x49 && b(1) === 0x49 && b(2) === 0x2a && b(3) === 0) || (b(0) === 0x4d && b(1) === 0x4d && b(2) === 0 && b(3) === 0x2a)) return 'image/tiff';
  return undefined;
}

/** The server's codes are its own to extend; any non-empty code it sends is passed on. */
function errorCodeOf(code: unknown): ErrorCode | undefined {
  return typeof code === 'string' && /^[a-z_]+$/.test(code) ? (code as ErrorCode) : undefined;
}

function toBytes(chunk: AudioChunk): Uint8Array {
  if (chunk instanceof Uint8Array) return chunk;
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return new Uint8Array(chunk);
}

export class AcmClient {
  readonly url: string;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;
  private readonly WebSocketImpl?: WebSocketConstructor;

  constructor(opts: ClientOptions = {}) {
    const url = opts.url ?? 'http://localhost:8080';
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new AcmError('bad_request', `url must be an http(s) URL; got ${JSON.stringify(url)}`, 0);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new AcmError('bad_request', `url must be an http(s) URL; got ${JSON.stringify(url)}`, 0);
    }
    this.url = url.replace(/\/+$/, '');
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    this.fetchImpl = opts.fetch ?? globalThis.fetch.bind(globalThis);
    this.WebSocketImpl = opts.WebSocket;
  }

  async models(opts: { signal?: AbortSignal } = {}): Promise<ModelInfo[]> {
    const res = await this.request('GET', '/v1/models', undefined, {}, opts.signal);
    return ((await this.json(res)) as { models: ModelInfo[] }).models;
  }

  /** True once the server reports every model loaded. */
  async ready(opts: { signal?: AbortSignal } = {}): Promise<boolean> {
    try {
      await this.request('GET', '/readyz', undefined, {}, opts.signal);
      return true;
    } catch (err) {
      if (err instanceof AcmError && err.code === 'not_ready') return false;
      throw err;
    }
  }

  async classify(image: ImageInput, opts: ClassifyOptions = {}): Promise<ClassifyResult> {
    const body = image instanceof Uint8Array || image instanceof ArrayBuffer ? image : new Uint8Array(await image.arrayBuffer());
    const bytes = body instanceof Uint8Array ? body : new Uint8Array(body);
    const blobType = typeof Blob !== 'undefined' && image instanceof Blob && image.type.startsWith('image/') ? image.type : undefined;
    // An unknown format goes out as octet-stream so the server names what it accepts (415).
    const type = opts.contentType ?? sniffImageType(bytes) ?? blobType ?? 'application/octet-stream';
    const query = new URLSearchParams();
    if (opts.topK !== undefined) query.set('top_k', String(opts.topK));
    if (opts.model !== undefined) query.set('model', opts.model);
    const res = await this.request('POST', `/classify${query.toString() ? `?${query.toString()}` : ''}`, bytes,
      { 'Content-Type': type, ...this.budgetHeader(opts.budget) }, opts.signal);
    const result = (await this.json(res)) as ClassifyResult;
    const timings = timingsOf(res.headers);
    return timings ? { ...result, timings } : result;
  }

  /** Transcribes a whole WAV file (POST /transcribe). */
  async transcribe(wav: Uint8Array | ArrayBuffer | Blob, opts: RequestOptions = {}): Promise<TranscribeResult> {
    const bytes = wav instanceof Uint8Array ? wav : new Uint8Array(wav instanceof ArrayBuffer ? wav : await wav.arrayBuffer());
    const query = opts.model !== undefined ? `?${new URLSearchParams({ model: opts.model })}` : '';
    const res = await this.request('POST', `/transcribe${query}`, bytes, { 'Content-Type': 'audio/wav', ...this.budgetHeader(opts.budget) }, opts.signal);
    const result = (await this.json(res)) as TranscribeResult;
    const timings = timingsOf(res.headers);
    return timings ? { ...result, timings } : result;
  }

  /**
   * Streams raw PCM audio over WebSocket /asr and yields the partial transcripts, then the final
   * one. Audio is sent after the server's "ready", with back-pressure; breaking out of the loop
   * or aborting the signal closes the socket.
   */
  async *stream(audio: AsyncIterable<AudioChunk> | Iterable<AudioChunk>, opts: StreamOptions): AsyncGenerator<StreamEvent, void, undefined> {
    const Ctor = this.WebSocketImpl ?? await defaultWebSocket();
    // The stream's model is chosen at the handshake, where the server resolves it and its sample rate.
    const path = `/asr${opts.model !== undefined ? `?${new URLSearchParams({ model: opts.model })}` : ''}`;
    const ws = new Ctor(`${this.url.replace(/^http/, 'ws')}${path}`);
    ws.binaryType = 'arraybuffer';
    const events: StreamEvent[] = [];
    let failure: AcmError | undefined;
    let closed = false;
    let finalSeen = false;
    /** An error message waits for the close that follows it, which carries the close code. */
    let pending: { code: ErrorCode; message: string } | undefined;
    let wake: (() => void) | undefined;
    let ready: (() => void) | undefined;
    const readyP = new Promise<void>((resolve) => { ready = resolve; });
    const notify = (): void => {
      const w = wake;
      wake = undefined;
      w?.();
      if (closed || failure) ready?.();
    };
    const fail = (e: AcmError): void => {
      failure ??= e;
      notify();
    };
    const onAbort = (): void => {
      fail(new AcmError('aborted', 'the stream was aborted', 0));
      ws.close(1000, 'aborted');
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    ws.onopen = () => {
      ws.send(JSON.stringify({ type: 'start', sample_rate: opts.sampleRate, encoding: opts.encoding ?? 'pcm_s16le',
        ...(opts.budget !== undefined ? { budget: opts.budget } : {}) }));
    };
    ws.onmessage = (ev) => {
      let msg: { type?: unknown; text?: unknown; words?: unknown; compute?: unknown; code?: unknown; message?: unknown };
      try {
        msg = JSON.parse(typeof ev.data === 'string' ? ev.data : new TextDecoder().decode(toBytes(ev.data as AudioChunk))) as typeof msg;
      } catch {
        fail(new AcmError('bad_response', 'the server sent a stream message that is not JSON', 0));
        return;
      }
      if (msg.type === 'ready') ready?.();
      else if ((msg.type === 'partial' || msg.type === 'final') && typeof msg.text === 'string') {
        events.push({ type: msg.type, text: msg.text, compute: msg.compute as SpeechCompute,
          ...(Array.isArray(msg.words) ? { words: msg.words as WordTiming[] } : {}) });
        if (msg.type === 'final') finalSeen = true;
      } else if (msg.type === 'error') {
        const code = errorCodeOf(msg.code);
        const message = typeof msg.message === 'string' ? msg.message : 'stream failed';
        if (code) pending = { code, message };
        else fail(new AcmError('bad_response', `stream error without a code: ${message}`, 0));
      }
      notify();
    };
    ws.onerror = (ev) => {
      // The close event that follows carries the code; this only covers connections that never opened
      // (no server, or a refused handshake: browsers hide its answer, the ws package names its status).
      const why = typeof (ev as { message?: unknown } | null)?.message === 'string' ? `: ${(ev as { message: string }).message}` : '';
      if (ws.readyState !== OPEN) fail(new AcmError('unreachable', `cannot open ${this.url}${path}${why}`, 0));
    };
    ws.onclose = (ev) => {
      closed = true;
      if (pending) fail(new AcmError(pending.code, pending.message, 0, undefined, ev.code));
      else if (!finalSeen && !failure) {
        fail(new AcmError('stream_closed', `the stream closed before the final transcript (close code ${ev.code}` +
          `${ev.reason ? `: ${ev.reason}` : ''})`, 0, undefined, ev.code));
      }
      notify();
    };

    const pump = (async () => {
      await readyP;
      for await (const chunk of audio) {
        if (failure || closed) return;
        while (ws.bufferedAmount > MAX_BUFFERED && !failure && !closed) await new Promise((r) => setTimeout(r, 10));
        if (failure || closed) return;
        ws.send(toBytes(chunk));
      }
      if (!failure && !closed) ws.send(JSON.stringify({ type: 'stop' }));
    })().catch((err: unknown) => {
      fail(err instanceof AcmError ? err : new AcmError('bad_request', `reading the audio failed: ${(err as Error).message}`, 0));
      ws.close(1000, 'audio source failed');
    });

    try {
      for (;;) {
        const next = events.shift();
        if (next) {
          yield next;
          if (next.type === 'final') return;
          continue;
        }
        if (failure) throw failure;
        await new Promise<void>((resolve) => { wake = resolve; });
      }
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      if (!closed) ws.close(1000);
      // Not awaited: a live source (a microphone) may not yield again for a while; the pump stops
      // at its next chunk, and its failures are already caught.
      void pump;
    }
  }

  private budgetHeader(budget: number | undefined): Record<string, string> {
    return budget === undefined ? {} : { 'X-Budget': String(budget) };
  }

  private async request(method: string, path: string, body: Uint8Array | undefined, headers: Record<string, string>,
    signal: AbortSignal | undefined): Promise<Response> {
    const signals = [signal, this.timeoutMs > 0 ? AbortSignal.timeout(this.timeoutMs) : undefined].filter((s): s is AbortSignal => !!s);
    const combined = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
    let res: Response;
    try {
      res = await this.fetchImpl(`${this.url}${path}`, { method, headers, ...(body ? { body: body as Uint8Array<ArrayBuffer> } : {}), ...(combined ? { signal: combined } : {}) });
    } catch (err) {
      if (signal?.aborted) throw new AcmError('aborted', `${method} ${path} was aborted`, 0);
      if (combined?.aborted) throw new AcmError('timeout', `${method} ${path} got no answer within ${this.timeoutMs} ms`, 0);
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new AcmError('unreachable', `cannot reach ${this.url}: ${cause?.code ?? cause?.message ?? (err as Error).message}`, 0);
    }
    if (!res.ok) throw await errorFrom(res, `${method} ${path}`);
    return res;
  }

  private async json(res: Response): Promise<unknown> {
    try {
      return await res.json();
    } catch {
      throw new AcmError('bad_response', `the server's answer to ${res.url} is not JSON`, res.status);
    }
  }
}

async function errorFrom(res: Response, what: string): Promise<AcmError> {
  const retry = Number(res.headers.get('retry-after'));
  const retryAfterS = Number.isFinite(retry) && res.headers.has('retry-after') ? retry : undefined;
  let body: unknown;
  try {
    body = await res.json();
  } catch {
    body = undefined;
  }
  const e = (body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  const code = errorCodeOf(e?.code);
  if (code) return new AcmError(code, typeof e?.message === 'string' ? e.message : code, res.status, retryAfterS);
  return new AcmError('bad_response', `${what} answered HTTP ${res.status} without an error code`, res.status, retryAfterS);
}

function timingsOf(h: Headers): Timings | undefined {
  const queueMs = Number(h.get('x-queue-time-ms'));
  const inferenceMs = Number(h.get('x-inference-time-ms'));
  const totalMs = Number(h.get('x-total-time-ms'));
  if (!h.has('x-total-time-ms') || ![queueMs, inferenceMs, totalMs].every(Number.isFinite)) return undefined;
  return { queueMs, inferenceMs, totalMs };
}

async function defaultWebSocket(): Promise<WebSocketConstructor> {
  const global = (globalThis as { WebSocket?: unknown }).WebSocket;
  if (global) return global as WebSocketConstructor;
  // Node 20 has no WebSocket global; the `ws` package offers the same API.
  const mod = await import('ws');
  return mod.WebSocket as unknown as WebSocketConstructor;
}
