// Route policy (plugins/route-policy.ts): every route declares in its config whether it is a probe, whether
// it may be shed, and which rate budget it draws from, and the guards, the load shedder and the rate limits
// read that declaration instead of lists of URLs. Routes added here under made-up URLs show that the
// policy, not the path, decides; a route without a policy keeps the daemon from starting.
import t, { type Test } from 'tap';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/app.js';
import { policies, type RoutePolicy } from '../src/plugins/route-policy.js';
import { obj, testConfig, until, type TestOptions } from './helper.js';

/** The real app with extra GET routes, one per policy given, added before it is ready. */
async function appWith(t: Test, routes: Record<string, RoutePolicy>, opts: TestOptions = {}): Promise<FastifyInstance> {
  const app = await buildApp(testConfig(t, opts));
  t.teardown(() => app.close());
  for (const [url, policy] of Object.entries(routes)) {
    // Hidden from the OpenAPI document, whose transform expects the schemas every real route has.
    app.get(url, { schema: { hide: true }, config: { policy } }, async () => ({ ok: true }));
  }
  await app.ready();
  return app;
}

async function status(app: FastifyInstance, method: 'GET' | 'HEAD', url: string, token?: string): Promise<number> {
  const headers = token === undefined ? {} : { authorization: `Bearer ${token}` };
  return (await app.inject({ method, url, headers })).statusCode;
}

t.test('every route of the daemon declares a policy; a route without one fails start-up', async (t) => {
  const app = await buildApp(testConfig(t));
  t.teardown(() => app.close());
  await t.resolves(async () => {
    await app.ready();
  }, 'the real routes, the docs included, all have one');

  const unmarked = await buildApp(testConfig(t));
  t.teardown(() => unmarked.close());
  unmarked.get('/unmarked', async () => ({ ok: true }));
  await t.rejects(
    async () => {
      await unmarked.ready();
    },
    { message: 'Routes without a policy (config.policy): GET /unmarked; HEAD /unmarked' },
    'named with its automatic HEAD twin',
  );
});

t.test('the probe policy, not the path, exempts a route from the token on a loopback bind', async (t) => {
  const routes = { '/probe-like': policies.probe, '/read-like': policies.read, '/scrape-like': policies.scrape };
  const app = await appWith(t, routes, { args: ['--token', 'p0licy'] });
  t.equal(await status(app, 'GET', '/probe-like'), 200, 'a probe needs no token');
  t.equal(await status(app, 'HEAD', '/probe-like'), 200, 'nor does its HEAD twin');
  t.equal(await status(app, 'GET', '/read-like'), 401, 'a read does');
  t.equal(await status(app, 'HEAD', '/read-like'), 401);
  t.equal(await status(app, 'GET', '/scrape-like'), 401, 'so does a scrape');
  t.equal(await status(app, 'GET', '/read-like', 'p0licy'), 200);

  const locked = await appWith(t, routes, { args: ['--token', 'p0licy', '--require-auth'] });
  t.equal(await status(locked, 'GET', '/probe-like'), 401, '--require-auth closes the exemption');
  t.equal(await status(locked, 'GET', '/probe-like', 'p0licy'), 200);
});

t.test('the budget comes from the policy: the docs count as reads, probes and scrapes as nothing', async (t) => {
  const routes = { '/probe-like': policies.probe, '/read-like': policies.read, '/scrape-like': policies.scrape };
  const app = await appWith(t, routes, { args: ['--rate-limit-reads', '2'] });
  t.equal(await status(app, 'GET', '/read-like'), 200);
  t.equal(await status(app, 'GET', '/docs/json'), 200, 'a docs route spends the same budget');
  const spent = await app.inject({ method: 'GET', url: '/read-like' });
  t.equal(spent.statusCode, 429);
  t.equal(obj(spent.json()).budget, 'reads');
  t.equal(await status(app, 'GET', '/docs/json'), 429);
  for (let i = 0; i < 5; i++) {
    t.equal(await status(app, 'GET', '/probe-like'), 200, `probe ${i + 1}`);
    t.equal(await status(app, 'GET', '/scrape-like'), 200, `scrape ${i + 1}`);
  }
});

t.test('under pressure, the shed flag decides which routes still answer', async (t) => {
  const routes = { '/probe-like': policies.probe, '/read-like': policies.read, '/scrape-like': policies.scrape };
  // One byte of heap is always exceeded: once the start-up warm-up is over, the daemon is under pressure.
  const app = await appWith(t, routes, { args: ['--max-heap-used-bytes', '1'] });
  await until(async () => (await app.readiness.check()).checks.load === 'overloaded', 'the daemon to report pressure');
  t.equal(await status(app, 'GET', '/read-like'), 503, 'a read is shed');
  t.equal(await status(app, 'GET', '/docs/json'), 503, 'so is a docs route');
  t.equal(await status(app, 'GET', '/no-such-route'), 503, 'and a request that matched no route');
  t.equal(await status(app, 'GET', '/probe-like'), 200, 'a probe is not');
  t.equal(await status(app, 'GET', '/scrape-like'), 200, 'nor a scrape');
});
