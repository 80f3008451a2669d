/**
 * The session registry plugin: live sessions, prompts, permissions and event
 * buses (see services/session-registry.ts). `preClose` drains it, which sends
 * `session_died {reason:"daemon_shutdown"}` and so ends every SSE stream before
 * the listener waits for open connections. Each session's events go to its
 * log in the data store when there is one (see plugins/data-store.ts), and
 * the session catalog to a table beside them.
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { SessionRegistry } from '../services/session-registry.js';
import { MemorySessionStore } from '../services/session-store.js';
import { SqliteSessionStore } from '../services/sqlite-session-store.js';

declare module 'fastify' {
  interface FastifyInstance {
    sessions: SessionRegistry;
  }
}

async function sessionRegistry(app: FastifyInstance, opts: { config: Config }) {
  const { config } = opts;
  const events = app.dataStore;
  const cluster = app.cluster;
  const registry = new SessionRegistry(
    {
      workspace: config.workspace,
      maxSessions: config.maxSessions,
      initTimeoutMs: config.initTimeoutMs,
      maxPendingPrompts: config.maxPendingPrompts,
      defaultScope: 'single',
      // The catalog survives a restart when the events do: in the same database.
      store: cluster
        ? cluster.store
        : events
          ? new SqliteSessionStore({ db: events.database, log: app.log.child({ component: 'session-catalog' }) })
          : new MemorySessionStore(),
      ...(cluster
        ? {
            // Each log is written under the session's lease: its token fences the writes.
            eventLogs: { logFor: (id: string) => cluster.events.open(id, () => cluster.node.tokenOf(id)) },
            ownership: cluster.cluster,
            // Live somewhere in the cluster: the catalog has not seen it end (a node that died left it live).
            isLive: (id: string) => cluster.cluster.isLiveInCatalog(id),
          }
        : events
          ? { eventLogs: events }
          : {}),
      // A warm session would need a lease before anybody asked for it: a cluster node keeps none.
      warmSessions: cluster ? 0 : config.warmSessions,
      bus: { ringBytes: config.ringBytes, maxQueuedBytes: config.subscriberBacklogBytes },
      log: app.log.child({ component: 'sessions' }),
    },
    app.channels,
  );
  app.decorate('sessions', registry);
  app.addHook('preClose', async () => {
    await registry.shutdown(config.drainTimeoutMs);
  });
}

export default fp(sessionRegistry, {
  name: 'session-registry',
  fastify: '5.x',
  dependencies: ['channel-supervisor', 'data-store', 'cluster'],
});
