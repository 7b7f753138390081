// The web page and its assets. Everything the page needs comes from this server: the HTML at /,
// scripts compiled from clients/ (dist/clients) and styles (clients/) under /ui/. A Content
// Security Policy pins every fetch, script, style and image to this origin. Assets are not
// content-hashed, so browsers revalidate them (ETag) rather than keep a stale copy.
import { fileURLToPath } from 'node:url';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';

/** Compiled browser code, relative to dist/server/http/. */
const CLIENTS_DIST = fileURLToPath(new URL('../../clients/', import.meta.url));
/** HTML and CSS, relative to dist/server/http/: the repository's clients/ folder. */
const CLIENTS_SRC = fileURLToPath(new URL('../../../clients/', import.meta.url));
const ASSET = /\.(js|css|html|map)$/;

export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' blob: data:", "media-src 'self' blob:",
  "connect-src 'self'", "worker-src 'self'", "object-src 'none'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
].join('; ');

function pageHeaders(res: Response): void {
  res.setHeader('Cache-Control', 'no-cache');
  res.setHeader('Content-Security-Policy', CONTENT_SECURITY_POLICY);
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'no-referrer');
}

export function registerWebRoutes(app: Express): void {
  app.get('/', (_req: Request, res: Response, next: NextFunction) => {
    pageHeaders(res);
    res.sendFile('web/index.html', { root: CLIENTS_SRC, etag: true, lastModified: true }, (err?: Error) => {
      if (err) next(err);
    });
  });

  const staticOptions = { index: false, fallthrough: true, etag: true, lastModified: true, setHeaders: pageHeaders };
  const compiled = express.static(CLIENTS_DIST, staticOptions);
  const source = express.static(CLIENTS_SRC, staticOptions);
  app.use('/ui', (req: Request, res: Response, next: NextFunction) => {
    // Only the page's own kinds of file: not the TypeScript sources or anything else in the folders.
    if (!ASSET.test(req.path)) {
      next();
      return;
    }
    compiled(req, res, (err?: unknown) => {
      if (err) next(err);
      else source(req, res, next);
    });
  });
}
