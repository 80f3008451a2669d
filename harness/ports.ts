// A free loopback port, for programs that cannot be told to pick one themselves and say which.
import { createServer } from 'node:net';

/** A port that was free on 127.0.0.1 a moment ago (someone else may take it meanwhile: retry on a clash). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
