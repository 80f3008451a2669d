/**
 * The session catalog in Redis, shared by every node: any node lists the
 * sessions any node served.
 *
 *   s:{sid}:meta         HASH  SessionMeta's fields, plus `node`: the node that made it live last
 *   catalog:<workspace>  ZSET  sid → -updatedAt, so ZSET order (score, then id) is `compareRecent`
 *
 * Any node writes an entry (the one a session becomes live on puts it, the
 * one running a prompt touches and names it). Ending is guarded: `end` only
 * applies while the entry names this node, so a node that loses a session
 * to another (a takeover) cannot mark it ended under its new owner.
 *
 * Writes never throw (a failed one is logged, as in the SQLite store: the
 * catalog must not make a session fail); reads throw RedisUnavailableError.
 * Unlike the local stores this one keeps every ended session for now: a
 * bound would need a third key (ended sessions by age) trimmed in `end`.
 */
import type { Redis } from 'ioredis';
import { RedisUnavailableError } from '../errors.js';
import type { SessionMeta, SessionPageQuery, SessionStore } from '../services/session-store.js';
import type { StoreLogger } from '../services/sqlite-event-log.js';
import type { ClusterKeys } from './keys.js';
import { LuaScript } from './lua.js';

/** KEYS: meta, catalog. ARGV: at. Moves a known session to `at`. */
const TOUCH = new LuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'updatedAt', ARGV[1])
redis.call('ZADD', KEYS[2], -tonumber(ARGV[1]), redis.call('HGET', KEYS[1], 'sessionId'))
return 1
`);

/** KEYS: meta, catalog. ARGV: at, reason, node. Ends a live session this node made live. */
const END = new LuaScript(`
local fields = redis.call('HMGET', KEYS[1], 'node', 'endedAt', 'sessionId')
if fields[1] ~= ARGV[3] or fields[2] then return 0 end
redis.call('HSET', KEYS[1], 'updatedAt', ARGV[1], 'endedAt', ARGV[1], 'endReason', ARGV[2])
redis.call('ZADD', KEYS[2], -tonumber(ARGV[1]), fields[3])
return 1
`);

/** KEYS: meta. ARGV: name. The first name stays. */
const NAME = new LuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], 'displayName', ARGV[1])
`);

/**
 * KEYS: catalog. ARGV: -updatedAt and id of the cursor, limit. The ids that
 * sort after the cursor: from its score on (ZRANGE BYSCORE … LIMIT), the
 * cursor's own score only past its id. Runs in batches of `limit` so that
 * many ties at the cursor's score cannot make one call large.
 */
const AFTER = new LuaScript(`
local score, id, limit = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local found, offset = {}, 0
while #found < limit do
  local batch = redis.call('ZRANGE', KEYS[1], score, '+inf', 'BYSCORE', 'LIMIT', offset, limit, 'WITHSCORES')
  if #batch == 0 then break end
  for i = 1, #batch, 2 do
    if tonumber(batch[i + 1]) > score or batch[i] > id then
      found[#found + 1] = batch[i]
      if #found == limit then break end
    end
  end
  offset = offset + #batch / 2
end
return found
`);

export interface RedisSessionStoreOptions {
  redis: Redis;
  keys: ClusterKeys;
  /** This node: the one whose `end` counts for the sessions it puts. */
  nodeId: string;
  log: StoreLogger;
}

export class RedisSessionStore implements SessionStore {
  private readonly redis: Redis;
  private readonly keys: ClusterKeys;
  private readonly nodeId: string;
  private readonly log: StoreLogger;

  constructor(opts: RedisSessionStoreOptions) {
    this.redis = opts.redis;
    this.keys = opts.keys;
    this.nodeId = opts.nodeId;
    this.log = opts.log;
  }

  async put(meta: SessionMeta): Promise<void> {
    const key = this.keys.meta(meta.sessionId);
    await this.write('put', meta.sessionId, () =>
      this.redis
        .multi()
        .del(key)
        .hset(key, { ...fieldsOf(meta), node: this.nodeId })
        .zadd(this.keys.catalog(meta.workspaceCwd), -meta.updatedAt, meta.sessionId)
        .exec(),
    );
  }

  async get(sessionId: string): Promise<SessionMeta | undefined> {
    const fields = await this.read(() => this.redis.hgetall(this.keys.meta(sessionId)));
    return metaOf(fields);
  }

  async touch(sessionId: string, at: number): Promise<void> {
    await this.write('touch', sessionId, async () => {
      const catalog = await this.catalogOf(sessionId);
      if (catalog !== undefined) await TOUCH.run(this.redis, [this.keys.meta(sessionId), catalog], [at]);
    });
  }

  async end(sessionId: string, at: number, reason: string): Promise<void> {
    await this.write('end', sessionId, async () => {
      const catalog = await this.catalogOf(sessionId);
      if (catalog !== undefined)
        await END.run(this.redis, [this.keys.meta(sessionId), catalog], [at, reason, this.nodeId]);
    });
  }

  async name(sessionId: string, displayName: string): Promise<void> {
    await this.write('name', sessionId, () => NAME.run(this.redis, [this.keys.meta(sessionId)], [displayName]));
  }

  /** Every entry, found by SCAN: for tools and tests, not for a request's path. */
  async list(): Promise<SessionMeta[]> {
    const keys: string[] = [];
    await this.read(async () => {
      let cursor = '0';
      do {
        const [next, batch] = await this.redis.scan(cursor, 'MATCH', this.keys.meta('*'), 'COUNT', 1000);
        keys.push(...batch);
        cursor = next;
      } while (cursor !== '0');
    });
    return this.metas(keys);
  }

  async page({ workspaceCwd, after, limit }: SessionPageQuery): Promise<SessionMeta[]> {
    if (limit <= 0) return [];
    const catalog = this.keys.catalog(workspaceCwd);
    const ids = await this.read(async () =>
      after
        ? await AFTER.run(this.redis, [catalog], [-after.updatedAt, after.sessionId, limit])
        : await this.redis.zrange(catalog, '0', String(limit - 1)),
    );
    if (!Array.isArray(ids)) return [];
    const metas = await this.metas(
      ids.filter((id): id is string => typeof id === 'string').map((id) => this.keys.meta(id)),
    );
    return metas.filter((meta) => meta.workspaceCwd === workspaceCwd);
  }

  private async metas(keys: string[]): Promise<SessionMeta[]> {
    if (keys.length === 0) return [];
    const replies = await this.read(async () => {
      const pipeline = this.redis.pipeline();
      for (const key of keys) pipeline.hgetall(key);
      return (await pipeline.exec()) ?? [];
    });
    const metas: SessionMeta[] = [];
    for (const [err, fields] of replies) {
      if (err) throw new RedisUnavailableError('session catalog', err);
      const meta = isFields(fields) ? metaOf(fields) : undefined;
      if (meta) metas.push(meta);
    }
    return metas;
  }

  private async catalogOf(sessionId: string): Promise<string | undefined> {
    const workspace = await this.redis.hget(this.keys.meta(sessionId), 'workspaceCwd');
    return workspace === null ? undefined : this.keys.catalog(workspace);
  }

  private async read<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw new RedisUnavailableError('session catalog', err);
    }
  }

  private async write(op: string, sessionId: string, run: () => Promise<unknown>): Promise<void> {
    try {
      await run();
    } catch (err) {
      this.log.error({ err, op, sessionId }, 'session catalog write failed');
    }
  }
}

function isFields(value: unknown): value is Record<string, string> {
  return typeof value === 'object' && value !== null;
}

function fieldsOf(meta: SessionMeta): Record<string, string> {
  return {
    sessionId: meta.sessionId,
    workspaceCwd: meta.workspaceCwd,
    origin: meta.origin,
    createdAt: String(meta.createdAt),
    updatedAt: String(meta.updatedAt),
    ...(meta.endedAt !== undefined ? { endedAt: String(meta.endedAt) } : {}),
    ...(meta.endReason !== undefined ? { endReason: meta.endReason } : {}),
    ...(meta.displayName !== undefined ? { displayName: meta.displayName } : {}),
  };
}

/** The entry in a hash; undefined for none (an empty hash) or a broken one. */
function metaOf(fields: Record<string, string>): SessionMeta | undefined {
  const { sessionId, workspaceCwd, origin, createdAt, updatedAt, endedAt, endReason, displayName } = fields;
  if (sessionId === undefined || workspaceCwd === undefined) return undefined;
  const created = Number(createdAt);
  const updated = Number(updatedAt);
  if (!Number.isSafeInteger(created) || !Number.isSafeInteger(updated)) return undefined;
  const ended = endedAt === undefined ? undefined : Number(endedAt);
  return {
    sessionId,
    workspaceCwd,
    origin: origin === 'load' || origin === 'resume' ? origin : 'created',
    createdAt: created,
    updatedAt: updated,
    ...(ended !== undefined && Number.isSafeInteger(ended) ? { endedAt: ended } : {}),
    ...(endReason !== undefined ? { endReason } : {}),
    ...(displayName !== undefined ? { displayName } : {}),
  };
}
