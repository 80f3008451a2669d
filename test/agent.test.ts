// The embedded agent, run as a real child process and driven by the ACP SDK's client side.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import type { Test } from 'tap';
import { PROTOCOL_VERSION, RequestError, client, ndJsonStream } from '@agentclientprotocol/sdk';
import type {
  AnyMessage,
  ClientConnection,
  InitializeResponse,
  PromptResponse,
  RequestPermissionRequest,
  RequestPermissionResponse,
  SessionNotification,
  SessionUpdate,
} from '@agentclientprotocol/sdk';
import type { LoadSessionResult, NewSessionResult, ResumeSessionResult } from '../src/agent/catalog.js';
import { parseCommand, splitIntoChunks } from '../src/agent/commands.js';

const AGENT_MAIN = fileURLToPath(new URL('../src/agent/main.js', import.meta.url));

/** Items in arrival order, with waits on a condition (never on time). */
class Feed<T> {
  readonly items: T[] = [];
  #waiters: Array<{ check: () => boolean; resolve: () => void }> = [];
  #failure: Error | undefined;

  push(item: T): void {
    this.items.push(item);
    this.#waiters = this.#waiters.filter((waiter) => {
      if (!waiter.check()) return true;
      waiter.resolve();
      return false;
    });
  }

  /** Rejects current and future waits, e.g. when the agent process is gone. */
  fail(error: Error): void {
    this.#failure = error;
    this.#waiters = this.#waiters.filter((waiter) => !waiter.check());
  }

  until(check: () => boolean): Promise<void> {
    if (check()) return Promise.resolve();
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#waiters.push({
        check: () => {
          if (this.#failure !== undefined && !check()) {
            reject(this.#failure);
            return true;
          }
          return check();
        },
        resolve,
      });
    });
  }

  async waitFor(match: (item: T) => boolean): Promise<T> {
    let found: T | undefined;
    await this.until(() => {
      found = this.items.find(match);
      return found !== undefined;
    });
    if (found === undefined) throw new Error('unreachable: waitFor resolved without a match');
    return found;
  }
}

/** What came out of the agent's stdout, message by message, before the SDK dispatched it. */
type WireEntry =
  | { kind: 'update'; notification: SessionNotification }
  | { kind: 'notification'; method: string }
  | { kind: 'request'; method: string }
  | { kind: 'response'; id: string | number | null };

function isSessionNotification(value: unknown): value is SessionNotification {
  if (typeof value !== 'object' || value === null) return false;
  const sessionId: unknown = Reflect.get(value, 'sessionId');
  const update: unknown = Reflect.get(value, 'update');
  return (
    typeof sessionId === 'string' &&
    typeof update === 'object' &&
    update !== null &&
    typeof Reflect.get(update, 'sessionUpdate') === 'string'
  );
}

function describe(message: AnyMessage): WireEntry {
  if ('method' in message) {
    if ('id' in message) return { kind: 'request', method: message.method };
    if (message.method === 'session/update' && isSessionNotification(message.params)) {
      return { kind: 'update', notification: message.params };
    }
    return { kind: 'notification', method: message.method };
  }
  return { kind: 'response', id: message.id };
}

interface PermissionCall {
  request: RequestPermissionRequest;
  signal: AbortSignal;
}

type PermissionAnswer = (call: PermissionCall) => Promise<RequestPermissionResponse>;

const allow: PermissionAnswer = async () => ({ outcome: { outcome: 'selected', optionId: 'allow' } });
const reject: PermissionAnswer = async () => ({ outcome: { outcome: 'selected', optionId: 'reject' } });

interface AgentPeer {
  child: ChildProcess;
  connection: ClientConnection;
  /** Every message the agent wrote, in order. */
  wire: Feed<WireEntry>;
  /** session/update notifications as the SDK delivered them (so: schema-valid ones). */
  delivered: Feed<SessionNotification>;
  permissions: Feed<PermissionCall>;
  reads: string[];
  setPermissionAnswer: (answer: PermissionAnswer) => void;
  exited: Promise<number | null>;
  stderr: () => string;
}

function startAgent(t: Test, dataDir: string, cwd: string): AgentPeer {
  const child = spawn(process.execPath, [AGENT_MAIN, '--data-dir', dataDir], {
    cwd,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text: string) => {
    stderr += text;
  });
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      resolve(code);
    });
  });
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });

  const wire = new Feed<WireEntry>();
  const delivered = new Feed<SessionNotification>();
  const permissions = new Feed<PermissionCall>();
  const reads: string[] = [];
  let answer: PermissionAnswer = allow;
  void exited.then((code) => {
    const gone = new Error(`agent exited with code ${String(code)}; stderr:\n${stderr}`);
    wire.fail(gone);
    delivered.fail(gone);
    permissions.fail(gone);
  });

  const raw = ndJsonStream(Writable.toWeb(child.stdin), Readable.toWeb(child.stdout));
  const tap = new TransformStream<AnyMessage, AnyMessage>({
    transform(message, controller) {
      wire.push(describe(message));
      controller.enqueue(message);
    },
  });
  const connection = client({ name: 'agent-test' })
    .onNotification('session/update', ({ params }) => {
      delivered.push(params);
    })
    .onRequest('fs/read_text_file', async ({ params }) => {
      reads.push(params.path);
      let content: string;
      try {
        content = await readFile(params.path, 'utf8');
      } catch {
        throw RequestError.resourceNotFound(`file://${params.path}`);
      }
      if (typeof params.limit === 'number') content = content.split('\n').slice(0, params.limit).join('\n');
      return { content };
    })
    .onRequest('fs/write_text_file', async ({ params }) => {
      await writeFile(params.path, params.content, 'utf8');
      return {};
    })
    .onRequest('session/request_permission', ({ params, signal }) => {
      const call = { request: params, signal };
      permissions.push(call);
      return answer(call);
    })
    .connect({ writable: raw.writable, readable: raw.readable.pipeThrough(tap) });

  return {
    child,
    connection,
    wire,
    delivered,
    permissions,
    reads,
    setPermissionAnswer: (next) => {
      answer = next;
    },
    exited,
    stderr: () => stderr,
  };
}

async function initialize(peer: AgentPeer): Promise<InitializeResponse> {
  return peer.connection.agent.request('initialize', {
    protocolVersion: PROTOCOL_VERSION,
    clientCapabilities: { fs: { readTextFile: true, writeTextFile: true } },
    clientInfo: { name: 'agent-test', version: '0.0.0' },
  });
}

async function newSession(peer: AgentPeer, cwd: string): Promise<NewSessionResult> {
  return peer.connection.agent.request<NewSessionResult>('session/new', { cwd, mcpServers: [] });
}

function updatesOf(entries: readonly WireEntry[], sessionId: string): SessionUpdate[] {
  return entries.flatMap((entry) =>
    entry.kind === 'update' && entry.notification.sessionId === sessionId ? [entry.notification.update] : [],
  );
}

function agentText(updates: readonly SessionUpdate[]): string {
  return updates
    .map((update) =>
      update.sessionUpdate === 'agent_message_chunk' && update.content.type === 'text' ? update.content.text : '',
    )
    .join('');
}

function chunkCount(updates: readonly SessionUpdate[]): number {
  return updates.filter((update) => update.sessionUpdate === 'agent_message_chunk').length;
}

interface TurnResult {
  stopReason: PromptResponse['stopReason'];
  updates: SessionUpdate[];
  text: string;
}

/** Sends one prompt and returns what the agent streamed for it (everything precedes the response). */
async function prompt(peer: AgentPeer, sessionId: string, text: string): Promise<TurnResult> {
  const start = peer.wire.items.length;
  const response = await peer.connection.agent.request('session/prompt', {
    sessionId,
    prompt: [{ type: 'text', text }],
  });
  const updates = updatesOf(peer.wire.items.slice(start), sessionId);
  return { stopReason: response.stopReason, updates, text: agentText(updates) };
}

async function rpcError(t: Test, promise: Promise<unknown>): Promise<RequestError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof RequestError) return error;
    throw error;
  }
  t.fail('expected a JSON-RPC error');
  throw new Error('expected a JSON-RPC error');
}

function errorUri(error: RequestError): unknown {
  return typeof error.data === 'object' && error.data !== null ? Reflect.get(error.data, 'uri') : undefined;
}

/** A fresh workspace (with notes.txt) and data directory, removed when the test ends. */
async function workspace(t: Test): Promise<{ cwd: string; dataDir: string }> {
  const root = await mkdtemp(join(tmpdir(), 'acpd-agent-test-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const cwd = join(root, 'ws');
  await mkdir(cwd);
  await writeFile(join(cwd, 'notes.txt'), 'first line\nsecond line\nthird line\n');
  return { cwd, dataDir: join(root, 'data') };
}

/** The session files in a data directory, sorted; none when the directory was never created. */
async function sessionFiles(dataDir: string): Promise<string[]> {
  try {
    return (await readdir(dataDir)).filter((name) => name.endsWith('.json')).sort();
  } catch (error) {
    if (error instanceof Error && 'code' in error && error.code === 'ENOENT') return [];
    throw error;
  }
}

t.test('command grammar', async (t) => {
  t.same(parseCommand('hello there'), { kind: 'say', text: 'hello there' });
  t.same(parseCommand('  /READ "a b.txt" '), { kind: 'read', path: 'a b.txt' });
  t.same(parseCommand('/write out.txt hello\nworld'), { kind: 'write', path: 'out.txt', content: 'hello\nworld' });
  t.same(parseCommand('/slow 3'), { kind: 'slow', count: 3, intervalMs: 100 });
  t.same(parseCommand('/slow 3 0'), { kind: 'slow', count: 3, intervalMs: 0 });
  t.same(parseCommand('/flood 10'), { kind: 'flood', count: 10 });
  t.equal(parseCommand('/slow').kind, 'invalid');
  t.equal(parseCommand('/slow 0').kind, 'invalid');
  t.equal(parseCommand('/flood -1').kind, 'invalid');
  t.equal(parseCommand('/write out.txt').kind, 'invalid');
  t.equal(parseCommand('/read').kind, 'invalid');
  t.equal(parseCommand('/nope').kind, 'invalid');
  t.same(parseCommand('/history'), { kind: 'history' });
  for (const text of [
    'echo: a b c',
    '',
    '   ',
    'x'.repeat(5),
    Array.from({ length: 100 }, (_, i) => `w${i}`).join(' '),
  ]) {
    const pieces = splitIntoChunks(text);
    t.equal(pieces.join(''), text, 'chunks concatenate back to the text');
    t.ok(pieces.length <= 16);
  }
  t.equal(splitIntoChunks('echo: hello world').length, 3);
});

t.test('initialize advertises load and resume', async (t) => {
  const { cwd, dataDir } = await workspace(t);
  const peer = startAgent(t, dataDir, cwd);
  const init = await initialize(peer);
  t.equal(init.protocolVersion, PROTOCOL_VERSION);
  t.equal(init.agentCapabilities?.loadSession, true);
  t.same(init.agentCapabilities?.sessionCapabilities?.resume, {});
  t.equal(init.agentInfo?.name, 'acpd-agent');
});

t.test('new session, then a plain prompt streams several chunks', async (t) => {
  const { cwd, dataDir } = await workspace(t);
  const peer = startAgent(t, dataDir, cwd);
  await initialize(peer);
  const session = await newSession(peer, cwd);
  t.match(session.sessionId, /^[0-9a-f-]{36}$/);
  t.ok(session.models.availableModels.length >= 2, 'two or more models');
  t.equal(session.models.currentModelId, 'acpd-echo');
  t.ok(session.models.availableModels.some((model) => model.modelId === 'acpd-shout'));
  t.equal(session.modes?.currentModeId, 'default');
  t.ok(session.modes?.availableModes.some((mode) => mode.id === 'yolo'));
  t.same(await sessionFiles(dataDir), [], 'nothing written before the first turn');

  const turn = await prompt(peer, session.sessionId, 'hello brave new world');
  t.equal(turn.stopReason, 'end_turn');
  t.ok(chunkCount(turn.updates) >= 3, 'several agent_message_chunks');
  t.equal(turn.text, 'echo: hello brave new world');

  // Every update the agent sent also passed the SDK's schema validation on the client side.
  await peer.delivered.until(
    () => peer.delivered.items.length === peer.wire.items.filter((e) => e.kind === 'update').length,
  );
  t.pass('all updates delivered by the SDK client');

  t.same(await sessionFiles(dataDir), [`${session.sessionId}.json`], 'the first turn wrote the file');
  const stored: unknown = JSON.parse(await readFile(join(dataDir, `${session.sessionId}.json`), 'utf8'));
  t.match(stored, {
    sessionId: session.sessionId,
    cwd,
    currentModelId: 'acpd-echo',
    currentModeId: 'default',
    history: [
      { sessionUpdate: 'user_message_chunk', content: { type: 'text', text: 'hello brave new world' } },
      { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 'echo: hello brave new world' } },
    ],
  });

  const help = await prompt(peer, session.sessionId, '/help');
  t.match(help.text, /\/read <path>/);
  t.match(help.text, /\/write <path>/);
});

t.test('/read goes through fs/read_text_file', async (t) => {
  const { cwd, dataDir } = await workspace(t);
  const peer = startAgent(t, dataDir, cwd);
  await initialize(peer);
  const { sessionId } = await newSession(peer, cwd);

  const turn = await prompt(peer, sessionId, '/read notes.txt');
  t.equal(turn.stopReason, 'end_turn');
  t.same(peer.reads, [join(cwd, 'notes.txt')], 'absolute path, resolved against the session cwd');
  const [call, done] = turn.updates.filter(
    (u) => u.sessionUpdate === 'tool_call' || u.sessionUpdate === 'tool_call_update',
  );
  t.match(call, {
    sessionUpdate: 'tool_call',
    kind: 'read',
    status: 'in_progress',
    locations: [{ path: join(cwd, 'notes.txt') }],
  });
  t.match(done, { sessionUpdate: 'tool_call_update', status: 'completed' });
  t.equal(turn.text, 'first line\nsecond line\nthird line\n');
  t.ok(chunkCount(turn.updates) >= 2);

  const missing = await prompt(peer, sessionId, '/read missing.txt');
  t.equal(missing.stopReason, 'end_turn');
  t.match(
    missing.updates.find((u) => u.sessionUpdate === 'tool_call_update'),
    { status: 'failed' },
  );
  t.match(missing.text, /^Could not read missing\.txt: /);
});

t.test('/write asks permission: allow writes, reject does not', async (t) => {
  const { cwd, dataDir } = await workspace(t);
  const peer = startAgent(t, dataDir, cwd);
  await initialize(peer);
  const { sessionId } = await newSession(peer, cwd);
  const target = join(cwd, 'out.txt');

  peer.setPermissionAnswer(allow);
  const allowed = await prompt(peer, sessionId, '/write out.txt hello file');
  t.equal(allowed.stopReason, 'end_turn');
  t.equal(await readFile(target, 'utf8'), 'hello file');
  const asked = peer.permissions.items[0];
  t.match(asked?.request, {
    sessionId,
    toolCall: { kind: 'edit', locations: [{ path: target }] },
    options: [
      { optionId: 'allow', name: 'Allow', kind: 'allow_once' },
      { optionId: 'reject', name: 'Reject', kind: 'reject_once' },
    ],
  });
  t.match(
    allowed.updates.find((u) => u.sessionUpdate === 'tool_call'),
    { kind: 'edit', status: 'pending' },
  );
  t.match(
    allowed.updates.find((u) => u.sessionUpdate === 'tool_call_update'),
    { status: 'completed' },
  );
  t.equal(allowed.text, 'wrote 10 bytes to out.txt\n');

  peer.setPermissionAnswer(reject);
  const rejected = await prompt(peer, sessionId, '/write out.txt overwritten');
  t.equal(rejected.stopReason, 'end_turn');
  t.equal(peer.permissions.items.length, 2);
  t.equal(await readFile(target, 'utf8'), 'hello file', 'file untouched');
  t.match(
    rejected.updates.find((u) => u.sessionUpdate === 'tool_call_update'),
    { status: 'failed' },
  );
  t.match(rejected.text, /^Permission denied/);

  // yolo mode skips the question.
  await peer.connection.agent.request('session/set_mode', { sessionId, modeId: 'yolo' });
  const yolo = await prompt(peer, sessionId, '/write out.txt no questions');
  t.equal(yolo.stopReason, 'end_turn');
  t.equal(peer.permissions.items.length, 2, 'no new permission request');
  t.equal(await readFile(target, 'utf8'), 'no questions');
  const badMode = await rpcError(t, peer.connection.agent.request('session/set_mode', { sessionId, modeId: 'nope' }));
  t.equal(badMode.code, -32602);
});

t.test('cancel ends a slow reply and a pending permission with cancelled', async (t) => {
  const { cwd, dataDir } = await workspace(t);
  const peer = startAgent(t, dataDir, cwd);
  await initialize(peer);
  const { sessionId } = await newSession(peer, cwd);

  const start = peer.wire.items.length;
  const slow = peer.connection.agent.request('session/prompt', {
    sessionId,
    prompt: [{ type: 'text', text: '/slow 1000 20' }],
  });
  await peer.wire.waitFor(
    (entry) => entry.kind === 'update' && entry.notification.update.sessionUpdate === 'agent_message_chunk',
  );
  await peer.connection.agent.notify('session/cancel', { sessionId });
  t.equal((await slow).stopReason, 'cancelled');
  const streamed = chunkCount(updatesOf(peer.wire.items.slice(start), sessionId));
  t.ok(streamed >= 1 && streamed < 1000, `stopped early (${streamed} chunks)`);

  // The session is usable again after a cancel.
  t.equal((await prompt(peer, sessionId, 'still there?')).text, 'echo: still there?');

  // A cancel while the permission question is open: the agent stops waiting and asks the client
  // to cancel the question ($/cancel_request aborts the handler's signal).
  peer.setPermissionAnswer(async ({ signal }) => {
    if (!signal.aborted)
      await new Promise((resolve) => {
        signal.addEventListener('abort', resolve, { once: true });
      });
    return { outcome: { outcome: 'cancelled' } };
  });
  const writing = peer.connection.agent.request('session/prompt', {
    sessionId,
    prompt: [{ type: 'text', text: '/write never.txt nope' }],
  });
  const call = await peer.permissions.waitFor(() => true);
  await peer.connection.agent.notify('session/cancel', { sessionId });
  t.equal((await writing).stopReason, 'cancelled');
  await peer.permissions.until(() => call.signal.aborted);
  t.pass('the permission request was cancelled on the client too');
  await t.rejects(readFile(join(cwd, 'never.txt'), 'utf8'), 'nothing written');
});

t.test('set_model switches the answer; bad ids are errors', async (t) => {
  const { cwd, dataDir } = await workspace(t);
  const peer = startAgent(t, dataDir, cwd);
  await initialize(peer);
  const { sessionId } = await newSession(peer, cwd);

  t.same(await peer.connection.agent.request('session/set_model', { sessionId, modelId: 'acpd-shout' }), {});
  t.equal((await prompt(peer, sessionId, 'quiet please')).text, 'ECHO: QUIET PLEASE');

  const badModel = await rpcError(
    t,
    peer.connection.agent.request('session/set_model', { sessionId, modelId: 'gpt-nope' }),
  );
  t.equal(badModel.code, -32602, 'invalid params');
  const badSession = await rpcError(
    t,
    peer.connection.agent.request('session/set_model', { sessionId: 'no-such-session', modelId: 'acpd-echo' }),
  );
  t.equal(badSession.code, -32002);
  t.equal(errorUri(badSession), 'session:no-such-session');
  const unknownMethod = await rpcError(t, peer.connection.agent.request('_vendor/thing', {}));
  t.equal(unknownMethod.code, -32601);
  await peer.connection.agent.notify('_vendor/ping', {});
  t.equal((await prompt(peer, sessionId, 'alive')).text, 'ECHO: ALIVE', 'unknown notification ignored');
});

t.test('sessions survive a restart: load replays, resume does not', async (t) => {
  const { cwd, dataDir } = await workspace(t);
  const first = startAgent(t, dataDir, cwd);
  await initialize(first);
  const { sessionId } = await newSession(first, cwd);
  const quiet = await newSession(first, cwd);
  // A model chosen for a session that never gets a turn is not worth a file either.
  const tuned = await newSession(first, cwd);
  await first.connection.agent.request('session/set_model', { sessionId: tuned.sessionId, modelId: 'acpd-shout' });
  await first.connection.agent.request('session/set_mode', { sessionId: tuned.sessionId, modeId: 'yolo' });
  t.same(
    (await first.connection.agent.request<ResumeSessionResult>('session/resume', { sessionId: quiet.sessionId, cwd }))
      .models.currentModelId,
    'acpd-echo',
    'an unprompted session can be resumed while its agent runs',
  );
  await prompt(first, sessionId, 'one');
  await prompt(first, sessionId, '/read notes.txt');
  await first.connection.agent.request('session/set_model', { sessionId, modelId: 'acpd-shout' });
  await prompt(first, sessionId, 'three');
  first.child.kill('SIGTERM');
  t.equal(await first.exited, 0, 'clean exit on SIGTERM');
  t.same(await sessionFiles(dataDir), [`${sessionId}.json`], 'only the prompted session has a file');

  const second = startAgent(t, dataDir, cwd);
  await initialize(second);
  const before = second.wire.items.length;
  const loaded = await second.connection.agent.request<LoadSessionResult>('session/load', {
    sessionId,
    cwd,
    mcpServers: [],
  });
  const after = second.wire.items.slice(before);
  const responseAt = after.findIndex((entry) => entry.kind === 'response');
  t.equal(responseAt, after.length - 1, 'the response is the last thing of the load');
  const replayed = updatesOf(after.slice(0, responseAt), sessionId);
  t.same(
    replayed
      .filter((u) => u.sessionUpdate === 'user_message_chunk')
      .map((u) => (u.sessionUpdate === 'user_message_chunk' && u.content.type === 'text' ? u.content.text : '')),
    ['one', '/read notes.txt', 'three'],
    'every user message, in order, before the response',
  );
  t.equal(agentText(replayed), 'echo: onefirst line\nsecond line\nthird line\nECHO: THREE');
  t.ok(replayed.some((u) => u.sessionUpdate === 'tool_call' && u.kind === 'read'));
  t.ok(replayed.some((u) => u.sessionUpdate === 'tool_call_update' && u.status === 'completed'));
  t.equal(loaded.models.currentModelId, 'acpd-shout', 'model choice persisted');
  t.equal(loaded.modes?.currentModeId, 'default');

  const history = await prompt(second, sessionId, '/history');
  t.match(history.text, /^This session has 3 earlier turns stored\./);

  // Sessions that never had a turn died with their agent: unknown, as an id never seen.
  for (const gone of [quiet.sessionId, tuned.sessionId]) {
    const load = await rpcError(
      t,
      second.connection.agent.request('session/load', { sessionId: gone, cwd, mcpServers: [] }),
    );
    t.equal(load.code, -32002, 'an unprompted session cannot be loaded after a restart');
    t.equal(errorUri(load), `session:${gone}`);
    const resume = await rpcError(t, second.connection.agent.request('session/resume', { sessionId: gone, cwd }));
    t.equal(resume.code, -32002, 'nor resumed');
  }

  // Resume never replays.
  const resumeStart = second.wire.items.length;
  const resumeAgain = await second.connection.agent.request<ResumeSessionResult>('session/resume', { sessionId, cwd });
  t.equal(resumeAgain.models.currentModelId, 'acpd-shout');
  const sinceResume = second.wire.items
    .slice(resumeStart)
    .flatMap((entry) => (entry.kind === 'update' ? [entry.notification.update.sessionUpdate] : []));
  t.notOk(
    sinceResume.some((kind) => kind !== 'available_commands_update'),
    'no history replayed by resume',
  );
  t.equal((await prompt(second, sessionId, 'after resume')).text, 'ECHO: AFTER RESUME');
});

t.test('unknown or unsafe session ids are resource-not-found', async (t) => {
  const { cwd, dataDir } = await workspace(t);
  const peer = startAgent(t, dataDir, cwd);
  await initialize(peer);
  for (const id of ['8a1f0b9e-0000-4000-8000-000000000000', '../../etc/passwd', '']) {
    const load = await rpcError(
      t,
      peer.connection.agent.request('session/load', { sessionId: id, cwd, mcpServers: [] }),
    );
    t.equal(load.code, -32002, `load ${JSON.stringify(id)}`);
    t.equal(errorUri(load), `session:${id}`);
    const resume = await rpcError(t, peer.connection.agent.request('session/resume', { sessionId: id, cwd }));
    t.equal(resume.code, -32002, `resume ${JSON.stringify(id)}`);
    t.equal(errorUri(resume), `session:${id}`);
  }
  const promptError = await rpcError(
    t,
    peer.connection.agent.request('session/prompt', { sessionId: 'ghost', prompt: [{ type: 'text', text: 'hi' }] }),
  );
  t.equal(promptError.code, -32002);
});

t.test('/flood streams n chunks; stdin EOF ends the agent', async (t) => {
  const { cwd, dataDir } = await workspace(t);
  const peer = startAgent(t, dataDir, cwd);
  await initialize(peer);
  const { sessionId } = await newSession(peer, cwd);
  const flood = await prompt(peer, sessionId, '/flood 2000');
  t.equal(flood.stopReason, 'end_turn');
  t.equal(chunkCount(flood.updates), 2000);
  t.ok(flood.text.endsWith('flood 2000/2000\n'));

  peer.child.stdin?.end();
  t.equal(await peer.exited, 0, 'clean exit on end of input');
  const stored: unknown = JSON.parse(await readFile(join(dataDir, `${sessionId}.json`), 'utf8'));
  t.match(stored, { history: [{ sessionUpdate: 'user_message_chunk' }, { sessionUpdate: 'agent_message_chunk' }] });
});

t.test('SIGTERM during a turn answers cancelled, persists it and exits 0', async (t) => {
  const { cwd, dataDir } = await workspace(t);
  const peer = startAgent(t, dataDir, cwd);
  await initialize(peer);
  const { sessionId } = await newSession(peer, cwd);
  const slow = peer.connection.agent.request('session/prompt', {
    sessionId,
    prompt: [{ type: 'text', text: '/slow 1000 20' }],
  });
  await peer.wire.waitFor(
    (entry) => entry.kind === 'update' && entry.notification.update.sessionUpdate === 'agent_message_chunk',
  );
  peer.child.kill('SIGTERM');
  t.equal((await slow).stopReason, 'cancelled');
  t.equal(await peer.exited, 0);
  const stored: unknown = JSON.parse(await readFile(join(dataDir, `${sessionId}.json`), 'utf8'));
  t.match(stored, {
    history: [
      { sessionUpdate: 'user_message_chunk', content: { text: '/slow 1000 20' } },
      { sessionUpdate: 'agent_message_chunk', content: { text: /^slow 1\/1000\n/ } },
    ],
  });
});

t.test('session/list and session/close', async (t) => {
  const { cwd, dataDir } = await workspace(t);
  const peer = startAgent(t, dataDir, cwd);
  await initialize(peer);
  const a = await newSession(peer, cwd);
  const b = await newSession(peer, join(cwd, 'elsewhere'));
  const unprompted = await newSession(peer, cwd);
  await prompt(peer, a.sessionId, 'first words');
  await prompt(peer, b.sessionId, 'other words');
  const listed = await peer.connection.agent.request('session/list', { cwd });
  t.same(
    listed.sessions.map((s) => s.sessionId),
    [a.sessionId],
    'filtered by cwd',
  );
  t.equal(listed.sessions[0]?.title, 'first words');
  const all = await peer.connection.agent.request('session/list', {});
  t.same(
    new Set(all.sessions.map((s) => s.sessionId)),
    new Set([a.sessionId, b.sessionId]),
    `the session without a turn (${unprompted.sessionId}) is not listed: it has no file`,
  );

  t.same(await peer.connection.agent.request('session/close', { sessionId: a.sessionId }), {});
  // A closed session stays on disk: the next request opens it again with its history.
  t.match((await prompt(peer, a.sessionId, '/history')).text, /^This session has 1 earlier turn stored\./);
});
