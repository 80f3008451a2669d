/** The prompt queue of a session: what runs and waits, removing one, the current turn. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { policies } from '../plugins/route-policy.js';
import { actorOf } from '../plugins/security.js';
import { currentTurn, listPendingPrompts, removePendingPrompt } from '../schemas/sessions.js';

const promptRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const sessions = app.sessions;

  app.get(
    '/session/:id/pending-prompts',
    { schema: listPendingPrompts, config: { policy: policies.read, cluster: 'session' } },
    async (req) => ({ pendingPrompts: sessions.pendingPrompts(req.params.id) }),
  );

  app.delete(
    '/session/:id/pending-prompts/:promptId',
    { schema: removePendingPrompt, config: { policy: policies.mutation, cluster: 'session' } },
    async (req) => {
      sessions.removePendingPrompt(req.params.id, req.params.promptId, actorOf(req));
      return { removed: true as const };
    },
  );

  app.get(
    '/session/:id/turns/current',
    { schema: currentTurn, config: { policy: policies.read, cluster: 'session' } },
    async (req) => {
      const sessionId = req.params.id;
      const turn = sessions.currentTurn(sessionId);
      if (!turn) {
        return { sessionId, state: 'idle' as const, promptId: null, promptText: null, queuedAt: null, startedAt: null };
      }
      return { sessionId, state: 'running' as const, ...turn };
    },
  );
};

export default promptRoutes;
