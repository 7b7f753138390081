// One GET through a keep-alive agent, answered and read to the end, with the socket the agent
// keeps: what the keep-alive tests watch for the side that closes it first.
import { get, type Agent, type IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';

export function getKeptAlive(agent: Agent, port: number, path: string): Promise<{ headers: IncomingHttpHeaders; socket: Socket }> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, agent }, (res) => {
      res.resume();
      // By 'end' the response has let go of its socket; the request still names it.
      res.on('end', () => resolve({ headers: res.headers, socket: req.socket as Socket }));
    }).on('error', reject);
  });
}
