// Connections (hardening issue, defect 4): a connection that does not send a complete request head within
// --header-timeout-ms is closed, whether it sent part of one or nothing at all; past --max-connections the
// probes still answer and everything else gets a 503 envelope instead of a reset; idle keep-alive
// connections make room; and neither rule cuts an event stream or a prompt that outlasts the header timeout.
// Real sockets on 127.0.0.1 against the app as buildApp builds it. Every wait goes through within() (10 s), so
// a daemon without these rules fails quickly: there a silent socket stays open for over a minute.
import { connect, type Socket } from 'node:net';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { Client } from 'undici';
import { connectionCeiling, connectionTimeouts } from '../src/plugins/connections.js';
import { until, within } from '../harness/wait.js';
import { startDaemon, steerDaemon, type TestDaemon } from './support/app.js';
import { call, createSession } from './support/http.js';
import { openEvents } from './support/sse.js';
import { chunk, textPrompt } from './support/values.js';

interface RawSocket {
  socket: Socket;
  /** Everything the server sent. */
  received(): string;
  /** Resolves when the server has closed the connection (the client reads, so it sees the end). */
  closed: Promise<void>;
  isClosed(): boolean;
}

/** A raw TCP connection that reads whatever comes; `payload` is written once connected. */
async function rawSocket(t: Test, d: TestDaemon, payload?: string): Promise<RawSocket> {
  const socket = connect(d.port, '127.0.0.1');
  t.teardown(() => {
    socket.destroy();
  });
  let text = '';
  let done = false;
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    text += chunk;
  });
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) =>
    socket.once('close', () => {
      done = true;
      resolve();
    }),
  );
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  if (payload !== undefined) socket.write(payload);
  return { socket, received: () => text, closed, isClosed: () => done };
}

/** Connections the server holds open right now. */
async function openOnServer(d: TestDaemon): Promise<number> {
  return await promisify(d.app.server.getConnections.bind(d.app.server))();
}

/** One request on a connection of its own (undici's shared pool would reuse one). */
async function fresh(
  d: TestDaemon,
  path: string,
): Promise<{ status: number; headers: Record<string, unknown>; body: unknown }> {
  const client = new Client(d.baseUrl, { pipelining: 0 });
  try {
    const res = await client.request({ method: 'GET', path, headers: d.headers });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, body: text === '' ? undefined : JSON.parse(text) };
  } finally {
    await client.close();
  }
}

t.test('deadlines: derived from --header-timeout-ms, checked often enough to be honoured', async (t) => {
  t.same(connectionTimeouts({ headerTimeoutMs: 10_000 }), {
    headersTimeout: 10_000,
    requestTimeout: 300_000,
    connectionsCheckingInterval: 1_000,
  });
  t.same(connectionTimeouts({ headerTimeoutMs: 300 }), {
    headersTimeout: 300,
    requestTimeout: 300_000,
    connectionsCheckingInterval: 75,
  });
  t.equal(connectionTimeouts({ headerTimeoutMs: 1 }).connectionsCheckingInterval, 10);
  t.equal(connectionTimeouts({ headerTimeoutMs: 600_000 }).requestTimeout, 600_000, 'never below the header timeout');
  t.equal(connectionCeiling(4), 68);
  t.equal(connectionCeiling(256), 320);
  t.equal(connectionCeiling(1000), 1250);
});

t.test('a connection that never sends a byte is closed after the header timeout', async (t) => {
  const d = await startDaemon(t, { args: ['--header-timeout-ms', '300'] });
  const started = performance.now();
  const silent = await rawSocket(t, d);
  await within(silent.closed, 'the server closes the silent connection');
  const elapsed = performance.now() - started;
  t.ok(elapsed >= 250, `not before the deadline (${Math.round(elapsed)} ms)`);
  t.ok(elapsed < 5_000, `soon after it (${Math.round(elapsed)} ms)`);
  t.match(silent.received(), /^HTTP\/1\.1 408 /, 'told why: 408');
});

t.test('a connection that sends part of a request head is closed after the header timeout', async (t) => {
  const d = await startDaemon(t, { args: ['--header-timeout-ms', '300'] });
  const slow = await rawSocket(t, d, 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ');
  await within(slow.closed, 'the server closes the slow connection');
  t.match(slow.received(), /^HTTP\/1\.1 408 /);
});

t.test('over --max-connections: probes answer, other requests get a 503 envelope, no reset', async (t) => {
  const d = await startDaemon(t, { args: ['--max-connections', '4'] });
  // Four connections that send nothing (the header timeout is the default 10 s, longer than this test).
  const silent = await Promise.all([1, 2, 3, 4].map(async () => await rawSocket(t, d)));
  await until(async () => (await openOnServer(d)) >= 4, 'the server holds the four connections');

  for (const probe of ['/health', '/livez', '/readyz']) {
    const res = await fresh(d, probe);
    t.equal(res.status, 200, `${probe} answers`);
    t.equal(res.headers.connection, 'close', `${probe}: the extra connection is not kept`);
  }
  const refused = await fresh(d, '/capabilities');
  t.equal(refused.status, 503, 'a non-probe request is answered, not reset');
  t.same(refused.body, {
    error: 'Connection limit reached (4 open connections); retry later',
    code: 'connection_limit',
    limit: 4,
  });
  t.equal(refused.headers['retry-after'], '5');
  t.equal(refused.headers.connection, 'close');
  t.notOk(
    silent.some((s) => s.isClosed()),
    'the connections under the cap were left alone',
  );

  // Once one of them goes, a new connection is served normally again.
  silent[0]?.socket.destroy();
  await until(async () => (await openOnServer(d)) <= 3, 'the server saw it go');
  t.equal((await fresh(d, '/capabilities')).status, 200);
});

t.test('idle keep-alive connections are reclaimed to make room', async (t) => {
  const d = await startDaemon(t, { args: ['--max-connections', '2'] });
  // Two connections that finished a request and now idle in keep-alive (72 s by default).
  const idle = await Promise.all(
    [1, 2].map(async () => await rawSocket(t, d, `GET /livez HTTP/1.1\r\nHost: 127.0.0.1:${d.port}\r\n\r\n`)),
  );
  await until(() => idle.every((s) => s.received().includes('"status":"ok"')), 'both answered');
  t.equal((await fresh(d, '/capabilities')).status, 200, 'served as if under the cap');
  await within(Promise.all(idle.map(async (s) => await s.closed)), 'the idle connections were closed');
});

t.test('past the hard ceiling new connections are closed unanswered', async (t) => {
  const d = await startDaemon(t, { args: ['--max-connections', '1'] });
  const ceiling = connectionCeiling(1);
  const held: RawSocket[] = [];
  for (let i = 0; i < ceiling; i++) held.push(await rawSocket(t, d));
  await until(async () => (await openOnServer(d)) >= ceiling, 'the server holds the ceiling');
  const beyond = await rawSocket(t, d, `GET /health HTTP/1.1\r\nHost: 127.0.0.1:${d.port}\r\n\r\n`);
  await within(beyond.closed, 'the connection beyond the ceiling is closed');
  t.equal(beyond.received(), '', 'without an answer');
  t.notOk(
    held.some((s) => s.isClosed()),
    'the others stay',
  );
});

t.test('an event stream and a prompt outlasting the header timeout are not cut', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/prompt'], args: ['--header-timeout-ms', '300'] });
  const id = await createSession(d);
  const stream = await openEvents(t, d, id);
  await stream.waitFor((f) => f.retry !== undefined, 'retry frame');
  const prompt = call(d, 'POST', `/session/${id}/prompt`, textPrompt('long'));
  const held = await steer.nextCall('session/prompt');

  // A silent connection opened now is closed once the header deadline has passed and been checked:
  // by then the stream and the prompt, both older, have been through the same checks.
  const sentinel = await rawSocket(t, d);
  await within(sentinel.closed, 'the deadline passed');

  await held.release();
  const answered = await within(prompt, 'the prompt answer');
  t.equal(answered.status, 200, 'the prompt got its answer');
  // The stream still carries what the agent says next.
  const agent = await steer.agent(0);
  await agent.notify(id, chunk('after the deadline'));
  const later = await within(
    stream.waitFor((f) => (f.data ?? '').includes('after the deadline'), 'the later update'),
    'the later update on the stream',
  );
  t.ok(later, 'the stream is still open and delivering');
});
