/** POST /permission/:requestId — first responder wins. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { PermissionNotFoundError } from '../errors.js';
import { policies } from '../plugins/route-policy.js';
import { actorOf } from '../plugins/security.js';
import { vote } from '../schemas/permissions.js';

const permissionRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/permission/:requestId',
    { schema: vote, config: { policy: policies.vote, cluster: 'permission' } },
    async (req) => {
      const { requestId } = req.params;
      if (!app.sessions.respondToPermission(requestId, req.body, actorOf(req)))
        throw new PermissionNotFoundError(requestId);
      return {};
    },
  );
};

export default permissionRoutes;
