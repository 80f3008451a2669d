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
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { policies } from '../plugins/route-policy.js';
import { pagePolicy, readAssets, sendAsset, type Asset } from './assets.js';

const CONSOLE_DIR = new URL('../console/', import.meta.url);
const CLIENT_DIR = new URL('../client/', import.meta.url);

/** No inline scripts or styles at all. */
const CONTENT_SECURITY_POLICY = pagePolicy({ inlineStyles: false });

const consoleRoutes: FastifyPluginAsync = async (app) => {
  if (!existsSync(new URL('index.html', CONSOLE_DIR))) {
    throw new Error(`The web console is not built (no ${fileURLToPath(CONSOLE_DIR)}index.html): run npm run build`);
  }
  const pages = readAssets(CONSOLE_DIR);
  const client = readAssets(CLIENT_DIR);
  const route = { schema: { hide: true }, config: { policy: policies.asset } };
  const send = (req: FastifyRequest, reply: FastifyReply, file: Asset | undefined) =>
    sendAsset(req, reply, file, CONTENT_SECURITY_POLICY);

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
