// Route schemas compile on a route's first request, not at ready (issue 16: start-up time and idle
// RSS). What must not change: every schema still compiles (a schema ajv or fast-json-stringify
// refuses fails here, not in some request), and a compiled-late validator answers as an early one.
import t from 'tap';
import { compileAllSchemas } from '../src/schemas/lazy-compilers.js';
import { buildTestApp } from './support/app.js';

t.test('nothing is compiled at ready; everything compiles when asked', async (t) => {
  const app = await buildTestApp(t);
  await app.ready();
  const pending = app.pendingSchemas.pending.size;
  t.ok(pending > 20, `validators and serializers wait for their first request (${pending} pending)`);
  t.equal(compileAllSchemas(app.pendingSchemas), pending, 'each pending schema compiled once');
  t.equal(app.pendingSchemas.pending.size, 0);
});

t.test('a late-compiled validator refuses bad input with the envelope, and compiles once', async (t) => {
  const app = await buildTestApp(t);
  await app.ready();
  const before = app.pendingSchemas.pending.size;
  const bad = await app.inject({ method: 'POST', url: '/session', payload: { sessionScope: 'nope' } });
  t.equal(bad.statusCode, 400);
  t.type(bad.json<{ error: unknown }>().error, 'string');
  const after = app.pendingSchemas.pending.size;
  t.ok(after < before, 'the route compiled its schemas on the first request');
  await app.inject({ method: 'POST', url: '/session', payload: { sessionScope: 'nope' } });
  t.equal(app.pendingSchemas.pending.size, after, 'and not again');
});
