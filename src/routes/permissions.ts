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
      // The voter is the token's user, checked here even when another node forwarded the vote. Its address
      // is the client's: req.ip (after --trust-proxy), or, for a forwarded vote, what the forwarding node
      // saw (the cluster's secret vouches for it).
      const forwarded = app.cluster?.cluster.forwardedClient(req);
      const actor = actorOf(req);
      const voter = { ...actor, user: actor?.user, loopback: isLoopbackAddress(forwarded?.ip ?? req.ip) };
      if (!app.sessions.respondToPermission(requestId, req.body, actor, voter))
        throw new PermissionNotFoundError(requestId);
      return {};
    },
  );
};

export default permissionRoutes;
