// Hostile input and a misbehaving agent: nothing a client sends may wedge the agent link, take state
// apart half way, reach the agent unchecked, or leave processes behind (issue 9, defects 1, 2, 5, 7, 8,
// 11 and 12). Each test drives the real app on 127.0.0.1 with a real child agent, or app.inject where
// only the envelope matters.
import { request } from 'undici';
import t from 'tap';
import { livingInGroup } from '../harness/proc-table.js';
import { until, within } from '../harness/wait.js';
import { buildTestApp, startDaemon, steerDaemon, type TestDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { isType, openEvents } from './support/sse.js';
import { textPrompt } from './support/values.js';
import { abandoned, onlyChannel, serverSawClose } from './lifecycle-kit.js';

/** `depth` arrays inside each other around a zero, as raw JSON text. */
function nested(depth: number): string {
  return `${'['.repeat(depth)}0${']'.repeat(depth)}`;
}

/** A POST with a body sent exactly as given. */
async function postText(
  d: TestDaemon,
  url: string,
  text: string | Buffer,
  contentType = 'application/json',
): Promise<{ status: number; body: unknown }> {
  const res = await request(`${d.baseUrl}${url}`, {
    method: 'POST',
    headers: { ...d.headers, 'content-type': contentType },
    body: text,
  });
  const raw = await res.body.text();
  let body: unknown = raw;
  try {
    body = raw === '' ? undefined : JSON.parse(raw);
  } catch {
    // not JSON
  }
  return { status: res.statusCode, body };
}

// ---- 1. deep nesting ----------------------------------------------------------------------------

t.test('bodies nested deeper than the limit are refused before any work, in every field', async (t) => {
  const d = await startDaemon(t);
  const sessionId = await createSession(d);
  const deep = nested(5000);
  const cases: [string, string][] = [
    [`/session/${sessionId}/cancel`, `{"x":${deep}}`],
    [`/session/${sessionId}/prompt`, `{"prompt":[{"type":"text","text":"hi","extra":${deep}}]}`],
    [`/session/${sessionId}/prompt`, `{"prompt":[{"type":"text","text":"hi"}],"_meta":${deep}}`],
    [`/session/${sessionId}/model`, `{"modelId":"echo","x":${deep}}`],
    ['/session', `{"modelServiceId":${deep}}`],
    [`/permission/00000000-0000-4000-8000-000000000000`, `{"outcome":{"outcome":"cancelled","x":${deep}}}`],
  ];
  for (const [url, text] of cases) {
    const res = await postText(d, url, text);
    t.equal(res.status, 400, url);
    t.same(res.body, { error: 'JSON body nests deeper than 64 levels', code: 'body_too_deep' }, url);
  }
  // 64 levels pass the check (and are then judged by the route as usual).
  const atLimit = await postText(d, `/session/${sessionId}/cancel`, `{"x":${nested(63)}}`);
  t.equal(atLimit.status, 204, 'a body exactly at the limit is accepted');
  // Brackets inside strings are text, not nesting.
  const inString = await postText(d, `/session/${sessionId}/cancel`, JSON.stringify({ x: '['.repeat(5000) }));
  t.equal(inString.status, 204);

  // The agent link is intact: the same session still answers, and a new one can be made.
  const prompt = await call(d, 'POST', `/session/${sessionId}/prompt`, textPrompt('still there?'));
  t.same(prompt.body, { stopReason: 'end_turn' });
  const thread = await call(d, 'POST', '/session', { sessionScope: 'thread' });
  t.equal(thread.status, 200);
  t.equal(d.app.channels.spawnCount, 1, 'one agent all along');
});

t.test('--max-body-depth changes the limit', async (t) => {
  const app = await buildTestApp(t, { args: ['--max-body-depth', '3'] });
  const ok = await app.inject({
    method: 'POST',
    url: '/session/s-1/cancel',
    payload: '{"a":{"b":[1]}}',
    headers: { 'content-type': 'application/json' },
  });
  t.equal(ok.statusCode, 404, 'three levels pass (and the unknown session answers)');
  const deep = await app.inject({
    method: 'POST',
    url: '/session/s-1/cancel',
    payload: '{"a":{"b":[[1]]}}',
    headers: { 'content-type': 'application/json' },
  });
  t.equal(deep.statusCode, 400);
  t.same(deep.json(), { error: 'JSON body nests deeper than 3 levels', code: 'body_too_deep' });
});

t.test('an agent link that dies while the agent lives is handled as a dead agent', async (t) => {
  const { d, steer } = await steerDaemon(t);
  const sessionId = await createSession(d);
  const events = await openEvents(t, d, sessionId);
  const agent = await steer.agent(0);
  const channel = onlyChannel(d);

  await agent.closeStdout();
  // Every subscriber hears of it, and the process is stopped by acpd (the agent itself would live on).
  const died = await events.waitFor(isType('session_died'), 'session_died');
  t.equal(died.envelope?.data.reason, 'channel_closed');
  await within(agent.exited, 'the agent process stopped');
  await within(channel.exited, 'the channel saw its exit');
  t.equal(channel.linkLost, true);
  t.same(livingInGroup(agent.pid), [], 'nothing of the agent is left');
  t.equal(d.app.channels.crashCount, 1, 'counted as a crash');
  t.equal((await call(d, 'POST', `/session/${sessionId}/prompt`, textPrompt('hi'))).status, 404);

  // The next create spawns a fresh agent and works.
  const next = await createSession(d);
  t.not(next, sessionId);
  t.equal(steer.pids.length, 2);
  t.same((await call(d, 'POST', `/session/${next}/prompt`, textPrompt('hi'))).body, { stopReason: 'end_turn' });
  t.equal((await call(d, 'GET', '/readyz')).status, 200);
});

// ---- 2. validate before changing state ----------------------------------------------------------

t.test('a refused permission vote leaves the request pending and the event ids dense', async (t) => {
  const { d, steer } = await steerDaemon(t);
  const sessionId = await createSession(d);
  const events = await openEvents(t, d, sessionId, { lastEventId: 0 });
  const agent = await steer.agent(0);
  const answer = agent.permission(sessionId, { toolCallId: 'tc-1', title: 'write a file' }, [
    { optionId: 'allow', name: 'Allow', kind: 'allow_once' },
  ]);
  const asked = await events.waitFor(isType('permission_request'), 'permission_request');
  const requestId = String(asked.envelope?.data.requestId);

  const refused = [
    `{"outcome":{"outcome":"selected","optionId":"allow","x":${nested(5000)}}}`,
    `{"outcome":${nested(5000)}}`,
    '{"outcome":{"outcome":"selected","optionId":"deny"}}',
    '{"outcome":{"outcome":"maybe"}}',
  ];
  for (const text of refused) {
    const res = await postText(d, `/permission/${requestId}`, text);
    t.equal(res.status, 400, text.slice(0, 60));
  }
  t.equal(d.app.sessions.pendingPermissionCount, 1, 'still pending');

  const vote = await call(d, 'POST', `/permission/${requestId}`, {
    outcome: { outcome: 'selected', optionId: 'allow' },
  });
  t.equal(vote.status, 200);
  t.same(await answer, { outcome: { outcome: 'selected', optionId: 'allow' } }, 'the agent got the valid vote');
  await events.waitFor(isType('permission_resolved'), 'permission_resolved');
  const ids = events
    .events()
    .filter((e) => e.id !== undefined)
    .map((e) => e.id);
  t.same(
    ids,
    ids.map((_, i) => (ids[0] ?? 0) + i),
    'no id was used up by a refused vote',
  );
});

// ---- 5. the agent's own children ----------------------------------------------------------------

for (const how of ['SIGKILL', 'SIGSEGV', 'exit'] as const) {
  t.test(`helpers an agent started die with it (${how})`, async (t) => {
    const { d, steer } = await steerDaemon(t);
    await createSession(d);
    const agent = await steer.agent(0);
    const helper = await agent.spawnHelper();
    t.ok(livingInGroup(agent.pid).includes(helper), 'the helper runs in the agent group');
    if (how === 'exit') await agent.exit(3);
    else await agent.crash(how);
    await until(() => !livingInGroup(agent.pid).includes(helper), 'the helper is gone');
    t.same(livingInGroup(agent.pid), []);
  });
}

// ---- 7. session ids --------------------------------------------------------------------------------

t.test('only ids of the shape agents issue reach the agent', async (t) => {
  const { d, steer } = await steerDaemon(t);
  const bad = ['..%2F..%2Ftmp%2Fx', 'a%2Fb', 'a%5Cb', '%2Fetc%2Fpasswd', 'x'.repeat(257), 'a%20b', 'a%00b'];
  for (const id of bad) {
    for (const [method, path] of [
      ['POST', `/session/${id}/load`],
      ['POST', `/session/${id}/resume`],
      ['POST', `/session/${id}/prompt`],
      ['POST', `/session/${id}/cancel`],
      ['POST', `/session/${id}/model`],
      ['GET', `/session/${id}/events`],
    ] as const) {
      const body = path.endsWith('/prompt')
        ? textPrompt('x')
        : path.endsWith('/model')
          ? { modelId: 'm1' }
          : method === 'POST'
            ? {}
            : undefined;
      const res = await call(d, method, path, body);
      t.equal(res.status, 400, `${method} ${path.slice(0, 40)}`);
      t.equal(obj(res.body).code, 'invalid_session_id', path.slice(0, 40));
    }
  }
  // A bare dot-segment, encoded or not, is resolved by the router before any route: no route matches.
  for (const id of ['..', '.', '%2E%2E', '%2e']) {
    const res = await call(d, 'POST', `/session/${id}/load`, {});
    t.equal(res.status, 404, id);
    t.match(obj(res.body).error, /^Route POST \/(session\/)?load not found$/, id);
  }
  t.same(steer.log, [], 'the agent never heard of any of them (it was not even started)');
  for (const id of ['0f8fc9e4-2d1a-4c8e-9f51-5d8a0c8a3b11', 'ses_01JABCDEF', 'unknown-1', 'a.b:c@d+e=f~g', '..a']) {
    const res = await call(d, 'POST', `/session/${encodeURIComponent(id)}/load`, {});
    t.equal(res.status, id.startsWith('unknown') ? 404 : 200, id);
  }
});

// ---- 8. client errors are 400 ----------------------------------------------------------------------

t.test('prompt blocks are checked against the ACP content block schema', async (t) => {
  const app = await buildTestApp(t);
  const cases: [unknown, string][] = [
    [[{}], 'each `prompt` element needs a `type`: one of text, image, audio, resource_link, resource'],
    [[{ type: 'text', text: 123 }], 'a "text" content block needs `text` as a string'],
    [[{ type: 'text' }], 'a "text" content block needs `text` as a string'],
    [
      [{ type: 'video', url: 'x' }],
      'each `prompt` element needs a `type`: one of text, image, audio, resource_link, resource',
    ],
    [[{ type: 7 }], 'each `prompt` element needs a `type`: one of text, image, audio, resource_link, resource'],
    [[{ type: 'image', data: 'AAAA' }], 'a "image" content block needs `mimeType` as a string'],
    [[{ type: 'audio', mimeType: 'audio/wav' }], 'a "audio" content block needs `data` as a string'],
    [[{ type: 'resource_link', uri: 'file:///a' }], 'a "resource_link" content block needs `name` as a string'],
    [
      [{ type: 'resource', resource: { uri: 'file:///a' } }],
      'a "resource" content block needs `resource` with a string `uri` and a string `text` or `blob`',
    ],
    [[{ type: 'text', text: 'ok' }, 'text'], 'each `prompt` element must be an object (content block)'],
  ];
  for (const [prompt, error] of cases) {
    const res = await app.inject({ method: 'POST', url: '/session/s-1/prompt', payload: { prompt } });
    t.equal(res.statusCode, 400, JSON.stringify(prompt));
    t.same(res.json(), { error }, JSON.stringify(prompt));
  }
  const valid = [
    { type: 'text', text: 'hi', annotations: null, _meta: { a: 1 }, extra: true },
    { type: 'image', data: 'AAAA', mimeType: 'image/png', uri: null },
    { type: 'audio', data: 'AAAA', mimeType: 'audio/wav' },
    { type: 'resource_link', uri: 'file:///a', name: 'a', size: 3 },
    { type: 'resource', resource: { uri: 'file:///a', text: 'x' } },
    { type: 'resource', resource: { uri: 'file:///b', blob: 'AAAA', mimeType: 'application/octet-stream' } },
  ];
  const res = await app.inject({ method: 'POST', url: '/session/s-1/prompt', payload: { prompt: valid } });
  t.equal(res.statusCode, 404, 'every kind of valid block passes (and the unknown session answers)');
});

t.test("the agent's invalid-params answer to a client's request is a 400", async (t) => {
  const { d } = await steerDaemon(t);
  const sessionId = await createSession(d);
  const res = await call(d, 'POST', `/session/${sessionId}/model`, { modelId: 'no-such-model' });
  t.equal(res.status, 400);
  t.match(obj(res.body), { error: String, code: -32602 });
  const ok = await call(d, 'POST', `/session/${sessionId}/model`, { modelId: 'm2' });
  t.equal(ok.status, 200);
});

// ---- 11. every body is bounded ----------------------------------------------------------------------

t.test('bodies of every content type are bounded by the body limit', async (t) => {
  const d = await startDaemon(t, { args: ['--max-body-bytes', String(1024 * 1024)] });
  const big = Buffer.alloc(1024 * 1024 + 1, 0x61);
  for (const type of [
    'application/octet-stream',
    'text/plain',
    'application/x-www-form-urlencoded',
    'application/json',
  ]) {
    const res = await postText(d, '/session/s-1/cancel', big, type);
    t.equal(res.status, 413, type);
    t.same(res.body, { error: 'Request body too large (max 1 MB)' }, type);
  }
  // A body that fits is read and, not being JSON, ignored.
  const fits = await postText(d, '/session/s-1/cancel', Buffer.alloc(1024, 0x61), 'application/octet-stream');
  t.equal(fits.status, 404);
});

// ---- 12. nothing outlives its use -------------------------------------------------------------------

t.test('a restore that finds nothing leaves no agent running', async (t) => {
  const { d, steer } = await steerDaemon(t);
  for (const action of ['load', 'resume']) {
    const res = await call(d, 'POST', `/session/unknown-${action}/${action}`, {});
    t.equal(res.status, 404, action);
    const agent = await steer.agent(action === 'load' ? 0 : 1);
    await within(agent.exited, `the agent started for the ${action} stopped`);
    await until(() => d.app.channels.alive.size === 0, 'acpd saw the exit');
    t.equal(d.app.channels.crashCount, 0, 'released, not crashed');
  }
});

t.test('a restore the agent fails leaves no agent running', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/load'] });
  const pending = call(d, 'POST', '/session/s-9/load', {});
  const held = await steer.nextCall('session/load');
  await held.fail({ code: -32603, message: 'disk on fire' });
  t.equal((await pending).status, 500);
  await within((await steer.agent(0)).exited, 'the agent stopped');
  await until(() => d.app.channels.alive.size === 0, 'acpd saw the exit');
});

t.test('a session acpd forgets is closed in the agent (session/close)', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/new'] });
  // A second session keeps the agent alive, so the close is not made moot by a stop.
  const keep = call(d, 'POST', '/session', { sessionScope: 'thread' });
  await (await steer.nextCall('session/new')).release({ sessionId: 'kept' });
  t.equal((await keep).status, 200);

  const ac = new AbortController();
  const closed = serverSawClose(d, 'POST', '/session');
  const owner = abandoned(call(d, 'POST', '/session', { sessionScope: 'thread' }, {}, ac.signal));
  const held = await steer.nextCall('session/new');
  ac.abort();
  await closed;
  t.equal(await owner, 'AbortError');
  await held.release({ sessionId: 'left-behind' });

  const close = await steer.seen('session/close');
  t.same(close.params, { sessionId: 'left-behind' });
  t.equal(d.app.sessions.get('left-behind'), undefined);
  t.ok(d.app.sessions.get('kept'), 'the other session lives on');
  t.equal(d.app.channels.alive.size, 1);
});
