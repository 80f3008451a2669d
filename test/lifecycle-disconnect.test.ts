// Disconnect cleanup of POST /session (reference §2.3 "Disconnect cleanup", §5.9): a creator that left
// before its answer kills the session unless someone attached meanwhile (a tombstone), and an attacher
// that leaves reaps a tombstoned session once nobody is attached or subscribed.
//
// The race is made deterministic by holding the agent's answers: a client aborts while its create is
// parked in the agent, the test waits until the server itself has seen that connection close (the raw
// server's response `close` event, see serverSawClose), and only then lets the agent answer.
import t from 'tap';
import { livingInGroup } from '../harness/proc-table.js';
import { steerDaemon } from './support/app.js';
import { call, obj } from './support/http.js';
import { isType, openEvents } from './support/sse.js';
import { textPrompt } from './support/values.js';
import { abandoned, countCreates, onlyChannel, serverSawClose } from './lifecycle-kit.js';

t.test(
  'the creator leaves before its answer, nobody attached: the session is killed and so is the idle channel',
  async (t) => {
    const { d, steer } = await steerDaemon(t, { hold: ['session/new'] });
    const ac = new AbortController();
    const closed = serverSawClose(d, 'POST', '/session');
    const owner = abandoned(call(d, 'POST', '/session', {}, {}, ac.signal));
    const held = await steer.nextCall('session/new');
    const agent = await steer.agent(0);
    const channel = onlyChannel(d);
    ac.abort();
    const req = await closed;
    t.ok(req.socket.destroyed, 'the server saw the client go');
    t.equal(await owner, 'AbortError');

    await held.release({ sessionId: 'left-behind' });
    // The reaper kills the session, which leaves the channel empty: the agent is stopped.
    await channel.exited;
    t.equal(d.app.sessions.get('left-behind'), undefined, 'the session is not registered');
    t.equal(d.app.sessions.sessionCount, 0);
    t.equal(d.app.channels.alive.size, 0, 'the channel is gone');
    t.same(livingInGroup(agent.pid), []);
    const events = await call(d, 'GET', '/session/left-behind/events');
    t.equal(events.status, 404);

    // The next create starts over with a fresh child.
    await steer.unhold(['session/new']);
    const next = await call(d, 'POST', '/session', {});
    t.equal(next.status, 200);
    t.not(obj(next.body).sessionId, 'left-behind');
    t.equal(obj(next.body).attached, false);
    t.equal(steer.pids.length, 2);
  },
);

t.test(
  'the creator leaves but another client attached to the same spawn: the session survives with a tombstone',
  async (t) => {
    const { d, steer } = await steerDaemon(t, { hold: ['session/new'] });
    const creates = countCreates(d.app.sessions);
    const ac = new AbortController();
    const closed = serverSawClose(d, 'POST', '/session');
    const owner = abandoned(call(d, 'POST', '/session', {}, {}, ac.signal));
    const held = await steer.nextCall('session/new');
    const attacher = call(d, 'POST', '/session', {});
    await creates.reached(2);
    ac.abort();
    await closed;
    t.equal(await owner, 'AbortError');

    await held.release({ sessionId: 'shared' });
    const res = await attacher;
    t.equal(res.status, 200);
    t.same(res.body, { sessionId: 'shared', workspaceCwd: d.config.workspace, attached: true });
    // Both routes resumed in the same run of microtasks, before this answer could be read.
    const entry = d.app.sessions.get('shared');
    t.ok(entry, 'the session is alive');
    t.equal(entry?.spawnOwnerWantedKill, true, 'the creator left a tombstone');
    t.equal(entry?.attachCount, 1, 'the attacher still counts');
    t.equal(d.app.channels.alive.size, 1);
    const prompt = await call(d, 'POST', '/session/shared/prompt', textPrompt('still usable'));
    t.same(prompt.body, { stopReason: 'end_turn' });
  },
);

t.test('a tombstoned session is reaped when its last attacher leaves and nobody is subscribed', async (t) => {
  // The attacher asks for a model: its create then waits on session/set_model, which the test holds, so
  // it can leave after the creator's reaper has run.
  const { d, steer } = await steerDaemon(t, { hold: ['session/new', 'session/set_model'] });
  const creates = countCreates(d.app.sessions);
  const ownerAc = new AbortController();
  const ownerClosed = serverSawClose(d, 'POST', '/session');
  const owner = abandoned(call(d, 'POST', '/session', {}, {}, ownerAc.signal));
  const held = await steer.nextCall('session/new');
  const agent = await steer.agent(0);
  const channel = onlyChannel(d);
  const attacherAc = new AbortController();
  const attacherClosed = serverSawClose(d, 'POST', '/session');
  const attacher = abandoned(call(d, 'POST', '/session', { modelServiceId: 'm2' }, {}, attacherAc.signal));
  await creates.reached(2);
  ownerAc.abort();
  await ownerClosed;

  await held.release({ sessionId: 'tomb' });
  // set_model is sent after the attach, in the same run of microtasks as the creator's reaper.
  const setModel = await steer.nextCall('session/set_model');
  t.same(setModel.params, { sessionId: 'tomb', modelId: 'm2' });
  const entry = d.app.sessions.get('tomb');
  t.equal(entry?.spawnOwnerWantedKill, true, 'tombstone set by the departed creator');
  t.equal(entry?.attachCount, 1);

  attacherAc.abort();
  await attacherClosed;
  t.equal(await attacher, 'AbortError');
  await setModel.release();
  // The attacher's reaper detaches, finds the tombstone and no subscriber, and kills the session; the
  // channel is then empty and stopped.
  await channel.exited;
  t.equal(d.app.sessions.get('tomb'), undefined, 'the session was reaped');
  t.equal(d.app.channels.alive.size, 0);
  t.same(livingInGroup(agent.pid), []);
  t.equal(await owner, 'AbortError');
});

t.test('a tombstoned session with a live subscriber survives its last attacher leaving', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/new', 'session/set_model'] });
  const creates = countCreates(d.app.sessions);
  const ownerAc = new AbortController();
  const ownerClosed = serverSawClose(d, 'POST', '/session');
  void abandoned(call(d, 'POST', '/session', {}, {}, ownerAc.signal));
  const held = await steer.nextCall('session/new');
  const attacherAc = new AbortController();
  const attacherClosed = serverSawClose(d, 'POST', '/session');
  const attacher = abandoned(call(d, 'POST', '/session', { modelServiceId: 'm2' }, {}, attacherAc.signal));
  await creates.reached(2);
  ownerAc.abort();
  await ownerClosed;
  await held.release({ sessionId: 'watched' });
  const setModel = await steer.nextCall('session/set_model');
  t.equal(d.app.sessions.get('watched')?.spawnOwnerWantedKill, true);

  const sse = await openEvents(t, d, 'watched');
  t.equal(sse.status, 200);
  attacherAc.abort();
  await attacherClosed;
  t.equal(await attacher, 'AbortError');
  await setModel.release();
  // model_switched is published just before the attacher's create returns and its reaper runs.
  await sse.waitFor(isType('model_switched'));
  const entry = d.app.sessions.get('watched');
  t.ok(entry, 'the session survives: someone is subscribed');
  t.equal(entry?.attachCount, 0, 'the attacher detached');
  t.equal(entry?.spawnOwnerWantedKill, true);
  t.equal(d.app.channels.alive.size, 1);
  t.notOk(sse.frames.some(isType('session_died')), 'no session_died');
});

t.test('a transient attacher that leaves while the creator stays only lets go', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/new'] });
  const creates = countCreates(d.app.sessions);
  const owner = call(d, 'POST', '/session', {});
  const held = await steer.nextCall('session/new');
  const ac = new AbortController();
  const closed = serverSawClose(d, 'POST', '/session');
  const attacher = abandoned(call(d, 'POST', '/session', {}, {}, ac.signal));
  await creates.reached(2);
  ac.abort();
  await closed;
  t.equal(await attacher, 'AbortError');
  await held.release({ sessionId: 'kept' });
  const res = await owner;
  t.same(res.body, { sessionId: 'kept', workspaceCwd: d.config.workspace, attached: false });
  const entry = d.app.sessions.get('kept');
  t.ok(entry);
  t.equal(entry?.attachCount, 0, 'the departed attacher was subtracted');
  t.equal(entry?.spawnOwnerWantedKill, false);
  t.equal(steer.pids.length, 1);
});
