/**
 * A connection to the cluster's Redis that fails fast: no offline queue and
 * one retry per command, so that while Redis is away a request gets a clear
 * error (RedisUnavailableError, 503) at once instead of hanging, and the
 * process never crashes on a connection error. ioredis keeps reconnecting
 * in the background.
 */
import type { Redis } from 'ioredis';

export interface ConnectionLog {
  warn(obj: object, msg: string): void;
}

/** ioredis is imported here, when a node joins a cluster: a lone daemon never loads it (~5 MB of RSS). */
export async function openRedis(url: string, log: ConnectionLog): Promise<Redis> {
  const { Redis } = await import('ioredis');
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    lazyConnect: true,
    // Reconnect soon, but not in a tight loop while Redis is down.
    retryStrategy: (times) => Math.min(times * 100, 2_000),
  });
  let down = false;
  // Without a listener ioredis prints every failed reconnect; one line per outage is enough.
  redis.on('error', (err: Error) => {
    if (down) return;
    down = true;
    log.warn({ err }, 'redis connection failed; reconnecting');
  });
  redis.on('ready', () => (down = false));
  return redis;
}
