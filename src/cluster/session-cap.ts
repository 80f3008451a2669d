/**
 * The --max-sessions cap across the cluster. ZSET `live` holds every live
 * session's id scored by its lease's expiry (ms); a session counts while
 * its lease is unexpired, so a dead node's sessions leave the count on
 * their own once their leases lapse, with nobody to release them.
 *
 * `reserve` is one script, so two nodes cannot both take the last slot.
 * Times are the caller's (`now`, `expiresAt`): the lead passes the lease's
 * clock, tests move it.
 */
import type { Redis } from 'ioredis';
import { RedisUnavailableError } from '../errors.js';
import type { ClusterKeys } from './keys.js';
import { LuaScript } from './lua.js';

/** KEYS: live. ARGV: sid, max (-1: none), expiresAt, now. 1 when reserved (or already held), else 0. */
const RESERVE = new LuaScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
local max = tonumber(ARGV[2])
if max >= 0 and not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= max then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
`);

export class ClusterSessionCap {
  constructor(
    private readonly redis: Redis,
    private readonly keys: ClusterKeys,
  ) {}

  /**
   * Holds a slot for `sid` until `expiresAt`, unless `max` live sessions
   * hold one already (false); a session that holds one keeps it. `max` NaN
   * or infinite: no cap.
   */
  async reserve(sid: string, max: number, expiresAt: number, now: number): Promise<boolean> {
    const cap = Number.isFinite(max) ? Math.max(0, Math.floor(max)) : -1;
    const reply = await this.command(() => RESERVE.run(this.redis, [this.keys.live], [sid, cap, expiresAt, now]));
    return reply === 1;
  }

  /** Pushes the slots of these sessions (this node's, with their leases) to `expiresAt`; unknown ids are left out. */
  async renew(sids: readonly string[], expiresAt: number): Promise<void> {
    if (sids.length === 0) return;
    const members = sids.flatMap((sid) => [String(expiresAt), sid]);
    await this.command(() => this.redis.zadd(this.keys.live, 'XX', ...members));
  }

  async release(sid: string): Promise<void> {
    await this.command(() => this.redis.zrem(this.keys.live, sid));
  }

  /** Sessions whose slot is still held at `now`. */
  async count(now: number): Promise<number> {
    return this.command(() => this.redis.zcount(this.keys.live, `(${now}`, '+inf'));
  }

  private async command<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw new RedisUnavailableError('session cap', err);
    }
  }
}
