// A POST that declares a body of `declared` bytes, sends `sent` of them and then nothing: what the
// body-deadline tests send. Resolves with the answer the server gives while the client waits.
import { request } from 'node:http';

export interface StalledAnswer {
  status: number;
  /** The Connection header of the answer. */
  connection: string | undefined;
  /** The parsed JSON body. */
  body: unknown;
  /** From sending the head to the end of the answer. */
  ms: number;
}

export function stalledUpload(port: number, path: string, headers: Record<string, string>, sent: Buffer,
  declared: number): Promise<StalledAnswer> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path, headers: { ...headers, 'Content-Length': String(declared) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body: JSON.parse(text) as unknown,
        ms: performance.now() - started }));
    });
    req.on('error', reject);
    req.write(sent);
  });
}
