/**
 * Request guards, as `onRequest` hooks so they run before any body is read:
 *  1. any `Origin` header → 403 (browsers are not clients of this daemon);
 *  2. on loopback binds, a Host allowlist against DNS rebinding;
 *  3. the bearer token, when one is configured (loopback `/health` exempt).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import fp from 'fastify-plugin';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';

/** Probes an orchestrator calls without credentials on a loopback bind. */
const PUBLIC_PROBES = new Set(['/health', '/livez', '/readyz']);

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Scheme before the first space (case-insensitive `bearer`), optional extra blanks, non-empty credentials. */
export function bearerCredentials(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const space = header.indexOf(' ');
  if (space <= 0 || header.slice(0, space).toLowerCase() !== 'bearer') return undefined;
  let i = space + 1;
  while (i < header.length && (header[i] === ' ' || header[i] === '\t')) i++;
  const creds = header.slice(i);
  return creds.length > 0 ? creds : undefined;
}

function allowedHosts(port: number): Set<string> {
  const names = ['localhost', '127.0.0.1', '[::1]', 'host.docker.internal'];
  const set = new Set(names.map((n) => `${n}:${port}`));
  if (port === 80) for (const n of names) set.add(n);
  return set;
}

async function security(app: FastifyInstance, opts: { config: Config }) {
  const { config } = opts;
  const tokenDigest = config.token ? sha256(config.token) : undefined;
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

  app.addHook('onRequest', async (req, reply) => {
    if (req.headers.origin !== undefined) {
      return reply.code(403).send({ error: 'Request denied by CORS policy' });
    }
    if (config.isLoopback && !hostAllowed(req)) {
      return reply.code(403).send({ error: 'Invalid Host header' });
    }
    if (!tokenDigest) return;
    // HEAD rides on the GET route (as Express's app.get does), so probes that
    // only want the status line are exempt too.
    const probe = req.method === 'GET' || req.method === 'HEAD';
    if (config.isLoopback && probe && PUBLIC_PROBES.has(req.routeOptions.url ?? '')) return;
    const creds = bearerCredentials(req.headers.authorization);
    if (!creds || !timingSafeEqual(sha256(creds), tokenDigest)) {
      return reply.code(401).send({ error: 'Unauthorized' });
    }
  });
}

export default fp(security, { name: 'security', fastify: '5.x' });
