// The fuzz test, part one: generated bodies on every route of a real daemon with the real embedded agent.
// Every answer must be below 500 (a documented 503 aside), come within a bound, and be a JSON {error} when it
// is a 4xx; afterwards the daemon must still serve a whole turn and no agent process may be left over.
// fuzz-kit.ts has the generators and the rules; fuzz-paths.test.ts is part two (ids, headers, content types,
// and the steerable agent). Seed and run counts: FUZZ_SEED, FUZZ_RUNS.
import t from 'tap';
import fc from 'fast-check';
import {
  aftermath,
  anyJson,
  anyString,
  fuzz,
  GET_ROUTES,
  hasId,
  holed,
  idSpec,
  invalidJsonText,
  lastEventId,
  oneWrong,
  POST_ROUTES,
  queryString,
  rawSegment,
  readable,
  Rig,
  ROUTES,
  runsFor,
  SEED,
  textArbitrary,
  validBlock,
  validBody,
  workspaceSegment,
  wrongValue,
  type BodySpec,
  type FuzzContext,
  type IdSpec,
  type Probe,
  type RouteName,
  type Shape,
} from './fuzz-kit.js';

// About a minute on a 2-core CI machine; every property has a time budget (shrinking included), and this
// bound leaves room for all of them to run out on a failing build without losing the report.
t.setTimeout(180_000);
t.comment(`fuzz seed ${SEED} (set FUZZ_SEED to change it, FUZZ_RUNS to change every property's run count)`);

const JSON_TYPE = { 'content-type': 'application/json' };

function idFor(route: RouteName, ctx: FuzzContext): fc.Arbitrary<IdSpec | undefined> {
  if (route === 'create') return fc.constant(undefined);
  if (route === 'permission') return rawSegment.map((raw): IdSpec => ({ raw }));
  if (route === 'list') return workspaceSegment(ctx);
  return idSpec({ real: 8, near: 1, raw: 1 });
}

/** A POST to `route` with a body of any kind: absent, any JSON, valid, valid but one field wrong, not JSON. */
function postProbe(route: RouteName, ctx: FuzzContext): fc.Arbitrary<Probe> {
  const body = fc.oneof(
    { weight: 1, arbitrary: fc.constant(undefined) },
    { weight: 3, arbitrary: anyJson.map((json): BodySpec => ({ json })) },
    { weight: 5, arbitrary: oneWrong(validBody(route, ctx)).map((json): BodySpec => ({ json })) },
    { weight: 2, arbitrary: validBody(route, ctx).map((json): BodySpec => ({ json })) },
    { weight: 1, arbitrary: invalidJsonText.map((text): BodySpec => ({ text })) },
  );
  return fc
    .record({ id: idFor(route, ctx), body })
    .map(({ id, body }) =>
      readable({ route, method: 'POST', id, headers: body === undefined ? {} : { ...JSON_TYPE }, body }),
    );
}

/** A GET with a query string and, for the event stream, a Last-Event-ID. */
function getProbe(route: RouteName, ctx: FuzzContext): fc.Arbitrary<Probe> {
  return fc
    .record({ id: idFor(route, ctx), query: queryString, last: fc.option(lastEventId, { nil: undefined }) })
    .map(({ id, query, last }) => {
      const headers: Record<string, string> = route === 'events' && last !== undefined ? { 'last-event-id': last } : {};
      return readable({ route, method: 'GET', id: hasId(route) ? id : undefined, query, headers });
    });
}

/** Prompts of content blocks of every kind: valid, one field of the wrong type, unknown types, not blocks. */
function promptProbe(): fc.Arbitrary<Probe> {
  const unknownBlock = fc.record(
    {
      type: fc.oneof(fc.constantFrom('TEXT', 'Text', 'tool_call', 'file', 'html', ''), anyString),
      text: textArbitrary,
      data: fc.string(),
    },
    { requiredKeys: ['type'] },
  );
  const block = fc.oneof(
    { weight: 3, arbitrary: validBlock },
    { weight: 6, arbitrary: oneWrong(validBlock) },
    { weight: 2, arbitrary: unknownBlock },
    { weight: 1, arbitrary: fc.dictionary(anyString, fc.jsonValue({ maxDepth: 3 }), { maxKeys: 4 }) },
    { weight: 1, arbitrary: wrongValue },
  );
  const extras = fc.dictionary(
    fc.constantFrom('_meta', 'sessionId', 'messageId', 'prompts'),
    fc.jsonValue({ maxDepth: 3 }),
    { maxKeys: 2 },
  );
  return fc
    .record({
      id: idSpec({ real: 10, near: 1, raw: 1 }),
      prompt: fc.array(block, { minLength: 1, maxLength: 4 }),
      extras,
    })
    .map(({ id, prompt, extras }) =>
      readable({
        route: 'prompt',
        method: 'POST',
        id,
        headers: { ...JSON_TYPE },
        body: { json: { ...extras, prompt } },
      }),
    );
}

/** Nesting far deeper than any fast-check value, as raw text, put in place of any part of a valid body. */
function deepProbe(ctx: FuzzContext): fc.Arbitrary<Probe> {
  const depth = fc.oneof(
    fc.integer({ min: 1, max: 64 }),
    fc.integer({ min: 65, max: 1_000 }),
    fc.integer({ min: 1_001, max: 6_000 }),
  );
  const shape = fc.constantFrom<Shape>('array', 'object', 'mixed');
  return fc.oneof(
    ...POST_ROUTES.map((route) =>
      fc
        .record({ id: idFor(route, ctx), depth, shape, around: holed(validBody(route, ctx)) })
        .map(({ id, depth, shape, around }) =>
          readable({ route, method: 'POST', id, headers: { ...JSON_TYPE }, body: { deep: depth, shape, around } }),
        ),
    ),
  );
}

/** Runs per POST route: the prompt route reaches the agent in the most ways. */
const POST_RUNS: Record<string, number> = { prompt: 400 };

t.test('every route, every kind of body (embedded agent)', async (t) => {
  const rig = await Rig.start(t, 'embedded');
  // One property per route, so that a failure on one route does not hide what the others do.
  for (const route of POST_ROUTES) {
    await fuzz(t, rig, {
      name: `bodies on POST ${ROUTES[route].path}`,
      arb: postProbe(route, rig.ctx),
      runs: runsFor(POST_RUNS[route] ?? 150),
      budgetMs: 15_000,
    });
  }
  await fuzz(t, rig, {
    name: 'queries and Last-Event-ID on every GET route',
    arb: fc.oneof(...GET_ROUTES.map((route) => getProbe(route, rig.ctx))),
    runs: runsFor(250),
    budgetMs: 15_000,
  });
  await aftermath(t, rig);
});

t.test('prompts of content blocks of every kind (embedded agent)', async (t) => {
  const rig = await Rig.start(t, 'embedded');
  await fuzz(t, rig, {
    name: 'prompt content blocks',
    arb: promptProbe(),
    runs: runsFor(500),
    budgetMs: 25_000,
  });
  await aftermath(t, rig);
});

t.test('deeply nested bodies on every route (embedded agent)', async (t) => {
  const rig = await Rig.start(t, 'embedded');
  await fuzz(t, rig, {
    name: 'deep nesting',
    arb: deepProbe(rig.ctx),
    runs: runsFor(150),
    budgetMs: 25_000,
    canaryEveryRun: true,
  });
  await aftermath(t, rig);
});
