// Prompts, cancel and permissions against the steerable agent (reference §2.3 prompt/cancel/permission,
// §5.6, §5.7): one prompt at a time per session in arrival order, a client that leaves cancels its turn,
// POST cancel settles pending permissions before the agent hears of it and never touches queued prompts,
// and permission requests are voted on, or time out.
import t from 'tap';
import { steerDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { isType, openEvents, type SseFrame } from './support/sse.js';
import { textPrompt } from './support/values.js';
import { abandoned, chunkText, countPrompts, promptTextOf, serverSawClose } from './lifecycle-kit.js';

const hasChunk =
  (text: string) =>
  (f: SseFrame): boolean =>
    chunkText(f) === text;

t.test('prompts on a session run one at a time, in arrival order', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/prompt'] });
  const id = await createSession(d);
  const prompts = countPrompts(d.app.sessions);
  const first = call(d, 'POST', `/session/${id}/prompt`, textPrompt('one'));
  const heldOne = await steer.nextCall('session/prompt');
  t.equal(promptTextOf(heldOne.params), 'one');
  const second = call(d, 'POST', `/session/${id}/prompt`, textPrompt('two'));
  await prompts.reached(2);

  // The model switch has its own queue, so it goes out right away, on the same stdin as the prompts:
  // by the time the agent reports it, a second prompt sent before it would have been reported too.
  const model = await call(d, 'POST', `/session/${id}/model`, { modelId: 'm2' });
  t.same(model.body, {});
  await steer.seen('session/set_model');
  t.same(
    steer.log.filter((r) => r.method === 'session/prompt').map((r) => promptTextOf(r.params)),
    ['one'],
    'the second prompt waits in the daemon while the first runs',
  );

  await heldOne.release();
  t.same((await first).body, { stopReason: 'end_turn' });
  const heldTwo = await steer.nextCall('session/prompt');
  t.equal(promptTextOf(heldTwo.params), 'two', 'the second prompt goes out once the first has answered');
  await heldTwo.release();
  t.same((await second).body, { stopReason: 'end_turn' });
});

t.test('prompts on different sessions do not wait for each other', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/prompt'] });
  const a = await createSession(d);
  const b = await createSession(d, { sessionScope: 'thread' });
  const pa = call(d, 'POST', `/session/${a}/prompt`, textPrompt('to a'));
  const pb = call(d, 'POST', `/session/${b}/prompt`, textPrompt('to b'));
  const calls = [await steer.nextCall('session/prompt'), await steer.nextCall('session/prompt')];
  t.same(new Set(calls.map((c) => promptTextOf(c.params))), new Set(['to a', 'to b']), 'both reached the agent');
  for (const c of calls) await c.release();
  t.same((await pa).body, { stopReason: 'end_turn' });
  t.same((await pb).body, { stopReason: 'end_turn' });
});

t.test(
  'a client that leaves during its prompt: pending permissions are cancelled and session/cancel is sent',
  async (t) => {
    const { d, steer } = await steerDaemon(t);
    const id = await createSession(d);
    const sse = await openEvents(t, d, id);
    const ac = new AbortController();
    const closed = serverSawClose(d, 'POST', `/session/${id}/prompt`);
    const prompt = abandoned(call(d, 'POST', `/session/${id}/prompt`, textPrompt('perm'), {}, ac.signal));
    const request = await sse.waitFor(isType('permission_request'));
    const requestId = request.envelope?.data.requestId;
    t.equal(d.app.sessions.pendingPermissionCount, 1);

    ac.abort();
    await closed;
    const cancel = await steer.seen('session/cancel');
    t.same(cancel.params, { sessionId: id }, 'the agent is told to cancel the turn');
    const resolved = await sse.waitFor(isType('permission_resolved'));
    t.same(resolved.envelope?.data, { requestId, outcome: { outcome: 'cancelled' } });
    t.equal(d.app.sessions.pendingPermissionCount, 0);
    await sse.waitFor(hasChunk('permission: cancelled'), 'the agent saw the cancelled outcome');
    t.equal(await prompt, 'AbortError', 'the client saw its own abort');

    // The turn ended: the session takes the next prompt.
    const next = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('next'));
    t.same(next.body, { stopReason: 'end_turn' });
  },
);

t.test('a client that leaves during a hanging prompt cancels it in the agent', async (t) => {
  const { d, steer } = await steerDaemon(t);
  const id = await createSession(d);
  const ac = new AbortController();
  const closed = serverSawClose(d, 'POST', `/session/${id}/prompt`);
  const prompt = abandoned(call(d, 'POST', `/session/${id}/prompt`, textPrompt('hang'), {}, ac.signal));
  await steer.seen('session/prompt');
  ac.abort();
  await closed;
  t.same((await steer.seen('session/cancel')).params, { sessionId: id });
  t.equal(await prompt, 'AbortError', 'the client saw its own abort');
  // Only possible once the hanging turn has answered `cancelled`.
  const next = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('next'));
  t.same(next.body, { stopReason: 'end_turn' });
  t.equal(steer.log.filter((r) => r.method === 'session/cancel').length, 1);
});

t.test('a prompt whose client left while it was queued never reaches the agent', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/prompt'] });
  const id = await createSession(d);
  const prompts = countPrompts(d.app.sessions);
  const first = call(d, 'POST', `/session/${id}/prompt`, textPrompt('one'));
  const heldOne = await steer.nextCall('session/prompt');
  const ac = new AbortController();
  const closed = serverSawClose(d, 'POST', `/session/${id}/prompt`);
  const gone = abandoned(call(d, 'POST', `/session/${id}/prompt`, textPrompt('gone'), {}, ac.signal));
  await prompts.reached(2);
  ac.abort();
  await closed;
  t.equal(await gone, 'AbortError', 'the client saw its own abort');
  const third = call(d, 'POST', `/session/${id}/prompt`, textPrompt('three'));
  await prompts.reached(3);
  await heldOne.release();
  t.same((await first).body, { stopReason: 'end_turn' });
  const next = await steer.nextCall('session/prompt');
  t.equal(promptTextOf(next.params), 'three', 'the abandoned prompt was skipped');
  await next.release();
  t.same((await third).body, { stopReason: 'end_turn' });
  t.same(
    steer.log.filter((r) => r.method === 'session/prompt').map((r) => promptTextOf(r.params)),
    ['one', 'three'],
  );
  t.equal(steer.log.filter((r) => r.method === 'session/cancel').length, 0, 'nothing to cancel in the agent');
});

t.test('POST cancel: 204, pending permissions resolved cancelled, then session/cancel reaches the agent', async (t) => {
  const { d, steer } = await steerDaemon(t);
  const id = await createSession(d);
  const sse = await openEvents(t, d, id);
  const prompt = call(d, 'POST', `/session/${id}/prompt`, textPrompt('perm'));
  const request = await sse.waitFor(isType('permission_request'));
  const requestId = request.envelope?.data.requestId;

  const res = await call(d, 'POST', `/session/${id}/cancel`, { _meta: { by: 'test' } });
  t.equal(res.status, 204);
  t.equal(res.body, undefined, 'no body');
  t.equal(d.app.sessions.pendingPermissionCount, 0, 'settled before the answer');
  const resolved = await sse.waitFor(isType('permission_resolved'));
  t.same(resolved.envelope?.data, { requestId, outcome: { outcome: 'cancelled' } });
  const cancel = await steer.seen('session/cancel');
  t.same(cancel.params, { _meta: { by: 'test' }, sessionId: id }, 'the body is forwarded with the route id');
  const answer = await prompt;
  t.equal(answer.status, 200);
  t.match(answer.body, { stopReason: /^(end_turn|cancelled)$/ });
  await sse.waitFor(hasChunk('permission: cancelled'));
  const vote = await call(d, 'POST', `/permission/${String(requestId)}`, {
    outcome: { outcome: 'selected', optionId: 'allow' },
  });
  t.equal(vote.status, 404, 'a late vote finds nothing');

  const again = await call(d, 'POST', `/session/${id}/cancel`);
  t.equal(again.status, 204, 'cancel twice is fine');
  const unknown = await call(d, 'POST', '/session/nope/cancel', {});
  t.equal(unknown.status, 404);
});

t.test('POST cancel affects the running prompt only; queued prompts still run', async (t) => {
  const { d, steer } = await steerDaemon(t);
  const id = await createSession(d);
  const prompts = countPrompts(d.app.sessions);
  const hanging = call(d, 'POST', `/session/${id}/prompt`, textPrompt('hang'));
  await steer.seen('session/prompt');
  const queued = call(d, 'POST', `/session/${id}/prompt`, textPrompt('after'));
  await prompts.reached(2);
  const res = await call(d, 'POST', `/session/${id}/cancel`, {});
  t.equal(res.status, 204);
  t.same((await hanging).body, { stopReason: 'cancelled' }, 'the running prompt is cancelled');
  t.same((await queued).body, { stopReason: 'end_turn' }, 'the queued prompt runs to its end');
  const seen = steer.log.filter((r) => r.method === 'session/prompt' || r.method === 'session/cancel');
  t.same(
    seen.map((r) => (r.method === 'session/prompt' ? promptTextOf(r.params) : r.method)),
    ['hang', 'session/cancel', 'after'],
  );
});

t.test('permission: request frame, vote, resolved frame, and the agent gets the chosen option', async (t) => {
  const { d } = await steerDaemon(t);
  const id = await createSession(d);
  const sse = await openEvents(t, d, id);
  const watcher = await openEvents(t, d, id);
  const prompt = call(d, 'POST', `/session/${id}/prompt`, textPrompt('perm'));
  const request = await sse.waitFor(isType('permission_request'));
  const data = obj(request.envelope?.data);
  const requestId = String(data.requestId);
  t.match(data, {
    requestId: String,
    sessionId: id,
    toolCall: { title: 'steer-agent asks', kind: 'edit', status: 'pending' },
    options: [
      { optionId: 'allow', name: 'Allow', kind: 'allow_once' },
      { optionId: 'reject', name: 'Reject', kind: 'reject_once' },
    ],
  });
  t.same(Object.keys(data).sort(), ['options', 'requestId', 'sessionId', 'toolCall'], 'nothing else is published');
  await watcher.waitFor(isType('permission_request'), 'every subscriber sees the request');

  const bad = await call(d, 'POST', `/permission/${requestId}`, {
    outcome: { outcome: 'selected', optionId: 'maybe' },
  });
  t.equal(bad.status, 400);
  t.match(bad.body, { code: 'invalid_option_id', requestId, optionId: 'maybe' });
  t.equal(d.app.sessions.pendingPermissionCount, 1, 'a bad vote leaves the request open');

  const vote = await call(d, 'POST', `/permission/${requestId}`, {
    outcome: { outcome: 'selected', optionId: 'allow' },
  });
  t.equal(vote.status, 200);
  t.same(vote.body, {});
  const resolved = await sse.waitFor(isType('permission_resolved'));
  t.same(resolved.envelope?.data, { requestId, outcome: { outcome: 'selected', optionId: 'allow' } });
  const answer = await prompt;
  t.same(answer.body, { stopReason: 'end_turn' });
  await sse.waitFor(hasChunk('permission: allow'), 'the agent reports the chosen option');

  const late = await call(d, 'POST', `/permission/${requestId}`, {
    outcome: { outcome: 'selected', optionId: 'reject' },
  });
  t.equal(late.status, 404, 'first vote wins');
  t.same(late.body, { error: 'No pending permission request', requestId });
});

t.test('permission: with no vote it is resolved cancelled after the permission timeout', async (t) => {
  const { d } = await steerDaemon(t, { config: { permissionTimeoutMs: 200 } });
  const id = await createSession(d);
  const sse = await openEvents(t, d, id);
  const prompt = call(d, 'POST', `/session/${id}/prompt`, textPrompt('perm'));
  const request = await sse.waitFor(isType('permission_request'));
  const requestId = request.envelope?.data.requestId;
  const resolved = await sse.waitFor(isType('permission_resolved'), 'the timeout settles it');
  t.same(resolved.envelope?.data, { requestId, outcome: { outcome: 'cancelled' } });
  t.same((await prompt).body, { stopReason: 'end_turn' });
  await sse.waitFor(hasChunk('permission: cancelled'));
  t.equal(d.app.sessions.pendingPermissionCount, 0);
  const vote = await call(d, 'POST', `/permission/${String(requestId)}`, { outcome: { outcome: 'cancelled' } });
  t.equal(vote.status, 404);
});
