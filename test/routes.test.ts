// Every route of the v1 contract (reference §2.1–§2.3): its validation, its
// error envelopes with their exact text, and its success shape. Validation
// and envelopes go through app.inject; whatever needs an agent to answer runs
// against a listening daemon, with the steerable agent where the test must
// see (or shape) what the agent received.
import { mkdirSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { request } from 'undici';
import { buildTestApp, startDaemon, steerDaemon, tempDir, type TestDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { isType, openEvents, type SseFrame } from './support/sse.js';
import { textPrompt } from './support/values.js';
import { VERSION } from '../src/version.js';

const CWD_TYPE = '`cwd` must be a string absolute path when provided';
const CWD_LENGTH = '`cwd` exceeds the 4096-character limit';
const CWD_ABSOLUTE = '`cwd` must be an absolute path when provided';
const SCOPE = '`sessionScope` must be "single" or "thread" when provided';
const PROMPT_REQUIRED = '`prompt` is required and must be a non-empty array of content blocks';
const PROMPT_BLOCK = 'each `prompt` element must be an object (content block)';
const MODEL_REQUIRED = '`modelId` is required and must be a non-empty string';
const OUTCOME = '`outcome` must be `{ outcome: "cancelled" }` or `{ outcome: "selected", optionId: string }`';
const LIST_ABSOLUTE = '`:id` must decode to an absolute workspace path';
const EMBEDDED_AGENT = fileURLToPath(new URL('../src/agent/main.js', import.meta.url));

function unreadBody(quotedType: string): string {
  return `The body was not read: its content-type is ${quotedType}; send JSON with content-type: application/json`;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | number | undefined>;
  /** Parsed JSON, or undefined for an empty body. */
  body: unknown;
  text: string;
}

async function inject(app: FastifyInstance, opts: InjectOptions): Promise<Answer> {
  const res = await app.inject(opts);
  const text = res.body;
  let body: unknown;
  if (text !== '') body = JSON.parse(text);
  return { status: res.statusCode, headers: res.headers, body, text };
}

function post(app: FastifyInstance, url: string, payload?: unknown): Promise<Answer> {
  if (payload === undefined) return inject(app, { method: 'POST', url });
  return postRaw(app, url, JSON.stringify(payload), 'application/json');
}

/** POST with a body sent verbatim, under the content type given (none when undefined). */
function postRaw(app: FastifyInstance, url: string, payload: string, contentType?: string): Promise<Answer> {
  return inject(app, {
    method: 'POST',
    url,
    payload,
    headers: contentType === undefined ? {} : { 'content-type': contentType },
  });
}

/** The same over a real socket, for a daemon whose agent must see the body. */
async function postRawHttp(d: TestDaemon, url: string, payload: string, contentType?: string): Promise<Answer> {
  const res = await request(`${d.baseUrl}${url}`, {
    method: 'POST',
    headers: { ...d.headers, ...(contentType === undefined ? {} : { 'content-type': contentType }) },
    body: payload,
  });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body: text === '' ? undefined : JSON.parse(text), text };
}

function mismatchMessage(bound: string, requested: string): string {
  return (
    `Workspace mismatch: daemon is bound to ${JSON.stringify(bound)} but request asked for ${JSON.stringify(requested)}. ` +
    `Each acpd daemon binds to exactly one workspace; start a separate daemon for ${JSON.stringify(requested)} ` +
    '(or route the request to one via an orchestrator).'
  );
}

// ---- health and capabilities ------------------------------------------------

t.test('GET /health: shallow unless ?deep is bare, empty, 1 or true', async (t) => {
  const app = await buildTestApp(t);
  for (const url of ['/health', '/health?deep=0', '/health?deep=false', '/health?deep=yes', '/health?deeper=1']) {
    const res = await inject(app, { method: 'GET', url });
    t.equal(res.status, 200, url);
    t.strictSame(res.body, { status: 'ok' }, `${url} is shallow`);
  }
  for (const url of ['/health?deep', '/health?deep=', '/health?deep=1', '/health?deep=true']) {
    const res = await inject(app, { method: 'GET', url });
    t.equal(res.status, 200, url);
    t.strictSame(res.body, { status: 'ok', sessions: 0, pendingPermissions: 0, version: VERSION }, `${url} is deep`);
  }
  t.equal((await post(app, '/session', {})).status, 200);
  t.strictSame(
    (await inject(app, { method: 'GET', url: '/health?deep' })).body,
    { status: 'ok', sessions: 1, pendingPermissions: 0, version: VERSION },
    'the deep probe counts live sessions',
  );
});

t.test('GET /capabilities: the exact v1 document plus limits, version and agent, workspaceCwd canonical', async (t) => {
  const real = tempDir(t, 'acpd-ws-real-');
  const link = path.join(tempDir(t, 'acpd-ws-link-'), 'ws');
  symlinkSync(real, link);
  const app = await buildTestApp(t, { workspace: link });
  const res = await inject(app, { method: 'GET', url: '/capabilities' });
  t.equal(res.status, 200);
  t.match(res.headers['content-type'], /^application\/json/);
  t.strictSame(res.body, {
    v: 1,
    protocolVersions: { current: 'v1', supported: ['v1'] },
    mode: 'http-bridge',
    features: [
      'health',
      'capabilities',
      'session_create',
      'session_scope_override',
      'session_load',
      'unstable_session_resume',
      'session_list',
      'session_prompt',
      'session_cancel',
      'session_events',
      'session_set_model',
      'permission_vote',
      'session_close',
      'session_status',
      'non_blocking_prompt',
      'session_turn_status',
      'workspace_file_read',
      'workspace_file_bytes',
      'workspace_file_read_cursor',
      'idempotency_keys',
      'durable_replay',
    ],
    modelServices: [],
    workspaceCwd: real,
    limits: { maxSessionsPerWorkspace: 20, maxPendingPromptsPerSession: 5, sessionRestoreTimeoutMs: 10_000 },
    transports: ['rest', 'acp-http'],
    policy: { name: 'first-responder', consensusQuorum: 0 },
    version: VERSION,
    agent: { command: app.channels.argv },
  });
  t.equal(
    Object.keys(obj(res.body)).join(','),
    'v,protocolVersions,mode,features,modelServices,workspaceCwd,limits,transports,policy,version,agent',
    "the v1 fields first, in the contract's order, then the qwen daemon's limits, transports and policy, then acpd's additions",
  );
  t.equal(app.channels.spawnCount, 0, 'no agent was started to answer');
});

t.test("GET /capabilities: the agent's argv, then what its initialize answered", async (t) => {
  const d = await startDaemon(t, { agent: [process.execPath, EMBEDDED_AGENT, '--log-level', 'error'] });
  const before = obj((await call(d, 'GET', '/capabilities')).body);
  t.strictSame(before.agent, { command: [process.execPath, EMBEDDED_AGENT, '--log-level', 'error'] });
  t.equal(before.version, VERSION);
  await createSession(d);
  const after = obj((await call(d, 'GET', '/capabilities')).body);
  t.strictSame(after.agent, {
    command: [process.execPath, EMBEDDED_AGENT, '--log-level', 'error'],
    protocolVersion: 1,
    agentInfo: { name: 'acpd-agent', title: 'acpd embedded agent', version: obj(obj(after.agent).agentInfo).version },
    agentCapabilities: {
      loadSession: true,
      sessionCapabilities: { resume: {}, list: {}, close: {} },
    },
  });
  t.type(obj(obj(after.agent).agentInfo).version, 'string');
  t.notMatch(JSON.stringify(after.agent), 'PATH', 'the environment is not shown');
});

// ---- POST /session ------------------------------------------------------------

t.test('POST /session and restores: cwd is checked for type, then length, then absoluteness', async (t) => {
  const app = await buildTestApp(t);
  const longAbsolute = `/${'a'.repeat(4096)}`;
  const cases: [unknown, string][] = [
    [null, CWD_TYPE],
    [5, CWD_TYPE],
    [true, CWD_TYPE],
    [{ path: '/x' }, CWD_TYPE],
    [['/x'], CWD_TYPE],
    [longAbsolute, CWD_LENGTH],
    ['r'.repeat(5000), CWD_LENGTH],
    ['', CWD_ABSOLUTE],
    ['relative/dir', CWD_ABSOLUTE],
    ['./x', CWD_ABSOLUTE],
  ];
  for (const url of ['/session', '/session/s-1/load', '/session/s-1/resume']) {
    for (const [cwd, error] of cases) {
      const res = await post(app, url, { cwd });
      t.equal(res.status, 400, `${url} cwd=${JSON.stringify(cwd).slice(0, 20)}`);
      t.strictSame(res.body, { error }, `${url} cwd=${JSON.stringify(cwd).slice(0, 20)}`);
    }
  }
  t.strictSame(
    (await post(app, '/session', { cwd: 5, sessionScope: 'bad' })).body,
    { error: CWD_TYPE },
    'cwd is checked before sessionScope',
  );
  const atLimit = await post(app, '/session', { cwd: '/a'.repeat(2048) });
  t.equal(atLimit.status, 400);
  t.equal(obj(atLimit.body).code, 'workspace_mismatch', 'a 4096-character cwd passes the length check');
  t.equal(app.channels.spawnCount, 0, 'no agent was started for bad input');
});

t.test('POST /session: sessionScope other than "single"/"thread" → 400 invalid_session_scope', async (t) => {
  const app = await buildTestApp(t);
  for (const sessionScope of [null, '', 'SINGLE', 'Thread', 5, true, {}, ['single']]) {
    const res = await post(app, '/session', { sessionScope });
    t.equal(res.status, 400, JSON.stringify(sessionScope));
    t.strictSame(res.body, { error: SCOPE, code: 'invalid_session_scope' }, JSON.stringify(sessionScope));
  }
  t.equal(app.channels.spawnCount, 0, 'no agent was started');
});

t.test(
  'POST /session: another workspace → 400 workspace_mismatch; the workspace by any spelling is accepted',
  async (t) => {
    const outside = tempDir(t, 'acpd-other-');
    const d = await startDaemon(t);
    const ws = d.config.workspace;

    const other = await call(d, 'POST', '/session', { cwd: outside });
    t.equal(other.status, 400);
    t.strictSame(other.body, {
      error: mismatchMessage(ws, outside),
      code: 'workspace_mismatch',
      boundWorkspace: ws,
      requestedWorkspace: outside,
    });

    // The requested path is reported canonical: a link to the other directory names its target.
    const linkToOther = path.join(tempDir(t, 'acpd-links-'), 'other');
    symlinkSync(outside, linkToOther);
    t.strictSame(obj((await call(d, 'POST', '/session', { cwd: linkToOther })).body).requestedWorkspace, outside);
    // A path that does not exist is compared in its resolved form.
    t.strictSame(
      obj((await call(d, 'POST', '/session', { cwd: '/nonexistent/a/../b' })).body).requestedWorkspace,
      '/nonexistent/b',
    );
    const inside = path.join(ws, 'sub');
    mkdirSync(inside);
    t.strictSame(
      obj((await call(d, 'POST', '/session', { cwd: inside })).body).code,
      'workspace_mismatch',
      'a subdirectory is another workspace',
    );
    t.equal(d.app.sessions.sessionCount, 0, 'no session was created');

    const linkToWs = path.join(tempDir(t, 'acpd-links-'), 'ws');
    symlinkSync(ws, linkToWs);
    for (const cwd of [linkToWs, `${ws}/`, `${ws}/sub/..`, ws]) {
      const res = await call(d, 'POST', '/session', { cwd });
      t.equal(res.status, 200, cwd);
      t.equal(obj(res.body).workspaceCwd, ws, `${cwd} is answered with the canonical path`);
    }
  },
);

t.test('POST /session: success shape; single scope attaches, thread scope always spawns', async (t) => {
  const d = await startDaemon(t);
  const ws = d.config.workspace;

  const thread1 = await call(d, 'POST', '/session', { sessionScope: 'thread' });
  t.equal(thread1.status, 200);
  t.strictSame(Object.keys(obj(thread1.body)), ['sessionId', 'workspaceCwd', 'attached']);
  t.match(thread1.body, { sessionId: /\S/, workspaceCwd: ws, attached: false });

  const first = obj((await call(d, 'POST', '/session', {})).body);
  t.strictSame(
    first,
    { sessionId: first.sessionId, workspaceCwd: ws, attached: false },
    'a thread session is never the shared one',
  );
  t.not(first.sessionId, obj(thread1.body).sessionId);

  const again = obj((await call(d, 'POST', '/session', { sessionScope: 'single' })).body);
  t.strictSame(again, { sessionId: first.sessionId, workspaceCwd: ws, attached: true }, 'single scope attaches');
  const omitted = obj((await call(d, 'POST', '/session')).body);
  t.strictSame(
    omitted,
    { sessionId: first.sessionId, workspaceCwd: ws, attached: true },
    'no body means the default scope, single',
  );

  const thread2 = obj((await call(d, 'POST', '/session', { sessionScope: 'thread' })).body);
  t.equal(thread2.attached, false);
  t.not(thread2.sessionId, first.sessionId);
  t.not(thread2.sessionId, obj(thread1.body).sessionId);
  t.equal(d.app.sessions.sessionCount, 3);
  t.equal(d.app.channels.spawnCount, 1, 'every session shares one agent process');
});

t.test('POST /session: modelServiceId is applied through session/set_model; a failure is only an event', async (t) => {
  const { steer, d } = await steerDaemon(t);

  const ok = await call(d, 'POST', '/session', { sessionScope: 'thread', modelServiceId: 'm2' });
  t.equal(ok.status, 200);
  const okId = String(obj(ok.body).sessionId);
  t.match(await steer.seen('session/set_model'), { params: { sessionId: okId, modelId: 'm2' } });
  const okEvents = await openEvents(t, d, okId, { lastEventId: 0 });
  t.strictSame((await okEvents.waitFor(isType('model_switched'))).envelope?.data, { sessionId: okId, modelId: 'm2' });

  const bad = await call(d, 'POST', '/session', { sessionScope: 'thread', modelServiceId: 'no-such-model' });
  t.equal(bad.status, 200, 'a failed switch is not an HTTP error');
  t.equal(obj(bad.body).attached, false);
  const badId = String(obj(bad.body).sessionId);
  const badEvents = await openEvents(t, d, badId, { lastEventId: 0 });
  const failed = (await badEvents.waitFor(isType('model_switch_failed'))).envelope?.data;
  t.match(failed, { sessionId: badId, requestedModelId: 'no-such-model', error: /unknown model no-such-model/ });
  t.strictSame(Object.keys(obj(failed)).sort(), ['error', 'requestedModelId', 'sessionId']);
  t.notOk(badEvents.events().some((e) => e.type === 'model_switched'));

  // Anything but a string is ignored: the answer comes back without the agent being asked.
  const ignored = await call(d, 'POST', '/session', { sessionScope: 'thread', modelServiceId: 5 });
  t.equal(ignored.status, 200);
  const ignoredId = obj(ignored.body).sessionId;
  t.notOk(steer.log.some((r) => r.method === 'session/set_model' && obj(r.params).sessionId === ignoredId));

  // An attach applies it too, before answering.
  const shared = String(obj((await call(d, 'POST', '/session', {})).body).sessionId);
  const attach = await call(d, 'POST', '/session', { modelServiceId: 'm2' });
  t.strictSame(attach.body, { sessionId: shared, workspaceCwd: d.config.workspace, attached: true });
  t.ok(
    steer.log.some(
      (r) => r.method === 'session/set_model' && obj(r.params).sessionId === shared && obj(r.params).modelId === 'm2',
    ),
    'the agent was asked before the attach was answered',
  );
  const sharedEvents = await openEvents(t, d, shared, { lastEventId: 0 });
  t.strictSame((await sharedEvents.waitFor(isType('model_switched'))).envelope?.data, {
    sessionId: shared,
    modelId: 'm2',
  });
});

// ---- body handling ------------------------------------------------------------

t.test('bodies: bad JSON → 400, over 10 MB → 413, both with the contract text', async (t) => {
  const app = await buildTestApp(t);
  for (const text of ['{bad', '{"cwd": }', "{'cwd':1}", '[1,']) {
    const res = await postRaw(app, '/session', text, 'application/json');
    t.equal(res.status, 400, text);
    t.strictSame(res.body, { error: 'Invalid JSON in request body' }, text);
  }
  const big = JSON.stringify({ prompt: [{ type: 'text', text: 'x'.repeat(10 * 1024 * 1024) }] });
  const tooLarge = await postRaw(app, '/session/s-1/prompt', big, 'application/json');
  t.equal(tooLarge.status, 413);
  t.strictSame(tooLarge.body, { error: 'Request body too large (max 10 MB)' });
  const justFits = JSON.stringify({ pad: 'x'.repeat(10 * 1024 * 1024 - 100) });
  t.equal(
    (await postRaw(app, '/session/s-1/cancel', justFits, 'application/json')).status,
    404,
    'a body under 10 MB is read (and the unknown session answered)',
  );
});

t.test('bodies: __proto__, constructor and prototype keys are dropped, not refused', async (t) => {
  const app = await buildTestApp(t);
  const poisoned =
    '{"__proto__":{"cwd":"relative"},"constructor":{"prototype":{"cwd":5}},"prototype":{"sessionScope":"bad"}}';
  const res = await postRaw(app, '/session', poisoned, 'application/json');
  t.equal(res.status, 200, 'answered as an empty body');
  t.equal(obj(res.body).attached, false);
  t.equal(({} as Record<string, unknown>).cwd, undefined, 'Object.prototype is untouched');
  const nestedText = '{"sessionScope":"thread","constructor":{"prototype":{"polluted":true}}}';
  const nested = await postRaw(app, '/session', nestedText, 'application/json');
  t.equal(nested.status, 200);
  t.equal(({} as Record<string, unknown>).polluted, undefined);
});

t.test('bodies: non-JSON content types, empty bodies, and non-object JSON read as {}', async (t) => {
  const app = await buildTestApp(t);
  const plain = await postRaw(app, '/session', '{"cwd":"relative"', 'text/plain');
  t.equal(plain.status, 200, 'a text/plain body is not parsed');
  const id = String(obj(plain.body).sessionId);
  for (const [payload, type] of [
    ['cwd=relative', 'application/x-www-form-urlencoded'],
    ['{"cwd":5}', 'application/vnd.api+json'],
    ['', 'application/json'],
    ['   ', 'application/json'],
    ['[{"cwd":"relative"}]', 'application/json'],
    ['null', 'application/json'],
    ['"relative"', 'application/json'],
    ['5', 'application/json'],
  ] as const) {
    const res = await postRaw(app, '/session', payload, type);
    t.equal(res.status, 200, `${type} ${JSON.stringify(payload)}`);
    const label = `${type} ${JSON.stringify(payload)}`;
    t.strictSame(res.body, { sessionId: id, workspaceCwd: app.sessions.workspace, attached: true }, label);
  }
  const noBody = await inject(app, { method: 'POST', url: `/session/${id}/cancel` });
  t.equal(noBody.status, 204, 'cancel with no body and no content type');
  t.equal(noBody.text, '');
  t.equal(
    (await postRaw(app, `/session/${id}/cancel`, '', 'application/json')).status,
    204,
    'cancel with an empty JSON body',
  );
  t.equal(
    (await postRaw(app, `/session/${id}/cancel`, 'whatever', 'text/plain')).status,
    204,
    'cancel with a text body',
  );
  t.strictSame(
    (await postRaw(app, `/session/${id}/prompt`, '[{"prompt":[{"type":"text","text":"x"}]}]', 'application/json')).body,
    { error: PROMPT_REQUIRED },
    'an array body is {} for the prompt route too',
  );
  t.strictSame(
    (await postRaw(app, `/session/${id}/prompt`, '{"prompt":[{"type":"text","text":"x"}]}', 'text/plain')).body,
    { error: unreadBody('"text/plain"'), code: 'body_not_json' },
    'a JSON text under another content type is not read, and the answer says so',
  );
});

t.test('a body that fails validation because it was not read as JSON says so', async (t) => {
  const app = await buildTestApp(t);
  const id = String(obj((await post(app, '/session', {})).body).sessionId);
  const prompt = '{"prompt":[{"type":"text","text":"hello"}]}';
  // What `curl -d` sends.
  const form = await postRaw(app, `/session/${id}/prompt`, prompt, 'application/x-www-form-urlencoded');
  t.equal(form.status, 400);
  t.strictSame(form.body, { error: unreadBody('"application/x-www-form-urlencoded"'), code: 'body_not_json' });
  const plain = await postRaw(app, `/session/${id}/prompt`, prompt, 'text/plain; charset=utf-8');
  t.strictSame(plain.body, { error: unreadBody('"text/plain; charset=utf-8"'), code: 'body_not_json' });
  const untyped = await inject(app, { method: 'POST', url: `/session/${id}/prompt`, payload: Buffer.from(prompt) });
  t.equal(untyped.status, 400);
  t.strictSame(untyped.body, {
    error: 'The body was not read: it has no content-type; send JSON with content-type: application/json',
    code: 'body_not_json',
  });
  const model = await postRaw(app, `/session/${id}/model`, '{"modelId":"m"}', 'text/plain');
  t.strictSame(model.body, { error: unreadBody('"text/plain"'), code: 'body_not_json' }, 'every body route');

  // An empty body under another content type was not "ignored": the route's own message stands.
  t.strictSame((await postRaw(app, `/session/${id}/prompt`, '', 'text/plain')).body, { error: PROMPT_REQUIRED });
  // Neither do a bad session id (a params error) nor routes whose body is optional change.
  t.match((await postRaw(app, '/session/a%20b/prompt', prompt, 'text/plain')).body, { code: 'invalid_session_id' });
  t.equal((await postRaw(app, `/session/${id}/cancel`, prompt, 'application/x-www-form-urlencoded')).status, 204);
  const bare = await inject(app, { method: 'POST', url: `/session/${id}/cancel` });
  t.equal(bare.status, 204, 'cancel with no body and no content type, as before');
  t.equal((await postRaw(app, '/session', 'cwd=/elsewhere', 'application/x-www-form-urlencoded')).status, 200);
});

// ---- GET /workspace/:id/sessions -------------------------------------------------

t.test('GET /workspace/:id/sessions: encoded absolute path lists, others are refused', async (t) => {
  const outside = tempDir(t, 'acpd-other-');
  const d = await startDaemon(t);
  const ws = d.config.workspace;
  const list = (p: string) => call(d, 'GET', `/workspace/${encodeURIComponent(p)}/sessions`);

  const idle = await list(ws);
  t.equal(idle.status, 200);
  t.strictSame(idle.body, { sessions: [] }, 'an idle workspace lists nothing (not 404)');

  for (const rel of ['relative', 'a/b', '~/w', ' /x']) {
    const res = await list(rel);
    t.equal(res.status, 400, rel);
    t.strictSame(res.body, { error: LIST_ABSOLUTE }, rel);
  }

  const other = await list(outside);
  t.equal(other.status, 400);
  t.strictSame(other.body, {
    error: `Workspace mismatch: daemon is bound to ${JSON.stringify(ws)}`,
    code: 'workspace_mismatch',
    boundWorkspace: ws,
    requestedWorkspace: outside,
  });
  t.equal(
    obj((await list('/nonexistent/x/../y')).body).requestedWorkspace,
    '/nonexistent/y',
    'the requested key is canonical',
  );

  const a = await createSession(d, { sessionScope: 'thread' });
  const b = await createSession(d);
  const link = path.join(tempDir(t, 'acpd-links-'), 'ws');
  symlinkSync(ws, link);
  for (const spelling of [ws, link, `${ws}/`]) {
    const res = await list(spelling);
    t.equal(res.status, 200, spelling);
    // The v1 fields; the catalog's (times, counts, isLive) are additive.
    const sessions = (obj(res.body).sessions as unknown[])
      .map(obj)
      .map(({ sessionId, workspaceCwd }) => ({ sessionId, workspaceCwd }));
    t.strictSame(
      sessions.sort((x, y) => String(x.sessionId).localeCompare(String(y.sessionId))),
      [
        { sessionId: a, workspaceCwd: ws },
        { sessionId: b, workspaceCwd: ws },
      ].sort((x, y) => x.sessionId.localeCompare(y.sessionId)),
      `${spelling} lists both sessions`,
    );
  }
});

t.test('GET /workspace/:id/sessions: a deep workspace path (hundreds of encoded characters) still lists', async (t) => {
  const deep = path.join(
    tempDir(t, 'acpd-deep-'),
    'a-rather-long-folder-name'.repeat(4),
    'another-long-folder-name'.repeat(4),
  );
  mkdirSync(deep, { recursive: true });
  const d = await startDaemon(t, { workspace: deep });
  const id = await createSession(d);
  const encoded = encodeURIComponent(deep);
  t.ok(encoded.length > 200, `the :id is ${encoded.length} characters`);
  const res = await call(d, 'GET', `/workspace/${encoded}/sessions`);
  t.equal(res.status, 200);
  t.match(res.body, { sessions: [{ sessionId: id, workspaceCwd: deep }] });
  t.equal((obj(res.body).sessions as unknown[]).length, 1);
  const longId = 'x'.repeat(256);
  t.strictSame(
    (await call(d, 'POST', `/session/${longId}/cancel`)).body,
    { error: `No session with id "${longId}"`, sessionId: longId },
    'ids up to 256 characters reach the route too',
  );
  t.equal((await call(d, 'POST', `/session/${longId}x/cancel`)).status, 400, 'a longer id is refused');
});

// ---- POST /session/:id/prompt -------------------------------------------------

t.test('POST /session/:id/prompt: validation and the unknown session', async (t) => {
  const app = await buildTestApp(t);
  const missing: unknown[] = [
    {},
    { prompt: null },
    { prompt: [] },
    { prompt: 'hi' },
    { prompt: {} },
    { prompt: 5 },
    { text: 'hi' },
  ];
  for (const body of missing) {
    const res = await post(app, '/session/nope/prompt', body);
    t.equal(res.status, 400, JSON.stringify(body));
    t.strictSame(res.body, { error: PROMPT_REQUIRED }, JSON.stringify(body));
  }
  for (const prompt of [
    ['hi'],
    [null],
    [[]],
    [5],
    [{ type: 'text', text: 'ok' }, 'hi'],
    [[{ type: 'text', text: 'x' }]],
  ]) {
    const res = await post(app, '/session/nope/prompt', { prompt });
    t.equal(res.status, 400, JSON.stringify(prompt));
    t.strictSame(res.body, { error: PROMPT_BLOCK }, JSON.stringify(prompt));
  }
  const unknown = await post(app, '/session/x/prompt', textPrompt('hi'));
  t.equal(unknown.status, 404);
  t.strictSame(unknown.body, { error: 'No session with id "x"', sessionId: 'x' });
  const encoded = await post(app, `/session/${encodeURIComponent('a:b@c+d=e')}/prompt`, textPrompt('hi'));
  t.strictSame(encoded.body, { error: 'No session with id "a:b@c+d=e"', sessionId: 'a:b@c+d=e' }, 'the id is decoded');
  const unsafe = await post(app, `/session/${encodeURIComponent('a b/"c"')}/prompt`, textPrompt('hi'));
  t.equal(unsafe.status, 400, 'an id with a separator or a blank is not a session id');
});

t.test('POST /session/:id/prompt: 200 {stopReason}; the body reaches the agent with sessionId forced', async (t) => {
  const { steer, d } = await steerDaemon(t);
  const id = await createSession(d);

  const plain = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('hello'));
  t.equal(plain.status, 200);
  t.strictSame(plain.body, { stopReason: 'end_turn' });

  const text =
    `{"prompt":[{"type":"text","text":"meta"}],"_meta":{"trace":"t-1"},"sessionId":"someone-else",` +
    '"__proto__":{"x":1},"constructor":{"y":2},"prototype":{"z":3}}';
  const res = await postRawHttp(d, `/session/${id}/prompt`, text, 'application/json');
  t.equal(res.status, 200);
  const seen = await steer.seen('session/prompt', (p) => JSON.stringify(p).includes('"meta"'));
  const params = obj(seen.params);
  t.strictSame(Object.keys(params).sort(), ['_meta', 'prompt', 'sessionId'], 'poisoned keys never reach the agent');
  t.equal(params.sessionId, id, 'the route id wins over the body');
  t.strictSame(params._meta, { trace: 't-1' }, 'extra fields pass through');
  t.strictSame(params.prompt, [{ type: 'text', text: 'meta' }]);

  // Whatever the agent answers is the response.
  await steer.hold(['session/prompt']);
  const pending = call(d, 'POST', `/session/${id}/prompt`, textPrompt('held'));
  await (await steer.nextCall('session/prompt')).release({ stopReason: 'max_tokens', _meta: { usage: { tokens: 7 } } });
  t.strictSame((await pending).body, { stopReason: 'max_tokens', _meta: { usage: { tokens: 7 } } });
});

t.test('agent errors → 500 carrying the JSON-RPC code and data', async (t) => {
  const { steer, d } = await steerDaemon(t);
  const id = await createSession(d);
  await steer.hold(['session/prompt']);

  const withData = call(d, 'POST', `/session/${id}/prompt`, textPrompt('one'));
  await (
    await steer.nextCall('session/prompt')
  ).fail({ code: -32099, message: 'quota exhausted', data: { retryAfterS: 30 } });
  const a = await withData;
  t.equal(a.status, 500);
  t.strictSame(a.body, { error: 'quota exhausted', code: -32099, data: { retryAfterS: 30 } });

  const noData = call(d, 'POST', `/session/${id}/prompt`, textPrompt('two'));
  await (await steer.nextCall('session/prompt')).fail({ code: -32603, message: 'Internal error' });
  const b = await noData;
  t.equal(b.status, 500);
  t.equal(obj(b.body).error, 'Internal error');
  t.equal(obj(b.body).code, -32603, 'a numeric code stays a number');
});

// The SDK rejects a pending request with its own "ACP connection closed" as
// soon as the agent's stdout ends, usually before the process's exit: the
// answer must still be the contract's channel-closed message.
t.test('an agent dying mid-turn → 500 "agent channel closed mid-request (session <id>)"', async (t) => {
  const { d } = await steerDaemon(t);
  const id = await createSession(d);
  const crashed = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('crash'));
  t.equal(crashed.status, 500);
  t.strictSame(crashed.body, { error: `agent channel closed mid-request (session ${id})` });
});

// ---- POST /session/:id/cancel -------------------------------------------------

t.test('POST /session/:id/cancel: 204 with no body, any number of times; 404 for an unknown session', async (t) => {
  const { steer, d } = await steerDaemon(t);
  const id = await createSession(d);

  const hang = call(d, 'POST', `/session/${id}/prompt`, textPrompt('hang'));
  await steer.seen('session/prompt', (p) => JSON.stringify(p).includes('"hang"'));
  const first = await call(d, 'POST', `/session/${id}/cancel`, { sessionId: 'someone-else', _meta: { why: 'user' } });
  t.equal(first.status, 204);
  t.equal(first.body, undefined, 'empty body');
  t.strictSame(
    obj((await steer.seen('session/cancel')).params),
    { _meta: { why: 'user' }, sessionId: id },
    'the body is forwarded with the route id',
  );
  t.strictSame((await hang).body, { stopReason: 'cancelled' });

  const second = await call(d, 'POST', `/session/${id}/cancel`);
  t.equal(second.status, 204, 'a second cancel (no prompt running, no body) is fine');
  t.equal(second.body, undefined);

  const unknown = await call(d, 'POST', '/session/x/cancel', {});
  t.equal(unknown.status, 404);
  t.strictSame(unknown.body, { error: 'No session with id "x"', sessionId: 'x' });
});

// ---- POST /session/:id/model --------------------------------------------------

t.test('POST /session/:id/model: validation and the unknown session', async (t) => {
  const app = await buildTestApp(t);
  for (const body of [{}, { modelId: '' }, { modelId: 5 }, { modelId: null }, { modelId: ['m2'] }, { model: 'm2' }]) {
    const res = await post(app, '/session/nope/model', body);
    t.equal(res.status, 400, JSON.stringify(body));
    t.strictSame(res.body, { error: MODEL_REQUIRED }, JSON.stringify(body));
  }
  const unknown = await post(app, '/session/x/model', { modelId: 'm2' });
  t.equal(unknown.status, 404);
  t.strictSame(unknown.body, { error: 'No session with id "x"', sessionId: 'x' });
});

t.test('POST /session/:id/model: the agent answer passes through; a failure is a 500 and an event', async (t) => {
  const { steer, d } = await steerDaemon(t);
  const id = await createSession(d);
  const sse = await openEvents(t, d, id, { lastEventId: 0 });
  await steer.hold(['session/set_model']);

  const ok = call(d, 'POST', `/session/${id}/model`, {
    modelId: 'm2',
    sessionId: 'someone-else',
    _meta: { by: 'test' },
  });
  const okCall = await steer.nextCall('session/set_model');
  t.strictSame(
    obj(okCall.params),
    { modelId: 'm2', sessionId: id, _meta: { by: 'test' } },
    'the body is forwarded with the route id',
  );
  await okCall.release({ _meta: { switchedAt: 'now' } });
  const okRes = await ok;
  t.equal(okRes.status, 200);
  t.strictSame(okRes.body, { _meta: { switchedAt: 'now' } });
  t.strictSame((await sse.waitFor(isType('model_switched'))).envelope?.data, { sessionId: id, modelId: 'm2' });

  const plain = call(d, 'POST', `/session/${id}/model`, { modelId: 'm1' });
  await (await steer.nextCall('session/set_model')).release();
  t.strictSame((await plain).body, {}, 'an empty answer is {}');

  const bad = call(d, 'POST', `/session/${id}/model`, { modelId: 'm3' });
  await (
    await steer.nextCall('session/set_model')
  ).fail({ code: -32001, message: 'model unavailable', data: { modelId: 'm3' } });
  const badRes = await bad;
  t.equal(badRes.status, 500);
  t.strictSame(badRes.body, { error: 'model unavailable', code: -32001, data: { modelId: 'm3' } });
  t.strictSame((await sse.waitFor(isType('model_switch_failed'))).envelope?.data, {
    sessionId: id,
    requestedModelId: 'm3',
    error: 'model unavailable',
  });
});

// ---- POST /permission/:requestId ------------------------------------------------

t.test('POST /permission/:requestId: outcome validation and the unknown request', async (t) => {
  const app = await buildTestApp(t);
  const bad: unknown[] = [
    {},
    { outcome: null },
    { outcome: 'cancelled' },
    { outcome: [] },
    { outcome: {} },
    { outcome: { outcome: 'bogus' } },
    { outcome: { outcome: 'selected' } },
    { outcome: { outcome: 'selected', optionId: '' } },
    { outcome: { outcome: 'selected', optionId: 5 } },
    { outcome: { outcome: 'CANCELLED' } },
    { optionId: 'allow' },
  ];
  for (const body of bad) {
    const res = await post(app, '/permission/r-1', body);
    t.equal(res.status, 400, JSON.stringify(body));
    t.strictSame(res.body, { error: OUTCOME }, JSON.stringify(body));
  }
  for (const outcome of [{ outcome: 'cancelled' }, { outcome: 'selected', optionId: 'allow' }]) {
    const res = await post(app, '/permission/r-1', { outcome });
    t.equal(res.status, 404);
    t.strictSame(res.body, { error: 'No pending permission request', requestId: 'r-1' });
  }
});

t.test('POST /permission/:requestId: a bad option keeps the request open, the first valid vote wins', async (t) => {
  const { d } = await steerDaemon(t);
  const id = await createSession(d);
  const sse = await openEvents(t, d, id, { lastEventId: 0 });

  const prompt = call(d, 'POST', `/session/${id}/prompt`, textPrompt('perm'));
  const asked = (await sse.waitFor(isType('permission_request'))).envelope?.data;
  const requestId = String(obj(asked).requestId);
  t.match(requestId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'a v4 uuid');
  t.match(asked, {
    sessionId: id,
    toolCall: { title: 'steer-agent asks' },
    options: [
      { optionId: 'allow', kind: 'allow_once' },
      { optionId: 'reject', kind: 'reject_once' },
    ],
  });
  t.strictSame(Object.keys(obj(asked)).sort(), ['options', 'requestId', 'sessionId', 'toolCall']);

  const invalid = await call(d, 'POST', `/permission/${requestId}`, {
    outcome: { outcome: 'selected', optionId: 'maybe' },
  });
  t.equal(invalid.status, 400);
  t.strictSame(invalid.body, {
    error: `Permission ${requestId}: optionId "maybe" is not in the set of options the agent offered.`,
    code: 'invalid_option_id',
    requestId,
    optionId: 'maybe',
  });
  t.match((await call(d, 'GET', '/health?deep')).body, { pendingPermissions: 1 }, 'still pending');
  t.notOk(
    sse.events().some((e) => e.type === 'permission_resolved'),
    'nothing resolved yet',
  );

  const vote = await call(d, 'POST', `/permission/${requestId}`, {
    outcome: { outcome: 'selected', optionId: 'reject' },
  });
  t.equal(vote.status, 200);
  t.strictSame(vote.body, {});
  const late = await call(d, 'POST', `/permission/${requestId}`, {
    outcome: { outcome: 'selected', optionId: 'allow' },
  });
  t.equal(late.status, 404, 'the second voter loses');
  t.strictSame(late.body, { error: 'No pending permission request', requestId });

  t.strictSame((await prompt).body, { stopReason: 'end_turn' });
  t.strictSame((await sse.waitFor(isType('permission_resolved'))).envelope?.data, {
    requestId,
    outcome: { outcome: 'selected', optionId: 'reject' },
  });
  await sse.waitFor(
    (f) => f.envelope?.type === 'session_update' && JSON.stringify(f.envelope.data).includes('permission: reject'),
    'the agent got the winning vote',
  );
  t.equal(sse.events().filter((e) => e.type === 'permission_resolved').length, 1, 'resolved once');
  t.match((await call(d, 'GET', '/health?deep')).body, { pendingPermissions: 0 });
});

t.test("POST /permission/:requestId: the whole vote body is the agent's answer; cancelled is a vote too", async (t) => {
  const { steer, d } = await steerDaemon(t);
  const id = await createSession(d);
  const sse = await openEvents(t, d, id, { lastEventId: 0 });
  const agent = await steer.agent();
  const options = [{ optionId: 'yes', name: 'Yes', kind: 'allow_once' as const }];

  const answer = agent.permission(id, { toolCallId: 'tc-1', title: 'write a file' }, options);
  const first = String(obj((await sse.waitFor(isType('permission_request'))).envelope?.data).requestId);
  const voteBody = { outcome: { outcome: 'selected', optionId: 'yes' }, _meta: { voter: 'ide' } };
  const vote = await call(d, 'POST', `/permission/${first}`, voteBody);
  t.equal(vote.status, 200);
  t.strictSame(await answer, { outcome: { outcome: 'selected', optionId: 'yes' }, _meta: { voter: 'ide' } });

  const cancelled = agent.permission(id, { toolCallId: 'tc-2', title: 'again' }, options);
  const isSecond = (f: SseFrame) => isType('permission_request')(f) && obj(f.envelope?.data).requestId !== first;
  const second = String(obj((await sse.waitFor(isSecond)).envelope?.data).requestId);
  t.strictSame((await call(d, 'POST', `/permission/${second}`, { outcome: { outcome: 'cancelled' } })).body, {});
  t.strictSame(await cancelled, { outcome: { outcome: 'cancelled' } });
  t.strictSame(
    (await sse.waitFor((f) => isType('permission_resolved')(f) && obj(f.envelope?.data).requestId === second)).envelope
      ?.data,
    { requestId: second, outcome: { outcome: 'cancelled' } },
  );
});

// ---- the rest -------------------------------------------------------------------

t.test('GET /session/:id/events: an unknown session is a 404 JSON answer, not a stream', async (t) => {
  const app = await buildTestApp(t);
  const res = await inject(app, { method: 'GET', url: '/session/x/events', headers: { accept: 'text/event-stream' } });
  t.equal(res.status, 404);
  t.match(res.headers['content-type'], /^application\/json/);
  t.strictSame(res.body, { error: 'No session with id "x"', sessionId: 'x' });
});

t.test('unknown routes: 404 JSON; 401 first when a token is set', async (t) => {
  const open = await buildTestApp(t);
  const unknownRoutes = [
    ['GET', '/nope'],
    ['POST', '/session/x/close'],
    ['DELETE', '/session/x'],
    ['GET', '/session'],
  ] as const;
  for (const [method, url] of unknownRoutes) {
    const res = await inject(open, { method, url });
    t.equal(res.status, 404, `${method} ${url}`);
    t.match(res.headers['content-type'], /^application\/json/);
    t.type(obj(res.body).error, 'string');
  }
  const locked = await buildTestApp(t, { args: ['--token', 's3cret'] });
  const anonymous = await inject(locked, { method: 'GET', url: '/nope' });
  t.equal(anonymous.status, 401);
  t.strictSame(anonymous.body, { error: 'Unauthorized' });
  const known = await inject(locked, { method: 'GET', url: '/nope', headers: { authorization: 'Bearer s3cret' } });
  t.equal(known.status, 404);
});
