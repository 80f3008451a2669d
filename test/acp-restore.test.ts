// ACP itself at /acp, what a session's life needs beyond one prompt: load and resume after a daemon
// restart (over Streamable HTTP and over WebSocket, with the official SDK's client), cancel, a model
// switch, and a dropped session stream resumed from its last event id without loss.
import { createRequire } from 'node:module';
import t from 'tap';
import { client, type SessionNotification } from '@agentclientprotocol/sdk';
import { createHttpStream } from '@agentclientprotocol/sdk/experimental/http-client';
import { createWebSocketStream, type WebSocketConstructor } from '@agentclientprotocol/sdk/experimental/ws-client';
import { startDaemon, tempDir, type TestDaemon } from './support/app.js';
import { within } from '../harness/wait.js';

const { WebSocket } = createRequire(import.meta.url)('ws') as { WebSocket: WebSocketConstructor };

type Transport = 'http' | 'ws';

function acpClient(d: TestDaemon, transport: Transport) {
  const updates: SessionNotification[] = [];
  const app = client({ name: 'acp-restore-test' }).onNotification('session/update', ({ params }) => {
    updates.push(params);
  });
  const stream =
    transport === 'ws'
      ? createWebSocketStream(`${d.baseUrl.replace(/^http/, 'ws')}/acp`, { headers: d.headers, WebSocket })
      : createHttpStream(`${d.baseUrl}/acp`, { headers: d.headers });
  return { app, stream, updates };
}

function textOf(updates: SessionNotification[], kind: string): string {
  return updates
    .filter((n) => n.update.sessionUpdate === kind)
    .map((n) => {
      const u = n.update as { content?: { type: string; text?: string } };
      return u.content?.type === 'text' ? (u.content.text ?? '') : '';
    })
    .join('');
}

const initialize = { protocolVersion: 1, clientCapabilities: {} };
const text = (s: string) => [{ type: 'text' as const, text: s }];

for (const transport of ['http', 'ws'] as const) {
  t.test(
    `over ${transport}: load after a daemon restart replays the history, resume restores without it`,
    async (t) => {
      const workspace = tempDir(t, 'acpd-ws-');
      const dataDir = tempDir(t, 'acpd-data-');
      const first = await startDaemon(t, { workspace, dataDir });
      const a = acpClient(first, transport);
      let sessionId = '';
      await a.app.connectWith(a.stream, async (agent) => {
        await agent.request('initialize', initialize);
        sessionId = (await agent.request('session/new', { cwd: workspace, mcpServers: [] })).sessionId;
        await agent.request('session/prompt', { sessionId, prompt: text('remember the lighthouse') });
      });
      await first.app.close();

      const second = await startDaemon(t, { workspace, dataDir });
      const b = acpClient(second, transport);
      await b.app.connectWith(b.stream, async (agent) => {
        await agent.request('initialize', initialize);
        const loaded = await agent.request('session/load', { sessionId, cwd: workspace, mcpServers: [] });
        t.match(loaded, { models: { currentModelId: 'acpd-echo' } }, "the agent's own load answer");
        t.equal(textOf(b.updates, 'user_message_chunk'), 'remember the lighthouse', 'the history, before the answer');
        t.match(textOf(b.updates, 'agent_message_chunk'), /echo: remember the lighthouse/);
        const before = b.updates.length;
        await agent.request('session/prompt', { sessionId, prompt: text('/history') });
        t.match(
          textOf(b.updates.slice(before), 'agent_message_chunk'),
          /remember the lighthouse/,
          'the context came back',
        );
      });
      await second.app.close();

      const third = await startDaemon(t, { workspace, dataDir });
      const c = acpClient(third, transport);
      await c.app.connectWith(c.stream, async (agent) => {
        await agent.request('initialize', initialize);
        await agent.request('session/resume', { sessionId, cwd: workspace });
        t.equal(c.updates.length, 0, 'resume replays nothing');
        await agent.request('session/prompt', { sessionId, prompt: text('/history') });
        t.match(textOf(c.updates, 'agent_message_chunk'), /remember the lighthouse/, 'resumed with its context');
      });
    },
  );

  t.test(`over ${transport}: cancel ends the turn as cancelled; set_model switches the model`, async (t) => {
    const d = await startDaemon(t);
    const c = acpClient(d, transport);
    await c.app.connectWith(c.stream, async (agent) => {
      await agent.request('initialize', initialize);
      const { sessionId } = await agent.request('session/new', { cwd: d.config.workspace, mcpServers: [] });
      const turn = agent.request('session/prompt', { sessionId, prompt: text('/slow 50 100') });
      await within(
        (async () => {
          while (!textOf(c.updates, 'agent_message_chunk').includes('slow 1/50'))
            await new Promise((r) => setImmediate(r));
        })(),
        'the first slow chunk',
        20_000,
      );
      await agent.notify('session/cancel', { sessionId });
      t.equal(((await turn) as { stopReason: string }).stopReason, 'cancelled');

      // session/set_model is not in the SDK's typed method table yet.
      const request = agent.request.bind(agent);
      await request('session/set_model', { sessionId, modelId: 'acpd-shout' });
      const before = c.updates.length;
      await agent.request('session/prompt', { sessionId, prompt: text('quiet words') });
      t.match(textOf(c.updates.slice(before), 'agent_message_chunk'), /ECHO: QUIET WORDS/, 'the new model answered');
    });
  });
}

for (const transport of ['http', 'ws'] as const) {
  t.test(
    `over ${transport}: a client that serves files answers the agent's fs/* for its turns, inside the workspace only`,
    async (t) => {
      const d = await startDaemon(t);
      const asked: { method: string; path: string }[] = [];
      const updates: SessionNotification[] = [];
      const app = client({ name: 'acp-editor' })
        .onNotification('session/update', ({ params }) => {
          updates.push(params);
        })
        .onRequest('fs/read_text_file', ({ params }) => {
          asked.push({ method: 'read', path: params.path });
          return { content: 'unsaved buffer text' };
        })
        .onRequest('fs/write_text_file', ({ params }) => {
          asked.push({ method: 'write', path: params.path });
          return {};
        });
      const stream =
        transport === 'ws'
          ? createWebSocketStream(`${d.baseUrl.replace(/^http/, 'ws')}/acp`, { headers: d.headers, WebSocket })
          : createHttpStream(`${d.baseUrl}/acp`, { headers: d.headers });
      await app.connectWith(stream, async (agent) => {
        await agent.request('initialize', {
          protocolVersion: 1,
          clientCapabilities: { fs: { readTextFile: true, writeTextFile: true } },
        });
        const { sessionId } = await agent.request('session/new', { cwd: d.config.workspace, mcpServers: [] });
        await agent.request('session/prompt', { sessionId, prompt: text('/read draft.md') });
        t.same(asked, [{ method: 'read', path: `${d.config.workspace}/draft.md` }], 'the client was asked');
        t.match(textOf(updates, 'agent_message_chunk'), /unsaved buffer text/, "the client's answer reached the agent");

        const before = updates.length;
        await agent.request('session/prompt', { sessionId, prompt: text('/read /etc/hostname') });
        t.equal(asked.length, 1, 'a path outside the workspace never reaches the client');
        t.match(textOf(updates.slice(before), 'agent_message_chunk'), /Could not read/, 'refused to the agent');
      });
    },
  );
}

/** The blocks of an SSE body: the `id:` of each, and its data as JSON (none for a bare id). */
async function* sseMessages(res: Response): AsyncGenerator<{ id?: number; msg?: Record<string, unknown> }, void> {
  const reader: ReadableStreamDefaultReader<Uint8Array> = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let cut: number;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let id: number | undefined;
      let data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('id: ')) id = Number(line.slice(4));
        else if (line.startsWith('data: ')) data += line.slice(6);
      }
      if (id === undefined && !data) continue;
      yield {
        ...(id !== undefined ? { id } : {}),
        ...(data ? { msg: JSON.parse(data) as Record<string, unknown> } : {}),
      };
    }
  }
}

t.test('a dropped session stream resumes after its last event id: nothing lost, nothing twice', async (t) => {
  const d = await startDaemon(t);
  const post = async (body: unknown, connection?: string): Promise<Response> =>
    fetch(`${d.baseUrl}/acp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(connection ? { 'acp-connection-id': connection } : {}) },
      body: JSON.stringify(body),
    });
  const init = await post({ jsonrpc: '2.0', id: 1, method: 'initialize', params: initialize });
  t.equal(init.status, 200);
  const conn = init.headers.get('acp-connection-id')!;
  t.ok(conn, 'a connection id');
  const stream = (headers: Record<string, string>, signal: AbortSignal): Promise<Response> =>
    fetch(`${d.baseUrl}/acp`, {
      headers: { accept: 'text/event-stream', 'acp-connection-id': conn, ...headers },
      signal,
    });

  const connAc = new AbortController();
  const connStream = sseMessages(await stream({}, connAc.signal));
  t.equal(
    (await post({ jsonrpc: '2.0', id: 2, method: 'session/new', params: { cwd: d.config.workspace } }, conn)).status,
    202,
  );
  const next = await connStream.next();
  const created = next.done ? undefined : next.value;
  const sessionId = (created?.msg?.result as { sessionId: string }).sessionId;
  t.ok(sessionId, 'session/new answered on the connection stream');

  // The first reader of the session stream takes a few of the turn's events, then drops.
  const firstAc = new AbortController();
  const first = sseMessages(await stream({ 'acp-session-id': sessionId }, firstAc.signal));
  await post(
    { jsonrpc: '2.0', id: 3, method: 'session/prompt', params: { sessionId, prompt: text('/slow 12 20') } },
    conn,
  );
  const seen: number[] = [];
  for await (const { id } of first) {
    if (id !== undefined) seen.push(id);
    if (seen.length === 4) break;
  }
  firstAc.abort();
  const lastSeen = seen.at(-1)!;

  // The turn goes on without a reader; the next reader resumes after the last id it saw.
  const bus = d.app.sessions.require(sessionId).events;
  await within(
    (async () => {
      while (d.app.sessions.get(sessionId)?.busy) await new Promise((r) => setTimeout(r, 10));
    })(),
    'the turn to end',
    20_000,
  );
  const secondAc = new AbortController();
  t.teardown(() => {
    secondAc.abort();
    connAc.abort();
  });
  const second = sseMessages(
    await stream({ 'acp-session-id': sessionId, 'last-event-id': String(lastSeen) }, secondAc.signal),
  );
  const resumed: number[] = [];
  let answer: Record<string, unknown> | undefined;
  for await (const { id, msg } of second) {
    if (id !== undefined) resumed.push(id);
    if (msg?.id === 3) answer = msg;
    if (answer && resumed.at(-1) === bus.lastEventId) break;
  }
  t.same(
    [...seen, ...resumed],
    Array.from({ length: bus.lastEventId - seen[0] + 1 }, (_, i) => seen[0] + i),
    'every id once, in order',
  );
  t.match(answer, { result: { stopReason: 'end_turn' } }, "the prompt's answer came with the resumed stream");
});
