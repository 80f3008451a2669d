/**
 * The restore coordinator plugin: load and resume of persisted sessions (see
 * services/restore-coordinator.ts). Its in-flight restores hold session slots
 * and are awaited by the registry's drain.
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import { RestoreCoordinator } from '../services/restore-coordinator.js';

declare module 'fastify' {
  interface FastifyInstance {
    restores: RestoreCoordinator;
  }
}

async function restoreCoordinator(app: FastifyInstance) {
  app.decorate('restores', new RestoreCoordinator(app.sessions, app.log.child({ component: 'restore' })));
}

export default fp(restoreCoordinator, {
  name: 'restore-coordinator',
  fastify: '5.x',
  dependencies: ['session-registry'],
});
