// Issue 11: every answer matches the API document. Each route is driven through the statuses it can answer
// (the steerable agent supplies the agent's side: restores, permissions, failures), every answer is checked
// against /docs/json's response for its route, status and media type (support/openapi.ts), and so is every
// SSE frame read on the way. The same check runs over the whole suite with ACPD_TEST_CHECK_ANSWERS=1.
import t from 'tap';
import { request } from 'undici';
import { steerDaemon, startDaemon, type TestDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { AnswerChecker, openapiPath, type Verdict } from './support/openapi.js';
import { isType, openEvents } from './support/sse.js';

const TOKEN = 'answers-secret';

/** A request with exactly these headers besides the token (when `auth`), the body as raw text. */
async function raw(
  d: TestDaemon,
  method: 'GET' | 'POST',
  url: string,
  headers: Record<string, string>,
  body?: string,
): Promise<number> {
  const res = await request(`${d.baseUrl}${url}`, { method, headers, body });
  await res.body.text();
  return res.statusCode;
}

/** `METHOD /route status` of every checked answer. */
function seen(verdicts: Verdict[] | undefined): Set<string> {
  return new Set((verdicts ?? []).map((v) => `${v.answer.method} ${v.answer.route} ${v.answer.status}`));
}

t.test('every route, through the statuses it answers, matches the document', async (t) => {
  const { d, steer } = await steerDaemon(t, {
    args: ['--token', TOKEN, '--max-body-bytes', '4096', '--require-auth'],
    checkAnswers: true,
  });
  const host = `127.0.0.1:${d.port}`;
  const auth = { host, authorization: `Bearer ${TOKEN}` };
  const json = { ...auth, 'content-type': 'application/json' };

  // The probes and the meta routes.
  t.equal((await call(d, 'GET', '/health')).status, 200);
  t.equal((await call(d, 'GET', '/health?deep=1')).status, 200);
  t.equal((await call(d, 'GET', '/health?deep=1&deep=2')).status, 400, 'a repeated query value');
  t.equal(await raw(d, 'GET', '/health', { host }), 401, '--require-auth: the probes need the token');
  t.equal((await call(d, 'GET', '/livez')).status, 200);
  t.equal((await call(d, 'GET', '/readyz')).status, 200);
  t.equal((await call(d, 'GET', '/metrics')).status, 200);
  t.equal((await call(d, 'GET', '/capabilities')).status, 200);
  t.equal(await raw(d, 'GET', '/capabilities', { ...auth, origin: 'https://elsewhere.example' }), 403);
  t.equal(await raw(d, 'GET', '/capabilities', { host }), 401);

  // Sessions: create and its refusals.
  const id = await createSession(d);
  t.equal((await call(d, 'POST', '/session', { cwd: 'relative' })).status, 400);
  t.equal((await call(d, 'POST', '/session', { sessionScope: 'SINGLE' })).status, 400);
  t.equal((await call(d, 'POST', '/session', { cwd: '/elsewhere' })).status, 400, 'workspace_mismatch');
  t.equal(await raw(d, 'POST', '/session', json, '{not json'), 400);
  t.equal(await raw(d, 'POST', '/session', json, JSON.stringify({ pad: 'x'.repeat(5000) })), 413);
  t.equal((await call(d, 'POST', '/session', { sessionScope: 'thread' })).status, 200);

  // The listing.
  t.equal((await call(d, 'GET', `/workspace/${encodeURIComponent(d.config.workspace)}/sessions`)).status, 200);
  t.equal((await call(d, 'GET', '/workspace/relative/sessions')).status, 400);
  t.equal((await call(d, 'GET', `/workspace/${encodeURIComponent('/elsewhere')}/sessions`)).status, 400);

  // Events, prompts and a permission vote.
  const sse = await openEvents(t, d, id, { lastEventId: 0 });
  t.equal(sse.status, 200);
  t.equal((await call(d, 'GET', '/session/nope/events')).status, 404);
  t.equal((await call(d, 'GET', '/session/a%20b/events')).status, 400);
  const turn = call(d, 'POST', `/session/${id}/prompt`, { prompt: [{ type: 'text', text: 'perm' }] });
  const request_ = await sse.waitFor(isType('permission_request'));
  const requestId = String(obj(request_.envelope?.data).requestId);
  t.equal((await call(d, 'GET', `/session/${id}/status`)).status, 200, 'status with a pending permission');
  t.equal(
    (await call(d, 'POST', `/permission/${requestId}`, { outcome: { outcome: 'selected', optionId: 'zzz' } })).status,
    400,
  );
  t.equal((await call(d, 'POST', `/permission/${requestId}`, { outcome: 'yes' })).status, 400);
  const options = obj(request_.envelope?.data).options;
  const optionId = String(obj(Array.isArray(options) ? options[0] : undefined).optionId);
  t.equal(
    (await call(d, 'POST', `/permission/${requestId}`, { outcome: { outcome: 'selected', optionId } })).status,
    200,
  );
  t.equal((await call(d, 'POST', `/permission/${requestId}`, { outcome: { outcome: 'cancelled' } })).status, 404);
  t.equal((await turn).status, 200);
  t.equal((await call(d, 'POST', `/session/${id}/prompt`, { prompt: [] })).status, 400);
  t.equal((await call(d, 'POST', `/session/${id}/prompt`, { prompt: [{ type: 'image' }] })).status, 400);
  t.equal((await call(d, 'POST', '/session/nope/prompt', { prompt: [{ type: 'text', text: 'hi' }] })).status, 404);
  t.equal((await call(d, 'POST', `/session/${id}/cancel`)).status, 204, 'no body');
  t.equal((await call(d, 'POST', '/session/nope/cancel', {})).status, 404);

  // Models: the answer, a refusal by the agent, an agent failure.
  t.equal((await call(d, 'POST', `/session/${id}/model`, { modelId: 'm2' })).status, 200);
  t.equal((await call(d, 'POST', `/session/${id}/model`, { modelId: 'no-such-model' })).status, 400);
  t.equal((await call(d, 'POST', `/session/${id}/model`, {})).status, 400);
  t.equal((await call(d, 'POST', '/session/nope/model', { modelId: 'm2' })).status, 404);
  await steer.hold(['session/set_model']);
  const failing = call(d, 'POST', `/session/${id}/model`, { modelId: 'm1' });
  await (await steer.nextCall('session/set_model')).fail({ code: -32603, message: 'model service down' });
  t.equal((await failing).status, 500);
  await steer.unhold(['session/set_model']);

  // Restores: found (already live, and stored), unknown, racing, invalid.
  t.equal((await call(d, 'POST', `/session/${id}/load`)).status, 200, 'already live: attached, no body');
  t.equal((await call(d, 'POST', '/session/unknown-1/load', {})).status, 404);
  t.equal((await call(d, 'POST', '/session/unknown-2/resume', {})).status, 404);
  t.equal((await call(d, 'POST', '/session/a%20b/load', {})).status, 400);
  await steer.hold(['session/load']);
  const loading = call(d, 'POST', '/session/stored-1/load', {});
  await steer.nextCall('session/load').then(async (held) => {
    t.equal((await call(d, 'POST', '/session/stored-1/resume', {})).status, 409, 'restore_in_progress');
    await held.release();
  });
  t.equal((await loading).status, 200, 'restored from the agent');
  t.equal((await call(d, 'POST', '/session/stored-2/resume')).status, 200);

  // Status and close: the answers, then the 404s of a closed session.
  t.equal((await call(d, 'GET', `/session/${id}/status`)).status, 200);
  t.equal((await call(d, 'GET', '/session/nope/status')).status, 404);
  t.equal((await call(d, 'DELETE', `/session/${id}`)).status, 204);
  t.equal((await call(d, 'DELETE', `/session/${id}`)).status, 404);
  await sse.ended;

  for (const frame of sse.events()) t.equal(checker(d).checkFrame(frame), undefined, `${frame.type} frame`);

  const statuses = seen(d.answers);
  for (const expected of [
    'GET /health 200',
    'GET /health 400',
    'GET /health 401',
    'GET /capabilities 403',
    'POST /session 200',
    'POST /session 400',
    'POST /session 413',
    'GET /workspace/:id/sessions 200',
    'GET /workspace/:id/sessions 400',
    'GET /session/:id/events 404',
    'POST /session/:id/prompt 200',
    'POST /session/:id/prompt 404',
    'POST /session/:id/cancel 204',
    'POST /session/:id/model 200',
    'POST /session/:id/model 500',
    'POST /session/:id/load 200',
    'POST /session/:id/load 404',
    'POST /session/:id/resume 409',
    'POST /session/:id/resume 200',
    'POST /permission/:requestId 200',
    'POST /permission/:requestId 404',
    'GET /session/:id/status 200',
    'GET /session/:id/status 404',
    'DELETE /session/:id 204',
    'DELETE /session/:id 404',
    'GET /metrics 200',
    'GET /readyz 200',
  ]) {
    t.ok(statuses.has(expected), `checked: ${expected}`);
  }
  t.ok((d.answers ?? []).length > 40, `${d.answers?.length} answers checked`);
});

t.test('the limits answer as documented: sessions, rates', async (t) => {
  const d = await startDaemon(t, {
    args: ['--rate-limit-reads', '1', '--rate-limit-mutations', '3', '--max-sessions', '1'],
    checkAnswers: true,
  });
  t.equal((await call(d, 'POST', '/session', { sessionScope: 'thread' })).status, 200);
  t.equal((await call(d, 'POST', '/session', { sessionScope: 'thread' })).status, 503, 'session_limit_exceeded');
  t.equal((await call(d, 'GET', '/capabilities')).status, 200);
  t.equal((await call(d, 'GET', '/capabilities')).status, 429);
  t.equal((await call(d, 'POST', '/session/unknown-9/cancel', {})).status, 404);
  t.equal((await call(d, 'POST', '/session/unknown-9/cancel', {})).status, 429);
  const statuses = seen(d.answers);
  t.ok(statuses.has('POST /session 503'));
  t.ok(statuses.has('GET /capabilities 429'));
  t.ok(statuses.has('POST /session/:id/cancel 429'));
});

t.test('the checker itself refuses what the document does not say', async (t) => {
  const d = await startDaemon(t);
  const check = checker(d);
  const answer = { method: 'POST', route: '/session', contentType: 'application/json' };
  t.equal(
    check.check({ ...answer, status: 200, body: '{"sessionId":"a","workspaceCwd":"/w","attached":false}' }),
    undefined,
  );
  t.match(check.check({ ...answer, status: 200, body: '{"sessionId":"a"}' }), /required/);
  t.match(check.check({ ...answer, status: 418, body: '{}' }), /not documented/);
  t.match(check.check({ ...answer, status: 503, body: '{"code":"draining"}' }), /error/);
  t.match(check.check({ ...answer, contentType: 'text/html', status: 200, body: '<p>' }), /content type/);
  // A header the document does not declare for that status: the 409 of a file write names none.
  const conflict = { method: 'POST', route: '/file/write', contentType: 'application/json', status: 409 };
  const envelope = '{"error":"stale","code":"hash_mismatch"}';
  t.equal(check.check({ ...conflict, body: envelope }), undefined);
  t.match(check.check({ ...conflict, body: envelope, retryAfter: true }), /Retry-After/);
  t.match(
    check.check({ method: 'POST', route: '/session/:id/cancel', contentType: undefined, status: 204, body: 'x' }),
    /no/,
  );
  t.equal(
    check.checkFrame({ v: 1, type: 'client_evicted', data: { reason: 'queue_overflow', droppedAfter: 3 } }),
    undefined,
  );
  t.match(
    check.checkFrame({ id: 1, v: 1, type: 'session_died', data: { sessionId: 's', reason: 'bored' } }),
    /reason|anyOf|enum/,
  );
  t.match(check.checkFrame({ v: 1, type: 'unheard_of', data: {} }), /discriminator|type/);
  t.equal(openapiPath('/session/:id/events'), '/session/{id}/events');
});

const checkers = new WeakMap<TestDaemon, AnswerChecker>();
/** The checker of a daemon's own document. */
function checker(d: TestDaemon): AnswerChecker {
  let found = checkers.get(d);
  if (found === undefined) {
    found = new AnswerChecker(d.app.swagger());
    checkers.set(d, found);
  }
  return found;
}
