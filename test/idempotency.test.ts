// Safe retries: every mutation takes an `Idempotency-Key`; a retry with the same key and body gets the
// first answer (`Idempotent-Replayed: true`) and the agent is not called again — counted in the steered
// agent's own log. The same key on another request is a 422; a duplicate that arrives while the first
// runs waits for it; receipts survive a restart (sqlite) and expire after --idempotency-ttl.
import t, { type Test } from 'tap';
import type { Steer } from './fixtures/steer.js';
import { buildTestApp, startDaemon, steerDaemon, tempDir, type TestDaemon } from './support/app.js';
import { call, createSession, obj, type JsonResponse } from './support/http.js';
import { isType, openEvents } from './support/sse.js';
import { textPrompt } from './support/values.js';
import { abandoned, serverSawClose } from './lifecycle-kit.js';
import { parked } from './restore-kit.js';
import { Steer as SteerController } from './fixtures/steer.js';
import { MemoryReceiptStore, SqliteReceiptStore, type ReceiptStore } from '../src/services/receipts.js';
import Database from 'better-sqlite3';

const THREAD = { sessionScope: 'thread' };

function key(value: string): Record<string, string> {
  return { 'idempotency-key': value };
}

function sessionIdOf(params: unknown): unknown {
  return typeof params === 'object' && params !== null && 'sessionId' in params ? params.sessionId : undefined;
}

/** How many `method` messages (requests or notifications) the agents received, barriers left out. */
function agentCalls(steer: Steer, method: string): number {
  return steer.log.filter((r) => r.method === method && !String(sessionIdOf(r.params)).startsWith('unknown-barrier'))
    .length;
}

let barriers = 0;
/**
 * Returns once the agent has reported every message the daemon sent it so far: it reports them in the
 * order they came in, so once it reported a load sent now, a duplicate call sent earlier would be in the log.
 */
async function barrier(d: TestDaemon, steer: Steer): Promise<void> {
  const id = `unknown-barrier-${++barriers}`;
  const res = await call(d, 'POST', `/session/${id}/load`, {});
  if (res.status !== 404) throw new Error(`barrier load → ${res.status}`);
  await steer.seen('session/load', (params) => sessionIdOf(params) === id);
}

/** The answer's parts a replay must repeat. */
function answerOf(res: JsonResponse) {
  return { status: res.status, body: res.body, contentType: res.headers['content-type'] };
}

interface Mutation {
  method: 'POST' | 'DELETE';
  url: string;
  body?: unknown;
  /** The ACP method the mutation costs. */
  agentMethod: string;
  status: number;
  /** Headers besides the key. */
  headers?: Record<string, string>;
}

/**
 * The mutation with a key, then its retry: the retry gets the same answer, marked replayed, and the agent
 * was called once. Then the same key with `other` (another body or path): 422.
 */
async function retriedOnce(
  t: Test,
  d: TestDaemon,
  steer: Steer,
  m: Mutation,
  other: { url?: string; body?: unknown },
): Promise<JsonResponse> {
  const k = `key-${m.agentMethod}-${Math.random()}`;
  const before = agentCalls(steer, m.agentMethod);
  const first = await call(d, m.method, m.url, m.body, { ...m.headers, ...key(k) });
  t.equal(first.status, m.status, `${m.method} ${m.url}: ${JSON.stringify(first.body)}`);
  t.notOk(first.headers['idempotent-replayed'], 'the first answer is not a replay');
  const retry = await call(d, m.method, m.url, m.body, { ...m.headers, ...key(k) });
  t.same(answerOf(retry), answerOf(first), 'the retry gets the first answer');
  t.equal(retry.headers['idempotent-replayed'], 'true');
  await barrier(d, steer);
  t.equal(agentCalls(steer, m.agentMethod), before + 1, `one ${m.agentMethod}`);

  const mismatch = await call(d, m.method, other.url ?? m.url, 'body' in other ? other.body : m.body, {
    ...m.headers,
    ...key(k),
  });
  t.equal(mismatch.status, 422);
  t.match(obj(mismatch.body), { error: String, code: 'idempotency_key_mismatch' });
  await barrier(d, steer);
  t.equal(agentCalls(steer, m.agentMethod), before + 1, 'a mismatch reaches no agent');
  return first;
}

t.test('create (thread scope): one session/new, the retry gets the same session', async (t) => {
  const { d, steer } = await steerDaemon(t, { checkAnswers: true });
  const first = await retriedOnce(
    t,
    d,
    steer,
    { method: 'POST', url: '/session', body: THREAD, agentMethod: 'session/new', status: 200 },
    { body: { sessionScope: 'thread', modelServiceId: 'm2' } },
  );
  t.match(obj(first.body), { sessionId: String, attached: false });
  t.equal(d.app.sessions.sessionCount, 1, 'one session');
});

t.test('prompt: one session/prompt, the same stopReason', async (t) => {
  const { d, steer } = await steerDaemon(t, { checkAnswers: true });
  const id = await createSession(d, THREAD);
  const first = await retriedOnce(
    t,
    d,
    steer,
    {
      method: 'POST',
      url: `/session/${id}/prompt`,
      body: textPrompt('hi'),
      agentMethod: 'session/prompt',
      status: 200,
    },
    { body: textPrompt('something else') },
  );
  t.same(first.body, { stopReason: 'end_turn' });
});

t.test('non-blocking prompt: one session/prompt, the retry gets the same 202 and promptId', async (t) => {
  const { d, steer } = await steerDaemon(t, { checkAnswers: true });
  const id = await createSession(d, THREAD);
  const first = await retriedOnce(
    t,
    d,
    steer,
    {
      method: 'POST',
      url: `/session/${id}/prompt`,
      body: textPrompt('later'),
      headers: { prefer: 'respond-async' },
      agentMethod: 'session/prompt',
      status: 202,
    },
    { body: textPrompt('something else') },
  );
  t.match(first.body, { promptId: String, lastEventId: Number, eventEpoch: String });
  t.equal(first.headers['preference-applied'], 'respond-async');
});

t.test('delete of a pending prompt: a waiting one leaves once, the retry gets 200 and not 404', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/prompt'] });
  const id = await createSession(d, THREAD);
  const async = { prefer: 'respond-async' };
  const running = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('one'), async);
  await steer.nextCall('session/prompt');
  const waiting = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('two'), async);
  const waitingId = String(obj(waiting.body).promptId);
  const url = `/session/${id}/pending-prompts/${waitingId}`;
  const removed = await call(d, 'DELETE', url, undefined, key('drop-two'));
  t.same(answerOf(removed).body, { removed: true });
  const retry = await call(d, 'DELETE', url, undefined, key('drop-two'));
  t.same(answerOf(retry), answerOf(removed), 'the retry gets the first answer');
  t.equal(retry.headers['idempotent-replayed'], 'true');
  const unkeyed = await call(d, 'DELETE', url);
  t.equal(unkeyed.status, 404, 'without the key, the same request finds nothing to remove');
  const listed = await call(d, 'GET', `/session/${id}/pending-prompts`);
  t.same(
    (obj(listed.body).pendingPrompts as { promptId: string }[]).map((p) => p.promptId),
    [String(obj(running.body).promptId)],
    'only the running prompt is left',
  );

  // On the running prompt a delete is a cancel: one session/cancel for the key and its retry.
  await retriedOnce(
    t,
    d,
    steer,
    {
      method: 'DELETE',
      url: `/session/${id}/pending-prompts/${String(obj(running.body).promptId)}`,
      agentMethod: 'session/cancel',
      status: 200,
    },
    { url },
  );
  t.equal(agentCalls(steer, 'session/prompt'), 1, 'the removed prompt never reached the agent');
});

t.test('a body with its fields in another order is the same request', async (t) => {
  const { d, steer } = await steerDaemon(t);
  const id = await createSession(d, THREAD);
  const first = await call(d, 'POST', `/session/${id}/model`, { modelId: 'm2', note: 'a' }, key('order'));
  const retry = await call(d, 'POST', `/session/${id}/model`, { note: 'a', modelId: 'm2' }, key('order'));
  t.equal(first.status, 200);
  t.same(answerOf(retry), answerOf(first));
  t.equal(retry.headers['idempotent-replayed'], 'true');
  await barrier(d, steer);
  t.equal(agentCalls(steer, 'session/set_model'), 1);
});

t.test('cancel: one session/cancel notification, the retry gets 204', async (t) => {
  const { d, steer } = await steerDaemon(t, { checkAnswers: true });
  const id = await createSession(d, THREAD);
  await retriedOnce(
    t,
    d,
    steer,
    { method: 'POST', url: `/session/${id}/cancel`, body: {}, agentMethod: 'session/cancel', status: 204 },
    { body: { reason: 'other' } },
  );
});

t.test('model: one session/set_model', async (t) => {
  const { d, steer } = await steerDaemon(t, { checkAnswers: true });
  const id = await createSession(d, THREAD);
  await retriedOnce(
    t,
    d,
    steer,
    {
      method: 'POST',
      url: `/session/${id}/model`,
      body: { modelId: 'm2' },
      agentMethod: 'session/set_model',
      status: 200,
    },
    { body: { modelId: 'm1' } },
  );
});

for (const action of ['load', 'resume'] as const) {
  t.test(`${action}: one session/${action}; the retry is not an attach`, async (t) => {
    const { d, steer } = await steerDaemon(t, { checkAnswers: true });
    const first = await retriedOnce(
      t,
      d,
      steer,
      { method: 'POST', url: `/session/stored-1/${action}`, body: {}, agentMethod: `session/${action}`, status: 200 },
      { url: `/session/stored-2/${action}` },
    );
    t.match(obj(first.body), { sessionId: 'stored-1', attached: false });
  });
}

t.test('close: one session/close, the retry gets 204 and not 404', async (t) => {
  const { d, steer } = await steerDaemon(t, { checkAnswers: true });
  const id = await createSession(d, THREAD);
  const other = await createSession(d, THREAD);
  await retriedOnce(
    t,
    d,
    steer,
    { method: 'DELETE', url: `/session/${id}`, agentMethod: 'session/close', status: 204 },
    { url: `/session/${other}` },
  );
  t.equal((await call(d, 'DELETE', `/session/${id}`)).status, 404, 'without the key, closing again is a 404');
});

t.test('vote: the agent gets one answer, the retry gets the first 200 and not a 404', async (t) => {
  const { d, steer } = await steerDaemon(t, { checkAnswers: true });
  const id = await createSession(d, THREAD);
  const sse = await openEvents(t, d, id);
  const agent = await steer.agent();
  const answered = agent.permission(id, { toolCallId: 'tc-1', title: 'write a file' }, [
    { optionId: 'allow', name: 'Allow', kind: 'allow_once' },
    { optionId: 'deny', name: 'Deny', kind: 'reject_once' },
  ]);
  const asked = await sse.waitFor(isType('permission_request'), 'permission_request');
  const requestId = String(obj(asked.envelope?.data).requestId);
  const allow = { outcome: { outcome: 'selected', optionId: 'allow' } };

  const first = await call(d, 'POST', `/permission/${requestId}`, allow, key('vote'));
  t.equal(first.status, 200);
  t.same(first.body, {});
  t.same(await answered, { outcome: { outcome: 'selected', optionId: 'allow' } }, 'the agent got the vote');
  const retry = await call(d, 'POST', `/permission/${requestId}`, allow, key('vote'));
  t.same(answerOf(retry), answerOf(first));
  t.equal(retry.headers['idempotent-replayed'], 'true');
  const deny = await call(
    d,
    'POST',
    `/permission/${requestId}`,
    { outcome: { outcome: 'selected', optionId: 'deny' } },
    key('vote'),
  );
  t.equal(deny.status, 422);
  t.match(obj(deny.body), { code: 'idempotency_key_mismatch' });
  const unkeyed = await call(d, 'POST', `/permission/${requestId}`, allow);
  t.equal(unkeyed.status, 404, 'without the key, the vote is answered as a late one');
  t.equal(sse.events().filter((e) => e.type === 'permission_resolved').length, 1, 'resolved once');
});

t.test('a duplicate that arrives while the first runs waits for it: one agent call, one answer', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/prompt'] });
  const id = await createSession(d, THREAD);
  const lookups = countLookups(d.app.receipts);
  const first = call(d, 'POST', `/session/${id}/prompt`, textPrompt('hi'), key('both'));
  const held = await steer.nextCall('session/prompt');
  t.equal(lookups.count, 1);
  const second = call(d, 'POST', `/session/${id}/prompt`, textPrompt('hi'), key('both'));
  // The duplicate looks for a receipt, finds none, and waits on the running request in the same step.
  await lookups.reached(2);
  const mismatch = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('other'), key('both'));
  t.equal(mismatch.status, 422, 'another body under a running key is refused at once');
  t.match(obj(mismatch.body), { code: 'idempotency_key_mismatch' });

  // Were the duplicate run, its prompt would reach the agent (and be held) once the first is released.
  const duplicate = steer.nextCall('session/prompt').then(async (call) => {
    await call.release();
    return 'the duplicate reached the agent';
  });
  await held.release();
  const answers = await Promise.race([Promise.all([first, second]), duplicate]);
  if (typeof answers === 'string') return t.fail(answers);
  const [a, b] = answers;
  t.equal(a.status, 200);
  t.same(answerOf(b), answerOf(a));
  t.same(a.body, { stopReason: 'end_turn' });
  t.notOk(a.headers['idempotent-replayed']);
  t.equal(b.headers['idempotent-replayed'], 'true');
  await barrier(d, steer);
  t.equal(agentCalls(steer, 'session/prompt'), 1, 'one session/prompt');
});

t.test('when the first ends with no answer (its client left), the waiting duplicate runs itself', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/new'] });
  const lookups = countLookups(d.app.receipts);
  const ac = new AbortController();
  const firstClosed = serverSawClose(d, 'POST', '/session');
  const first = abandoned(call(d, 'POST', '/session', THREAD, key('left'), ac.signal));
  const held = await steer.nextCall('session/new');
  const second = call(d, 'POST', '/session', THREAD, key('left'));
  await lookups.reached(2);
  ac.abort();
  await firstClosed;
  t.equal(await first, 'AbortError');

  // The first create finishes for nobody (its session is dropped); the duplicate then creates its own.
  await held.release();
  const again = await parked(steer, 'session/new', second);
  await again.release();
  const res = await second;
  t.equal(res.status, 200);
  t.notOk(res.headers['idempotent-replayed'], 'not a replay: there was nothing to replay');
  t.equal(agentCalls(steer, 'session/new'), 2);
  const retry = await call(d, 'POST', '/session', THREAD, key('left'));
  t.same(answerOf(retry), answerOf(res), 'its answer is the one kept');
});

t.test('a 5xx is not kept: the retry runs again', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/set_model'] });
  const id = await createSession(d, THREAD);
  const first = call(d, 'POST', `/session/${id}/model`, { modelId: 'm2' }, key('fails'));
  await (await steer.nextCall('session/set_model')).fail({ code: -32603, message: 'model service down' });
  t.equal((await first).status, 500);
  const retry = call(d, 'POST', `/session/${id}/model`, { modelId: 'm2' }, key('fails'));
  await (await parked(steer, 'session/set_model', retry)).release();
  const res = await retry;
  t.equal(res.status, 200);
  t.notOk(res.headers['idempotent-replayed']);
  t.equal(agentCalls(steer, 'session/set_model'), 2);
});

t.test('receipts survive a restart with --event-log sqlite', async (t) => {
  const steer = await SteerController.create();
  t.teardown(() => steer.close());
  const workspace = tempDir(t, 'acpd-ws-');
  const dataDir = tempDir(t, 'acpd-data-');
  const opts = { agent: steer.argv, workspace, dataDir, args: ['--event-log', 'sqlite'] };

  const before = await startDaemon(t, opts);
  const created = await call(before, 'POST', '/session', THREAD, key('durable'));
  t.equal(created.status, 200);
  const id = String(obj(created.body).sessionId);
  const prompted = await call(before, 'POST', `/session/${id}/prompt`, textPrompt('hi'), key('durable-prompt'));
  t.equal(prompted.status, 200);
  await before.app.close();

  const after = await startDaemon(t, opts);
  const retry = await call(after, 'POST', '/session', THREAD, key('durable'));
  t.same(answerOf(retry), answerOf(created), 'the create is answered from its receipt');
  t.equal(retry.headers['idempotent-replayed'], 'true');
  const again = await call(after, 'POST', `/session/${id}/prompt`, textPrompt('hi'), key('durable-prompt'));
  t.same(answerOf(again), answerOf(prompted), 'so is the prompt');
  const mismatch = await call(after, 'POST', '/session', { sessionScope: 'single' }, key('durable'));
  t.equal(mismatch.status, 422);
  await barrier(after, steer);
  t.equal(agentCalls(steer, 'session/new'), 1, 'one session/new across both daemons');
  t.equal(agentCalls(steer, 'session/prompt'), 1, 'one session/prompt');
});

t.test('a receipt expires after --idempotency-ttl: the retry then runs again', async (t) => {
  let clock = Date.parse('2030-01-01T00:00:00Z');
  const { d, steer } = await steerDaemon(t, { args: ['--idempotency-ttl', '2'], now: () => clock });
  const first = await call(d, 'POST', '/session', THREAD, key('ttl'));
  clock += 1999;
  const kept = await call(d, 'POST', '/session', THREAD, key('ttl'));
  t.same(answerOf(kept), answerOf(first), 'replayed within the ttl');
  t.equal(kept.headers['idempotent-replayed'], 'true');
  clock += 1;
  const expired = await call(d, 'POST', '/session', THREAD, key('ttl'));
  t.equal(expired.status, 200);
  t.notOk(expired.headers['idempotent-replayed'], 'run again once expired');
  t.not(obj(expired.body).sessionId, obj(first.body).sessionId, 'a new session');
  t.equal(agentCalls(steer, 'session/new'), 2);
  const otherBody = await call(d, 'POST', '/session', { sessionScope: 'thread', modelServiceId: 'm2' }, key('ttl'));
  t.equal(otherBody.status, 422, 'the key now names the new request');
});

t.test('an invalid key is a 400 invalid_idempotency_key; reads ignore the header', async (t) => {
  const app = await buildTestApp(t, { checkAnswers: true });
  for (const bad of ['', 'x'.repeat(256), 'clé']) {
    const res = await app.inject({
      method: 'POST',
      url: '/session/s1/cancel',
      headers: { 'content-type': 'application/json', 'idempotency-key': bad },
      payload: '{}',
    });
    t.equal(res.statusCode, 400, JSON.stringify(bad));
    t.match(res.json(), { error: String, code: 'invalid_idempotency_key' });
  }
  const longest = await app.inject({
    method: 'POST',
    url: '/session/s1/cancel',
    headers: { 'content-type': 'application/json', 'idempotency-key': `${'x'.repeat(250)} ~!"#` },
    payload: '{}',
  });
  t.equal(longest.statusCode, 404, 'a 255-character printable key is taken');
  const read = await app.inject({ method: 'GET', url: '/capabilities', headers: { 'idempotency-key': '' } });
  t.equal(read.statusCode, 200);
  t.ok(read.json<{ features: string[] }>().features.includes('idempotency_keys'), 'advertised');
});

/** Counts the daemon's receipt lookups; `reached(n)` resolves once the n-th has happened. */
function countLookups(store: ReceiptStore) {
  const waiters: { n: number; resolve: () => void }[] = [];
  const counter = {
    count: 0,
    reached(n: number): Promise<void> {
      if (counter.count >= n) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
  };
  const get = store.get.bind(store);
  store.get = (k) => {
    counter.count++;
    for (const w of waiters.filter((w) => w.n <= counter.count)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
    return get(k);
  };
  return counter;
}

for (const kind of ['memory', 'sqlite'] as const) {
  t.test(`${kind} store: expiry on the store's clock, the sweep, the count bound`, async (t) => {
    let clock = 1_000;
    const now = () => clock;
    // The local stores answer at once (the seam allows a promise, for Redis).
    const make = (maxReceipts: number): MemoryReceiptStore | SqliteReceiptStore => {
      if (kind === 'memory') return new MemoryReceiptStore({ ttlMs: 100, maxReceipts, now });
      const db = new Database(':memory:');
      t.teardown(() => db.close());
      return new SqliteReceiptStore(db, { ttlMs: 100, maxReceipts, now });
    };
    const store = make(3);
    const answer = {
      fingerprint: 'POST /x abc',
      status: 201,
      headers: { 'content-type': 'application/json' },
      body: '{}',
    };
    store.put('a', answer);
    t.same(store.get('a'), { ...answer, createdAt: 1_000, expiresAt: 1_100 });
    clock = 1_099;
    t.ok(store.get('a'), 'live until its expiry');
    store.put('b', answer);
    clock = 1_100;
    t.equal(store.get('a'), undefined, 'expired: never handed out, swept or not');
    t.ok(store.get('b'));
    t.equal(store.sweep(), 1, 'the sweep removes the expired one');
    t.equal(store.sweep(), 0);

    for (const k of ['c', 'd', 'e']) store.put(k, answer);
    store.sweep();
    t.equal(store.get('b'), undefined, 'the oldest goes past the count bound');
    for (const k of ['c', 'd', 'e']) t.ok(store.get(k), `${k} kept`);
  });
}
