/**
 * The session registry plugin: live sessions, prompts, permissions and event
 * buses (see services/session-registry.ts). `preClose` drains it, which sends
 * `session_died {reason:"daemon_shutdown"}` and so ends every SSE stream before
 * the listener waits for open connections. With `--event-log sqlite` it also
 * opens the durable event store, and closes it in `onClose`, after the drain
 * has published every session's last frame.
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { DEFAULT_RING_SIZE } from '../services/event-bus.js';
import { SessionRegistry } from '../services/session-registry.js';
import { MemorySessionStore } from '../services/session-store.js';
import { SqliteEventStore } from '../services/sqlite-event-log.js';

declare module 'fastify' {
  interface FastifyInstance {
    sessions: SessionRegistry;
  }
}

async function sessionRegistry(app: FastifyInstance, opts: { config: Config }) {
  const { config } = opts;
  const events = config.eventLog === 'sqlite' ? openEventStore(app, config) : undefined;
  const registry = new SessionRegistry(
    {
      workspace: config.workspace,
      maxSessions: config.maxSessions,
      initTimeoutMs: config.initTimeoutMs,
      defaultScope: 'single',
      store: new MemorySessionStore(),
      ...(events ? { eventLogs: events } : {}),
      warmSessions: config.warmSessions,
      bus: { ringBytes: config.ringBytes, maxQueuedBytes: config.subscriberBacklogBytes },
      log: app.log.child({ component: 'sessions' }),
    },
    app.channels,
  );
  app.decorate('sessions', registry);
  app.addHook('preClose', async () => {
    await registry.shutdown(config.drainTimeoutMs);
  });
  if (events)
    app.addHook('onClose', (_app, done) => {
      events.close();
      done();
    });
}

/**
 * The durable store, or undefined (every bus keeps its own ring) when even
 * an empty database cannot be made: the daemon serves without durability
 * rather than not at all, and says so.
 */
function openEventStore(app: FastifyInstance, config: Config): SqliteEventStore | undefined {
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

export default fp(sessionRegistry, {
  name: 'session-registry',
  fastify: '5.x',
  dependencies: ['channel-supervisor'],
});
