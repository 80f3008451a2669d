/**
 * The workspace session catalog: `GET /workspace/:id/sessions` lists live and
 * ended sessions with the qwen daemon's fields, a page at a time, and still
 * knows them after the daemon restarts on the same data directory; the
 * published client reads the pages. The SQLite store underneath keeps the
 * first prompt's name, ends what a killed daemon left live, and stays bounded.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import { DaemonClient } from '@qwen-code/sdk/daemon';
import { SqliteSessionStore } from '../src/services/sqlite-session-store.js';
import { displayNameOf, type SessionMeta } from '../src/services/session-store.js';
import { EVENTS_FILE } from '../src/services/sqlite-event-log.js';
import { spinUntil } from '../harness/wait.js';
import { startDaemon, steerDaemon, tempDir, type TestDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { openEvents } from './support/sse.js';
import { textPrompt } from './support/values.js';
import type { operations } from './generated/acpd-api.js';

const SQLITE = ['--event-log', 'sqlite'];

/** The list route's answer and its items, as the API document types them. */
type Page = operations['listWorkspaceSessions']['responses'][200]['content']['application/json'];
type Summary = Page['sessions'][number];

function listUrl(d: TestDaemon, query = ''): string {
  return `/workspace/${encodeURIComponent(d.config.workspace)}/sessions${query}`;
}

async function list(d: TestDaemon, query = ''): Promise<Page> {
  const res = await call(d, 'GET', listUrl(d, query));
  if (res.status !== 200) throw new Error(`list${query} → ${res.status} ${JSON.stringify(res.body)}`);
  return res.body as Page;
}

function byId(page: Page): Map<string, Summary> {
  return new Map(page.sessions.map((s) => [s.sessionId, s]));
}

/** Most recently updated first, ties by id: the order every page must keep. */
function isRecentFirst(sessions: Summary[]): boolean {
  return sessions.every((s, i) => {
    const prev = sessions[i - 1];
    if (!prev) return true;
    const a = Date.parse(prev.updatedAt);
    const b = Date.parse(s.updatedAt);
    return a > b || (a === b && prev.sessionId < s.sessionId);
  });
}

/** Follows `nextCursor` from the first page; `between` runs after each page but the last. */
async function walk(t: Test, d: TestDaemon, size: number, between?: () => Promise<void>): Promise<Summary[]> {
  const seen: Summary[] = [];
  let cursor: string | undefined;
  for (let pages = 0; pages < 100; pages++) {
    const page = await list(d, `?size=${size}${cursor !== undefined ? `&cursor=${cursor}` : ''}`);
    t.ok(page.sessions.length <= size, 'a page holds at most `size` sessions');
    seen.push(...page.sessions);
    if (page.nextCursor === undefined) return seen;
    cursor = page.nextCursor;
    await between?.();
  }
  throw new Error('the walk did not end');
}

t.test('live and ended sessions with their fields; a restart keeps them; a load makes one live again', async (t) => {
  const workspace = tempDir(t, 'acpd-ws-');
  const dataDir = tempDir(t, 'acpd-data-');
  const first = await startDaemon(t, { workspace, dataDir, args: SQLITE });

  const [a, b, c] = [
    await createSession(first, { sessionScope: 'thread' }),
    await createSession(first, { sessionScope: 'thread' }),
    await createSession(first, { sessionScope: 'thread' }),
  ];
  const long = `  Summarise\n\n the   repository   ${'x'.repeat(200)}`;
  t.equal((await call(first, 'POST', `/session/${b}/prompt`, textPrompt(long))).status, 200);
  t.equal((await call(first, 'POST', `/session/${b}/prompt`, textPrompt('a later prompt'))).status, 200);
  t.equal((await call(first, 'DELETE', `/session/${c}`)).status, 204);
  const stream = await openEvents(t, first, a);
  t.equal(stream.status, 200);

  const before = await list(first);
  t.equal(before.nextCursor, undefined, 'everything fits the default page');
  t.ok(isRecentFirst(before.sessions), 'most recently updated first');
  const sessions = byId(before);
  t.strictSame([...sessions.keys()].sort(), [a, b, c].sort(), 'the live ones and the closed one');
  const name = displayNameOf(textPrompt(long).prompt);
  t.equal(name?.length, 100, 'the name is cut to 100 characters');
  t.ok(name?.startsWith('Summarise the repository xxx'), 'whitespace collapsed');
  t.match(sessions.get(a), {
    workspaceCwd: workspace,
    clientCount: 1,
    hasActivePrompt: false,
    isArchived: false,
    isLive: true,
  });
  t.notOk('displayName' in (sessions.get(a) ?? {}), 'a session never prompted has no name');
  t.match(sessions.get(b), { displayName: name, clientCount: 0, isLive: true }, 'the first prompt names it');
  t.match(sessions.get(c), { clientCount: 0, hasActivePrompt: false, isArchived: false, isLive: false });
  for (const s of before.sessions) {
    t.ok(Date.parse(s.createdAt) <= Date.parse(s.updatedAt), `${s.sessionId}: created no later than updated`);
    t.equal(new Date(s.createdAt).toISOString(), s.createdAt, 'ISO 8601');
  }
  t.ok(
    Date.parse(sessions.get(c)?.updatedAt ?? '') >= Date.parse(sessions.get(b)?.updatedAt ?? ''),
    'closing updates it (c was closed after b was prompted)',
  );

  await first.app.close();
  const second = await startDaemon(t, { workspace, dataDir, args: SQLITE });
  const after = await list(second);
  t.strictSame(
    after.sessions.map((s) => s.sessionId).sort(),
    [a, b, c].sort(),
    'after a restart, before any restore, the list still has them',
  );
  for (const s of after.sessions) {
    t.match(s, { clientCount: 0, hasActivePrompt: false, isLive: false }, `${s.sessionId} is not live`);
    t.equal(s.createdAt, sessions.get(s.sessionId)?.createdAt, 'its creation time is kept');
  }
  t.equal(byId(after).get(b)?.displayName, name, 'and its name');

  const loaded = await call(second, 'POST', `/session/${b}/load`, {});
  t.equal(loaded.status, 200);
  const reloaded = byId(await list(second));
  t.match(reloaded.get(b), { isLive: true, displayName: name, createdAt: sessions.get(b)?.createdAt });
  t.match(reloaded.get(a), { isLive: false });
  t.equal(reloaded.size, 3, 'the load listed it once');
});

t.test('paging: size and cursor walk every session once, even with one created between pages', async (t) => {
  const d = await startDaemon(t, { args: SQLITE });
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push(await createSession(d, { sessionScope: 'thread' }));

  const all = await walk(t, d, 2);
  t.strictSame(all.map((s) => s.sessionId).sort(), [...ids].sort(), 'size=2: every session, once');
  t.ok(isRecentFirst(all), 'in order across pages');

  let added: string | undefined;
  const newest = Math.max(...all.map((s) => Date.parse(s.updatedAt)));
  const walked = await walk(t, d, 2, async () => {
    if (added !== undefined) return;
    // A later millisecond than every listed session, so it sorts first whatever its id.
    await spinUntil(() => Date.now() > newest, 'a later millisecond');
    added = await createSession(d, { sessionScope: 'thread' });
  });
  t.ok(added, 'a session was created between the pages');
  t.strictSame(
    walked.map((s) => s.sessionId),
    all.map((s) => s.sessionId),
    'the same sessions in the same order: no duplicate, no gap',
  );
  t.equal((await list(d, '?size=1')).sessions[0]?.sessionId, added, 'a new walk starts with it');

  const whole = await list(d);
  t.equal(whole.sessions.length, 6, 'no size: the first page of up to 100');
  t.equal(whole.nextCursor, undefined, 'and no cursor when nothing follows');
  t.equal((await list(d, '?size=6')).nextCursor, undefined, 'exactly full: no cursor either');
  t.equal((await list(d, '?size=1000&cursor=')).sessions.length, 6, 'an empty cursor is the first page');
  t.strictSame(await list(d, '?archiveState=archived'), { sessions: [] }, 'nothing is archived');
  t.equal((await list(d, '?archiveState=active&view=whatever&foo=1')).sessions.length, 6, 'unknown ones ignored');
});

t.test('bad paging parameters are 400s with their own codes', async (t) => {
  const d = await startDaemon(t);
  await createSession(d);
  const forged = Buffer.from(JSON.stringify([1.5, 'x'])).toString('base64url');
  for (const cursor of ['not a cursor', '!!!!', 'AAAA', forged, 'x'.repeat(500)]) {
    const res = await call(d, 'GET', listUrl(d, `?cursor=${encodeURIComponent(cursor)}`));
    t.equal(res.status, 400, cursor);
    t.equal(obj(res.body).code, 'invalid_cursor', cursor);
    t.type(obj(res.body).error, 'string');
  }
  t.equal(
    obj((await call(d, 'GET', listUrl(d, '?cursor=a&cursor=b'))).body).code,
    'invalid_cursor',
    'a repeated cursor',
  );
  for (const size of ['0', '1001', '-1', 'abc', '2.5', '', '10&size=20']) {
    const res = await call(d, 'GET', listUrl(d, `?size=${size}`));
    t.equal(res.status, 400, `size=${size}`);
    t.strictSame(res.body, { error: '`size` must be an integer from 1 to 1000', code: 'invalid_page_size' });
  }
  const archive = await call(d, 'GET', listUrl(d, '?archiveState=old'));
  t.equal(archive.status, 400);
  t.equal(obj(archive.body).code, 'invalid_archive_state');
  // v1 callers send no query at all: the v1 fields are there, the rest is additive.
  const v1 = await call(d, 'GET', listUrl(d));
  t.equal(v1.status, 200);
  t.match(v1.body, { sessions: [{ sessionId: String, workspaceCwd: d.config.workspace }] });
});

t.test('hasActivePrompt while a turn runs in the agent', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/prompt'] });
  const id = await createSession(d);
  const prompt = call(d, 'POST', `/session/${id}/prompt`, textPrompt('hold on'));
  const held = await steer.nextCall('session/prompt');
  t.match((await list(d)).sessions, [{ sessionId: id, hasActivePrompt: true, displayName: 'hold on' }]);
  await held.release();
  t.equal((await prompt).status, 200);
  t.match((await list(d)).sessions, [{ sessionId: id, hasActivePrompt: false }]);
});

t.test('the published client reads the pages', async (t) => {
  const d = await startDaemon(t, { args: SQLITE });
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push(await createSession(d, { sessionScope: 'thread' }));
  t.equal((await call(d, 'POST', `/session/${ids[0]}/prompt`, textPrompt('named by the sdk test'))).status, 200);
  const client = new DaemonClient({ baseUrl: d.baseUrl });

  const first = await client.listWorkspaceSessionsPage(d.config.workspace, { pageSize: 2 });
  t.equal(first.sessions.length, 2);
  t.type(first.nextCursor, 'string');
  const second = await client.listWorkspaceSessionsPage(d.config.workspace, {
    pageSize: 2,
    ...(first.nextCursor !== undefined ? { cursor: first.nextCursor } : {}),
  });
  t.equal(second.sessions.length, 1);
  t.equal(second.nextCursor, undefined);
  const seen = [...first.sessions, ...second.sessions];
  t.strictSame(seen.map((s) => s.sessionId).sort(), [...ids].sort());
  t.equal(seen.find((s) => s.sessionId === ids[0])?.displayName, 'named by the sdk test');
  for (const s of seen) t.match(s, { clientCount: 0, hasActivePrompt: false, isArchived: false });

  const summaries = await client.listWorkspaceSessions(d.config.workspace);
  t.equal(summaries.length, 3, 'listWorkspaceSessions reads the first page (its size 20)');
});

// ---- the store underneath ---------------------------------------------------

function meta(sessionId: string, at: number, extra: Partial<SessionMeta> = {}): SessionMeta {
  return { sessionId, workspaceCwd: '/w', origin: 'created', createdAt: at, updatedAt: at, ...extra };
}

const quiet = { error: () => {}, warn: () => {} };

t.test('SqliteSessionStore: names once, ends what a killed daemon left live, stays bounded', (t) => {
  const dir = tempDir(t, 'acpd-catalog-');
  const file = path.join(dir, EVENTS_FILE);
  let db = new Database(file);
  t.teardown(() => {
    if (db.open) db.close();
  });
  let store = new SqliteSessionStore({ db, log: quiet, maxEnded: 2 });
  store.put(meta('live', 10));
  store.name('live', 'first');
  store.name('live', 'second');
  t.equal(store.get('live')?.displayName, 'first', 'the first name stays');
  store.touch('live', 20);
  for (const [id, at] of [
    ['e1', 1],
    ['e2', 2],
    ['e3', 3],
  ] as const) {
    store.put(meta(id, at));
    store.end(id, at + 100, 'closed');
  }
  t.strictSame(
    store.list().map((m) => m.sessionId),
    ['live', 'e2', 'e3'],
    'past the bound the oldest ended session goes; the live one stays',
  );
  t.strictSame(
    store.page({ workspaceCwd: '/w', limit: 10 }).map((m) => [m.sessionId, m.updatedAt]),
    [
      ['e3', 103],
      ['e2', 102],
      ['live', 20],
    ],
  );
  t.strictSame(
    store.page({ workspaceCwd: '/w', limit: 10, after: { updatedAt: 102, sessionId: 'e2' } }).map((m) => m.sessionId),
    ['live'],
  );
  t.strictSame(store.page({ workspaceCwd: '/other', limit: 10 }), [], 'another workspace lists none');

  // As after kill -9: the database is reopened with `live` never ended.
  db.close();
  db = new Database(file);
  store = new SqliteSessionStore({ db, log: quiet, maxEnded: 3 });
  t.match(store.get('live'), { endedAt: 20, endReason: 'daemon_shutdown', updatedAt: 20, displayName: 'first' });
  db.close();
  db = new Database(file);
  store = new SqliteSessionStore({ db, log: quiet, maxEnded: 1 });
  t.strictSame(
    store.list().map((m) => m.sessionId),
    ['e3'],
    'the bound holds at open too',
  );
  db.close();
  store.end('e3', 200, 'closed');
  store.put(meta('x', 1));
  t.equal(store.get('x'), undefined, 'a closed database keeps nothing and throws nothing');
  t.end();
});
