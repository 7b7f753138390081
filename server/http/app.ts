// The HTTP transport: routes, per-request log line and metrics, and the one error handler that
// turns anything thrown (ours, express's, a body parser's) into the JSON error shape. No HTML
// error page is ever sent.
import { createServer, type Server } from 'node:http';
import express, { type NextFunction, type Request, type Response } from 'express';
import { AcmError, toAcmError } from '../errors.js';
import type { InferenceService } from '../inference.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { registerSpeechRoutes, type TranscribeRouteOptions } from '../speech/http.js';
import type { SpeechService } from '../speech/service.js';
import { classifyHandler } from './classify.js';
import { isV2Path, registerKserveRoutes } from './kserve.js';
import { openApiDocument, openApiPaths, registeredRoutes, type RegisteredRoute } from './openapi.js';
import { registerWebRoutes } from './web.js';

export interface AppServices {
  readonly inference: InferenceService;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly maxImageBytes: number;
  /** Present when speech bundles are configured: adds POST /transcribe and speech models to the listing. */
  readonly speech?: { readonly service: SpeechService } & TranscribeRouteOptions;
}

/** Most elements in the batch dimension of one KServe v2 request; each is admitted like one request. */
const MAX_V2_BATCH = 64;

/**
 * The methods each route path answers, for telling a wrong method (405, with Allow) from a wrong
 * path (404). A path parameter matches one segment, as in the routes themselves.
 */
function methodTable(routes: readonly RegisteredRoute[]): (path: string) => string[] {
  const table: { pattern: RegExp; method: string }[] = [];
  for (const r of routes) {
    for (const template of openApiPaths(r.path)) {
      const source = template.split(/\{\w+\}/).map((part) => part.replace(/[.*+?^$()|[\]\\]/g, '\\$&')).join('[^/]+');
      // As Express routes: any letter case, and a trailing slash allowed.
      table.push({ pattern: new RegExp(`^${source}/?$`, 'i'), method: r.method });
    }
  }
  return (path) => {
    const methods = new Set(table.filter((t) => t.pattern.test(path)).map((t) => t.method));
    // Express answers HEAD wherever it answers GET.
    if (methods.has('GET')) methods.add('HEAD');
    return [...methods].sort();
  };
}

/** Route label for metrics: the matched pattern, never the raw URL, so label cardinality stays bounded. */
function routeOf(req: Request): string {
  const path = (req.route as { path?: unknown } | undefined)?.path;
  return typeof path === 'string' ? path : 'unmatched';
}

/**
 * The HTTP server for an app. A client that sends `Expect: 100-continue` (curl does for large
 * uploads) is told to send its body only when a route starts reading it (body.ts), so a request
 * refused from its head (a bad budget, an unknown model, a full queue) costs no upload.
 */
export function httpServer(app: express.Express): Server {
  const server = createServer(app);
  server.on('checkContinue', (req, res) => { app(req, res); });
  return server;
}

export function createApp(s: AppServices): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');

  app.use((req: Request, res: Response, next: NextFunction) => {
    const start = performance.now();
    res.on('close', () => {
      const seconds = (performance.now() - start) / 1000;
      const status = res.writableFinished ? res.statusCode : 499;
      const route = routeOf(req);
      s.metrics.observeHttp(route, req.method, status, seconds);
      const code = res.locals.errorCode as string | undefined;
      const line = { method: req.method, path: req.path, route, status, ms: Math.round(seconds * 1e4) / 10,
        model: res.locals.model as string | undefined, code };
      // Overload and readiness answers (503, 504) are expected under load; only failures are errors.
      if (status >= 500 && (code === 'internal' || code === undefined)) s.log.error(line, 'request failed');
      else if (status >= 500) s.log.warn(line, 'request refused');
      else s.log.info(line, 'request');
    });
    next();
  });

  app.post('/classify', classifyHandler(s.inference, { maxImageBytes: s.maxImageBytes }));

  app.get('/v1/models', (_req, res) => {
    res.json({ models: [...s.inference.listModels(), ...(s.speech?.service.listModels() ?? [])] });
  });

  // Liveness: answering at all is the signal.
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  // Readiness: only once every model runs, so a load balancer sends no traffic to a loading server.
  app.get('/readyz', (_req, res) => {
    if (!s.inference.ready || (s.speech && !s.speech.service.ready)) throw new AcmError('not_ready', 'models are still loading');
    res.json({ status: 'ready' });
  });

  app.get('/metrics', async (_req, res) => {
    res.setHeader('Content-Type', s.metrics.registry.contentType);
    res.send(await s.metrics.registry.metrics());
  });

  registerKserveRoutes(app, s.inference, { maxImageBytes: s.maxImageBytes, maxBatch: MAX_V2_BATCH,
    servedElsewhere: (name) => (s.speech?.service.listModels().some((m) => m.name === name)
      ? `a speech model: transcribe with POST /transcribe?model=${name} or stream over /asr?model=${name}` : undefined) });
  registerWebRoutes(app);
  if (s.speech) registerSpeechRoutes(app, s.speech.service, s.speech);

  // Built on first request, once every route (including ones added after createApp) is registered.
  let openApi: unknown;
  app.get('/openapi.json', (_req, res) => {
    openApi ??= openApiDocument(registeredRoutes(app));
    res.json(openApi);
  });

  // A known path asked with another method: 405 with Allow (RFC 9110), and OPTIONS answers with Allow alone.
  let methodsOf: ((path: string) => string[]) | undefined;
  app.use((req: Request, res: Response) => {
    methodsOf ??= methodTable(registeredRoutes(app));
    const allowed = methodsOf(req.path);
    if (allowed.length === 0) throw new AcmError('not_found', `no route ${req.method} ${req.path}; GET /openapi.json lists the routes`);
    res.setHeader('Allow', allowed.join(', '));
    if (req.method === 'OPTIONS') {
      res.status(204).end();
      return;
    }
    throw new AcmError('method_not_allowed', `${req.path} takes ${allowed.join(', ')}; got ${req.method}`);
  });

  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = toAcmError(err);
    res.locals.errorCode = e.code;
    s.metrics.observeError(e.code);
    if (e.code === 'internal') s.log.error({ err, path: req.path }, 'internal error');
    if (res.headersSent) {
      // The answer has started; the only honest signal left is to cut the connection.
      res.destroy();
      return;
    }
    // An unread request body must not be drained on a kept-alive connection: it is unbounded. A
    // request that declared no body leaves nothing to drain, and keeps its connection.
    const declaresBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
    if (declaresBody && !req.complete) res.setHeader('Connection', 'close');
    if (e.retryAfterS !== undefined) res.setHeader('Retry-After', String(e.retryAfterS));
    // The Open Inference Protocol has its own error shape: {"error": "message"}.
    res.status(e.status).json(isV2Path(req.path) ? { error: e.message } : e.toBody());
  });

  return app;
}
