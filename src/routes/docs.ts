/**
 * The API document and its viewer at /docs: the document as JSON and YAML
 * (@fastify/swagger's `app.swagger()`, plugins/openapi.ts), and Swagger UI
 * from swagger-ui-dist's static build, on a small page of ours.
 *
 * Swagger UI's files are a few MB that most daemons never serve, so nothing
 * of swagger-ui-dist is loaded or read at start-up: its directory is looked
 * up, and a file read, when a request asks for it, and not kept. Only the
 * files the page links to can be asked for, by name: a name outside that list
 * (another file of the package, `..`, an encoded slash) is a 404 and never
 * reaches the file system.
 *
 * All of it is for admins (policies.docs: the document describes every route)
 * and hidden from the document itself, which describes the API, not its pages.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type { FastifyPluginAsync } from 'fastify';
import { policies } from '../plugins/route-policy.js';
import { asset, notFound, pagePolicy, readAsset, sendAsset } from './assets.js';

/** Swagger UI's own files the page links to (from swagger-ui-dist): the only ones served. */
const STYLES = ['swagger-ui.css', 'index.css'];
const ICONS = [
  { file: 'favicon-32x32.png', sizes: '32x32' },
  { file: 'favicon-16x16.png', sizes: '16x16' },
];
const SCRIPTS = ['swagger-ui-bundle.js', 'swagger-ui-standalone-preset.js'];
const UI_FILES = new Set([...STYLES, ...ICONS.map((icon) => icon.file), ...SCRIPTS]);

/** Our script that starts Swagger UI, loaded after the UI's own (no inline script: the CSP allows none). */
const INITIALIZER = 'swagger-initializer.js';

/**
 * The page's links are relative (static/…), as is every redirect here, so
 * that the page works under a proxy's path prefix; hence /docs redirects to
 * /docs/, where they resolve into /docs/static/.
 */
const PAGE = [
  '<!doctype html>',
  '<html lang="en">',
  '<head>',
  '<meta charset="utf-8">',
  '<title>acpd API</title>',
  ...STYLES.map((file) => `<link rel="stylesheet" href="static/${file}">`),
  ...ICONS.map(({ file, sizes }) => `<link rel="icon" type="image/png" href="static/${file}" sizes="${sizes}">`),
  '</head>',
  '<body>',
  '<div id="swagger-ui"></div>',
  ...[...SCRIPTS, INITIALIZER].map((file) => `<script src="static/${file}"></script>`),
  '</body>',
  '</html>',
  '',
].join('\n');

/**
 * The document is `../json` from this script's own URL (/docs/static/…), so
 * it is found under a proxy's prefix too. No validator: Swagger UI would show
 * a badge from validator.swagger.io, telling it the document's URL.
 */
const INITIALIZER_SCRIPT = `'use strict';
(() => {
  const specUrl = new URL('../json', document.currentScript.src).href;
  window.ui = SwaggerUIBundle({
    url: specUrl,
    dom_id: '#swagger-ui',
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: 'StandaloneLayout',
    validatorUrl: null,
  });
})();
`;

/** The console's, but Swagger UI renders with inline styles (style attributes) and needs them. */
const CONTENT_SECURITY_POLICY = pagePolicy({ inlineStyles: true });

/** swagger-ui-dist's directory, looked up (not loaded) on the first request for one of its files. */
let uiDirectory: string | undefined;
function uiFile(name: string): string {
  uiDirectory ??= path.dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
  return path.join(uiDirectory, name);
}

const docsRoutes: FastifyPluginAsync = async (app) => {
  const page = asset('index.html', Buffer.from(PAGE));
  const initializer = asset(INITIALIZER, Buffer.from(INITIALIZER_SCRIPT));
  const route = { schema: { hide: true }, config: { policy: policies.docs } };

  app.get('/docs', route, async (_req, reply) => reply.redirect('docs/', 308));
  app.get('/docs/', route, async (req, reply) => sendAsset(req, reply, page, CONTENT_SECURITY_POLICY));
  app.get('/docs/json', route, async () => app.swagger());
  app.get('/docs/yaml', route, async (_req, reply) =>
    reply.type('application/x-yaml').send(app.swagger({ yaml: true })),
  );
  // Where swagger-ui-dist's own page would be: ours is the one at /docs/.
  app.get('/docs/static/index.html', route, async (_req, reply) => reply.redirect('../', 308));
  app.get(`/docs/static/${INITIALIZER}`, route, async (req, reply) =>
    sendAsset(req, reply, initializer, CONTENT_SECURITY_POLICY),
  );
  app.get<{ Params: { file: string } }>('/docs/static/:file', route, async (req, reply) => {
    const { file } = req.params;
    if (!UI_FILES.has(file)) return notFound(req, reply);
    return sendAsset(req, reply, await readAsset(uiFile(file)), CONTENT_SECURITY_POLICY);
  });
};

export default docsRoutes;
