/**
 * A session's event log in a Redis Stream (`s:{sid}:events`, entry id
 * `0-<event id>`, field `j` = the envelope's JSON; its epoch in
 * `s:{sid}:log`), so every node of a cluster serves the same ids in the same
 * epoch.
 *
 * The owner of the session writes it through a `RedisEventLog`: `append`
 * keeps the event in a write-through tail in memory (a `MemoryEventLog` with
 * the log's bounds) and in a pending list; `commit` sends every pending event
 * in one Lua call that checks the lease's fencing token first (an error reply
 * starting `FENCED` when another node took the session over, turned into a
 * `FencedError`), adds the events with their own ids, trims the stream to
 * what the tail holds (the count and byte bounds) and pushes the expiry of
 * both keys forward. The bus sends an event only once its commit resolved
 * (see `EventBus.flush`); a failed commit leaves the events pending for the
 * next one, and the script skips ids it already holds with the same text (a
 * reply lost with the connection), so nothing is ever written twice.
 *
 * Every other node serves the session's SSE from a follower: a bus whose log
 * mirrors the stream's tail and which one blocking connection per node feeds
 * (`XREAD BLOCK` over every followed stream at once; `CLIENT UNBLOCK` makes
 * it read the new set when a follower comes or goes).
 */
import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { Redis } from 'ioredis';
import { FencedError } from '../errors.js';
import { EventBus, frameOf, type BusEvent, type BusOptions, type EventEnvelope } from '../services/event-bus.js';
import { MemoryEventLog, type EventLog, type MemoryLogBounds } from '../services/event-log.js';
import type { ClusterKeys } from './keys.js';

/**
 * How long a session's stream and log key outlive its last write: every
 * commit pushes both expiries to this, so a session that ended (or whose
 * every node died) leaves nothing in Redis a week later, while a client
 * returning within the week still replays its events.
 */
export const EVENT_RETENTION_MS = 7 * 24 * 60 * 60 * 1000;

/** How long one XREAD of the follower reader blocks at most (a backstop: a change of the set unblocks it). */
const READ_BLOCK_MS = 5_000;
/** Entries one XREAD returns per stream at most. */
const READ_COUNT = 1_000;
const READ_RETRY_FIRST_MS = 50;
const READ_RETRY_MAX_MS = 1_000;

/** The event types after which a session streams nothing more: a follower closes once it fanned them out. */
const TERMINAL_TYPES = new Set(['session_closed', 'session_died']);

/**
 * KEYS: lease, events, log. ARGV: token, the oldest id the stream keeps
 * (the tail's first), the expiry in ms, then (id, json) pairs in id order.
 * Ids below the log's `next` were written already: only by this writer (the
 * token is ours) on an attempt whose reply was lost, so they must hold the
 * same text, and are skipped; any other text means another writer got there.
 */
const COMMIT_SCRIPT = `
local token = redis.call('HGET', KEYS[1], 'token')
if token ~= ARGV[1] then
  return redis.error_reply('FENCED lease token is ' .. tostring(token) .. ', not ' .. ARGV[1])
end
local nextId = tonumber(redis.call('HGET', KEYS[3], 'next') or '1')
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if top then
  local topId = tonumber(string.sub(top[1], 3))
  if topId >= nextId then nextId = topId + 1 end
end
for i = 4, #ARGV, 2 do
  local id = tonumber(ARGV[i])
  if id < nextId then
    local held = redis.call('XRANGE', KEYS[2], '0-' .. id, '0-' .. id)[1]
    if held and held[2][2] ~= ARGV[i + 1] then
      return redis.error_reply('FENCED event ' .. id .. ' was written by another writer')
    end
  else
    redis.call('XADD', KEYS[2], '0-' .. id, 'j', ARGV[i + 1])
    nextId = id + 1
  end
end
redis.call('HSET', KEYS[3], 'next', nextId)
redis.call('XTRIM', KEYS[2], 'MINID', '0-' .. ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return nextId
`;

export interface RedisEventStoreOptions {
  /** The node's command connection (fail-fast options); the follower reader is a duplicate of it. */
  redis: Redis;
  keys: ClusterKeys;
  /** The bounds of every session's stream and tail, as `--ring-size`/`--ring-bytes` bound a memory log. */
  bounds: MemoryLogBounds;
  log: FastifyBaseLogger;
  /** Options of every follower bus (queue caps, subscriber cap, stats). */
  bus?: Omit<BusOptions, 'log' | 'onIdle' | 'onFenced' | 'onCommitError'>;
}

/** A stream entry as Redis answers it: `[id, [field, value, ...]]`. */
type Entry = [string, string[]];

function entryId(id: string): number {
  return Number(id.slice(id.indexOf('-') + 1));
}

/** The bus event of a stored entry: the envelope parsed once, its frame rebuilt from the stored JSON. */
function entryEvent(entry: Entry): BusEvent | undefined {
  const fields = entry[1];
  const at = fields.indexOf('j');
  const json = at >= 0 ? fields[at + 1] : undefined;
  if (json === undefined) return undefined;
  return frameOf(JSON.parse(json) as EventEnvelope, json);
}

/**
 * XREAD's answer: an array of `[key, entries]` pairs (RESP2), or, as a map
 * (RESP3) comes through `call`, the keys and entries flat, alternating.
 */
type XreadReply = [string, Entry[]][] | (string | Entry[])[] | null;

function streamsOf(reply: NonNullable<XreadReply>): [string, Entry[]][] {
  if (reply.length === 0 || Array.isArray(reply[0])) return reply as [string, Entry[]][];
  const pairs: [string, Entry[]][] = [];
  for (let i = 0; i + 1 < reply.length; i += 2) pairs.push([reply[i] as string, reply[i + 1] as Entry[]]);
  return pairs;
}

/** A Redis error reply starting `FENCED` becomes a `FencedError`; anything else stays as it is. */
function fencedOr(err: unknown): unknown {
  return err instanceof Error && err.message.startsWith('FENCED') ? new FencedError(err.message) : err;
}

/**
 * The owner's log of one session: a tail in memory, written through to the
 * stream at `commit`. `after` serves from the tail, which always holds what
 * the stream holds (plus the pending events, which the bus never replays
 * before they are committed).
 */
export class RedisEventLog implements EventLog {
  /** Appended, not yet committed (kept again at the front when a commit fails). */
  private pending: BusEvent[] = [];
  private sending: Promise<void> | undefined;
  private readonly releaseWatchers = new Set<(count: number) => void>();

  constructor(
    readonly sessionId: string,
    private readonly tail: MemoryEventLog,
    private readonly redis: Redis,
    private readonly keys: ClusterKeys,
    private readonly token: () => number | undefined,
    private readonly released: (log: RedisEventLog) => void,
  ) {}

  get epoch(): string {
    return this.tail.epoch;
  }

  get nextId(): number {
    return this.tail.nextId;
  }

  get firstId(): number {
    return this.tail.firstId;
  }

  get size(): number {
    return this.tail.size;
  }

  get bytes(): number {
    return this.tail.bytes;
  }

  /** How many events wait for a commit. */
  get pendingCount(): number {
    return this.pending.length;
  }

  append(event: BusEvent): number {
    this.pending.push(event);
    return this.tail.append(event);
  }

  /**
   * Sends every pending event in one script call; one call at a time (a
   * commit asked for while one is in flight runs after it). Rejects with a
   * `FencedError` when this node no longer holds the session's lease (no
   * token, or not the lease's), with the Redis error otherwise; either way
   * the events stay pending.
   */
  commit(): Promise<void> | void {
    if (this.sending) return this.sending.then(() => this.commit());
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.sending = this.send(batch).then(
      () => {
        this.sending = undefined;
      },
      (err: unknown) => {
        this.sending = undefined;
        this.pending = batch.concat(this.pending);
        throw fencedOr(err);
      },
    );
    return this.sending;
  }

  private async send(batch: BusEvent[]): Promise<void> {
    const token = this.token();
    if (token === undefined) throw new FencedError(`FENCED no lease held on session ${this.sessionId}`);
    const args: (string | number)[] = [String(token), this.tail.firstId, EVENT_RETENTION_MS];
    for (const ev of batch) args.push(ev.id ?? 0, ev.json);
    const { keys, sessionId } = this;
    await this.redis.eval(
      COMMIT_SCRIPT,
      3,
      keys.lease(sessionId),
      keys.events(sessionId),
      keys.log(sessionId),
      ...args,
    );
  }

  /**
   * The bus watching this log: the store forgets the log once the last one
   * lets go (its bus closed). No drops are reported here: the tail's are
   * returned by `append`.
   */
  watchDrops(listener: (count: number) => void): () => void {
    this.releaseWatchers.add(listener);
    return () => {
      if (this.releaseWatchers.delete(listener) && this.releaseWatchers.size === 0) this.released(this);
    };
  }

  after(cursor: number): Iterable<BusEvent> {
    return this.tail.after(cursor);
  }
}

interface Follower {
  readonly sessionId: string;
  readonly key: string;
  readonly bus: EventBus;
}

/**
 * Every session log of one node: the owner's logs it opened (`open`) and the
 * followers it serves (`follow`), fed by one reader connection.
 */
export class RedisEventStore {
  private readonly logs = new Map<string, RedisEventLog>();
  private readonly followers = new Map<string, Follower>();
  /** Followers being set up (the tail loading), so two subscribers of one session share one. */
  private readonly starting = new Map<string, Promise<EventBus | undefined>>();
  private readonly reader: Redis;
  private readerId: number | undefined;
  /** Bumped whenever the set of followed streams changes. */
  private changes = 0;
  /** The XREAD in progress, if any (its sequence number): what `CLIENT UNBLOCK` may wake. */
  private reading: number | undefined;
  private readSeq = 0;
  private wakeIdle: (() => void) | undefined;
  private readFailing = false;
  private closed = false;
  private readonly loop: Promise<void>;

  constructor(private readonly opts: RedisEventStoreOptions) {
    this.reader = opts.redis.duplicate();
    // The reader's errors are handled where its commands fail; an 'error' event without a listener would throw.
    this.reader.on('error', () => {});
    this.loop = this.readLoop();
  }

  /**
   * The owner's log of `sessionId`: the epoch in `s:{sid}:log` (created when
   * the session has none yet), ids continuing the stream's, and its newest
   * events within the bounds in the tail. `token` gives the fencing token of
   * the lease this node holds (undefined: none, and commits are refused).
   */
  async open(sessionId: string, token: () => number | undefined): Promise<RedisEventLog> {
    const { redis, keys } = this.opts;
    const logKey = keys.log(sessionId);
    await redis.hsetnx(logKey, 'epoch', randomUUID());
    // A log opened and never written still goes away with the retention.
    await redis.pexpire(logKey, EVENT_RETENTION_MS);
    const tail = await this.loadTail(sessionId);
    if (!tail) throw new Error(`event log of session ${sessionId} vanished while opening`);
    const log = new RedisEventLog(sessionId, tail, redis, keys, token, (released) => {
      if (this.logs.get(sessionId) === released) this.logs.delete(sessionId);
    });
    this.logs.set(sessionId, log);
    return log;
  }

  /**
   * A bus serving `sessionId`'s stream on this node, which does not own the
   * session; undefined when Redis has no log of it. One per session, shared
   * by every local subscriber: closed when its last subscriber leaves, and
   * after fanning out `session_closed` or `session_died`.
   */
  follow(sessionId: string): Promise<EventBus | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    const known = this.followers.get(sessionId);
    if (known && !known.bus.isClosed) return Promise.resolve(known.bus);
    let started = this.starting.get(sessionId);
    if (!started) {
      started = this.startFollower(sessionId).finally(() => this.starting.delete(sessionId));
      this.starting.set(sessionId, started);
    }
    return started;
  }

  /** The epoch of `sessionId`'s log in Redis; undefined when it has none. */
  async epochOf(sessionId: string): Promise<string | undefined> {
    return (await this.opts.redis.hget(this.opts.keys.log(sessionId), 'epoch')) ?? undefined;
  }

  /** The sessions this node follows now (for tests and metrics). */
  get followed(): string[] {
    return [...this.followers.keys()];
  }

  /** Commits every owner log's pending events (at shutdown, before the lease is let go). */
  async flushAll(): Promise<void> {
    await Promise.all([...this.logs.values()].map(async (log) => log.commit()));
  }

  /** Stops the reader, closes the followers and forgets the logs. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const f of [...this.followers.values()]) f.bus.close();
    this.followers.clear();
    this.logs.clear();
    this.wakeIdle?.();
    this.reader.disconnect();
    await this.loop;
  }

  private async startFollower(sessionId: string): Promise<EventBus | undefined> {
    const { redis, keys } = this.opts;
    const present = await redis.exists(keys.events(sessionId), keys.log(sessionId));
    if (present === 0 || this.closed) return undefined;
    const tail = await this.loadTail(sessionId);
    if (!tail || this.closed) return undefined;
    const follower: Follower = {
      sessionId,
      key: keys.events(sessionId),
      bus: new EventBus({
        ...this.opts.bus,
        log: tail,
        // Deferred: the caller of `follow` subscribes in a continuation of this promise.
        onIdle: () =>
          setImmediate(() => {
            if (follower.bus.subscriberCount === 0) this.unfollow(follower);
          }),
      }),
    };
    this.followers.set(sessionId, follower);
    this.setChanged();
    return follower.bus;
  }

  private unfollow(follower: Follower): void {
    follower.bus.close();
    if (this.followers.get(follower.sessionId) !== follower) return;
    this.followers.delete(follower.sessionId);
    this.setChanged();
  }

  /**
   * The stream's newest events within the bounds, in a memory log of the
   * stream's epoch whose next id continues the stream. Undefined when the
   * session has no log key (no epoch).
   */
  private async loadTail(sessionId: string): Promise<MemoryEventLog | undefined> {
    const { redis, keys, bounds } = this.opts;
    const [epoch, next] = await redis.hmget(keys.log(sessionId), 'epoch', 'next');
    if (epoch === null) return undefined;
    const entries =
      bounds.maxEvents > 0
        ? ((await redis.call('XREVRANGE', keys.events(sessionId), '+', '-', 'COUNT', bounds.maxEvents)) as Entry[])
        : [];
    const newestFirst: BusEvent[] = [];
    let bytes = 0;
    for (const entry of entries) {
      const ev = entryEvent(entry);
      if (!ev) continue;
      // The newest event always stays, whatever its size, as the memory log keeps it.
      if (bounds.maxBytes > 0 && newestFirst.length > 0 && bytes + ev.bytes > bounds.maxBytes) break;
      newestFirst.push(ev);
      bytes += ev.bytes;
    }
    const top = entries[0] ? entryId(entries[0][0]) : 0;
    const nextId = Math.max(Number(next ?? 1), top + 1);
    const oldest = newestFirst.at(-1)?.id;
    const held = oldest !== undefined && top + 1 === nextId;
    const tail = new MemoryEventLog(bounds, { epoch, nextId: held ? oldest : nextId });
    if (held) for (let i = newestFirst.length - 1; i >= 0; i--) tail.append(newestFirst[i]);
    return tail;
  }

  private setChanged(): void {
    this.changes++;
    this.wakeIdle?.();
    void this.unblock();
  }

  /**
   * Wakes the blocked XREAD so the reader reads the new set. The XREAD may
   * not have reached Redis yet (UNBLOCK then answers 0): tried again a few
   * times while the same read is still in progress; its timeout is the last
   * resort.
   */
  private async unblock(): Promise<void> {
    const seq = this.reading;
    for (let attempt = 0; attempt < 20 && !this.closed && seq !== undefined && this.reading === seq; attempt++) {
      const id = this.readerId;
      if (id === undefined) return;
      try {
        if ((await this.opts.redis.call('CLIENT', 'UNBLOCK', id)) === 1) return;
      } catch {
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 10).unref());
    }
  }

  private async readLoop(): Promise<void> {
    let retryMs = 0;
    while (!this.closed) {
      if (this.followers.size === 0) {
        await new Promise<void>((resolve) => {
          this.wakeIdle = resolve;
        });
        this.wakeIdle = undefined;
        continue;
      }
      const changes = this.changes;
      const followed = [...this.followers.values()];
      try {
        this.readerId ??= (await this.reader.call('CLIENT', 'ID')) as number;
        if (changes !== this.changes) continue;
        const streams = followed.map((f) => f.key);
        const from = followed.map((f) => `0-${f.bus.lastEventId}`);
        this.reading = ++this.readSeq;
        const reply = (await this.reader.call(
          'XREAD',
          'COUNT',
          READ_COUNT,
          'BLOCK',
          READ_BLOCK_MS,
          'STREAMS',
          ...streams,
          ...from,
        )) as XreadReply;
        this.reading = undefined;
        if (this.readFailing) {
          this.readFailing = false;
          this.opts.log.warn('event stream reader reading again');
        }
        retryMs = 0;
        if (reply) this.deliver(streamsOf(reply));
      } catch (err) {
        this.reading = undefined;
        // A new connection has a new id.
        this.readerId = undefined;
        if (this.closed) break;
        if (!this.readFailing) {
          this.readFailing = true;
          this.opts.log.warn({ err }, 'event stream reader failing; followers wait and retry');
        }
        retryMs = Math.min(Math.max(READ_RETRY_FIRST_MS, retryMs * 2), READ_RETRY_MAX_MS);
        await new Promise((resolve) => setTimeout(resolve, retryMs).unref());
      }
    }
  }

  /** Hands every entry read to its follower, in order. */
  private deliver(reply: [string, Entry[]][]): void {
    const byKey = new Map([...this.followers.values()].map((f) => [f.key, f]));
    for (const [key, entries] of reply) {
      const follower = byKey.get(key);
      if (!follower) continue;
      for (const entry of entries) {
        if (follower.bus.isClosed) break;
        const ev = entryEvent(entry);
        if (!ev) continue;
        if (!follower.bus.ingest(ev)) {
          // Fell behind a trim: the events in between are gone. Its subscribers' streams end after what
          // they hold; they reconnect with their cursor to a new follower, which tells them
          // `state_resync_required` (cursor_expired) and replays what the stream holds.
          this.opts.log.warn(
            { sessionId: follower.sessionId, expected: follower.bus.lastEventId + 1, got: ev.id },
            'event stream follower fell behind a trim; resyncing its subscribers',
          );
          this.unfollow(follower);
          break;
        }
        if (TERMINAL_TYPES.has(ev.envelope.type)) {
          this.unfollow(follower);
          break;
        }
      }
    }
  }
}
