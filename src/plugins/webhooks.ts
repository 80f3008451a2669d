/**
 * The webhooks plugin: with `--webhook-url`, every `permission_request`,
 * `turn_complete` and `session_died` of every session here is sent to each
 * receiver (see services/webhooks.ts). It taps the registry's one publish
 * hook rather than subscribing to each session. Deliveries are kept in the
 * data store's database when there is one, so they survive a restart, and in
 * memory otherwise (said at start-up). `app.webhooks` is undefined without
 * receivers.
 *
 * Sending starts once the app is ready (`onReady`) and stops in `onClose`,
 * after the drain has published every session's `session_died` (kept in the
 * queue for the next start when there was no time to send it) and before the
 * database closes (hooks close in the reverse order of registration).
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { VERSION } from '../version.js';
import { MemoryWebhookQueue, SqliteWebhookQueue } from '../services/webhook-queue.js';
import type { Webhooks } from '../services/webhooks.js';

declare module 'fastify' {
  interface FastifyInstance {
    webhooks: Webhooks | undefined;
  }
}

async function webhooks(app: FastifyInstance, opts: { config: Config }) {
  const { config } = opts;
  const secret = config.webhookSecret;
  if (config.webhookUrl.length === 0 || secret === undefined) {
    app.decorate('webhooks', undefined);
    return;
  }
  const log = app.log.child({ component: 'webhooks' });
  const store = app.dataStore;
  if (!store) log.warn({}, 'webhook deliveries kept in memory only: those pending at shutdown are lost');
  // Imported only with receivers: the HTTP client it brings (undici) is most of a megabyte of code.
  const { Webhooks } = await import('../services/webhooks.js');
  const service = new Webhooks({
    receivers: config.webhookUrl,
    secret,
    maxAttempts: config.webhookMaxAttempts,
    retryMs: config.webhookRetryMs,
    queue: store ? new SqliteWebhookQueue({ db: store.database, log }) : new MemoryWebhookQueue(),
    log,
    userAgent: `acpd/${VERSION}`,
  });
  app.sessions.onPublish((sessionId, envelope) => service.publish(sessionId, envelope));
  app.decorate('webhooks', service);
  app.addHook('onReady', async () => service.start());
  app.addHook('onClose', async () => service.close());
}

export default fp(webhooks, {
  name: 'webhooks',
  fastify: '5.x',
  dependencies: ['data-store', 'session-registry'],
});
