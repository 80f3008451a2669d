/**
 * The fuzz test's kit: a daemon rig that can be rebuilt after an input broke it, the generators (fast-check
 * arbitraries) for every route's inputs, one request sender with a hard time bound, the verdict every answer
 * must pass, and the checks that run after a fuzz run (the daemon still works, no agent process leaked).
 *
 * Reproducing: every property runs with the seed printed in the tap output (FUZZ_SEED overrides it, FUZZ_RUNS
 * overrides every property's run count). A failure prints fast-check's shrunk counterexample and its
 * `{ seed, path }`. FUZZ_CATALOG=1 runs every generated input instead of stopping at a property's first
 * failure, and lists each kind of failure found with its first input: for whoever fixes them.
 */
import { readdirSync, readFileSync } from 'node:fs';
import fc from 'fast-check';
import { request } from 'undici';
import {
  createSession,
  isType,
  livingInGroup,
  obj,
  openEvents,
  startDaemon,
  steerDaemon,
  tempDir,
  within,
  type Teardown,
  type TestDaemon,
} from './helper.js';
import type { Steer } from './fixtures/steer.js';

// ---- knobs ----------------------------------------------------------------------------------------------

export const SEED = envInteger('FUZZ_SEED') ?? 20_260_611;
const RUNS_OVERRIDE = envInteger('FUZZ_RUNS');

/** How long one request may take before it counts as hung. */
const REQUEST_LIMIT_MS = 10_000;
/**
 * Once a property has failed, fast-check only shrinks: it re-runs smaller inputs to find the least one that
 * still fails. A request on this machine's loopback answers in milliseconds, so a shorter bound is plenty to
 * tell "still hangs" apart, and keeps the shrinking of a hang from taking minutes.
 */
const SHRINK_LIMIT_MS = 2_000;

function envInteger(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n)) throw new Error(`${name} must be an integer, got ${JSON.stringify(raw)}`);
  return n;
}

export function runsFor(defaultRuns: number): number {
  return RUNS_OVERRIDE ?? defaultRuns;
}

// ---- the inputs -----------------------------------------------------------------------------------------

export type Method = 'GET' | 'HEAD' | 'POST';

/**
 * A path parameter: one of the rig's live sessions (by index), an almost-right variant of one, or a segment
 * sent as is (already encoded). Live ids are looked up when the probe is sent: a rebuilt daemon has new ones.
 */
export type IdSpec = { real: number } | { near: number; how: number } | { raw: string };

/** The request body, kept structured so that a counterexample reads well. */
export type BodySpec =
  | { json: unknown }
  | { text: string }
  | { bytes: Uint8Array }
  /** `around` serialized with its HOLE string replaced by `depth` levels of `shape` nesting. */
  | { deep: number; shape: Shape; around: unknown };

export type Shape = 'array' | 'object' | 'mixed';

export interface Probe {
  route: RouteName;
  method: Method;
  id?: IdSpec;
  /** Query string, without the `?`. */
  query?: string;
  headers: Record<string, string>;
  body?: BodySpec;
}

const HOLE = '\u0000hole\u0000';

interface Route {
  method: 'GET' | 'POST';
  /** With `{id}` where the path parameter goes. */
  path: string;
  /** Routes whose `:id` names a session: an id that is no live session must not answer 2xx there. */
  sessionScoped: boolean;
}

export const ROUTES = {
  create: { method: 'POST', path: '/session', sessionScoped: false },
  load: { method: 'POST', path: '/session/{id}/load', sessionScoped: true },
  resume: { method: 'POST', path: '/session/{id}/resume', sessionScoped: true },
  list: { method: 'GET', path: '/workspace/{id}/sessions', sessionScoped: false },
  prompt: { method: 'POST', path: '/session/{id}/prompt', sessionScoped: true },
  cancel: { method: 'POST', path: '/session/{id}/cancel', sessionScoped: true },
  model: { method: 'POST', path: '/session/{id}/model', sessionScoped: true },
  events: { method: 'GET', path: '/session/{id}/events', sessionScoped: true },
  permission: { method: 'POST', path: '/permission/{id}', sessionScoped: false },
  health: { method: 'GET', path: '/health', sessionScoped: false },
  capabilities: { method: 'GET', path: '/capabilities', sessionScoped: false },
  livez: { method: 'GET', path: '/livez', sessionScoped: false },
  readyz: { method: 'GET', path: '/readyz', sessionScoped: false },
  metrics: { method: 'GET', path: '/metrics', sessionScoped: false },
} as const satisfies Record<string, Route>;

export type RouteName = keyof typeof ROUTES;

/** Whether `route` has a path parameter. */
export function hasId(route: RouteName): boolean {
  return ROUTES[route].path.includes('{id}');
}

export const POST_ROUTES: RouteName[] = ['create', 'load', 'resume', 'prompt', 'cancel', 'model', 'permission'];
export const GET_ROUTES: RouteName[] = ['list', 'events', 'health', 'capabilities', 'livez', 'readyz', 'metrics'];

/** What the generators need to know about the daemon under test. */
export interface FuzzContext {
  workspace: string;
  /** Model ids the agent knows. */
  models: string[];
  agent: 'embedded' | 'steer';
}

// ---- rendering ------------------------------------------------------------------------------------------

function nest(depth: number, shape: Shape): string {
  const open = { array: '[', object: '{"a":', mixed: '[{"a":' }[shape];
  const close = { array: ']', object: '}', mixed: '}]' }[shape];
  const inner = shape === 'array' ? '' : '0';
  return open.repeat(depth) + inner + close.repeat(depth);
}

function renderBody(body: BodySpec): string | Uint8Array {
  if ('json' in body) return JSON.stringify(body.json) ?? '';
  if ('text' in body) return body.text;
  if ('bytes' in body) return body.bytes;
  const around = JSON.stringify(body.around) ?? '';
  const hole = JSON.stringify(HOLE);
  return around.includes(hole) ? around.replace(hole, nest(body.deep, body.shape)) : nest(body.deep, body.shape);
}

function idSegment(id: IdSpec | undefined, rig: Rig): string {
  if (id === undefined) return '';
  if ('raw' in id) return id.raw;
  if ('near' in id) return nearRealId(rig, id.near, id.how);
  return encodeURIComponent(rig.sessions[id.real % rig.sessions.length] ?? 'no-session');
}

function probeUrl(probe: Probe, rig: Rig): string {
  const path = ROUTES[probe.route].path.replace('{id}', idSegment(probe.id, rig));
  return probe.query === undefined ? path : `${path}?${probe.query}`;
}

/**
 * `text` cut to about `max` characters, with control and line-separator characters escaped: a raw CR or
 * line separator in a tap comment or message would be read as a new TAP line.
 */
function clip(text: string, max = 300): string {
  const shown = text.length <= max ? text : `${text.slice(0, max - 80)}…[${text.length} chars]…${text.slice(-60)}`;
  // \p{Cc} is exactly U+0000–U+001F and U+007F–U+009F.
  return shown.replace(/[\p{Cc}\u2028\u2029]/gu, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function describeBody(body: BodySpec): string {
  if ('json' in body) return `json ${clip(JSON.stringify(body.json) ?? 'undefined')}`;
  if ('text' in body) return `text ${clip(JSON.stringify(body.text))}`;
  if ('bytes' in body) {
    const head = Buffer.from(body.bytes.subarray(0, 24)).toString('hex');
    return `${body.bytes.length} bytes 0x${head}${body.bytes.length > 24 ? '…' : ''}`;
  }
  const around = JSON.stringify(body.around) ?? '';
  return `${body.deep} levels of ${body.shape} nesting at ${clip(around.replace(JSON.stringify(HOLE), '<HERE>'))}`;
}

function describeProbe(probe: Probe): string {
  const route = ROUTES[probe.route];
  let id = '';
  if (probe.id !== undefined) {
    if ('real' in probe.id) id = `<live session #${probe.id.real % 2}>`;
    else if ('near' in probe.id) id = `<variant ${probe.id.how % NEAR_VARIANTS} of live session #${probe.id.near % 2}>`;
    else id = clip(probe.id.raw, 200);
  }
  const path = route.path.replace('{id}', id) + (probe.query === undefined ? '' : `?${clip(probe.query, 200)}`);
  const headers = Object.entries(probe.headers)
    .map(([k, v]) => `${k}: ${clip(JSON.stringify(v), 200)}`)
    .join(', ');
  const body = probe.body === undefined ? 'no body' : describeBody(probe.body);
  return `${probe.method} ${path} [${headers}] ${body}`;
}

/** Gives a generated probe a readable form in fast-check's reports (and defuses agent commands, see `tame`). */
export function readable(probe: Probe): Probe {
  const tamed = tame(probe);
  return Object.assign(tamed, { [fc.toStringMethod]: () => describeProbe(tamed) });
}

// ---- generators -----------------------------------------------------------------------------------------

const asciiChar = fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c));

/** Strings of every kind: ASCII, unicode graphemes, and lone surrogates. */
export const anyString: fc.Arbitrary<string> = fc.oneof(
  { withCrossShrink: true },
  fc.string(),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom('', ' ', '\u0000', '\n', 'null', '__proto__', '💥'),
);

/** Large strings, cheaply: a short piece repeated up to ~1 MB. */
export const bigString: fc.Arbitrary<string> = fc
  .tuple(fc.string({ minLength: 1, maxLength: 6 }), fc.integer({ min: 1_000, max: 200_000 }))
  .map(([piece, times]) => piece.repeat(times));

/** Any JSON value: every shape, nesting and size. */
export const anyJson: fc.Arbitrary<unknown> = fc.oneof(
  { withCrossShrink: true },
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 6, stringUnit: 'grapheme' }) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 20, depthSize: 'large', stringUnit: 'binary' }) },
  { weight: 1, arbitrary: bigString },
  {
    weight: 1,
    arbitrary: fc.array(fc.jsonValue({ maxDepth: 1 }), { minLength: 500, maxLength: 5_000, size: 'max' }),
  },
  { weight: 1, arbitrary: fc.dictionary(anyString, fc.jsonValue({ maxDepth: 1 }), { minKeys: 50, maxKeys: 500 }) },
);

/** A value of any type, for a field that expects another one. */
export const wrongValue: fc.Arbitrary<unknown> = fc.oneof(
  { withCrossShrink: true },
  fc.constantFrom<unknown>(null, true, false, 0, -1, 1.5, -0, 1e308, '', [], {}, [null], { type: 'text' }),
  fc.integer(),
  fc.double(),
  anyString,
  fc.jsonValue({ maxDepth: 3 }),
  bigString,
);

/**
 * Commands of the embedded agent (docs/agent.md) that end on their own at once. Generated prompts may send
 * these; any other command is defused by `tame`.
 */
const HARMLESS_COMMANDS = [
  '/help',
  '/HELP',
  '/history',
  '/nonsense',
  '/slow 2 1',
  '/flood 3',
  '/read README.md',
  '/read "no such file"',
  '/slow',
  '/slow -1',
  '/flood 0',
];

function textBlocks(prompt: unknown[]): Record<string, unknown>[] {
  return prompt.filter(
    (b): b is Record<string, unknown> => isObject(b) && b.type === 'text' && typeof b.text === 'string',
  );
}

/**
 * A prompt body the agents take as plain text unless it is a harmless command. The embedded agent runs the
 * joined text of the text blocks as a command when it starts with `/` and a letter; the steerable one acts on
 * a first text block of `crash`, `hang`, `perm` or `flood <n>`. Some of those wait for a permission vote or a
 * cancel, run for hours, or kill the agent on purpose: not what a fuzz input is about. Such a prompt gets an
 * `x` before its first text block.
 */
function tamePrompt(body: unknown): unknown {
  if (!isObject(body) || !Array.isArray(body.prompt)) return body;
  const blocks: unknown[] = body.prompt;
  const texts = textBlocks(blocks);
  if (texts.length === 0) return body;
  const command = texts
    .map((b) => b.text)
    .join('\n')
    .trim();
  const first = String(texts[0].text).trim();
  const risky =
    (/^\/[a-zA-Z]/.test(command) && !HARMLESS_COMMANDS.includes(command)) ||
    ['crash', 'hang', 'perm'].includes(first) ||
    /^flood\s+\d+$/.test(first);
  if (!risky) return body;
  const index = blocks.indexOf(texts[0]);
  const prompt = [...blocks];
  prompt[index] = { ...texts[0], text: `x${String(texts[0].text)}` };
  return { ...body, prompt };
}

function tame(probe: Probe): Probe {
  const body = probe.body;
  if (probe.route !== 'prompt' || body === undefined) return probe;
  if ('json' in body) return { ...probe, body: { json: tamePrompt(body.json) } };
  if ('deep' in body) return { ...probe, body: { ...body, around: tamePrompt(body.around) } };
  return probe;
}

/** Text for a text block: any string, a long one, or a harmless command. */
export const textArbitrary: fc.Arbitrary<string> = fc.oneof(
  { withCrossShrink: true },
  { weight: 12, arbitrary: anyString },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.string({ minLength: 1, maxLength: 6 }), fc.integer({ min: 100, max: 10_000 }))
      .map(([piece, times]) => piece.repeat(times)),
  },
  { weight: 2, arbitrary: fc.constantFrom(...HARMLESS_COMMANDS) },
);

const base64 = fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b).toString('base64'));
const annotations = fc.record(
  {
    audience: fc.subarray(['user', 'assistant']),
    priority: fc.double({ min: 0, max: 1, noNaN: true }),
    lastModified: fc.constant('2026-01-01T00:00:00Z'),
  },
  { requiredKeys: [] },
);
const uri = fc.oneof(
  fc.constantFrom('file:///tmp/x.txt', 'file:///etc/passwd', 'https://example.com/a', 'session:abc', ''),
  fc.webUrl(),
);

/** Content blocks of every kind the ACP schema has, each valid. */
export const validBlock: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  { withCrossShrink: true },
  { weight: 6, arbitrary: fc.record({ type: fc.constant('text'), text: textArbitrary }) },
  {
    weight: 1,
    arbitrary: fc.record(
      {
        type: fc.constant('text'),
        text: textArbitrary,
        annotations,
        _meta: fc.dictionary(fc.string(), fc.jsonValue()),
      },
      { requiredKeys: ['type', 'text'] },
    ),
  },
  {
    weight: 1,
    arbitrary: fc.record(
      { type: fc.constant('image'), data: base64, mimeType: fc.constantFrom('image/png', 'image/jpeg'), uri },
      { requiredKeys: ['type', 'data', 'mimeType'] },
    ),
  },
  {
    weight: 1,
    arbitrary: fc.record({ type: fc.constant('audio'), data: base64, mimeType: fc.constant('audio/wav') }),
  },
  {
    weight: 1,
    arbitrary: fc.record(
      {
        type: fc.constant('resource_link'),
        uri,
        name: fc.string(),
        mimeType: fc.constant('text/plain'),
        size: fc.nat(),
        title: fc.string(),
        description: fc.string(),
      },
      { requiredKeys: ['type', 'uri', 'name'] },
    ),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      type: fc.constant('resource'),
      resource: fc.oneof(
        fc.record({ uri, text: fc.string(), mimeType: fc.constant('text/plain') }, { requiredKeys: ['uri', 'text'] }),
        fc.record({ uri, blob: base64 }),
      ),
    }),
  },
);

/** Every path into a JSON value (objects and arrays), the root excluded. */
function pathsOf(value: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  if (typeof value !== 'object' || value === null) return [];
  const entries: [string | number, unknown][] = Array.isArray(value)
    ? value.map((v, i): [number, unknown] => [i, v])
    : Object.entries(value);
  return entries.flatMap(([k, v]) => [[...prefix, k], ...pathsOf(v, [...prefix, k])]);
}

type Edit = 'replace' | 'delete' | 'hole';

/** A copy of `value` with the thing at `path` replaced (or deleted). */
function edit(value: unknown, path: (string | number)[], how: Edit, replacement: unknown): unknown {
  if (path.length === 0) return how === 'hole' ? HOLE : replacement;
  const copy: unknown = structuredClone(value);
  let parent: unknown = copy;
  for (const key of path.slice(0, -1)) parent = (parent as Record<string | number, unknown>)[key];
  const last = path[path.length - 1];
  const container = parent as Record<string | number, unknown>;
  if (how === 'delete') {
    if (Array.isArray(container) && typeof last === 'number') container.splice(last, 1);
    else delete container[last];
  } else {
    container[last] = how === 'hole' ? HOLE : replacement;
  }
  return copy;
}

/**
 * A valid value with one place changed: a field (at any depth) replaced by a value of another type or
 * deleted, or a field added under an unexpected name.
 */
export function oneWrong(
  valid: fc.Arbitrary<unknown>,
  replacement: fc.Arbitrary<unknown> = wrongValue,
): fc.Arbitrary<unknown> {
  const extraKey = fc.oneof(fc.constantFrom('_meta', 'sessionId', 'extra', 'type', 'prompt'), anyString);
  return fc
    .record({
      value: valid,
      pick: fc.nat(),
      how: fc.constantFrom<'replace' | 'delete' | 'add'>('replace', 'replace', 'replace', 'delete', 'add'),
      key: extraKey,
      wrong: replacement,
    })
    .map(({ value, pick, how, key, wrong }) => {
      const paths = pathsOf(value);
      if (how === 'add' || paths.length === 0) {
        if (typeof value !== 'object' || value === null || Array.isArray(value)) return wrong;
        return { ...value, [key]: wrong };
      }
      return edit(value, paths[pick % paths.length], how, wrong);
    });
}

/** A valid value with HOLE at one of its places (or as the whole value), for deep nesting. */
export function holed(valid: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> {
  return fc.record({ value: valid, pick: fc.nat(), add: fc.boolean() }).map(({ value, pick, add }) => {
    const paths = pathsOf(value);
    if (add && typeof value === 'object' && value !== null && !Array.isArray(value)) {
      return { ...value, _meta: HOLE };
    }
    if (paths.length === 0 || pick % (paths.length + 1) === paths.length) return HOLE;
    return edit(value, paths[pick % (paths.length + 1)], 'hole', undefined);
  });
}

function validPrompt(): fc.Arbitrary<Record<string, unknown>> {
  return fc.record({ prompt: fc.array(validBlock, { minLength: 1, maxLength: 4 }) });
}

/** A valid body for each POST route. */
export function validBody(route: RouteName, ctx: FuzzContext): fc.Arbitrary<Record<string, unknown>> {
  switch (route) {
    case 'create':
      return fc.record(
        {
          cwd: fc.constant(ctx.workspace),
          sessionScope: fc.constantFrom('single', 'thread'),
          modelServiceId: fc.constantFrom(...ctx.models),
        },
        { requiredKeys: [] },
      );
    case 'load':
    case 'resume':
      return fc.record({ cwd: fc.constant(ctx.workspace) }, { requiredKeys: [] });
    case 'prompt':
      return validPrompt();
    case 'cancel':
      return fc.constant({});
    case 'model':
      return fc.record({ modelId: fc.constantFrom(...ctx.models) });
    case 'permission':
      return fc.oneof(
        fc.constant({ outcome: { outcome: 'cancelled' } }),
        fc.record({ outcome: fc.record({ outcome: fc.constant('selected'), optionId: fc.string({ minLength: 1 }) }) }),
      );
    default:
      return fc.constant({});
  }
}

/** Text that is not JSON, or not quite. */
export const invalidJsonText: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    '{',
    '}',
    '[',
    '{"prompt":',
    '{"prompt":[{"type":"text","text":"hi"}]',
    '{"a":1,}',
    "{'a':1}",
    '{a:1}',
    'NaN',
    'undefined',
    '\uFEFF{}',
    '{"a":1}{"b":2}',
    '{"a":"\\x41"}',
    '{"a":"\\ud800"}',
    '{"a":01}',
    '"unterminated',
    '{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}',
    '{"prompt":[{"__proto__":{"type":"text"},"text":"hi"}]}',
    'null',
    '   ',
    '\u0000',
  ),
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc.jsonValue().map((v) => {
    const text = JSON.stringify(v);
    return text.slice(0, Math.max(0, text.length - 1));
  }),
);

export const CONTENT_TYPES = [
  'application/json',
  'application/json; charset=utf-8',
  'APPLICATION/JSON',
  'application/json; charset=latin1',
  'application/json;;',
  'application/jsonx',
  'application/json-patch+json',
  'application/vnd.api+json',
  'application/octet-stream',
  'text/plain',
  'text/plain; charset=utf-8',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=xyz',
  'text/event-stream',
  'image/png',
  '*/*',
  'json',
  'application/',
];

const headerValue = fc.oneof(
  fc.string({ unit: asciiChar, maxLength: 60 }).map((s) => s.trim()),
  fc.constantFrom('', '0', '-1', 'null', '1e3', '0x10', '9007199254740993', '99999999999999999999999999'),
);

export const lastEventId = fc.oneof(
  fc.nat().map(String),
  fc.bigInt({ min: 0n, max: 10n ** 30n }).map(String),
  fc.integer({ min: -1000, max: -1 }).map(String),
  fc.constantFrom('', '0', '00000001', '1.5', '1e3', ' 5', '5 ', '+5', '0x10', '9007199254740992', 'abc'),
  headerValue,
);

/** Headers a client may send, mostly harmless; an `Origin` (refused with 403) now and then. */
export const extraHeaders: fc.Arbitrary<Record<string, string>> = fc
  .tuple(
    fc.record(
      {
        accept: fc.constantFrom('text/event-stream', 'application/json', '*/*', 'text/html', ''),
        'last-event-id': lastEventId,
        'x-request-id': headerValue,
        'x-forwarded-for': fc.oneof(fc.ipV4(), fc.ipV6(), headerValue),
        authorization: fc.oneof(fc.constant('Bearer x'), headerValue),
        'accept-encoding': fc.constantFrom('gzip', 'br', 'identity', '*'),
      },
      { requiredKeys: [] },
    ),
    fc.oneof(
      { weight: 9, arbitrary: fc.constant(undefined) },
      { weight: 1, arbitrary: fc.constantFrom('http://evil.example', 'null') },
    ),
  )
  .map(([headers, origin]) => (origin === undefined ? headers : { ...headers, origin }));

/** A path segment as a client might send it: traversal, encoded separators, odd escapes, long, unicode. */
export const rawSegment: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    '..%2F..%2Fetc%2Fpasswd',
    '..%2F..%2F.acpd%2Fsessions',
    '..%2f',
    '%2E%2E',
    '%2e%2e%2f%2e%2e%2fsessions',
    '..',
    '.',
    '%2F',
    '%5C..%5C..%5C',
    '%00',
    'a%00b',
    '%',
    '%ZZ',
    '%C3',
    '%C0%AE%C0%AE',
    '%FF%FE',
    '%20',
    '%09',
    '+',
    '*',
    'null',
    'undefined',
    '__proto__',
    'constructor',
    'session',
    'unknown-1',
  ),
  anyString.map((s) => encodeURIComponent(s.replace(/[\uD800-\uDFFF]/g, 'x'))),
  fc
    .tuple(fc.string({ minLength: 1, maxLength: 3 }), fc.integer({ min: 100, max: 15_000 }))
    .map(([s, n]) => encodeURIComponent(s.repeat(n)).slice(0, 15_000)),
  fc.uuid(),
);

const NEAR_VARIANTS = 9;

/** Variants of a live id: almost right ids must not reach a session either. */
function nearRealId(rig: Rig, index: number, how: number): string {
  const id = rig.sessions[index % rig.sessions.length] ?? '';
  const variants = [
    id.toUpperCase(),
    `${id}x`,
    id.slice(0, -1),
    `${id}%00`,
    `${id}%2F..`,
    `..%2F${id}`,
    ` ${id}`,
    `${id}%20`,
    encodeURIComponent(`${id}/../${id}`),
  ];
  return variants[how % NEAR_VARIANTS];
}

/** Path parameters: mostly live sessions (so bodies reach the agent), some near misses, some anything. */
export function idSpec(weights: { real: number; near: number; raw: number }): fc.Arbitrary<IdSpec> {
  return fc.oneof(
    { weight: weights.real, arbitrary: fc.nat(1).map((real): IdSpec => ({ real })) },
    {
      weight: weights.near,
      arbitrary: fc.record({ near: fc.nat(1), how: fc.nat(NEAR_VARIANTS - 1) }).map((v): IdSpec => v),
    },
    { weight: weights.raw, arbitrary: rawSegment.map((raw): IdSpec => ({ raw })) },
  );
}

// ---- sending --------------------------------------------------------------------------------------------

interface Answer {
  status: number;
  contentType: string;
  text: string;
  json: unknown;
  ms: number;
}

interface Rendered {
  method: Method;
  url: string;
  headers: Record<string, string>;
  body?: string | Uint8Array;
}

function render(probe: Probe, rig: Rig): Rendered {
  const body = probe.body === undefined ? undefined : renderBody(probe.body);
  return { method: probe.method, url: probeUrl(probe, rig), headers: { ...rig.d.headers, ...probe.headers }, body };
}

/**
 * Sends one request and reads its whole answer; an event stream is read up to its first bytes and then
 * left. Throws when nothing complete came back within `limitMs`.
 */
async function send(d: TestDaemon, req: Rendered, limitMs: number): Promise<Answer> {
  const started = Date.now();
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), limitMs);
  try {
    const res = await request(`${d.baseUrl}${req.url}`, {
      method: req.method,
      headers: req.headers,
      body: req.body,
      signal: ac.signal,
    });
    const contentType = String(res.headers['content-type'] ?? '');
    let text = '';
    if (req.method === 'GET' && res.statusCode === 200 && contentType.startsWith('text/event-stream')) {
      // A stream does not end: its first bytes are its answer. Leaving the loop closes the connection.
      for await (const chunk of res.body) {
        text = String(chunk);
        break;
      }
    } else {
      text = await res.body.text();
    }
    let json: unknown;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.statusCode, contentType, text, json, ms: Date.now() - started };
  } catch (err) {
    if (ac.signal.aborted) throw new Error(`no complete answer within ${limitMs} ms`, { cause: err });
    const why = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    throw new Error(`request failed without an answer: ${why}`, { cause: err });
  } finally {
    clearTimeout(timer);
  }
}

/** 503s the contract documents, by their `code` (or the probes' own bodies). */
const DOCUMENTED_503_CODES = new Set(['session_limit_exceeded', 'draining', 'overloaded']);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Why `answer` breaks the rules, or undefined when it keeps them. */
function verdict(probe: Probe, answer: Answer, ctx: { wasLive: boolean; agent: FuzzContext['agent'] }) {
  const { status, json } = answer;
  if (status >= 500) {
    const documented =
      status === 503 &&
      ((isObject(json) && typeof json.code === 'string' && DOCUMENTED_503_CODES.has(json.code)) ||
        (probe.route === 'readyz' && isObject(json) && json.status === 'unavailable') ||
        (probe.route === 'health' && isObject(json) && json.status === 'degraded'));
    if (!documented) return `status ${status}`;
  }
  if (status >= 400 && status < 500 && probe.method !== 'HEAD') {
    if (!isObject(json) || typeof json.error !== 'string')
      return `a ${status} whose body is not a JSON {error: string}`;
  }
  if (status >= 200 && status < 300 && probe.id !== undefined && !ctx.wasLive && ROUTES[probe.route].sessionScoped) {
    // The steerable agent restores any id that does not start with "unknown": load/resume may succeed there.
    const restoresAnything = ctx.agent === 'steer' && (probe.route === 'load' || probe.route === 'resume');
    if (!restoresAnything) return `a ${status} for a session id that names no live session`;
  }
  return undefined;
}

/** A broken rule, with a short signature that groups failures of one kind (for FUZZ_CATALOG). */
class RuleBroken extends Error {
  constructor(
    message: string,
    readonly signature: string,
  ) {
    super(message);
  }
}

/** The first words of an error text, ids and numbers blanked: failures of one kind share it. */
function generalize(text: string): string {
  return text
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, '<id>')
    .replace(/\d+/g, 'N')
    .split(/\s+/)
    .slice(0, 4)
    .join(' ');
}

function errorField(answer: Answer): string {
  if (!isObject(answer.json) || typeof answer.json.error !== 'string') return generalize(answer.text);
  const raw = answer.json.code;
  const code = raw === undefined ? '' : ` (code ${typeof raw === 'string' ? raw : JSON.stringify(raw)})`;
  return `${generalize(answer.json.error)}${code}`;
}

/** Sends a probe and throws a full description if the answer breaks a rule. */
async function exercise(rig: Rig, probe: Probe, limitMs: number, stats: Map<string, number>): Promise<void> {
  const req = render(probe, rig);
  const wasLive = probe.id !== undefined && rig.isLive(idSegment(probe.id, rig));
  const where = `${req.method} ${clip(req.url, 200)}`;
  const count = (key: string): void => void stats.set(key, (stats.get(key) ?? 0) + 1);
  let answer: Answer;
  try {
    answer = await send(rig.d, req, limitMs);
  } catch (err) {
    count(`${probe.route} ${probe.method} no-answer`);
    const message = err instanceof Error ? err.message : String(err);
    throw new RuleBroken(`${where}: ${message}`, `${probe.route} ${probe.method}: ${generalize(message)}`);
  }
  count(`${probe.route} ${probe.method} ${answer.status}`);
  const problem = verdict(probe, answer, { wasLive, agent: rig.ctx.agent });
  if (problem) {
    throw new RuleBroken(
      `${problem}: ${where} → ${answer.status} ${clip(answer.text, 600)}`,
      `${probe.route} ${probe.method}: ${problem}: ${errorField(answer)}`,
    );
  }
}

/** An id with a path separator, a control character, or a dot name: a path traversal, not a session id. */
function isSuspectId(id: string): boolean {
  const control = [...id].some((c) => c.charCodeAt(0) < 0x20);
  return control || /[/\\]/.test(id) || id === '.' || id === '..' || id === '';
}

// ---- the rig --------------------------------------------------------------------------------------------

const AGENT_MARKERS = ['/agent/main.js', '/steer-agent.js'];

/** Live agent processes whose parent is this test process (seen in /proc). */
function agentChildren(): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] === 'Z' || Number(fields[1]) !== process.pid) continue;
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8');
      if (AGENT_MARKERS.some((m) => cmdline.includes(m))) found.push(Number(name));
    } catch {
      // gone while we looked
    }
  }
  return found;
}

/**
 * One daemon under test, with two live sessions (the shared one and a thread). When an input breaks it, the
 * next run gets a fresh daemon on the same workspace, so that the shrinking of one failure is not muddled by
 * the damage it did. Every agent pid it ever had is kept for the leak check.
 */
export class Rig {
  d!: TestDaemon;
  sessions: string[] = [];
  readonly agentPids = new Set<number>();
  restarts = 0;
  needsRestart = false;
  private cleanups: (() => unknown)[] = [];
  private crashBaseline = 0;
  /** The steerable agent's controller, which logs every request the agent got. */
  private steer: Steer | undefined;
  private logRead = 0;

  private constructor(
    readonly ctx: FuzzContext,
    private readonly dataDir: string,
  ) {}

  static async start(t: Teardown, agent: FuzzContext['agent']): Promise<Rig> {
    const workspace = tempDir(t, 'acpd-fuzz-');
    const models = agent === 'embedded' ? ['acpd-echo', 'acpd-shout'] : ['m1', 'm2'];
    const rig = new Rig({ workspace, models, agent }, `${workspace}/.acpd`);
    t.teardown(() => rig.shutdown());
    await rig.boot();
    return rig;
  }

  private async boot(): Promise<void> {
    const bag: Teardown = { teardown: (fn) => void this.cleanups.push(fn) };
    // Thread sessions pile up over a run; at the default cap of 20 every restore would soon be a 503
    // (session_limit_exceeded) and never reach the agent.
    const opts = { workspace: this.ctx.workspace, dataDir: this.dataDir, args: ['--max-sessions', '1000'] };
    if (this.ctx.agent === 'steer') {
      ({ d: this.d, steer: this.steer } = await steerDaemon(bag, opts));
      this.logRead = 0;
    } else {
      this.d = await startDaemon(bag, opts);
    }
    this.sessions = [
      await within(createSession(this.d, {}), 'creating the shared session'),
      await within(createSession(this.d, { sessionScope: 'thread' }), 'creating a thread session'),
    ];
    this.crashBaseline = this.d.app.channels.crashCount;
    this.notePids();
  }

  notePids(): void {
    for (const ch of this.d.app.channels.alive) if (ch.pid !== undefined) this.agentPids.add(ch.pid);
    for (const pid of agentChildren()) this.agentPids.add(pid);
  }

  /** Agent crashes (exits the daemon did not ask for) since the last call. */
  takeCrashes(): number {
    const crashes = this.d.app.channels.crashCount - this.crashBaseline;
    this.crashBaseline = this.d.app.channels.crashCount;
    return crashes;
  }

  /** Whether a path segment decodes to the id of a session the daemon has now. */
  isLive(segment: string): boolean {
    try {
      return this.d.app.sessions.get(decodeURIComponent(segment)) !== undefined;
    } catch {
      return false;
    }
  }

  /**
   * Session ids the agent received since the last call that no client should be able to get through to it:
   * with a path separator, a control character, or a `.`/`..` name (only seen with the steerable agent).
   */
  async takeSuspectIds(): Promise<string[]> {
    if (!this.steer) return [];
    // The agent reports each request before it handles it, on the same socket as its answer to this: once
    // that answer is here, every report of the request just answered is too.
    await this.steer.hold([]);
    const log = this.steer.log;
    const fresh = log.slice(this.logRead);
    this.logRead = log.length;
    return fresh.flatMap((record) => {
      const id = isObject(record.params) ? record.params.sessionId : undefined;
      return typeof id === 'string' && isSuspectId(id) ? [id] : [];
    });
  }

  /** A prompt on a live session answers `end_turn` within `limitMs`; why not, otherwise. */
  async canary(limitMs: number): Promise<string | undefined> {
    const sessionId = this.sessions[0];
    const req: Rendered = {
      method: 'POST',
      url: `/session/${encodeURIComponent(sessionId)}/prompt`,
      headers: { ...this.d.headers, 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: [{ type: 'text', text: 'canary' }] }),
    };
    try {
      const answer = await send(this.d, req, limitMs);
      if (answer.status !== 200 || !isObject(answer.json) || answer.json.stopReason !== 'end_turn') {
        return `a prompt on a live session answered ${answer.status} ${clip(answer.text, 300)}`;
      }
    } catch (err) {
      return `a prompt on a live session: ${err instanceof Error ? err.message : String(err)}`;
    }
    const crashes = this.takeCrashes();
    return crashes > 0 ? `the agent crashed (${crashes}×)` : undefined;
  }

  async restart(): Promise<void> {
    await this.shutdown();
    this.restarts++;
    this.needsRestart = false;
    await this.boot();
  }

  async shutdown(): Promise<void> {
    this.notePids();
    for (const fn of this.cleanups.splice(0).reverse()) await fn();
  }
}

// ---- running a property ---------------------------------------------------------------------------------

/** What a tap test offers that the runner uses. */
interface TapLike extends Teardown {
  comment(...args: unknown[]): void;
  pass(message: string): void;
  fail(message: string, extra: Record<string, unknown>): void;
  ok(value: unknown, message: string): void;
  equal(found: unknown, wanted: unknown, message: string): void;
}

interface FuzzSpec {
  name: string;
  arb: fc.Arbitrary<Probe>;
  runs: number;
  /** Wall-clock budget of the property, shrinking included; past it fast-check reports what it has. */
  budgetMs: number;
  /** Also check, after every input, that a prompt on a live session still works. */
  canaryEveryRun?: boolean;
}

/** FUZZ_CATALOG=1: run every generated input without stopping at the first failure, and list each kind found. */
const CATALOG = process.env.FUZZ_CATALOG === '1';

/** Sends one input and checks what it did to the daemon; throws RuleBroken when a rule broke. */
async function check(rig: Rig, spec: FuzzSpec, probe: Probe, limitMs: number, stats: Map<string, number>) {
  try {
    await exercise(rig, probe, limitMs, stats);
    const crashes = rig.takeCrashes();
    const label = `${probe.route} ${probe.method}`;
    if (crashes > 0) throw new RuleBroken(`the agent crashed (${crashes}×) on this input`, `${label}: agent crashed`);
    const suspect = await rig.takeSuspectIds();
    if (suspect.length > 0) {
      rig.needsRestart = true;
      throw new RuleBroken(
        `the daemon passed session id(s) ${clip(JSON.stringify(suspect), 300)} through to the agent`,
        `${label}: a traversal id reached the agent`,
      );
    }
    if (spec.canaryEveryRun) {
      const problem = await rig.canary(limitMs);
      if (problem) throw new RuleBroken(`after this input, ${problem}`, `${label}: the agent link broke`);
    }
  } catch (err) {
    // Whatever this input did to the daemon must not be blamed on the next one.
    if ((await rig.canary(SHRINK_LIMIT_MS)) !== undefined) rig.needsRestart = true;
    throw err;
  } finally {
    rig.notePids();
  }
}

function answersComment(t: TapLike, name: string, stats: Map<string, number>): void {
  const entries = [...stats.entries()].sort(([a], [b]) => a.localeCompare(b));
  t.comment(`${name}: answers ${entries.map(([k, n]) => `${k}×${n}`).join(', ')}`);
}

/**
 * Runs one property against the rig and reports it to tap: a pass with its run count, or a failure carrying
 * fast-check's report (the shrunk counterexample, the error, the seed and path to replay it).
 */
export async function fuzz(t: TapLike, rig: Rig, spec: FuzzSpec): Promise<void> {
  if (CATALOG) return catalog(t, rig, spec);
  const stats = new Map<string, number>();
  const restartsBefore = rig.restarts;
  let failedOnce = false;
  const property = fc.asyncProperty(spec.arb, async (probe) => {
    if (rig.needsRestart) await rig.restart();
    try {
      await check(rig, spec, probe, failedOnce ? SHRINK_LIMIT_MS : REQUEST_LIMIT_MS, stats);
    } catch (err) {
      failedOnce = true;
      throw err;
    }
  });
  const started = Date.now();
  const details = await fc.check<[Probe]>(property, {
    seed: SEED,
    numRuns: spec.runs,
    includeErrorInReport: true,
    plugins: [fc.interruptAfterTimeLimit(spec.budgetMs)],
  });
  if (rig.needsRestart) await rig.restart();
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  t.comment(
    `${spec.name}: seed ${SEED}, ${details.numRuns} of ${spec.runs} runs, ${details.numShrinks} shrinks, ${seconds} s, ` +
      `daemon rebuilt ${rig.restarts - restartsBefore}×${details.interrupted ? ', interrupted by its time budget' : ''}`,
  );
  answersComment(t, spec.name, stats);
  if (!details.failed) {
    t.pass(`${spec.name}: ${details.numRuns} runs, no answer broke a rule`);
    return;
  }
  const error = clip(
    details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance),
    1_000,
  );
  const counterexample = details.counterexample ? clip(fc.stringify(details.counterexample[0]), 1_000) : 'none';
  t.fail(
    `${spec.name}: failed after ${details.numRuns} runs, shrunk ${details.numShrinks}×\n` +
      `counterexample: ${counterexample}\nerror: ${error}\n` +
      `replay: FUZZ_SEED=${details.seed}, fast-check path ${JSON.stringify(details.counterexamplePath)}`,
    { report: fc.defaultReportMessage(details) },
  );
}

/** The FUZZ_CATALOG mode: every input runs; failures are grouped by kind, each with its first input. */
async function catalog(t: TapLike, rig: Rig, spec: FuzzSpec): Promise<void> {
  const stats = new Map<string, number>();
  const kinds = new Map<string, { count: number; input: string; error: string }>();
  const hung = new Set<string>();
  for (const probe of fc.sample(spec.arb, { seed: SEED, numRuns: spec.runs })) {
    if (rig.needsRestart) await rig.restart();
    const label = `${probe.route} ${probe.method}`;
    try {
      await check(rig, spec, probe, hung.has(label) ? SHRINK_LIMIT_MS : REQUEST_LIMIT_MS, stats);
    } catch (err) {
      const error = clip(err instanceof Error ? err.message : String(err), 1_000);
      const signature = err instanceof RuleBroken ? err.signature : `${label}: ${generalize(error)}`;
      if (/no complete answer/.test(error)) hung.add(label);
      const kind = kinds.get(signature);
      if (kind) kind.count++;
      else kinds.set(signature, { count: 1, input: describeProbe(probe), error });
    }
  }
  if (rig.needsRestart) await rig.restart();
  answersComment(t, spec.name, stats);
  for (const [signature, kind] of kinds) {
    t.comment(
      `${spec.name}: ${kind.count}× ${clip(signature, 200)}\n  first input: ${kind.input}\n  error: ${kind.error}`,
    );
  }
  t.ok(kinds.size === 0, `${spec.name}: ${spec.runs} inputs, ${kinds.size} kinds of failure`);
}

/**
 * After the fuzzing: the daemon serves a whole turn (create, prompt "hello", end_turn, frames on its event
 * stream), /readyz says ready, at most one agent runs, and once the app is closed none is left.
 */
export async function aftermath(t: TapLike, rig: Rig): Promise<void> {
  const d = rig.d;
  const ready = await send(d, { method: 'GET', url: '/readyz', headers: d.headers }, REQUEST_LIMIT_MS);
  t.equal(ready.status, 200, `/readyz is 200 after the fuzzing (${clip(ready.text, 300)})`);

  const created = await send(
    d,
    { method: 'POST', url: '/session', headers: { ...d.headers, 'content-type': 'application/json' }, body: '{}' },
    REQUEST_LIMIT_MS,
  );
  t.equal(created.status, 200, `POST /session works after the fuzzing (${clip(created.text, 300)})`);
  if (created.status === 200) {
    const sessionId = String(obj(created.json).sessionId);
    const stream = await within(openEvents(t, d, sessionId), 'opening the event stream');
    t.equal(stream.status, 200, 'the event stream opens');
    const prompted = await send(
      d,
      {
        method: 'POST',
        url: `/session/${encodeURIComponent(sessionId)}/prompt`,
        headers: { ...d.headers, 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: [{ type: 'text', text: 'hello' }] }),
      },
      REQUEST_LIMIT_MS,
    );
    t.equal(
      isObject(prompted.json) ? prompted.json.stopReason : prompted.text,
      'end_turn',
      `a prompt "hello" ends its turn (${prompted.status})`,
    );
    if (stream.status === 200) {
      const frame = await within(stream.waitFor(isType('session_update'), 'a session_update'), 'a frame').then(
        () => true,
        () => false,
      );
      t.ok(frame, 'the event stream delivers the turn');
    }
    stream.close();
  }

  rig.notePids();
  t.ok(d.app.channels.alive.size <= 1, `at most one agent channel is alive (${d.app.channels.alive.size})`);
  const children = agentChildren();
  t.ok(children.length <= 1, `at most one agent process is a child of the test process (${children.join(', ')})`);

  const pids = [...rig.agentPids];
  await rig.shutdown();
  const deadline = Date.now() + 10_000;
  let left = pids.filter((pid) => livingInGroup(pid).length > 0);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    left = pids.filter((pid) => livingInGroup(pid).length > 0);
  }
  t.equal(
    left.length,
    0,
    `no agent process outlives the app (seen ${pids.length}: ${pids.join(', ')}; left ${left.join(', ')})`,
  );
}

/** `:id` of GET /workspace/:id/sessions: the bound workspace, spellings of it, and other paths. */
export function workspaceSegment(ctx: FuzzContext): fc.Arbitrary<IdSpec> {
  const ws = ctx.workspace;
  return fc
    .oneof(
      fc.constantFrom(
        encodeURIComponent(ws),
        encodeURIComponent(`${ws}/`),
        encodeURIComponent(`${ws}/.`),
        encodeURIComponent(`${ws}/../${ws.split('/').pop() ?? ''}`),
        encodeURIComponent(`${ws}/.acpd`),
        encodeURIComponent(`${ws}/.acpd/sessions/x.json/y`),
        encodeURIComponent(`${ws}\u0000`),
        encodeURIComponent(`${ws}/\u0000/x`),
        '%2Fetc%2Fpasswd%2Fx',
        '%2Fproc%2Fself%2Froot',
        '%2F',
        '%2F%2F',
        'relative',
        '.',
        '..%2F..',
        '%2F..%2F..%2F..%2Fetc',
        `%2F${'a'.repeat(300)}`,
        `%2F${'a%2F'.repeat(3000)}`,
        `%2F${'%C3%A9'.repeat(2000)}`,
      ),
      anyString.map((s) => encodeURIComponent(`/${s.replace(/[\uD800-\uDFFF]/g, 'x')}`)),
      rawSegment,
    )
    .map((raw): IdSpec => ({ raw }));
}

/** A query string for the GET routes: `deep` in its spellings, odd keys and escapes. */
export const queryString: fc.Arbitrary<string | undefined> = fc.option(
  fc.oneof(
    fc.constantFrom(
      'deep',
      'deep=',
      'deep=1',
      'deep=true',
      'deep=0',
      'deep=TRUE',
      'deep=1&deep=2',
      'deep[]=1',
      '__proto__[deep]=1',
      'constructor[prototype][x]=1',
      '%ZZ',
      '%',
      '&&&',
      '=',
      'deep=%00',
    ),
    fc
      .array(fc.tuple(anyString, anyString), { maxLength: 4 })
      .map((pairs) =>
        pairs
          .map(
            ([k, v]) =>
              `${encodeURIComponent(k.replace(/[\uD800-\uDFFF]/g, 'x'))}=${encodeURIComponent(v.replace(/[\uD800-\uDFFF]/g, 'x'))}`,
          )
          .join('&'),
      ),
  ),
  { nil: undefined },
);
