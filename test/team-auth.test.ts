// Named tokens (--tokens-file): each route answers by the scope of the token's user, over REST and over
// /acp; expired tokens, client ids bound to users, reloads that keep streams, and frames that say who
// caused them.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { client, RequestError } from '@agentclientprotocol/sdk';
import { createHttpStream } from '@agentclientprotocol/sdk/experimental/http-client';
import { request } from 'undici';
import { until } from '../harness/wait.js';
import { METHODS } from '../src/acp/methods.js';
import { hashToken } from '../src/services/tokens.js';
import { steerDaemon, tempDir, type Endpoint, type TestDaemon } from './support/app.js';
import { call, obj } from './support/http.js';
import { routesFromTree } from './support/routes.js';
import { isType, openEvents } from './support/sse.js';
import { textPrompt } from './support/values.js';

type Scope = 'read' | 'prompt' | 'approve' | 'admin';

/** Users of the test's tokens file: the token of each is `tok-<name>`. */
const USERS: Record<string, Scope[]> = {
  reader: ['read'],
  prompter: ['read', 'prompt'],
  approver: ['read', 'approve'],
  writeonly: ['prompt'],
  boss: ['admin'],
};

function tokensYaml(users: Record<string, Scope[]>, extra = ''): string {
  const lines = ['users:'];
  for (const [name, scopes] of Object.entries(users)) {
    lines.push(
      `  - name: ${name}`,
      `    tokens: ["${hashToken(`tok-${name}`)}"]`,
      `    scopes: [${scopes.join(', ')}]`,
    );
  }
  return lines.join('\n') + '\n' + extra;
}

const EXPIRED_USER = `  - name: old\n    tokens: ["${hashToken('tok-old')}"]\n    scopes: [admin]\n    expires: 2000-01-01T00:00:00Z\n`;

function as(d: TestDaemon, user: string, extra: Record<string, string> = {}): Endpoint {
  return { baseUrl: d.baseUrl, headers: { authorization: `Bearer tok-${user}`, ...extra } };
}

function allowed(scopes: Scope[], need: Scope | undefined): boolean {
  return need === undefined || scopes.includes(need) || scopes.includes('admin');
}

async function teamDaemon(t: Test, yaml = tokensYaml(USERS, EXPIRED_USER)) {
  const dir = tempDir(t, 'acpd-tokens-');
  const file = path.join(dir, 'tokens.yaml');
  writeFileSync(file, yaml);
  const steered = await steerDaemon(t, { args: ['--tokens-file', file] });
  return { ...steered, file };
}

/** Whether an answer is the guards' refusal for want of a scope or a token (not a route's own 403, e.g. writes off). */
function refused(res: { status: number; body: unknown }): boolean {
  return (
    res.status === 401 ||
    (res.status === 403 && (res.body as { code?: unknown } | undefined)?.code === 'insufficient_scope')
  );
}

t.test('every route answers by the scope of the token: 403 insufficient_scope names the scope', async (t) => {
  const { d } = await teamDaemon(t);
  const created = await call(as(d, 'boss'), 'POST', '/session', {});
  const id = String(obj(created.body).sessionId);
  const ws = encodeURIComponent(d.config.workspace);
  const acpInit = {
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: 1, clientCapabilities: {} },
  };
  // Every route the app serves, by its router pattern: what to send it and the scope it needs
  // (undefined: any valid token, or none at all for the probes and the console's public files).
  type Route = { url: string; body?: unknown; scope?: Scope };
  const routes: Record<string, Route> = {
    'GET /health': { url: '/health' },
    'GET /livez': { url: '/livez' },
    'GET /readyz': { url: '/readyz' },
    'GET /console': { url: '/console' },
    'GET /console/': { url: '/console/' },
    'GET /console/:file': { url: '/console/app.js' },
    'GET /console/client/:file': { url: '/console/client/index.js' },
    'GET /capabilities': { url: '/capabilities', scope: 'read' },
    'GET /metrics': { url: '/metrics', scope: 'admin' },
    'GET /docs': { url: '/docs', scope: 'admin' },
    'GET /docs/': { url: '/docs/', scope: 'admin' },
    'GET /docs/json': { url: '/docs/json', scope: 'admin' },
    'GET /docs/yaml': { url: '/docs/yaml', scope: 'admin' },
    'GET /docs/static/index.html': { url: '/docs/static/index.html', scope: 'admin' },
    'GET /docs/static/swagger-initializer.js': { url: '/docs/static/swagger-initializer.js', scope: 'admin' },
    'GET /docs/static/:file': { url: '/docs/static/swagger-ui.css', scope: 'admin' },
    'GET /workspace/:id/sessions': { url: `/workspace/${ws}/sessions`, scope: 'read' },
    'GET /session/:id/status': { url: `/session/${id}/status`, scope: 'read' },
    'GET /session/:id/pending-prompts': { url: `/session/${id}/pending-prompts`, scope: 'read' },
    'GET /session/:id/turns/current': { url: `/session/${id}/turns/current`, scope: 'read' },
    'GET /session/:id/events': { url: '/session/no-such/events', scope: 'read' },
    'POST /session': { url: '/session', body: {}, scope: 'prompt' },
    'POST /session/:id/prompt': { url: `/session/${id}/prompt`, body: textPrompt('hi'), scope: 'prompt' },
    'POST /session/:id/cancel': { url: `/session/${id}/cancel`, body: {}, scope: 'prompt' },
    'POST /session/:id/model': { url: `/session/${id}/model`, body: { modelId: 'm2' }, scope: 'prompt' },
    'POST /session/:id/load': { url: '/session/unknown-1/load', body: {}, scope: 'prompt' },
    'POST /session/:id/resume': { url: '/session/unknown-2/resume', body: {}, scope: 'prompt' },
    'DELETE /session/:id/pending-prompts/:promptId': { url: `/session/${id}/pending-prompts/nope`, scope: 'prompt' },
    'DELETE /session/:id': { url: '/session/no-such', scope: 'prompt' },
    'POST /permission/:requestId': {
      url: '/permission/nope',
      body: { outcome: { outcome: 'cancelled' } },
      scope: 'approve',
    },
    'GET /file': { url: '/file?path=README.md', scope: 'read' },
    'GET /file/bytes': { url: '/file/bytes?path=README.md', scope: 'read' },
    'GET /stat': { url: '/stat?path=README.md', scope: 'read' },
    'GET /list': { url: '/list?path=.', scope: 'read' },
    'GET /glob': { url: '/glob?pattern=*.md', scope: 'read' },
    'GET /workspace/git': { url: '/workspace/git', scope: 'read' },
    'GET /workspace/git/diff': { url: '/workspace/git/diff', scope: 'read' },
    'GET /workspace/git/diff/file': { url: '/workspace/git/diff/file?path=README.md', scope: 'read' },
    'GET /workspace/git/log': { url: '/workspace/git/log', scope: 'read' },
    'GET /workspace/git/log/commit': { url: '/workspace/git/log/commit?sha=0000000', scope: 'read' },
    'GET /workspace/git/branches': { url: '/workspace/git/branches', scope: 'read' },
    'POST /file/write': { url: '/file/write', body: { path: 'x.txt', content: 'x' }, scope: 'prompt' },
    'POST /file/edit': { url: '/file/edit', body: { path: 'x.txt', oldText: 'a', newText: 'b' }, scope: 'prompt' },
    'POST /file/upload': { url: '/file/upload?path=x.bin', body: {}, scope: 'prompt' },
    // The transport needs `read`; each message it carries needs its route's scope (the /acp test below).
    'POST /acp': { url: '/acp', body: acpInit, scope: 'read' },
    'GET /acp': { url: '/acp', scope: 'read' },
    'DELETE /acp': { url: '/acp', scope: 'read' },
  };
  // The table is the whole API: a route added without a row here fails this test. (No webhook route:
  // webhooks go out, nothing comes in.)
  const served = routesFromTree(d.app.printRoutes({ commonPrefix: false }))
    .filter((r) => r.method !== 'HEAD')
    .map((r) => `${r.method} ${r.url}`);
  t.same(
    served.filter((r) => !(r in routes)),
    [],
    'every route the app serves has a row',
  );
  t.same(
    Object.keys(routes).filter((r) => !served.includes(r)),
    [],
    'every row is a route the app serves',
  );

  for (const [user, scopes] of Object.entries(USERS)) {
    for (const [pattern, route] of Object.entries(routes)) {
      const method = pattern.split(' ')[0] as 'GET' | 'POST' | 'DELETE';
      const res = await call(as(d, user), method, route.url, route.body);
      const label = `${user} ${method} ${route.url} → ${res.status}`;
      if (allowed(scopes, route.scope)) {
        t.notOk(refused(res), label);
      } else {
        t.equal(res.status, 403, label);
        t.match(res.body, { code: 'insufficient_scope', scope: route.scope, user }, label);
      }
    }
  }
  t.equal((await call(d, 'GET', '/capabilities')).status, 401, 'no token: 401');
  t.same((await call(as(d, 'nobody'), 'GET', '/capabilities')).body, { error: 'Unauthorized' }, 'unknown token');
});

t.test('an expired token answers 401 token_expired, on every route', async (t) => {
  const { d } = await teamDaemon(t);
  // (The probes answer without a token on a loopback bind, so they are not asked here.)
  for (const url of ['/capabilities', '/metrics', '/docs/json']) {
    const res = await call(as(d, 'old'), 'GET', url);
    t.equal(res.status, 401, url);
    t.same(res.body, { error: 'Token expired', code: 'token_expired' }, url);
  }
});

/** An ACP client over /acp with a user's token; `run` gets the connected agent side. */
async function overAcp(d: TestDaemon, user: string, run: (agent: AcpAgent) => Promise<void>): Promise<void> {
  const app = client({ name: 'team-auth-test' });
  const stream = createHttpStream(`${d.baseUrl}/acp`, { headers: as(d, user).headers });
  await app.connectWith(stream, run);
}
type AcpAgent = Parameters<Parameters<ReturnType<typeof client>['connectWith']>[1]>[0];

/** The REST error envelope an /acp request failed with (its JSON-RPC error's data), or 'ok'. */
async function acpOutcome(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return err instanceof RequestError ? err.data : err;
  }
}

t.test('/acp messages are their REST routes: the same scopes apply, method by method', async (t) => {
  const { d } = await teamDaemon(t);
  const cwd = d.config.workspace;
  const onSession = { sessionId: 'no-such', cwd, mcpServers: [] };
  // Every method /acp serves, with the scope its REST route needs (undefined: any valid token).
  const methods: Record<string, { params: Record<string, unknown>; scope?: Scope }> = {
    'session/new': { params: { cwd, mcpServers: [] }, scope: 'prompt' },
    'session/load': { params: onSession, scope: 'prompt' },
    'session/resume': { params: onSession, scope: 'prompt' },
    'session/prompt': { params: { sessionId: 'no-such', prompt: [{ type: 'text', text: 'x' }] }, scope: 'prompt' },
    'session/cancel': { params: { sessionId: 'no-such' }, scope: 'prompt' },
    'session/set_model': { params: { sessionId: 'no-such', modelId: 'm2' }, scope: 'prompt' },
    'session/close': { params: { sessionId: 'no-such' }, scope: 'prompt' },
    'session/list': { params: { cwd }, scope: 'read' },
    'session/permission': { params: { requestId: 'nope', outcome: { outcome: 'cancelled' } }, scope: 'approve' },
    authenticate: { params: { methodId: 'none' } },
    '_qwen/health': { params: {} },
    '_qwen/file/read': { params: { path: 'README.md' }, scope: 'read' },
    '_qwen/file/read_bytes': { params: { path: 'README.md' }, scope: 'read' },
    '_qwen/file/stat': { params: { path: 'README.md' }, scope: 'read' },
    '_qwen/file/list': { params: { path: '.' }, scope: 'read' },
    '_qwen/file/glob': { params: { pattern: '*.md' }, scope: 'read' },
    '_qwen/file/write': { params: { path: 'x.txt', content: 'x' }, scope: 'prompt' },
    '_qwen/file/edit': { params: { path: 'x.txt', oldText: 'a', newText: 'b' }, scope: 'prompt' },
  };
  t.same(
    Object.keys(METHODS).filter((m) => !(m in methods)),
    [],
    'every /acp method has a row',
  );
  for (const [user, scopes] of Object.entries(USERS)) {
    if (!scopes.includes('read') && !scopes.includes('admin')) {
      // The transport itself needs `read`: it carries the session's updates.
      const res = await call(as(d, user), 'POST', '/acp', {
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: { protocolVersion: 1, clientCapabilities: {} },
      });
      t.match([res.status, res.body], [403, { code: 'insufficient_scope', scope: 'read' }], `${user}: /acp`);
      continue;
    }
    await overAcp(d, user, async (agent) => {
      await agent.request('initialize', { protocolVersion: 1, clientCapabilities: {} });
      // Extension methods too: the SDK's request sends any method name.
      const send = (method: string, params: Record<string, unknown>): Promise<unknown> => agent.request(method, params);
      for (const [method, { params, scope }] of Object.entries(methods)) {
        const outcome = await acpOutcome(send(method, params));
        const label = `${user}: ${method}`;
        if (allowed(scopes, scope)) {
          t.notMatch(outcome, { httpStatus: 403, code: 'insufficient_scope' }, label);
          t.notMatch(outcome, { httpStatus: 401 }, label);
        } else {
          t.match(outcome, { httpStatus: 403, code: 'insufficient_scope', scope, user }, label);
        }
      }
    });
  }
});

t.test('a client id belongs to the user who first sent it; an /acp connection to its opener', async (t) => {
  const { d } = await teamDaemon(t);
  const cid = { 'x-qwen-client-id': 'laptop-1' };
  t.equal((await call(as(d, 'reader', cid), 'GET', '/capabilities')).status, 200, 'first use binds it');
  t.equal((await call(as(d, 'reader', cid), 'GET', '/capabilities')).status, 200, 'its user may go on');
  const forged = await call(as(d, 'boss', cid), 'GET', '/capabilities');
  t.equal(forged.status, 403, 'another user, even an admin, is refused');
  t.same(forged.body, {
    error: 'Client id "laptop-1" belongs to another user',
    code: 'client_id_taken',
    clientId: 'laptop-1',
  });

  const init = await call(as(d, 'reader'), 'POST', '/acp', {
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: 1, clientCapabilities: {} },
  });
  const connectionId = String(init.headers['acp-connection-id']);
  const message = { jsonrpc: '2.0', id: 2, method: 'session/list', params: {} };
  const hijack = await call(as(d, 'boss', { 'acp-connection-id': connectionId }), 'POST', '/acp', message);
  t.match([hijack.status, hijack.body], [403, { code: 'client_id_taken' }], 'another user cannot send on it');
  const own = await call(as(d, 'reader', { 'acp-connection-id': connectionId }), 'POST', '/acp', message);
  t.equal(own.status, 202, 'its opener can');
});

t.test('frames a client causes carry _meta {user, clientId}; the status lists attached users', async (t) => {
  const { d, steer } = await teamDaemon(t);
  const prompter = as(d, 'prompter', { 'x-qwen-client-id': 'p-1' });
  const id = String(obj((await call(prompter, 'POST', '/session', {})).body).sessionId);
  const events = await openEvents(t, as(d, 'reader'), id);

  const status = await call(as(d, 'reader'), 'GET', `/session/${id}/status`);
  t.same(obj(status.body).attachedUsers, ['prompter', 'reader'], 'the creator and the reader');

  // A prompt held in the agent, then cancelled.
  await steer.hold(['session/prompt']);
  const turn = call(prompter, 'POST', `/session/${id}/prompt`, textPrompt('first'));
  const held = await steer.nextCall('session/prompt');
  const echo = await events.waitFor(isType('session_update'), 'echo');
  t.match(echo.envelope?.data, {
    _meta: { source: 'bridge-echo', user: 'prompter', clientId: 'p-1' },
    update: { _meta: { source: 'bridge-echo', user: 'prompter', clientId: 'p-1' } },
  });
  t.equal((await call(as(d, 'boss'), 'POST', `/session/${id}/cancel`, {})).status, 204);
  const cancelled = await events.waitFor(isType('prompt_cancelled'), 'prompt_cancelled');
  t.same(cancelled.envelope?.data._meta, { user: 'boss' }, 'the canceller, without a client id');
  await held.release({ stopReason: 'cancelled' });
  await turn;
  await steer.unhold(['session/prompt']);

  // A vote.
  const agent = await steer.agent(0);
  const answer = agent.permission(id, { toolCallId: 'tc-1', title: 'write' }, [
    { optionId: 'allow', name: 'Allow', kind: 'allow_once' },
  ]);
  const asked = await events.waitFor(isType('permission_request'), 'permission_request');
  const requestId = String(asked.envelope?.data.requestId);
  const refused = await call(as(d, 'prompter'), 'POST', `/permission/${requestId}`, {
    outcome: { outcome: 'selected', optionId: 'allow' },
  });
  t.equal(refused.status, 403, 'a prompter cannot vote');
  const vote = await call(as(d, 'approver', { 'x-qwen-client-id': 'a-1' }), 'POST', `/permission/${requestId}`, {
    outcome: { outcome: 'selected', optionId: 'allow' },
  });
  t.equal(vote.status, 200);
  await answer;
  const resolved = await events.waitFor(isType('permission_resolved'), 'permission_resolved');
  t.same(resolved.envelope?.data._meta, { user: 'approver', clientId: 'a-1' });

  // A model switch, then the close.
  t.equal((await call(prompter, 'POST', `/session/${id}/model`, { modelId: 'm2' })).status, 200);
  const switched = await events.waitFor(isType('model_switched'), 'model_switched');
  t.same(switched.envelope?.data._meta, { user: 'prompter', clientId: 'p-1' });
  t.equal((await call(prompter, 'DELETE', `/session/${id}`)).status, 204);
  const closed = await events.waitFor(isType('session_closed'), 'session_closed');
  t.same(closed.envelope?.data._meta, { user: 'prompter', clientId: 'p-1' });
});

t.test('a reload swaps the users and keeps open streams; a bad file keeps the old users', async (t) => {
  const { d, file } = await teamDaemon(t);
  const id = String(obj((await call(as(d, 'prompter'), 'POST', '/session', {})).body).sessionId);
  const events = await openEvents(t, as(d, 'reader'), id);
  await events.waitFor(isType('session_state'), 'session_state');

  writeFileSync(file, tokensYaml({ prompter: ['read', 'prompt'], newcomer: ['read'] }));
  t.match(d.app.auth.reload(), { ok: true, users: 2 });
  t.equal((await call(as(d, 'newcomer'), 'GET', '/capabilities')).status, 200, 'a new user is let in');
  t.equal((await call(as(d, 'reader'), 'GET', '/capabilities')).status, 401, 'a removed user is not');
  // The removed user's stream was admitted before: it goes on and gets the next frame.
  t.equal((await call(as(d, 'prompter'), 'POST', `/session/${id}/prompt`, textPrompt('after'))).status, 200);
  await events.waitFor(isType('turn_complete'), 'turn_complete on the stream opened before the reload');

  writeFileSync(file, 'users: [{name: broken}]\n');
  t.match(d.app.auth.reload(), { ok: false });
  t.equal((await call(as(d, 'newcomer'), 'GET', '/capabilities')).status, 200, 'the previous users stay');
});

t.test('a per-user prompt rate holds whichever client the prompts come from', async (t) => {
  const yaml = `users:\n  - name: slow\n    tokens: ["${hashToken('tok-slow')}"]\n    scopes: [read, prompt]\n    promptRate: 1\n`;
  const { d } = await teamDaemon(t, yaml);
  const id = String(obj((await call(as(d, 'slow'), 'POST', '/session', {})).body).sessionId);
  const first = await call(
    as(d, 'slow', { 'x-qwen-client-id': 'c1' }),
    'POST',
    `/session/${id}/prompt`,
    textPrompt('a'),
  );
  t.equal(first.status, 200);
  const second = await call(
    as(d, 'slow', { 'x-qwen-client-id': 'c2' }),
    'POST',
    `/session/${id}/prompt`,
    textPrompt('b'),
  );
  t.match([second.status, second.body], [429, { code: 'rate_limited', budget: 'prompts' }]);
});

t.test('the real process reloads its tokens file on SIGHUP without dropping a stream', async (t) => {
  const dir = tempDir(t, 'acpd-sighup-');
  const file = path.join(dir, 'tokens.yaml');
  writeFileSync(file, tokensYaml({ prompter: ['read', 'prompt'] }));
  const server = fileURLToPath(new URL('../src/server.js', import.meta.url));
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('ACPD_')) env[k] = v;
  const child = spawn(
    process.execPath,
    [server, '--port', '0', '--workspace', dir, '--tokens-file', file, '--log-level', 'warn', '--warm-sessions', '0'],
    { env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const port = await until(
    () => /acpd listening on http:\/\/127\.0\.0\.1:(\d+) \(mode=http-bridge, auth=bearer/.exec(stderr)?.[1],
    'listening',
    {
      ms: 30_000,
      everyMs: 10,
    },
  );
  const base = { baseUrl: `http://127.0.0.1:${port}`, headers: {} };
  const prompter = { ...base, headers: { authorization: 'Bearer tok-prompter' } };
  const id = String(obj((await call(prompter, 'POST', '/session', {})).body).sessionId);
  const events = await openEvents(t, prompter, id);
  await events.waitFor(isType('session_state'), 'session_state');

  const newcomer = { ...base, headers: { authorization: 'Bearer tok-newcomer' } };
  t.equal((await call(newcomer, 'GET', '/capabilities')).status, 401, 'not yet a user');
  writeFileSync(file, tokensYaml({ prompter: ['read', 'prompt'], newcomer: ['read'] }));
  child.kill('SIGHUP');
  await until(() => stderr.includes('tokens reloaded (2 users)') || undefined, 'the reload line', { everyMs: 10 });
  t.equal((await call(newcomer, 'GET', '/capabilities')).status, 200, 'a user after the reload');
  t.equal(child.exitCode, null, 'SIGHUP did not stop the daemon');
  t.equal((await call(prompter, 'POST', `/session/${id}/prompt`, textPrompt('still here'))).status, 200);
  await events.waitFor(isType('turn_complete'), 'the stream opened before SIGHUP goes on');
});

t.test("an Idempotency-Key is its user's: another user's same key runs its own request", async (t) => {
  const { d } = await teamDaemon(t);
  const key = { 'idempotency-key': 'shared-key-1' };
  // A session of its own each time (the default scope would attach them all to one).
  const thread = { sessionScope: 'thread' };
  const first = await call(as(d, 'prompter'), 'POST', '/session', thread, key);
  t.equal(first.status, 200);
  const mine = String(obj(first.body).sessionId);
  const retry = await call(as(d, 'prompter'), 'POST', '/session', thread, key);
  t.equal(retry.headers['idempotent-replayed'], 'true', 'its own retry is answered from the receipt');
  t.equal(obj(retry.body).sessionId, mine);

  const other = await call(as(d, 'boss'), 'POST', '/session', thread, key);
  t.equal(other.status, 200);
  t.equal(other.headers['idempotent-replayed'], undefined, "another user's request with the key is not a replay");
  t.not(obj(other.body).sessionId, mine, "and is not handed the first user's session");
  // Nor is another request under the same key a mismatch for a user who never used it.
  const model = await call(
    as(d, 'boss'),
    'POST',
    `/session/${mine}/model`,
    { modelId: 'm2' },
    {
      'idempotency-key': 'shared-key-2',
    },
  );
  t.equal(model.status, 200);
  const mismatch = await call(as(d, 'prompter'), 'POST', '/session', thread, { 'idempotency-key': 'shared-key-2' });
  t.equal(mismatch.status, 200, "prompter's first use of a key boss used runs (no 422)");
});

t.test('an /acp client reading a session is listed among its attached users while it reads', async (t) => {
  const { d } = await teamDaemon(t);
  const id = String(obj((await call(as(d, 'prompter'), 'POST', '/session', {})).body).sessionId);
  const status = async () => obj((await call(as(d, 'boss'), 'GET', `/session/${id}/status`)).body).attachedUsers;
  t.same(await status(), ['prompter'], 'the creator');

  const init = await call(as(d, 'reader'), 'POST', '/acp', {
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: 1, clientCapabilities: {} },
  });
  const connection = { 'acp-connection-id': String(init.headers['acp-connection-id']) };
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const stream = await request(`${d.baseUrl}/acp`, {
    headers: { ...as(d, 'reader').headers, ...connection, accept: 'text/event-stream', 'acp-session-id': id },
    signal: ac.signal,
  });
  t.equal(stream.statusCode, 200);
  stream.body.resume();
  await until(
    async () => JSON.stringify(await status()) === JSON.stringify(['prompter', 'reader']) || undefined,
    'the /acp reader listed',
  );
  t.pass('the /acp reader is listed beside the creator');
  t.equal((await call(as(d, 'reader', connection), 'DELETE', '/acp')).status, 202);
  t.same(await status(), ['prompter'], 'gone with its connection');
});
