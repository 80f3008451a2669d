// The durable event log (issue 12): SQLite under the data directory, bounded per session, kept across
// a restart and a kill -9, and a damaged database moved aside at start-up instead of crashing.
import { spawn } from 'node:child_process';
import Database from 'better-sqlite3';
import { existsSync, readdirSync, truncateSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { until, within } from '../harness/wait.js';
import { BusStats, EventBus } from '../src/services/event-bus.js';
import { EVENTS_FILE, SqliteEventStore, storedEvents, type StoreLogger } from '../src/services/sqlite-event-log.js';
import { WalCheckpointer } from '../src/services/wal-checkpointer.js';
import { startDaemon, tempDir } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { openEvents } from './support/sse.js';
import { textPrompt } from './support/values.js';

interface Reported {
  obj: object;
  msg: string;
}

function recorder(): StoreLogger & { errors: Reported[] } {
  const errors: Reported[] = [];
  return {
    errors,
    error: (obj, msg) => errors.push({ obj, msg }),
    warn: () => {},
  };
}

function openStore(dataDir: string, bounds = { maxEvents: 100, maxBytes: 0 }, log: StoreLogger = recorder()) {
  return new SqliteEventStore({ dataDir, bounds, log });
}

t.test('append and after: ids, frames, replay from a cursor', (t) => {
  const store = openStore(tempDir(t));
  t.teardown(() => store.close());
  const bus = new EventBus({ log: store.logFor('s1') });
  const frames: string[] = [];
  const live = bus.subscribe();
  for (let i = 0; i < 5; i++) bus.publish('tick', { i, text: 'é' });
  t.same(live.takeBuffered(), [], 'nothing is sent before the group commit');
  bus.flush();
  for (const ev of live.takeBuffered()) frames.push(ev.frame);
  t.equal(bus.lastEventId, 5);
  const log = store.logFor('s1');
  t.equal(log.size, 5);
  t.equal(
    log.bytes,
    frames.reduce((n, f) => n + Buffer.byteLength(f), 0),
  );
  t.same(
    [...log.after(0)].map((ev) => ev.frame),
    frames,
    'the stored frames are the frames sent',
  );
  t.same(
    [...log.after(3)].map((ev) => ev.envelope.id),
    [4, 5],
  );
  t.same([...log.after(5)], []);
  t.same([...store.logFor('other').after(0)], [], 'sessions do not see each other');
  t.equal(store.logFor('s1'), log, 'one log per session while the store is open');
  t.end();
});

/**
 * Resolves after the bus's group commit (scheduled with setImmediate) has run, and a turn more.
 */
async function afterBurst(): Promise<void> {
  for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** The rows the database holds for `sessionId`, whatever the log's counters say. */
function rowsOf(store: SqliteEventStore, sessionId: string): number[] {
  return storedEvents(store.database, sessionId).map((row) => row.id);
}

t.test('firstId: the next id while empty, the oldest id held after drops, the same after a reopen', async (t) => {
  const dataDir = tempDir(t);
  const store = openStore(dataDir, { maxEvents: 3, maxBytes: 0 });
  const log = store.logFor('s');
  t.equal(log.firstId, 1);
  const bus = new EventBus({ log });
  bus.publish('tick', {});
  t.equal(log.firstId, 1);
  for (let i = 0; i < 4; i++) bus.publish('tick', { i });
  await afterBurst();
  t.equal(log.firstId, 3, 'events 1 and 2 were dropped by count');
  store.close();
  const reopened = openStore(dataDir, { maxEvents: 3, maxBytes: 0 });
  t.teardown(() => reopened.close());
  t.equal(reopened.logFor('s').firstId, 3, 'read back from the database');
  const none = openStore(tempDir(t), { maxEvents: 0, maxBytes: 0 });
  t.teardown(() => none.close());
  const nothing = new EventBus({ log: none.logFor('s') });
  nothing.publish('tick', {});
  nothing.publish('tick', {});
  t.equal(none.logFor('s').firstId, 3, 'a log that keeps nothing: the next id');
});

t.test('bounds by count and by bytes: the oldest go, the count is reported, the newest stays', async (t) => {
  const byCount = openStore(tempDir(t), { maxEvents: 3, maxBytes: 0 });
  t.teardown(() => byCount.close());
  const stats = new BusStats();
  const bus = new EventBus({ log: byCount.logFor('s'), stats });
  for (let i = 0; i < 5; i++) bus.publish('tick', { i });
  await afterBurst();
  t.equal(stats.dropped, 2, 'two evicted by count');
  t.same(rowsOf(byCount, 's'), [3, 4, 5], 'the database holds the bounds');
  t.same(
    [...byCount.logFor('s').after(0)].map((ev) => ev.envelope.id),
    [3, 4, 5],
  );

  const byBytes = openStore(tempDir(t), { maxEvents: 100, maxBytes: 300 });
  t.teardown(() => byBytes.close());
  const stats2 = new BusStats();
  const bus2 = new EventBus({ log: byBytes.logFor('s'), stats: stats2 });
  for (let i = 0; i < 4; i++) bus2.publish('tick', { pad: 'x'.repeat(80) });
  await afterBurst();
  const log = byBytes.logFor('s');
  t.ok(log.bytes <= 300, `within the byte budget (${log.bytes})`);
  t.equal(stats2.dropped + log.size, 4, 'every event is either kept or counted as evicted');
  t.ok(stats2.dropped > 0);
  bus2.publish('big', { pad: 'y'.repeat(1000) });
  await afterBurst();
  t.same(
    [...log.after(0)].map((ev) => ev.envelope.type),
    ['big'],
    'an event over the budget alone stays',
  );
  t.equal(stats2.dropped, 4);
});

t.test(
  'a commit trims lazily: an eighth past the bounds, back to them, in its own transaction; readers see the bounds',
  async (t) => {
    // 16 events: a commit trims once the log holds more than 18 (16 + an eighth, rounded up).
    const store = openStore(tempDir(t), { maxEvents: 16, maxBytes: 0 });
    t.teardown(() => store.close());
    const stats = new BusStats();
    const bus = new EventBus({ log: store.logFor('s'), stats });
    const trims: number[] = [];
    store.logFor('s').watchDrops((count) => trims.push(count));
    const before = store.transactions;
    for (let i = 0; i < 18; i++) bus.publish('tick', { i });
    t.equal(rowsOf(store, 's').length, 0, 'nothing is written before the group commit');
    bus.flush();
    await afterBurst();
    t.equal(rowsOf(store, 's').length, 18, 'within the slack: the commit trimmed nothing');
    t.equal(store.transactions - before, 1, 'one transaction for the burst, none for a compaction after it');
    t.equal(stats.dropped, 0);

    // A reader gets the bounds all the same, and the drops are counted.
    t.same(
      [...store.logFor('s').after(0)].map((ev) => ev.envelope.id),
      Array.from({ length: 16 }, (_, i) => 3 + i),
      'the newest 16, dense',
    );
    t.equal(stats.dropped, 2);
    t.same(
      rowsOf(store, 's'),
      Array.from({ length: 16 }, (_, i) => 3 + i),
      'trimmed in the database too',
    );

    for (let i = 0; i < 2; i++) bus.publish('tick', { i });
    bus.flush();
    t.equal(rowsOf(store, 's').length, 18);
    bus.publish('tick', {});
    bus.flush();
    t.same(
      rowsOf(store, 's'),
      Array.from({ length: 16 }, (_, i) => 6 + i),
      'past the slack: back to the bounds, dense',
    );
    t.same(trims, [2, 3]);
    t.equal(stats.dropped, 5);
    t.equal(store.transactions - before, 4, "the reader's trim, and one per commit: the trim rode in the last");
    t.equal(store.logFor('s').nextId, 22);
    t.equal(store.compact(), 0, 'nothing left to trim');
    t.equal(store.transactions - before, 4, 'a compaction with nothing over its bounds opens no transaction');
  },
);

t.test(
  'a flood in runs of 64 (as agent-lines delivers it): one transaction per run, the file near the bounds',
  async (t) => {
    const dataDir = tempDir(t);
    const store = openStore(dataDir, { maxEvents: 80, maxBytes: 0 });
    t.teardown(() => store.close());
    const bus = new EventBus({ log: store.logFor('s') });
    const live = bus.subscribe();
    const before = store.transactions;
    let most = 0;
    let received = 0;
    for (let sent = 0; sent < 1000;) {
      for (let k = 0; k < 64 && sent < 1000; k++, sent++) bus.publish('tick', { sent });
      await afterBurst();
      received += live.takeBuffered().length;
      most = Math.max(most, rowsOf(store, 's').length);
    }
    t.equal(store.transactions - before, Math.ceil(1000 / 64), 'a transaction per run, trims included');
    t.ok(most <= 90, `the file never held more than the bounds and their eighth (${most})`);
    t.equal(received, 1000, 'every event was sent, once committed');
    t.same(
      [...store.logFor('s').after(0)].map((ev) => ev.envelope.id),
      Array.from({ length: 80 }, (_, i) => 921 + i),
    );
    store.close();
    const reopened = openStore(dataDir, { maxEvents: 80, maxBytes: 0 });
    t.teardown(() => reopened.close());
    t.equal(reopened.logFor('s').nextId, 1001, 'the next id after a reopen comes from the newest row');
  },
);

t.test('the maintenance timer compacts and truncates the WAL file', async (t) => {
  const dir = tempDir(t);
  const store = new SqliteEventStore({
    dataDir: dir,
    bounds: { maxEvents: 5, maxBytes: 0 },
    log: recorder(),
    maintenanceMs: 20,
  });
  t.teardown(() => store.close());
  const bus = new EventBus({ log: store.logFor('s') });
  for (let i = 0; i < 200; i++) bus.publish('tick', { i, pad: 'w'.repeat(200) });
  const wal = path.join(dir, `${EVENTS_FILE}-wal`);
  t.ok(statSync(wal).size > 0, 'the appends went to the WAL');
  await until(() => statSync(wal).size === 0, 'the WAL truncated by the timer');
  t.same(rowsOf(store, 's'), [196, 197, 198, 199, 200]);
});

t.test('a restart keeps the epoch, the events and the numbering', (t) => {
  const dir = tempDir(t);
  const first = openStore(dir, { maxEvents: 3, maxBytes: 0 });
  const bus = new EventBus({ log: first.logFor('s1') });
  for (let i = 0; i < 5; i++) bus.publish('tick', { i });
  const epoch = bus.epoch;
  const frames = [...first.logFor('s1').after(0)].map((ev) => ev.frame);
  first.close();

  const second = openStore(dir, { maxEvents: 3, maxBytes: 0 });
  t.teardown(() => second.close());
  const log = second.logFor('s1');
  t.equal(log.epoch, epoch, 'same epoch');
  t.equal(log.nextId, 6, 'ids continue');
  t.equal(log.size, 3);
  t.same(
    [...log.after(0)].map((ev) => ev.frame),
    frames,
  );
  const again = new EventBus({ log });
  t.equal(again.publish('tick', {})?.id, 6);
  t.same(
    [...log.after(0)].map((ev) => ev.envelope.id),
    [4, 5, 6],
    'the bound still holds',
  );
  t.not(second.logFor('s2').epoch, epoch, 'a new session has its own epoch');
  t.end();
});

t.test('kill -9 while appending: every append that returned is on disk', async (t) => {
  const dir = tempDir(t);
  const writer = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'event-log-writer.js');
  const child = spawn(process.execPath, [writer, dir, 's1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
  await within(
    new Promise<void>((resolve, reject) => {
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        out += chunk;
        if (out.split('\n').length > 2000) resolve();
      });
      void exited.then(() => reject(new Error(`writer exited early: ${err}`)));
    }),
    'the writer under way',
  );
  child.kill('SIGKILL');
  t.equal(await exited, 'SIGKILL');
  const printed = out
    .split('\n')
    .filter((line) => /^\d+$/.test(line))
    .map(Number);
  const last = printed.at(-1) ?? 0;
  t.ok(last >= 2000, `the writer was killed mid-way (after ${last})`);

  const log = recorder();
  const store = openStore(dir, { maxEvents: 1_000_000, maxBytes: 0 }, log);
  t.teardown(() => store.close());
  t.same(log.errors, [], 'the database opens clean');
  const kept = store.logFor('s1');
  const ids = [...kept.after(0)].map((ev) => ev.envelope.id ?? 0);
  t.ok(ids.length >= last, `${ids.length} kept, ${last} acknowledged`);
  t.same(ids.slice(0, last), printed, 'every acknowledged id, dense from 1');
  t.equal(kept.nextId, ids.length + 1, 'the numbering goes on after the last kept event');
});

function corruptFiles(dir: string): string[] {
  return readdirSync(dir).filter((name) => name.startsWith(`${EVENTS_FILE}.corrupt-`));
}

t.test('a file that is not a database is reported, moved aside and replaced', (t) => {
  const dir = tempDir(t);
  writeFileSync(path.join(dir, EVENTS_FILE), 'this is no database, only garbage '.repeat(200));
  const log = recorder();
  const store = openStore(dir, undefined, log);
  t.teardown(() => store.close());
  t.equal(log.errors.length, 1, 'one error reported');
  t.match(log.errors[0], { obj: { file: path.join(dir, EVENTS_FILE), reason: /not a database/ } });
  t.equal(corruptFiles(dir).length, 1, 'the damaged file kept aside');
  const bus = new EventBus({ log: store.logFor('s') });
  t.equal(bus.publish('tick', {})?.id, 1, 'a fresh database works');
  t.end();
});

t.test('a truncated database is reported, moved aside and replaced', (t) => {
  const dir = tempDir(t);
  const first = openStore(dir, { maxEvents: 10_000, maxBytes: 0 });
  const bus = new EventBus({ log: first.logFor('s') });
  for (let i = 0; i < 2000; i++) bus.publish('tick', { i, pad: 'z'.repeat(100) });
  first.close();
  const file = path.join(dir, EVENTS_FILE);
  truncateSync(file, Math.floor(statSync(file).size / 2) + 100);
  const log = recorder();
  const store = openStore(dir, undefined, log);
  t.teardown(() => store.close());
  t.equal(log.errors.length, 1, 'one error reported');
  t.match(log.errors[0], { obj: { file, reason: String } });
  t.equal(corruptFiles(dir).length, 1);
  t.equal(store.logFor('s').nextId, 1, 'a fresh database: the session starts over');
  t.end();
});

t.test('the daemon with --event-log sqlite: ids and epoch survive a restart and a load', async (t) => {
  const workspace = tempDir(t, 'acpd-ws-');
  const dataDir = tempDir(t, 'acpd-data-');
  const args = ['--event-log', 'sqlite'];

  const first = await startDaemon(t, { workspace, dataDir, args });
  t.equal(first.config.eventLog, 'sqlite');
  const id = await createSession(first);
  const sse = await openEvents(t, first, id, { lastEventId: 0 });
  t.same((await call(first, 'POST', `/session/${id}/prompt`, textPrompt('hello world'))).body, {
    stopReason: 'end_turn',
  });
  const bus = first.app.sessions.get(id)?.events;
  const lastSeen = bus?.lastEventId ?? 0;
  const epoch = bus?.epoch;
  await within(
    sse.waitFor((f) => f.envelope?.id === lastSeen),
    `frame ${lastSeen}`,
  );
  t.ok(lastSeen > 1, `frames 1..${lastSeen} seen over SSE`);
  t.ok(existsSync(path.join(dataDir, EVENTS_FILE)), 'the database is under the data directory');
  await first.app.close();
  // The shutdown's session_died is the last frame logged.
  const logged = bus?.lastEventId ?? 0;

  const second = await startDaemon(t, { workspace, dataDir, args });
  const loaded = await call(second, 'POST', `/session/${id}/load`, {});
  t.equal(loaded.status, 200);
  const events = second.app.sessions.get(id)?.events;
  t.equal(events?.epoch, epoch, 'the session keeps its epoch');
  t.equal(events?.lastEventId, logged, 'the replayed history was not logged again: the log has it');
  t.match(loaded.body, { eventEpoch: epoch, lastEventId: logged });
  const history = obj(loaded.body).compactedReplay;
  t.match(
    history,
    [
      { v: 1, type: 'session_update', data: { update: { sessionUpdate: 'user_message_chunk' } } },
      { v: 1, type: 'session_update', data: { update: { sessionUpdate: 'agent_message_chunk' } } },
    ],
    'the history is in the answer instead',
  );

  const resumed = await openEvents(t, second, id, { lastEventId: lastSeen });
  t.equal(resumed.status, 200);
  t.same((await call(second, 'POST', `/session/${id}/prompt`, textPrompt('again'))).body, { stopReason: 'end_turn' });
  const newest = events?.lastEventId ?? 0;
  t.ok(newest > lastSeen, `ids went on (${lastSeen} → ${newest})`);
  await within(
    resumed.waitFor((f) => f.envelope?.id === newest),
    `frame ${newest}`,
  );
  const ids = resumed.events().flatMap((e) => (e.id === undefined ? [] : [e.id]));
  t.same(
    ids,
    Array.from({ length: newest - lastSeen }, (_, i) => lastSeen + 1 + i),
    'only the frames after the cursor, numbered on from it',
  );
});

t.test('a reconnect within what this process logged replays from memory; older events come from the file', (t) => {
  const dataDir = tempDir(t);
  const store = openStore(dataDir);
  const bus = new EventBus({ log: store.logFor('s') });
  for (let i = 0; i < 6; i++) bus.publish('tick', { i });
  const sent = [...store.logFor('s').after(0)];
  const again = [...store.logFor('s').after(3)];
  t.equal(again[0], sent[3], 'the very objects the bus built: no read, no parse');
  store.close();

  const reopened = openStore(dataDir);
  t.teardown(() => reopened.close());
  const log = reopened.logFor('s');
  const read = [...log.after(2)];
  t.same(
    read.map((ev) => ev.frame),
    sent.slice(2).map((ev) => ev.frame),
    'after a restart the same frames, rebuilt from the file',
  );
  t.same(
    read.map((ev) => ev.bytes),
    sent.slice(2).map((ev) => ev.bytes),
  );
  t.same(
    read.map((ev) => ev.envelope),
    sent.slice(2).map((ev) => ev.envelope),
    'envelopes parsed on demand',
  );
  // New events go to memory; a cursor before them still reads the file for the old ones.
  const bus2 = new EventBus({ log });
  bus2.publish('tick', { i: 6 });
  t.same(
    [...log.after(5)].map((ev) => ev.envelope.id),
    [6, 7],
    'the file for 6, memory for 7',
  );
  t.same(
    [...log.after(6)].map((ev) => ev.envelope.id),
    [7],
  );
  t.end();
});

t.test('disk full: events still reach subscribers from memory, the failure is reported once, then clears', (t) => {
  const dataDir = tempDir(t);
  const rec = recorder();
  const store = openStore(dataDir, { maxEvents: 100_000, maxBytes: 0 }, rec);
  t.teardown(() => store.close());
  const db = store.database;
  const bus = new EventBus({ log: store.logFor('s') });
  const live = bus.subscribe();
  bus.publish('tick', { i: 0 });
  bus.flush();
  t.equal(store.writeError, undefined);
  // SQLite refuses to grow the file past its current size: every insert that needs a page fails with SQLITE_FULL.
  const pages = Number(db.pragma('page_count', { simple: true }));
  db.pragma(`max_page_count = ${pages}`);
  const big = 'x'.repeat(8192);
  for (let i = 1; i <= 5; i++) {
    bus.publish('tick', { i, big });
    bus.flush();
  }
  t.match(store.writeError, /full/i, 'the store says why');
  t.equal(rec.errors.length, 1, 'reported once for the outage');
  t.same(
    live.takeBuffered().map((ev) => ev.envelope.id),
    [1, 2, 3, 4, 5, 6],
    'every event reached the subscriber',
  );
  t.same(
    [...store.logFor('s').after(1)].map((ev) => ev.envelope.id),
    [2, 3, 4, 5, 6],
    'and replays from memory',
  );
  db.pragma('max_page_count = 1073741823');
  bus.publish('tick', { i: 6 });
  bus.flush();
  t.equal(store.writeError, undefined, 'the next write that succeeds clears it');
  const rows = storedEvents(db, 's').map((r) => r.id);
  t.same(rows, [1, 7], 'the file has what could be written; ids went on');
  t.end();
});

t.test(
  'the daemon when log writes fail (a full disk, an I/O error): /readyz says failing, the session streams on, readiness returns',
  async (t) => {
    const d = await startDaemon(t);
    const store = d.app.dataStore;
    if (!store) throw new Error('the default daemon has no data store');
    const sid = await createSession(d);
    const events = await openEvents(t, d, sid, { lastEventId: 0 });
    const db = store.database;
    // Every write now fails (SQLITE_READONLY): to the daemon, the same as a full disk or an I/O error.
    db.pragma('query_only = ON');
    t.teardown(() => db.open && db.pragma('query_only = OFF'));
    const long = 'y'.repeat(20_000);
    t.same((await call(d, 'POST', `/session/${sid}/prompt`, textPrompt(long))).body, { stopReason: 'end_turn' });
    await within(
      events.waitFor((f) => f.envelope?.type === 'turn_complete'),
      'the turn reaches the client while nothing can be written',
    );
    t.match(store.writeError, /readonly/i);
    const failing = await call(d, 'GET', '/readyz');
    t.equal(failing.status, 503);
    t.match(failing.body, { checks: { eventLog: 'failing' } });

    db.pragma('query_only = OFF');
    t.same((await call(d, 'POST', `/session/${sid}/prompt`, textPrompt('ok'))).body, { stopReason: 'end_turn' });
    const ready = await call(d, 'GET', '/readyz');
    t.equal(ready.status, 200, 'writable again: ready again');
    t.match(ready.body, { checks: { eventLog: 'ok' } });
  },
);

t.test('an ended session lets go of its log: the store forgets it and its frames in memory', (t) => {
  const store = openStore(tempDir(t));
  t.teardown(() => store.close());
  const log = store.logFor('s');
  const bus = new EventBus({ log });
  const restoring = new EventBus({ log: store.logFor('s') });
  bus.publish('tick', {});
  restoring.close();
  t.equal(store.logFor('s'), log, 'still in use by one bus: the same log');
  bus.close();
  const next = store.logFor('s');
  t.not(next, log, 'no bus uses it any more: forgotten');
  t.equal(next.nextId, 2, 'a new one reads its place from the file');
  t.same(
    [...next.after(0)].map((ev) => ev.frame),
    [...log.after(0)].map((ev) => ev.frame),
  );
  t.end();
});

t.test('a cursor older than the log still replays from memory when the file holds nothing older', (t) => {
  const store = openStore(tempDir(t), { maxEvents: 3, maxBytes: 0 });
  t.teardown(() => store.close());
  const log = store.logFor('s');
  const bus = new EventBus({ log });
  const live = bus.subscribe();
  for (let i = 0; i < 6; i++) bus.publish('tick', { i });
  bus.flush();
  const sent = live.takeBuffered();
  const replay = [...log.after(0)];
  t.same(
    replay.map((ev) => ev.envelope.id),
    [4, 5, 6],
  );
  t.equal(replay[0], sent[3], 'the objects the bus built, not rows read back');
  t.end();
});

t.test('a group commit larger than the count cap does not evict a reader that keeps up; one that stops is', (t) => {
  const store = openStore(tempDir(t));
  t.teardown(() => store.close());
  const bus = new EventBus({ log: store.logFor('s'), maxQueued: 4 });
  const reader = bus.subscribe();
  for (let i = 0; i < 10; i++) bus.publish('tick', { i });
  bus.flush();
  t.equal(bus.subscriberCount, 1, 'a burst of 10 reaches a reader with nothing waiting');
  t.equal(reader.takeBuffered().length, 10);
  for (let i = 0; i < 10; i++) bus.publish('tick', { i });
  bus.flush();
  t.equal(bus.subscriberCount, 1, 'read, then another burst: still there');
  for (let i = 0; i < 10; i++) bus.publish('tick', { i });
  bus.flush();
  t.equal(bus.subscriberCount, 0, 'two bursts unread: over the cap, evicted');
  t.end();
});

/** How many rows (runs of events) the database holds for `sessionId`. */
function runsOf(store: SqliteEventStore, sessionId: string): number {
  return store.database
    .prepare<[string], { n: number }>('SELECT COUNT(*) AS n FROM event_runs WHERE session_id = ?')
    .get(sessionId)!.n;
}

/** How many events the rows hold, readable or not (a trim keeps the run it cuts whole). */
function eventsInRows(store: SqliteEventStore, sessionId: string): number {
  return store.database
    .prepare<[string], { n: number }>('SELECT SUM(last_id - first_id + 1) AS n FROM event_runs WHERE session_id = ?')
    .get(sessionId)!.n;
}

t.test(
  'a group commit is one row of the frames as sent; a trim keeps the run it cuts, its older frames never read again',
  (t) => {
    const dir = tempDir(t);
    const bounds = { maxEvents: 10, maxBytes: 0 };
    const store = openStore(dir, bounds);
    const bus = new EventBus({ log: store.logFor('s') });
    const live = bus.subscribe();
    for (let i = 0; i < 7; i++) bus.publish('tick', { i, text: 'é\n' });
    bus.flush();
    const sent = live.takeBuffered().map((ev) => ev.frame);
    t.equal(runsOf(store, 's'), 1, 'seven events, one row');
    t.same(
      storedEvents(store.database, 's').map((row) => `id: ${row.id}\nevent: tick\ndata: ${row.json}\n\n`),
      sent,
      'the row holds the frames sent, byte for byte',
    );
    for (let i = 0; i < 5; i++) bus.publish('tick', { i });
    bus.flush();
    sent.push(...live.takeBuffered().map((ev) => ev.frame));
    t.equal(runsOf(store, 's'), 2);
    t.same(
      rowsOf(store, 's'),
      Array.from({ length: 12 }, (_, i) => 1 + i),
      'within the slack',
    );
    const newest = Array.from({ length: 10 }, (_, i) => 3 + i);
    t.same(
      [...store.logFor('s').after(0)].map((ev) => ev.envelope.id),
      newest,
    );
    t.same(rowsOf(store, 's'), newest, 'the file gives exactly the bounds');
    t.equal(runsOf(store, 's'), 2, 'the first run cut after its second event, not rewritten');
    t.equal(eventsInRows(store, 's'), 12, 'its two older frames are still in it');
    const keptBytes = sent.slice(2).reduce((n, f) => n + Buffer.byteLength(f), 0);
    t.equal(store.logFor('s').bytes, keptBytes, 'the byte count is of the readable frames');
    store.close();

    // A reopen reads the cut from the file, not from the rows.
    const again = openStore(dir, bounds);
    t.teardown(() => again.close());
    const log = again.logFor('s');
    t.equal(log.firstId, 3);
    t.equal(log.size, 10);
    t.equal(log.bytes, keptBytes);
    t.equal(log.nextId, 13);
    t.same(
      [...log.after(0)].map((ev) => ev.frame),
      sent.slice(2),
      'a replay from the file starts at the cut',
    );
    t.same(
      [...log.after(1)].map((ev) => ev.envelope.id),
      newest,
      'a cursor inside the hidden frames too',
    );
    // Past the first run's last event the next trim deletes it whole.
    const bus2 = new EventBus({ log });
    for (let i = 0; i < 8; i++) bus2.publish('tick', { i });
    bus2.flush();
    t.same(
      [...log.after(0)].map((ev) => ev.envelope.id),
      Array.from({ length: 10 }, (_, i) => 11 + i),
    );
    t.equal(runsOf(again, 's'), 2, 'the cut run went whole; the next one is cut');
    t.equal(eventsInRows(again, 's'), 13);
    t.same(
      storedEvents(again.database, 's').map((row) => row.id),
      Array.from({ length: 10 }, (_, i) => 11 + i),
    );
    t.end();
  },
);

t.test('after a reopen a trim walks the runs: exactly the newest events within the bytes bound', (t) => {
  const dir = tempDir(t);
  const bounds = { maxEvents: 100, maxBytes: 1500 };
  const first = openStore(dir, bounds);
  const bus = new EventBus({ log: first.logFor('s') });
  const sizes: number[] = [];
  for (let run = 0; run < 4; run++) {
    for (let i = 0; i < 3; i++) bus.publish('tick', { pad: 'p'.repeat(20 + 37 * ((run * 3 + i) % 5)) });
    bus.flush();
  }
  for (const ev of first.logFor('s').after(0)) sizes[(ev.envelope.id ?? 0) - 1] = ev.bytes;
  first.close();

  const store = openStore(dir, bounds);
  t.teardown(() => store.close());
  const bus2 = new EventBus({ log: store.logFor('s') });
  bus2.publish('tick', { pad: 'q'.repeat(300) });
  bus2.flush();
  const held = [...store.logFor('s').after(0)];
  sizes[12] = held[held.length - 1].bytes;
  // The newest suffix of every event so far that fits in the bytes bound, computed here from the sizes.
  let keepFrom = sizes.length;
  let bytes = 0;
  while (keepFrom > 0 && bytes + (sizes[keepFrom - 1] ?? 0) <= bounds.maxBytes) bytes += sizes[--keepFrom] ?? 0;
  t.ok(keepFrom > 1, 'the bound cuts into the older runs');
  t.same(
    held.map((ev) => ev.envelope.id),
    Array.from({ length: 13 - keepFrom }, (_, i) => keepFrom + 1 + i),
  );
  t.same(
    rowsOf(store, 's'),
    held.map((ev) => ev.envelope.id),
    'the file holds the same',
  );
  t.equal(store.logFor('s').bytes, bytes, 'and its byte count');
  t.end();
});

t.test('a database of the row-per-event layout: its events become runs at open, the same frames', (t) => {
  const dir = tempDir(t);
  const old = new Database(path.join(dir, EVENTS_FILE));
  old.exec(`
    CREATE TABLE logs (session_id TEXT PRIMARY KEY, epoch TEXT NOT NULL, next_id INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE events (session_id TEXT NOT NULL, id INTEGER NOT NULL, type TEXT NOT NULL, json TEXT NOT NULL,
      bytes INTEGER NOT NULL, PRIMARY KEY (session_id, id)) WITHOUT ROWID;
  `);
  old.prepare("INSERT INTO logs VALUES ('s', 'e1', 1)").run();
  const frames: string[] = [];
  for (let id = 4; id <= 6; id++) {
    const json = JSON.stringify({ id, v: 1, type: 'tick', data: { id, text: 'ü' } });
    const frame = `id: ${id}\nevent: tick\ndata: ${json}\n\n`;
    frames.push(frame);
    old.prepare('INSERT INTO events VALUES (?, ?, ?, ?, ?)').run('s', id, 'tick', json, Buffer.byteLength(frame));
  }
  old.close();

  const store = openStore(dir);
  t.teardown(() => store.close());
  const log = store.logFor('s');
  t.equal(log.epoch, 'e1');
  t.equal(log.nextId, 7);
  t.equal(log.firstId, 4);
  t.equal(
    log.bytes,
    frames.reduce((n, f) => n + Buffer.byteLength(f), 0),
  );
  t.same(
    [...log.after(0)].map((ev) => ev.frame),
    frames,
    'the same frames',
  );
  t.same(
    [...log.after(4)].map((ev) => ev.envelope),
    [5, 6].map((id) => ({ id, v: 1, type: 'tick', data: { id, text: 'ü' } })),
  );
  const tables = store.database
    .prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'events'")
    .all();
  t.same(tables, [], 'the old table is gone');
  t.end();
});

t.test('after a failed write the trim walks the file: the tail holds an event the file lacks', (t) => {
  const store = openStore(tempDir(t), { maxEvents: 4, maxBytes: 0 });
  t.teardown(() => store.close());
  const db = store.database;
  const bus = new EventBus({ log: store.logFor('s') });
  for (let i = 1; i <= 4; i++) {
    bus.publish('tick', { i });
    bus.flush();
  }
  // Event 5 cannot be written (the file may not grow), so only the tail has it.
  const pages = Number(db.pragma('page_count', { simple: true }));
  db.pragma(`max_page_count = ${pages}`);
  bus.publish('tick', { big: 'x'.repeat(16_384) });
  bus.flush();
  t.ok(store.writeError, 'the write failed');
  db.pragma('max_page_count = 1073741823');
  for (let i = 6; i <= 7; i++) {
    bus.publish('tick', { i });
    bus.flush();
  }
  // Seven ids, six in the file: past the slack (5) at event 7, back to the newest four the file holds.
  t.same(rowsOf(store, 's'), [3, 4, 6, 7], "the file's newest four, not the tail's");
  t.equal(store.logFor('s').size, 4, 'and the count says so');
  t.end();
});

/** Publishes about `megabytes` MB of frames in bursts of `perBurst` (each burst one commit). */
function publishMegabytes(bus: EventBus, megabytes: number, perBurst = 100): void {
  const pad = 'w'.repeat(1000);
  for (let burst = 0; burst < (megabytes * 1000) / perBurst; burst++) {
    for (let i = 0; i < perBurst; i++) bus.publish('tick', { i, pad });
    bus.flush();
  }
}

t.test(
  "the WAL's checkpoints run on a worker thread, and the WAL starts over without one in the commits",
  async (t) => {
    const dir = tempDir(t);
    const store = openStore(dir, { maxEvents: 100, maxBytes: 0 });
    t.teardown(() => store.close());
    const checkpointer = store.checkpointer!;
    t.equal(
      store.database.pragma('wal_autocheckpoint', { simple: true }),
      4000,
      "the daemon's connection checkpoints only past 4000 pages",
    );
    t.notOk(checkpointer.running, 'no thread before there is anything to fold');
    const bus = new EventBus({ log: store.logFor('s') });
    publishMegabytes(bus, 5);
    t.ok(checkpointer.running, 'a thread once 1000 pages went to the WAL');
    await until(() => checkpointer.checkpoints >= 1, 'the first checkpoint');
    t.ok(checkpointer.pagesCopied > 1000, `it copied the WAL's pages (${checkpointer.pagesCopied})`);
    const wal = path.join(dir, `${EVENTS_FILE}-wal`);
    const afterFirst = statSync(wal).size;
    publishMegabytes(bus, 5);
    // Without the worker's checkpoint the WAL would grow by these 5 MB: SQLite's own come only past 16 MB.
    t.ok(statSync(wal).size < afterFirst + 2 * 1024 * 1024, 'the next commits wrote the WAL from its start again');
    await until(() => checkpointer.checkpoints >= 2, 'a second checkpoint');
    t.same(
      rowsOf(store, 's'),
      Array.from({ length: 100 }, (_, i) => bus.lastEventId - 99 + i),
      'the log is whole',
    );
  },
);

t.test(
  'a checkpoint thread that cannot start: reported once, and SQLite checkpoints in the commits again',
  async (t) => {
    const warnings: string[] = [];
    const store = new SqliteEventStore({
      dataDir: tempDir(t),
      bounds: { maxEvents: 100, maxBytes: 0 },
      log: { error: () => {}, warn: (_obj, msg) => warnings.push(msg) },
      checkpointWorkerUrl: new URL('./no-such-worker.js', import.meta.url),
    });
    t.teardown(() => store.close());
    const bus = new EventBus({ log: store.logFor('s') });
    publishMegabytes(bus, 5);
    await until(() => !store.checkpointer!.active, 'the checkpointer gave up');
    t.equal(store.database.pragma('wal_autocheckpoint', { simple: true }), 1000, "SQLite's default again");
    t.same(warnings, ['checkpoint worker unavailable; checkpoints are made by the commits']);
    publishMegabytes(bus, 5);
    t.same(warnings.length, 1, 'reported once');
    t.equal(store.logFor('s').size, 100, 'the log goes on');
  },
);

t.test('the checkpoint thread ends when idle and starts again when needed', async (t) => {
  const dir = tempDir(t);
  const store = new SqliteEventStore({
    dataDir: dir,
    bounds: { maxEvents: 10, maxBytes: 0 },
    log: recorder(),
    checkpointWorker: false,
  });
  t.teardown(() => store.close());
  t.equal(store.checkpointer, undefined, 'off: SQLite checkpoints in the commits');
  t.equal(store.database.pragma('wal_autocheckpoint', { simple: true }), 1000);
  const fellBack: string[] = [];
  const checkpointer = new WalCheckpointer({
    file: store.file,
    everyPages: 10,
    idleMs: 10,
    fallBack: (reason) => fellBack.push(reason),
  });
  t.teardown(() => checkpointer.close());
  checkpointer.wrote(4096 * 4);
  t.notOk(checkpointer.running, 'not yet 10 pages: 4 of frames, 2 more');
  checkpointer.wrote(4096 * 4);
  t.ok(checkpointer.running);
  await until(() => checkpointer.checkpoints === 1 && !checkpointer.running, 'one checkpoint, then idle: gone');
  checkpointer.request();
  await until(() => checkpointer.checkpoints === 2, 'a second checkpoint');
  t.equal(checkpointer.started, 2, 'on a new thread');
  t.same(fellBack, [], 'an idle thread ending is no failure');
});

t.test('a steady stream of commits: SQLite checkpoints past its mark, so the WAL stays bounded', (t) => {
  const dir = tempDir(t);
  const store = openStore(dir, { maxEvents: 100, maxBytes: 0 });
  t.teardown(() => store.close());
  const bus = new EventBus({ log: store.logFor('s') });
  // Small commits, one after the other, and never a turn of the event loop: nothing the worker answers is
  // even read, as under a flood that never pauses. Five events of 1 KB a commit write four pages or more.
  publishMegabytes(bus, 24, 5);
  const walSize = statSync(path.join(dir, `${EVENTS_FILE}-wal`)).size;
  // Past the mark (16 MB of WAL) every commit tries SQLite's checkpoint until one finds the worker's done: the
  // WAL overshoots by what is written meanwhile. Without any checkpoint it would hold all of it, ~100 MB.
  const bound = 2 * 4000 * 4096;
  t.ok(walSize <= bound, `the WAL file is ${walSize} bytes (${bound} at most)`);
  t.equal(store.logFor('s').size, 100);
  t.end();
});
