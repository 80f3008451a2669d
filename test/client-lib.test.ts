// The client library (issue 15): `acpd/client` against a real daemon on 127.0.0.1 with the steerable agent.
// The whole API in one session's life; the event iterator across a connection the daemon cut in mid-stream;
// retries of a 409 and a 503 with Retry-After and one Idempotency-Key; typed errors; and the rule that the
// library loads nothing a browser lacks.
import { readdirSync, readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { within } from '../harness/wait.js';
import {
  AcpdClient,
  AcpdError,
  PendingPromptNotFoundError,
  PermissionNotFoundError,
  RestoreInProgressError,
  SessionLimitExceededError,
  SessionNotFoundError,
  SseParser,
  UnauthorizedError,
  WorkspaceMismatchError,
  type AcpdClientOptions,
  type RetryInfo,
  type SessionEvent,
} from '../src/client/index.js';
import { parked, restore } from './restore-kit.js';
import { startDaemon, steerDaemon, tempDir, type TestDaemon } from './support/app.js';
import { gitRepo } from './support/git-repo.js';
import { openEvents } from './support/sse.js';

const TOKEN = 'client-lib-token';

/** A request as the client sent it. */
interface Sent {
  method: string;
  path: string;
  headers: Headers;
}

/**
 * A client of `d` whose requests are recorded; `before` runs before each request goes out (a test holds one
 * there until the daemon is ready for it).
 */
function clientOf(
  d: TestDaemon,
  opts: Partial<AcpdClientOptions> & { before?: (req: Sent) => Promise<void> | void } = {},
): { client: AcpdClient; sent: Sent[]; retries: RetryInfo[] } {
  const sent: Sent[] = [];
  const retries: RetryInfo[] = [];
  const { before, onRetry, ...rest } = opts;
  const client = new AcpdClient({
    baseUrl: d.baseUrl,
    token: TOKEN,
    fetch: async (input, init) => {
      const url = new URL(input instanceof Request ? input.url : String(input));
      const req = {
        method: init?.method ?? 'GET',
        path: url.pathname + url.search,
        headers: new Headers(init?.headers),
      };
      sent.push(req);
      await before?.(req);
      return await fetch(input, init);
    },
    onRetry: (info) => {
      retries.push(info);
      onRetry?.(info);
    },
    ...rest,
  });
  return { client, sent, retries };
}

/** An event iterator drained in the background: what it yielded so far, and waits on what it will yield. */
function follow(frames: AsyncGenerator<SessionEvent, void, undefined>) {
  const seen: SessionEvent[] = [];
  const waiters: { match: (f: SessionEvent) => boolean; resolve: (f: SessionEvent) => void }[] = [];
  const done = (async () => {
    for await (const frame of frames) {
      seen.push(frame);
      for (const w of waiters.filter((w) => w.match(frame))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(frame);
      }
    }
  })();
  done.catch(() => {});
  return {
    seen,
    done,
    /** The first frame, seen or to come, that matches. */
    waitFor<F extends SessionEvent>(match: (f: SessionEvent) => f is F, label: string): Promise<F> {
      const found = seen.find(match);
      if (found) return Promise.resolve(found);
      const next = new Promise<F>((resolve) => waiters.push({ match, resolve: (f) => resolve(f as F) }));
      const ended = done.then(() => {
        throw new Error(`the stream ended before ${label}`);
      });
      return within(Promise.race([next, ended]), label);
    },
  };
}

/** The text of an `agent_message_chunk` frame; undefined for any other frame. */
function agentText(f: SessionEvent): string | undefined {
  if (f.type !== 'session_update') return undefined;
  const update = f.data.update as { sessionUpdate?: string; content?: { type?: string; text?: string } };
  return update.sessionUpdate === 'agent_message_chunk' ? update.content?.text : undefined;
}

const isType =
  <K extends SessionEvent['type']>(type: K, pred: (f: Extract<SessionEvent, { type: K }>) => boolean = () => true) =>
  (f: SessionEvent): f is Extract<SessionEvent, { type: K }> =>
    f.type === type && pred(f as Extract<SessionEvent, { type: K }>);

t.test('a session through the client: create, prompts, vote, cancel, queue, model, status, close, load', async (t) => {
  const { d, steer } = await steerDaemon(t, { args: ['--token', TOKEN] });
  const { client } = clientOf(d);

  const caps = await client.capabilities();
  t.ok(caps.features.includes('non_blocking_prompt'), 'capabilities');
  t.equal((await client.health(true)).status, 'ok');

  const { sessionId, attached } = await client.createSession({ sessionScope: 'thread' });
  t.equal(attached, false);
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const opened: unknown[] = [];
  const stream = follow(client.events(sessionId, { signal: ac.signal, onOpen: (info) => opened.push(info) }));
  await stream.waitFor(isType('session_state'), 'the opening session_state');

  // Blocking: the answer is the turn's end, and the reply streamed before it.
  t.same(await client.prompt(sessionId, 'hello'), { stopReason: 'end_turn' });
  const first = await stream.waitFor(isType('turn_complete'), 'the first turn_complete');
  t.same(stream.seen.map(agentText).filter(Boolean), ['you said: ', 'hello'], 'the reply, streamed');

  // Non-blocking: 202 with the prompt's id; its turn_complete says the same id.
  const admitted = await client.submitPrompt(sessionId, 'again');
  t.match(admitted, { promptId: String, lastEventId: Number, eventEpoch: String });
  t.not(admitted.promptId, first.data.promptId);
  await stream.waitFor(
    isType('turn_complete', (f) => f.data.promptId === admitted.promptId),
    'the async turn_complete',
  );

  // The steered agent asks; the client votes.
  const perm = await client.submitPrompt(sessionId, 'perm');
  const ask = await stream.waitFor(isType('permission_request'), 'permission_request');
  t.same(
    (await client.status(sessionId)).pendingInteractions.map((p) => p.requestId),
    [ask.data.requestId],
  );
  await client.vote(ask.data.requestId, { outcome: 'selected', optionId: 'allow' });
  await stream.waitFor(
    isType('turn_complete', (f) => f.data.promptId === perm.promptId),
    'the perm turn',
  );
  t.ok(
    stream.seen.some((f) => agentText(f) === 'permission: allow'),
    'the agent got the vote',
  );

  // A turn that runs until cancelled, one queued behind it: list, remove, cancel.
  const hang = await client.submitPrompt(sessionId, 'hang');
  await steer.seen('session/prompt', (p) => JSON.stringify(p).includes('"hang"'));
  const queued = await client.submitPrompt(sessionId, 'later');
  t.same(
    (await client.pendingPrompts(sessionId)).map((p) => [p.promptId, p.state]),
    [
      [hang.promptId, 'running'],
      [queued.promptId, 'queued'],
    ],
  );
  t.equal((await client.currentTurn(sessionId)).promptId, hang.promptId);
  t.equal((await client.status(sessionId)).hasActivePrompt, true);
  await client.removePendingPrompt(sessionId, queued.promptId);
  await client.cancel(sessionId);
  const cancelled = await stream.waitFor(
    isType('turn_complete', (f) => f.data.promptId === hang.promptId),
    'the cancelled turn',
  );
  t.equal(cancelled.data.stopReason, 'cancelled');
  t.same(await client.pendingPrompts(sessionId), []);

  await client.setModel(sessionId, 'm2');
  await stream.waitFor(
    isType('model_switched', (f) => f.data.modelId === 'm2'),
    'model_switched',
  );

  const listed = await client.listSessions();
  t.ok(
    listed.sessions.some((s) => s.sessionId === sessionId && s.isLive),
    'listed as live',
  );

  // Close: the stream yields session_closed and ends by itself.
  await client.close(sessionId);
  await stream.waitFor(isType('session_closed'), 'session_closed');
  await within(stream.done, 'the iterator ends after session_closed');
  t.equal(stream.seen.at(-1)?.type, 'session_closed');
  t.equal(opened.length, 1, 'one connection all along');
  await t.rejects(client.close(sessionId), SessionNotFoundError, 'closed already');

  // Load and resume bring it back; the catalog still knows it.
  const loaded = await client.load(sessionId);
  t.match(loaded, { sessionId, attached: false, eventEpoch: String });
  t.equal((await client.resume(sessionId)).attached, true);
  t.ok((await client.listSessions({ size: 10 })).sessions.some((s) => s.sessionId === sessionId));

  // Its log replays its earlier life, close included: that `session_closed` is history and ends nothing.
  const again = follow(client.events(sessionId, { lastEventId: 0 }));
  await again.waitFor(isType('replay_complete'), 'replay_complete after the load');
  t.ok(
    again.seen.some((f) => f.type === 'session_closed'),
    'the replay holds the earlier close',
  );
  await client.prompt(sessionId, 'after the load');
  await again.waitFor(
    (f): f is SessionEvent => agentText(f)?.includes('after the load') === true,
    'the reply after the load',
  );
});

t.test('events: a connection cut mid-stream resumes with no gap and no duplicate', async (t) => {
  const { d, steer } = await steerDaemon(t, { args: ['--token', TOKEN] });
  // The daemon's end of every event stream, so that the test can cut one.
  const sockets: Socket[] = [];
  d.app.server.on('request', (req: IncomingMessage) => {
    if (req.url?.endsWith('/events') === true) sockets.push(req.socket);
  });
  // The reconnect waits until the frames sent while it was away are in the daemon's log.
  let gate = Promise.resolve();
  const { client, sent } = clientOf(d, {
    before: async (req) => {
      if (req.path.endsWith('/events')) await gate;
    },
  });
  const { sessionId } = await client.createSession();
  const agent = await steer.agent();
  const say = async (from: number, to: number) => {
    for (let i = from; i <= to; i++)
      await agent.notify(sessionId, { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: `n${i}` } });
  };
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const opened: { epoch: string | undefined; lastEventId: number | undefined; reconnect: boolean }[] = [];
  const stream = follow(client.events(sessionId, { signal: ac.signal, onOpen: (info) => opened.push(info) }));
  await stream.waitFor(isType('session_state'), 'session_state');

  await say(1, 5);
  const fifth = await stream.waitFor(
    isType('session_update', (f) => agentText(f) === 'n5'),
    'n5',
  );
  let open!: () => void;
  gate = new Promise((resolve) => (open = resolve));
  for (const socket of sockets) socket.destroy();
  // A second reader shows when n6..n10 are in the log, while the client is still kept away.
  const observer = await openEvents(t, d, sessionId);
  await say(6, 10);
  await observer.waitFor((f) => f.data?.includes('"n10"') === true, 'n10 in the log');
  open();
  await stream.waitFor(
    isType('session_update', (f) => agentText(f) === 'n10'),
    'n10 after the reconnect',
  );
  await say(11, 15);
  await stream.waitFor(
    isType('session_update', (f) => agentText(f) === 'n15'),
    'n15',
  );

  t.same(
    stream.seen.map(agentText).filter(Boolean),
    Array.from({ length: 15 }, (_, i) => `n${i + 1}`),
    'every chunk once, in order',
  );
  const ids = stream.seen.flatMap((f) => ('id' in f ? [f.id] : []));
  const firstId = ids[0] ?? 0;
  t.same(
    ids,
    ids.map((_, i) => firstId + i),
    'numbered frames are consecutive: no gap, no duplicate',
  );
  t.equal(opened.length, 2, 'one reconnect');
  t.same(opened[1], { epoch: opened[0]?.epoch, lastEventId: fifth.id, reconnect: true }, 'resumed after n5');
  const reconnect = sent.filter((r) => r.path.endsWith('/events'))[1];
  t.equal(reconnect?.headers.get('last-event-id'), String(fifth.id), 'Last-Event-ID sent');
  t.equal(reconnect?.headers.get('x-qwen-event-epoch'), opened[0]?.epoch, 'and the epoch');
  t.equal(reconnect?.headers.get('authorization'), `Bearer ${TOKEN}`, 'and the token');
});

t.test('409 restore_in_progress: retried after Retry-After with the same Idempotency-Key', async (t) => {
  const { d, steer } = await steerDaemon(t, { args: ['--token', TOKEN], hold: ['session/load'] });
  const loading = restore(d, 'load', 's1');
  const held = await parked(steer, 'session/load', loading);
  // The load ends while the client waits to retry: the retry then joins the live session.
  const { client, sent, retries } = clientOf(d, { onRetry: () => void held.release() });
  const resumed = await client.resume('s1');
  t.equal(resumed.attached, true, 'the retry attached to the loaded session');
  t.equal(retries.length, 1);
  t.ok(retries[0]?.error instanceof RestoreInProgressError);
  t.equal((retries[0]?.error as RestoreInProgressError).retryAfter, 5);
  t.equal(retries[0]?.delayMs, 5000, 'Retry-After honoured');
  const keys = sent.map((r) => r.headers.get('idempotency-key'));
  t.equal(keys.length, 2);
  t.ok(keys[0] !== null && keys[0] === keys[1], 'one key for both tries');
  t.equal((await loading).status, 200);
});

t.test('503 session_limit_exceeded: retried after Retry-After with the same Idempotency-Key', async (t) => {
  const { d } = await steerDaemon(t, { args: ['--token', TOKEN, '--max-sessions', '1'] });
  let closing: Promise<void> | undefined;
  const other = clientOf(d).client;
  const { sessionId: first } = await other.createSession({ sessionScope: 'thread' });
  // Room is made while the client waits; the retry goes out once it is.
  const { client, sent, retries } = clientOf(d, {
    onRetry: () => void (closing = other.close(first)),
    before: async () => await closing,
  });
  const second = await client.createSession({ sessionScope: 'thread' });
  t.not(second.sessionId, first);
  t.equal(retries.length, 1);
  t.ok(retries[0]?.error instanceof SessionLimitExceededError);
  t.equal(retries[0]?.delayMs, 5000, 'Retry-After honoured');
  const keys = sent.map((r) => r.headers.get('idempotency-key'));
  t.equal(keys.length, 2);
  t.ok(keys[0] !== null && keys[0] === keys[1], 'one key for both tries');
});

t.test('typed errors, never retried', async (t) => {
  const d = await startDaemon(t, { args: ['--token', TOKEN] });
  const { client, sent } = clientOf(d, { retry: { baseMs: 1 } });
  await t.rejects(client.status('nope'), SessionNotFoundError, '404 session_not_found');
  await t.rejects(client.prompt('nope', 'hi'), SessionNotFoundError, "v1's 404 without a code");
  await t.rejects(client.vote('nope', { outcome: 'cancelled' }), PermissionNotFoundError);
  await t.rejects(client.createSession({ cwd: '/elsewhere' }), WorkspaceMismatchError);
  const { sessionId } = await client.createSession();
  await t.rejects(client.removePendingPrompt(sessionId, 'nope'), PendingPromptNotFoundError);
  const err = await client.status('nope').catch((e: unknown) => e);
  t.match(err, { status: 404, code: 'session_not_found', body: { sessionId: 'nope' } });
  const stranger = clientOf(d, { token: 'wrong' });
  await t.rejects(stranger.client.capabilities(), UnauthorizedError, '401');
  t.equal(stranger.sent.length, 1, 'a 401 is not retried');
  const attempts = sent.length;
  t.equal(attempts, 7, 'one request per call');

  const frames = client.events('nope');
  await t.rejects(frames.next(), SessionNotFoundError, 'events of an unknown session');
});

t.test('the workspace through the client: files (read, page, bytes, stat, list, glob) and git', async (t) => {
  const repo = gitRepo(t, [
    { message: 'first', files: { 'README.md': 'one\ntwo\nthree\n', 'src/a.ts': 'export const a = 1;\n' } },
    { message: 'second', files: { 'bin.dat': Buffer.from([0, 1, 2, 3]) } },
  ]);
  repo.write('README.md', 'one\nTWO\nthree\nfour\n');
  repo.write('new file.txt', 'fresh\n');
  const d = await startDaemon(t, {
    workspace: repo.dir,
    dataDir: tempDir(t),
    args: ['--token', TOKEN],
    checkAnswers: true,
  });
  const { client, sent } = clientOf(d);

  const whole = await client.readFile('README.md');
  t.match(whole, { kind: 'file', path: 'README.md', content: 'one\nTWO\nthree\nfour\n', hasMore: false });
  const page1 = await client.readFile('README.md', { limit: 2 });
  t.equal(page1.content, 'one\nTWO', 'a window of lines (without the last line ending)');
  t.ok(page1.hasMore && page1.nextCursor !== null, 'a window says where the next page starts');
  const page2 = await client.readFile('README.md', { cursor: page1.nextCursor ?? '', limit: 2 });
  t.equal(page2.content, 'three\nfour\n', 'the cursor reads on');
  t.equal((await client.readFile('README.md', { line: 3, limit: 1 })).content, 'three', 'from a line');
  const spaced = await client.readFile('new file.txt');
  t.equal(spaced.content, 'fresh\n', 'a path with a space, encoded in the query');

  const bytes = await client.readFileBytes('bin.dat', { offset: 1, maxBytes: 2 });
  t.match(bytes, { kind: 'file_bytes', offset: 1, returnedBytes: 2, sizeBytes: 4, contentBase64: 'AQI=' });
  t.match(await client.stat('src'), { kind: 'stat', type: 'directory' });
  t.match(await client.stat('README.md'), { type: 'file', sizeBytes: 19 });

  const root = await client.listDir();
  // `.git` is not listed.
  t.same(root.entries.map((e) => [e.name, e.kind]).sort(), [
    ['README.md', 'file'],
    ['bin.dat', 'file'],
    ['new file.txt', 'file'],
    ['src', 'directory'],
  ]);
  t.same(
    (await client.listDir('src')).entries.map((e) => e.name),
    ['a.ts'],
  );
  t.same((await client.glob('**/*.ts')).matches, ['src/a.ts']);
  t.same((await client.glob('*.ts', { cwd: 'src', maxResults: 5 })).matches, ['src/a.ts'], 'from a directory');
  t.same(
    (await client.listDir('.', { includeIgnored: true })).entries.filter((e) => e.ignored).map((e) => e.name),
    ['.git'],
    'includeIgnored lists what the ignore rules hide, marked',
  );

  // Refusals are typed errors carrying the qwen daemon's error kind; none is retried.
  const refused = async (p: Promise<unknown>) => {
    const err = await p.catch((e: unknown) => e);
    return err instanceof AcpdError ? [err.status, err.code] : err;
  };
  t.same(await refused(client.readFile('missing.txt')), [404, 'path_not_found']);
  t.same(await refused(client.readFile('bin.dat')), [422, 'binary_file']);
  t.same(await refused(client.readFile('../etc/passwd')), [400, 'path_outside_workspace']);
  t.same(await refused(client.listDir('README.md')), [400, 'parse_error']);
  t.same(await refused(client.readFile('README.md', { limit: 0 })), [400, 'parse_error']);

  t.match(await client.gitStatus(), { branch: 'main', unstaged: 1, untracked: 1, staged: 0 });
  const diff = await client.gitDiff();
  t.same(
    diff.files.map((f) => [f.path, f.added, f.removed, f.isUntracked]),
    [
      ['README.md', 2, 1, false],
      ['new file.txt', 1, 0, true],
    ],
  );
  const readme = await client.gitDiffFile('README.md');
  t.same(readme.hunks[0]?.lines, [' one', '-two', '+TWO', ' three', '+four']);
  t.same((await client.gitDiffFile('new file.txt')).hunks[0]?.lines, ['+fresh']);

  const log = await client.gitLog({ limit: 1 });
  t.same(
    log.entries.map((e) => e.subject),
    ['second'],
  );
  t.equal(log.hasMore, true);
  const older = await client.gitLog({ limit: 1, skip: 1 });
  t.same(
    older.entries.map((e) => e.subject),
    ['first'],
  );
  t.equal(older.hasMore, false);
  t.same(
    (await client.gitLog({ search: 'first' })).entries.map((e) => e.subject),
    ['first'],
  );
  t.same(
    (await client.gitLog({ range: 'HEAD~1..HEAD', all: false })).entries.map((e) => e.subject),
    ['second'],
  );
  const head = log.entries[0];
  t.match(await client.gitCommit(head?.sha ?? ''), { available: true, subject: 'second', sha: head?.sha });
  t.same(await refused(client.gitCommit('not-a-sha')), [400, 'parse_error']);
  t.match(await client.gitBranches(), { available: true, head: 'main', detached: false, local: [{ name: 'main' }] });

  t.ok(
    sent.every((r) => r.method === 'GET' && r.headers.get('authorization') === `Bearer ${TOKEN}`),
    'every call a GET with the token',
  );
  t.ok(
    sent.some((r) => r.path === '/file?path=new+file.txt'),
    'the query as the daemon reads it',
  );
  t.notOk(
    sent.some((r) => r.path.includes('all=')),
    '`all: false` is not sent',
  );
});

t.test('the workspace through the client: a workspace that is not a repository', async (t) => {
  const ws = tempDir(t, 'acpd-plain-');
  const d = await startDaemon(t, { workspace: ws, dataDir: tempDir(t), args: ['--token', TOKEN], checkAnswers: true });
  const { client } = clientOf(d);
  t.same(await client.gitStatus(), { v: 2, workspaceCwd: ws, branch: null });
  t.match(await client.gitDiff(), { available: false, files: [] });
  t.match(await client.gitDiffFile('a.txt'), { available: false, hunks: [] });
  t.match(await client.gitLog(), { available: false, entries: [], hasMore: false });
  t.match(await client.gitCommit('0123456'), { available: false });
  const branches = await client.gitBranches().catch((e: unknown) => e);
  t.match(branches, { status: 404, code: 'not_a_git_repository' }, 'branches outside a repository: 404');
  t.same((await client.listDir('.')).entries, []);
});

t.test('the SSE parser: line endings, split chunks, multi-line data, comments', async (t) => {
  const parser = new SseParser();
  const got = [
    ...parser.push('retry: 3000\r\n\r\n: heartbeat\r'),
    ...parser.push('\nid: 7\revent: x\ndata: a\r\ndata:b\n'),
    ...parser.push('\n'),
    ...parser.push('data: {"v":1}\n\n'),
  ];
  t.same(got, [
    { id: '7', event: 'x', data: 'a\nb' },
    { event: 'message', data: '{"v":1}' },
  ]);
});

t.test('acpd/client loads only its own files (the browser gets these very files)', async (t) => {
  const dir = fileURLToPath(new URL('../../dist/client/', import.meta.url));
  const files = readdirSync(dir).filter((f) => f.endsWith('.js'));
  t.ok(files.includes('index.js'));
  for (const file of files) {
    const js = readFileSync(`${dir}${file}`, 'utf8');
    const specifiers = [...js.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)['"]([^'"]+)['"]/g)].map((m) => m[1] ?? '');
    for (const spec of specifiers)
      t.ok(/^\.\/[\w-]+\.js$/.test(spec) && files.includes(spec.slice(2)), `${file}: ${spec} is a sibling file`);
    t.notMatch(js, /\b(?:process|Buffer|require)\b/, `${file} uses no Node global`);
  }
  // The package's export resolves to those files.
  const specifier = 'acpd/client'; // not a literal: type-checking must not need dist/ built
  const viaExport = (await import(specifier)) as Record<string, unknown>;
  t.type(viaExport.AcpdClient, 'function', 'import("acpd/client")');
});
