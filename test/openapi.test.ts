// The OpenAPI document (issue 5): generated from the route schemas and served at /docs/json and /docs/yaml,
// with Swagger UI at /docs. Every route the app really serves must be in it, with every response its schema
// declares. The viewer's files (swagger-ui-dist's, read on demand) are only those the page links to, and the
// page runs in headless Chromium under its CSP.
import { readdirSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { chromium } from 'playwright-core';
import { parse as parseYaml } from 'yaml';
import { causes, type ErrorCause } from '../src/schemas/errors.js';
import { startDaemon, type TestDaemon } from './support/app.js';
import { call, obj } from './support/http.js';
import { routesFromTree } from './support/routes.js';
import { requireSystemPackage, SYSTEM_PACKAGES } from './support/system-deps.js';

const DOCS_PREFIX = '/docs';
/** The description lines (see errorResponse) of the reasons whose answers carry `Retry-After`. */
const SENDS_RETRY_AFTER = new Set<string>(
  Object.values(causes as Record<string, ErrorCause>)
    .filter((cause) => cause.retryAfter === true)
    .map((cause) => `- ${cause.when}`),
);
/** The orchestrators' probes: public on a loopback bind, never shed, no rate budget. */
const PROBES = new Set(['/health', '/livez', '/readyz']);

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
    const module = (await import(new URL(file, dir).href)) as Record<string, unknown>;
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
    // HEAD rides on GET; the docs' own routes are hidden on purpose, and so is /acp, whose JSON-RPC
    // messages the ACP schema describes, not this document, and the web console's pages and scripts.
    (r) =>
      r.method !== 'HEAD' &&
      r.url !== DOCS_PREFIX &&
      !r.url.startsWith(`${DOCS_PREFIX}/`) &&
      r.url !== '/acp' &&
      r.url !== '/console' &&
      !r.url.startsWith('/console/'),
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
    for (const code of Object.keys(schema.response)) t.ok(responses[code], `${label} documents its own ${code}`);
    // What the guards in front of the route can answer, from its policy (plugins/route-policy.ts).
    const probe = PROBES.has(route.url);
    const policy = { probe, budget: probe || route.url === '/metrics' ? 'none' : 'some' };
    const guarded = ['403', '500'];
    if (policy?.probe !== true) guarded.push('401');
    if (policy?.budget !== 'none') guarded.push('429');
    if (policy?.probe !== true) guarded.push('503');
    if (route.method === 'POST') guarded.push('400', '413');
    for (const code of guarded) t.ok(responses[code], `${label} documents the guards' ${code}`);
    if (policy?.probe === true) {
      t.same(operation.security, [], `${label}: a public probe needs no token`);
      t.notOk(responses['401'], `${label}: and answers no 401`);
    } else {
      t.equal(operation.security, undefined, `${label}: the bearer token, as the document declares for all`);
    }
    t.type(operation.operationId, 'string', `${label} has an operationId`);
    t.ok(Array.isArray(operation.tags) && operation.tags.length === 1, `${label} has a tag`);
    t.type(operation.description, 'string', `${label} has a description`);
    for (const [code, response] of Object.entries(responses)) {
      const body = obj(response);
      t.type(body.description, 'string', `${label} ${code} has a description`);
      t.not(body.description, 'Default Response', `${label} ${code} says what it means`);
      // A rate limit always says when to come back; a 409 does when one of its reasons sends the header
      // (watchAnswers checks that every answer sent with it is documented with it).
      const waits = body.headers !== undefined && obj(body.headers)['retry-after'] !== undefined;
      if (code === '429') t.ok(waits, `${label} 429 documents Retry-After`);
      if (code === '409') {
        const lines = String(body.description).split('\n');
        t.equal(
          waits,
          lines.some((line) => SENDS_RETRY_AFTER.has(line)),
          `${label} 409: Retry-After as its reasons send it`,
        );
      }
      if (code === '204') continue;
      const content = obj(body.content);
      const [media] = Object.values(content);
      t.ok(media !== undefined && obj(media).schema !== undefined, `${label} ${code} carries a schema`);
    }
    for (const code of ['400', '401', '403', '404', '409', '413', '429', '500'].filter((c) => c in responses)) {
      const media = obj(obj(obj(responses[code]).content)['application/json']);
      t.same(media.schema, { $ref: '#/components/schemas/ErrorEnvelope' }, `${label} ${code} is the ErrorEnvelope`);
    }
  }

  const operationIds = Object.values(paths).flatMap((item) =>
    Object.values(obj(item)).map((op) => obj(op).operationId),
  );
  t.equal(new Set(operationIds).size, operationIds.length, 'operationIds are unique');
  const tags = new Set((doc.tags as { name: string }[]).map((tag) => tag.name));
  for (const item of Object.values(paths)) {
    for (const op of Object.values(obj(item))) for (const tag of obj(op).tags as string[]) t.ok(tags.has(tag), tag);
  }

  const components = obj(obj(doc.components).schemas);
  const events = obj(obj(obj(paths['/session/{id}/events']).get).responses);
  t.same(
    obj(obj(obj(events['200']).content)['text/event-stream']).schema,
    { $ref: '#/components/schemas/SessionEvent' },
    'the SSE route documents its frames',
  );
  t.same(
    Object.keys(obj(obj(obj(obj(obj(paths['/session/{id}/events']).get).responses)['200']).headers)),
    ['x-qwen-event-epoch', 'x-qwen-sse-stream-id'],
    'the stream documents the epoch and stream id headers',
  );
  const frames = obj(components.SessionEvent);
  const frameTypes = [
    'session_update',
    'permission_request',
    'permission_resolved',
    'permission_already_resolved',
    'pending_prompt_added',
    'pending_prompt_started',
    'pending_prompt_completed',
    'prompt_cancelled',
    'turn_complete',
    'turn_error',
    'model_switched',
    'model_switch_failed',
    'fs.access',
    'session_died',
    'session_closed',
    'client_evicted',
    'stream_error',
    'state_resync_required',
    'replay_complete',
    'session_state',
  ];
  t.same(Object.keys(obj(obj(frames.discriminator).mapping)), frameTypes, 'one frame schema per event type');
  for (const [type, ref] of Object.entries(obj(obj(frames.discriminator).mapping))) {
    const name = String(ref).replace('#/components/schemas/', '');
    t.same(obj(obj(obj(components[name]).properties).type).enum, [type], `${name} is the ${type} frame`);
  }
  const promptMedia = obj(
    obj(obj(obj(obj(paths['/session/{id}/prompt']).post).requestBody).content)['application/json'],
  );
  t.same(
    obj(obj(obj(promptMedia.schema).properties).prompt).items,
    { $ref: '#/components/schemas/ContentBlock' },
    'prompt blocks are the ContentBlock component',
  );
  t.same(Object.keys(obj(obj(components.ContentBlock).discriminator).mapping as object), [
    'text',
    'image',
    'audio',
    'resource_link',
    'resource',
  ]);
  const restored = obj(
    obj(obj(obj(obj(obj(paths['/session/{id}/load']).post).responses)['200']).content)['application/json'],
  );
  t.same(
    obj(obj(restored.schema).properties).state,
    { $ref: '#/components/schemas/SessionState' },
    'load state is typed',
  );
  for (const [path, required] of [
    ['/session', false],
    ['/session/{id}/load', false],
    ['/session/{id}/resume', false],
    ['/session/{id}/cancel', false],
    ['/session/{id}/prompt', true],
    ['/session/{id}/model', true],
    ['/permission/{requestId}', true],
  ] as const) {
    t.equal(obj(obj(obj(paths[path]).post).requestBody).required, required, `${path}: body required ${required}`);
  }
  const listParams = obj(obj(paths['/workspace/{id}/sessions']).get).parameters as Record<string, unknown>[];
  const workspace = listParams.find((p) => p.in === 'path' && p.name === 'id');
  t.match(workspace?.description, /URL-encoded/, 'the workspace parameter says how to write it');
  t.strictSame(
    listParams.filter((p) => p.in === 'query').map((p) => p.name),
    ['size', 'cursor', 'archiveState'],
    'the list documents its paging parameters',
  );
  const metrics = obj(obj(obj(paths['/metrics']).get).responses);
  t.ok(obj(obj(metrics['200']).content)['text/plain'], '/metrics documents text/plain');
  t.notMatch(JSON.stringify(doc), /"error(Message|Code)"/, 'validator-only keywords stay out of the document');
  const prompt = obj(obj(obj(paths['/session/{id}/prompt']).post).requestBody);
  t.match(
    prompt,
    { required: true, content: { 'application/json': { schema: { required: ['prompt'] } } } },
    'request bodies are documented',
  );
  t.same(obj(components.ErrorEnvelope).required, ['error'], 'the shared envelope is a named component');
});

t.test('with --require-auth the probes need the token in the document too', async (t) => {
  const d = await startDaemon(t, { args: ['--token', 'docs-secret', '--require-auth'] });
  const paths = obj(obj((await call(d, 'GET', `${DOCS_PREFIX}/json`)).body).paths);
  for (const path of ['/health', '/livez', '/readyz']) {
    const operation = obj(obj(paths[path]).get);
    t.equal(operation.security, undefined, `${path}: the bearer token`);
    t.ok(obj(operation.responses)['401'], `${path}: 401`);
  }
});

/** GET with the path sent exactly as written (fetch and undici would resolve `..` first), the body as text. */
function rawGet(d: TestDaemon, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpGet({ host: '127.0.0.1', port: d.port, path, headers: d.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** The URLs a page's src and href attributes name, resolved against the page's own URL. */
function linkedUrls(html: string, pageUrl: string): string[] {
  return [...html.matchAll(/\s(?:src|href)="([^"]+)"/g)].map((m) => new URL(m[1] ?? '', pageUrl).href);
}

const TYPES: Record<string, RegExp> = {
  '.js': /^text\/javascript/,
  '.css': /^text\/css/,
  '.png': /^image\/png$/,
};

t.test('Swagger UI at /docs, behind the token like the rest', async (t) => {
  const d = await startDaemon(t, { args: ['--token', 'docs-secret'] });
  const get = (url: string, headers: Record<string, string> = {}) =>
    fetch(url.startsWith('http') ? url : `${d.baseUrl}${url}`, {
      headers: { ...d.headers, ...headers },
      redirect: 'manual',
    });
  for (const url of [DOCS_PREFIX, `${DOCS_PREFIX}/`, `${DOCS_PREFIX}/json`, `${DOCS_PREFIX}/static/swagger-ui.css`]) {
    t.equal((await call(d, 'GET', url, undefined, { authorization: '' })).status, 401, `${url} needs the token`);
  }

  const redirect = await get(DOCS_PREFIX);
  t.equal(redirect.status, 308, '/docs goes to the page');
  t.equal(redirect.headers.get('location'), 'docs/', 'by a relative Location (a proxy prefix is kept)');
  const fromStatic = await get(`${DOCS_PREFIX}/static/index.html`);
  t.equal(fromStatic.status, 308, "swagger-ui-dist's own page name goes to ours");
  t.equal(
    new URL(fromStatic.headers.get('location') ?? '', `${d.baseUrl}${DOCS_PREFIX}/static/index.html`).pathname,
    '/docs/',
  );

  const pageUrl = `${d.baseUrl}${DOCS_PREFIX}/`;
  const page = await get(pageUrl);
  t.equal(page.status, 200);
  t.match(page.headers.get('content-type'), /^text\/html/);
  const csp = page.headers.get('content-security-policy') ?? '';
  t.match(csp, /script-src 'self'(;|$)/, 'scripts from this origin only');
  t.match(csp, /connect-src 'self'(;|$)/, 'requests to this origin only');
  t.match(csp, /frame-ancestors 'none'/);
  const html = await page.text();
  t.notMatch(html, /<script>|<script(?![^>]*\ssrc=)[^>]*>/, 'no inline script');
  const etag = page.headers.get('etag') ?? '';
  t.match(etag, /^"[\w-]+"$/);
  t.equal((await get(pageUrl, { 'if-none-match': etag })).status, 304, 'the page unchanged: 304');

  // Every file the page links to is served, with its type; the UI's own and our initializer among them.
  const linked = linkedUrls(html, pageUrl);
  for (const name of [
    'swagger-ui-bundle.js',
    'swagger-ui-standalone-preset.js',
    'swagger-initializer.js',
    'swagger-ui.css',
  ]) {
    t.ok(linked.includes(`${d.baseUrl}${DOCS_PREFIX}/static/${name}`), `the page loads static/${name}`);
  }
  for (const url of linked) {
    const res = await get(url);
    const name = url.slice(url.lastIndexOf('/') + 1);
    t.equal(res.status, 200, `${name} is served`);
    t.match(res.headers.get('content-type'), TYPES[name.slice(name.lastIndexOf('.'))] ?? /^$/, `${name}: its type`);
    t.equal(res.headers.get('x-content-type-options'), 'nosniff', `${name}: nosniff`);
    t.equal(res.headers.get('cache-control'), 'no-cache', `${name}: revalidated`);
    t.ok((await res.arrayBuffer()).byteLength > 0, `${name} has a body`);
    const tag = res.headers.get('etag') ?? '';
    t.equal((await get(url, { 'if-none-match': tag })).status, 304, `${name} unchanged: 304`);
  }
  const bundle = await (await get(`${DOCS_PREFIX}/static/swagger-ui-bundle.js`)).text();
  t.match(bundle, /SwaggerUIBundle/, "the bundle is swagger-ui-dist's");
  const initializer = await (await get(`${DOCS_PREFIX}/static/swagger-initializer.js`)).text();
  t.match(initializer, /new URL\('\.\.\/json', document\.currentScript\.src\)/, 'the UI reads /docs/json');

  // Only the files the page links to: not another file of swagger-ui-dist, and nothing outside it.
  for (const path of [
    `${DOCS_PREFIX}/static/nope.js`,
    `${DOCS_PREFIX}/static/swagger-ui.js`,
    `${DOCS_PREFIX}/static/swagger-ui-bundle.js.map`,
    `${DOCS_PREFIX}/static/package.json`,
    `${DOCS_PREFIX}/static/..%2f..%2fpackage.json`,
    `${DOCS_PREFIX}/static/..%2F..%2F..%2F..%2Fpackage.json`,
    `${DOCS_PREFIX}/static/%2e%2e%2fpackage.json`,
    `${DOCS_PREFIX}/static/../../package.json`,
    `${DOCS_PREFIX}/static/../../../../package.json`,
    `${DOCS_PREFIX}/static/..\\..\\package.json`,
  ]) {
    const res = await rawGet(d, path);
    t.equal(res.status, 404, `${path}: 404`);
    t.match(JSON.parse(res.body), { error: /not found/ }, `${path}: the JSON envelope, no file`);
    t.notMatch(res.body, /"(version|dependencies)"/, `${path}: no package.json`);
  }

  const json = await call(d, 'GET', `${DOCS_PREFIX}/json`);
  t.equal(json.status, 200);
  t.same(obj(obj(obj(json.body).components).securitySchemes).bearer, { type: 'http', scheme: 'bearer' });
  const yaml = await get(`${DOCS_PREFIX}/yaml`);
  t.equal(yaml.status, 200);
  t.match(yaml.headers.get('content-type'), /^application\/x-yaml/);
  t.same(parseYaml(await yaml.text()), json.body, '/docs/yaml is the same document');
});

t.test('in Chromium: /docs shows the operations, with no CSP violation or console error', async (t) => {
  if (!requireSystemPackage(t, SYSTEM_PACKAGES.chromium)) return;
  const d = await startDaemon(t, { args: ['--token', 'docs-secret'] });
  const browser = await chromium.launch({ executablePath: SYSTEM_PACKAGES.chromium.binary });
  t.teardown(() => browser.close());
  // The page itself is behind the token: the browser sends it with every request, as a proxy in front would.
  const context = await browser.newContext({ extraHTTPHeaders: d.headers });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(message.text());
  });
  page.on('pageerror', (err) => problems.push(err.message));
  page.on('requestfailed', (req) => problems.push(`${req.url()}: ${req.failure()?.errorText}`));
  page.on('response', (res) => {
    if (res.status() >= 400) problems.push(`${res.url()}: ${res.status()}`);
  });
  // Chromium logs a violation as a console error too; the event names the directive for certain.
  await page.addInitScript(
    "document.addEventListener('securitypolicyviolation', (e) => console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));",
  );
  const requests: string[] = [];
  page.on('request', (req) => requests.push(new URL(req.url()).pathname));

  await page.goto(`${d.baseUrl}${DOCS_PREFIX}`);
  t.equal(new URL(page.url()).pathname, `${DOCS_PREFIX}/`, 'redirected to the page');
  await page.locator('.opblock', { hasText: '/session' }).first().waitFor({ timeout: 30_000 });
  t.ok((await page.locator('.opblock').count()) >= 14, 'every operation is shown');
  t.match(await page.locator('.info .title').innerText(), /acpd/, "the document's title");
  t.ok(requests.includes(`${DOCS_PREFIX}/json`), 'the UI loaded /docs/json');
  t.ok(await page.locator('.swagger-ui .topbar').isVisible(), 'in the standalone layout');
  t.same(problems, [], 'no CSP violation, failed request or console error');
});
