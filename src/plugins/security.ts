/**
 * Request guards, as `onRequest` hooks so they run before any body is read:
 *  1. an `Origin` header → 403, unless it is the daemon's own origin (a page
 *     it served, such as Swagger UI at /docs) or one listed in
 *     --allow-origin; a listed cross origin gets its CORS answers (below);
 *  2. on loopback binds, a Host allowlist against DNS rebinding;
 *  3. the bearer token, when one is configured (--token, --tokens-file):
 *     @fastify/bearer-auth parses the header, behind a guard that keeps the
 *     contract's exact parsing (below), and the token table (services/
 *     tokens.ts) says whose token it is, comparing hashes in constant time.
 *     The request then carries `req.identity`; a user without the scope the
 *     route's policy names gets 403 `insufficient_scope`, an expired token
 *     401 `token_expired`, and a client id first used by another user 403
 *     `client_id_taken`. On loopback binds, routes whose policy marks them as
 *     probes are exempt unless --require-auth; routes whose policy is public
 *     (the web console's static files) are exempt on every bind.
 *
 * The table is swapped whole on `app.auth.reload()` (server.ts calls it on
 * SIGHUP): requests and streams already admitted are not looked at again,
 * and a file that fails to load leaves the old table in place.
 */
import type { AddressInfo } from 'node:net';
import fp from 'fastify-plugin';
import fastifyBearerAuth from '@fastify/bearer-auth';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import { ClientIdTakenError, InsufficientScopeError, TokenExpiredError } from '../errors.js';
import type { Actor } from '../services/actor.js';
import { allows, ClientIdBindings, loadTokenTable, type Identity, type TokenTable } from '../services/tokens.js';
import { policyOf } from './route-policy.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who sent it: the user of its token and that user's scopes. Undefined when no token is configured or checked. */
    identity?: Identity;
  }
  interface FastifyInstance {
    auth: Auth;
  }
}

export interface Auth {
  /** Reads the tokens file again; on failure keeps the users it had and says why. */
  reload(): { ok: true; users: number } | { ok: false; error: string };
  /** The configured user names: the only values a `user` metric label takes. */
  readonly userNames: ReadonlySet<string>;
}

const UNAUTHORIZED = { error: 'Unauthorized' };

/** What a browser may send and read across origins: the methods and headers of the API. */
const CORS_ALLOW_METHODS = 'GET, HEAD, POST';
const CORS_ALLOW_HEADERS = 'authorization, content-type, last-event-id';
const CORS_EXPOSE_HEADERS = 'retry-after';
const CORS_MAX_AGE_SECONDS = 600;

/**
 * The origin the request was addressed to, as a browser would write it in
 * `Origin` (lower-case, default port left out). Fastify's `protocol` and
 * `host` come from X-Forwarded-Proto/-Host when --trust-proxy believes the
 * peer, so behind a proxy this is the origin the browser saw.
 */
function ownOrigin(req: FastifyRequest): string | undefined {
  try {
    return new URL(`${req.protocol}://${req.host}`).origin;
  } catch {
    return undefined;
  }
}

/**
 * How a request's `Origin` is treated: absent (not a browser, or a
 * same-origin GET), the daemon's own origin, a cross origin of
 * --allow-origin, or refused.
 */
type OriginVerdict = 'none' | 'same' | 'allowed' | 'refused';

/**
 * Whether the credentials after `<scheme> ` are as the contract reads them.
 *
 * The contract skips SP/HTAB after the first space and compares the rest
 * exactly. @fastify/bearer-auth (rfc6749 mode) takes the same scheme check
 * (`bearer` + one space, any letter case, so `Bearer<TAB>tok` fails) but then
 * `trim()`s the credentials, which also drops trailing blanks and other
 * white space such as a latin-1 NBSP. The token is trimmed at start-up, so
 * credentials that `trim()` would change can never be the token by the
 * contract's reading: refusing them here leaves the library's answer exact.
 */
function credentialsIntact(header: string | undefined): boolean {
  if (header === undefined) return true;
  const space = header.indexOf(' ');
  if (space < 0) return true;
  const credentials = header.slice(space + 1).replace(/^[ \t]+/, '');
  return credentials === credentials.trim();
}

function allowedHosts(port: number): Set<string> {
  const names = ['localhost', '127.0.0.1', '[::1]', 'host.docker.internal'];
  const set = new Set(names.map((n) => `${n}:${port}`));
  if (port === 80) for (const n of names) set.add(n);
  return set;
}

type TokenCheck = (req: FastifyRequest, reply: FastifyReply) => Promise<boolean>;

/**
 * The library's verifier, registered without its own hook so the exemptions
 * and our 401 body stay ours. Its `auth` callback asks the table (whatever
 * table is current) and records the identity, or that the token expired.
 */
async function tokenCheck(
  app: FastifyInstance,
  table: () => TokenTable,
  expired: WeakSet<FastifyRequest>,
): Promise<TokenCheck> {
  await app.register(fastifyBearerAuth, {
    keys: [],
    auth: (key, req) => {
      const match = table().lookup(key);
      if (match === undefined) return false;
      if (match.expired) {
        expired.add(req);
        return false;
      }
      req.identity = match.identity;
      return true;
    },
    addHook: false,
    specCompliance: 'rfc6749',
    // Every refused request would otherwise log at error level; the request
    // line already records the 401.
    verifyErrorLogLevel: 'debug',
  });
  const verify = app.verifyBearerAuth;
  if (verify === undefined) throw new Error('@fastify/bearer-auth did not provide verifyBearerAuth');
  return (req, reply) =>
    new Promise<boolean>((resolve) => {
      verify(req, reply, (err) => resolve(err === undefined));
    });
}

async function security(app: FastifyInstance, opts: { config: Config }) {
  const { config } = opts;
  const sources = {
    ...(config.token !== undefined ? { token: config.token } : {}),
    ...(config.tokensFile !== undefined ? { tokensFile: config.tokensFile } : {}),
  };
  const guarded = config.token !== undefined || config.tokensFile !== undefined;
  let table = loadTokenTable(sources);
  const userNames = new Set<string>(table.users.keys());
  const expired = new WeakSet<FastifyRequest>();
  const bindings = new ClientIdBindings();
  const checkToken = guarded ? await tokenCheck(app, () => table, expired) : undefined;
  app.decorateRequest('identity', undefined);
  app.decorate('auth', {
    reload() {
      try {
        const next = loadTokenTable(sources);
        table = next;
        // Names only grow: a metric series once labelled stays valid.
        for (const name of next.users.keys()) userNames.add(name);
        app.log.info({ users: next.users.size, tokensFile: config.tokensFile }, 'tokens reloaded');
        return { ok: true, users: next.users.size };
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        app.log.error({ tokensFile: config.tokensFile, error }, 'tokens file not reloaded; the previous users stay');
        return { ok: false, error };
      }
    },
    userNames,
  } satisfies Auth);
  const probesArePublic = config.isLoopback && !config.requireAuth;
  let hostsForPort: { port: number; hosts: Set<string> } | undefined;

  const hostAllowed = (req: FastifyRequest): boolean => {
    // Not listening means no socket can reach us: the request was injected
    // in-process (app.inject), where DNS rebinding is no concern and there is
    // no port to compare against.
    if (!app.server.listening) return true;
    const port = (app.server.address() as AddressInfo | null)?.port ?? config.port;
    if (!hostsForPort || hostsForPort.port !== port) hostsForPort = { port, hosts: allowedHosts(port) };
    return hostsForPort.hosts.has((req.headers.host ?? '').toLowerCase());
  };

  const allowed = new Set(config.allowOrigin);
  const originVerdict = (req: FastifyRequest): OriginVerdict => {
    const origin = req.headers.origin;
    if (origin === undefined) return 'none';
    if (origin === ownOrigin(req)) return 'same';
    return allowed.has(origin) ? 'allowed' : 'refused';
  };

  app.addHook('onRequest', async (req, reply) => {
    const verdict = originVerdict(req);
    if (verdict === 'refused') {
      return reply.code(403).send({ error: 'Request denied by CORS policy' });
    }
    if (config.isLoopback && !hostAllowed(req)) {
      return reply.code(403).send({ error: 'Invalid Host header' });
    }
    // A listed cross origin: every answer says so, and a preflight is
    // answered here, before the token (a browser sends none with it). Written
    // out rather than through @fastify/cors: these five headers are all it
    // takes, and the library's own preflight route would have to be fitted
    // with a policy and kept behind the Origin and Host checks above.
    if (verdict === 'allowed') {
      reply.header('access-control-allow-origin', req.headers.origin).header('vary', 'Origin');
      if (req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined) {
        return reply
          .code(204)
          .header('access-control-allow-methods', CORS_ALLOW_METHODS)
          .header('access-control-allow-headers', CORS_ALLOW_HEADERS)
          .header('access-control-max-age', String(CORS_MAX_AGE_SECONDS))
          .send();
      }
      reply.header('access-control-expose-headers', CORS_EXPOSE_HEADERS);
    }
    if (checkToken === undefined) return;
    // A probe's HEAD twin shares its GET route's policy (as Express's app.get
    // answers HEAD), so probes that only want the status line are exempt too.
    const policy = policyOf(req);
    if (probesArePublic && policy.probe) return;
    // The console's page and scripts: they carry no data, and the page asks for the token itself.
    if (policy.public === true) return;
    // Only the Authorization header counts: a token in the query string
    // (?token=, ?access_token=) is never looked at, so it cannot end up in
    // URLs, logs or browser history as a working credential.
    const authorization = req.headers.authorization;
    if (!credentialsIntact(authorization) || !(await checkToken(req, reply))) {
      if (expired.has(req)) throw new TokenExpiredError();
      return reply.code(401).send(UNAUTHORIZED);
    }
    const identity = req.identity;
    if (identity === undefined) return;
    if (policy.scope !== undefined && !allows(identity.scopes, policy.scope)) {
      throw new InsufficientScopeError(policy.scope, identity.user);
    }
    // A client id names the user who first sent it; another user cannot act (or be seen) under it.
    const clientId = req.headers['x-qwen-client-id'];
    if (typeof clientId === 'string' && clientId !== '' && !bindings.claim(clientId, identity.user)) {
      throw new ClientIdTakenError(clientId);
    }
  });
}

export default fp(security, { name: 'security', fastify: '5.x' });

/** Who a request acts for, as the frames it causes name them: its user and client id; undefined without a token. */
export function actorOf(req: FastifyRequest): Actor | undefined {
  const identity = req.identity;
  if (identity === undefined) return undefined;
  const clientId = req.headers['x-qwen-client-id'];
  return { user: identity.user, ...(typeof clientId === 'string' && clientId !== '' ? { clientId } : {}) };
}
