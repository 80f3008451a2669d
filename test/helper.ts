/**
 * Test helpers: build the real app through the same buildApp(config) as
 * production, listen on 127.0.0.1, and read SSE the way a client does.
 * Cleanup always goes through t.teardown.
 */
import { mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { SessionUpdate } from '@agentclientprotocol/sdk';
import type { FastifyInstance } from 'fastify';
import { request } from 'undici';
import { buildApp, type BuildOptions } from '../src/app.js';
import { loadConfig, type Config } from '../src/config.js';
import { Steer } from './fixtures/steer.js';

/** What a tap test object offers that the helpers use. */
export interface Teardown {
  teardown(fn: () => unknown): void;
}

export function tempDir(t: Teardown, prefix = 'acpd-test-'): string {
  const dir = realpathSync(mkdtempSync(path.join(os.tmpdir(), prefix)));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface TestOptions {
  /** Agent argv; the embedded agent when absent. */
  agent?: string[];
  workspace?: string;
  dataDir?: string;
  /** Extra CLI flags, parsed by the real config loader. */
  args?: string[];
  env?: NodeJS.ProcessEnv;
  config?: Partial<Config>;
  /** Where the app writes its log lines (JSON). testConfig passes `--log-level silent`: raise it in `args`. */
  logStream?: BuildOptions['logStream'];
}

export function testConfig(t: Teardown, opts: TestOptions = {}): Config {
  const workspace = opts.workspace ?? tempDir(t, 'acpd-ws-');
  const dataDir = opts.dataDir ?? path.join(workspace, '.acpd');
  const config = loadConfig({
    // Load shedding is off unless a test turns it on: a busy CI machine must not turn answers into 503s.
    argv: [
      '--port',
      '0',
      '--workspace',
      workspace,
      '--data-dir',
      dataDir,
      '--log-level',
      'silent',
      '--max-event-loop-delay-ms',
      '0',
      // app.close() in a test cancels running prompts at once unless a test asks for a drain.
      '--drain-timeout-ms',
      '0',
      // No sessions created behind a test's back (the steer agent counts session/new calls).
      '--warm-sessions',
      '0',
      ...(opts.args ?? []),
    ],
    env: opts.env ?? { PATH: process.env.PATH ?? '' },
    cwd: workspace,
  });
  return { ...config, ...(opts.agent ? { agent: opts.agent } : {}), ...opts.config };
}

/** The app, built but not listening: for `app.inject`. */
export async function buildTestApp(t: Teardown, opts: TestOptions = {}): Promise<FastifyInstance> {
  const app = await buildApp(testConfig(t, opts), { logStream: opts.logStream });
  t.teardown(() => app.close());
  return app;
}

export interface TestDaemon {
  app: FastifyInstance;
  config: Config;
  baseUrl: string;
  port: number;
  /** Default headers every request needs (Host is right by construction; a token when set). */
  headers: Record<string, string>;
}

/** The app listening on 127.0.0.1 with an ephemeral port. */
export async function startDaemon(t: Teardown, opts: TestOptions = {}): Promise<TestDaemon> {
  const config = testConfig(t, opts);
  const app = await buildApp(config, { logStream: opts.logStream });
  t.teardown(() => app.close());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as AddressInfo).port;
  const headers: Record<string, string> = config.token ? { authorization: `Bearer ${config.token}` } : {};
  return { app, config, baseUrl: `http://127.0.0.1:${port}`, port, headers };
}

export interface SteeredDaemon {
  d: TestDaemon;
  steer: Steer;
}

/**
 * A daemon whose agent is the steerable one, holding `hold` from the first request on. The controller's
 * teardown is registered first: tap runs teardowns last-in first-out, so the app closes before it.
 */
export async function steerDaemon(
  t: Teardown,
  opts: Omit<TestOptions, 'agent'> & { hold?: string[] } = {},
): Promise<SteeredDaemon> {
  const { hold, ...rest } = opts;
  const steer = await Steer.create({ hold });
  t.teardown(() => steer.close());
  const d = await startDaemon(t, { ...rest, agent: steer.argv });
  return { d, steer };
}

export interface JsonResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

/** A real HTTP request; the body is sent as JSON when given. */
export async function call(
  d: TestDaemon,
  method: 'GET' | 'POST' | 'DELETE',
  url: string,
  body?: unknown,
  headers: Record<string, string> = {},
  signal?: AbortSignal,
): Promise<JsonResponse> {
  const res = await request(`${d.baseUrl}${url}`, {
    method,
    headers: { ...d.headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  const text = await res.body.text();
  let parsed: unknown = text;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.statusCode, headers: res.headers, body: parsed };
}

export function obj(v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new Error(`expected an object, got ${JSON.stringify(v)}`);
  return v as Record<string, unknown>;
}

export async function createSession(d: TestDaemon, body: Record<string, unknown> = {}): Promise<string> {
  const res = await call(d, 'POST', '/session', body);
  if (res.status !== 200) throw new Error(`POST /session → ${res.status} ${JSON.stringify(res.body)}`);
  return String(obj(res.body).sessionId);
}

export function textPrompt(text: string): { prompt: { type: 'text'; text: string }[] } {
  return { prompt: [{ type: 'text', text }] };
}

/** An `agent_message_chunk` update carrying `text`. */
export function chunk(text: string): SessionUpdate {
  return { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text } };
}

/** The integers from `from` to `to`, both included. */
export function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

/** The id of the newest event on a live session's bus. */
export function lastEventId(d: TestDaemon, sessionId: string): number {
  const entry = d.app.sessions.get(sessionId);
  if (!entry) throw new Error(`no live session ${sessionId}`);
  return entry.events.lastEventId;
}

// ---- waiting ----------------------------------------------------------------

/** A generous bound, so that a broken rule fails its test quickly instead of hanging it. */
export const WAIT_LIMIT_MS = 10_000;

/** Waits until `check()` holds, looking again every few milliseconds; gives up after WAIT_LIMIT_MS. */
export async function until(check: () => boolean | Promise<boolean>, label: string): Promise<void> {
  const deadline = Date.now() + WAIT_LIMIT_MS;
  for (;;) {
    const result = check();
    // A synchronous check is answered without yielding, as a plain `while (!check())` would.
    if (typeof result === 'boolean' ? result : await result) return;
    if (Date.now() > deadline) throw new Error(`gave up waiting for: ${label}`);
    await new Promise<void>((resolve) => setTimeout(resolve, 2));
  }
}

/**
 * Yields to the event loop, one turn at a time, until `cond` holds: for conditions the server reaches
 * through I/O callbacks, looked at after every turn rather than every few milliseconds.
 */
export async function spinUntil(cond: () => boolean, label: string): Promise<void> {
  for (let turns = 0; !cond(); turns++) {
    if (turns > 2_000_000) throw new Error(`gave up waiting for ${label}`);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/** `promise`, or a failure naming `label` if it has not settled within `ms` (WAIT_LIMIT_MS by default). */
export async function within<T>(promise: Promise<T>, label: string, ms = WAIT_LIMIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up waiting for: ${label} (nothing within ${ms} ms)`)), ms);
  });
  try {
    return await Promise.race([promise, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves with the rejection of `p`; fails if `p` resolves. */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/**
 * Collects the process's unhandled rejections until the test's teardown, which stops listening. With
 * `failAtTeardown`, that teardown also throws if any were collected; registered before the daemon, it
 * runs after the app closed, so rejections raised by the close count too.
 */
export function watchUnhandled(t: Teardown, opts: { failAtTeardown?: boolean } = {}): unknown[] {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason);
  };
  process.on('unhandledRejection', onUnhandled);
  t.teardown(() => {
    process.off('unhandledRejection', onUnhandled);
    if (opts.failAtTeardown && unhandled.length > 0) {
      throw new Error(`unhandled rejection(s): ${unhandled.map(String).join('; ')}`);
    }
  });
  return unhandled;
}

/** A port that was free a moment ago (for programs that cannot be told to pick one themselves). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// ---- SSE ------------------------------------------------------------------

export interface SseFrame {
  /** The frame's lines as sent. */
  raw: string;
  id?: string;
  event?: string;
  data?: string;
  comment?: string;
  retry?: string;
  /** The parsed `data:` envelope, when there is one. */
  envelope?: { id?: number; v: number; type: string; data: Record<string, unknown> };
}

export interface SseStream {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Every frame received so far. */
  frames: SseFrame[];
  /** Frames with an envelope, in order. */
  events(): NonNullable<SseFrame['envelope']>[];
  /** Resolves with the first frame (already received or future) that matches. */
  waitFor(match: (f: SseFrame) => boolean, label?: string): Promise<SseFrame>;
  /** Resolves when the server ends the stream. */
  ended: Promise<void>;
  close(): void;
}

function parseFrame(raw: string): SseFrame {
  const frame: SseFrame = { raw };
  for (const line of raw.split('\n')) {
    if (line.startsWith(':')) frame.comment = line.slice(1).trim();
    else if (line.startsWith('id: ')) frame.id = line.slice(4);
    else if (line.startsWith('event: ')) frame.event = line.slice(7);
    else if (line.startsWith('data: ')) frame.data = line.slice(6);
    else if (line.startsWith('retry: ')) frame.retry = line.slice(7);
  }
  if (frame.data !== undefined) frame.envelope = JSON.parse(frame.data) as SseFrame['envelope'];
  return frame;
}

/** Opens GET /session/:id/events and parses frames as they arrive. */
export async function openEvents(
  t: Teardown,
  d: TestDaemon,
  sessionId: string,
  opts: { lastEventId?: string | number; headers?: Record<string, string> } = {},
): Promise<SseStream> {
  const ac = new AbortController();
  const headers: Record<string, string> = { ...d.headers, accept: 'text/event-stream', ...opts.headers };
  if (opts.lastEventId !== undefined) headers['last-event-id'] = String(opts.lastEventId);
  const res = await request(`${d.baseUrl}/session/${encodeURIComponent(sessionId)}/events`, {
    headers,
    signal: ac.signal,
  });
  const frames: SseFrame[] = [];
  const waiters: { match: (f: SseFrame) => boolean; resolve: (f: SseFrame) => void }[] = [];
  let failEnded: (err: Error) => void = () => {};
  const stream: SseStream = {
    status: res.statusCode,
    headers: res.headers,
    frames,
    events: () => frames.flatMap((f) => (f.envelope ? [f.envelope] : [])),
    waitFor(match, label = 'frame') {
      const found = frames.find(match);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        waiters.push({ match, resolve });
        void stream.ended.then(() => {
          const late = frames.find(match);
          if (late) resolve(late);
          else
            reject(
              new Error(
                `stream ended before ${label}; got ${frames.map((f) => f.event ?? f.comment ?? 'retry').join(',')}`,
              ),
            );
        });
      });
    },
    ended: new Promise<void>((resolve, reject) => {
      failEnded = reject;
      res.body.on('end', () => resolve());
      res.body.on('close', () => resolve());
      res.body.on('error', () => resolve());
    }),
    close: () => ac.abort(),
  };
  void failEnded;
  t.teardown(() => ac.abort());
  if (res.statusCode !== 200) {
    const text = await res.body.text();
    frames.push({ raw: text });
    return stream;
  }
  let buf = '';
  res.body.setEncoding('utf8');
  res.body.on('data', (chunk: string) => {
    buf += chunk;
    let sep: number;
    while ((sep = buf.indexOf('\n\n')) !== -1) {
      const f = parseFrame(buf.slice(0, sep));
      buf = buf.slice(sep + 2);
      frames.push(f);
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i];
        if (w && w.match(f)) {
          waiters.splice(i, 1);
          w.resolve(f);
        }
      }
    }
  });
  return stream;
}

export function isType(type: string): (f: SseFrame) => boolean {
  return (f) => f.envelope?.type === type;
}

// ---- process table ----------------------------------------------------------

interface ProcInfo {
  pid: number;
  ppid: number;
  pgid: number;
  state: string;
}

function procs(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.push({ pid: Number(name), state: rest[0] ?? '?', ppid: Number(rest[1]), pgid: Number(rest[2]) });
    } catch {
      // the process went away while we looked
    }
  }
  return out;
}

/** Live (non-zombie) processes that are `pid` itself or belong to its process group. */
export function livingInGroup(pid: number): number[] {
  return procs()
    .filter((p) => (p.pid === pid || p.pgid === pid) && p.state !== 'Z')
    .map((p) => p.pid);
}

/** Live descendants of `pid`. */
export function livingDescendants(pid: number): number[] {
  const all = procs();
  const result: number[] = [];
  const stack = [pid];
  while (stack.length) {
    const parent = stack.pop() as number;
    for (const p of all) {
      if (p.ppid === parent && p.state !== 'Z') {
        result.push(p.pid);
        stack.push(p.pid);
      }
    }
  }
  return result;
}
