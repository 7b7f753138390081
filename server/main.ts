// Process entry: configuration, logging, HTTP listener, model loading, graceful shutdown.
// The listener opens before the models load so /healthz answers at once and /readyz reports
// loading; a model that cannot load stops the process with the reason.
import type { AddressInfo } from 'node:net';
import { listSupportedBackends } from 'onnxruntime-node';
import { scanBundles } from './bundle.js';
import { allowedCpus, planCpus, HttpCpuReservation } from './cpu-affinity.js';
import { ConfigError, loadConfig, sessionThreads, usage, type Config } from './config.js';
import { createApp, httpServer } from './http/app.js';
import { InferenceService } from './inference.js';
import { createLogger, type Logger } from './logger.js';
import { Metrics } from './metrics.js';
import { ortBackends } from './ort-backend.js';
import { disableOrtTelemetry } from './ort-telemetry.js';
import { attachAsr } from './speech/asr-socket.js';
import { hasSpeechBundles, scanSpeechBundles, SPEECH_TASK } from './speech/bundle.js';
import { SpeechService } from './speech/service.js';

function configOrExit(): Config {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    console.log(usage());
    process.exit(0);
  }
  try {
    return loadConfig(process.env, process.argv.slice(2));
  } catch (err) {
    console.error(err instanceof ConfigError ? err.message : String(err));
    process.exit(2);
  }
}

/** CUDA needs the CUDA build of onnxruntime-node; say so before any worker tries and fails. */
function checkProvider(config: Config): void {
  if (config.executionProvider !== 'cuda') return;
  const cuda = listSupportedBackends().find((b) => b.name === 'cuda');
  if (!cuda?.bundled) {
    throw new Error('ACM_EXECUTION_PROVIDER=cuda but this onnxruntime-node install has no CUDA provider; reinstall it ' +
      'with `npm install onnxruntime-node --onnxruntime-node-install=cuda` (see README "GPU (CUDA)") or set ACM_EXECUTION_PROVIDER=cpu');
  }
}

async function loadModels(config: Config, inference: InferenceService, speech: SpeechService | undefined,
  metrics: Metrics, log: Logger): Promise<void> {
  checkProvider(config);
  const scan = await scanBundles(config.modelsDir);
  for (const s of scan.skipped) {
    // Speech bundles are the speech service's; only bundles nobody serves are worth a warning.
    if (!s.reason.includes(JSON.stringify(SPEECH_TASK))) log.warn({ dir: s.dir }, `bundle skipped: ${s.reason}`);
  }
  if (scan.bundles.length === 0) {
    throw new Error(`no image-classification bundle (a folder with acm.json) under ${config.modelsDir}; set ACM_MODELS_DIR`);
  }
  const threads = sessionThreads(config);
  const telemetryOff = disableOrtTelemetry();
  log.info({ provider: config.executionProvider, workers: config.workers, intraOpThreads: threads,
    interOpThreads: config.interOpThreads, executionMode: config.executionMode, intraOpSpinning: config.intraOpSpinning,
    cpuMemArena: config.cpuMemArena, graphOptimization: config.graphOptimization, inferenceNice: config.inferenceNice,
    onnxruntimeTelemetry: telemetryOff ? 'off' : 'on' },
    `inference runs on the ${config.executionProvider.toUpperCase()} execution provider`);
  const backends = ortBackends(config, log, (model) => metrics.workerRestarted(model));
  await Promise.all([inference.load(scan.bundles, backends),
    speech ? scanSpeechBundles(config.modelsDir).then((bundles) => speech.load(bundles, backends)) : undefined]);
}

function main(): void {
  const config = configOrExit();
  const log = createLogger(config.logLevel);
  const metrics = new Metrics();
  const inference = new InferenceService(config, metrics, log);
  // Speech is served only when the models folder holds a speech bundle.
  const speech = hasSpeechBundles(config.modelsDir) ? new SpeechService(config, metrics, log) : undefined;
  const app = createApp({ inference, metrics, log, maxImageBytes: config.maxImageBytes,
    ...(speech ? { speech: { service: speech, maxAudioBytes: config.maxAudioBytes, maxAudioSeconds: config.maxAudioSeconds } } : {}) });
  const server = httpServer(app);
  const asr = speech ? attachAsr(server, speech, config, log, metrics) : undefined;
  // Bounded socket lifetimes: a slow or stalled client cannot hold a connection forever.
  server.requestTimeout = config.requestTimeoutMs + 5000;
  server.headersTimeout = Math.min(60_000, server.requestTimeout);
  // Node announces it to clients as Keep-Alive: timeout=<s>; behind a proxy or load balancer it
  // must exceed the proxy's own idle timeout, or the proxy may send on a connection being closed.
  server.keepAliveTimeout = config.keepAliveTimeoutMs;

  server.listen(config.port, config.host, () => {
    // The bound port, not the configured one: with PORT=0 only this line says where to connect.
    const port = (server.address() as AddressInfo).port;
    log.info({ host: config.host, port, modelsDir: config.modelsDir }, 'listening');
  });
  server.on('error', (err) => {
    log.fatal({ err }, 'HTTP server failed');
    process.exit(1);
  });

  let reservation: HttpCpuReservation | undefined;
  if (config.httpCpus !== undefined) {
    const allowed = allowedCpus();
    if (allowed === undefined) {
      log.warn({ httpCpus: config.httpCpus }, 'ACM_HTTP_CPUS is set but this platform does not report CPU affinity; ignored');
    } else {
      // loadConfig has already refused a list this process cannot apply.
      const plan = planCpus(config.httpCpus, allowed);
      log.info({ httpCpus: plan.http, otherCpus: plan.rest }, 'HTTP thread has CPUs of its own');
      reservation = new HttpCpuReservation(plan, log);
      reservation.start();
    }
  }

  let stopping = false;
  loadModels(config, inference, speech, metrics, log).then(
    // Threads made while loading (onnxruntime's pools) get their CPUs now, not at the next interval.
    () => void reservation?.apply(),
  ).then(
    () => log.info({ models: [...inference.listModels(), ...(speech?.listModels() ?? [])].map((m) => m.name) }, 'ready'),
    (err: unknown) => {
      // A signal during loading stops the load too; the shutdown path reports and exits.
      if (stopping) return;
      log.fatal({ err }, `start-up failed: ${(err as Error).message}`);
      process.exit(1);
    },
  );

  const stop = (signal: string): void => {
    if (stopping) {
      log.warn({ signal }, 'second signal; exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal, graceMs: config.shutdownGraceMs }, 'shutting down: draining in-flight requests');
    // Stop accepting connections first; requests already admitted finish within the grace period.
    server.close();
    asr?.close();
    Promise.all([inference.shutdown(config.shutdownGraceMs), speech?.shutdown(config.shutdownGraceMs)]).then(
      () => {
        server.closeAllConnections();
        log.info('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
}

main();
