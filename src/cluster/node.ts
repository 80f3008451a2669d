/**
 * This process as one node of an acpd cluster: its heartbeat in Redis, and
 * its leases on the sessions it runs.
 *
 * A lease (`s:{sid}:lease`, a hash {holder, node, url, token}) says which
 * node owns a live session: only that node runs it on its agent, and every
 * other node forwards it what only the owner can do. A lease expires with
 * the lease TTL unless its holder renews it (every third of the TTL, with the
 * heartbeat), so the sessions of a node that died go to a live node once the
 * TTL has passed.
 *
 * The holder is this process's instance (`<nodeId>/<boot id>`), not the node
 * name: a node restarted under the same name is a new instance that does not
 * own what its predecessor owned. When the heartbeat of a lease's node names
 * another instance (or none), the lease is stale and taken over at once
 * instead of at its expiry.
 *
 * Each acquisition takes the next value of `s:{sid}:fence`: the fencing
 * token. Whatever the owner writes about a session goes through a script
 * that compares the lease's token with the writer's, so a node that lost its
 * lease (a pause longer than the TTL, a partition from Redis) has its writes
 * refused instead of applied beside the new owner's.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { Redis } from 'ioredis';
import { RedisUnavailableError } from '../errors.js';
import type { ClusterKeys } from './keys.js';

/** Who owns a session's lease. */
export interface LeaseHolder {
  /** The instance holding it (`<nodeId>/<boot id>`). */
  readonly holder: string;
  readonly node: string;
  /** Where the node takes forwarded requests. */
  readonly url: string;
  readonly token: number;
}

export type Acquired =
  | { readonly acquired: true; readonly token: number }
  | {
      readonly acquired: false;
      readonly owner: LeaseHolder;
    };

/** What a node's heartbeat key holds. */
interface Heartbeat {
  instance: string;
  url: string;
  startedAt: number;
}

// KEYS: lease, fence. ARGV: holder, node, url, ttl ms, node heartbeat key prefix.
// Returns {1, token} when the lease is ours (new, or ours already), else {0, holder, node, url, token}.
// A lease whose node's heartbeat names another instance (or none) is stale: its holder died, and a
// restarted node under the same name does not own its predecessor's sessions.
const ACQUIRE = `
local lease = KEYS[1]
local holder = redis.call('HGET', lease, 'holder')
if holder == ARGV[1] then
  redis.call('PEXPIRE', lease, ARGV[4])
  return {1, redis.call('HGET', lease, 'token')}
end
if holder then
  local node = redis.call('HGET', lease, 'node')
  local beat = redis.call('GET', ARGV[5] .. node)
  local alive = false
  if beat then
    local ok, decoded = pcall(cjson.decode, beat)
    alive = ok and decoded.instance == holder
  end
  if alive then
    return {0, holder, node, redis.call('HGET', lease, 'url'), redis.call('HGET', lease, 'token')}
  end
end
local token = redis.call('INCR', KEYS[2])
redis.call('DEL', lease)
redis.call('HSET', lease, 'holder', ARGV[1], 'node', ARGV[2], 'url', ARGV[3], 'token', token)
redis.call('PEXPIRE', lease, ARGV[4])
return {1, tostring(token)}
`;

// KEYS: lease. ARGV: token, ttl ms. 1 when the lease is still ours (and renewed), else 0.
const RENEW = `
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`;

// KEYS: lease. ARGV: token. Deletes the lease only if it is still ours.
const RELEASE = `
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`;

interface ClusterCommands {
  acpdAcquire(lease: string, fence: string, ...args: string[]): Promise<[number, string, ...unknown[]]>;
  acpdRenew(lease: string, token: string, ttl: string): Promise<number>;
  acpdRelease(lease: string, token: string): Promise<number>;
}

export interface ClusterNodeOptions {
  redis: Redis;
  keys: ClusterKeys;
  nodeId: string;
  /** Where the other nodes reach this one. */
  url: string;
  leaseTtlMs: number;
  log: FastifyBaseLogger;
  /** Runs with every heartbeat, given the sessions this node still owns (to renew what lives with them). */
  onBeat?: (owned: string[], now: number) => Promise<void>;
}

/** Counters for metrics. */
export class ClusterStats {
  /** Sessions this node took over from a node that was gone (counted by whoever restores them). */
  takeovers = 0;
  /** Leases this node held and found taken by another node (or expired) at renewal. */
  lost = 0;
  /** Requests this node forwarded to a session's owner. */
  forwarded = 0;
  /** Forwards that failed to reach the owner. */
  forwardFailures = 0;
  /** Load/resume requests that joined a restore another node was running (or refused as a conflict with it). */
  restoreJoins = 0;
}

export class ClusterNode {
  readonly nodeId: string;
  readonly instance: string;
  readonly leaseTtlMs: number;
  readonly stats = new ClusterStats();
  private urlNow: string;
  private readonly onBeat: ClusterNodeOptions['onBeat'];
  private readonly redis: Redis & ClusterCommands;
  private readonly keys: ClusterKeys;
  private readonly log: FastifyBaseLogger;
  /** The sessions whose lease this node holds, with the token it holds them by. */
  private readonly leases = new Map<string, number>();
  private readonly lostListeners = new Set<(sessionId: string) => void>();
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;
  /** The last heartbeat failed (cleared by the next that succeeds). */
  private beatFailed = false;
  private beaten = false;
  private firstBeat: () => void = () => {};
  /** Settles at the first heartbeat that reached Redis: no lease is taken before others can see this node alive. */
  private readonly started = new Promise<void>((resolve) => (this.firstBeat = resolve));
  private lastErrorText: string | undefined;
  private readonly startedAt = Date.now();

  constructor(opts: ClusterNodeOptions) {
    this.nodeId = opts.nodeId;
    this.instance = `${opts.nodeId}/${randomUUID()}`;
    this.urlNow = opts.url;
    this.onBeat = opts.onBeat;
    this.leaseTtlMs = opts.leaseTtlMs;
    this.keys = opts.keys;
    this.log = opts.log;
    const redis = opts.redis as Redis & ClusterCommands;
    redis.defineCommand('acpdAcquire', { numberOfKeys: 2, lua: ACQUIRE });
    redis.defineCommand('acpdRenew', { numberOfKeys: 1, lua: RENEW });
    redis.defineCommand('acpdRelease', { numberOfKeys: 1, lua: RELEASE });
    this.redis = redis;
  }

  /** Where the other nodes reach this one. */
  get url(): string {
    return this.urlNow;
  }

  /** Sets the URL once it is known (the listener's port), before `start`. */
  setUrl(url: string): void {
    this.urlNow = url;
  }

  /** Whether the last heartbeat reached Redis (and the connection is up). */
  get healthy(): boolean {
    return !this.beatFailed && this.redis.status === 'ready';
  }

  /** Why the node is not healthy, when it is not. */
  get lastError(): string | undefined {
    return this.lastErrorText;
  }

  /** How many sessions this node owns. */
  get ownedCount(): number {
    return this.leases.size;
  }

  /** The sessions this node owns. */
  owned(): string[] {
    return [...this.leases.keys()];
  }

  /** The token this node holds `sessionId` by, while it owns it: what its writes are fenced with. */
  tokenOf(sessionId: string): number | undefined {
    return this.leases.get(sessionId);
  }

  /** `listener` hears of every lease this node finds it has lost. Returns the way to stop listening. */
  onLost(listener: (sessionId: string) => void): () => void {
    this.lostListeners.add(listener);
    return () => this.lostListeners.delete(listener);
  }

  /** The first heartbeat (it must reach Redis), then one every third of the lease TTL. */
  async start(): Promise<void> {
    await this.beat();
    if (this.beatFailed) throw new Error(`Redis is not reachable: ${this.lastErrorText ?? 'unknown error'}`);
    this.schedule();
  }

  private schedule(): void {
    this.timer = setTimeout(
      () => {
        this.beating = this.beat().finally(() => {
          this.beating = undefined;
          if (this.timer !== undefined) this.schedule();
        });
      },
      Math.max(50, Math.floor(this.leaseTtlMs / 3)),
    );
    this.timer.unref();
  }

  /** Renews the node's heartbeat and every lease it holds; reports the leases it lost. */
  private async beat(): Promise<void> {
    const now = Date.now();
    const heartbeat: Heartbeat = { instance: this.instance, url: this.url, startedAt: this.startedAt };
    const owned = [...this.leases];
    try {
      const pipeline = this.redis.pipeline();
      pipeline.set(this.keys.node(this.nodeId), JSON.stringify(heartbeat), 'PX', this.leaseTtlMs);
      pipeline.zadd(this.keys.nodes, now, this.nodeId);
      for (const [sessionId, token] of owned) {
        void (pipeline as unknown as ClusterCommands).acpdRenew(
          this.keys.lease(sessionId),
          String(token),
          String(this.leaseTtlMs),
        );
      }
      const results = (await pipeline.exec()) ?? [];
      const failed = results.find(([err]) => err !== null);
      if (failed) throw failed[0] as Error;
      owned.forEach(([sessionId, token], i) => {
        if (results[i + 2]?.[1] === 1) return;
        if (this.leases.get(sessionId) !== token) return;
        this.leases.delete(sessionId);
        this.stats.lost++;
        this.log.warn({ sessionId, token }, 'session lease lost to another node; the session stops here');
        for (const listener of this.lostListeners) listener(sessionId);
      });
      await this.onBeat?.(this.owned(), now);
      if (this.beatFailed) this.log.info('Redis reachable again; node ready');
      this.beatFailed = false;
      this.lastErrorText = undefined;
      if (!this.beaten) {
        this.beaten = true;
        this.firstBeat();
      }
    } catch (err) {
      if (!this.beatFailed) this.log.error({ err }, 'Redis unreachable; node not ready');
      this.beatFailed = true;
      this.lastErrorText = err instanceof Error ? err.message : String(err);
    }
  }

  /**
   * Takes the lease on `sessionId` for this node, unless a live node holds
   * it: then says who does.
   */
  async acquire(sessionId: string): Promise<Acquired> {
    await this.untilStarted();
    const reply = await this.redis.acpdAcquire(
      this.keys.lease(sessionId),
      this.keys.fence(sessionId),
      this.instance,
      this.nodeId,
      this.url,
      String(this.leaseTtlMs),
      this.keys.node(''),
    );
    if (Number(reply[0]) === 1) {
      const token = Number(reply[1]);
      this.leases.set(sessionId, token);
      return { acquired: true, token };
    }
    const [, holder, node, url, token] = reply as unknown as [number, string, string, string, string];
    return { acquired: false, owner: { holder, node, url, token: Number(token) } };
  }

  /** Waits (at most a lease TTL) for the first heartbeat: a lease held by a node nobody sees alive counts as stale. */
  private async untilStarted(): Promise<void> {
    if (this.beaten) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new RedisUnavailableError('heartbeat', 'this node has not reached Redis yet')),
        this.leaseTtlMs,
      );
    });
    try {
      await Promise.race([this.started, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Gives up the lease on `sessionId`, if this node still holds it. */
  async release(sessionId: string): Promise<void> {
    const token = this.leases.get(sessionId);
    if (token === undefined) return;
    this.leases.delete(sessionId);
    await this.redis.acpdRelease(this.keys.lease(sessionId), String(token));
  }

  /** The live owner of `sessionId`: undefined when nobody holds its lease or its holder is gone. */
  async owner(sessionId: string): Promise<LeaseHolder | undefined> {
    const lease = await this.redis.hgetall(this.keys.lease(sessionId));
    if (lease.holder === undefined || lease.node === undefined || lease.url === undefined) return undefined;
    if (lease.holder !== this.instance) {
      const beat = await this.redis.get(this.keys.node(lease.node));
      if (beat === null || (JSON.parse(beat) as Heartbeat).instance !== lease.holder) return undefined;
    }
    return { holder: lease.holder, node: lease.node, url: lease.url, token: Number(lease.token) };
  }

  /** How many nodes have beaten within the lease TTL (this one included when it has). */
  async liveNodes(): Promise<number> {
    return this.redis.zcount(this.keys.nodes, Date.now() - this.leaseTtlMs, '+inf');
  }

  /**
   * Stops the heartbeat and gives every lease back, so that the other nodes
   * take this node's sessions at once instead of after the TTL.
   */
  async stop(): Promise<void> {
    const timer = this.timer;
    this.timer = undefined;
    clearTimeout(timer);
    await this.beating;
    await Promise.all(this.owned().map((sessionId) => this.release(sessionId).catch(() => undefined)));
    await this.redis.del(this.keys.node(this.nodeId)).catch(() => undefined);
  }
}
