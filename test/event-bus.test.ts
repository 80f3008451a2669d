// EventBus on its own (no HTTP): ids, the replay ring and its byte budget,
// synchronous registration, the per-subscriber live caps (count and bytes) and
// eviction, abort, close, the subscriber cap and the iterator protocol. Everything here is synchronous
// or microtask-driven, so no test waits on time.
import { getEventListeners } from 'node:events';
import t from 'tap';
import { FencedError, SubscriberLimitExceededError } from '../src/errors.js';
import {
  BusStats,
  DEFAULT_MAX_QUEUED,
  DEFAULT_MAX_QUEUED_BYTES,
  DEFAULT_MAX_SUBSCRIBERS,
  DEFAULT_RING_BYTES,
  DEFAULT_RING_SIZE,
  EventBus,
  type BusEvent,
  type EventEnvelope,
  type EventSubscription,
} from '../src/services/event-bus.js';
import { MemoryEventLog } from '../src/services/event-log.js';
import { range } from './support/values.js';

type Sub = AsyncIterableIterator<BusEvent>;

/** Reads every item until the iterator is done (bounded, so a bug cannot hang the test). */
async function drain(sub: Sub, bound = 100_000): Promise<EventEnvelope[]> {
  const out: EventEnvelope[] = [];
  for (let i = 0; i < bound; i++) {
    const r = await sub.next();
    if (r.done) return out;
    out.push(r.value.envelope);
  }
  throw new Error(`iterator still not done after ${bound} items`);
}

/** Reads exactly `n` items; fails if the iterator ends first. */
async function take(sub: Sub, n: number): Promise<EventEnvelope[]> {
  const out: EventEnvelope[] = [];
  for (let i = 0; i < n; i++) {
    const r = await sub.next();
    if (r.done) throw new Error(`iterator ended after ${i} of ${n} items`);
    out.push(r.value.envelope);
  }
  return out;
}

function ids(envs: EventEnvelope[]): (number | undefined)[] {
  return envs.map((e) => e.id);
}

function publishN(bus: EventBus, n: number, type = 'tick'): void {
  for (let i = 0; i < n; i++) bus.publish(type, { i });
}

/** Whether `p` is still pending once every queued microtask and one macrotask turn have run. */
async function stillPending(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  p.then(
    () => {
      settled = true;
    },
    () => {
      settled = true;
    },
  );
  await new Promise<void>((resolve) => setImmediate(resolve));
  return !settled;
}

/** What `fn` throws (undefined when it returns). */
function thrownBy(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

function abortListeners(signal: AbortSignal): number {
  return getEventListeners(signal, 'abort').length;
}

/** The UTF-8 size of the SSE frame of event `id`, worked out independently of the bus. */
function frameSize(id: number, type: string, data: unknown): number {
  const json = JSON.stringify({ id, v: 1, type, data });
  return Buffer.byteLength(`id: ${id}\nevent: ${type}\ndata: ${json}\n\n`);
}

/** What `bus` would replay to a subscriber arriving with `lastEventId` (the subscription is given back). */
function replayIds(bus: EventBus, lastEventId: number): (number | undefined)[] {
  const sub = bus.subscribe({ lastEventId });
  const got = sub.takeBuffered().map((ev) => ev.envelope.id);
  void sub.return?.();
  return got;
}

t.test('defaults match the contract constants', async (t) => {
  t.equal(DEFAULT_RING_SIZE, 4000);
  t.equal(DEFAULT_MAX_QUEUED, 256);
  t.equal(DEFAULT_MAX_SUBSCRIBERS, 64);
  t.equal(DEFAULT_RING_BYTES, 16 * 1024 * 1024);
  t.equal(DEFAULT_MAX_QUEUED_BYTES, 8 * 1024 * 1024);
});

t.test('ids start at 1 and increase by one; envelopes are {id, v:1, type, data} serialized once', async (t) => {
  const bus = new EventBus();
  t.equal(bus.lastEventId, 0, 'no event yet');
  const a = bus.publish('one', { x: 1 });
  const b = bus.publish('two', null);
  const c = bus.publish('three', 'text');
  t.strictSame(a, { id: 1, v: 1, type: 'one', data: { x: 1 } });
  t.strictSame(b, { id: 2, v: 1, type: 'two', data: null });
  t.strictSame(c, { id: 3, v: 1, type: 'three', data: 'text' });
  t.equal(bus.lastEventId, 3);

  const s1 = bus.subscribe({ lastEventId: 0 });
  const s2 = bus.subscribe({ lastEventId: 0 });
  const r1 = await s1.next();
  const r2 = await s2.next();
  t.notOk(r1.done);
  t.notOk(r2.done);
  if (r1.done || r2.done) return;
  t.equal(r1.value.json, '{"id":1,"v":1,"type":"one","data":{"x":1}}', 'key order id, v, type, data');
  t.equal(r1.value, r2.value, 'the same serialized event object goes to every subscriber');
  t.notOk('originatorClientId' in r1.value.envelope, 'originatorClientId is never set');

  const many = new EventBus();
  const got: number[] = [];
  for (let i = 0; i < 50; i++) got.push(many.publish('x', i)?.id ?? -1);
  t.strictSame(got, range(1, 50), 'strictly increasing, no gaps');
});

t.test('publish on a closed bus returns undefined and assigns no id', async (t) => {
  const bus = new EventBus();
  bus.publish('a', 1);
  bus.close();
  t.ok(bus.isClosed);
  t.equal(bus.publish('b', 2), undefined);
  t.equal(bus.lastEventId, 1, 'the id counter did not move');
  t.doesNotThrow(() => bus.close(), 'close is idempotent');
});

t.test('registration is synchronous: events published before iterating are delivered', async (t) => {
  const bus = new EventBus();
  bus.publish('before', 0);
  const sub = bus.subscribe();
  t.equal(bus.subscriberCount, 1, 'counted as soon as subscribe returns');
  bus.publish('after', 1);
  bus.publish('after', 2);
  bus.close();
  const got = await drain(sub);
  t.strictSame(ids(got), [2, 3], 'no replay without lastEventId, both live events delivered');
});

t.test('a pending next() is resolved directly by the next publish', async (t) => {
  const bus = new EventBus({ maxQueued: 1 });
  const sub = bus.subscribe();
  for (let i = 1; i <= 5; i++) {
    const p = sub.next();
    t.ok(await stillPending(p), 'nothing to read yet');
    bus.publish('tick', i);
    const r = await p;
    t.equal(r.done ? undefined : r.value.envelope.id, i);
  }
  t.equal(bus.subscriberCount, 1, 'a consumer that keeps up is never evicted, even with maxQueued 1');
});

t.test('replay with lastEventId', async (t) => {
  /** Subscribes with `lastEventId`, publishes one live marker, closes, and returns every id received. */
  async function replayed(bus: EventBus, lastEventId: number | undefined): Promise<(number | undefined)[]> {
    const sub = bus.subscribe(lastEventId === undefined ? {} : { lastEventId });
    const live = bus.publish('live', null);
    bus.close();
    const got = await drain(sub);
    t.equal(got.at(-1)?.id, live?.id, 'the live event comes after the replay');
    return ids(got);
  }
  function busWith(n: number, ringSize = 10): EventBus {
    const bus = new EventBus({ ringSize });
    publishN(bus, n);
    return bus;
  }

  t.strictSame(await replayed(busWith(5), 0), [1, 2, 3, 4, 5, 6], '0 replays the whole ring');
  t.strictSame(await replayed(busWith(5), 2), [3, 4, 5, 6], 'n replays the events after n');
  t.strictSame(await replayed(busWith(5), 4), [5, 6]);
  t.strictSame(await replayed(busWith(5), 5), [6], 'equal to the current id replays nothing');
  t.strictSame(await replayed(busWith(5), 1000), [6], 'beyond the current id replays nothing');
  t.strictSame(await replayed(busWith(5), Number.MAX_SAFE_INTEGER), [6]);
  t.strictSame(await replayed(busWith(5), undefined), [6], 'no lastEventId: live only');
  t.strictSame(await replayed(busWith(0), 0), [1], 'empty ring: nothing to replay');

  // Ring of 5 after 8 events holds 4..8.
  t.strictSame(await replayed(busWith(8, 5), 0), [4, 5, 6, 7, 8, 9]);
  t.strictSame(await replayed(busWith(8, 5), 1), [4, 5, 6, 7, 8, 9], 'predating the ring starts at the oldest');
  t.strictSame(await replayed(busWith(8, 5), 3), [4, 5, 6, 7, 8, 9], 'just before the oldest');
  t.strictSame(await replayed(busWith(8, 5), 4), [5, 6, 7, 8, 9], 'the oldest itself');
  t.strictSame(await replayed(busWith(8, 5), 7), [8, 9]);
  t.strictSame(await replayed(busWith(8, 5), 8), [9]);
});

t.test('replay is a snapshot: events published later arrive once, as live events', async (t) => {
  const bus = new EventBus();
  publishN(bus, 3);
  const sub = bus.subscribe({ lastEventId: 1 });
  t.strictSame(ids(await take(sub, 1)), [2]);
  publishN(bus, 2);
  bus.close();
  t.strictSame(ids(await drain(sub)), [3, 4, 5], 'no duplicates, no gaps');
});

t.test('the ring keeps only the newest ringSize events', async (t) => {
  const bus = new EventBus({ ringSize: 5 });
  publishN(bus, 12);
  const sub = bus.subscribe({ lastEventId: 0 });
  bus.close();
  t.strictSame(ids(await drain(sub)), range(8, 12));

  const wrapped = new EventBus({ ringSize: 5 });
  for (let round = 0; round < 4; round++) {
    publishN(wrapped, 3);
    const s = wrapped.subscribe({ lastEventId: 0 });
    const last = wrapped.lastEventId;
    const got = ids(await take(s, Math.min(5, last)));
    t.strictSame(got, range(Math.max(1, last - 4), last), `ring contents after ${last} events`);
    await s.return?.();
  }
});

t.test('replayed frames do not count toward maxQueued', async (t) => {
  const bus = new EventBus({ maxQueued: 3 });
  publishN(bus, 50);
  const sub = bus.subscribe({ lastEventId: 0 });
  publishN(bus, 3);
  t.equal(bus.subscriberCount, 1, '50 replayed + 3 live is within a cap of 3 live');

  // Reading some replay must not make room for more live events.
  t.strictSame(ids(await take(sub, 10)), range(1, 10));
  publishN(bus, 1);
  t.equal(bus.subscriberCount, 0, 'the 4th waiting live event evicts');
  const rest = await drain(sub);
  t.strictSame(ids(rest.slice(0, -1)), range(11, 53), 'remaining replay and the 3 live events that fit');
  t.strictSame(rest.at(-1), {
    v: 1,
    type: 'client_evicted',
    data: { reason: 'queue_overflow', droppedAfter: 54 },
  });
});

t.test('consuming live events makes room again', async (t) => {
  const bus = new EventBus({ maxQueued: 2 });
  const sub = bus.subscribe();
  publishN(bus, 2);
  t.strictSame(ids(await take(sub, 1)), [1]);
  publishN(bus, 1);
  t.equal(bus.subscriberCount, 1, 'one was consumed, so the third fits');
  publishN(bus, 1);
  t.equal(bus.subscriberCount, 0, 'now 3 would be waiting');
  await sub.return?.();
});

t.test('eviction: buffered frames, then client_evicted without id, then done; others unaffected', async (t) => {
  const maxQueued = 4;
  const bus = new EventBus({ maxQueued });
  const signal = new AbortController().signal;
  const slow = bus.subscribe({ signal });
  const fast = bus.subscribe();
  t.equal(abortListeners(signal), 1);

  const fastGot: EventEnvelope[] = [];
  for (let i = 0; i < maxQueued; i++) {
    bus.publish('tick', i);
    fastGot.push(...(await take(fast, 1)));
  }
  t.equal(bus.subscriberCount, 2, 'exactly maxQueued waiting live frames is still fine');

  const overflow = bus.publish('tick', 'overflow');
  t.equal(overflow?.id, 5);
  t.equal(bus.subscriberCount, 1, 'the slow subscriber is gone from the bus at once');
  t.equal(abortListeners(signal), 0, 'its abort listener is detached');
  fastGot.push(...(await take(fast, 1)));

  bus.publish('tick', 'later');
  fastGot.push(...(await take(fast, 1)));
  t.strictSame(ids(fastGot), [1, 2, 3, 4, 5, 6], 'the other subscriber got every event, including the overflow one');

  const slowGot = await drain(slow);
  t.strictSame(ids(slowGot.slice(0, -1)), [1, 2, 3, 4], 'buffered frames are still delivered');
  const evicted = slowGot.at(-1);
  t.strictSame(evicted, { v: 1, type: 'client_evicted', data: { reason: 'queue_overflow', droppedAfter: 5 } });
  t.notOk(evicted !== undefined && 'id' in evicted, 'the synthetic frame carries no id key at all');
  t.same(await slow.next(), { value: undefined, done: true }, 'done stays done');

  const late = bus.subscribe({ lastEventId: 0 });
  bus.close();
  t.strictSame(
    ids(await drain(late)),
    [1, 2, 3, 4, 5, 6],
    'the overflowing event still entered the ring, the synthetic one did not',
  );
  t.equal(bus.lastEventId, 6, 'eviction consumed no id');
});

t.test('per-subscription maxQueued overrides the bus default', async (t) => {
  const bus = new EventBus({ maxQueued: 100 });
  const tight = bus.subscribe({ maxQueued: 1 });
  const loose = bus.subscribe();
  publishN(bus, 2);
  t.equal(bus.subscriberCount, 1);
  const got = await drain(tight);
  t.strictSame(
    got.map((e) => e.type),
    ['tick', 'client_evicted'],
  );
  t.same(got[1]?.data, { reason: 'queue_overflow', droppedAfter: 2 });
  await loose.return?.();
});

t.test('eviction with the default cap happens on live frame 257', async (t) => {
  const bus = new EventBus();
  const sub = bus.subscribe();
  publishN(bus, DEFAULT_MAX_QUEUED);
  t.equal(bus.subscriberCount, 1);
  publishN(bus, 1);
  t.equal(bus.subscriberCount, 0);
  const got = await drain(sub);
  t.equal(got.length, DEFAULT_MAX_QUEUED + 1);
  t.same(got.at(-1)?.data, { reason: 'queue_overflow', droppedAfter: DEFAULT_MAX_QUEUED + 1 });
});

t.test('abort discards buffered items and ends the iterator', async (t) => {
  const bus = new EventBus();
  publishN(bus, 3);
  const ac = new AbortController();
  const sub = bus.subscribe({ lastEventId: 0, signal: ac.signal });
  publishN(bus, 3);
  t.strictSame(ids(await take(sub, 1)), [1]);
  ac.abort();
  t.equal(bus.subscriberCount, 0, 'disposed immediately');
  t.equal(abortListeners(ac.signal), 0);
  t.same(await sub.next(), { value: undefined, done: true }, 'replayed and live leftovers are discarded');
  bus.publish('after', null);
  t.same(await sub.next(), { value: undefined, done: true }, 'nothing more after abort');
});

t.test('abort resolves a pending next() with done', async (t) => {
  const bus = new EventBus();
  const ac = new AbortController();
  const sub = bus.subscribe({ signal: ac.signal });
  const p = sub.next();
  t.ok(await stillPending(p));
  ac.abort();
  t.same(await p, { value: undefined, done: true });
  t.equal(bus.subscriberCount, 0);
});

t.test('an already-aborted signal gives an ended, unregistered subscription', async (t) => {
  const bus = new EventBus({ maxSubscribers: 1 });
  publishN(bus, 3);
  const signal = AbortSignal.abort();
  const sub = bus.subscribe({ lastEventId: 0, signal });
  t.equal(bus.subscriberCount, 0);
  t.equal(abortListeners(signal), 0, 'no listener left on the signal');
  bus.publish('live', null);
  t.same(await sub.next(), { value: undefined, done: true }, 'neither replay nor live events');
  t.doesNotThrow(() => bus.subscribe(), 'it did not take the only slot');
});

t.test('subscriber cap', async (t) => {
  const bus = new EventBus({ maxSubscribers: 2 });
  const a = bus.subscribe();
  bus.subscribe();
  const thrown = thrownBy(() => bus.subscribe());
  t.ok(thrown instanceof SubscriberLimitExceededError, 'throws SubscriberLimitExceededError');
  if (thrown instanceof SubscriberLimitExceededError) {
    t.equal(thrown.limit, 2);
    t.equal(thrown.statusCode, 429);
    t.equal(thrown.retryAfter, 5);
    t.equal(thrown.message, 'EventBus subscriber limit reached (2)');
    t.strictSame(thrown.envelope(), {
      error: 'EventBus subscriber limit reached (2)',
      code: 'subscriber_limit_exceeded',
      limit: 2,
    });
  }
  t.equal(bus.subscriberCount, 2, 'the refused subscriber was not counted');
  await a.return?.();
  t.equal(bus.subscriberCount, 1);
  t.doesNotThrow(() => bus.subscribe(), 'a freed slot can be taken again');

  const dflt = new EventBus();
  for (let i = 0; i < DEFAULT_MAX_SUBSCRIBERS; i++) dflt.subscribe();
  const refused = thrownBy(() => dflt.subscribe());
  t.ok(refused instanceof SubscriberLimitExceededError && refused.limit === 64, 'the default cap is 64');
  t.equal(dflt.subscriberCount, 64);
});

t.test('close drains every subscriber, then ends', async (t) => {
  const bus = new EventBus();
  const ac = new AbortController();
  const a = bus.subscribe({ signal: ac.signal });
  const waiting = bus.subscribe();
  const pending = waiting.next();
  publishN(bus, 3);
  bus.close();
  t.equal(bus.subscriberCount, 0);
  t.equal(abortListeners(ac.signal), 0, 'abort listeners detached on close');
  t.strictSame(ids(await drain(a)), [1, 2, 3], 'buffered events survive close');
  const first = await pending;
  t.equal(first.done ? undefined : first.value.envelope.id, 1);
  t.strictSame(ids(await drain(waiting)), [2, 3]);

  const idle = new EventBus();
  const sub = idle.subscribe();
  const p = sub.next();
  t.ok(await stillPending(p));
  idle.close();
  t.same(await p, { value: undefined, done: true }, 'a pending next() ends on close');
});

t.test('close after session_died: the terminal event is the last one delivered', async (t) => {
  const bus = new EventBus();
  const sub = bus.subscribe();
  bus.publish('session_update', {});
  bus.publish('session_died', { reason: 'killed' });
  bus.close();
  const got = await drain(sub);
  t.strictSame(
    got.map((e) => e.type),
    ['session_update', 'session_died'],
  );
});

t.test('subscribe on a closed bus returns an empty iterable', async (t) => {
  const bus = new EventBus({ maxSubscribers: 1 });
  publishN(bus, 3);
  bus.close();
  const sub = bus.subscribe({ lastEventId: 0 });
  t.same(await sub.next(), { value: undefined, done: true }, 'no replay either');
  t.doesNotThrow(() => bus.subscribe(), 'no cap check on a closed bus');
  t.equal(bus.subscriberCount, 0);
  const seen: BusEvent[] = [];
  for await (const ev of bus.subscribe()) seen.push(ev);
  t.equal(seen.length, 0, 'for await ends at once');
});

t.test('iterator return() discards, ends and disposes', async (t) => {
  const bus = new EventBus();
  const ac = new AbortController();
  const sub = bus.subscribe({ signal: ac.signal });
  publishN(bus, 3);
  t.equal(typeof sub.return, 'function');
  t.same(await sub.return?.(), { value: undefined, done: true });
  t.equal(bus.subscriberCount, 0);
  t.equal(abortListeners(ac.signal), 0);
  t.same(await sub.next(), { value: undefined, done: true }, 'buffered events discarded');

  // break out of for await calls return().
  const other = bus.subscribe();
  publishN(bus, 3);
  const got: number[] = [];
  for await (const ev of other) {
    got.push(ev.envelope.id ?? -1);
    if (got.length === 2) break;
  }
  t.strictSame(got, [4, 5]);
  t.equal(bus.subscriberCount, 0, 'break disposed the subscription');
  t.equal(other[Symbol.asyncIterator](), other, 'the subscription is its own async iterator');
});

t.test('subscriberCount bookkeeping across eviction, abort, return and close', async (t) => {
  const bus = new EventBus({ maxQueued: 1 });
  const ac = new AbortController();
  const evicted = bus.subscribe();
  const aborted = bus.subscribe({ signal: ac.signal });
  const returned = bus.subscribe();
  const reader = bus.subscribe();
  const closed = bus.subscribe();
  t.equal(bus.subscriberCount, 5);

  ac.abort();
  t.equal(bus.subscriberCount, 4, 'abort');
  await returned.return?.();
  t.equal(bus.subscriberCount, 3, 'return()');

  const readerNext = reader.next();
  const closedNext = closed.next();
  bus.publish('a', 1);
  await readerNext;
  await closedNext;
  t.equal(bus.subscriberCount, 3, 'one queued event in evicted, the others consumed theirs');
  bus.publish('b', 2);
  t.equal(bus.subscriberCount, 2, 'eviction');
  ac.abort();
  t.equal(bus.subscriberCount, 2, 'a second abort changes nothing');

  bus.close();
  t.equal(bus.subscriberCount, 0, 'close');
  await drain(evicted);
  await drain(aborted);
  await drain(reader);
  await drain(closed);
  t.equal(bus.subscriberCount, 0);
});

t.test('each event carries its SSE frame, and a backlog can be taken at once', async (t) => {
  const bus = new EventBus();
  bus.publish('session_update', { n: 1 });
  bus.publish('session_update', { n: 2 });
  const sub = bus.subscribe({ lastEventId: 0 });
  bus.publish('permission_request', { n: 3 });
  const backlog = sub.takeBuffered();
  t.same(
    backlog.map((e) => e.envelope.id),
    [1, 2, 3],
    'replayed and live events, in order',
  );
  t.equal(backlog[0]?.frame, `id: 1\nevent: session_update\ndata: ${backlog[0]?.json}\n\n`);
  t.equal(
    backlog[2]?.frame,
    `id: 3\nevent: permission_request\ndata: {"id":3,"v":1,"type":"permission_request","data":{"n":3}}\n\n`,
  );
  t.same(sub.takeBuffered(), [], 'nothing is handed out twice');
  bus.publish('session_update', { n: 4 });
  const next = await sub.next();
  t.equal(next.value?.envelope.id, 4, 'iteration goes on after a take');
  t.same(bus.subscribe().takeBuffered(), [], 'a live-only subscriber starts empty');
  bus.close();
  t.same(bus.subscribe().takeBuffered(), [], 'a closed bus hands out nothing');
});

// ---- byte budgets -----------------------------------------------------------

t.test('each event knows its frame size in UTF-8 bytes', async (t) => {
  const bus = new EventBus();
  const sub = bus.subscribe();
  bus.publish('tick', 'plain');
  bus.publish('tick', 'é ✓ 😀');
  const [plain, wide] = sub.takeBuffered();
  t.equal(plain?.bytes, Buffer.byteLength(plain?.frame ?? ''));
  t.equal(plain?.bytes, plain?.frame.length, 'ASCII: one byte per character');
  t.equal(wide?.bytes, Buffer.byteLength(wide?.frame ?? ''));
  t.ok((wide?.bytes ?? 0) > (wide?.frame.length ?? 0), 'non-ASCII: more bytes than UTF-16 units');
  t.equal(wide?.bytes, frameSize(2, 'tick', 'é ✓ 😀'));
});

t.test('the ring drops its oldest events to stay within ringBytes, but always keeps the newest', async (t) => {
  const stats = new BusStats();
  const small = 'x'.repeat(200);
  // Ids 1..9 all have one digit, so every small frame has the same size.
  const size = frameSize(1, 'tick', small);
  const bus = new EventBus({ ringBytes: 3 * size, stats });
  for (let i = 0; i < 6; i++) bus.publish('tick', small);
  t.equal(bus.ringBytes, 3 * size, 'three frames fill the budget exactly');
  t.equal(stats.dropped, 3, 'the three oldest were dropped');
  t.strictSame(replayIds(bus, 0), [4, 5, 6], 'replay from before the ring starts at its oldest event');
  t.strictSame(replayIds(bus, 1), [4, 5, 6]);
  t.strictSame(replayIds(bus, 4), [5, 6], 'replay after eviction still starts right after the given id');
  t.strictSame(replayIds(bus, 6), []);

  const big = 'y'.repeat(10 * size);
  bus.publish('tick', big);
  t.strictSame(replayIds(bus, 0), [7], 'an event over the whole budget evicts everything else');
  t.equal(bus.ringBytes, frameSize(7, 'tick', big), '...and stays, alone over budget');
  t.equal(stats.dropped, 6);

  bus.publish('tick', small);
  t.strictSame(replayIds(bus, 0), [8], 'the next event pushes the oversized one out');
  bus.publish('tick', small);
  t.strictSame(replayIds(bus, 0), [8, 9]);
  t.equal(bus.ringBytes, 2 * size);
  t.equal(stats.dropped, 7);
  t.equal(stats.published, 9);

  const sub = bus.subscribe({ lastEventId: 7 });
  bus.close();
  const got = await drain(sub);
  t.strictSame(ids(got), [8, 9]);
  t.equal(got[0]?.data, small, 'replayed events carry their data');
});

t.test('ringBytes 0 bounds the ring by count only; the count cap holds with a byte budget too', async (t) => {
  const large = 'z'.repeat(100_000);
  const countOnly = new EventBus({ ringSize: 5, ringBytes: 0 });
  for (let i = 0; i < 7; i++) countOnly.publish('tick', large);
  t.strictSame(replayIds(countOnly, 0), [3, 4, 5, 6, 7]);
  t.ok(countOnly.ringBytes > 5 * large.length, 'no byte limit');

  const both = new EventBus({ ringSize: 2, ringBytes: 1024 * 1024 });
  publishN(both, 5);
  t.strictSame(replayIds(both, 0), [4, 5], 'far under the byte budget, the count still applies');
  t.equal(both.ringBytes, frameSize(4, 'tick', { i: 3 }) + frameSize(5, 'tick', { i: 4 }));
});

t.test('a subscriber whose waiting live bytes would exceed maxQueuedBytes is evicted', async (t) => {
  const stats = new BusStats();
  const payload = 'x'.repeat(300);
  const size = frameSize(1, 'tick', payload);
  const bus = new EventBus({ maxQueuedBytes: 3 * size, stats });
  const slow = bus.subscribe();
  const reader = bus.subscribe();
  const readerGot: EventEnvelope[] = [];
  for (let i = 0; i < 3; i++) {
    bus.publish('tick', payload);
    readerGot.push(...(await take(reader, 1)));
  }
  t.equal(bus.subscriberCount, 2, 'exactly maxQueuedBytes waiting is still fine');
  t.equal(stats.evicted, 0);

  bus.publish('tick', payload);
  t.equal(bus.subscriberCount, 1, 'one frame more evicts the slow subscriber, far below the count cap');
  t.equal(stats.evicted, 1);
  readerGot.push(...(await take(reader, 1)));
  t.strictSame(ids(readerGot), [1, 2, 3, 4], 'the reading subscriber is unaffected');

  bus.close();
  const slowGot = await drain(slow);
  t.strictSame(ids(slowGot.slice(0, -1)), [1, 2, 3], 'what fit is still delivered');
  t.strictSame(slowGot.at(-1), {
    v: 1,
    type: 'client_evicted',
    data: { reason: 'queue_overflow', droppedAfter: 4 },
  });
});

t.test('maxQueuedBytes: replay does not count, one event of any size fits an empty queue', async (t) => {
  const budget = 1000;
  const bus = new EventBus({ maxQueuedBytes: budget, ringBytes: 0 });
  for (let i = 0; i < 5; i++) bus.publish('tick', 'r'.repeat(budget));
  const sub = bus.subscribe({ lastEventId: 0 });
  bus.publish('tick', 'L'.repeat(5 * budget));
  t.equal(bus.subscriberCount, 1, '5 replayed frames over budget and one live frame over budget: still subscribed');
  t.strictSame(ids(await take(sub, 5)), [1, 2, 3, 4, 5], 'reading the replay');
  bus.publish('tick', 'small');
  t.equal(bus.subscriberCount, 0, 'a second live frame on top of the oversized one evicts');
  bus.close();
  const rest = await drain(sub);
  t.strictSame(
    rest.map((e) => e.type),
    ['tick', 'client_evicted'],
  );
  t.same(rest.at(-1)?.data, { reason: 'queue_overflow', droppedAfter: 7 });
});

t.test('consuming live events gives their bytes back', async (t) => {
  const payload = 'x'.repeat(300);
  const size = frameSize(1, 'tick', payload);
  const bus = new EventBus({ maxQueuedBytes: 2 * size });
  const sub = bus.subscribe();
  bus.publish('tick', payload);
  bus.publish('tick', payload);
  t.strictSame(ids(await take(sub, 1)), [1], 'next() frees one frame');
  bus.publish('tick', payload);
  t.equal(bus.subscriberCount, 1, 'so the third fits');
  t.strictSame(
    sub.takeBuffered().map((e) => e.envelope.id),
    [2, 3],
    'takeBuffered() frees both',
  );
  bus.publish('tick', payload);
  bus.publish('tick', payload);
  t.equal(bus.subscriberCount, 1, 'two more fit again');
  bus.publish('tick', payload);
  t.equal(bus.subscriberCount, 0, 'a third does not');
  await sub.return?.();
});

t.test('takeBuffered(maxBytes) hands out the leading events that fit, and keeps the counts right', async (t) => {
  const payload = 'x'.repeat(300);
  const size = frameSize(1, 'tick', payload);
  const bus = new EventBus({ maxQueuedBytes: 2 * size });
  bus.publish('tick', payload);
  bus.publish('tick', payload);
  const sub = bus.subscribe({ lastEventId: 0 });
  bus.publish('tick', payload);
  bus.publish('tick', payload);
  t.equal(bus.subscriberCount, 1, '2 replayed + 2 live frames, the live ones exactly at the budget');

  t.same(sub.takeBuffered(0), [], 'nothing fits in 0 bytes');
  t.same(sub.takeBuffered(size - 1), [], 'an event larger than maxBytes is left for next()');
  t.strictSame(
    sub.takeBuffered(3 * size + 1).map((e) => e.envelope.id),
    [1, 2, 3],
    'both replayed events and the first live one',
  );
  bus.publish('tick', payload);
  t.equal(bus.subscriberCount, 1, 'the live frame taken freed its bytes, the replayed ones freed none');
  bus.publish('tick', payload);
  t.equal(bus.subscriberCount, 0, 'three live frames waiting are over the budget');
  bus.close();
  const rest = await drain(sub);
  t.strictSame(ids(rest), [4, 5, undefined]);
});

t.test('per-subscription maxQueuedBytes overrides the bus default', async (t) => {
  const bus = new EventBus({ maxQueuedBytes: 0 });
  const tight = bus.subscribe({ maxQueuedBytes: 1 });
  const loose = bus.subscribe();
  publishN(bus, 2);
  t.equal(bus.subscriberCount, 1, 'the tight one is gone after its second frame');
  publishN(bus, 298);
  t.equal(bus.subscriberCount, 0, 'the loose one (maxQueuedBytes 0: count only) at the count cap');
  bus.close();
  const got = await drain(tight);
  t.strictSame(
    got.map((e) => e.type),
    ['tick', 'client_evicted'],
    'one frame, then evicted on the second',
  );
  t.same(got[1]?.data, { reason: 'queue_overflow', droppedAfter: 2 });
  const looseGot = await drain(loose);
  t.equal(looseGot.length, DEFAULT_MAX_QUEUED + 1, 'the loose one lasted until the count cap');
});

t.test('a publish whose data cannot be serialised throws and uses up no id', async (t) => {
  const stats = new BusStats();
  const bus = new EventBus({ stats });
  const sub = bus.subscribe();
  bus.publish('ok', 1);

  let deep: unknown = null;
  for (let i = 0; i < 100_000; i++) deep = [deep];
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  const bad: [string, unknown, ErrorConstructor][] = [
    ['too deeply nested', deep, RangeError],
    ['cyclic', cyclic, TypeError],
    ['a BigInt', 10n, TypeError],
  ];
  for (const [label, data, kind] of bad) {
    const err = thrownBy(() => bus.publish('bad', data));
    t.ok(err instanceof kind, `${label}: throws ${kind.name}`);
    t.equal(bus.lastEventId, 1, `${label}: no id used up`);
  }
  t.equal(stats.published, 1, 'nothing counted as published');
  t.strictSame(replayIds(bus, 0), [1], 'nothing entered the ring');

  t.equal(bus.publish('ok', 2)?.id, 2, 'the next publish gets the next id');
  bus.close();
  const got = await drain(sub);
  t.strictSame(ids(got), [1, 2], 'the subscriber sees dense ids');
  t.strictSame(
    got.map((e) => e.type),
    ['ok', 'ok'],
  );
});

t.test('the envelope JSON is what JSON.stringify gives for the whole envelope', async (t) => {
  const bus = new EventBus();
  const sub = bus.subscribe();
  const samples: unknown[] = [undefined, null, 0, 'text "quoted"\n', [1, { a: undefined }], { toJSON: () => 'custom' }];
  for (const data of samples) bus.publish('type "odd"', data);
  const got = sub.takeBuffered();
  t.equal(got.length, samples.length);
  for (const ev of got) t.equal(ev.json, JSON.stringify(ev.envelope), `data ${String(ev.json)}`);
});

// ---- the opening of a client's stream (subscribe with a snapshot) ---------------

/** What a subscriber has buffered now: [type, id] per event. */
function buffered(sub: EventSubscription): [string, number | undefined][] {
  return sub.takeBuffered().map((ev) => [ev.envelope.type, ev.envelope.id]);
}

function dataOf(sub: EventSubscription, type: string): unknown {
  return sub.takeBuffered().find((ev) => ev.envelope.type === type)?.envelope.data;
}

t.test('a client stream without a cursor: replay_complete then session_state, no ids, then live', async (t) => {
  const bus = new EventBus();
  publishN(bus, 3);
  const sub = bus.subscribe({ snapshot: () => ({ state: 'now', at: bus.lastEventId }) });
  bus.publish('tick', { live: true });
  const first = await take(sub, 3);
  t.strictSame(first, [
    { v: 1, type: 'replay_complete', data: { lastReplayedEventId: null, lastEventId: 3, replayedCount: 0 } },
    { v: 1, type: 'session_state', data: { state: 'now', at: 3 } },
    { id: 4, v: 1, type: 'tick', data: { live: true } },
  ]);
  t.equal(bus.subscribe({}).takeBuffered().length, 0, 'a subscribe without a snapshot gets no opening frames');
});

t.test('a cursor in the log, with no epoch or the right one: the replay, then the two frames, then live', async (t) => {
  for (const epoch of [undefined, 'same']) {
    const bus = new EventBus();
    const wanted = epoch === undefined ? undefined : bus.epoch;
    publishN(bus, 5);
    const sub = bus.subscribe({ lastEventId: 2, epoch: wanted, snapshot: () => 'state' });
    bus.publish('tick', {});
    t.strictSame(buffered(sub), [
      ['tick', 3],
      ['tick', 4],
      ['tick', 5],
      ['replay_complete', undefined],
      ['session_state', undefined],
      ['tick', 6],
    ]);
    const again = bus.subscribe({ lastEventId: 2, epoch: wanted, snapshot: () => 'state' });
    t.strictSame(dataOf(again, 'replay_complete'), { lastReplayedEventId: 6, lastEventId: 6, replayedCount: 4 });
    const atHead = bus.subscribe({ lastEventId: 6, epoch: wanted, snapshot: () => 'state' });
    t.strictSame(
      buffered(atHead),
      [
        ['replay_complete', undefined],
        ['session_state', undefined],
      ],
      'a cursor at the newest event: nothing to replay, no resync',
    );
  }
});

t.test('a cursor from another epoch: state_resync_required, then every event held', async (t) => {
  const bus = new EventBus();
  publishN(bus, 3);
  const sub = bus.subscribe({ lastEventId: 2, epoch: 'another', snapshot: () => ({}) });
  const events = sub.takeBuffered().map((ev) => ev.envelope);
  t.strictSame(
    events.map((e) => [e.type, e.id]),
    [
      ['state_resync_required', undefined],
      ['tick', 1],
      ['tick', 2],
      ['tick', 3],
      ['replay_complete', undefined],
      ['session_state', undefined],
    ],
  );
  t.strictSame(events[0]?.data, {
    reason: 'epoch_reset',
    detail: 'epoch_mismatch',
    lastDeliveredId: 2,
    earliestAvailableId: 1,
  });
  t.strictSame(events[4]?.data, { lastReplayedEventId: 3, lastEventId: 3, replayedCount: 3 });
  const noCursor = bus.subscribe({ epoch: 'another', snapshot: () => ({}) });
  t.strictSame(
    buffered(noCursor).map(([type]) => type),
    ['replay_complete', 'session_state'],
    'an epoch without a cursor is no reason to resync',
  );
});

t.test('a cursor ahead of the log: cursor_ahead, then every event held', async (t) => {
  const bus = new EventBus();
  publishN(bus, 2);
  const sub = bus.subscribe({ lastEventId: 3, snapshot: () => ({}) });
  const events = sub.takeBuffered().map((ev) => ev.envelope);
  t.strictSame(
    events.map((e) => e.id),
    [undefined, 1, 2, undefined, undefined],
  );
  t.match(events[0], {
    type: 'state_resync_required',
    data: { detail: 'cursor_ahead', lastDeliveredId: 3, earliestAvailableId: 1 },
  });
});

t.test('a cursor older than the log holds: cursor_expired; one just before the oldest event is not', async (t) => {
  const bus = new EventBus({ ringSize: 3 });
  publishN(bus, 5);
  const expired = bus.subscribe({ lastEventId: 1, snapshot: () => ({}) });
  const events = expired.takeBuffered().map((ev) => ev.envelope);
  t.strictSame(
    events.map((e) => e.id),
    [undefined, 3, 4, 5, undefined, undefined],
  );
  t.match(events[0], {
    type: 'state_resync_required',
    data: { detail: 'cursor_expired', lastDeliveredId: 1, earliestAvailableId: 3 },
  });
  const zero = bus.subscribe({ lastEventId: 0, snapshot: () => ({}) });
  t.match(zero.takeBuffered()[0]?.envelope, { type: 'state_resync_required', data: { detail: 'cursor_expired' } });
  const adjacent = bus.subscribe({ lastEventId: 2, snapshot: () => ({}) });
  t.strictSame(
    buffered(adjacent).map(([, id]) => id),
    [3, 4, 5, undefined, undefined],
    'cursor 2 with 3.. held: no gap, no resync',
  );
});

t.test('the opening frames do not count against the live caps', async (t) => {
  const bus = new EventBus({ ringSize: 2 });
  publishN(bus, 3);
  const sub = bus.subscribe({ lastEventId: 0, maxQueued: 1, maxQueuedBytes: 1, snapshot: () => 'x'.repeat(10_000) });
  bus.publish('tick', { live: 1 });
  t.equal(bus.subscriberCount, 1, 'resync, replay, replay_complete and a large session_state: still subscribed');
  bus.publish('tick', { live: 2 });
  t.equal(bus.subscriberCount, 0, 'the second live event overflows a cap of 1');
  const got = await drain(sub);
  t.strictSame(
    got.map((e) => [e.type, e.id]),
    [
      ['state_resync_required', undefined],
      ['tick', 2],
      ['tick', 3],
      ['replay_complete', undefined],
      ['session_state', undefined],
      ['tick', 4],
      ['client_evicted', undefined],
    ],
  );
});

t.test('firstId: nextId when empty, then the oldest id held', async (t) => {
  const log = new MemoryEventLog({ maxEvents: 2, maxBytes: 0 });
  const bus = new EventBus({ log });
  t.equal(log.firstId, 1);
  publishN(bus, 1);
  t.equal(log.firstId, 1);
  publishN(bus, 3);
  t.equal(log.firstId, 3);
  const none = new MemoryEventLog({ maxEvents: 0, maxBytes: 0 });
  const bus0 = new EventBus({ log: none });
  publishN(bus0, 2);
  t.equal(none.firstId, 3, 'a log that keeps nothing: the next id');
  t.match(bus0.subscribe({ lastEventId: 1, snapshot: () => ({}) }).takeBuffered()[0]?.envelope, {
    type: 'state_resync_required',
    data: { detail: 'cursor_expired', earliestAvailableId: 3 },
  });
});

/**
 * A log whose commits the test settles: each commit call is recorded with the ids it covers and waits
 * for `settle(i)`; `calls` resolves its waiters as calls come in, so no test waits on time.
 */
class HeldLog extends MemoryEventLog {
  private pending: number[] = [];
  readonly calls: { ids: number[]; resolve: () => void; reject: (err: Error) => void }[] = [];
  private waiters: (() => void)[] = [];

  constructor() {
    super({ maxEvents: 100, maxBytes: 0 });
  }

  override append(event: BusEvent): number {
    this.pending.push(event.envelope.id ?? 0);
    return super.append(event);
  }

  commit(): Promise<void> {
    const ids = this.pending;
    this.pending = [];
    return new Promise<void>((resolve, reject) => {
      this.calls.push({
        ids,
        resolve,
        reject: (err) => {
          this.pending = ids.concat(this.pending);
          reject(err);
        },
      });
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Resolves once commit call number `n` (from 0) has been made. */
  async call(n: number): Promise<HeldLog['calls'][number]> {
    while (this.calls.length <= n) await new Promise<void>((resolve) => this.waiters.push(resolve));
    return this.calls[n];
  }
}

t.test('async commit: nothing is sent before its commit resolves; one commit in flight, in order', async (t) => {
  const log = new HeldLog();
  const bus = new EventBus({ log });
  const sub = bus.subscribe();
  publishN(bus, 2);
  const first = await log.call(0);
  t.strictSame(first.ids, [1, 2], 'the burst is one commit');
  publishN(bus, 2);
  t.ok(await stillPending(log.call(1)), 'no second commit while the first is in flight');
  t.strictSame(sub.takeBuffered(), [], 'nothing sent before the commit resolved');
  first.resolve();
  t.strictSame(ids(await take(sub, 2)), [1, 2]);
  const second = await log.call(1);
  t.strictSame(second.ids, [3, 4], 'what was published meanwhile goes in the next commit');
  t.strictSame(sub.takeBuffered(), []);
  second.resolve();
  t.strictSame(ids(await take(sub, 2)), [3, 4]);
  bus.close();
  await bus.drained();
  t.strictSame(await drain(sub), []);
});

t.test(
  'async commit: a subscriber arriving mid-commit replays what was sent and gets the rest live, once',
  async (t) => {
    const log = new HeldLog();
    const bus = new EventBus({ log });
    publishN(bus, 2);
    (await log.call(0)).resolve();
    await bus.subscribe().next(); // the first commit's events are sent
    publishN(bus, 2); // 3 and 4: committing
    const inFlight = await log.call(1);
    const fresh = bus.subscribe({ lastEventId: 0, snapshot: () => ({ s: 1 }) });
    const atCursor = bus.subscribe({ lastEventId: 4, snapshot: () => ({ s: 1 }) });
    const opening = fresh.takeBuffered().map((ev) => [ev.envelope.type, ev.envelope.id]);
    t.strictSame(
      opening,
      [
        ['tick', 1],
        ['tick', 2],
        ['replay_complete', undefined],
        ['session_state', undefined],
      ],
      'the replay stops at the last event sent',
    );
    const complete = atCursor.takeBuffered()[0]?.envelope;
    t.equal(complete?.type, 'replay_complete', 'a cursor published but not sent is not ahead: no resync');
    t.strictSame(complete?.data, { lastReplayedEventId: null, lastEventId: 2, replayedCount: 0 });
    inFlight.resolve();
    t.strictSame(ids(await take(fresh, 2)), [3, 4], 'the in-flight events arrive live');
    bus.publish('tick', {});
    (await log.call(2)).resolve();
    t.strictSame(ids(await take(atCursor, 1)), [5], 'events up to the cursor are not sent twice');
    bus.close();
    await bus.drained();
  },
);

t.test('async commit: a failing commit is retried until it succeeds; commitError meanwhile', async (t) => {
  const log = new HeldLog();
  const reported: unknown[] = [];
  const bus = new EventBus({ log, onCommitError: (err) => reported.push(err && (err as Error).message) });
  // The retry timer is unref'd (it never keeps a daemon alive): this keeps the test's process up meanwhile.
  const keepAlive = setInterval(() => {}, 60_000);
  t.teardown(() => clearInterval(keepAlive));
  const sub = bus.subscribe();
  publishN(bus, 2);
  (await log.call(0)).reject(new Error('redis down'));
  const retry = await log.call(1);
  t.equal(bus.commitError, 'redis down');
  t.strictSame(retry.ids, [1, 2], 'the retry carries the same events');
  bus.publish('tick', {});
  retry.reject(new Error('still down'));
  const again = await log.call(2);
  t.strictSame(again.ids, [1, 2, 3], 'and what was published meanwhile');
  t.strictSame(sub.takeBuffered(), [], 'nothing sent while failing');
  again.resolve();
  t.strictSame(ids(await take(sub, 3)), [1, 2, 3], 'each once, in order');
  t.equal(bus.commitError, undefined);
  t.strictSame(reported, ['redis down', undefined], 'reported when it starts failing and when it recovers');
  bus.close();
  await bus.drained();
});

t.test('async commit: FencedError stops the bus, sends nothing uncommitted and ends the streams', async (t) => {
  const log = new HeldLog();
  let fenced = 0;
  const bus = new EventBus({ log, onFenced: () => fenced++ });
  const sub = bus.subscribe();
  bus.publish('tick', {});
  (await log.call(0)).resolve();
  t.strictSame(ids(await take(sub, 1)), [1]);
  publishN(bus, 2);
  (await log.call(1)).reject(new FencedError('FENCED lease token is 2, not 1'));
  t.strictSame(await drain(sub), [], 'the stream ends without the refused events');
  t.equal(fenced, 1);
  t.ok(bus.isFenced && bus.isClosed);
  t.equal(bus.publish('tick', {}), undefined, 'no more publishes');
  t.equal(bus.subscriberCount, 0);
  await bus.drained();
  t.equal(log.calls.length, 2, 'no retry after a fence');
});

t.test('async commit: close ends the streams after the last commit settles, with the last event', async (t) => {
  const log = new HeldLog();
  const bus = new EventBus({ log });
  const sub = bus.subscribe();
  bus.publish('tick', {});
  const first = await log.call(0);
  bus.publish('session_closed', {});
  bus.close();
  t.equal(bus.publish('late', {}), undefined, 'close stops publishes at once');
  const drained = bus.drained();
  t.ok(await stillPending(drained), 'not drained while commits are pending');
  first.resolve();
  (await log.call(1)).resolve();
  await drained;
  t.strictSame(
    (await drain(sub)).map((e) => e.type),
    ['tick', 'session_closed'],
  );
});

t.test(
  'a published event keeps only its frame: the envelope is read from it when asked for, never to fan out',
  async (t) => {
    const bus = new EventBus({ ringSize: 100 });
    const live = bus.subscribe();
    const data = { text: 'é "x"\n', n: 1, skipped: undefined };
    const parse = JSON.parse;
    let parses = 0;
    JSON.parse = ((text: string, reviver?: (this: unknown, key: string, value: unknown) => unknown) => {
      parses++;
      return parse(text, reviver) as unknown;
    }) as typeof JSON.parse;
    let returned: EventEnvelope | undefined;
    let events: BusEvent[];
    try {
      for (let i = 0; i < 50; i++) returned = bus.publish('tick', data);
      // Fan-out, a replay and the live queue go by id and frame alone.
      const replay = bus.subscribe({ lastEventId: 10 });
      events = [...live.takeBuffered(), ...replay.takeBuffered()];
    } finally {
      JSON.parse = parse;
    }
    t.equal(parses, 0, 'nothing was parsed to publish, fan out or replay');
    t.equal(events.length, 90);
    const last = events.at(-1) as BusEvent;
    t.equal(last.id, 50);
    t.equal(last.json, last.frame.slice('id: 50\nevent: tick\ndata: '.length, -2), "the JSON is the frame's data line");
    t.strictSame(last.envelope, JSON.parse(JSON.stringify(returned)), 'the envelope is what was published, as JSON');
    t.equal(last.envelope, last.envelope, 'parsed once');
  },
);
