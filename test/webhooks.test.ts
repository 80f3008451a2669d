// Webhooks (issue 18, approvals outside the app): permission_request, turn_complete and session_died POSTed
// to a receiver that this test runs on 127.0.0.1, each signed (`Acpd-Signature: t=…,v1=…`, HMAC-SHA256 over
// "<t>.<body>") and checked here with the secret the way the README shows; retried on network errors, 5xx
// and 429 with the same delivery id; given up after --webhook-max-attempts or on a 4xx; and kept in the
// data store across a daemon restart, so that after de-duplication by id every event arrives once.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import t from 'tap';
import { loadConfig } from '../src/config.js';
import { startDaemon, steerDaemon, tempDir, type Teardown, type TestDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { textPrompt } from './support/values.js';
import { until, within } from '../harness/wait.js';

const SECRET = 'whsec-test-0123456789';

/** What the receiver does with one request: answer with a status, drop the connection, or hold it unanswered. */
type Answer = number | 'drop' | 'hold';

interface Received {
  headers: http.IncomingHttpHeaders;
  /** The body exactly as sent: the signature covers these bytes. */
  raw: string;
  body: Record<string, unknown>;
  /** What the receiver answered. */
  answer: Answer;
}

interface Receiver {
  url: string;
  received: Received[];
  /** The answers to the next requests, in order; once used up, `otherwise`. */
  script: Answer[];
  otherwise: Answer;
  /** Resolves once `count` requests have arrived (fails after WAIT_LIMIT_MS). */
  reached(count: number): Promise<Received[]>;
  /** Answers the requests held so far with `status`. */
  release(status: number): void;
}

/** A webhook receiver on an ephemeral port, closed at teardown. */
async function receiver(t: Teardown, otherwise: Answer = 200): Promise<Receiver> {
  const waiters: Array<{ count: number; resolve: (r: Received[]) => void }> = [];
  const held: http.ServerResponse[] = [];
  const self: Receiver = {
    url: '',
    received: [],
    script: [],
    otherwise,
    reached: (count) =>
      self.received.length >= count
        ? Promise.resolve(self.received)
        : within(new Promise((resolve) => waiters.push({ count, resolve })), `${count} webhook requests`),
    release: (status) => {
      for (const res of held.splice(0)) res.writeHead(status).end();
    },
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const answer = self.script.shift() ?? self.otherwise;
      self.received.push({ headers: req.headers, raw, body: obj(JSON.parse(raw)), answer });
      if (answer === 'drop') req.socket.destroy();
      else if (answer === 'hold') held.push(res);
      else res.writeHead(answer, answer === 429 ? { 'retry-after': '0' } : {}).end();
      for (const w of waiters.splice(0)) {
        if (self.received.length >= w.count) w.resolve(self.received);
        else waiters.push(w);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  self.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/acpd`;
  return self;
}

/**
 * The receiver's check, as the README gives it: recompute the HMAC over "<t>.<raw body>" with the shared
 * secret and compare in constant time.
 */
function verify(secret: string, header: string | string[] | undefined, raw: string): boolean {
  if (typeof header !== 'string') return false;
  const fields = new Map(header.split(',').map((part) => part.split('=', 2) as [string, string]));
  const timestamp = fields.get('t');
  const given = Buffer.from(fields.get('v1') ?? '', 'hex');
  if (timestamp === undefined || !/^\d+$/.test(timestamp)) return false;
  const expected = createHmac('sha256', secret).update(`${timestamp}.${raw}`).digest();
  return given.length === expected.length && timingSafeEqual(given, expected);
}

function webhookArgs(r: Receiver, more: string[] = []): string[] {
  return ['--webhook-url', r.url, '--webhook-secret', SECRET, ...more];
}

/** One series of GET /metrics (0 when absent). */
async function metric(d: TestDaemon, name: string, labels = ''): Promise<number> {
  const res = await call(d, 'GET', '/metrics');
  const line = String(res.body)
    .split('\n')
    .find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

/** Waits until the series reads `value` (the daemon counts once it has read the receiver's answer). */
async function metricReaches(d: TestDaemon, name: string, labels: string, value: number): Promise<void> {
  await until(async () => (await metric(d, name, labels)) === value || undefined, `${name}{${labels}} = ${value}`);
}

t.test('permission_request, turn_complete and session_died: each delivered once, signed, in order', async (t) => {
  const r = await receiver(t);
  const { d, steer } = await steerDaemon(t, { args: webhookArgs(r) });
  const id = await createSession(d);

  t.same((await call(d, 'POST', `/session/${id}/prompt`, textPrompt('hello'))).body, { stopReason: 'end_turn' });
  await r.reached(1);

  const agent = await steer.agent();
  const vote = agent.permission(id, { toolCallId: 'tc-1', title: 'write a file' }, [
    { optionId: 'allow', name: 'Allow', kind: 'allow_once' },
  ]);
  const [, asked] = await r.reached(2);
  const requestId = String(obj(asked.body.data).requestId);
  const voted = await call(d, 'POST', `/permission/${requestId}`, {
    outcome: { outcome: 'selected', optionId: 'allow' },
  });
  t.equal(voted.status, 200, 'the request id in the webhook is the one a vote answers');
  t.match(await vote, { outcome: { outcome: 'selected', optionId: 'allow' } });

  await agent.crash();
  const received = await r.reached(3);
  await metricReaches(d, 'acpd_webhook_deliveries_total', 'outcome="ok"', 3);

  t.same(
    received.map((x) => x.body.type),
    ['turn_complete', 'permission_request', 'session_died'],
    'each event once, in the order it was published',
  );
  const [turn, permission, died] = received.map((x) => x.body);
  t.match(turn, { type: 'turn_complete', sessionId: id, data: { sessionId: id, stopReason: 'end_turn' } });
  t.match(permission, {
    type: 'permission_request',
    sessionId: id,
    data: { requestId, sessionId: id, toolCall: { toolCallId: 'tc-1' }, options: [{ optionId: 'allow' }] },
  });
  t.match(died, { type: 'session_died', sessionId: id, data: { sessionId: id, reason: 'channel_closed' } });

  for (const x of received) {
    t.same(Object.keys(x.body).sort(), ['createdAt', 'data', 'id', 'sessionId', 'type'], 'the payload fields');
    t.type(x.body.createdAt, 'number');
    t.equal(x.headers['content-type'], 'application/json');
    t.equal(x.headers['acpd-delivery'], x.body.id, 'Acpd-Delivery is the body id');
    t.equal(x.headers['acpd-event'], x.body.type);
    t.equal(x.headers['acpd-attempt'], '1');
    t.match(x.headers['acpd-signature'], new RegExp(`^t=${String(x.headers['acpd-timestamp'])},v1=[0-9a-f]{64}$`));
    t.ok(verify(SECRET, x.headers['acpd-signature'], x.raw), `${String(x.body.type)}: the signature verifies`);
  }
  t.equal(new Set(received.map((x) => x.body.id)).size, 3, 'one delivery id per event');

  // The scheme detects tampering: another body, another timestamp, or another key fails the check.
  const { headers, raw } = received[1];
  const signature = String(headers['acpd-signature']);
  t.notOk(verify(SECRET, signature, raw.replace('"allow"', '"deny"')), 'an altered body is rejected');
  t.notOk(verify(SECRET, signature, `${raw} `), 'a body with one more byte is rejected');
  const [stamp, mac] = signature.split(',');
  const older = `t=${Number(stamp.slice(2)) - 3600},${mac}`;
  t.notOk(verify(SECRET, older, raw), 'a signature moved to another timestamp is rejected');
  const forged = createHmac('sha256', 'not-the-secret')
    .update(`${stamp.slice(2)}.${raw}`)
    .digest('hex');
  t.notOk(verify(SECRET, `${stamp},v1=${forged}`, raw), 'a signature made with another key is rejected');
});

t.test('a receiver that fails gets the same delivery again until it takes it', async (t) => {
  const r = await receiver(t);
  r.script = ['drop', 500, 429];
  const { d } = await steerDaemon(t, { args: webhookArgs(r, ['--webhook-retry-ms', '1']) });
  const id = await createSession(d);
  await call(d, 'POST', `/session/${id}/prompt`, textPrompt('hello'));

  const received = await r.reached(4);
  await metricReaches(d, 'acpd_webhook_deliveries_total', 'outcome="ok"', 1);
  t.same(
    received.map((x) => x.answer),
    ['drop', 500, 429, 200],
  );
  t.same(
    received.map((x) => x.headers['acpd-attempt']),
    ['1', '2', '3', '4'],
  );
  const ids = new Set(received.map((x) => x.headers['acpd-delivery']));
  t.equal(ids.size, 1, 'one delivery id across every attempt');
  t.same(new Set(received.map((x) => x.raw)).size, 1, 'the same body each time');
  for (const x of received) t.ok(verify(SECRET, x.headers['acpd-signature'], x.raw), 'each attempt signed');
  t.equal(await metric(d, 'acpd_webhook_retries_total'), 3, 'three retries counted');
  t.equal(await metric(d, 'acpd_webhook_deliveries_total', 'outcome="failed"'), 0);
});

t.test(
  'in order per receiver: the next delivery waits while the one before it is on the wire or retried',
  async (t) => {
    const r = await receiver(t);
    r.script = ['hold'];
    const { d, steer } = await steerDaemon(t, { args: webhookArgs(r, ['--webhook-retry-ms', '1']) });
    const id = await createSession(d);
    await call(d, 'POST', `/session/${id}/prompt`, textPrompt('hello'));
    await r.reached(1);

    // A second event while the first delivery has no answer yet.
    const agent = await steer.agent();
    const vote = agent.permission(id, { toolCallId: 'tc-1', title: 'write a file' }, [
      { optionId: 'allow', name: 'Allow', kind: 'allow_once' },
    ]);
    await until(
      async () =>
        obj((await call(d, 'GET', `/session/${id}/status`)).body).isWaitingForPermission === true || undefined,
      'the permission request published',
    );
    r.release(500);
    const received = await r.reached(3);
    t.same(
      received.map((x) => [x.body.type, x.headers['acpd-attempt']]),
      [
        ['turn_complete', '1'],
        ['turn_complete', '2'],
        ['permission_request', '1'],
      ],
      'the retry of the first goes before the second',
    );
    await call(d, 'POST', `/permission/${String(obj(received[2].body.data).requestId)}`, {
      outcome: { outcome: 'selected', optionId: 'allow' },
    });
    await vote;
  },
);

t.test('out of attempts, or refused with a 4xx: dropped and counted; the next delivery goes on', async (t) => {
  const r = await receiver(t);
  r.script = [503, 503, 400];
  const { d } = await steerDaemon(t, {
    args: webhookArgs(r, ['--webhook-retry-ms', '1', '--webhook-max-attempts', '2']),
  });
  const id = await createSession(d);

  await call(d, 'POST', `/session/${id}/prompt`, textPrompt('one'));
  const [first, second] = await r.reached(2);
  t.equal(first.headers['acpd-delivery'], second.headers['acpd-delivery'], 'retried once');
  // In order per receiver: the next delivery goes out only once the first is done with.
  await call(d, 'POST', `/session/${id}/prompt`, textPrompt('two'));
  const [, , refused] = await r.reached(3);
  t.not(refused.headers['acpd-delivery'], first.headers['acpd-delivery'], 'the first was given up after 2 attempts');
  t.equal(refused.headers['acpd-attempt'], '1');
  await call(d, 'POST', `/session/${id}/prompt`, textPrompt('three'));
  const [, , , taken] = await r.reached(4);
  t.not(taken.headers['acpd-delivery'], refused.headers['acpd-delivery'], 'a 400 is not retried');
  t.equal(taken.answer, 200);

  await metricReaches(d, 'acpd_webhook_deliveries_total', 'outcome="ok"', 1);
  t.equal(await metric(d, 'acpd_webhook_deliveries_total', 'outcome="failed"'), 2);
  t.equal(await metric(d, 'acpd_webhook_retries_total'), 1);
  t.equal(await metric(d, 'acpd_webhook_queued'), 0);
});

t.test('a delivery pending at shutdown is sent by the next daemon, with the same id', async (t) => {
  const workspace = tempDir(t, 'acpd-ws-');
  const dataDir = path.join(workspace, '.acpd');
  const r = await receiver(t, 503);
  // A long first backoff: after its first attempt the delivery only waits, until the daemon stops.
  const args = webhookArgs(r, ['--webhook-retry-ms', '600000']);
  const { d: before } = await steerDaemon(t, { workspace, dataDir, args });
  const id = await createSession(before);
  await call(before, 'POST', `/session/${id}/prompt`, textPrompt('hello'));
  const [failed] = await r.reached(1);
  t.equal(failed.body.type, 'turn_complete');
  t.equal(failed.answer, 503);
  // The drain publishes session_died; it waits behind the turn_complete, which waits for its retry.
  await before.app.close();
  t.equal(r.received.length, 1, 'nothing more was sent before the daemon stopped');

  r.otherwise = 200;
  const after = await startDaemon(t, { workspace, dataDir, args });
  const received = await r.reached(3);
  await metricReaches(after, 'acpd_webhook_deliveries_total', 'outcome="ok"', 2);
  const resent = received.slice(1);
  t.same(
    resent.map((x) => x.body.type),
    ['turn_complete', 'session_died'],
    'both sent after the restart, in order',
  );
  t.equal(resent[0].headers['acpd-delivery'], failed.headers['acpd-delivery'], 'the same delivery id');
  t.equal(resent[0].raw, failed.raw, 'the same body');
  t.equal(resent[0].headers['acpd-attempt'], '2', 'its attempts count across the restart');
  t.match(resent[1].body, { sessionId: id, data: { reason: 'daemon_shutdown' } });
  for (const x of resent) t.ok(verify(SECRET, x.headers['acpd-signature'], x.raw), 'signed');

  // What a receiver keeps after dropping the ids it has seen: each event once.
  const unique = new Map(received.map((x) => [String(x.headers['acpd-delivery']), String(x.body.type)]));
  t.same([...unique.values()], ['turn_complete', 'session_died']);
  t.equal(await metric(after, 'acpd_webhook_queued'), 0, 'nothing left queued');
});

t.test(
  'a delivery the receiver took but the daemon never saw answered is sent again: once after de-duplication',
  async (t) => {
    const workspace = tempDir(t, 'acpd-ws-');
    const dataDir = path.join(workspace, '.acpd');
    // The receiver reads the whole delivery and keeps the answer back: the daemon stops before it hears one.
    const r = await receiver(t, 'hold');
    const args = webhookArgs(r);
    const { d: before } = await steerDaemon(t, { workspace, dataDir, args });
    const id = await createSession(before);
    await call(before, 'POST', `/session/${id}/prompt`, textPrompt('hello'));
    const [taken] = await r.reached(1);
    t.equal(taken.body.type, 'turn_complete');
    t.equal(taken.answer, 'hold');
    await before.app.close();
    r.release(200); // too late: that daemon is gone

    r.otherwise = 200;
    const after = await startDaemon(t, { workspace, dataDir, args });
    const received = await r.reached(3);
    await metricReaches(after, 'acpd_webhook_deliveries_total', 'outcome="ok"', 2);
    t.equal(received[1].headers['acpd-delivery'], taken.headers['acpd-delivery'], 'the taken delivery again, same id');
    t.equal(received[1].raw, taken.raw, 'the same body');
    for (const x of received) t.ok(verify(SECRET, x.headers['acpd-signature'], x.raw), 'signed');
    const unique = new Map(received.map((x) => [String(x.headers['acpd-delivery']), String(x.body.type)]));
    t.same([...unique.values()], ['turn_complete', 'session_died'], 'each event once after de-duplication');
    t.equal(await metric(after, 'acpd_webhook_queued'), 0, 'nothing left queued');
  },
);

t.test('config: the receivers, the secret from a flag or a file, refused without one', async (t) => {
  const cwd = tempDir(t);
  const load = (argv: string[], env: NodeJS.ProcessEnv = {}) => loadConfig({ argv, env, cwd });

  const none = load([]);
  t.same(none.webhookUrl, []);
  t.equal(none.webhookSecret, undefined);

  const two = load([
    '--webhook-url',
    'https://a.example/in, http://127.0.0.1:9/x,https://a.example/in',
    '--webhook-secret',
    ' s ',
  ]);
  t.same(two.webhookUrl, ['https://a.example/in', 'http://127.0.0.1:9/x'], 'comma-separated, repeats once');
  t.equal(two.webhookSecret, 's', 'trimmed');

  writeFileSync(path.join(cwd, 'secret'), 'from-file\n');
  const env = { ACPD_WEBHOOK_URL: 'https://a.example/in', ACPD_WEBHOOK_SECRET_FILE: 'secret' };
  const fromFile = load([], env);
  t.equal(fromFile.webhookSecret, 'from-file');
  t.notOk('ACPD_WEBHOOK_SECRET_FILE' in load([], { ...env, PATH: '/bin' }).agentEnv, 'not passed to the agent');
  t.notOk('ACPD_WEBHOOK_SECRET' in load([], { ACPD_WEBHOOK_SECRET: 'x' }).agentEnv, 'not passed to the agent');

  t.throws(() => load(['--webhook-url', 'https://a.example/in']), /Refusing to send webhooks unsigned/);
  t.throws(() => load(['--webhook-url', 'ftp://a.example/in', '--webhook-secret', 's']), /Invalid --webhook-url/);
  t.throws(() => load(['--webhook-url', 'not a url', '--webhook-secret', 's']), /Invalid --webhook-url/);
  t.throws(
    () => load(['--webhook-secret', 's', '--webhook-secret-file', 'secret']),
    /Both --webhook-secret and --webhook-secret-file/,
  );
  t.throws(() => load(['--webhook-secret-file', 'missing']), /Invalid --webhook-secret-file "missing": cannot be read/);
  writeFileSync(path.join(cwd, 'empty'), '\n');
  t.throws(() => load(['--webhook-secret-file', 'empty']), /the file is empty/);
  t.throws(() => load(['--webhook-max-attempts', '0']), /Invalid --webhook-max-attempts/);
});
