// The agent process going away: a crash tears down every session on it (reference §5.10), and the
// daemon's close drains every stream and leaves no agent process behind (§5.11), even one that ignores
// SIGTERM and has a child of its own.
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { livingInGroup } from '../harness/proc-table.js';
import { startDaemon, steerDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { isType, openEvents } from './support/sse.js';
import { textPrompt } from './support/values.js';
import { countCreates, onlyChannel } from './lifecycle-kit.js';

const STUBBORN_AGENT = fileURLToPath(new URL('./fixtures/stubborn-agent.js', import.meta.url));

t.test('an agent crash ends every session on it; the next create spawns a fresh child', async (t) => {
  const { d, steer } = await steerDaemon(t);
  const a = await createSession(d);
  const b = await createSession(d, { sessionScope: 'thread' });
  const sseA = await openEvents(t, d, a);
  const sseB = await openEvents(t, d, b);
  const hanging = call(d, 'POST', `/session/${b}/prompt`, textPrompt('hang'));
  await steer.seen('session/prompt');
  const agent = await steer.agent(0);
  const channel = onlyChannel(d);

  await agent.crash();
  const diedA = await sseA.waitFor(isType('session_died'), 'session_died on a');
  const diedB = await sseB.waitFor(isType('session_died'), 'session_died on b');
  t.same(diedA.envelope?.data, { sessionId: a, reason: 'channel_closed', exitCode: null, signalCode: 'SIGKILL' });
  t.same(diedB.envelope?.data, { sessionId: b, reason: 'channel_closed', exitCode: null, signalCode: 'SIGKILL' });
  await sseA.ended;
  await sseB.ended;
  t.equal(sseA.events().at(-1)?.type, 'session_died', 'session_died is the last event of the stream');
  t.equal(sseB.events().at(-1)?.type, 'session_died');

  const res = await hanging;
  t.equal(res.status, 500, 'the prompt in flight fails');
  t.same(res.body, { error: `agent channel closed mid-request (session ${b})` });

  for (const id of [a, b]) {
    const events = await call(d, 'GET', `/session/${id}/events`);
    t.equal(events.status, 404, 'its events are gone');
    const prompt = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('anyone?'));
    t.equal(prompt.status, 404, 'a prompt finds no session');
  }
  t.equal(d.app.sessions.sessionCount, 0);
  t.equal(d.app.channels.crashCount, 1);
  t.equal(d.app.channels.alive.has(channel), false);

  // The default session died with the channel: a single create spawns again, on a new child.
  const next = await call(d, 'POST', '/session', {});
  t.equal(next.status, 200);
  t.not(obj(next.body).sessionId, a);
  t.equal(obj(next.body).attached, false);
  t.equal(steer.pids.length, 2, 'a fresh child');
  t.not(steer.pids[1], steer.pids[0]);
  t.equal(d.app.channels.alive.size, 1);
});

t.test('a prompt that makes the agent crash answers 500 and tells its subscribers why', async (t) => {
  const { d, steer } = await steerDaemon(t);
  const id = await createSession(d);
  const other = await createSession(d, { sessionScope: 'thread' });
  const sse = await openEvents(t, d, other);
  const res = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('crash'));
  t.equal(res.status, 500);
  t.same(res.body, { error: `agent channel closed mid-request (session ${id})` });
  const died = await sse.waitFor(isType('session_died'));
  t.same(died.envelope?.data, { sessionId: other, reason: 'channel_closed', exitCode: null, signalCode: 'SIGKILL' });
  await sse.ended;
  const next = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('again'));
  t.equal(next.status, 404);
  t.equal(steer.pids.length, 1);
  t.equal((await call(d, 'POST', '/session', {})).status, 200);
  t.equal(steer.pids.length, 2);
});

t.test('an agent crash during a held session/new fails the creator and everyone coalesced on it', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/new'] });
  const creates = countCreates(d.app.sessions);
  const owner = call(d, 'POST', '/session', {});
  await steer.nextCall('session/new');
  const joiner = call(d, 'POST', '/session', {});
  await creates.reached(2);
  await (await steer.agent(0)).crash();
  const [a, b] = await Promise.all([owner, joiner]);
  for (const res of [a, b]) {
    t.equal(res.status, 500);
    t.same(res.body, { error: 'agent channel closed during session/new' });
  }
  t.equal(d.app.sessions.sessionCount, 0);
  t.equal(d.app.channels.alive.size, 0);
  await steer.unhold(['session/new']);
  const next = await call(d, 'POST', '/session', {});
  t.equal(next.status, 200);
  t.equal(obj(next.body).attached, false);
  t.equal(steer.pids.length, 2);
});

t.test('an agent that exits on its own reports its exit code in session_died', async (t) => {
  const { d, steer } = await steerDaemon(t);
  const id = await createSession(d);
  const sse = await openEvents(t, d, id);
  const agent = await steer.agent(0);
  await agent.exit(3);
  const died = await sse.waitFor(isType('session_died'));
  t.same(died.envelope?.data, { sessionId: id, reason: 'channel_closed', exitCode: 3, signalCode: null });
  await sse.ended;
  t.equal(d.app.sessions.sessionCount, 0);
});

t.test(
  'close: every stream gets daemon_shutdown and ends, the hanging prompt settles, no agent survives',
  async (t) => {
    const { d, steer } = await steerDaemon(t);
    const a = await createSession(d);
    const b = await createSession(d, { sessionScope: 'thread' });
    const sseA = await openEvents(t, d, a);
    const sseB = await openEvents(t, d, b);
    const hanging = call(d, 'POST', `/session/${a}/prompt`, textPrompt('hang')).then(
      (res) => res,
      (err: unknown) => err,
    );
    await steer.seen('session/prompt');
    const channel = onlyChannel(d);
    t.same(livingInGroup(steer.pids[0] ?? -1), [steer.pids[0]], 'the agent runs before the close');

    await d.app.close();
    const diedA = await sseA.waitFor(isType('session_died'), 'session_died on a');
    const diedB = await sseB.waitFor(isType('session_died'), 'session_died on b');
    t.same(diedA.envelope?.data, { sessionId: a, reason: 'daemon_shutdown' });
    t.same(diedB.envelope?.data, { sessionId: b, reason: 'daemon_shutdown' });
    await sseA.ended;
    await sseB.ended;
    const settled = await hanging;
    // The drain (deadline 0 in tests) cancels the running prompt before it stops the agent.
    t.match(
      settled,
      { status: 200, body: { stopReason: 'cancelled' } },
      'the prompt in flight was cancelled by the drain',
    );
    t.ok(
      steer.log.some((r) => r.method === 'session/cancel'),
      'the agent was told to cancel',
    );
    t.equal(channel.alive, false, 'the daemon saw the agent exit');
    t.equal(d.app.channels.alive.size, 0);
    t.equal(steer.pids.length, 1);
    for (const pid of steer.pids) t.same(livingInGroup(pid), [], `nothing left of agent ${pid}'s process group`);
  },
);

t.test('close: an agent that ignores SIGTERM is SIGKILLed after the grace, with its grandchild', async (t) => {
  const d = await startDaemon(t, {
    agent: [process.execPath, STUBBORN_AGENT],
    config: { killGraceMs: 300 },
  });
  await createSession(d);
  const channel = onlyChannel(d);
  const pid = channel.pid ?? -1;
  const grandchild = Number(channel.initializeResponse?._meta?.grandchildPid);
  t.ok(grandchild > 0, 'the agent reported its grandchild');
  t.same(new Set(livingInGroup(pid)), new Set([pid, grandchild]), 'agent and grandchild share the process group');

  await d.app.close();
  t.same(channel.exitStatus, { exitCode: null, signalCode: 'SIGKILL' }, 'SIGTERM was not enough; SIGKILL was');
  t.same(livingInGroup(pid), [], 'the agent and its grandchild are gone');
});
