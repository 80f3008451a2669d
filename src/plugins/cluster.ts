/**
 * The cluster plugin: with `--redis-url`, this daemon is one node of a
 * cluster (see cluster/cluster.ts for the rules). It connects to Redis,
 * makes the shared stores the other plugins use instead of their local ones
 * (event logs, receipts, the session catalog, the cap), beats its heartbeat
 * once listening, and sends each request for a session that runs elsewhere
 * where it must go: forwarded to the owner, or taken over here when the
 * owner is gone. Without `--redis-url`, `app.cluster` is undefined and
 * nothing here runs.
 *
 * Routes say what they need of a session in `config.cluster`:
 *  - `session`: only the owner can serve it (prompt, cancel, vote, model, close, status…);
 *  - `restore`: a load or resume (the cluster-wide restore rules);
 *  - `create`: `POST /session` (the single-scope default session is one for the cluster);
 *  - `permission`: a vote, sent to the node that asked;
 *  - `events`: served by every node from the shared log (routes/events.ts asks `follow`).
 */
import os from 'node:os';
import { randomUUID } from 'node:crypto';
import fp from 'fastify-plugin';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import { openRedis } from '../cluster/connect.js';
import type { Config } from '../config.js';
import { SessionNotFoundError, type RestoreAction } from '../errors.js';
import { Cluster, STATE_ROUTE, isPending } from '../cluster/cluster.js';
import { policies } from './route-policy.js';
import { ClusterKeys } from '../cluster/keys.js';
import { endLostTurns } from '../cluster/lost-turns.js';
import { ClusterNode } from '../cluster/node.js';
import { RedisEventStore } from '../cluster/redis-event-log.js';
import { RedisReceiptStore } from '../cluster/redis-receipts.js';
import { RedisSessionStore } from '../cluster/redis-session-store.js';
import { ClusterSessionCap } from '../cluster/session-cap.js';
import { DEFAULT_RING_SIZE } from '../services/event-bus.js';

export type ClusterRole = 'session' | 'restore' | 'create' | 'permission' | 'events';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** What the route needs of the session it names when this node is one of a cluster. */
    cluster?: ClusterRole;
  }
  interface FastifyInstance {
    /** Undefined on a single node (no --redis-url). */
    cluster: ClusterServices | undefined;
  }
}

export interface ClusterServices {
  readonly cluster: Cluster;
  readonly node: ClusterNode;
  readonly events: RedisEventStore;
  readonly receipts: RedisReceiptStore;
  readonly store: RedisSessionStore;
  readonly redis: Redis;
}

/**
 * How long a node keeps trying to reach Redis at start-up before it gives up
 * (within Fastify's ten seconds for a plugin to start).
 */
const CONNECT_DEADLINE_MS = 6_000;

/**
 * The node's connection, failing fast while Redis is away (connect.ts): the
 * caller answers 503 and the node turns not ready, rather than serving from
 * state it cannot check. At start-up Redis gets a few seconds to appear.
 */
async function connect(url: string, log: FastifyBaseLogger): Promise<Redis> {
  const redis = await openRedis(url, log);
  // What the connection itself said last: more telling than the "Connection is closed" of a retry.
  let cause: unknown;
  const noted = (err: unknown) => (cause = err);
  redis.on('error', noted);
  const deadline = Date.now() + CONNECT_DEADLINE_MS;
  for (;;) {
    try {
      await redis.connect();
      redis.off('error', noted);
      return redis;
    } catch (err) {
      redis.disconnect();
      if (Date.now() > deadline) {
        const last = cause ?? err;
        const reason = last instanceof Error ? last.message : String(last);
        throw new Error(`cannot reach Redis at --redis-url: ${reason}`, { cause: err });
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

/** The cluster's shared secret: made by the first node, read by the others. */
async function sharedSecret(redis: Redis, keys: ClusterKeys): Promise<string> {
  await redis.set(keys.secret, randomUUID(), 'NX');
  const secret = await redis.get(keys.secret);
  if (secret === null) throw new Error('the cluster secret vanished from Redis');
  return secret;
}

function advertiseUrl(app: FastifyInstance, config: Config): string {
  if (config.advertiseUrl !== undefined) return config.advertiseUrl.replace(/\/+$/, '');
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.port;
  const wildcard = ['0.0.0.0', '::', ''].includes(config.listenHost);
  const host = wildcard ? '127.0.0.1' : config.listenHost.includes(':') ? `[${config.listenHost}]` : config.listenHost;
  return `http://${host}:${port}`;
}

async function clusterPlugin(app: FastifyInstance, opts: { config: Config }) {
  const { config } = opts;
  if (config.redisUrl === undefined) {
    app.decorate('cluster', undefined);
    return;
  }
  const log = app.log.child({ component: 'cluster' });
  const redis = await connect(config.redisUrl, log);
  const keys = new ClusterKeys(config.redisPrefix);
  const nodeId = config.nodeId ?? `${os.hostname()}-${process.pid}`;
  const secret = await sharedSecret(redis, keys);
  const cap = new ClusterSessionCap(redis, keys);
  const store = new RedisSessionStore({ redis, keys, nodeId, log: log.child({ component: 'session-catalog' }) });
  const receipts = new RedisReceiptStore({ redis, keys, ttlMs: config.idempotencyTtl * 1000 });
  const events = new RedisEventStore({
    redis,
    keys,
    bounds: { maxEvents: DEFAULT_RING_SIZE, maxBytes: config.ringBytes },
    log: log.child({ component: 'event-log' }),
    bus: { maxQueuedBytes: config.subscriberBacklogBytes },
  });
  // The URL is known once listening (the port may be chosen by the OS); the node starts then.
  const leaseTtlMs = config.leaseTtl * 1000;
  const node = new ClusterNode({
    redis,
    keys,
    nodeId,
    url: config.advertiseUrl ?? '',
    leaseTtlMs,
    log,
    // The cap counts a session while its lease lives: both are renewed together.
    onBeat: async (owned, now) => {
      if (owned.length > 0) await cap.renew(owned, now + leaseTtlMs);
    },
  });
  const cluster = new Cluster({
    redis,
    keys,
    node,
    secret,
    cap,
    store,
    events,
    maxSessions: config.maxSessions,
    initTimeoutMs: config.initTimeoutMs,
    token: config.token,
    log,
  });
  const services: ClusterServices = { cluster, node, events, receipts, store, redis };
  app.decorate('cluster', services);

  app.addHook('onListen', async () => {
    node.setUrl(advertiseUrl(app, config));
    await node.start();
    log.info({ nodeId, url: node.url, leaseTtlS: config.leaseTtl }, 'cluster node started');
  });
  // Votes may reach any node: each pending request says which session (so which owner) it is of.
  app.channels.router.permissions.watchPending((requestId, sessionId, timeoutMs) =>
    cluster.recordPermission(requestId, sessionId, timeoutMs > 0 ? timeoutMs + 60_000 : 86_400_000),
  );
  // A session this node lost stops here (its new owner carries it on).
  node.onLost((sessionId) => void app.sessions.relinquish(sessionId));
  app.addHook('onClose', async () => {
    await events.flushAll().catch(() => undefined);
    await node.stop();
    await events.close();
    await redis.quit().catch(() => redis.disconnect());
  });

  // A session's state for a stream another node serves: only for the nodes of the cluster.
  app.get(
    STATE_ROUTE,
    { schema: { hide: true }, config: { policy: policies.read }, exposeHeadRoute: false },
    async (req, reply) => {
      const { id } = req.params as { id: string };
      if (!cluster.isForwarded(req) || !app.sessions.get(id)) return reply.code(404).send({ error: 'Not found' });
      return app.sessions.snapshot(id);
    },
  );
}

/**
 * Where each request for a session goes (see the header). Registered after
 * the idempotency plugin: a keyed request is claimed (or answered from its
 * receipt) on the node it reached before it is forwarded, so a retry through
 * another node finds the claim, and the receipt is kept where it was claimed.
 */
async function clusterRouting(app: FastifyInstance) {
  const services = app.cluster;
  if (services === undefined) return;
  const route = clusterRouter(app, services);
  app.addHook('preHandler', async (req, reply) => {
    const role = req.routeOptions.config.cluster;
    if (role === undefined || role === 'events' || services.cluster.isForwarded(req)) return;
    return route(req, reply, role);
  });
}

export const clusterRoutes = fp(clusterRouting, {
  name: 'cluster-routing',
  fastify: '5.x',
  dependencies: ['cluster', 'idempotency'],
});

/** The decision for each request that names a session: serve it here (undefined), or the reply sent. */
function clusterRouter(app: FastifyInstance, services: ClusterServices) {
  const { cluster } = services;

  /** Restores `sessionId` here (the agent's resume, else load), claimed cluster-wide; undefined once live here. */
  async function takeOver(
    req: FastifyRequest,
    reply: FastifyReply,
    sessionId: string,
  ): Promise<FastifyReply | undefined> {
    const capabilities = app.channels.lastInitialize?.agentCapabilities;
    const action: RestoreAction =
      capabilities?.sessionCapabilities?.resume !== undefined || capabilities?.loadSession !== true ? 'resume' : 'load';
    const running = await cluster.claimRestore(sessionId, action);
    if (running) {
      // Another node is bringing it back, whatever the action: its owner serves this request.
      const joined = await cluster.joinRestore(req, reply, sessionId, running.action, running);
      return joined ?? takeOver(req, reply, sessionId);
    }
    try {
      try {
        await app.restores.restore(action, sessionId, undefined);
      } catch (err) {
        if (err instanceof SessionNotFoundError) await bury(sessionId);
        throw err;
      }
      cluster.node.stats.takeovers++;
      const live = app.sessions.get(sessionId);
      const lost = live ? endLostTurns(live.events, sessionId) : [];
      req.log.info({ sessionId, action, lostPrompts: lost.length }, 'session taken over from a node that is gone');
    } finally {
      await cluster.endRestore(sessionId, action);
    }
    return undefined;
  }

  /**
   * A session whose node died and that no agent can bring back (it never
   * saved it): its streams get `session_died` (`reason: node_lost`) so that
   * no client waits on it, and the catalog records its end.
   */
  async function bury(sessionId: string): Promise<void> {
    const events = await app.sessions.claimWithBus(sessionId);
    events.publish('session_died', { sessionId, reason: 'node_lost' });
    events.close();
    await app.sessions.unclaim(sessionId, events);
    await cluster.endInCatalog(sessionId, 'node_lost');
    app.log.warn({ sessionId }, 'session lost with its node: no agent could bring it back');
  }

  /** An owner-only request: here when live here, forwarded to a live owner, taken over from a dead one. */
  async function ownerOnly(
    req: FastifyRequest,
    reply: FastifyReply,
    sessionId: string,
  ): Promise<FastifyReply | undefined> {
    if (app.sessions.get(sessionId) || cluster.holds(sessionId)) return undefined;
    const owner = await cluster.remoteOwner(sessionId);
    if (owner) return cluster.forward(req, reply, owner);
    if (!(await cluster.isLiveInCatalog(sessionId))) return undefined;
    return takeOver(req, reply, sessionId);
  }

  async function restore(
    req: FastifyRequest,
    reply: FastifyReply,
    sessionId: string,
  ): Promise<FastifyReply | undefined> {
    const action: RestoreAction = req.url.split('?')[0]?.endsWith('/load') ? 'load' : 'resume';
    if (app.sessions.get(sessionId)) return undefined;
    const owner = await cluster.remoteOwner(sessionId);
    if (owner) return cluster.forward(req, reply, owner);
    const running = await cluster.claimRestore(sessionId, action);
    if (running) {
      const joined = await cluster.joinRestore(req, reply, sessionId, action, running);
      return joined ?? restore(req, reply, sessionId);
    }
    // Claimed. A restore that finished elsewhere just before the claim has an owner now: go there.
    const after = await cluster.remoteOwner(sessionId);
    if (after) {
      await cluster.endRestore(sessionId, action);
      return cluster.forward(req, reply, after);
    }
    claimedRestores.set(req, action);
    return undefined;
  }

  async function create(req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    const body = (req.body ?? {}) as { sessionScope?: unknown };
    if (body.sessionScope !== undefined && body.sessionScope !== 'single') return undefined;
    const workspace = app.sessions.workspace;
    if (app.sessions.defaultSessionId !== undefined) return undefined;
    for (;;) {
      let current = await cluster.defaultSession(workspace);
      if (current === undefined) {
        if (await cluster.claimDefault(workspace)) {
          claimedDefaults.add(req);
          return undefined;
        }
        continue;
      }
      if (isPending(current)) {
        current = await cluster.awaitDefault(workspace);
        if (current === undefined) continue;
      }
      const owner = await cluster.remoteOwner(current);
      if (owner) return cluster.forward(req, reply, owner);
      if (app.sessions.get(current)) {
        app.sessions.adoptDefault(current);
        return undefined;
      }
      if (await cluster.isLiveInCatalog(current)) {
        const answered = await takeOver(req, reply, current);
        if (answered) return answered;
        app.sessions.adoptDefault(current);
        return undefined;
      }
      // The default session ended: the next create makes a new one.
      await cluster.setDefault(workspace, undefined, current);
    }
  }

  async function permission(
    req: FastifyRequest,
    reply: FastifyReply,
    requestId: string,
  ): Promise<FastifyReply | undefined> {
    if (app.sessions.permissions.has(requestId)) return undefined;
    const sessionId = await cluster.permissionSession(requestId);
    if (sessionId === undefined || app.sessions.get(sessionId)) return undefined;
    const owner = await cluster.remoteOwner(sessionId);
    return owner ? cluster.forward(req, reply, owner) : undefined;
  }

  // Requests whose restore or default session this node claimed, for the hooks that end the claims.
  const claimedRestores = new WeakMap<FastifyRequest, RestoreAction>();
  const claimedDefaults = new WeakSet<FastifyRequest>();
  app.addHook('onSend', async (req, reply, payload) => {
    const action = claimedRestores.get(req);
    if (action !== undefined) {
      claimedRestores.delete(req);
      const failed =
        reply.statusCode >= 400 && typeof payload === 'string'
          ? { status: reply.statusCode, body: payload }
          : undefined;
      await cluster.endRestore((req.params as { id: string }).id, action, failed).catch(() => undefined);
    }
    if (claimedDefaults.has(req)) {
      claimedDefaults.delete(req);
      const made = app.sessions.defaultSessionId;
      await cluster.setDefault(app.sessions.workspace, made).catch(() => undefined);
    }
    return payload;
  });
  // A request that failed before its answer (or whose client left) still gives its claims back.
  app.addHook('onResponse', async (req) => {
    const action = claimedRestores.get(req);
    if (action !== undefined)
      await cluster.endRestore((req.params as { id: string }).id, action).catch(() => undefined);
    if (claimedDefaults.has(req)) {
      await cluster.setDefault(app.sessions.workspace, app.sessions.defaultSessionId).catch(() => undefined);
    }
  });

  return async (req: FastifyRequest, reply: FastifyReply, role: Exclude<ClusterRole, 'events'>) => {
    const params = req.params as { id?: string; requestId?: string };
    switch (role) {
      case 'session':
        return params.id === undefined ? undefined : ownerOnly(req, reply, params.id);
      case 'restore':
        return params.id === undefined ? undefined : restore(req, reply, params.id);
      case 'create':
        return create(req, reply);
      case 'permission':
        return params.requestId === undefined ? undefined : permission(req, reply, params.requestId);
    }
  };
}

export default fp(clusterPlugin, { name: 'cluster', fastify: '5.x' });
