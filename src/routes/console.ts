/**
 * The web console at /console: a page and its ES modules, served as they are
 * from the build (src/console/ is copied to dist/console/ by `npm run build`;
 * the page loads `acpd/client` from dist/client/ as /console/client/*.js).
 *
 * A fixed set of files read once at start-up, so a request can only ever get
 * one of them. They are public (policies.asset): the page holds no data and
 * asks for the token, which every API call it makes then carries. Hidden from
 * the API document, which describes the API, not its pages.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { policies } from '../plugins/route-policy.js';

const CONSOLE_DIR = new URL('../console/', import.meta.url);
const CLIENT_DIR = new URL('../client/', import.meta.url);

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

/**
 * Scripts and styles from this origin only (no inline ones), requests to this
 * origin only, and no framing: a page that holds a token should not run
 * anything it did not ship or be clickjacked.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

function extension(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot < 0 ? '' : name.slice(dot);
}

/** The servable files of a directory: those of a known type (not maps, not type declarations). */
function readAssets(dir: URL): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  for (const name of readdirSync(dir)) {
    const type = CONTENT_TYPES[extension(name)];
    if (type === undefined) continue;
    const body = readFileSync(new URL(name, dir));
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
    assets.set(name, { body, type, etag });
  }
  return assets;
}

function send(req: FastifyRequest, reply: FastifyReply, asset: Asset | undefined) {
  if (asset === undefined) {
    return reply.code(404).send({ error: `Route ${req.method} ${req.url.split('?')[0]} not found` });
  }
  // Revalidated on every load (the names carry no version), answered 304 while unchanged.
  reply
    .header('cache-control', 'no-cache')
    .header('etag', asset.etag)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer');
  if (asset.type.startsWith('text/html')) reply.header('content-security-policy', CONTENT_SECURITY_POLICY);
  if (req.headers['if-none-match'] === asset.etag) return reply.code(304).send();
  return reply.type(asset.type).send(asset.body);
}

const consoleRoutes: FastifyPluginAsync = async (app) => {
  if (!existsSync(new URL('index.html', CONSOLE_DIR))) {
    throw new Error(`The web console is not built (no ${fileURLToPath(CONSOLE_DIR)}index.html): run npm run build`);
  }
  const pages = readAssets(CONSOLE_DIR);
  const client = readAssets(CLIENT_DIR);
  const route = { schema: { hide: true }, config: { policy: policies.asset } };

  // Relative, so that a proxy's path prefix is kept: /prefix/console → /prefix/console/.
  app.get('/console', route, async (_req, reply) => reply.redirect('console/', 308));
  app.get('/console/', route, async (req, reply) => send(req, reply, pages.get('index.html')));
  app.get<{ Params: { file: string } }>('/console/:file', route, async (req, reply) =>
    send(req, reply, pages.get(req.params.file)),
  );
  app.get<{ Params: { file: string } }>('/console/client/:file', route, async (req, reply) =>
    send(req, reply, client.get(req.params.file)),
  );
};

export default consoleRoutes;
