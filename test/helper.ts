/**
 * Test helpers: build the real app through the same buildApp(config) as
 * production, listen on 127.0.0.1, and read SSE the way a client does.
 * Cleanup always goes through t.teardown.
 */
import { mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { request } from 'undici';
import { buildApp } from '../src/app.js';
import { loadConfig, type Config } from '../src/config.js';

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
}

export function testConfig(t: Teardown, opts: TestOptions = {}): Config {
  const workspace = opts.workspace ?? tempDir(t, 'acpd-ws-');
  const dataDir = opts.dataDir ?? path.join(workspace, '.acpd');
  const config = loadConfig({
    // Load shedding is off unless a test turns it on: a busy CI machine must not turn answers into 503s.
    argv: [
      '--port', '0', '--workspace', workspace, '--data-dir', dataDir, '--log-level', 'silent',
      '--max-event-loop-delay-ms', '0',
      // app.close() in a test cancels running prompts at once unless a test asks for a drain.
      '--drain-timeout-ms', '0',
      // No sessions created behind a test's back (the steer agent counts session/new calls).
      '--warm-sessions', '0',
      ...(opts.args ?? []),
    ],
    env: opts.env ?? { PATH: process.env.PATH ?? '' },
    cwd: workspace,
  });
  return { ...config, ...(opts.agent ? { agent: opts.agent } : {}), ...opts.config };
}

/** The app, built but not listening: for `app.inject`. */
export async function buildTestApp(t: Teardown, opts: TestOptions = {}): Promise<FastifyInstance> {
  const app = await buildApp(testConfig(t, opts));
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
  const app = await buildApp(config);
  t.teardown(() => app.close());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as AddressInfo).port;
  const headers: Record<string, string> = config.token ? { authorization: `Bearer ${config.token}` } : {};
  return { app, config, baseUrl: `http://127.0.0.1:${port}`, port, headers };
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
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`expected an object, got ${JSON.stringify(v)}`);
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
          else reject(new Error(`stream ended before ${label}; got ${frames.map((f) => f.event ?? f.comment ?? 'retry').join(',')}`));
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
