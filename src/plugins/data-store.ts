/**
 * The data store plugin: with `--event-log sqlite` (the default) it opens the
 * daemon's one SQLite database (`<data-dir>/events.sqlite`), which holds the
 * session event logs and, beside them, whatever else must survive a restart
 * (idempotency receipts, the session catalog). `app.dataStore` is undefined
 * with `--event-log memory`, on a cluster node (`--redis-url`: Redis holds
 * all of it), or when even an empty database cannot be made:
 * the daemon then serves without durability rather than not at all, and says
 * so. The database closes in `onClose`, after the drain has published every
 * session's last frame.
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { DEFAULT_RING_SIZE } from '../services/event-bus.js';
import { SqliteEventStore } from '../services/sqlite-event-log.js';

declare module 'fastify' {
  interface FastifyInstance {
    dataStore: SqliteEventStore | undefined;
  }
}

async function dataStore(app: FastifyInstance, opts: { config: Config }) {
  // A cluster node keeps all of it in Redis, shared with the other nodes (plugins/cluster.ts).
  const local = opts.config.eventLog === 'sqlite' && opts.config.redisUrl === undefined;
  const store = local ? openStore(app, opts.config) : undefined;
  app.decorate('dataStore', store);
  if (store)
    app.addHook('onClose', (_app, done) => {
      store.close();
      done();
    });
}

function openStore(app: FastifyInstance, config: Config): SqliteEventStore | undefined {
  const log = app.log.child({ component: 'event-log' });
  try {
    return new SqliteEventStore({
      dataDir: config.dataDir,
      bounds: { maxEvents: DEFAULT_RING_SIZE, maxBytes: config.ringBytes },
      log,
    });
  } catch (err) {
    log.error({ err, dataDir: config.dataDir }, 'event log database cannot be opened; events kept in memory only');
    return undefined;
  }
}

export default fp(dataStore, { name: 'data-store', fastify: '5.x' });
