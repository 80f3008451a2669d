/**
 * The graceful drain (issue 5): on close, new sessions and prompts get 503
 * `draining`; a running prompt may finish within the drain deadline; one that
 * outlives it is cancelled; then streams end and agents are reaped.
 */
import t from 'tap';
import { Steer } from './fixtures/steer.js';
import { livingInGroup } from '../harness/proc-table.js';
import { startDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { isType, openEvents } from './support/sse.js';
import { textPrompt } from './support/values.js';

t.test('a prompt that finishes within the drain deadline answers normally; new work gets 503 draining', async (t) => {
  const steer = await Steer.create({ hold: ['session/prompt'] });
  t.teardown(() => steer.close());
  const d = await startDaemon(t, { agent: steer.argv, args: ['--drain-timeout-ms', '60000'] });
  const id = await createSession(d);
  const sse = await openEvents(t, d, id);
  const prompt = call(d, 'POST', `/session/${id}/prompt`, textPrompt('hi'));
  const held = await steer.nextCall('session/prompt');

  const closing = d.app.close();
  while (!d.app.sessions.isDraining) await new Promise((resolve) => setImmediate(resolve));
  const created = await call(d, 'POST', '/session', { sessionScope: 'thread' });
  t.equal(created.status, 503);
  t.same(created.body, { error: 'acpd is draining: it takes no new sessions or prompts', code: 'draining' });
  t.equal(created.headers['retry-after'], '5');
  const second = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('too late'));
  t.equal(second.status, 503);
  t.equal(obj(second.body).code, 'draining');
  const restore = await call(d, 'POST', '/session/other/load', {});
  t.equal(restore.status, 503);

  await held.release();
  const res = await prompt;
  t.equal(res.status, 200);
  t.same(res.body, { stopReason: 'end_turn' }, 'the running prompt was allowed to finish');
  await closing;
  const died = await sse.waitFor(isType('session_died'));
  t.same(died.envelope?.data, { sessionId: id, reason: 'daemon_shutdown' });
  for (const pid of steer.pids) t.same(livingInGroup(pid), [], `agent ${pid} is gone`);
});

t.test('a prompt that outlives the drain deadline is cancelled, then the daemon stops', async (t) => {
  const steer = await Steer.create();
  t.teardown(() => steer.close());
  const d = await startDaemon(t, { agent: steer.argv, args: ['--drain-timeout-ms', '200'] });
  const id = await createSession(d);
  const prompt = call(d, 'POST', `/session/${id}/prompt`, textPrompt('hang'));
  await steer.seen('session/prompt');
  await d.app.close();
  await steer.seen('session/cancel');
  const res = await prompt;
  t.equal(res.status, 200);
  t.same(res.body, { stopReason: 'cancelled' }, 'the agent answered the cancel before it was stopped');
  for (const pid of steer.pids) t.same(livingInGroup(pid), [], `agent ${pid} is gone`);
});
