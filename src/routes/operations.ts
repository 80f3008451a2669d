/** GET /livez, GET /readyz and GET /metrics: for orchestrators and scrapers. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { RETRY_AFTER_SECONDS } from '../errors.js';
import { policies } from '../plugins/route-policy.js';
import { livez, metrics, readyz } from '../schemas/operations.js';

const operationRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/livez', { schema: livez, config: { policy: policies.probe } }, async () => ({ status: 'ok' as const }));

  app.get('/readyz', { schema: readyz, config: { policy: policies.probe } }, async (_req, reply) => {
    const { ready, checks } = await app.readiness.check();
    if (ready) return { status: 'ok' as const, checks };
    reply.header('Retry-After', String(RETRY_AFTER_SECONDS));
    return reply.code(503).send({ status: 'unavailable' as const, checks });
  });

  app.get('/metrics', { schema: metrics, config: { policy: policies.scrape } }, async (_req, reply) => {
    reply.type(app.metrics.contentType);
    return app.metrics.metrics();
  });
};

export default operationRoutes;
