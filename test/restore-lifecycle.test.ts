// Restoring persisted sessions (issue 3), rules 6–10 of the restore coordinator: clients leaving,
// the agent channel's life, timeouts, crashes and shutdown during a restore.
// Real daemon on 127.0.0.1, the steerable agent, real HTTP; races are ordered by parking agent calls.
import t from 'tap';
import { Steer } from './fixtures/steer.js';
import { until, within } from '../harness/wait.js';
import { startDaemon, steerDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { watchUnhandled } from './support/rejections.js';
import { openEvents } from './support/sse.js';
import { abortableRestore, agentPid, despiteSlowStart, parked, restore, serverEnd } from './restore-kit.js';

/** Agent deadline for the timeout tests: short, yet far above the time an agent takes to answer. */
const TIMEOUT_MS = 1000;

t.test(
  "rule 6: coalesced attaches are reserved synchronously: the owner leaving does not kill a joiner's session",
  async (t) => {
    const { steer, d } = await steerDaemon(t, { hold: ['session/load'] });
    const ownerEnd = serverEnd(d, '/session/s1/load');
    const owner = abortableRestore(d, 'load', 's1');
    const held = await parked(steer, 'session/load', owner.done);
    const joiner = restore(d, 'load', 's1');
    await until(() => d.app.restores.stats.coalesced === 1, 'the joiner reached the restore in flight');

    // The owner leaves; the server has seen its connection close before the agent answers.
    owner.abort();
    await (
      await ownerEnd
    ).gone;
    t.equal(await owner.done, undefined, 'the owner got no answer');

    await held.release();
    const joined = await joiner;
    t.equal(joined.status, 200);
    t.match(joined.body, { sessionId: 's1', attached: true, state: { _meta: { restoredBy: 'session/load' } } });
    const entry = d.app.sessions.get('s1');
    t.ok(entry, 'the session survived its owner');
    t.equal(entry?.spawnOwnerWantedKill, true, "the owner's reaper ran and left a tombstone");
    t.equal(entry?.attachCount, 1, 'the joiner is attached');

    // It still works for the joiner.
    const sse = await openEvents(t, d, 's1', { lastEventId: 0 });
    t.equal(sse.status, 200);
    const prompt = await call(d, 'POST', '/session/s1/prompt', { prompt: [{ type: 'text', text: 'still here' }] });
    t.same(prompt.body, { stopReason: 'end_turn' });
  },
);

t.test('rule 7: the last live session leaving while a restore is in flight does not kill the channel', async (t) => {
  const { steer, d } = await steerDaemon(t, { hold: ['session/load'] });
  const thread = await createSession(d, { sessionScope: 'thread' });
  const pid = agentPid(d);
  t.ok(pid, 'an agent runs');

  const loading = restore(d, 'load', 's1');
  const held = await parked(steer, 'session/load', loading);
  t.equal(held.pid, pid);
  await d.app.sessions.killSession(thread);
  t.equal(d.app.sessions.sessionCount, 0, 'no live session left');
  t.equal(agentPid(d), pid, 'the channel is still there');

  await held.release();
  const res = await loading;
  t.equal(res.status, 200);
  t.match(
    res.body,
    { sessionId: 's1', attached: false, state: { _meta: { restoredBy: 'session/load', pid } } },
    'loaded by the same agent',
  );
  t.equal(d.app.channels.spawnCount, 1, 'no respawn');
  t.equal(d.app.channels.crashCount, 0);

  // Again with two restores in flight when the last session goes; then one of them fails: the other
  // still holds the channel.
  const p2 = restore(d, 'load', 's2');
  const held2 = await parked(steer, 'session/load', p2);
  const p3 = restore(d, 'load', 's3');
  const held3 = await parked(steer, 'session/load', p3);
  await d.app.sessions.killSession('s1');
  t.equal(d.app.sessions.sessionCount, 0);
  t.equal(agentPid(d), pid, 'the channel is still there');
  await held2.fail({ code: -32603, message: 'broken session file' });
  t.same((await p2).body, { error: 'broken session file', code: -32603 });
  await held3.release();
  t.match(await p3, { status: 200, body: { sessionId: 's3', attached: false, state: { _meta: { pid } } } });
  t.equal(d.app.channels.spawnCount, 1, 'still the first agent');
});

t.test('rule 8: a restore that loses its race against the timeout leaves no dangling rejection', async (t) => {
  const unhandled = watchUnhandled(t);
  const { steer, d } = await steerDaemon(t, { hold: ['session/load'], config: { initTimeoutMs: TIMEOUT_MS } });
  // A live session keeps the agent (and so the parked calls) alive past the timeouts.
  const created = await despiteSlowStart(() => call(d, 'POST', '/session'));
  t.equal(created.status, 200, 'the agent started');
  const live = String(obj(created.body).sessionId);
  const spawned = d.app.channels.spawnCount;
  const timedOut = { error: `acpd session/load timed out after ${TIMEOUT_MS}ms` };

  // s1 (an owner and a joiner) and s2 both run into the deadline at the same time.
  const owner = restore(d, 'load', 's1');
  const held1 = await parked(steer, 'session/load', owner);
  const joiner = restore(d, 'load', 's1');
  await until(() => d.app.restores.stats.coalesced === 1, 'the joiner reached the restore in flight');
  const second = restore(d, 'load', 's2');
  const held2 = await parked(steer, 'session/load', second);
  const answers = await within(Promise.all([owner, joiner, second]), 'the three timed-out answers');
  for (const [label, res] of [
    ['s1 owner', answers[0]],
    ['s1 joiner', answers[1]],
    ['s2', answers[2]],
  ] as const) {
    t.same({ status: res.status, body: res.body }, { status: 500, body: timedOut }, `${label} gets the timeout`);
  }
  // Then the agent answers after all: s1 with an error, s2 with success.
  await held1.fail({ code: -32603, message: 'too late' });
  await held2.release();

  // Later traffic on the same pipe comes after both late answers: the daemon has processed them by now.
  await steer.unhold(['session/load']);
  t.match(
    await restore(d, 'load', 's3'),
    { status: 200, body: { sessionId: 's3', attached: false } },
    'the daemon keeps serving',
  );
  t.same((await call(d, 'POST', `/session/${live}/prompt`, { prompt: [{ type: 'text', text: 'hi' }] })).body, {
    stopReason: 'end_turn',
  });
  t.equal(d.app.sessions.get('s1'), undefined, 'the late answers registered nothing');
  t.equal(d.app.sessions.get('s2'), undefined);
  t.equal(d.app.restores.inFlightCount, 0);
  t.equal(d.app.channels.spawnCount, spawned, 'the same agent throughout');
  t.same(unhandled, [], 'no unhandled rejection');
});

t.test('rule 9: timeout, agent crash and shutdown during a restore all clean up and answer 500', async (t) => {
  t.test('timeout', async (t) => {
    const { steer, d } = await steerDaemon(t, {
      hold: ['session/load'],
      args: ['--max-sessions', '2'],
      config: { initTimeoutMs: TIMEOUT_MS },
    });
    // One slot is taken by a live session, which also keeps the agent running through the timeout.
    t.equal((await despiteSlowStart(() => call(d, 'POST', '/session'))).status, 200, 'the agent started');
    const spawned = d.app.channels.spawnCount;
    const pending = restore(d, 'load', 's1');
    await parked(steer, 'session/load', pending); // never released
    const res = await within(pending, 'the timed-out answer');
    t.same(
      { status: res.status, body: res.body },
      { status: 500, body: { error: `acpd session/load timed out after ${TIMEOUT_MS}ms` } },
    );
    t.equal(d.app.sessions.get('s1'), undefined, 'no registry entry');
    t.equal(d.app.restores.inFlightCount, 0, 'no in-flight record');
    t.match(
      await call(d, 'POST', '/session', { sessionScope: 'thread' }),
      { status: 200, body: { attached: false } },
      'the slot is free again',
    );
    t.equal(d.app.channels.spawnCount, spawned, 'the same agent');
  });

  t.test('agent crash', async (t) => {
    const { steer, d } = await steerDaemon(t, { hold: ['session/load'], args: ['--max-sessions', '1'] });
    const owner = restore(d, 'load', 's1');
    const held = await parked(steer, 'session/load', owner);
    const joiner = restore(d, 'load', 's1');
    await until(() => d.app.restores.stats.coalesced === 1, 'the joiner reached the restore in flight');
    await (await steer.agent()).crash();
    for (const res of await Promise.all([owner, joiner])) {
      t.equal(res.status, 500);
      t.same(res.body, { error: 'agent channel closed during session/load' }, "the contract's closed-channel message");
    }
    t.equal(d.app.sessions.get('s1'), undefined, 'no registry entry');
    t.equal(d.app.restores.inFlightCount, 0, 'no in-flight record');
    t.equal(held.pid, steer.pids[0]);
    t.match(await call(d, 'POST', '/session'), { status: 200, body: { attached: false } }, 'the slot is free again');
    t.equal(d.app.channels.spawnCount, 2, 'on a fresh agent');
  });

  t.test('shutdown kills the agent under a held restore', async (t) => {
    const { steer, d } = await steerDaemon(t, { hold: ['session/load'], args: ['--max-sessions', '1'] });
    const pending = restore(d, 'load', 's1');
    await parked(steer, 'session/load', pending);
    await d.app.close();
    t.equal(d.app.restores.inFlightCount, 0, 'close() waited for the restore');
    t.equal(d.app.sessions.get('s1'), undefined);
    const res = await pending;
    t.equal(res.status, 500);
    t.same(res.body, { error: 'agent channel closed during session/load' }, "the contract's closed-channel message");
  });

  t.test('shutdown awaits a restore the agent answers during the drain', async (t) => {
    // The agent sits behind a relay that ignores SIGTERM and keeps the agent's stdin open, so the drain
    // cannot end before the test lets the relay go: the held load is released while close() runs.
    const steer = await Steer.create({ hold: ['session/load'] });
    t.teardown(() => steer.close());
    const d = await startDaemon(t, {
      agent: [process.execPath, '-e', RELAY, ...steer.argv],
      args: ['--max-sessions', '1'],
      config: { killGraceMs: 60_000 },
    });
    const pending = restore(d, 'load', 's1');
    const held = await parked(steer, 'session/load', pending);
    let closed = false;
    const closing = d.app.close().then(() => {
      closed = true;
    });
    await until(() => d.app.sessions.isShuttingDown, 'the drain started');
    await held.release();
    const res = await pending;
    t.same({ status: res.status, body: res.body }, { status: 500, body: { error: 'acpd is shutting down' } });
    t.equal(closed, false, 'close() is still waiting');
    t.equal(d.app.sessions.get('s1'), undefined, 'the late success registered nothing');
    t.equal(d.app.restores.inFlightCount, 0);
    const relay = agentPid(d);
    t.ok(relay);
    if (relay !== undefined) process.kill(relay, 'SIGKILL');
    await closing;
    t.equal(d.app.channels.alive.size, 0);
  });
});

t.test(
  'rule 10: a client leaving while its restore is in flight: killed if nobody else attached, detached otherwise',
  async (t) => {
    t.test('the only caller leaves → the session is killed', async (t) => {
      const { steer, d } = await steerDaemon(t, { hold: ['session/load'] });
      const end = serverEnd(d, '/session/s1/load');
      const owner = abortableRestore(d, 'load', 's1');
      const held = await parked(steer, 'session/load', owner.done);
      owner.abort();
      await (
        await end
      ).gone;
      await held.release();
      await until(
        () => d.app.restores.stats.restored === 1 && d.app.restores.inFlightCount === 0,
        'the restore finished',
      );
      await until(() => d.app.sessions.get('s1') === undefined, 'the orphan is reaped');
      t.equal(await owner.done, undefined);
      t.equal(d.app.sessions.sessionCount, 0);
      await until(() => d.app.channels.alive.size === 0, 'the idle agent is let go');
    });

    t.test('a joiner leaves while the owner stays → it detaches, the owner keeps the session', async (t) => {
      const { steer, d } = await steerDaemon(t, { hold: ['session/load'] });
      const owner = restore(d, 'load', 's1');
      const held = await parked(steer, 'session/load', owner);
      const end = serverEnd(d, '/session/s1/load');
      const joiner = abortableRestore(d, 'load', 's1');
      await until(() => d.app.restores.stats.coalesced === 1, 'the joiner reached the restore in flight');
      joiner.abort();
      await (
        await end
      ).gone;
      await held.release();
      t.match(await owner, { status: 200, body: { sessionId: 's1', attached: false } });
      await until(() => d.app.sessions.get('s1')?.attachCount === 0, 'the joiner detached');
      t.equal(await joiner.done, undefined);
      t.equal(d.app.sessions.get('s1')?.spawnOwnerWantedKill, false, 'nobody asked for a kill');
      t.match(await call(d, 'POST', '/session/s1/prompt', { prompt: [{ type: 'text', text: 'x' }] }), { status: 200 });
    });

    t.test('owner and joiner both leave → the last one out reaps it', async (t) => {
      const { steer, d } = await steerDaemon(t, { hold: ['session/load'] });
      const ownerEnd = serverEnd(d, '/session/s1/load');
      const owner = abortableRestore(d, 'load', 's1');
      const held = await parked(steer, 'session/load', owner.done);
      const joinerEnd = serverEnd(d, '/session/s1/load');
      const joiner = abortableRestore(d, 'load', 's1');
      await until(() => d.app.restores.stats.coalesced === 1, 'the joiner reached the restore in flight');
      owner.abort();
      joiner.abort();
      await (
        await ownerEnd
      ).gone;
      await (
        await joinerEnd
      ).gone;
      await held.release();
      await until(
        () => d.app.restores.stats.restored === 1 && d.app.restores.inFlightCount === 0,
        'the restore finished',
      );
      await until(() => d.app.sessions.get('s1') === undefined, 'the session is reaped');
      t.same([await owner.done, await joiner.done], [undefined, undefined]);
    });
  },
);

/**
 * An agent wrapper (for `node -e`): it relays stdio to the real agent, which runs in its own process
 * group, and ignores SIGTERM and the end of its stdin, so only SIGKILL ends it.
 */
const RELAY = `
const { spawn } = require('node:child_process');
process.on('SIGTERM', () => {});
const [command, ...args] = process.argv.slice(1);
const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'], detached: true });
child.stdin.on('error', () => {});
process.stdout.on('error', () => {});
process.stdin.on('data', (chunk) => child.stdin.write(chunk));
process.stdin.on('end', () => {});
child.stdout.on('data', (chunk) => process.stdout.write(chunk));
child.on('exit', () => process.exit(0));
`;
