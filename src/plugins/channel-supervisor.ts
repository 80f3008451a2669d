/**
 * The channel supervisor plugin: owns the agent processes and the router of
 * their calls to acpd (permissions, files, session updates; see
 * services/channel-supervisor.ts). On close it kills every agent and waits
 * for the exits, so no child outlives the app.
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { agentSpawnArgv } from '../services/agent-command.js';
import { ChannelSupervisor } from '../services/channel-supervisor.js';
import { FsProxy } from '../services/fs-proxy.js';
import { DEFAULT_MAX_PENDING_PER_SESSION, PermissionBroker } from '../services/permissions.js';

declare module 'fastify' {
  interface FastifyInstance {
    channels: ChannelSupervisor;
  }
}

async function channelSupervisor(app: FastifyInstance, opts: { config: Config }) {
  const { config } = opts;
  const supervisor = new ChannelSupervisor({
    argv: agentSpawnArgv(config),
    cwd: config.workspace,
    env: config.agentEnv,
    initTimeoutMs: config.initTimeoutMs,
    killGraceMs: config.killGraceMs,
    log: app.log.child({ component: 'agent' }),
    permissions: new PermissionBroker({
      timeoutMs: config.permissionTimeoutMs,
      policy: { name: config.permissionPolicy, consensusQuorum: config.consensusQuorum },
      announcePolicy:
        config.permissionPolicy !== 'first-responder' || config.token !== undefined || config.tokensFile !== undefined,
      namedUsers: config.tokensFile !== undefined,
      maxPendingPerSession: DEFAULT_MAX_PENDING_PER_SESSION,
      log: app.log.child({ component: 'permissions' }),
    }),
    fs: new FsProxy(config.workspace),
  });
  app.decorate('channels', supervisor);
  app.addHook('onClose', async () => {
    await supervisor.shutdown();
  });
}

export default fp(channelSupervisor, { name: 'channel-supervisor', fastify: '5.x' });
