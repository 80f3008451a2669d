// The fuzz test, part two: path ids, query strings and headers on every route (HEAD included), bodies of
// every content type and of random bytes, and a smaller run against the steerable agent, which answers
// invalid params its own way. Same rules as part one (fuzz-bodies.test.ts): below 500 unless a documented
// 503, within a bound, a JSON {error} for every 4xx, an id that names no live session never reaches one; and
// afterwards a working daemon and no leftover agent process. Seed and run counts: FUZZ_SEED, FUZZ_RUNS.
import t from 'tap';
import fc from 'fast-check';
import {
  aftermath,
  anyJson,
  bigString,
  CONTENT_TYPES,
  extraHeaders,
  fuzz,
  GET_ROUTES,
  hasId,
  idSpec,
  invalidJsonText,
  oneWrong,
  POST_ROUTES,
  queryString,
  rawSegment,
  readable,
  Rig,
  ROUTES,
  runsFor,
  SEED,
  validBlock,
  validBody,
  workspaceSegment,
  type BodySpec,
  type FuzzContext,
  type IdSpec,
  type Method,
  type Probe,
  type RouteName,
} from './fuzz-kit.js';

// About a minute on a 2-core CI machine; every property has a time budget (shrinking included), and this
// bound leaves room for all of them to run out on a failing build without losing the report.
t.setTimeout(180_000);
t.comment(`fuzz seed ${SEED} (set FUZZ_SEED to change it, FUZZ_RUNS to change every property's run count)`);

const ALL_ROUTES: RouteName[] = [...POST_ROUTES, ...GET_ROUTES];

/** Ids of every sort: traversal, encoded separators, odd escapes, very long, unicode, near misses. */
function pathId(route: RouteName, ctx: FuzzContext): fc.Arbitrary<IdSpec | undefined> {
  if (!hasId(route)) return fc.constant(undefined);
  if (route === 'list') return workspaceSegment(ctx);
  if (route === 'permission') return rawSegment.map((raw): IdSpec => ({ raw }));
  return idSpec({ real: 2, near: 3, raw: 6 });
}

/** `route` with each method it has (HEAD for every GET), odd ids, queries and headers, and a valid body. */
function pathProbe(route: RouteName, ctx: FuzzContext): fc.Arbitrary<Probe> {
  const methods: Method[] = ROUTES[route].method === 'GET' ? ['GET', 'HEAD'] : ['POST'];
  return fc
    .record({
      method: fc.constantFrom(...methods),
      id: pathId(route, ctx),
      query: queryString,
      headers: fc.option(extraHeaders, { nil: undefined, freq: 2 }),
      body: ROUTES[route].method === 'POST' ? validBody(route, ctx) : fc.constant(undefined),
    })
    .map(({ method, id, query, headers, body }) => {
      const sent: Record<string, string> = { ...headers };
      let spec: BodySpec | undefined;
      if (body !== undefined) {
        sent['content-type'] = 'application/json';
        spec = { json: body };
      }
      return readable({ route, method, id, query, headers: sent, body: spec });
    });
}

const MB = 1024 * 1024;

/** Bodies of every content type: random bytes, not-quite JSON, JSON under other types, and too large ones. */
function contentTypeProbe(ctx: FuzzContext): fc.Arbitrary<Probe> {
  const contentType = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...CONTENT_TYPES) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.stringMatching(/^[a-z]{1,10}$/), fc.stringMatching(/^[a-z0-9+.-]{1,12}$/))
        .map(([a, b]) => `${a}/${b}`),
    },
  );
  const body = fc.oneof(
    { weight: 4, arbitrary: fc.uint8Array({ maxLength: 4_096 }).map((bytes): BodySpec => ({ bytes })) },
    { weight: 3, arbitrary: invalidJsonText.map((text): BodySpec => ({ text })) },
    { weight: 3, arbitrary: anyJson.map((json): BodySpec => ({ json })) },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(10 * MB - 64, 10 * MB + 1, 12 * MB)
        .map((size): BodySpec => ({ bytes: new Uint8Array(size).fill(0x61) })),
    },
    {
      weight: 1,
      arbitrary: bigString.map((text): BodySpec => ({ json: { prompt: [{ type: 'text', text: text.slice(0, MB) }] } })),
    },
  );
  return fc.oneof(
    ...POST_ROUTES.map((route) =>
      fc
        .record({
          id: route === 'create' ? fc.constant(undefined) : pathId(route, ctx).map((id) => id ?? { real: 0 }),
          real: fc.nat(1),
          useReal: fc.boolean(),
          contentType: fc.option(contentType, { nil: undefined, freq: 8 }),
          body,
        })
        .map(({ id, real, useReal, contentType, body }) => {
          const target: IdSpec | undefined = route === 'create' ? undefined : useReal ? { real } : id;
          const headers: Record<string, string> = contentType === undefined ? {} : { 'content-type': contentType };
          return readable({ route, method: 'POST', id: target, headers, body });
        }),
    ),
  );
}

/** Routes the steerable agent answers: everything that is forwarded to it. */
const STEER_ROUTES: RouteName[] = ['create', 'load', 'resume', 'prompt', 'cancel', 'model'];

/**
 * For the steerable agent: valid and one-field-wrong bodies on `route`; live ids, ids it does not know, and
 * odd ones (which it would restore, so they must not reach it).
 */
function steerProbe(route: RouteName, ctx: FuzzContext): fc.Arbitrary<Probe> {
  const unknownId = fc
    .string({ unit: fc.constantFrom('a', 'b', '1', '-'), maxLength: 12 })
    .map((s): IdSpec => ({ raw: `unknown-${s}` }));
  const valid =
    route === 'prompt'
      ? fc.record({ prompt: fc.array(validBlock, { minLength: 1, maxLength: 3 }) })
      : validBody(route, ctx);
  const id: fc.Arbitrary<IdSpec | undefined> =
    route === 'create'
      ? fc.constant(undefined)
      : fc.oneof(
          { weight: 6, arbitrary: idSpec({ real: 1, near: 0, raw: 0 }) },
          { weight: 1, arbitrary: unknownId },
          { weight: 2, arbitrary: rawSegment.map((raw): IdSpec => ({ raw })) },
        );
  const body = fc.oneof(
    { weight: 2, arbitrary: valid },
    { weight: 5, arbitrary: oneWrong(valid) },
    { weight: 1, arbitrary: anyJson },
  );
  return fc
    .record({ id, body })
    .map(({ id, body }) =>
      readable({ route, method: 'POST', id, headers: { 'content-type': 'application/json' }, body: { json: body } }),
    );
}

t.test('path ids, queries and headers on every route (embedded agent)', async (t) => {
  const rig = await Rig.start(t, 'embedded');
  // One property per route, so that a failure on one route does not hide what the others do.
  for (const route of ALL_ROUTES) {
    await fuzz(t, rig, {
      name: `ids, queries and headers on ${ROUTES[route].method} ${ROUTES[route].path}`,
      arb: pathProbe(route, rig.ctx),
      runs: runsFor(60),
      budgetMs: 15_000,
    });
  }
  await aftermath(t, rig);
});

t.test('bodies of every content type (embedded agent)', async (t) => {
  const rig = await Rig.start(t, 'embedded');
  await fuzz(t, rig, {
    name: 'content types and raw bytes',
    arb: contentTypeProbe(rig.ctx),
    runs: runsFor(400),
    budgetMs: 25_000,
  });
  await aftermath(t, rig);
});

t.test('bodies on the routes the agent serves (steerable agent)', async (t) => {
  const rig = await Rig.start(t, 'steer');
  for (const route of STEER_ROUTES) {
    await fuzz(t, rig, {
      name: `steerable agent: bodies on POST ${ROUTES[route].path}`,
      arb: steerProbe(route, rig.ctx),
      runs: runsFor(70),
      budgetMs: 10_000,
    });
  }
  await aftermath(t, rig);
});
