/** POST /permission/:requestId — a vote, counted as the permission policy says. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { PermissionNotFoundError } from '../errors.js';
import { policies } from '../plugins/route-policy.js';
import { actorOf } from '../plugins/security.js';
import { isLoopbackAddress } from '../services/permission-policy.js';
import { vote } from '../schemas/permissions.js';

const permissionRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/permission/:requestId',
    { schema: vote, config: { policy: policies.vote, cluster: 'permission' } },
    async (req) => {
      const { requestId } = req.params;
      const actor = actorOf(req);
      // req.ip honours --trust-proxy: behind a trusted proxy, the forwarded client is the one that counts.
      const voter = { ...actor, user: req.identity?.user, loopback: isLoopbackAddress(req.ip) };
      if (!app.sessions.respondToPermission(requestId, req.body, actor, voter))
        throw new PermissionNotFoundError(requestId);
      return {};
    },
  );
};

export default permissionRoutes;
