// Opt-in rate limits (issue 5): three budgets per client address — prompts, other mutations, reads — each
// with its own per-minute allowance. Spending one never touches the others; a spent one answers 429 with
// our envelope and Retry-After; probes and /metrics are never limited.
import t, { type Test } from 'tap';
import { Agent, request } from 'undici';
import { ConfigError } from '../src/config.js';
import { startDaemon, tempDir, testConfig, type TestDaemon } from './support/app.js';
import { call, createSession, obj, type JsonResponse } from './support/http.js';
import { openEvents } from './support/sse.js';
import { textPrompt } from './support/values.js';

function assertLimited(t: Test, res: JsonResponse, budget: string, label: string): void {
  t.equal(res.status, 429, `${label}: 429`);
  t.equal(obj(res.body).code, 'rate_limited', `${label}: code rate_limited`);
  t.equal(obj(res.body).budget, budget, `${label}: the ${budget} budget`);
  t.type(obj(res.body).error, 'string');
  const retryAfter = Number(res.headers['retry-after']);
  t.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, `${label}: Retry-After ${retryAfter}`);
}

t.test('off by default: no limit and no rate-limit headers', async (t) => {
  const d = await startDaemon(t);
  for (let i = 0; i < 30; i++) {
    const res = await call(d, 'GET', '/capabilities');
    if (res.status !== 200) t.fail(`request ${i} → ${res.status}`);
    if (res.headers['x-ratelimit-limit'] !== undefined) t.fail('rate-limit headers without a limit');
  }
  t.pass('30 reads went through');
});

t.test('each budget runs out on its own', async (t) => {
  const d = await startDaemon(t, {
    args: ['--rate-limit-prompts', '2', '--rate-limit-mutations', '3', '--rate-limit-reads', '4'],
  });

  // Reads: four, then 429 — for every GET route, the SSE one included (before any SSE byte).
  for (let i = 1; i <= 4; i++) {
    const res = await call(d, 'GET', '/capabilities');
    t.equal(res.status, 200, `read ${i}`);
    t.equal(res.headers['x-ratelimit-limit'], '4');
  }
  assertLimited(t, await call(d, 'GET', '/capabilities'), 'reads', 'read 5');
  assertLimited(
    t,
    await call(d, 'GET', `/workspace/${encodeURIComponent(d.config.workspace)}/sessions`),
    'reads',
    'another GET route',
  );
  for (const url of ['/health', '/livez', '/readyz', '/metrics']) {
    for (let i = 0; i < 6; i++) {
      const res = await call(d, 'GET', url);
      if (res.status !== 200) t.fail(`${url} → ${res.status}`);
    }
  }
  t.pass('probes and /metrics are never limited');

  // Mutations still have their whole budget.
  const id = await createSession(d);
  const stream = await openEvents(t, d, id);
  t.equal(stream.status, 429, 'no stream once reads are spent');
  t.equal(stream.headers['content-type']?.toString().startsWith('application/json'), true);
  t.equal((await call(d, 'POST', `/session/${id}/cancel`, {})).status, 204, 'mutation 2');
  t.equal((await call(d, 'POST', `/session/${id}/cancel`, {})).status, 204, 'mutation 3');
  assertLimited(t, await call(d, 'POST', `/session/${id}/cancel`, {}), 'mutations', 'mutation 4');
  assertLimited(t, await call(d, 'POST', '/session', {}), 'mutations', 'another POST route');

  // Prompts have theirs.
  t.equal((await call(d, 'POST', `/session/${id}/prompt`, textPrompt('one'))).status, 200, 'prompt 1');
  t.equal((await call(d, 'POST', `/session/${id}/prompt`, textPrompt('two'))).status, 200, 'prompt 2');
  assertLimited(t, await call(d, 'POST', `/session/${id}/prompt`, textPrompt('three')), 'prompts', 'prompt 3');
});

t.test('budgets are per client address', async (t) => {
  const d = await startDaemon(t, { args: ['--rate-limit-reads', '1'] });
  t.equal((await call(d, 'GET', '/capabilities')).status, 200);
  t.equal((await call(d, 'GET', '/capabilities')).status, 429);

  // Another loopback source address is another client (Linux routes all of 127/8 to lo).
  const other = new Agent({ localAddress: '127.0.0.2' });
  t.teardown(() => other.close());
  const res = await request(`${d.baseUrl}/capabilities`, { dispatcher: other });
  await res.body.dump();
  t.equal(res.statusCode, 200, 'a different client still has its budget');
});

t.test('refused requests do not spend the budget: auth runs first', async (t) => {
  const d: TestDaemon = await startDaemon(t, { args: ['--token', 'rl-secret', '--rate-limit-reads', '2'] });
  for (let i = 0; i < 5; i++) {
    t.equal((await call(d, 'GET', '/capabilities', undefined, { authorization: 'Bearer wrong' })).status, 401);
  }
  t.equal((await call(d, 'GET', '/capabilities')).status, 200);
  t.equal((await call(d, 'GET', '/capabilities')).status, 200);
  assertLimited(t, await call(d, 'GET', '/capabilities'), 'reads', 'read 3');
});

t.test('budgets are whole requests per minute, 0 or more', async (t) => {
  const workspace = tempDir(t);
  t.equal(testConfig(t, { workspace, args: ['--rate-limit-prompts', '30'] }).rateLimitPrompts, 30);
  t.throws(
    () => testConfig(t, { workspace, args: ['--rate-limit-reads', '-1'] }),
    new ConfigError('Invalid --rate-limit-reads "-1": must be an integer >= 0.'),
  );
  t.throws(() => testConfig(t, { workspace, args: ['--rate-limit-mutations', '1.5'] }), ConfigError);
});
