/**
 * `X-Acpd-Node: <node id>` on every answer of a node that has a `--node-id`:
 * behind a load balancer it tells a client, an operator reading a trace, or a
 * test which node answered. Set in onRequest rather than onSend so that event
 * streams, whose headers @fastify/sse writes itself, and the guards' early
 * refusals carry it too. Without a node id (a single daemon) nothing is added.
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';

export const NODE_HEADER = 'x-acpd-node';

async function nodeHeader(app: FastifyInstance, opts: { config: Config }) {
  const { nodeId } = opts.config;
  if (nodeId === undefined) return;
  app.addHook('onRequest', (_req, reply, done) => {
    reply.header(NODE_HEADER, nodeId);
    done();
  });
}

export default fp(nodeHeader, { name: 'node-header', fastify: '5.x' });
