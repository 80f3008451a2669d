// What both baseline servers do with their sockets.
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

/**
 * Writes `chunk` to every socket; a promise of their 'drain' when any pushed back, else nothing, so that a
 * caller that is not held back never awaits.
 */
export function writeToAll(sockets: Iterable<http.ServerResponse>, chunk: Buffer | string): Promise<void> | undefined {
  let waits: Promise<void>[] | undefined;
  for (const res of sockets) {
    if (!res.destroyed && !res.write(chunk)) (waits ??= []).push(writable(res));
  }
  return waits && Promise.all(waits).then(() => undefined);
}

/** The previous run's sockets may still be closing: waits (5 s at most) until exactly `want` are left. */
export async function settle(sockets: Set<http.ServerResponse>, want: number): Promise<void> {
  const end = Date.now() + 5000;
  while (sockets.size !== want && Date.now() < end) await new Promise((r) => setImmediate(r));
}
