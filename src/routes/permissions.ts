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
      // A vote another node forwarded here is the client's, not that node's: it says who the client is
      // (the cluster's secret vouches for it). req.ip honours --trust-proxy: behind a trusted proxy, the
      // forwarded client is the one that counts.
      const forwarded = app.cluster?.cluster.forwardedClient(req);
      const user = forwarded !== undefined ? forwarded.user : req.identity?.user;
      const own = actorOf(req);
      const actor = user === undefined ? undefined : { ...own, user };
      const voter = { ...actor, user, loopback: isLoopbackAddress(forwarded?.ip ?? req.ip) };
      if (!app.sessions.respondToPermission(requestId, req.body, actor, voter))
        throw new PermissionNotFoundError(requestId);
      return {};
    },
  );
};

export default permissionRoutes;
