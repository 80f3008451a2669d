// The session lifecycle taken from the qwen daemon: `DELETE /session/:id` (close for everyone: cancel a
// running turn first, `session_closed` ends every stream, the agent is sent `session/close`, a second close
// is a 404, the session can be loaded again) and `GET /session/:id/status`. The steerable agent advertises
// session/close and records every request it sees; its "hang" prompt answers only on cancel.
import t from 'tap';
import { steerDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { isType, openEvents } from './support/sse.js';

const HANG = { prompt: [{ type: 'text', text: 'hang' }] };

/** Params of a request or notification the agent saw, as an object. */
function sessionIdOf(params: unknown): unknown {
  return obj(params).sessionId;
}

t.test('DELETE closes: 204, session_closed ends the stream, the agent is told, a second DELETE is a 404', async (t) => {
  const { d, steer } = await steerDaemon(t, { checkAnswers: true });
  const id = await createSession(d);
  const sse = await openEvents(t, d, id);

  const closed = await call(d, 'DELETE', `/session/${id}`);
  t.equal(closed.status, 204);
  t.equal(closed.body, undefined, 'no body');

  const frame = await sse.waitFor(isType('session_closed'), 'session_closed');
  t.same(frame.envelope?.data, { sessionId: id, reason: 'client_close' });
  await sse.ended;
  t.equal(sse.events().at(-1)?.type, 'session_closed', 'the last frame of the stream');
  t.notOk(
    sse.events().some((e) => e.type === 'session_died'),
    'no session_died',
  );

  const seen = await steer.seen('session/close');
  t.equal(sessionIdOf(seen.params), id, 'the agent was sent session/close for it');

  const again = await call(d, 'DELETE', `/session/${id}`);
  t.equal(again.status, 404);
  t.match(obj(again.body), { code: 'session_not_found', sessionId: id });
  t.equal((await call(d, 'GET', `/session/${id}/status`)).status, 404, 'no status either');
  t.equal((await call(d, 'POST', `/session/${id}/prompt`, { prompt: [{ type: 'text', text: 'hi' }] })).status, 404);

  const loaded = await call(d, 'POST', `/session/${id}/load`, {});
  t.equal(loaded.status, 200, 'a closed session can be loaded again');
  t.match(obj(loaded.body), { sessionId: id, attached: false });
  t.equal((await call(d, 'GET', `/session/${id}/status`)).status, 200, 'live again');
});

t.test('DELETE during a turn cancels it first: the prompt answers cancelled, queued prompts fail', async (t) => {
  const { d, steer } = await steerDaemon(t, { checkAnswers: true });
  const id = await createSession(d);
  const sse = await openEvents(t, d, id);

  const turn = call(d, 'POST', `/session/${id}/prompt`, HANG);
  await steer.seen('session/prompt');
  const queued = call(d, 'POST', `/session/${id}/prompt`, { prompt: [{ type: 'text', text: 'after' }] });

  const closed = await call(d, 'DELETE', `/session/${id}`);
  t.equal(closed.status, 204);
  const answer = await turn;
  t.equal(answer.status, 200);
  t.same(answer.body, { stopReason: 'cancelled' });
  const late = await queued;
  t.equal(late.status, 404, 'a prompt queued behind the cancelled turn never runs');
  t.notOk(obj(late.body).code, 'the prompt route keeps its v1 404 body');

  await sse.ended;
  t.equal(sse.events().at(-1)?.type, 'session_closed');

  const methods = steer.log.filter((r) => sessionIdOf(r.params) === id).map((r) => r.method);
  t.same(
    methods,
    ['session/prompt', 'session/cancel', 'session/close'],
    'cancel, then close; the queued prompt never reached the agent',
  );
});

t.test('status: idle, with a running prompt, waiting for a permission', async (t) => {
  const { d, steer } = await steerDaemon(t, { checkAnswers: true });
  const before = Date.now();
  const id = await createSession(d);

  const idle = await call(d, 'GET', `/session/${id}/status`);
  t.equal(idle.status, 200);
  const body = obj(idle.body);
  t.match(body, {
    sessionId: id,
    workspaceCwd: d.config.workspace,
    clientCount: 0,
    hasActivePrompt: false,
    activeWorkState: 'idle',
    isWaitingForPermission: false,
    pendingInteractionCount: 0,
    pendingInteractions: [],
  });
  for (const key of ['createdAt', 'updatedAt']) {
    const value = String(body[key]);
    t.equal(new Date(value).toISOString(), value, `${key} is an ISO timestamp`);
    t.ok(Date.parse(value) >= before - 1000, `${key} is recent`);
  }

  const sse = await openEvents(t, d, id);
  t.match(obj((await call(d, 'GET', `/session/${id}/status`)).body), { clientCount: 1 }, 'an open stream counts');

  const turn = call(d, 'POST', `/session/${id}/prompt`, HANG);
  await steer.seen('session/prompt');
  t.match(obj((await call(d, 'GET', `/session/${id}/status`)).body), {
    hasActivePrompt: true,
    activeWorkState: 'active',
    isWaitingForPermission: false,
  });
  t.equal((await call(d, 'POST', `/session/${id}/cancel`, {})).status, 204);
  t.same((await turn).body, { stopReason: 'cancelled' });
  t.match(obj((await call(d, 'GET', `/session/${id}/status`)).body), {
    hasActivePrompt: false,
    activeWorkState: 'idle',
  });

  const agent = await steer.agent();
  const vote = agent.permission(id, { toolCallId: 'tc-1', title: 'write a file' }, [
    { optionId: 'allow', name: 'Allow', kind: 'allow_once' },
    { optionId: 'deny', name: 'Deny', kind: 'reject_once' },
  ]);
  const asked = await sse.waitFor(isType('permission_request'), 'permission_request');
  const requestId = String(obj(asked.envelope?.data).requestId);
  const waiting = obj((await call(d, 'GET', `/session/${id}/status`)).body);
  t.match(waiting, {
    hasActivePrompt: false,
    activeWorkState: 'active',
    isWaitingForPermission: true,
    pendingInteractionCount: 1,
    pendingInteractions: [
      {
        requestId,
        kind: 'permission',
        toolCall: { toolCallId: 'tc-1', title: 'write a file' },
        options: [{ optionId: 'allow' }, { optionId: 'deny' }],
      },
    ],
  });

  // Closing settles what still waits: the agent's request is cancelled.
  t.equal((await call(d, 'DELETE', `/session/${id}`)).status, 204);
  t.same(await vote, { outcome: { outcome: 'cancelled' } });
  await sse.ended;
  t.same(
    sse
      .events()
      .slice(-2)
      .map((e) => e.type),
    ['permission_resolved', 'session_closed'],
  );
});

t.test('unknown ids: 404 session_not_found on the new routes, v1 bodies elsewhere', async (t) => {
  const { d } = await steerDaemon(t, { checkAnswers: true });
  for (const [method, url] of [
    ['GET', '/session/nope/status'],
    ['DELETE', '/session/nope'],
  ] as const) {
    const res = await call(d, method, url);
    t.equal(res.status, 404, `${method} ${url}`);
    t.match(obj(res.body), { code: 'session_not_found', sessionId: 'nope' });
  }
  const cancel = await call(d, 'POST', '/session/nope/cancel', {});
  t.equal(cancel.status, 404);
  t.same(Object.keys(obj(cancel.body)).sort(), ['error', 'sessionId'], 'v1 404 unchanged');
  t.equal((await call(d, 'DELETE', '/session/a%20b')).status, 400, 'an invalid id');
});
