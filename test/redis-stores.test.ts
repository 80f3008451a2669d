// The cluster's stores on a real redis-server: receipts shared by two nodes, a duplicate that reaches the
// other node while the first runs (it waits and replays), a claim whose node died (409
// `idempotency_key_interrupted`, the work not run twice), the catalog paged exactly as the SQLite store
// pages it, the cluster-wide session cap, and Redis going away (a clear error, no crash).
import t from 'tap';
import Database from 'better-sqlite3';
import { Redis } from 'ioredis';
import { RedisServer } from '../harness/redis.js';
import { openRedis } from '../src/cluster/connect.js';
import { ClusterKeys } from '../src/cluster/keys.js';
import { RedisReceiptStore, type RedisReceiptStoreOptions } from '../src/cluster/redis-receipts.js';
import { RedisSessionStore } from '../src/cluster/redis-session-store.js';
import { ClusterSessionCap } from '../src/cluster/session-cap.js';
import type { ClaimOutcome } from '../src/services/receipts.js';
import { SessionCatalog } from '../src/services/session-catalog.js';
import type { SessionListPage } from '../src/schemas/sessions.js';
import type { SessionMeta, SessionStore } from '../src/services/session-store.js';
import { SqliteSessionStore } from '../src/services/sqlite-session-store.js';
import { Steer } from './fixtures/steer.js';
import { startDaemon, type TestDaemon } from './support/app.js';
import { call, obj } from './support/http.js';
import { requireSystemPackage, SYSTEM_PACKAGES } from './support/system-deps.js';

const THREAD = { sessionScope: 'thread' };
const quiet = { error: () => undefined, warn: () => undefined };

if (requireSystemPackage(t, SYSTEM_PACKAGES.redis)) {
  const server = await RedisServer.start();
  t.teardown(() => server.stop());

  let prefixes = 0;
  /** Keys of their own for each test, on the one server. */
  const freshKeys = () => new ClusterKeys(`t${++prefixes}:`);

  async function connect(): Promise<Redis> {
    const redis = await openRedis(server.url, quiet);
    await redis.connect();
    t.teardown(() => redis.disconnect());
    return redis;
  }

  /** A node's receipts that report each time a claim is found held by another node. */
  class WatchedReceipts extends RedisReceiptStore {
    private waiters: (() => void)[] = [];
    constructor(opts: RedisReceiptStoreOptions) {
      super(opts);
    }
    /** Resolves at the next claim found held elsewhere: the duplicate is waiting. */
    nextHeld(): Promise<void> {
      return new Promise((resolve) => this.waiters.push(resolve));
    }
    override async claim(key: string, fingerprint: string, nodeId: string, ttlMs: number): Promise<ClaimOutcome> {
      const outcome = await super.claim(key, fingerprint, nodeId, ttlMs);
      if (outcome.state === 'held') for (const wake of this.waiters.splice(0)) wake();
      return outcome;
    }
  }

  function sessionNews(steer: Steer): number {
    return steer.log.filter((r) => r.method === 'session/new').length;
  }

  t.test('two nodes share receipts', async (t) => {
    const keys = freshKeys();
    const a = new RedisReceiptStore({ redis: await connect(), keys, ttlMs: 60_000 });
    const b = new RedisReceiptStore({ redis: await connect(), keys, ttlMs: 60_000 });
    await a.put('k', {
      fingerprint: 'POST /x 1',
      status: 201,
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    t.match(await b.get('k'), { fingerprint: 'POST /x 1', status: 201, body: '{}' }, 'the other node reads it');
    t.equal(await b.get('other'), undefined);
    t.ok((await (await connect()).pttl(keys.receipt('k'))) > 0, 'Redis expires it');
  });

  t.test('cross-node duplicates: one waits and replays; an interrupted claim is a 409 and runs nothing', async (t) => {
    const keys = freshKeys();
    let clockB = Date.now();
    const storeA = new RedisReceiptStore({ redis: await connect(), keys, ttlMs: 3_600_000 });
    const storeB = new WatchedReceipts({ redis: await connect(), keys, ttlMs: 3_600_000, now: () => clockB });
    const steerA = await Steer.create({ hold: ['session/new'] });
    t.teardown(() => steerA.close());
    const steerB = await Steer.create();
    t.teardown(() => steerB.close());
    const nodeA: TestDaemon = await startDaemon(t, { agent: steerA.argv, receipts: storeA, args: ['--node-id', 'a'] });
    const nodeB: TestDaemon = await startDaemon(t, { agent: steerB.argv, receipts: storeB, args: ['--node-id', 'b'] });
    const post = (d: TestDaemon, k: string) => call(d, 'POST', '/session', THREAD, { 'idempotency-key': k });

    // Node A runs it; the duplicate on B finds A's claim and waits until A's answer is kept.
    const first = post(nodeA, 'shared');
    const held = await steerA.nextCall('session/new');
    const waiting = storeB.nextHeld();
    const duplicate = post(nodeB, 'shared');
    await waiting;
    await held.release();
    const [a, b] = await Promise.all([first, duplicate]);
    t.equal(a.status, 200);
    t.same({ status: b.status, body: b.body }, { status: a.status, body: a.body }, 'B answers with A’s answer');
    t.equal(b.headers['idempotent-replayed'], 'true');
    t.equal(sessionNews(steerB), 0, 'node B never called its agent');

    // Node A "dies" mid-request: its request stays parked in the agent and B's clock passes its claim's deadline.
    const orphan = post(nodeA, 'orphan');
    const parked = await steerA.nextCall('session/new');
    const claim: unknown = JSON.parse((await (await connect()).get(keys.claim('\norphan'))) ?? 'null');
    t.match(claim, { node: 'a', fingerprint: /^POST \/session / }, 'A claimed the key');
    const stillWaiting = storeB.nextHeld();
    const late = post(nodeB, 'orphan');
    await stillWaiting;
    clockB += 3_600_000;
    const interrupted = await late;
    t.equal(interrupted.status, 409);
    t.match(obj(interrupted.body), { error: String, code: 'idempotency_key_interrupted' });
    const again = await post(nodeB, 'orphan');
    t.equal(again.status, 409, 'every later duplicate is told too, rather than running it');
    t.equal(sessionNews(steerB), 0, 'the work was not run a second time');
    const other = await call(nodeB, 'POST', '/session', { sessionScope: 'single' }, { 'idempotency-key': 'orphan' });
    t.equal(other.status, 422, 'another request under the claimed key is a mismatch');

    // Were A only slow, its answer lands after all, and from then on duplicates replay it.
    await parked.release();
    t.equal((await orphan).status, 200);
    const replay = await post(nodeB, 'orphan');
    t.equal(replay.status, 200);
    t.equal(replay.headers['idempotent-replayed'], 'true');
    t.equal(sessionNews(steerB), 0);
  });

  t.test('the catalog pages the Redis store exactly as it pages the SQLite store', async (t) => {
    const db = new Database(':memory:');
    t.teardown(() => db.close());
    const sqlite = new SqliteSessionStore({ db, log: quiet });
    const keys = freshKeys();
    const redis = new RedisSessionStore({ redis: await connect(), keys, nodeId: 'a', log: quiet });
    const ws = '/w';
    const metas: SessionMeta[] = [
      { sessionId: 'c', workspaceCwd: ws, origin: 'created', createdAt: 1, updatedAt: 1_000 },
      { sessionId: 'a', workspaceCwd: ws, origin: 'load', createdAt: 2, updatedAt: 1_000 },
      { sessionId: 'b', workspaceCwd: ws, origin: 'resume', createdAt: 3, updatedAt: 1_000 },
      { sessionId: 'e', workspaceCwd: ws, origin: 'created', createdAt: 4, updatedAt: 900 },
      { sessionId: 'd', workspaceCwd: ws, origin: 'created', createdAt: 5, updatedAt: 2_000 },
      { sessionId: 'f', workspaceCwd: ws, origin: 'created', createdAt: 6, updatedAt: 900 },
      { sessionId: 'g', workspaceCwd: '/other', origin: 'created', createdAt: 7, updatedAt: 5_000 },
    ];
    for (const store of [sqlite, redis] as SessionStore[]) {
      for (const meta of metas) await store.put(meta);
      await store.touch('e', 1_000);
      await store.name('b', 'first prompt');
      await store.name('b', 'second prompt');
      await store.end('f', 1_500, 'session_closed');
    }
    const walk = async (store: SessionStore, size: number) => {
      const catalog = new SessionCatalog(store, () => undefined);
      const pages: SessionListPage[] = [];
      let cursor: string | undefined;
      do {
        const page = await catalog.page({ workspaceCwd: ws, size, ...(cursor ? { cursor } : {}) });
        pages.push(page);
        cursor = page.nextCursor;
      } while (cursor !== undefined);
      return pages;
    };
    for (const size of [1, 2, 4, 10]) {
      const expected = await walk(sqlite, size);
      t.same(await walk(redis, size), expected, `pages of ${size}`);
    }
    t.same(
      (await walk(redis, 10))[0]?.sessions.map((s) => s.sessionId),
      ['d', 'f', 'a', 'b', 'c', 'e'],
      'newest first, ties by id',
    );
    t.match(await redis.get('b'), { displayName: 'first prompt' }, 'the first name stays');

    // Ending is the business of the node that made it live: another node's end changes nothing.
    const nodeB = new RedisSessionStore({ redis: await connect(), keys, nodeId: 'b', log: quiet });
    await nodeB.end('a', 3_000, 'channel_closed');
    t.equal((await redis.get('a'))?.endedAt, undefined, 'a takeover’s loser cannot end it');
    await redis.end('a', 3_000, 'session_closed');
    t.match(await nodeB.get('a'), { endedAt: 3_000, endReason: 'session_closed' });
  });

  t.test('the session cap holds across nodes and frees a dead node’s slots when their leases expire', async (t) => {
    const keys = freshKeys();
    const capA = new ClusterSessionCap(await connect(), keys);
    const capB = new ClusterSessionCap(await connect(), keys);
    const now = 1_000_000;
    t.equal(await capA.reserve('s1', 2, now + 10_000, now), true);
    t.equal(await capB.reserve('s2', 2, now + 5_000, now), true);
    t.equal(await capB.reserve('s3', 2, now + 10_000, now), false, 'the third session is refused on the other node');
    t.equal(await capA.reserve('s1', 2, now + 10_000, now), true, 'a session holding a slot keeps it');
    t.equal(await capA.count(now), 2);
    // Node A renews its lease; node B died and its session's slot expires with its lease.
    await capA.renew(['s1', 'never-reserved'], now + 20_000);
    t.equal(await capA.count(now + 6_000), 1);
    t.equal(await capA.reserve('s3', 2, now + 16_000, now + 6_000), true, 'the expired slot is free again');
    t.equal(await capB.reserve('s4', 2, now + 16_000, now + 6_000), false);
    await capA.release('s1');
    t.equal(await capB.reserve('s4', 2, now + 16_000, now + 6_000), true, 'a released slot is free');
    t.equal(await capB.reserve('s5', Number.NaN, now + 16_000, now + 6_000), true, 'no cap, no refusal');
  });

  t.test('Redis down: a clear error, and the daemon keeps serving', async (t) => {
    const own = await RedisServer.start();
    t.teardown(() => own.stop());
    const redis = await openRedis(own.url, quiet);
    t.teardown(() => redis.disconnect());
    await redis.connect();
    const keys = freshKeys();
    const receipts = new RedisReceiptStore({ redis, keys, ttlMs: 60_000 });
    const errors: unknown[] = [];
    const sessions = new RedisSessionStore({
      redis,
      keys,
      nodeId: 'a',
      log: { ...quiet, error: (obj) => errors.push(obj) },
    });
    const d = await startDaemon(t, { receipts });
    await own.kill();

    const matching = (what: string) => ({
      code: 'ACPD_REDIS_UNAVAILABLE',
      message: new RegExp(`^Redis cannot be reached \\(${what}\\)`),
    });
    await t.rejects(receipts.get('k'), matching('idempotency receipts'), 'a receipt read says Redis is unavailable');
    await t.rejects(new ClusterSessionCap(redis, keys).count(0), matching('session cap'));
    await t.rejects(sessions.page({ workspaceCwd: '/w', limit: 1 }), matching('session catalog'));
    await sessions.touch('s', 1);
    t.equal(errors.length, 1, 'a catalog write is logged, never thrown');

    const res = await call(d, 'POST', '/session', THREAD, { 'idempotency-key': 'k' });
    t.equal(res.status, 503);
    t.match(obj(res.body), { error: /^Redis cannot be reached \(idempotency receipts\)/, code: 'redis_unavailable' });
    t.equal((await call(d, 'GET', '/health')).status, 200, 'the daemon is still up');
  });
}
