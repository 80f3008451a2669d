// The durable event log under the worst a daemon meets (issue 12): `kill -9` in the middle of a flood of
// frames, then a restart over the same data directory, a load, and a reconnect with the old epoch and
// cursor. The frames the client ends with must be exactly those the agent emitted, once each, in order,
// and exactly what the database holds. The same after a torn write at the end of the WAL file, and with
// a truncated database file, which is reported, moved aside and replaced by an empty one.
//
// The daemon is the real binary (dist/server.js) in a child process, so that SIGKILL hits a process
// that is really writing; its agent is the steered one, whose `flood <n>` prompt streams numbered
// agent_message_chunk updates ("chunk 1 ", "chunk 2 ", …) until its daemon goes away.
import { readdirSync, readFileSync, statSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import { isAlive } from '../harness/proc-table.js';
import { Proc } from '../harness/spawn.js';
import { within } from '../harness/wait.js';
import { Steer } from './fixtures/steer.js';
import { tempDir, type Endpoint } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { openEvents, type SseFrame, type SseStream } from './support/sse.js';
import { textPrompt } from './support/values.js';
import { EVENTS_FILE, storedEvents } from '../src/services/sqlite-event-log.js';

const SERVER = fileURLToPath(new URL('../../dist/server.js', import.meta.url));
const LISTENING = /acpd listening on (http:\/\/\S+) /;
/** The client follows this many chunks before the daemon is killed (well inside the log's 4000 events). */
const BEFORE_KILL = 300;

interface Daemon extends Endpoint {
  proc: Proc;
}

/** The environment of the test run without any ACPD_* setting, so that only the flags below count. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('ACPD_')));
}

/** `node dist/server.js` with the durable log and the steered agent, once it listens. */
async function startBinary(t: Test, steer: Steer, workspace: string, dataDir: string): Promise<Daemon> {
  const args = [
    ...['--port', '0', '--workspace', workspace, '--data-dir', dataDir, '--event-log', 'sqlite'],
    ...['--warm-sessions', '0', '--max-event-loop-delay-ms', '0', '--log-level', 'info'],
    ...['--agent', steer.argv.join(' ')],
  ];
  const proc = new Proc('acpd', process.execPath, [SERVER, ...args], {
    env: cleanEnv(),
    cwd: workspace,
    logFile: path.join(dataDir, '..', 'acpd.log'),
  });
  t.teardown(() => proc.stop());
  const [, baseUrl] = await proc.waitForLine(LISTENING, 10_000);
  if (baseUrl === undefined) throw new Error('no address in the start line');
  return { proc, baseUrl, headers: {} };
}

/** The id'd frames of a stream (frames without an id, such as a resync notice, are not numbered events). */
function numbered(sse: SseStream): SseFrame[] {
  return sse.frames.filter((f) => f.id !== undefined);
}

/** The text of an agent_message_chunk frame, else undefined. */
function chunkText(f: SseFrame): string | undefined {
  const e = f.envelope;
  if (e?.type !== 'session_update') return undefined;
  const update = obj(e.data.update);
  if (update.sessionUpdate !== 'agent_message_chunk') return undefined;
  const text = obj(update.content).text;
  return typeof text === 'string' ? text : undefined;
}

/** The rows of the session in the database, read beside the running daemon. */
function logged(dataDir: string, sessionId: string): { id: number; json: string }[] {
  const db = new Database(path.join(dataDir, EVENTS_FILE), { readonly: true, fileMustExist: true });
  try {
    return storedEvents(db, sessionId);
  } finally {
    db.close();
  }
}

interface BeforeKill {
  sessionId: string;
  epoch: string;
  /** The id'd frames the client holds when it comes back. */
  seen: SseFrame[];
}

/**
 * One daemon, one session, a client following its events from the start and a flood of chunks; the
 * daemon is SIGKILLed while frames flow. With `dropFirst` the client loses its connection after
 * BEFORE_KILL chunks and the kill comes once a second reader saw BEFORE_KILL more: the log is then
 * well ahead of the client's cursor when the daemon dies.
 */
async function floodAndKill(
  t: Test,
  steer: Steer,
  workspace: string,
  dataDir: string,
  dropFirst: boolean,
): Promise<BeforeKill> {
  const first = await startBinary(t, steer, workspace, dataDir);
  const sessionId = await createSession(first);
  // Joining the live session is how a client learns the epoch of its stream.
  const joined = await call(first, 'POST', `/session/${sessionId}/load`, {});
  t.equal(joined.status, 200);
  const epoch = String(obj(joined.body).eventEpoch);
  const client = await openEvents(t, first, sessionId, { lastEventId: 0 });
  t.equal(client.status, 200);

  // The prompt never answers: its daemon dies under it.
  void call(first, 'POST', `/session/${sessionId}/prompt`, textPrompt('flood 1000000')).catch(() => undefined);
  const reached = (sse: SseStream, n: number) =>
    within(
      sse.waitFor((f) => chunkText(f) === `chunk ${n} `, `chunk ${n}`),
      `chunk ${n}`,
    );
  await reached(client, BEFORE_KILL);
  if (dropFirst) {
    client.close();
    const other = await openEvents(t, first, sessionId, { lastEventId: 0 });
    // An eviction of this reader (a queue overflow) also means the log went far past the client.
    await reached(other, 2 * BEFORE_KILL).catch(() => undefined);
  }
  const agent = await steer.agent(0);
  process.kill(first.proc.pid, 'SIGKILL');
  t.match(await within(first.proc.exited, 'the daemon killed'), { signal: 'SIGKILL' });
  // Its agent notices the daemon is gone (stdin at EOF) and leaves: nothing outlives the daemon.
  await within(agent.exited, 'the agent of the killed daemon to exit');
  t.notOk(isAlive(agent.pid), 'the agent of the killed daemon is gone');
  if (!dropFirst) await within(client.ended, 'the stream of the killed daemon to end');
  return { sessionId, epoch, seen: numbered(client) };
}

/**
 * Loads the session on `daemon` and reconnects with the old epoch and cursor. Resolves with the load's
 * answer and the new stream once it holds every frame up to the answer's lastEventId.
 */
async function comeBack(
  t: Test,
  daemon: Daemon,
  before: BeforeKill,
): Promise<{ answer: Record<string, unknown>; sse: SseStream }> {
  const load = await call(daemon, 'POST', `/session/${before.sessionId}/load`, {}, { 'x-qwen-client-id': 'c-1' });
  t.equal(load.status, 200, 'the session loads');
  const answer = obj(load.body);
  t.match(answer, { sessionId: before.sessionId, attached: false, clientId: 'c-1', hasActivePrompt: false });
  const cursor = Number(before.seen.at(-1)?.id ?? 0);
  const sse = await openEvents(t, daemon, before.sessionId, {
    lastEventId: cursor,
    headers: { 'x-qwen-event-epoch': before.epoch },
  });
  t.equal(sse.status, 200, 'the reconnect is served');
  const last = Number(answer.lastEventId);
  if (last > cursor)
    await within(
      sse.waitFor((f) => f.id === String(last), `frame ${last}`),
      `frame ${last}`,
    );
  return { answer, sse };
}

/**
 * What the client ends with is exactly what the agent emitted, once each, in order: ids dense from 1,
 * the chunks "chunk 1 " … "chunk m " and nothing else, m at least what it had before the kill, and
 * the database holding exactly those frames.
 */
function assertExactlyOnce(t: Test, dataDir: string, before: BeforeKill, after: SseFrame[]): void {
  const frames = [...before.seen, ...after];
  const ids = frames.map((f) => Number(f.id));
  t.same(
    ids,
    Array.from({ length: ids.length }, (_, i) => i + 1),
    `ids dense from 1, each once (${ids.length})`,
  );
  const chunks = frames.flatMap((f) => {
    const text = chunkText(f);
    return text === undefined ? [] : [text];
  });
  t.same(
    chunks,
    Array.from({ length: chunks.length }, (_, i) => `chunk ${i + 1} `),
    `the chunks are 1..${chunks.length} in order, none twice, none invented`,
  );
  t.ok(chunks.length >= BEFORE_KILL, `at least what the client had before the kill (${chunks.length})`);
  t.notOk(
    frames.some((f) => chunkText(f) === 'hello'),
    'the history the load replayed was not sent again',
  );
  t.same(
    logged(dataDir, before.sessionId),
    frames.map((f) => ({ id: Number(f.id), json: f.data })),
    'the database holds exactly those frames',
  );
}

/** The steer controller and the two directories a daemon runs over. */
async function setUp(t: Test): Promise<{ steer: Steer; workspace: string; dataDir: string }> {
  const steer = await Steer.create();
  t.teardown(() => steer.close());
  const workspace = tempDir(t, 'acpd-ws-');
  const dataDir = path.join(tempDir(t, 'acpd-durable-'), 'data');
  return { steer, workspace, dataDir };
}

t.test('kill -9 mid-flood, restart, load, reconnect: every frame exactly once', async (t) => {
  const { steer, workspace, dataDir } = await setUp(t);
  const before = await floodAndKill(t, steer, workspace, dataDir, false);

  const second = await startBinary(t, steer, workspace, dataDir);
  const { answer, sse } = await comeBack(t, second, before);
  t.equal(answer.eventEpoch, before.epoch, 'the same epoch after the restart');
  t.match(
    answer.compactedReplay,
    [
      { type: 'session_update', data: { update: { sessionUpdate: 'user_message_chunk' } } },
      {
        type: 'session_update',
        data: { update: { sessionUpdate: 'agent_message_chunk', content: { text: 'helloagain' } } },
      },
    ],
    "the agent's replay comes back in the answer, merged",
  );
  assertExactlyOnce(t, dataDir, before, numbered(sse));

  // The old cursor simply goes on: new frames carry the next ids.
  const last = Number(answer.lastEventId);
  t.same((await call(second, 'POST', `/session/${before.sessionId}/prompt`, textPrompt('after'))).body, {
    stopReason: 'end_turn',
  });
  await within(
    sse.waitFor((f) => f.envelope?.type === 'turn_complete'),
    'the new turn',
  );
  const turn = numbered(sse).filter((f) => Number(f.id) > last);
  t.same(
    turn.map((f) => [Number(f.id), f.envelope?.type, chunkText(f)]),
    [
      [last + 1, 'session_update', undefined], // the prompt's echo
      [last + 2, 'session_update', 'you said: '],
      [last + 3, 'session_update', 'after'],
      [last + 4, 'turn_complete', undefined],
    ],
    'the new turn continues at the next id',
  );
});

/**
 * Cuts the WAL file in the middle of its last frame that belongs to the current WAL (frames after a
 * reset carry the header's salts; older ones left beyond them do not): a torn write of the last commit.
 */
function tearWal(t: Test, file: string): void {
  const wal = readFileSync(file);
  const pageSize = wal.readUInt32BE(8);
  const salts = [wal.readUInt32BE(16), wal.readUInt32BE(20)];
  const frameSize = 24 + pageSize;
  let last = -1;
  for (let at = 32; at + frameSize <= wal.length; at += frameSize) {
    if (wal.readUInt32BE(at + 8) !== salts[0] || wal.readUInt32BE(at + 12) !== salts[1]) break;
    last = at;
  }
  t.ok(last >= 0, 'the WAL holds frames');
  truncateSync(file, last + 24 + pageSize / 2);
}

t.test('a torn write at the end of the WAL: recovery to the last whole commit, still exactly once', async (t) => {
  const { steer, workspace, dataDir } = await setUp(t);
  const before = await floodAndKill(t, steer, workspace, dataDir, true);
  tearWal(t, path.join(dataDir, `${EVENTS_FILE}-wal`));

  const second = await startBinary(t, steer, workspace, dataDir);
  const { answer, sse } = await comeBack(t, second, before);
  t.equal(answer.eventEpoch, before.epoch, 'the database recovered: same epoch');
  t.notOk(
    readdirSync(dataDir).some((name) => name.includes('.corrupt-')),
    'nothing moved aside',
  );
  assertExactlyOnce(t, dataDir, before, numbered(sse));
});

t.test(
  'a truncated database: reported, moved aside, an empty log, and the old cursor gets only new frames',
  async (t) => {
    const { steer, workspace, dataDir } = await setUp(t);
    const before = await floodAndKill(t, steer, workspace, dataDir, false);
    const file = path.join(dataDir, EVENTS_FILE);
    // Fold the WAL into the file first, as the daemon's checkpoints do as it runs: the events are then in
    // the file that gets cut.
    const folding = new Database(file);
    folding.pragma('wal_checkpoint(TRUNCATE)');
    folding.close();
    t.ok(statSync(file).size > 16 * 1024, 'the events are in the file that gets cut');
    truncateSync(file, Math.floor(statSync(file).size * 0.4));

    const second = await startBinary(t, steer, workspace, dataDir);
    await second.proc.waitForLine(/"component":"event-log".*moved aside/, 10_000);
    t.equal(
      readdirSync(dataDir).filter((name) => name.startsWith(`${EVENTS_FILE}.corrupt-`)).length,
      1,
      'the damaged file kept aside',
    );
    const load = await call(second, 'POST', `/session/${before.sessionId}/load`, {});
    t.equal(load.status, 200, 'the daemon serves');
    const answer = obj(load.body);
    t.not(answer.eventEpoch, before.epoch, 'a new log, a new epoch');
    t.equal(answer.lastEventId, 3, "an empty log: the agent's replay went on the stream, as in v1");

    const cursor = Number(before.seen.at(-1)?.id ?? 0);
    const sse = await openEvents(t, second, before.sessionId, {
      lastEventId: cursor,
      headers: { 'x-qwen-event-epoch': before.epoch },
    });
    t.equal(sse.status, 200, 'the old cursor is served, not refused');
    t.same((await call(second, 'POST', `/session/${before.sessionId}/prompt`, textPrompt('after'))).body, {
      stopReason: 'end_turn',
    });
    await within(
      sse.waitFor((f) => chunkText(f) === 'after'),
      'the new turn',
    );
    const rows = new Map(logged(dataDir, before.sessionId).map((row) => [row.id, row.json]));
    const got = numbered(sse);
    t.ok(got.length >= 2, 'the new turn arrived');
    t.ok(
      got.every((f) => rows.get(Number(f.id)) === f.data),
      'every frame the old cursor got is a frame of the new log',
    );
    t.notOk(
      got.some((f) => chunkText(f)?.startsWith('chunk ')),
      'nothing of the lost log',
    );
  },
);
