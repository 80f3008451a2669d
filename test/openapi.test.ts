// The OpenAPI document (issue 5): generated from the route schemas and served at /docs/json, with Swagger
// UI at /docs. Every route the app really serves must be in it, with every response its schema declares.
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { startDaemon } from './support/app.js';
import { call, obj } from './support/http.js';

const DOCS_PREFIX = '/docs';

interface AppRoute {
  method: string;
  url: string;
}

/**
 * The routes in `app.printRoutes({ commonPrefix: false })`, the router's own listing: a tree of path
 * pieces, four columns per level, methods in parentheses on the nodes that are routes.
 */
function routesFromTree(tree: string): AppRoute[] {
  const routes: AppRoute[] = [];
  const stack: string[] = [];
  for (const line of tree.split('\n')) {
    const match = /^((?:│ {3}| {4})*)(?:├── |└── )(.*?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!match) continue;
    const depth = match[1].length / 4;
    stack.length = depth;
    stack.push(match[2]);
    if (match[3] === undefined) continue;
    const url = stack.join('');
    for (const method of match[3].split(', ')) routes.push({ method, url });
  }
  return routes;
}

/** `/session/:id/prompt` → `/session/{id}/prompt`. */
function openapiPath(url: string): string {
  return url.replace(/:(\w+)/g, '{$1}');
}

interface RouteSchema {
  summary: string;
  response: Record<string, unknown>;
}

function isRouteSchema(value: unknown): value is RouteSchema {
  if (typeof value !== 'object' || value === null) return false;
  const { summary, response } = value as Partial<RouteSchema>;
  return typeof summary === 'string' && typeof response === 'object' && response !== null;
}

/** Every route schema exported by src/schemas, by summary: what the routes declare, read independently of swagger. */
async function declaredSchemas(): Promise<Map<string, RouteSchema>> {
  const dir = new URL('../src/schemas/', import.meta.url);
  const bySummary = new Map<string, RouteSchema>();
  for (const file of readdirSync(fileURLToPath(dir)).filter((name) => name.endsWith('.js'))) {
    const module: unknown = await import(new URL(file, dir).href);
    if (typeof module !== 'object' || module === null) continue;
    for (const value of Object.values(module)) if (isRouteSchema(value)) bySummary.set(value.summary, value);
  }
  return bySummary;
}

t.test('the printRoutes parser reads nested pieces and method lists', async (t) => {
  const tree = ['└── /session (POST)', '    ├── /:id/load (POST)', '    └── /:id/events (GET, HEAD)', ''].join('\n');
  t.same(routesFromTree(tree), [
    { method: 'POST', url: '/session' },
    { method: 'POST', url: '/session/:id/load' },
    { method: 'GET', url: '/session/:id/events' },
    { method: 'HEAD', url: '/session/:id/events' },
  ]);
});

t.test('every route of the app is documented with every response it declares', async (t) => {
  const d = await startDaemon(t);
  const res = await call(d, 'GET', `${DOCS_PREFIX}/json`);
  t.equal(res.status, 200);
  const doc = obj(res.body);
  t.equal(doc.openapi, '3.0.3');
  const paths = obj(doc.paths);

  const served = routesFromTree(d.app.printRoutes({ commonPrefix: false })).filter(
    // HEAD rides on GET; the docs' own routes are hidden on purpose.
    (r) => r.method !== 'HEAD' && r.url !== DOCS_PREFIX && !r.url.startsWith(`${DOCS_PREFIX}/`),
  );
  t.ok(served.length >= 14, `the app's route list was read (${served.length} routes)`);
  const declared = await declaredSchemas();

  const documented = new Set<string>();
  for (const [path, item] of Object.entries(paths)) {
    for (const method of Object.keys(obj(item))) documented.add(`${method.toUpperCase()} ${path}`);
  }
  const expected = new Set(served.map((r) => `${r.method} ${openapiPath(r.url)}`));
  t.same([...documented].sort(), [...expected].sort(), 'the document lists exactly the routes the app serves');

  for (const route of served) {
    const label = `${route.method} ${route.url}`;
    const operation = obj(obj(paths[openapiPath(route.url)])[route.method.toLowerCase()]);
    t.type(operation.summary, 'string', `${label} has a summary`);
    const schema = declared.get(String(operation.summary));
    if (!schema) {
      t.fail(`${label}: no schema in src/schemas has the summary ${JSON.stringify(operation.summary)}`);
      continue;
    }
    const responses = obj(operation.responses);
    const codes = Object.keys(schema.response);
    if (route.url === '/session/:id/events') codes.push('200');
    t.same(Object.keys(responses).sort(), [...new Set(codes)].sort(), `${label} documents every declared response`);
    for (const [code, response] of Object.entries(responses)) {
      const body = obj(response);
      t.type(body.description, 'string', `${label} ${code} has a description`);
      if (code === '204') continue;
      const content = obj(body.content);
      const [media] = Object.values(content);
      t.ok(media !== undefined && obj(media).schema !== undefined, `${label} ${code} carries a schema`);
    }
    for (const code of ['400', '401', '500']) {
      const media = obj(obj(obj(responses[code]).content)['application/json']);
      t.same(media.schema, { $ref: '#/components/schemas/ErrorEnvelope' }, `${label} ${code} is the ErrorEnvelope`);
    }
  }

  const events = obj(obj(obj(paths['/session/{id}/events']).get).responses);
  t.ok(obj(obj(events['200']).content)['text/event-stream'], 'the SSE route documents text/event-stream');
  const metrics = obj(obj(obj(paths['/metrics']).get).responses);
  t.ok(obj(obj(metrics['200']).content)['text/plain'], '/metrics documents text/plain');
  t.notMatch(JSON.stringify(doc), /"error(Message|Code)"/, 'validator-only keywords stay out of the document');
  const prompt = obj(obj(obj(paths['/session/{id}/prompt']).post).requestBody);
  t.match(
    prompt,
    { required: true, content: { 'application/json': { schema: { required: ['prompt'] } } } },
    'request bodies are documented',
  );
  const components = obj(obj(doc.components).schemas);
  t.same(obj(components.ErrorEnvelope).required, ['error'], 'the shared envelope is a named component');
});

t.test('Swagger UI at /docs, behind the token like the rest', async (t) => {
  const d = await startDaemon(t, { args: ['--token', 'docs-secret'] });
  t.equal((await call(d, 'GET', `${DOCS_PREFIX}/json`, undefined, { authorization: '' })).status, 401);
  const ui = await call(d, 'GET', DOCS_PREFIX);
  t.equal(ui.status, 200);
  t.match(String(ui.headers['content-type']), /^text\/html/);
  t.match(String(ui.body), /swagger/i);
  const json = await call(d, 'GET', `${DOCS_PREFIX}/json`);
  t.equal(json.status, 200);
  t.same(obj(obj(obj(json.body).components).securitySchemes).bearer, { type: 'http', scheme: 'bearer' });
});
