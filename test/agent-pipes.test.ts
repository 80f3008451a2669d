// The embedded agent when its pipes break: the logger survives a dead stderr, and an agent whose daemon
// is killed with SIGKILL (stdin at EOF, stdout and stderr without a reader) still saves the turn it was
// running, leaves no temporary file behind, and the session loads again on a fresh daemon.
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import type { Test } from 'tap';
import { request } from 'undici';
import { createLogger } from '../src/agent/logger.js';
import { SessionStore } from '../src/agent/store.js';
import type { SessionRecord } from '../src/agent/store.js';
import { isAlive } from '../harness/proc-table.js';
import { until, within } from '../harness/wait.js';
import { tempDir } from './support/app.js';

const SERVER = fileURLToPath(new URL('../../dist/server.js', import.meta.url));
const AGENT_MAIN = fileURLToPath(new URL('../../dist/agent/main.js', import.meta.url));
/** The start-up line, on stderr. */
const LISTENING = /^acpd listening on (http:\/\/\S+) /m;
const PROMPT = '/slow 1000 50';

// ---- logger ------------------------------------------------------------------------------------------

/** A stream whose reader is gone: every write fails with EPIPE, as a pipe does once its reader is dead. */
class BrokenPipe extends Writable {
  writes = 0;

  override _write(_chunk: unknown, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.writes++;
    callback(Object.assign(new Error('write EPIPE'), { code: 'EPIPE', errno: -32, syscall: 'write' }));
  }
}

t.test('the logger survives a stream that fails with EPIPE and drops later lines', async (t) => {
  const stream = new BrokenPipe();
  const uncaught: unknown[] = [];
  const onUncaught = (error: unknown): void => {
    uncaught.push(error);
  };
  // Only to observe what would otherwise crash this test process; the logger must not need it.
  process.on('uncaughtException', onUncaught);
  t.teardown(() => {
    process.off('uncaughtException', onUncaught);
  });

  const log = createLogger(stream, 'debug');
  t.doesNotThrow(() => {
    log.info('first line');
  });
  await new Promise<void>((resolve) => {
    if (stream.destroyed) resolve();
    else stream.once('close', resolve);
  });
  t.doesNotThrow(() => {
    log.error('after the pipe broke', { detail: 1 });
    log.debug('and another');
  });
  t.equal(stream.writes, 1, 'nothing is written to a stream that already failed');
  t.same(uncaught, [], 'no unhandled error event');
});

t.test('the logger drops lines given to a stream that is already destroyed', async (t) => {
  const stream = new BrokenPipe();
  stream.destroy();
  const log = createLogger(stream);
  t.doesNotThrow(() => {
    log.warn('nobody reads this');
  });
  t.equal(stream.writes, 0);
});

// ---- the store's temporary files --------------------------------------------------------------------

function record(sessionId: string): SessionRecord {
  const now = new Date().toISOString();
  return {
    sessionId,
    cwd: '/',
    createdAt: now,
    updatedAt: now,
    currentModelId: 'acpd-echo',
    currentModeId: 'default',
    history: [],
  };
}

function tempName(sessionId: string, pid: number): string {
  return `${sessionId}.json.${pid}.${randomUUID()}.tmp`;
}

t.test('a starting store removes the temporary files of dead writers, and only those', async (t) => {
  const dir = tempDir(t, 'acpd-store-');
  // A pid that was just used and has exited.
  const dead = spawnSync(process.execPath, ['-e', '']).pid;
  const stale = tempName('a', dead);
  const live = tempName('b', process.ppid);
  const foreign = 'notes.txt.tmp';
  for (const name of [stale, live, foreign]) writeFileSync(join(dir, name), '');

  const listed = await new SessionStore(dir).list();
  t.same(listed, []);
  t.same(readdirSync(dir).sort(), [foreign, live].sort(), 'the file of the dead writer is gone');

  // The first write sweeps as well.
  const again = tempName('c', dead);
  writeFileSync(join(dir, again), '');
  await new SessionStore(dir).write(record('c'));
  t.notOk(existsSync(join(dir, again)));
  t.ok(existsSync(join(dir, 'c.json')));
});

t.test('a failed write removes its temporary file', async (t) => {
  const dir = tempDir(t, 'acpd-store-');
  // A directory where the session file should be: the rename fails.
  mkdirSync(join(dir, 'x.json'));
  const store = new SessionStore(dir);
  await t.rejects(store.write(record('x')));
  t.same(
    readdirSync(dir).filter((name) => name.endsWith('.tmp')),
    [],
  );
});

t.test('close waits for queued writes and refuses later ones', async (t) => {
  const dir = tempDir(t, 'acpd-store-');
  const store = new SessionStore(dir);
  const pending = store.write(record('y'));
  await store.close();
  t.ok(existsSync(join(dir, 'y.json')), 'the queued write landed before close settled');
  await pending;
  await t.rejects(store.write(record('z')), /closed/);
  t.same(readdirSync(dir), ['y.json']);
});

// ---- an agent whose stderr has no reader -------------------------------------------------------------

interface RawAgent {
  child: ChildProcess & { stdin: Writable };
  exited: Promise<number | null>;
  /** Sends a request and waits for its answer. */
  rpc: (id: number, method: string, params: unknown) => Promise<unknown>;
  /** Sends a request without waiting. */
  send: (id: number, method: string, params: unknown) => void;
  /** Every agent text chunk written so far. */
  text: () => string;
  answers: Map<number, unknown>;
}

/** The agent alone, driven with raw JSON-RPC lines over its stdin and stdout. */
function rawAgent(t: Test, dataDir: string): RawAgent {
  const child = spawn(process.execPath, [AGENT_MAIN, '--data-dir', dataDir, '--log-level', 'debug'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      resolve(code);
    });
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  child.stdin.on('error', () => {});
  const answers = new Map<number, unknown>();
  let text = '';
  let buffer = '';
  child.stdout.setEncoding('utf8').on('data', (piece: string) => {
    buffer += piece;
    let end: number;
    while ((end = buffer.indexOf('\n')) !== -1) {
      const message: unknown = JSON.parse(buffer.slice(0, end));
      buffer = buffer.slice(end + 1);
      if (!isObject(message)) continue;
      if (typeof message.id === 'number') answers.set(message.id, message.result);
      if (message.method === 'session/update' && isObject(message.params)) {
        text += agentUpdateText(message.params.update);
      }
    }
  });
  const send = (id: number, method: string, params: unknown): void => {
    child.stdin.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n');
  };
  const rpc = async (id: number, method: string, params: unknown): Promise<unknown> => {
    send(id, method, params);
    await until(() => answers.has(id) || child.exitCode !== null, `the answer to ${method}`);
    if (!answers.has(id)) throw new Error(`the agent exited with ${String(child.exitCode)} before answering ${method}`);
    return answers.get(id);
  };
  return { child, exited, rpc, send, text: () => text, answers };
}

async function openSession(agent: RawAgent, cwd: string): Promise<string> {
  await agent.rpc(1, 'initialize', { protocolVersion: 1, clientCapabilities: {} });
  const created = await agent.rpc(2, 'session/new', { cwd, mcpServers: [] });
  return isObject(created) ? String(created.sessionId) : '';
}

function textPrompt(sessionId: string, text: string): unknown {
  return { sessionId, prompt: [{ type: 'text', text }] };
}

t.test('an agent whose stderr reader is gone keeps serving, then stops cleanly at end of input', async (t) => {
  const dataDir = join(tempDir(t, 'acpd-data-'), 'sessions');
  const agent = rawAgent(t, dataDir);
  // Nobody reads stderr from now on: the agent's next log line meets EPIPE.
  agent.child.stderr?.destroy();
  const sessionId = await openSession(agent, dataDir);
  t.match(await agent.rpc(3, 'session/prompt', textPrompt(sessionId, 'still here')), { stopReason: 'end_turn' });

  agent.child.stdin.end();
  t.equal(await within(agent.exited, 'the agent to exit'), 0, 'exit code 0');
  t.match(JSON.parse(readFileSync(join(dataDir, `${sessionId}.json`), 'utf8')), {
    history: [{ content: { text: 'still here' } }, { content: { text: 'echo: still here' } }],
  });
});

t.test('a stop also cancels the prompt queued behind the running one, and saves both', async (t) => {
  const dataDir = join(tempDir(t, 'acpd-data-'), 'sessions');
  const agent = rawAgent(t, dataDir);
  const sessionId = await openSession(agent, dataDir);
  agent.send(3, 'session/prompt', textPrompt(sessionId, '/slow 1000 20'));
  agent.send(4, 'session/prompt', textPrompt(sessionId, '/slow 1000 20'));
  await until(() => agent.text().includes('slow 1/1000'), 'the first turn to stream');

  agent.child.kill('SIGTERM');
  t.equal(await within(agent.exited, 'the agent to exit'), 0, 'exit code 0');
  t.same([agent.answers.get(3), agent.answers.get(4)], [{ stopReason: 'cancelled' }, { stopReason: 'cancelled' }]);
  t.equal(agent.text().match(/slow 1\/1000/g)?.length, 1, 'the queued turn streamed nothing');
  const stored: unknown = JSON.parse(readFileSync(join(dataDir, `${sessionId}.json`), 'utf8'));
  t.match(stored, {
    history: [
      { sessionUpdate: 'user_message_chunk', content: { text: '/slow 1000 20' } },
      { sessionUpdate: 'agent_message_chunk', content: { text: /^slow 1\/1000\n/ } },
      { sessionUpdate: 'user_message_chunk', content: { text: '/slow 1000 20' } },
    ],
  });
  t.equal(isObject(stored) && Array.isArray(stored.history) ? stored.history.length : 0, 3);
});

// ---- the daemon killed with SIGKILL under a running turn --------------------------------------------

interface Daemon {
  child: ChildProcess;
  pid: number;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<void>;
}

function cleanEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !key.startsWith('ACPD_')) env[key] = value;
  }
  return env;
}

function startDaemon(t: Test, workspace: string, dataDir: string): Daemon {
  const args = ['--port', '0', '--workspace', workspace, '--data-dir', dataDir, '--log-level', 'debug'];
  const child = spawn(process.execPath, [SERVER, ...args], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error('could not start the daemon');
  let stdout = '';
  child.stdout?.setEncoding('utf8').on('data', (text: string) => {
    stdout += text;
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (text: string) => {
    stderr += text;
  });
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      resolve();
    });
  });
  // A daemon still running at the end is stopped the orderly way, so that it stops its agent too.
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    await within(exited, 'the daemon to stop').catch(() => {
      child.kill('SIGKILL');
    });
  });
  return { child, pid: child.pid, stdout: () => stdout, stderr: () => stderr, exited };
}

async function baseUrlOf(daemon: Daemon): Promise<string> {
  let url: string | undefined;
  await until(() => {
    url = LISTENING.exec(daemon.stderr())?.[1];
    if (daemon.child.exitCode !== null) {
      throw new Error(`the daemon exited early:\n${daemon.stderr()}\n${daemon.stdout()}`);
    }
    return url !== undefined;
  }, 'the daemon to listen');
  if (url === undefined) throw new Error('unreachable');
  return url;
}

/** The pids of the agents the daemon reports in its JSON log. */
function agentPids(daemon: Daemon): number[] {
  const pids: number[] = [];
  for (const line of daemon.stdout().split('\n')) {
    if (!line.startsWith('{')) continue;
    let entry: unknown;
    try {
      entry = JSON.parse(line);
    } catch {
      continue;
    }
    if (!isObject(entry) || entry.msg !== 'agent spawned') continue;
    if (typeof entry.agentPid === 'number') pids.push(entry.agentPid);
  }
  return pids;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

async function post(baseUrl: string, path: string, body: unknown): Promise<{ status: number; body: unknown }> {
  const res = await request(`${baseUrl}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: text === '' ? undefined : (JSON.parse(text) as unknown) };
}

/** The agent text carried by the session_update frames of an SSE stream, read as it arrives. */
interface AgentText {
  text: () => string;
}

async function followAgentText(t: Test, baseUrl: string, sessionId: string): Promise<AgentText> {
  const ac = new AbortController();
  t.teardown(() => {
    ac.abort();
  });
  const res = await request(`${baseUrl}/session/${sessionId}/events`, {
    headers: { accept: 'text/event-stream', 'last-event-id': '0' },
    signal: ac.signal,
  });
  if (res.statusCode !== 200) throw new Error(`GET events → ${res.statusCode}`);
  let buffer = '';
  let text = '';
  res.body.setEncoding('utf8');
  res.body.on('data', (piece: string) => {
    buffer += piece;
    let end: number;
    while ((end = buffer.indexOf('\n\n')) !== -1) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of frame.split('\n')) {
        if (line.startsWith('data: ')) text += agentChunkText(JSON.parse(line.slice(6)) as unknown);
      }
    }
  });
  // The daemon going away ends the stream; that is expected here.
  res.body.on('error', () => {});
  return { text: () => text };
}

function agentChunkText(envelope: unknown): string {
  if (!isObject(envelope) || envelope.type !== 'session_update' || !isObject(envelope.data)) return '';
  const update = envelope.data.update;
  if (!isObject(update) || update.sessionUpdate !== 'agent_message_chunk' || !isObject(update.content)) return '';
  return typeof update.content.text === 'string' ? update.content.text : '';
}

t.test('SIGKILL of the daemon mid-turn: the agent saves the partial turn and leaves no temp file', async (t) => {
  const workspace = tempDir(t, 'acpd-ws-');
  const dataDir = join(tempDir(t, 'acpd-data-'), 'data');

  const first = startDaemon(t, workspace, dataDir);
  const firstUrl = await baseUrlOf(first);
  const created = await post(firstUrl, '/session', {});
  t.equal(created.status, 200);
  const sessionId = isObject(created.body) ? String(created.body.sessionId) : '';
  await until(() => agentPids(first).length > 0, 'the agent spawned log line');
  const agents = agentPids(first);
  // Agents outlive a SIGKILLed daemon when they misbehave: never leave one running after the test.
  t.teardown(() => {
    for (const pid of agents) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  });

  const live = await followAgentText(t, firstUrl, sessionId);
  // The prompt never answers: its daemon dies under it.
  void post(firstUrl, `/session/${sessionId}/prompt`, { prompt: [{ type: 'text', text: PROMPT }] }).catch(
    () => undefined,
  );
  await until(() => live.text().includes('slow 2/1000'), 'two chunks over SSE');

  process.kill(first.pid, 'SIGKILL');
  await within(first.exited, 'the daemon to die');
  await until(() => agents.every((pid) => !isAlive(pid)), 'the agent to exit after its daemon died');

  // The daemon gives the embedded agent `<data-dir>/sessions` as its own data directory.
  const sessionsDir = join(dataDir, 'sessions');
  const file = join(sessionsDir, `${sessionId}.json`);
  t.ok(existsSync(file), 'the session file exists');
  const stored: unknown = JSON.parse(readFileSync(file, 'utf8'));
  t.match(stored, {
    sessionId,
    history: [
      { sessionUpdate: 'user_message_chunk', content: { type: 'text', text: PROMPT } },
      { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: /^slow 1\/1000\nslow 2\/1000\n/ } },
    ],
  });
  const saved = isObject(stored) && Array.isArray(stored.history) ? stored.history.map(agentUpdateText).join('') : '';
  t.ok(saved.startsWith(live.text()), 'every chunk a client saw is saved');
  t.notOk(saved.includes('slow 1000/1000'), 'the turn was interrupted, not finished');
  t.same(
    readdirSync(sessionsDir).filter((name) => name.endsWith('.tmp')),
    [],
    'no temporary file left',
  );

  const second = startDaemon(t, workspace, dataDir);
  const secondUrl = await baseUrlOf(second);
  const loaded = await post(secondUrl, `/session/${sessionId}/load`, {});
  t.equal(loaded.status, 200);
  t.match(loaded.body, { sessionId });
  const replay = await followAgentText(t, secondUrl, sessionId);
  await until(() => replay.text().includes('slow 2/1000'), 'the partial turn replayed');
  t.ok(replay.text().startsWith('slow 1/1000\nslow 2/1000\n'), 'the replay holds the partial text');
});

function agentUpdateText(update: unknown): string {
  if (!isObject(update) || update.sessionUpdate !== 'agent_message_chunk' || !isObject(update.content)) return '';
  return typeof update.content.text === 'string' ? update.content.text : '';
}
