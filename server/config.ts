// The server's one configuration. Every knob is declared once in FIELDS with its default, unit,
// bounds, environment variable and CLI flag; loadConfig() resolves flags over environment over
// defaults, validates every field and the combinations that cannot work together, and returns a
// frozen object. Nothing else in the server reads process.env.
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { allowedCpus, parseCpuListSetting, planCpus } from './cpu-affinity.js';

export type ExecutionProvider = 'cpu' | 'cuda';
export type GraphOptimization = 'disabled' | 'basic' | 'extended' | 'all';
export type ExecutionMode = 'sequential' | 'parallel';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  /** TCP port the HTTP server listens on; 0 picks a free port. */
  readonly port: number;
  /** Interface to bind; 0.0.0.0 serves every interface. */
  readonly host: string;
  /** Folder whose sub-folders holding acm.json are loaded as model bundles. */
  readonly modelsDir: string;
  /** Most requests one batch may hold. */
  readonly maxBatchSize: number;
  /** Most tokens one batch may hold (requests x tokens per request); caps a batch before maxBatchSize. */
  readonly maxBatchTokens: number;
  /** How long the oldest queued request may wait for a batch to fill, in milliseconds. */
  readonly maxWaitMs: number;
  /** Most requests queued per model; beyond it requests are refused with queue_full. */
  readonly queueCapacity: number;
  /** Deadline of one request from arrival to answer, in milliseconds. */
  readonly requestTimeoutMs: number;
  /** How long an idle kept-alive HTTP connection stays open, in milliseconds (announced in Keep-Alive: timeout=). */
  readonly keepAliveTimeoutMs: number;
  /** Largest accepted image body, in bytes. */
  readonly maxImageBytes: number;
  /** Largest accepted image, in decoded pixels (width x height): the decompression-bomb guard. */
  readonly maxImagePixels: number;
  /** Largest accepted audio body of POST /transcribe, in bytes. */
  readonly maxAudioBytes: number;
  /** Longest audio POST /transcribe accepts, in seconds. */
  readonly maxAudioSeconds: number;
  /** Most concurrent /asr WebSocket streams; the next upgrade is refused with 503. */
  readonly maxStreams: number;
  readonly speechDecoder: 'bundle' | 'greedy';
  /** Hypotheses the lexicon beam search keeps per frame; undefined: the bundle's `ctc.decoder.beam`. */
  readonly speechBeam: number | undefined;
  /** Longest audio one /asr stream may send, in seconds. */
  readonly maxStreamSeconds: number;
  /** An /asr stream that sends nothing for this long is closed, in milliseconds. */
  readonly streamIdleTimeoutMs: number;
  /** Largest /asr WebSocket message (binary frame or JSON), in bytes. */
  readonly maxMessageBytes: number;
  /** Budget applied when a request names none, in (0, 1]; undefined uses each model's default_budget. */
  readonly defaultBudget: number | undefined;
  /** onnxruntime execution provider. */
  readonly executionProvider: ExecutionProvider;
  /** Threads per onnxruntime session; 0 shares the machine's cores among the workers. */
  readonly intraOpThreads: number;
  /** Threads a session uses to run independent graph branches at once; only with executionMode parallel. */
  readonly interOpThreads: number;
  /** onnxruntime execution mode: nodes one at a time (sequential) or independent branches at once (parallel). */
  readonly executionMode: ExecutionMode;
  /** Whether idle intra-op threads spin (lower latency, CPU burnt while idle) or sleep at once. */
  readonly intraOpSpinning: boolean;
  /** Whether onnxruntime keeps freed CPU buffers in its arena for reuse (faster, holds peak memory). */
  readonly cpuMemArena: boolean;
  /** Worker threads (each with its own session) per model. */
  readonly workers: number;
  /** Batches handed to one worker at a time; above 1 a worker starts its next batch without
   * waiting for the HTTP thread to read the last answer. */
  readonly pipelineDepth: number;
  /** onnxruntime graph optimisation level. */
  readonly graphOptimization: GraphOptimization;
  /** Threads decoding and normalising images for every image model; 0 decodes on the HTTP thread. */
  readonly decodeThreads: number;
  /** Plain PNGs already at the input size are read without libvips (png.ts). */
  readonly directPng: boolean;
  /** Nice value (0-19) of the inference threads; above 0 the HTTP thread wins a contended core. */
  readonly inferenceNice: number;
  /** CPUs (a Linux CPU list) reserved for the HTTP thread; every other thread runs on the rest. */
  readonly httpCpus: string | undefined;
  /** How long shutdown waits for in-flight requests, in milliseconds. */
  readonly shutdownGraceMs: number;
  /** pino log level. */
  readonly logLevel: LogLevel;
}

type Kind =
  | { type: 'int'; min: number; max: number }
  | { type: 'number'; min: number; max: number; minExclusive?: boolean }
  | { type: 'string' }
  | { type: 'cpuList' }
  | { type: 'bool' }
  | { type: 'enum'; values: readonly string[] };

interface Field {
  key: keyof Config;
  env: string;
  flag: string;
  unit: string;
  kind: Kind;
  /** undefined: the field stays unset and its consumer applies its own rule (documented in doc). */
  default: () => string | number | boolean | undefined;
  /** How --help shows an unset default ('unset' when absent). */
  unsetShown?: string;
  doc: string;
}

const MIB = 1024 * 1024;
const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Declaration order is the order of the README table and of --help. */
export const FIELDS: readonly Field[] = [
  { key: 'port', env: 'PORT', flag: '--port', unit: 'port', kind: { type: 'int', min: 0, max: 65535 },
    default: () => 8080, doc: 'HTTP port (0 = any free port)' },
  { key: 'host', env: 'HOST', flag: '--host', unit: 'address', kind: { type: 'string' },
    default: () => '0.0.0.0', doc: 'interface to bind' },
  { key: 'modelsDir', env: 'ACM_MODELS_DIR', flag: '--models-dir', unit: 'path', kind: { type: 'string' },
    default: () => `${REPO_ROOT}models`, doc: 'folder of model bundles' },
  { key: 'maxBatchSize', env: 'ACM_MAX_BATCH_SIZE', flag: '--max-batch-size', unit: 'requests',
    kind: { type: 'int', min: 1, max: 1024 }, default: () => 32, doc: 'most requests per batch' },
  { key: 'maxBatchTokens', env: 'ACM_MAX_BATCH_TOKENS', flag: '--max-batch-tokens', unit: 'tokens',
    kind: { type: 'int', min: 1, max: 1_048_576 }, default: () => 8192,
    doc: 'most tokens per batch (requests x tokens per request)' },
  { key: 'maxWaitMs', env: 'ACM_MAX_WAIT_MS', flag: '--max-wait-ms', unit: 'ms',
    kind: { type: 'int', min: 0, max: 10_000 }, default: () => 0, doc: 'longest wait for a batch to fill while the model is idle' },
  { key: 'queueCapacity', env: 'ACM_QUEUE_CAPACITY', flag: '--queue-capacity', unit: 'requests',
    kind: { type: 'int', min: 1, max: 1_000_000 }, default: () => 256, doc: 'most queued requests per model' },
  { key: 'requestTimeoutMs', env: 'ACM_REQUEST_TIMEOUT_MS', flag: '--request-timeout-ms', unit: 'ms',
    kind: { type: 'int', min: 10, max: 3_600_000 }, default: () => 30_000, doc: 'deadline per request, from its arrival; its body must arrive within it too' },
  { key: 'keepAliveTimeoutMs', env: 'ACM_KEEP_ALIVE_TIMEOUT_MS', flag: '--keep-alive-timeout-ms', unit: 'ms',
    kind: { type: 'int', min: 1000, max: 600_000 }, default: () => 5000,
    doc: 'close a kept-alive HTTP connection idle this long' },
  { key: 'maxImageBytes', env: 'ACM_MAX_IMAGE_BYTES', flag: '--max-image-bytes', unit: 'bytes',
    kind: { type: 'int', min: 1, max: 1024 * MIB }, default: () => 10 * MIB, doc: 'largest image body' },
  { key: 'maxImagePixels', env: 'ACM_MAX_IMAGE_PIXELS', flag: '--max-image-pixels', unit: 'pixels',
    kind: { type: 'int', min: 1, max: 0x3fff * 0x3fff }, default: () => 40_000_000,
    doc: 'largest decoded image (width x height)' },
  { key: 'maxAudioBytes', env: 'ACM_MAX_AUDIO_BYTES', flag: '--max-audio-bytes', unit: 'bytes',
    kind: { type: 'int', min: 44, max: 1024 * MIB }, default: () => 32 * MIB, doc: 'largest WAV body of POST /transcribe' },
  { key: 'maxAudioSeconds', env: 'ACM_MAX_AUDIO_SECONDS', flag: '--max-audio-seconds', unit: 's',
    kind: { type: 'number', min: 0, max: 86_400, minExclusive: true }, default: () => 120, doc: 'longest audio of POST /transcribe' },
  { key: 'maxStreams', env: 'ACM_MAX_STREAMS', flag: '--max-streams', unit: 'streams',
    kind: { type: 'int', min: 1, max: 100_000 }, default: () => 64, doc: 'most concurrent /asr streams' },
  { key: 'maxStreamSeconds', env: 'ACM_MAX_STREAM_SECONDS', flag: '--max-stream-seconds', unit: 's',
    kind: { type: 'number', min: 0, max: 86_400, minExclusive: true }, default: () => 600, doc: 'longest audio of one /asr stream' },
  { key: 'streamIdleTimeoutMs', env: 'ACM_STREAM_IDLE_TIMEOUT_MS', flag: '--stream-idle-timeout-ms', unit: 'ms',
    kind: { type: 'int', min: 10, max: 3_600_000 }, default: () => 15_000, doc: 'close an /asr stream silent this long' },
  { key: 'maxMessageBytes', env: 'ACM_MAX_MESSAGE_BYTES', flag: '--max-message-bytes', unit: 'bytes',
    kind: { type: 'int', min: 1024, max: 64 * MIB }, default: () => MIB, doc: 'largest /asr WebSocket message' },
  { key: 'speechDecoder', env: 'ACM_SPEECH_DECODER', flag: '--speech-decoder', unit: '',
    kind: { type: 'enum', values: ['bundle', 'greedy'] }, default: () => 'bundle',
    doc: "speech decoding: the bundle's lexicon beam search when it has one, or greedy CTC" },
  { key: 'speechBeam', env: 'ACM_SPEECH_BEAM', flag: '--speech-beam', unit: 'hypotheses',
    kind: { type: 'int', min: 1, max: 4096 }, default: () => undefined, unsetShown: '(bundle)',
    doc: "hypotheses the lexicon beam search keeps per frame (unset = the bundle's); fewer decode faster, for more word errors" },
  { key: 'defaultBudget', env: 'ACM_DEFAULT_BUDGET', flag: '--default-budget', unit: 'fraction',
    kind: { type: 'number', min: 0, max: 1, minExclusive: true }, default: () => undefined, unsetShown: '(model)',
    doc: "budget when a request names none (unset = the model's default_budget)" },
  { key: 'executionProvider', env: 'ACM_EXECUTION_PROVIDER', flag: '--execution-provider', unit: '',
    kind: { type: 'enum', values: ['cpu', 'cuda'] }, default: () => 'cpu', doc: 'onnxruntime provider' },
  { key: 'intraOpThreads', env: 'ACM_INTRA_OP_THREADS', flag: '--intra-op-threads', unit: 'threads',
    kind: { type: 'int', min: 0, max: 256 }, default: () => 0,
    doc: 'threads per session (0 = cores / workers; on 2 cores, 1)' },
  { key: 'interOpThreads', env: 'ACM_INTER_OP_THREADS', flag: '--inter-op-threads', unit: 'threads',
    kind: { type: 'int', min: 1, max: 256 }, default: () => 1,
    doc: 'threads per session for independent graph branches (needs execution mode parallel when > 1)' },
  { key: 'executionMode', env: 'ACM_EXECUTION_MODE', flag: '--execution-mode', unit: '',
    kind: { type: 'enum', values: ['sequential', 'parallel'] }, default: () => 'sequential',
    doc: 'onnxruntime execution mode' },
  { key: 'intraOpSpinning', env: 'ACM_INTRA_OP_SPINNING', flag: '--intra-op-spinning', unit: '',
    kind: { type: 'bool' }, default: () => true, doc: 'idle intra-op threads spin before sleeping' },
  { key: 'cpuMemArena', env: 'ACM_CPU_MEM_ARENA', flag: '--cpu-mem-arena', unit: '',
    kind: { type: 'bool' }, default: () => true, doc: "onnxruntime's CPU memory arena" },
  { key: 'workers', env: 'ACM_WORKERS', flag: '--workers', unit: 'threads',
    kind: { type: 'int', min: 1, max: 64 }, default: () => 1, doc: 'inference worker threads per model' },
  { key: 'pipelineDepth', env: 'ACM_PIPELINE_DEPTH', flag: '--pipeline-depth', unit: 'batches',
    kind: { type: 'int', min: 1, max: 4 }, default: () => 1,
    doc: 'batches handed to each worker at a time (2: the next starts without waiting for the HTTP thread)' },
  { key: 'graphOptimization', env: 'ACM_GRAPH_OPTIMIZATION', flag: '--graph-optimization', unit: '',
    kind: { type: 'enum', values: ['disabled', 'basic', 'extended', 'all'] }, default: () => 'all',
    doc: 'onnxruntime graph optimisation level' },
  { key: 'decodeThreads', env: 'ACM_DECODE_THREADS', flag: '--decode-threads', unit: 'threads',
    kind: { type: 'int', min: 0, max: 64 }, default: () => 1,
    doc: 'threads decoding images off the HTTP thread (0 = on the HTTP thread)' },
  { key: 'directPng', env: 'ACM_DIRECT_PNG', flag: '--direct-png', unit: '', kind: { type: 'bool' }, default: () => true,
    doc: 'read plain PNGs already at the input size without libvips (same pixels, less CPU)' },
  { key: 'inferenceNice', env: 'ACM_INFERENCE_NICE', flag: '--inference-nice', unit: '',
    kind: { type: 'int', min: 0, max: 19 }, default: () => 0,
    doc: 'nice value of the inference threads (0 = as the server)' },
  { key: 'httpCpus', env: 'ACM_HTTP_CPUS', flag: '--http-cpus', unit: 'CPU list', kind: { type: 'cpuList' },
    default: () => undefined,
    doc: 'CPUs reserved for the HTTP thread, e.g. 0; all other threads run on the rest (unset = all share all; Linux, needs taskset)' },
  { key: 'shutdownGraceMs', env: 'ACM_SHUTDOWN_GRACE_MS', flag: '--shutdown-grace-ms', unit: 'ms',
    kind: { type: 'int', min: 0, max: 600_000 }, default: () => 10_000,
    doc: 'wait for in-flight requests on SIGTERM' },
  { key: 'logLevel', env: 'LOG_LEVEL', flag: '--log-level', unit: '',
    kind: { type: 'enum', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] },
    default: () => 'info', doc: "log level; onnxruntime's own lines go to stderr: its errors (at every level but fatal and silent), its warnings at debug and trace, its info at trace" },
];

/** Every problem found, one per line, each with its remedy, so an operator fixes all in one go. */
export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

function parseValue(field: Field, raw: string, source: string): { value?: string | number | boolean; problem?: string } {
  const { kind } = field;
  const named = `${source} must be`;
  switch (kind.type) {
    case 'string':
      return raw.trim() === '' ? { problem: `${named} a non-empty string; got ""` } : { value: raw };
    case 'cpuList':
      try {
        parseCpuListSetting(source, raw);
        return { value: raw.trim() };
      } catch (err) {
        return { problem: (err as Error).message };
      }
    case 'bool':
      if (raw === 'true' || raw === '1') return { value: true };
      if (raw === 'false' || raw === '0') return { value: false };
      return { problem: `${named} one of true|false|1|0; got ${JSON.stringify(raw)}` };
    case 'enum':
      return kind.values.includes(raw)
        ? { value: raw }
        : { problem: `${named} one of ${kind.values.join('|')}; got ${JSON.stringify(raw)}` };
    case 'int': {
      const n = /^-?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(n) || n < kind.min || n > kind.max) {
        return { problem: `${named} an integer in [${kind.min}, ${kind.max}] (${field.unit}); got ${JSON.stringify(raw)}` };
      }
      return { value: n };
    }
    case 'number': {
      const n = raw.trim() === '' ? NaN : Number(raw);
      const lowOk = kind.minExclusive ? n > kind.min : n >= kind.min;
      if (!Number.isFinite(n) || !lowOk || n > kind.max) {
        const open = kind.minExclusive ? '(' : '[';
        return { problem: `${named} a number in ${open}${kind.min}, ${kind.max}]; got ${JSON.stringify(raw)}` };
      }
      return { value: n };
    }
  }
}

/** `--flag value` and `--flag=value`; unknown flags are problems, not silently ignored. */
function parseArgv(argv: readonly string[], problems: string[]): Map<string, string> {
  const out = new Map<string, string>();
  const known = new Set(FIELDS.map((f) => f.flag));
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    const eq = arg.indexOf('=');
    const flag = eq >= 0 ? arg.slice(0, eq) : arg;
    if (!known.has(flag)) {
      problems.push(`unknown argument ${JSON.stringify(arg)}; known flags: ${[...known].join(', ')}`);
      continue;
    }
    if (eq >= 0) {
      out.set(flag, arg.slice(eq + 1));
    } else if (i + 1 < argv.length) {
      out.set(flag, argv[++i] ?? '');
    } else {
      problems.push(`${flag} needs a value`);
    }
  }
  return out;
}

/** Combinations that pass field by field yet cannot work; each message says how to fix it. */
function crossCheck(c: Config, problems: string[], cpus: () => readonly number[] | undefined): void {
  if (c.queueCapacity < c.maxBatchSize) {
    problems.push(`ACM_QUEUE_CAPACITY (${c.queueCapacity}) is below ACM_MAX_BATCH_SIZE (${c.maxBatchSize}), ` +
      `so a full batch could never form; raise ACM_QUEUE_CAPACITY to at least ${c.maxBatchSize} or lower ACM_MAX_BATCH_SIZE`);
  }
  if (c.maxWaitMs >= c.requestTimeoutMs) {
    problems.push(`ACM_MAX_WAIT_MS (${c.maxWaitMs}) is not below ACM_REQUEST_TIMEOUT_MS (${c.requestTimeoutMs}), ` +
      `so requests could expire while waiting for a batch; lower ACM_MAX_WAIT_MS or raise ACM_REQUEST_TIMEOUT_MS`);
  }
  if (c.interOpThreads > 1 && c.executionMode === 'sequential') {
    problems.push(`ACM_INTER_OP_THREADS (${c.interOpThreads}) has no effect with ACM_EXECUTION_MODE=sequential; ` +
      `set ACM_EXECUTION_MODE=parallel or ACM_INTER_OP_THREADS=1`);
  }
  const cores = availableParallelism();
  const interOp = c.executionMode === 'parallel' ? c.interOpThreads : 0;
  if (c.executionProvider === 'cpu' && (c.intraOpThreads + interOp) * c.workers > cores * 4) {
    const what = interOp > 0 ? 'ACM_WORKERS x (ACM_INTRA_OP_THREADS + ACM_INTER_OP_THREADS)' : 'ACM_WORKERS x ACM_INTRA_OP_THREADS';
    const counts = interOp > 0 ? `${c.workers} x (${c.intraOpThreads} + ${interOp})` : `${c.workers} x ${c.intraOpThreads}`;
    problems.push(`${what} (${counts}) oversubscribes ` +
      `${cores} cores more than 4 times over; lower either, or set ACM_INTRA_OP_THREADS=0 to share the cores`);
  }
  // Where the platform does not report CPU affinity the server warns at start and ignores it.
  const allowed = c.httpCpus === undefined ? undefined : cpus();
  if (c.httpCpus !== undefined && allowed !== undefined) {
    try {
      planCpus(c.httpCpus, allowed);
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
}

/**
 * Builds the configuration from an environment and CLI arguments (flags win over environment).
 * Throws ConfigError listing every problem. `cpus` gives the CPUs the process may run on (checked
 * against ACM_HTTP_CPUS; undefined where the platform does not say).
 */
export function loadConfig(env: Record<string, string | undefined> = process.env,
  argv: readonly string[] = process.argv.slice(2),
  cpus: () => readonly number[] | undefined = allowedCpus): Config {
  const problems: string[] = [];
  const flags = parseArgv(argv, problems);
  const values: Record<string, string | number | boolean | undefined> = {};
  for (const field of FIELDS) {
    const fromFlag = flags.get(field.flag);
    const fromEnv = env[field.env];
    if (fromFlag !== undefined || (fromEnv !== undefined && fromEnv !== '')) {
      const source = fromFlag !== undefined ? field.flag : field.env;
      const parsed = parseValue(field, fromFlag ?? fromEnv ?? '', source);
      if (parsed.problem !== undefined) problems.push(parsed.problem);
      values[field.key] = parsed.value ?? field.default();
    } else {
      values[field.key] = field.default();
    }
  }
  const config = values as unknown as Config;
  if (problems.length === 0) crossCheck(config, problems, cpus);
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

/**
 * Threads each session gets: the configured number, or an even share of the cores. On one or two
 * cores one core is left out of the share: the HTTP thread and image decoding need it, and
 * onnxruntime's threads on every core delayed /healthz and lowered throughput there.
 */
export function sessionThreads(c: Config, cores = availableParallelism()): number {
  if (c.intraOpThreads > 0) return c.intraOpThreads;
  const shared = cores <= 2 ? cores - 1 : cores;
  return Math.max(1, Math.floor(shared / c.workers));
}

/** Usage text for --help, generated from FIELDS so it cannot drift. */
export function usage(): string {
  const rows = FIELDS.map((f) => `  ${f.flag.padEnd(22)} ${f.env.padEnd(24)} ${String(f.default() ?? f.unsetShown ?? 'unset').padEnd(10)} ${f.doc}`);
  return `usage: node dist/server/main.js [flags]\n  flag                   env                      default    meaning\n${rows.join('\n')}`;
}
