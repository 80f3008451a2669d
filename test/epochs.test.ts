// Epochs and the reconnect protocol taken from the qwen daemon, made stable by the durable log: every SSE
// response names the epoch of the session's ids (`X-Qwen-Event-Epoch`), which survives a daemon restart with
// the same data directory, so an old cursor resumes with no gap and no duplicate. A cursor from another epoch,
// ahead of the log or older than what it holds gets `state_resync_required` and every event held; every stream
// then gets `replay_complete` and `session_state` (no ids) before any live frame.
import t from 'tap';
import { request } from 'undici';
import { within } from '../harness/wait.js';
import type { EventBus } from '../src/services/event-bus.js';
import { startDaemon, steerDaemon, tempDir, type TestDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { isType, lastEventId, openEvents, type SseFrame, type SseStream } from './support/sse.js';
import { chunk, range, textPrompt } from './support/values.js';

const EPOCH = 'x-qwen-event-epoch';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function busOf(d: TestDaemon, sessionId: string): EventBus {
  const session = d.app.sessions.get(sessionId);
  if (!session) throw new Error(`no live session ${sessionId}`);
  return session.events;
}

function hasId(id: number): (f: SseFrame) => boolean {
  return (f) => f.envelope?.id === id;
}

/** The stream's events as [type, id], in order. */
function shape(s: SseStream): [string, number | undefined][] {
  return s.events().map((e) => [e.type, e.id]);
}

function numbered(s: SseStream): number[] {
  return s.events().flatMap((e) => (e.id === undefined ? [] : [e.id]));
}

t.test(
  'the epoch and the ids survive a daemon restart: an old cursor resumes with no gap and no duplicate',
  async (t) => {
    const workspace = tempDir(t, 'acpd-ws-');
    const dataDir = tempDir(t, 'acpd-data-');

    const first = await startDaemon(t, { workspace, dataDir });
    const id = await createSession(first);
    const sse = await openEvents(t, first, id);
    t.equal(sse.status, 200);
    const epoch = String(sse.headers[EPOCH]);
    t.equal(epoch, busOf(first, id).epoch, 'X-Qwen-Event-Epoch is the epoch of the session log');
    t.match(sse.headers['x-qwen-sse-stream-id'], UUID, 'X-Qwen-SSE-Stream-Id is a UUID');
    const other = await openEvents(t, first, id);
    t.not(other.headers['x-qwen-sse-stream-id'], sse.headers['x-qwen-sse-stream-id'], 'a new stream id per stream');
    t.equal(other.headers[EPOCH], epoch, 'the same epoch on every stream of the session');
    other.close();
    const head = await request(`${first.baseUrl}/session/${id}/events`, { method: 'HEAD', headers: first.headers });
    t.equal(head.statusCode, 200);
    t.equal(head.headers[EPOCH], epoch, 'HEAD names the epoch too');
    t.match(head.headers['x-qwen-sse-stream-id'], UUID);
    await head.body.dump();

    t.same((await call(first, 'POST', `/session/${id}/prompt`, textPrompt('hello'))).body, { stopReason: 'end_turn' });
    const bus = busOf(first, id);
    const seen = bus.lastEventId;
    await within(sse.waitFor(hasId(seen)), `frame ${seen}`);
    await first.app.close();
    // The client's cursor: the last frame it got (the shutdown's session_died).
    await sse.ended;
    const cursor = numbered(sse).at(-1) ?? 0;
    t.equal(cursor, bus.lastEventId, 'the client saw every frame of the first daemon');

    const second = await startDaemon(t, { workspace, dataDir });
    t.equal((await call(second, 'POST', `/session/${id}/load`, {})).status, 200);
    const resumed = await openEvents(t, second, id, { lastEventId: cursor, headers: { [EPOCH]: epoch } });
    t.equal(resumed.status, 200);
    t.equal(resumed.headers[EPOCH], epoch, 'the same epoch after the restart');
    // A load onto a log that holds the session publishes no history again: the ids simply go on.
    const newest = lastEventId(second, id);
    t.ok(newest >= cursor, `ids go on from the cursor (${cursor} → ${newest})`);
    await within(resumed.waitFor(isType('session_state')), 'session_state');
    t.same((await call(second, 'POST', `/session/${id}/prompt`, textPrompt('again'))).body, { stopReason: 'end_turn' });
    const last = lastEventId(second, id);
    await within(resumed.waitFor(hasId(last)), `frame ${last}`);

    const replayed = range(cursor + 1, newest);
    t.equal(numbered(resumed)[0], cursor + 1, 'the first frame after the restart has id lastId + 1');
    t.strictSame(
      shape(resumed).map(([type, n]) => n ?? type),
      [...replayed, 'replay_complete', 'session_state', ...range(newest + 1, last)],
      'the frames after the cursor, replay_complete, session_state, then the live frames',
    );
    t.strictSame(numbered(resumed), range(cursor + 1, last), 'no gap, no duplicate');
    t.strictSame(resumed.events()[replayed.length]?.data, {
      lastReplayedEventId: replayed.length > 0 ? newest : null,
      lastEventId: newest,
      replayedCount: replayed.length,
    });
    t.match(resumed.events()[replayed.length + 1]?.data, {
      sessionId: id,
      lastEventId: newest,
      eventEpoch: epoch,
      turn: { state: 'idle' },
      pendingPermissions: [],
      pendingPrompts: [],
    });
  },
);

t.test('a cursor from another epoch: state_resync_required (epoch_mismatch), then everything held', async (t) => {
  const { d, steer } = await steerDaemon(t);
  const id = await createSession(d);
  const agent = await steer.agent();
  for (const text of ['a', 'b', 'c']) await agent.notify(id, chunk(text));

  const stale = await openEvents(t, d, id, { lastEventId: 2, headers: { [EPOCH]: 'an-epoch-of-another-life' } });
  await within(stale.waitFor(isType('session_state')), 'session_state');
  t.strictSame(shape(stale), [
    ['state_resync_required', undefined],
    ['session_update', 1],
    ['session_update', 2],
    ['session_update', 3],
    ['replay_complete', undefined],
    ['session_state', undefined],
  ]);
  t.strictSame(stale.events()[0]?.data, {
    reason: 'epoch_reset',
    detail: 'epoch_mismatch',
    lastDeliveredId: 2,
    earliestAvailableId: 1,
  });
  t.notOk(
    stale.frames.some((f) => f.envelope?.id === undefined && f.id !== undefined),
    'the id-less frames have no id: line',
  );

  // The right epoch, or none (a v1 client): the cursor is taken as it is.
  const epoch = String(stale.headers[EPOCH]);
  const asV1: Record<string, string> = {};
  for (const headers of [{ [EPOCH]: epoch }, asV1]) {
    const fine = await openEvents(t, d, id, { lastEventId: 2, headers });
    await within(fine.waitFor(isType('session_state')), 'session_state');
    t.strictSame(shape(fine), [
      ['session_update', 3],
      ['replay_complete', undefined],
      ['session_state', undefined],
    ]);
  }
});

t.test('a cursor ahead of the log: state_resync_required (cursor_ahead), then everything held', async (t) => {
  const { d, steer } = await steerDaemon(t);
  const id = await createSession(d);
  const agent = await steer.agent();
  for (const text of ['a', 'b']) await agent.notify(id, chunk(text));
  const first = await openEvents(t, d, id);
  const epoch = String(first.headers[EPOCH]);

  const ahead = await openEvents(t, d, id, { lastEventId: 50, headers: { [EPOCH]: epoch } });
  await within(ahead.waitFor(isType('session_state')), 'session_state');
  await agent.notify(id, chunk('live'));
  await within(ahead.waitFor(hasId(3)), 'the live frame');
  t.strictSame(shape(ahead), [
    ['state_resync_required', undefined],
    ['session_update', 1],
    ['session_update', 2],
    ['replay_complete', undefined],
    ['session_state', undefined],
    ['session_update', 3],
  ]);
  t.strictSame(ahead.events()[0]?.data, {
    reason: 'epoch_reset',
    detail: 'cursor_ahead',
    lastDeliveredId: 50,
    earliestAvailableId: 1,
  });
});

t.test('a cursor older than the log holds: state_resync_required (cursor_expired), then what is left', async (t) => {
  // A log of a few kB: frames of 1 kB push the oldest ones out.
  const { d, steer } = await steerDaemon(t, { args: ['--ring-bytes', '2500'] });
  const id = await createSession(d);
  const agent = await steer.agent();
  for (let i = 1; i <= 5; i++) await agent.notify(id, chunk(String(i).padEnd(1000, '.')));
  const held = busOf(d, id).ringBytes;
  t.ok(held <= 2500, `the log keeps ${held} bytes`);

  const old = await openEvents(t, d, id, { lastEventId: 1 });
  await within(old.waitFor(isType('session_state')), 'session_state');
  const events = old.events();
  t.match(events[0], {
    type: 'state_resync_required',
    data: { reason: 'ring_evicted', detail: 'cursor_expired', lastDeliveredId: 1, earliestAvailableId: 4 },
  });
  t.strictSame(numbered(old), [4, 5], 'then the events the log still holds');
  t.strictSame(events.at(-2)?.data, { lastReplayedEventId: 5, lastEventId: 5, replayedCount: 2 });

  // From right before the oldest event held, nothing is missing: no resync.
  const adjacent = await openEvents(t, d, id, { lastEventId: 3 });
  await within(adjacent.waitFor(isType('session_state')), 'session_state');
  t.strictSame(shape(adjacent), [
    ['session_update', 4],
    ['session_update', 5],
    ['replay_complete', undefined],
    ['session_state', undefined],
  ]);
});

t.test('the state frame of a reconnect: the running turn and the permission request waiting', async (t) => {
  const { d, steer } = await steerDaemon(t);
  const id = await createSession(d);
  const sse = await openEvents(t, d, id);
  const turn = call(d, 'POST', `/session/${id}/prompt`, textPrompt('hang'));
  await steer.seen('session/prompt');
  const agent = await steer.agent();
  const vote = agent.permission(id, { toolCallId: 'tc-1', title: 'write a file' }, [
    { optionId: 'allow', name: 'Allow', kind: 'allow_once' },
    { optionId: 'deny', name: 'Deny', kind: 'reject_once' },
  ]);
  const asked = await within(sse.waitFor(isType('permission_request')), 'permission_request');
  const requestId = String(obj(asked.envelope?.data).requestId);
  const cursor = asked.envelope?.id ?? 0;

  // The client drops and comes back with its cursor: nothing to replay, but the state says what waits.
  sse.close();
  const back = await openEvents(t, d, id, { lastEventId: cursor, headers: { [EPOCH]: String(sse.headers[EPOCH]) } });
  const state = await within(back.waitFor(isType('session_state')), 'session_state');
  t.strictSame(
    shape(back),
    [
      ['replay_complete', undefined],
      ['session_state', undefined],
    ],
    'nothing after the cursor to replay',
  );
  t.match(state.envelope?.data, {
    sessionId: id,
    lastEventId: cursor,
    eventEpoch: String(sse.headers[EPOCH]),
    turn: { state: 'running' },
    pendingPermissions: [
      {
        requestId,
        kind: 'permission',
        toolCall: { toolCallId: 'tc-1', title: 'write a file' },
        options: [{ optionId: 'allow' }, { optionId: 'deny' }],
      },
    ],
    pendingPrompts: [],
  });
  const status = obj((await call(d, 'GET', `/session/${id}/status`)).body);
  t.strictSame(
    obj(state.envelope?.data).pendingPermissions,
    status.pendingInteractions,
    'the same items as the status route',
  );

  // Once the vote and the turn are over, a new stream shows an idle session with nothing waiting.
  t.equal(
    (await call(d, 'POST', `/permission/${requestId}`, { outcome: { outcome: 'selected', optionId: 'allow' } })).status,
    200,
  );
  t.match(await vote, { outcome: { outcome: 'selected', optionId: 'allow' } });
  t.equal((await call(d, 'POST', `/session/${id}/cancel`, {})).status, 204);
  t.same((await turn).body, { stopReason: 'cancelled' });
  const after = await openEvents(t, d, id);
  const idle = await within(after.waitFor(isType('session_state')), 'session_state');
  t.match(idle.envelope?.data, { turn: { state: 'idle' }, pendingPermissions: [], pendingPrompts: [] });
});
