// The session event log in a Redis Stream, against a real redis-server: the owner's bus writes it through
// fenced commits, another node's follower serves it with the same ids and epoch, bounds hold in the stream,
// a new owner continues it, a stale owner is refused, and a Redis restart loses and duplicates nothing.
import type { FastifyBaseLogger } from 'fastify';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { RedisServer } from '../harness/redis.js';
import { within } from '../harness/wait.js';
import { ClusterKeys } from '../src/cluster/keys.js';
import { RedisEventStore, type RedisEventLog } from '../src/cluster/redis-event-log.js';
import { EventBus, frameOf, type BusEvent, type EventEnvelope } from '../src/services/event-bus.js';
import { SYSTEM_PACKAGES, requireSystemPackage } from './support/system-deps.js';

type Sub = AsyncIterableIterator<BusEvent>;

const silent = pino({ level: 'silent' }) as unknown as FastifyBaseLogger;

/** Reads exactly `n` items; fails if the iterator ends first. */
async function take(sub: Sub, n: number): Promise<BusEvent[]> {
  const out: BusEvent[] = [];
  for (let i = 0; i < n; i++) {
    const r = await within(sub.next(), `item ${i + 1} of ${n}`);
    if (r.done) throw new Error(`iterator ended after ${i} of ${n} items`);
    out.push(r.value);
  }
  return out;
}

/** Reads until the iterator is done. */
async function rest(sub: Sub): Promise<BusEvent[]> {
  const out: BusEvent[] = [];
  for (;;) {
    const r = await within(sub.next(), 'the end of the stream');
    if (r.done) return out;
    out.push(r.value);
  }
}

function ids(evs: BusEvent[]): (number | undefined)[] {
  return evs.map((ev) => ev.envelope.id);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

if (requireSystemPackage(t, SYSTEM_PACKAGES.redis)) {
  const server = await RedisServer.start();
  t.teardown(() => server.stop());
  let testNo = 0;

  /** A connection as a node makes it: commands fail fast while Redis is away. */
  async function connect(t: Test): Promise<Redis> {
    const redis = new Redis(server.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    redis.on('error', () => {});
    t.teardown(() => redis.disconnect());
    await within(new Promise((resolve) => redis.once('ready', resolve)), 'redis ready');
    return redis;
  }

  /** One node's store over a fresh key prefix shared by every node of the test. */
  interface Node {
    redis: Redis;
    keys: ClusterKeys;
    store: RedisEventStore;
  }

  async function cluster(
    t: Test,
    bounds = { maxEvents: 100, maxBytes: 0 },
  ): Promise<(() => Promise<Node>) & { keys: ClusterKeys }> {
    const keys = new ClusterKeys(`t${++testNo}:`);
    const make = async (): Promise<Node> => {
      const redis = await connect(t);
      const store = new RedisEventStore({ redis, keys, bounds, log: silent });
      t.teardown(() => store.close());
      return { redis, keys, store };
    };
    return Object.assign(make, { keys });
  }

  /** The owner's bus of `sid` on `node`, holding the lease with `token`. */
  async function owner(node: Node, sid: string, token: number, hooks: { onFenced?: () => void } = {}) {
    await node.redis.hset(node.keys.lease(sid), 'token', String(token));
    const log = await node.store.open(sid, () => token);
    const bus = new EventBus({ log, ...hooks });
    return { log, bus };
  }

  async function streamIds(node: Node, sid: string): Promise<number[]> {
    const entries = (await node.redis.call('XRANGE', node.keys.events(sid), '-', '+')) as [string, string[]][];
    return entries.map(([id]) => Number(id.split('-')[1]));
  }

  t.test(
    'a follower on another node: same epoch and ids, replay from a cursor, then live frames in order',
    async (t) => {
      const nodes = await cluster(t);
      const [a, b] = [await nodes(), await nodes()];
      t.equal(await b.store.follow('s1'), undefined, 'no log in Redis: nothing to follow');
      const { bus } = await owner(a, 's1', 1);
      const mine = bus.subscribe();
      for (let i = 1; i <= 5; i++) bus.publish('tick', { i });
      const sent = await take(mine, 5);

      const follower = await b.store.follow('s1');
      if (!follower) throw new Error('no follower');
      t.equal(await b.store.follow('s1'), follower, 'one follower per session per node');
      t.equal(follower.epoch, bus.epoch, 'same epoch');
      t.equal(follower.lastEventId, 5, 'same ids');
      const theirs = follower.subscribe({ lastEventId: 2, epoch: bus.epoch, snapshot: () => ({ s: 'x' }) });
      const opening = await take(theirs, 5);
      t.strictSame(
        opening.map((ev) => ev.envelope.type),
        ['tick', 'tick', 'tick', 'replay_complete', 'session_state'],
      );
      t.strictSame(
        opening.slice(0, 3).map((ev) => ev.frame),
        sent.slice(2).map((ev) => ev.frame),
        'the replay is the owner frames, byte for byte',
      );
      t.strictSame(opening[3]?.envelope.data, { lastReplayedEventId: 5, lastEventId: 5, replayedCount: 3 });

      for (let i = 6; i <= 9; i++) bus.publish('tick', { i });
      const live = await take(theirs, 4);
      t.strictSame(ids(live), [6, 7, 8, 9], 'live frames in order');
      t.strictSame(
        live.map((ev) => ev.json),
        (await take(mine, 4)).map((ev) => ev.json),
      );

      const stale = follower.subscribe({ lastEventId: 3, epoch: 'another', snapshot: () => ({}) });
      t.equal((await take(stale, 1))[0]?.envelope.type, 'state_resync_required', 'same opening frames as the owner');
      void stale.return?.();
      void theirs.return?.();
      await within(
        new Promise<void>((resolve) => {
          const check = () => (b.store.followed.length === 0 ? resolve() : setImmediate(check));
          check();
        }),
        'the follower closed with its last subscriber',
      );
      t.ok(follower.isClosed, 'closed when its last subscriber left');
      bus.close();
      await bus.drained();
    },
  );

  t.test('count and byte bounds hold in the stream as in the tail', async (t) => {
    const bounds = { maxEvents: 6, maxBytes: 600 };
    const nodes = await cluster(t, bounds);
    const a = await nodes();
    const { bus, log } = await owner(a, 's1', 1);
    const mine = bus.subscribe();
    for (let i = 1; i <= 30; i++) bus.publish('tick', { pad: 'x'.repeat((i * 37) % 150) });
    await take(mine, 30);
    const held = await streamIds(a, 's1');
    t.strictSame(held, ids([...log.after(0)]), 'the stream holds what the tail holds');
    t.ok(held.length <= bounds.maxEvents && held.length > 0, `count bound (${held.length})`);
    const entries = (await a.redis.call('XRANGE', a.keys.events('s1'), '-', '+')) as [string, string[]][];
    const bytes = entries.reduce((sum, [, f]) => {
      const json = f[1];
      return sum + frameOf(JSON.parse(json) as EventEnvelope, json).bytes;
    }, 0);
    t.ok(bytes <= bounds.maxBytes, `byte bound (${bytes})`);
    t.equal(held.at(-1), 30, 'the newest event stays');
    const ttl = await a.redis.pttl(a.keys.events('s1'));
    t.ok(ttl > 0, 'the stream expires');
    t.ok((await a.redis.pttl(a.keys.log('s1'))) > 0, 'the log key expires');
    bus.close();
    await bus.drained();
  });

  t.test('a new owner continues the epoch and ids; the old one is fenced and writes nothing', async (t) => {
    const nodes = await cluster(t);
    const [a, b] = [await nodes(), await nodes()];
    let fenced = 0;
    const old = await owner(a, 's1', 1, { onFenced: () => fenced++ });
    const oldSub = old.bus.subscribe();
    for (let i = 1; i <= 3; i++) old.bus.publish('tick', { i });
    await take(oldSub, 3);

    // Takeover: node b acquires the lease with the next token and opens the log.
    const taken = await owner(b, 's1', 2);
    t.equal(taken.bus.epoch, old.bus.epoch, 'same epoch');
    t.equal(taken.bus.lastEventId, 3, 'ids continue');

    old.bus.publish('tick', { stale: true });
    t.strictSame(await rest(oldSub), [], 'the stale owner sends nothing and its stream ends');
    t.equal(fenced, 1, 'onFenced once');
    t.ok(old.bus.isFenced);
    await t.rejects(Promise.resolve(old.log.commit()), { name: 'FencedError' }, 'a direct commit is refused too');

    const newSub = taken.bus.subscribe({ lastEventId: 0 });
    taken.bus.publish('tick', { fresh: true });
    t.strictSame(ids(await take(newSub, 4)), [1, 2, 3, 4]);
    t.strictSame(await streamIds(a, 's1'), [1, 2, 3, 4], 'each id once, none from the stale owner');
    const four = (await a.redis.call('XRANGE', a.keys.events('s1'), '0-4', '0-4')) as [string, string[]][];
    t.match(four[0]?.[1][1], /"fresh":true/);

    taken.bus.close();
    await taken.bus.drained();
    // Reopened by the same node (a restart of its bus): same epoch, ids go on.
    const again = await owner(b, 's1', 3);
    t.equal(again.bus.epoch, old.bus.epoch);
    t.equal(again.log.nextId, 5);
    again.bus.close();
  });

  t.test('a commit whose reply was lost is sent again without writing anything twice', async (t) => {
    const nodes = await cluster(t);
    const a = await nodes();
    const { log, bus } = await owner(a, 's1', 1);
    const sub = bus.subscribe();
    bus.publish('tick', { i: 1 });
    await take(sub, 1);
    // What a lost reply leaves: the events in Redis and still pending here.
    const pending = log as unknown as { pending: BusEvent[] };
    bus.publish('tick', { i: 2 });
    bus.publish('tick', { i: 3 });
    const [two, three] = [...log.after(1)];
    await take(sub, 2);
    pending.pending = [two, three];
    await log.commit();
    t.strictSame(await streamIds(a, 's1'), [1, 2, 3], 'the same events again are skipped');
    // Another writer's text under an id we think is ours: refused.
    pending.pending = [frameOf({ id: 3, v: 1, type: 'tick', data: { other: true } }, '{"other":true}')];
    await t.rejects(Promise.resolve(log.commit()), { name: 'FencedError' });
    t.strictSame(await streamIds(a, 's1'), [1, 2, 3]);
    bus.close();
  });

  t.test(
    'Redis killed and restarted while publishing: retried, nothing lost or duplicated, followers go on',
    async (t) => {
      const nodes = await cluster(t);
      const [a, b] = [await nodes(), await nodes()];
      const errors: unknown[] = [];
      await a.redis.hset(a.keys.lease('s1'), 'token', '1');
      const log: RedisEventLog = await a.store.open('s1', () => 1);
      const bus = new EventBus({ log, onCommitError: (err) => errors.push(err) });
      const mine = bus.subscribe();
      const follower = await b.store.follow('s1');
      if (!follower) throw new Error('no follower');
      const theirs = follower.subscribe({ lastEventId: 0 });

      for (let i = 1; i <= 10; i++) bus.publish('tick', { i });
      t.strictSame(ids(await take(mine, 10)), range(1, 10));
      await server.kill();
      for (let i = 11; i <= 20; i++) bus.publish('tick', { i });
      await within(
        new Promise<void>((resolve) => {
          const check = () => (bus.commitError !== undefined ? resolve() : setImmediate(check));
          check();
        }),
        'the commit failing',
      );
      t.ok(errors.length >= 1, 'the failure is reported');
      t.strictSame(mine.takeBuffered(), [], 'nothing uncommitted is sent');
      for (let i = 21; i <= 25; i++) bus.publish('tick', { i });
      await server.restart();
      for (let i = 26; i <= 30; i++) bus.publish('tick', { i });
      t.strictSame(ids(await take(mine, 20)), range(11, 30), 'the owner sends each once, in order');
      t.equal(bus.commitError, undefined, 'the error clears');
      t.strictSame(ids(await take(theirs, 30)), range(1, 30), 'the follower serves each once, in order');
      t.strictSame(await streamIds(a, 's1'), range(1, 30), 'the stream holds each once');

      bus.publish('session_closed', { reason: 'test' });
      bus.close();
      await bus.drained();
      t.strictSame(
        (await rest(mine)).map((ev) => ev.envelope.type),
        ['session_closed'],
        'close delivers the last frame on the owner',
      );
      t.strictSame(
        (await rest(theirs)).map((ev) => ev.envelope.type),
        ['session_closed'],
        'and on the follower, whose bus then closes',
      );
      t.ok(follower.isClosed);
      t.strictSame(b.store.followed, []);
    },
  );
}
