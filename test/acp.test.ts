// ACP itself at /acp: the official SDK's client, over its Streamable HTTP transport, drives the embedded
// agent hosted by a real daemon, and shares sessions with REST clients.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import t from 'tap';
import { client, type RequestPermissionRequest, type SessionNotification } from '@agentclientprotocol/sdk';
import { createHttpStream } from '@agentclientprotocol/sdk/experimental/http-client';
import { createWebSocketStream, type WebSocketConstructor } from '@agentclientprotocol/sdk/experimental/ws-client';
import { DaemonClient } from '@qwen-code/sdk/daemon';
import { negotiateTransport } from '@qwen-code/sdk/daemon/transports';
import { startDaemon, type TestDaemon } from './support/app.js';
import { call, createSession } from './support/http.js';
import { isType, openEvents, type SseStream } from './support/sse.js';

// Node 20 has no global WebSocket; `ws` (what @fastify/websocket serves with) is the SDK's documented choice.
const { WebSocket } = createRequire(import.meta.url)('ws') as { WebSocket: WebSocketConstructor };

/** A client app that records the updates it is sent and answers permission requests with `vote`. */
function acpClient(d: TestDaemon, vote = 'allow', transport: 'http' | 'ws' = 'http') {
  const updates: SessionNotification[] = [];
  const asked: RequestPermissionRequest[] = [];
  const app = client({ name: 'acp-test' })
    .onNotification('session/update', ({ params }) => {
      updates.push(params);
    })
    .onRequest('session/request_permission', ({ params }) => {
      asked.push(params);
      return { outcome: { outcome: 'selected', optionId: vote } };
    });
  const stream =
    transport === 'ws'
      ? createWebSocketStream(`${d.baseUrl.replace(/^http/, 'ws')}/acp`, { headers: d.headers, WebSocket })
      : createHttpStream(`${d.baseUrl}/acp`, { headers: d.headers });
  return { app, stream, updates, asked };
}

function textOf(updates: SessionNotification[], sessionUpdate: string): string {
  return updates
    .filter((n) => n.update.sessionUpdate === sessionUpdate)
    .map((n) => {
      const u = n.update as { content?: { type: string; text?: string } };
      return u.content?.type === 'text' ? (u.content.text ?? '') : '';
    })
    .join('');
}

/** Whether a REST SSE subscriber saw the echo of a prompt with this text, once the turn completed. */
async function restSawPrompt(sse: SseStream, text: string): Promise<boolean> {
  await sse.waitFor(isType('turn_complete'), 'turn_complete on the REST stream');
  return sse
    .events()
    .filter((e) => e.type === 'session_update')
    .map((e) => (e.data as SessionNotification).update)
    .some((u) => u.sessionUpdate === 'user_message_chunk' && u.content.type === 'text' && u.content.text === text);
}

t.test('initialize, session/new, session/prompt: the updates stream before the answer', async (t) => {
  const d = await startDaemon(t);
  const c = acpClient(d);
  await c.app.connectWith(c.stream, async (agent) => {
    const init = await agent.request('initialize', { protocolVersion: 1, clientCapabilities: {} });
    t.equal(init.protocolVersion, 1);
    const hosted = d.app.channels.lastInitialize;
    t.ok(hosted, 'the hosted agent was asked, before any session');
    t.same(init.agentCapabilities, hosted?.agentCapabilities, "the hosted agent's capabilities");
    t.equal(init.agentCapabilities?.loadSession, true, 'the embedded agent loads sessions');

    const { sessionId } = await agent.request('session/new', { cwd: d.config.workspace, mcpServers: [] });
    t.ok(d.app.sessions.get(sessionId), 'a live session of the registry');

    const answer = await agent.request('session/prompt', {
      sessionId,
      prompt: [{ type: 'text', text: 'hello over acp' }],
    });
    t.equal(answer.stopReason, 'end_turn');
    t.ok(
      c.updates.every((n) => n.sessionId === sessionId),
      'every update names the session',
    );
    t.equal(textOf(c.updates, 'user_message_chunk'), 'hello over acp', 'the echo of the prompt');
    t.match(textOf(c.updates, 'agent_message_chunk'), /hello over acp/, "the agent's reply, before the answer");
  });
});

t.test('a permission request reaches the /acp client and its answer is the vote', async (t) => {
  const d = await startDaemon(t);
  const c = acpClient(d);
  await c.app.connectWith(c.stream, async (agent) => {
    await agent.request('initialize', { protocolVersion: 1, clientCapabilities: {} });
    const { sessionId } = await agent.request('session/new', { cwd: d.config.workspace, mcpServers: [] });
    const answer = await agent.request('session/prompt', {
      sessionId,
      prompt: [{ type: 'text', text: '/write note.txt voted' }],
    });
    t.equal(answer.stopReason, 'end_turn');
    t.equal(c.asked.length, 1, 'asked once');
    t.equal(c.asked[0]?.sessionId, sessionId);
    t.equal(readFileSync(path.join(d.config.workspace, 'note.txt'), 'utf8'), 'voted', 'allowed, so written');
  });
});

t.test('a session created over REST takes an /acp prompt; a REST subscriber sees its frames', async (t) => {
  const d = await startDaemon(t);
  const sessionId = await createSession(d);
  const sse = await openEvents(t, d, sessionId);
  const c = acpClient(d);
  await c.app.connectWith(c.stream, async (agent) => {
    await agent.request('initialize', { protocolVersion: 1, clientCapabilities: {} });
    await agent.request('session/resume', { sessionId, cwd: d.config.workspace });
    const answer = await agent.request('session/prompt', {
      sessionId,
      prompt: [{ type: 'text', text: 'from acp' }],
    });
    t.equal(answer.stopReason, 'end_turn');
    t.match(textOf(c.updates, 'agent_message_chunk'), /from acp/, 'the /acp client saw the reply');
  });
  t.ok(await restSawPrompt(sse, 'from acp'), 'the REST subscriber saw the /acp prompt');
});

t.test("/acp is behind the daemon's guards: the token, the Origin check", async (t) => {
  const d = await startDaemon(t, { args: ['--token', 's3cret'] });
  const init = JSON.stringify({
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: 1, clientCapabilities: {} },
  });
  const post = (headers: Record<string, string>) =>
    fetch(`${d.baseUrl}/acp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: init,
    });

  t.equal((await post({})).status, 401, 'no token');
  t.equal((await post({ ...d.headers, origin: 'http://evil.example' })).status, 403, 'a foreign Origin');
  t.equal(d.app.channels.spawnCount, 0, 'no agent was started for them');

  const c = acpClient(d);
  await c.app.connectWith(c.stream, async (agent) => {
    const answer = await agent.request('initialize', { protocolVersion: 1, clientCapabilities: {} });
    t.equal(answer.protocolVersion, 1, 'the SDK client with the token is served');
  });
});

t.test('session/list and session/close over /acp; acpd errors become JSON-RPC errors', async (t) => {
  const d = await startDaemon(t);
  const fromRest = await createSession(d);
  const c = acpClient(d);
  await c.app.connectWith(c.stream, async (agent) => {
    await agent.request('initialize', { protocolVersion: 1, clientCapabilities: {} });
    const { sessionId } = await agent.request('session/new', { cwd: d.config.workspace, mcpServers: [] });
    const listed = await agent.request('session/list', {});
    t.same(listed.sessions.map((s) => s.sessionId).sort(), [fromRest, sessionId].sort(), 'both, REST and /acp');
    t.ok(
      listed.sessions.every((s) => s.cwd === d.config.workspace),
      'in the workspace',
    );

    await agent.request('session/close', { sessionId: fromRest });
    t.equal((await call(d, 'GET', `/session/${fromRest}/status`)).status, 404, 'closed for REST too');

    const refused = await agent
      .request('session/prompt', { sessionId: fromRest, prompt: [{ type: 'text', text: 'late' }] })
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    t.match(refused, { code: -32002 }, 'a closed session is not found');
  });
});

t.test('over WebSocket: a prompt streams its updates, a REST-created session is shared', async (t) => {
  const d = await startDaemon(t);
  const fromRest = await createSession(d);
  const sse = await openEvents(t, d, fromRest);
  const c = acpClient(d, 'allow', 'ws');
  await c.app.connectWith(c.stream, async (agent) => {
    const init = await agent.request('initialize', { protocolVersion: 1, clientCapabilities: {} });
    t.equal(init.agentCapabilities?.loadSession, true, "the hosted agent's capabilities");
    const { sessionId } = await agent.request('session/new', { cwd: d.config.workspace, mcpServers: [] });
    const answer = await agent.request('session/prompt', { sessionId, prompt: [{ type: 'text', text: 'over ws' }] });
    t.equal(answer.stopReason, 'end_turn');
    t.match(textOf(c.updates, 'agent_message_chunk'), /over ws/, 'the reply streamed before the answer');

    await agent.request('session/resume', { sessionId: fromRest, cwd: d.config.workspace });
    await agent.request('session/prompt', { sessionId: fromRest, prompt: [{ type: 'text', text: 'ws to rest' }] });
  });
  t.ok(await restSawPrompt(sse, 'ws to rest'), 'the REST subscriber saw the prompt sent over WebSocket');
});

t.test('a WebSocket upgrade without the token is refused before it upgrades', async (t) => {
  const d = await startDaemon(t, { args: ['--token', 's3cret'] });
  const refused = createWebSocketStream(`${d.baseUrl.replace(/^http/, 'ws')}/acp`, { WebSocket });
  const app = client({ name: 'acp-test' });
  const outcome = await app
    .connectWith(refused, (agent) => agent.request('initialize', { protocolVersion: 1, clientCapabilities: {} }))
    .then(
      () => 'served',
      () => 'refused',
    );
  t.equal(outcome, 'refused');
  t.equal(d.app.channels.spawnCount, 0, 'no agent was started');
});

t.test("the qwen daemon client over /acp: POST /session gets the daemon's default scope, as over REST", async (t) => {
  const d = await startDaemon(t);
  // The published client's own negotiation: acpd lists acp-http, so it switches to JSON-RPC over /acp.
  const transport = await negotiateTransport(d.baseUrl);
  t.teardown(() => transport.dispose());
  t.equal(transport.type, 'acp-http');
  const c = new DaemonClient({ baseUrl: d.baseUrl, transport });
  // The client drops `sessionScope` from its session/new; the daemon's default (single) must decide, so a
  // second create attaches to the first session as it does over REST.
  const first = await c.createOrAttachSession({ sessionScope: 'single' });
  const second = await c.createOrAttachSession({ sessionScope: 'single' });
  t.equal(first.attached, false, 'the first create spawns');
  t.equal(second.attached, true, 'the second create attaches');
  t.equal(second.sessionId, first.sessionId);
  // The protocol's own session/new is a session of its own, whatever the default.
  const c2 = acpClient(d);
  await c2.app.connectWith(c2.stream, async (agent) => {
    await agent.request('initialize', { protocolVersion: 1, clientCapabilities: {} });
    const { sessionId } = await agent.request('session/new', { cwd: d.config.workspace, mcpServers: [] });
    t.not(sessionId, first.sessionId, 'an ACP client gets a new session');
  });
});

t.test('the qwen daemon client reads the workspace over /acp: _qwen/file/* are the REST routes', async (t) => {
  const d = await startDaemon(t);
  const ws = d.config.workspace;
  writeFileSync(path.join(ws, 'notes.txt'), 'one\ntwo\nthree\n');
  writeFileSync(path.join(ws, 'bin.dat'), Buffer.from([9, 8, 7, 6]));
  const transport = await negotiateTransport(d.baseUrl);
  t.teardown(() => transport.dispose());
  t.equal(transport.type, 'acp-http');
  const c = new DaemonClient({ baseUrl: d.baseUrl, transport });
  const page1 = await c.readWorkspaceFile('notes.txt', { limit: 1 });
  t.equal(page1.content, 'one');
  const page2 = await c.readWorkspaceFile('notes.txt', { limit: 1, cursor: page1.nextCursor ?? '' });
  t.equal(page2.content, 'two', 'the cursor of one page reads the next');
  const bytes = await c.readWorkspaceFileBytes('bin.dat', { offset: 1, maxBytes: 2 });
  t.same(Buffer.from(bytes.contentBase64, 'base64'), Buffer.from([8, 7]));
  t.match(await c.fileStat('notes.txt'), { kind: 'stat', type: 'file', sizeBytes: 14 });
  const list = (await c.dirList('.')) as { entries: { name: string }[] };
  const names = list.entries.map((e) => e.name);
  t.ok(names.includes('bin.dat') && names.includes('notes.txt'), 'the listing names the files');
  t.match(await c.glob('*.txt'), { matches: ['notes.txt'] });
  // Refusals keep the route's status and kind; writes stay off without --allow-file-writes.
  const outside = await c.readWorkspaceFile('../x').catch((err: unknown) => err);
  t.match(outside, { status: 400, body: { data: { errorKind: 'path_outside_workspace' } } });
  const write = await c
    .writeWorkspaceFile({ path: 'new.txt', content: 'x', mode: 'create' })
    .catch((err: unknown) => err);
  t.match(write, { status: 403, body: { data: { errorKind: 'file_writes_disabled' } } });
});
