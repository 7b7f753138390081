// The /asr WebSocket transport: streaming recognition. It validates the handshake (readiness,
// model, budget, stream slots), then speaks the protocol of server/README.md "/asr": a start
// message, binary PCM frames, a stop message; ready, partial and final messages back; protocol
// errors as {"type":"error","code","message"} followed by the error's 4xxx close code. Decoding
// and batching belong to the speech service; this file only moves messages.
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { Config } from '../config.js';
import { AcmError, shown, toAcmError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { firstUnknown, onlyKnownParams, parseBudget, SPEECH_PARAMS } from '../params.js';
import { decodePcm, PCM_ENCODINGS, type PcmEncoding } from './audio.js';
import type { SpeechComputeReport } from './compute.js';
import type { Recognition, SpeechService } from './service.js';

export const ASR_PATH = '/asr';
/** Audio between two partial messages at most, in seconds. */
const PARTIAL_EVERY_S = 0.5;
/** What a start message may carry; the model is chosen at the handshake (`?model=`). */
const START_FIELDS: readonly string[] = ['type', 'sample_rate', 'encoding', 'budget'];

/**
 * Refuses a field a control message does not take: a misspelt `budget` would otherwise stream at
 * the handshake's budget, and a `model` here would be ignored while the handshake's model runs.
 */
function onlyKnownFields(m: Record<string, unknown>, known: readonly string[], type: string): void {
  const name = firstUnknown(Object.keys(m), known);
  if (name === undefined) return;
  throw new AcmError('protocol_error', `a ${type} message takes the fields ${known.join(', ')}` +
    `${name === 'model' ? ' (choose the model at the handshake: /asr?model=NAME)' : ''}; got ${shown(name)}`);
}

export interface AsrServer {
  /** Fails every open stream with not_ready and stops accepting upgrades. */
  close(): void;
}

/** Answers an upgrade that is refused with a plain HTTP error in the server's JSON shape. */
function refuse(socket: Duplex, err: AcmError): void {
  const body = JSON.stringify(err.toBody());
  const reason = { 400: 'Bad Request', 404: 'Not Found', 503: 'Service Unavailable' }[err.status] ?? 'Error';
  socket.end(`HTTP/1.1 ${err.status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n` +
    (err.retryAfterS !== undefined ? `Retry-After: ${err.retryAfterS}\r\n` : '') + `\r\n${body}`);
}

export function attachAsr(server: Server, speech: SpeechService, config: Config, log: Logger, metrics?: Metrics): AsrServer {
  metrics?.trackStreams(() => speech.openStreams);
  // The hard cap lets an oversized message through far enough to be answered with an error
  // message; past it ws closes the connection itself (1009).
  const wss = new WebSocketServer({ noServer: true, maxPayload: 2 * config.maxMessageBytes, perMessageDeflate: false });
  const open = new Set<AsrStream>();
  let closing = false;

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const url = new URL(req.url ?? '/', 'http://localhost');
    try {
      if (url.pathname !== ASR_PATH) throw new AcmError('not_found', `no WebSocket route ${url.pathname}; streaming is at ${ASR_PATH}`);
      if (closing) throw new AcmError('not_ready', 'the server is shutting down');
      onlyKnownParams(url.searchParams.keys(), SPEECH_PARAMS, `the ${ASR_PATH} handshake`);
      const header = req.headers['x-budget'];
      const values = url.searchParams.getAll('budget');
      if (values.length > 1) throw new AcmError('bad_request', 'budget must be given once, as a single value');
      const budget = typeof header === 'string' ? parseBudget(header, 'X-Budget') : parseBudget(values[0]);
      const model = url.searchParams.get('model') ?? undefined;
      const manifest = speech.resolve(model);
      const release = speech.openStream();
      // ws answers a malformed handshake itself and never calls back: free the slot then too.
      let upgraded = false;
      socket.once('close', () => {
        if (!upgraded) release();
      });
      wss.handleUpgrade(req, socket, head, (ws) => {
        upgraded = true;
        const stream = new AsrStream(ws, speech, config, log, manifest.name, manifest.audio.sample_rate, budget, (outcome) => {
          release();
          open.delete(stream);
          metrics?.streamEnded(outcome);
        });
        open.add(stream);
      });
    } catch (err) {
      const e = toAcmError(err);
      log.warn({ path: url.pathname, code: e.code }, 'WebSocket upgrade refused');
      refuse(socket, e);
    }
  });

  return {
    close(): void {
      closing = true;
      for (const s of open) s.fail(new AcmError('not_ready', 'the server is shutting down'));
      wss.close();
    },
  };
}

type State = 'waiting' | 'streaming' | 'stopping' | 'done';

class AsrStream {
  private state: State = 'waiting';
  private recognition?: Recognition;
  private encoding: PcmEncoding = 'pcm_s16le';
  private chain: Promise<void> = Promise.resolve();
  private idle?: NodeJS.Timeout;
  private readonly abort = new AbortController();
  private lastPartialSamples = 0;
  /** Samples received, counted as frames arrive (the recognition takes them in turn). */
  private received = 0;
  private sentFrames = 0;
  private readonly maxSamples: number;
  private readonly openedAt = performance.now();
  /** How the stream ended, for metrics: final, client_closed, or an error code. */
  private outcome = 'client_closed';

  constructor(private readonly ws: WebSocket, private readonly speech: SpeechService, private readonly config: Config,
    private readonly log: Logger, private readonly model: string, private readonly rate: number,
    private readonly upgradeBudget: number | undefined, private readonly onClose: (outcome: string) => void) {
    this.maxSamples = Math.floor(config.maxStreamSeconds * rate);
    ws.on('message', (data: RawData, isBinary: boolean) => this.onMessage(data, isBinary));
    ws.on('close', (code: number) => {
      this.abort.abort();
      clearTimeout(this.idle);
      if (this.state !== 'done') {
        this.log.info({ model, code, seconds: this.seconds() }, 'asr stream closed by the client');
        this.outcome = 'client_closed';
      }
      this.state = 'done';
      this.onClose(this.outcome);
    });
    ws.on('error', (err) => this.log.warn({ err, model }, 'asr stream error'));
    this.touch();
  }

  /** Sends the error message and closes with the error's code; later events are ignored. */
  fail(err: AcmError): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.outcome = err.code;
    clearTimeout(this.idle);
    this.abort.abort();
    this.log.info({ model: this.model, code: err.code, seconds: this.seconds() }, 'asr stream failed');
    this.send({ type: 'error', code: err.code, message: err.message });
    this.ws.close(err.wsCloseCode, err.code);
  }

  private seconds(): number {
    return Math.round(((this.recognition?.samples ?? 0) / this.rate) * 1000) / 1000;
  }

  private send(msg: object): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(JSON.stringify(msg));
  }

  private touch(): void {
    clearTimeout(this.idle);
    this.idle = setTimeout(() => this.fail(new AcmError('idle_timeout',
      `no message for ${this.config.streamIdleTimeoutMs} ms (ACM_STREAM_IDLE_TIMEOUT_MS); closing the stream`)), this.config.streamIdleTimeoutMs);
  }

  private onMessage(data: RawData, isBinary: boolean): void {
    if (this.state === 'done') return;
    if (this.state !== 'stopping') this.touch();
    try {
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      if (bytes.length > this.config.maxMessageBytes) {
        throw new AcmError('message_too_large', `messages must be at most ${this.config.maxMessageBytes} bytes ` +
          `(ACM_MAX_MESSAGE_BYTES); got ${bytes.length}`);
      }
      if (isBinary) this.onAudio(bytes);
      else this.onControl(bytes.toString('utf8'));
    } catch (err) {
      this.fail(toAcmError(err));
    }
  }

  private onControl(text: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch {
      throw new AcmError('protocol_error', `text messages must be JSON objects; got ${shown(text)}`);
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) throw new AcmError('protocol_error', `text messages must be JSON objects; got ${shown(text)}`);
    const m = msg as Record<string, unknown>;
    switch (m.type) {
      case 'start':
        onlyKnownFields(m, START_FIELDS, 'start');
        return this.onStart(m);
      case 'stop':
        onlyKnownFields(m, ['type'], 'stop');
        return this.onStop();
      default:
        throw new AcmError('protocol_error', `message type must be "start" or "stop"; got ${shown(m.type)}`);
    }
  }

  private onStart(m: Record<string, unknown>): void {
    if (this.state !== 'waiting') throw new AcmError('protocol_error', 'start was already received; send audio frames or stop');
    if (m.sample_rate !== this.rate) {
      throw new AcmError('invalid_audio', `sample_rate must be ${this.rate} (the model's rate; resample on the client); got ${shown(m.sample_rate)}`);
    }
    const encoding = m.encoding ?? 'pcm_s16le';
    if (!PCM_ENCODINGS.includes(encoding as PcmEncoding)) {
      throw new AcmError('invalid_audio', `encoding must be one of ${PCM_ENCODINGS.join(', ')}; got ${shown(encoding)}`);
    }
    let budget = this.upgradeBudget;
    if (m.budget !== undefined) {
      if (typeof m.budget !== 'number') throw new AcmError('invalid_budget', `budget must be a number in (0, 1]; got ${shown(m.budget)}`);
      budget = m.budget;
    }
    const applied = this.speech.budgetFor(this.model, budget);
    this.encoding = encoding as PcmEncoding;
    this.recognition = this.speech.recognition(this.model, applied, this.abort.signal);
    this.state = 'streaming';
    this.send({ type: 'ready', model: this.model, sample_rate: this.rate, encoding: this.encoding, budget: applied });
  }

  private onAudio(bytes: Buffer): void {
    if (this.state === 'waiting') throw new AcmError('protocol_error', 'audio frames must follow a start message');
    if (this.state !== 'streaming') throw new AcmError('protocol_error', 'audio frames must not follow a stop message');
    const r = this.recognition as Recognition;
    const samples = decodePcm(bytes, this.encoding);
    this.received += samples.length;
    if (this.received > this.maxSamples) {
      throw new AcmError('audio_too_large', `a stream may carry at most ${this.config.maxStreamSeconds} s of audio ` +
        `(ACM_MAX_STREAM_SECONDS); got more than ${(this.received / this.rate).toFixed(2)} s`);
    }
    // Each frame joins the recognition in its turn, so a client sending faster than real time
    // still gets a partial for every chunk and every 500 ms of its audio.
    this.then(async () => {
      r.push(samples);
      const decoded = await r.advance(false);
      if (decoded > 0 || r.samples - this.lastPartialSamples >= PARTIAL_EVERY_S * this.rate) this.sendUpdate('partial');
    });
  }

  private onStop(): void {
    if (this.state !== 'streaming') throw new AcmError('protocol_error', this.state === 'waiting' ? 'stop before start' : 'stop was already received');
    this.state = 'stopping';
    // The client has said everything: from here only the server works (each window under the
    // request deadline), so silence is no longer a reason to close.
    clearTimeout(this.idle);
    const r = this.recognition as Recognition;
    this.then(async () => {
      await r.advance(true);
      this.sendUpdate('final');
      this.state = 'done';
      this.outcome = 'final';
      clearTimeout(this.idle);
      this.log.info({ model: this.model, seconds: this.seconds(), ms: Math.round(performance.now() - this.openedAt) }, 'asr stream finished');
      this.ws.close(1000, 'done');
    });
  }

  /** Runs steps one after another, so partials and the final come in audio order. */
  private then(step: () => Promise<void>): void {
    this.chain = this.chain.then(async () => {
      if (this.state === 'done') return;
      try {
        await step();
      } catch (err) {
        this.fail(toAcmError(err));
      }
    });
  }

  /** Partials carry the frames since the previous message; the final carries every frame. */
  private sendUpdate(type: 'partial' | 'final'): void {
    const r = this.recognition as Recognition;
    const compute: SpeechComputeReport = r.compute();
    const all = compute.frames.values;
    const start = type === 'final' ? 0 : this.sentFrames;
    const frames = { frame_ms: compute.frames.frame_ms, start, values: all.slice(start) };
    this.sentFrames = all.length;
    this.lastPartialSamples = r.samples;
    this.send({ type, text: r.text(), ...(type === 'final' ? { words: r.words() } : {}),
      compute: { ...compute, frames } });
  }
}
