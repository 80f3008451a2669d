/**
 * Idempotency receipts in Redis, shared by every node: a retry that reaches
 * another node than the first request is still answered from its receipt.
 *
 * `receipt:{<key>}` holds the receipt's JSON with PX = the TTL, so Redis
 * removes it when it expires (`sweep` has nothing to do). The count bound
 * the local stores keep is, here, Redis's memory: receipts are small and
 * live for --idempotency-ttl, so size `maxmemory` for the keyed request rate
 * times the TTL. Keep `maxmemory-policy noeviction`: the volatile-* policies
 * would also evict leases and event streams, which carry TTLs too. When
 * Redis is full a receipt's write fails, is logged, and the answer still
 * goes out (its retry then runs again), as with a failed SQLite write.
 *
 * Claims (`claim:{<key>}`) let a duplicate that reaches another node while
 * the first runs wait for it (see plugins/idempotency.ts). A claim names its
 * node, the request's fingerprint and a deadline the node pushes forward
 * while the request runs; the key itself lives as long as a receipt would,
 * so once a deadline has passed without a receipt every later duplicate
 * learns that the request was interrupted, rather than finding nothing and
 * running it again. Keeping the receipt (`put`) drops the claim in the same
 * script, so a duplicate sees either the claim or the receipt, never neither.
 *
 * Deadlines are compared with the store's clock when one is injected (tests
 * move it), else with Redis's own (TIME), so the nodes' clocks do not matter.
 */
import type { Redis } from 'ioredis';
import { RedisUnavailableError } from '../errors.js';
import type { ClaimOutcome, Receipt, ReceiptClaims, ReceiptStore, StoredAnswer } from '../services/receipts.js';
import type { ClusterKeys } from './keys.js';
import { LuaScript } from './lua.js';

/** `now` from ARGV when given, else Redis's clock, in ms. */
const NOW = `
local now = tonumber(ARGV[#ARGV])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

/** KEYS: receipt, claim. ARGV: receipt JSON, TTL ms. */
const PUT = new LuaScript(`
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
`);

/** KEYS: receipt, claim. ARGV: fingerprint, node, claim TTL ms, record TTL ms, now. */
const CLAIM = new LuaScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return {'answered'} end
${NOW}
local held = redis.call('GET', KEYS[2])
if held then
  local claim = cjson.decode(held)
  if claim.deadline > now then return {'held', claim.node, claim.fingerprint} end
  return {'interrupted', claim.node, claim.fingerprint}
end
local claim = cjson.encode({node = ARGV[2], fingerprint = ARGV[1], deadline = now + tonumber(ARGV[3])})
redis.call('SET', KEYS[2], claim, 'PX', ARGV[4])
return {'claimed'}
`);

/** KEYS: claim. ARGV: node, claim TTL ms, now. */
const RENEW = new LuaScript(`
${NOW}
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local claim = cjson.decode(held)
-- A lapsed claim stays lapsed: duplicates may have been told it was interrupted.
if claim.node ~= ARGV[1] or claim.deadline <= now then return 0 end
claim.deadline = now + tonumber(ARGV[2])
redis.call('SET', KEYS[1], cjson.encode(claim), 'KEEPTTL')
return 1
`);

/** KEYS: claim. ARGV: node. */
const RELEASE = new LuaScript(`
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held).node == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`);

export interface RedisReceiptStoreOptions {
  redis: Redis;
  keys: ClusterKeys;
  /** How long a receipt is kept, in milliseconds. */
  ttlMs: number;
  /** A clock for expiry and claim deadlines (tests move it); Redis's own when absent. */
  now?: () => number;
}

export class RedisReceiptStore implements ReceiptStore, ReceiptClaims {
  private readonly redis: Redis;
  private readonly keys: ClusterKeys;
  private readonly ttlMs: number;
  private readonly clock: (() => number) | undefined;

  constructor(opts: RedisReceiptStoreOptions) {
    this.redis = opts.redis;
    this.keys = opts.keys;
    this.ttlMs = opts.ttlMs;
    this.clock = opts.now;
  }

  get claims(): ReceiptClaims {
    return this;
  }

  async get(key: string): Promise<Receipt | undefined> {
    const json = await this.command(() => this.redis.get(this.keys.receipt(key)));
    const receipt = json === null ? undefined : parseReceipt(json);
    if (receipt === undefined) return undefined;
    // Redis expires it on its own clock; an injected one may run ahead.
    return this.clock === undefined || receipt.expiresAt > this.clock() ? receipt : undefined;
  }

  async put(key: string, answer: StoredAnswer): Promise<void> {
    const createdAt = this.clock?.() ?? Date.now();
    const { fingerprint, status, headers, body } = answer;
    const receipt: Receipt = { fingerprint, status, headers, body, createdAt, expiresAt: createdAt + this.ttlMs };
    await this.command(() =>
      PUT.run(this.redis, [this.keys.receipt(key), this.keys.claim(key)], [JSON.stringify(receipt), this.ttlMs]),
    );
  }

  /** Redis expires receipts itself. */
  sweep(): number {
    return 0;
  }

  async claim(key: string, fingerprint: string, nodeId: string, ttlMs: number): Promise<ClaimOutcome> {
    const reply = await this.command(() =>
      CLAIM.run(
        this.redis,
        [this.keys.receipt(key), this.keys.claim(key)],
        [fingerprint, nodeId, ttlMs, this.ttlMs, this.nowArg()],
      ),
    );
    if (!Array.isArray(reply)) throw new RedisUnavailableError('idempotency claim', 'unexpected reply');
    const [state, node, held] = reply as unknown[];
    if (state === 'claimed' || state === 'answered') return { state };
    if ((state === 'held' || state === 'interrupted') && typeof node === 'string' && typeof held === 'string')
      return { state, node, fingerprint: held };
    throw new RedisUnavailableError('idempotency claim', 'unexpected reply');
  }

  async renewClaim(key: string, nodeId: string, ttlMs: number): Promise<boolean> {
    const renewed = await this.command(() =>
      RENEW.run(this.redis, [this.keys.claim(key)], [nodeId, ttlMs, this.nowArg()]),
    );
    return renewed === 1;
  }

  async releaseClaim(key: string, nodeId: string): Promise<void> {
    await this.command(() => RELEASE.run(this.redis, [this.keys.claim(key)], [nodeId]));
  }

  /** The clock argument of a script: empty for Redis's own. */
  private nowArg(): string {
    return this.clock === undefined ? '' : String(this.clock());
  }

  private async command<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw new RedisUnavailableError('idempotency receipts', err);
    }
  }
}

function parseReceipt(json: string): Receipt | undefined {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { fingerprint, status, headers, body, createdAt, expiresAt } = value as Record<string, unknown>;
  if (typeof fingerprint !== 'string' || typeof status !== 'number' || typeof body !== 'string') return undefined;
  if (typeof createdAt !== 'number' || typeof expiresAt !== 'number') return undefined;
  if (typeof headers !== 'object' || headers === null) return undefined;
  const kept = Object.entries(headers).filter((entry): entry is [string, string] => typeof entry[1] === 'string');
  return { fingerprint, status, headers: Object.fromEntries(kept), body, createdAt, expiresAt };
}
