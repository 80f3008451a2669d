// What both baseline servers do when a socket pushes back.
import type http from 'node:http';

/** Resolves on the socket's 'drain', or on 'close' for one that went away meanwhile. */
export function writable(res: http.ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}
