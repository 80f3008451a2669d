/**
 * One acpd node's view of its cluster: what the registry needs to run a
 * session here (`SessionOwnership`: the cluster-wide cap and the session's
 * lease), and what the routes need to serve a session that runs elsewhere
 * (who owns it, forwarding, taking over a session whose node died, the
 * cluster-wide rules of restores and of the single-scope default session).
 *
 * The rules, in the order a request meets them:
 *  - a session live on this node is served here, as on a single node;
 *  - one whose lease a live node holds is forwarded to it (forward.ts);
 *  - one the catalog says is live but nobody holds (its node died, or shut
 *    down and handed it over) is taken over: restored here through this
 *    node's agent (`resume`, else `load`), then served here. Its event log
 *    goes on in Redis with the same epoch and the next id, so its clients'
 *    cursors stay good;
 *  - a load or resume of a session live nowhere is claimed in Redis first
 *    (`s:{sid}:restore`): the same action elsewhere waits for it and is then
 *    answered by the new owner, another action gets 409 `restore_in_progress`,
 *    exactly as two such requests on one node.
 */
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import {
  RedisUnavailableError,
  SessionNotFoundError,
  RestoreInProgressError,
  SessionLimitExceededError,
  SessionOwnerUnavailableError,
  type RestoreAction,
} from '../errors.js';
import type { SessionSnapshot } from '../schemas/events.js';
import type { EventSubscription, SubscribeOptions } from '../services/event-bus.js';
import type { SessionOwnership } from '../services/session-registry.js';
import type { SessionStore } from '../services/session-store.js';
import { leaveOutcomeUnknown } from '../plugins/idempotency.js';
import {
  FORWARDED_BY_HEADER,
  FORWARD_SECRET_HEADER,
  forward,
  forwardedClientWith,
  isForwardedWith,
} from './forward.js';
import type { ClusterKeys } from './keys.js';
import type { ClusterNode, LeaseHolder } from './node.js';
import type { RedisEventStore } from './redis-event-log.js';
import type { ClusterSessionCap } from './session-cap.js';

/** How often a waiting request looks again at a restore or a default session another node is making. */
const WAIT_STEP_MS = 25;

/** What a claimed restore leaves for the requests that joined it, when it failed. */
interface RestoreClaim {
  action: RestoreAction;
  instance: string;
  failed?: { status: number; body: string };
}

export interface ClusterOptions {
  redis: Redis;
  keys: ClusterKeys;
  node: ClusterNode;
  /** Shared by every node of the cluster: proves a forwarded request comes from one. */
  secret: string;
  cap: ClusterSessionCap;
  store: SessionStore;
  events: RedisEventStore;
  /** --max-sessions, cluster-wide (Infinity: no cap). */
  maxSessions: number;
  /** The bound of every wait for another node's restore or create. */
  initTimeoutMs: number;
  /** The bearer token every node requires (the same on all of them), for the nodes' own requests. */
  token: string | undefined;
  log: FastifyBaseLogger;
}

export class Cluster implements SessionOwnership {
  readonly endsSessionsOnShutdown = false;
  readonly node: ClusterNode;
  readonly keys: ClusterKeys;
  private readonly redis: Redis;
  private readonly opts: ClusterOptions;

  constructor(opts: ClusterOptions) {
    this.opts = opts;
    this.node = opts.node;
    this.keys = opts.keys;
    this.redis = opts.redis;
  }

  get leaseTtlSeconds(): number {
    return Math.max(1, Math.ceil(this.node.leaseTtlMs / 1000));
  }

  // ---- SessionOwnership ------------------------------------------------

  assertHealthy(): void {
    if (!this.node.healthy) throw new RedisUnavailableError('heartbeat', this.node.lastError ?? 'not connected');
  }

  async claim(sessionId: string): Promise<void> {
    this.assertHealthy();
    const now = Date.now();
    // Reserved even without a cap (Infinity): the reservations are the cluster's count of live sessions.
    const max = this.opts.maxSessions;
    if (!(await this.opts.cap.reserve(sessionId, max, now + this.node.leaseTtlMs, now))) {
      throw new SessionLimitExceededError(max);
    }
    const got = await this.node.acquire(sessionId);
    if (!got.acquired) {
      // Raced by another node (its restore finished first): the session is theirs.
      throw new SessionOwnerUnavailableError(got.owner.node, 'another node runs this session now; retry', 1);
    }
  }

  async release(sessionId: string): Promise<void> {
    await this.node.release(sessionId);
    await this.opts.cap.release(sessionId);
  }

  /** How many sessions are live on some node of the cluster now. */
  liveSessions(): Promise<number> {
    return this.opts.cap.count(Date.now());
  }

  // ---- serving sessions that run elsewhere ------------------------------

  /** A request another node of this cluster forwarded here: it was judged ours there. */
  isForwarded(req: FastifyRequest): boolean {
    return isForwardedWith(req, this.opts.secret);
  }

  /** The client of a request another node forwarded here, as that node saw it; undefined when not forwarded. */
  forwardedClient(req: FastifyRequest): { ip: string } | undefined {
    return forwardedClientWith(req, this.opts.secret);
  }

  /** The node (not this one) whose lease on `sessionId` is live; undefined when none, or this one. */
  async remoteOwner(sessionId: string): Promise<LeaseHolder | undefined> {
    const owner = await this.node.owner(sessionId);
    return owner && owner.holder !== this.node.instance ? owner : undefined;
  }

  /** Whether this node holds the lease of `sessionId`. */
  holds(sessionId: string): boolean {
    return this.node.tokenOf(sessionId) !== undefined;
  }

  forward(req: FastifyRequest, reply: FastifyReply, owner: LeaseHolder): Promise<FastifyReply> {
    this.node.stats.forwarded++;
    return forward(req, reply, owner, {
      from: this.node.nodeId,
      secret: this.opts.secret,
      retryAfter: this.leaseTtlSeconds,
      onInterrupted: () => leaveOutcomeUnknown(req),
    }).catch((err: unknown) => {
      this.node.stats.forwardFailures++;
      throw err;
    });
  }

  /**
   * Records in the catalog that `sessionId` ended (`reason`) although
   * another node ran it: a session whose node died and which no agent could
   * bring back.
   */
  async endInCatalog(sessionId: string, reason: string): Promise<void> {
    const meta = await this.opts.store.get(sessionId);
    if (meta === undefined || meta.endedAt !== undefined) return;
    // The store lets only the node that names the entry end it: this one, now.
    await this.opts.store.put({ ...meta });
    await this.opts.store.end(sessionId, Date.now(), reason);
  }

  /** Whether the catalog says `sessionId` is live somewhere (it has not ended). */
  async isLiveInCatalog(sessionId: string): Promise<boolean> {
    const meta = await this.opts.store.get(sessionId);
    return meta !== undefined && meta.endedAt === undefined;
  }

  /**
   * Claims the restore of `sessionId` for this node. Undefined when claimed
   * (or this node's own restore is in flight: the coordinator joins it);
   * else the restore another node runs.
   */
  async claimRestore(sessionId: string, action: RestoreAction): Promise<RestoreClaim | undefined> {
    const mine: RestoreClaim = { action, instance: this.node.instance };
    const key = this.keys.restore(sessionId);
    const ttl = this.opts.initTimeoutMs * 2 + this.node.leaseTtlMs;
    const set = await this.redis.set(key, JSON.stringify(mine), 'PX', ttl, 'NX');
    if (set === 'OK') return undefined;
    const raw = await this.redis.get(key);
    if (raw === null) return this.claimRestore(sessionId, action);
    const other = JSON.parse(raw) as RestoreClaim;
    return other.instance === this.node.instance && other.failed === undefined ? undefined : other;
  }

  /**
   * Ends this node's claim on the restore of `sessionId`. A failure is left
   * for a moment for the requests that joined the restore on other nodes:
   * they answer it too, as joiners do on one node.
   */
  async endRestore(sessionId: string, action: RestoreAction, failed?: RestoreClaim['failed']): Promise<void> {
    const key = this.keys.restore(sessionId);
    const raw = await this.redis.get(key);
    if (raw === null || (JSON.parse(raw) as RestoreClaim).instance !== this.node.instance) return;
    if (failed) {
      const left: RestoreClaim = { action, instance: this.node.instance, failed };
      await this.redis.set(key, JSON.stringify(left), 'PX', Math.max(1000, this.node.leaseTtlMs));
    } else {
      await this.redis.del(key);
    }
  }

  /**
   * A restore of `sessionId` that another node runs: 409 for another action;
   * for the same one, waits until the session has an owner (then the caller
   * forwards to it) or the restore failed (then this answers its failure).
   */
  async joinRestore(
    req: FastifyRequest,
    reply: FastifyReply,
    sessionId: string,
    action: RestoreAction,
    running: RestoreClaim,
  ): Promise<FastifyReply | undefined> {
    this.node.stats.restoreJoins++;
    if (running.action !== action && running.failed === undefined) {
      throw new RestoreInProgressError(sessionId, running.action, action);
    }
    const deadline = Date.now() + this.opts.initTimeoutMs * 2;
    for (;;) {
      const owner = await this.remoteOwner(sessionId);
      if (owner) return this.forward(req, reply, owner);
      const raw = await this.redis.get(this.keys.restore(sessionId));
      const now = raw === null ? undefined : (JSON.parse(raw) as RestoreClaim);
      if (now?.failed !== undefined && now.action === action) {
        return reply.code(now.failed.status).header('content-type', 'application/json').send(now.failed.body);
      }
      // Gone with no owner and no failure left: the restore ended without a trace. Start afresh.
      if (now === undefined || now.instance === this.node.instance) return undefined;
      if (now.action !== action && now.failed === undefined) {
        throw new RestoreInProgressError(sessionId, now.action, action);
      }
      if (Date.now() > deadline) throw new RestoreInProgressError(sessionId, running.action, action);
      await delay(WAIT_STEP_MS);
    }
  }

  // ---- permission requests ----------------------------------------------

  /** Records which session a pending permission request is of, so that a vote on any node reaches its owner. */
  recordPermission(requestId: string, sessionId: string, ttlMs: number): void {
    this.redis
      .set(this.keys.permission(requestId), sessionId, 'PX', ttlMs)
      .catch((err: unknown) => this.opts.log.warn({ err, requestId }, 'permission request not recorded in Redis'));
  }

  async permissionSession(requestId: string): Promise<string | undefined> {
    return (await this.redis.get(this.keys.permission(requestId))) ?? undefined;
  }

  // ---- event streams --------------------------------------------------------

  /**
   * A subscription to a session that does not run here, served from its log
   * in Redis: the same ids, epoch and opening frames as on its owner. Its
   * `session_state` frame is the owner's (idle when nobody runs it now).
   */
  async follow(
    sessionId: string,
    opts: Pick<SubscribeOptions, 'lastEventId' | 'epoch' | 'signal'>,
  ): Promise<{ events: EventSubscription; epoch: string }> {
    this.assertHealthy();
    if (!(await this.isLiveInCatalog(sessionId))) throw new SessionNotFoundError(sessionId);
    const state = await this.ownerState(sessionId);
    const bus = await this.opts.events.follow(sessionId);
    if (!bus) throw new SessionNotFoundError(sessionId);
    const events = bus.subscribe({
      ...opts,
      snapshot: (): SessionSnapshot => ({
        ...(state ?? { turn: { state: 'idle' }, pendingPermissions: [], pendingPrompts: [] }),
        sessionId,
        lastEventId: bus.lastEventId,
        eventEpoch: bus.epoch,
      }),
    });
    return { events, epoch: bus.epoch };
  }

  /** The epoch of a session's shared log (HEAD of its events); 404 when the cluster does not know it live. */
  async followedEpoch(sessionId: string): Promise<string> {
    this.assertHealthy();
    const epoch = (await this.isLiveInCatalog(sessionId)) ? await this.opts.events.epochOf(sessionId) : undefined;
    if (epoch === undefined) throw new SessionNotFoundError(sessionId);
    return epoch;
  }

  /** What the owner of `sessionId` says of its state; undefined when nobody runs it or the owner does not answer. */
  private async ownerState(sessionId: string): Promise<SessionSnapshot | undefined> {
    const owner = await this.remoteOwner(sessionId);
    if (!owner) return undefined;
    try {
      const res = await fetch(new URL(stateRoute(sessionId), owner.url), {
        headers: {
          [FORWARDED_BY_HEADER]: this.node.nodeId,
          [FORWARD_SECRET_HEADER]: this.opts.secret,
          ...(this.opts.token !== undefined ? { authorization: `Bearer ${this.opts.token}` } : {}),
        },
        signal: AbortSignal.timeout(this.opts.initTimeoutMs),
      });
      return res.ok ? ((await res.json()) as SessionSnapshot) : undefined;
    } catch {
      return undefined;
    }
  }

  // ---- the single-scope default session ---------------------------------

  /** The default session of `workspace` somewhere in the cluster: its id, or a create in flight (`pending`). */
  async defaultSession(workspace: string): Promise<string | undefined> {
    return (await this.redis.get(this.keys.defaultSession(workspace))) ?? undefined;
  }

  /** Claims the making of the default session: true when this node makes it. */
  async claimDefault(workspace: string): Promise<boolean> {
    const set = await this.redis.set(
      this.keys.defaultSession(workspace),
      pendingOf(this.node.instance),
      'PX',
      this.opts.initTimeoutMs * 2,
      'NX',
    );
    return set === 'OK';
  }

  /** Records `sessionId` as the default session (or, undefined, forgets this node's claim or session). */
  async setDefault(workspace: string, sessionId: string | undefined, previous?: string): Promise<void> {
    const key = this.keys.defaultSession(workspace);
    if (sessionId !== undefined) {
      await this.redis.set(key, sessionId);
      return;
    }
    const now = await this.redis.get(key);
    if (now !== null && (now === previous || now === pendingOf(this.node.instance))) await this.redis.del(key);
  }

  /** Waits while another node makes the default session; its id, or undefined when the make failed. */
  async awaitDefault(workspace: string): Promise<string | undefined> {
    const deadline = Date.now() + this.opts.initTimeoutMs * 2;
    for (;;) {
      const value = await this.defaultSession(workspace);
      if (value === undefined || !isPending(value)) return value;
      if (Date.now() > deadline) return undefined;
      await delay(WAIT_STEP_MS);
    }
  }
}

/** The internal route a node answers its session's state on, for a stream that another node serves. */
export const STATE_ROUTE = '/_cluster/session/:id/state';

function stateRoute(sessionId: string): string {
  return STATE_ROUTE.replace(':id', encodeURIComponent(sessionId));
}

function pendingOf(instance: string): string {
  return `pending:${instance}`;
}

export function isPending(value: string): boolean {
  return value.startsWith('pending:');
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
