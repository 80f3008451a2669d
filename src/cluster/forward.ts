/**
 * Forwarding: a node that receives a request only a session's owner can
 * serve (a prompt, a cancel, a vote…) sends it on to the owner over HTTP and
 * answers with the owner's answer, status, headers and body as they came.
 *
 * Why HTTP between nodes rather than a queue in Redis: the owner already
 * speaks this protocol, so a forwarded request is validated, admitted and
 * answered by exactly the code that serves a direct one (same envelopes, same
 * races, same streaming of a long prompt); a client leaving is seen by the
 * owner as the connection closing, as it would be directly; and there is no
 * second protocol or request table to keep in step. The cost is that nodes
 * must reach each other (`--advertise-url`).
 *
 * A forwarded request carries the forwarding node's name and the cluster's
 * secret (kept in Redis, so only nodes of the cluster know it). With both,
 * the owner trusts what the first node already did: the idempotency key was
 * claimed there, and the rate limits were counted there.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Dispatcher } from 'undici';
import { SessionOwnerUnavailableError } from '../errors.js';

/** The forwarding node's name. */
export const FORWARDED_BY_HEADER = 'x-acpd-forwarded-by';
/** The cluster's secret, proving the request comes from a node. */
export const FORWARD_SECRET_HEADER = 'x-acpd-forward-secret';
/**
 * The client's address as the forwarding node saw it (`req.ip`, after that
 * node's --trust-proxy): the owner's peer is the forwarding node, and
 * `local-only` needs the client's. Believed only beside the secret; a
 * client's own copy is never passed on. (The user needs no header: the
 * client's token goes along and the owner checks it itself.)
 */
export const CLIENT_IP_HEADER = 'x-acpd-client-ip';

// Headers that describe one connection, or that the forward sets itself.
const NOT_FORWARDED = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'upgrade',
  'host',
  'content-length',
  'expect',
  'te',
  'trailer',
  'proxy-connection',
  'origin',
  FORWARDED_BY_HEADER,
  FORWARD_SECRET_HEADER,
  CLIENT_IP_HEADER,
  // Sent by nodes of an earlier version; never passed on.
  'x-acpd-client-user',
]);

const NOT_ANSWERED = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'date']);

/** How the secret is checked: the cluster plugin decorates requests with it. */
export function isForwardedWith(req: FastifyRequest, secret: string | undefined): boolean {
  if (secret === undefined) return false;
  return req.headers[FORWARD_SECRET_HEADER] === secret && typeof req.headers[FORWARDED_BY_HEADER] === 'string';
}

/** The client of a request another node forwarded here (see CLIENT_IP_HEADER); undefined for any other request. */
export function forwardedClientWith(req: FastifyRequest, secret: string | undefined): { ip: string } | undefined {
  if (!isForwardedWith(req, secret)) return undefined;
  const ip = req.headers[CLIENT_IP_HEADER];
  if (typeof ip !== 'string' || ip === '') return undefined;
  return { ip };
}

export interface ForwardTarget {
  node: string;
  url: string;
}

export interface ForwardOptions {
  /** This node's name. */
  from: string;
  secret: string;
  /** Seconds a client should wait before retrying when the owner cannot be reached (its lease's TTL). */
  retryAfter: number;
  /** Called when the owner went away after the request reached it: it may have done the work. */
  onInterrupted: () => void;
}

// The owner was never reached: the request did nothing there.
const NOT_REACHED = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * Reads go over kept-alive connections. A request that changes something
 * goes over a connection of its own: on a kept-alive one, a write to a node
 * that has just died fails like a request the node took and then dropped,
 * and its retry would be refused as interrupted. On a fresh connection a dead
 * node refuses the connect, which says for sure that nothing was done.
 */
interface Dispatchers {
  request: typeof import('undici').request;
  pooled: Dispatcher;
  fresh: Dispatcher;
}
// undici is loaded with the first forward: a daemon outside a cluster never needs it (it weighs ~5 MB of RSS).
let dispatchers: Promise<Dispatchers> | undefined;
function loadDispatchers(): Promise<Dispatchers> {
  dispatchers ??= import('undici').then(({ Agent, request }) => ({
    request,
    pooled: new Agent({ keepAliveTimeout: 10_000 }),
    fresh: new Agent({ pipelining: 0, connect: { timeout: 2_000 } }),
  }));
  return dispatchers;
}

function errorCode(err: unknown): string | undefined {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code !== 'UND_ERR') return code;
  }
  return undefined;
}

/**
 * Sends `req` to `target` and answers `reply` with what comes back. When the
 * owner cannot be reached, or goes away before it answers, the client gets a
 * 503 `session_owner_unavailable`: the request is never sent to another node
 * in its place, since the owner may have started it already.
 */
export async function forward(
  req: FastifyRequest,
  reply: FastifyReply,
  target: ForwardTarget,
  opts: ForwardOptions,
): Promise<FastifyReply> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || NOT_FORWARDED.has(name)) continue;
    headers[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  headers[FORWARDED_BY_HEADER] = opts.from;
  headers[FORWARD_SECRET_HEADER] = opts.secret;
  headers[CLIENT_IP_HEADER] = req.ip;
  const reads = req.method === 'GET' || req.method === 'HEAD';
  const body = req.body === undefined || reads ? undefined : JSON.stringify(req.body);
  if (body !== undefined) headers['content-type'] = 'application/json';

  // The client leaving ends the forwarded request too: the owner sees its connection close.
  const ac = new AbortController();
  const onClose = () => {
    if (!reply.raw.writableEnded) ac.abort();
  };
  reply.raw.once('close', onClose);
  let res: Dispatcher.ResponseData | undefined;
  let answer: Buffer;
  try {
    const { request, pooled, fresh } = await loadDispatchers();
    res = await request(new URL(req.url, target.url), {
      method: req.method,
      headers,
      ...(body !== undefined ? { body } : {}),
      signal: ac.signal,
      dispatcher: reads ? pooled : fresh,
    });
    answer = Buffer.from(await res.body.arrayBuffer());
  } catch (err) {
    if (ac.signal.aborted) {
      reply.hijack();
      return reply;
    }
    const code = errorCode(err);
    if (res !== undefined || code === undefined || !NOT_REACHED.has(code)) opts.onInterrupted();
    const reason = code ?? (err instanceof Error ? err.message : String(err));
    throw new SessionOwnerUnavailableError(target.node, reason, opts.retryAfter);
  } finally {
    reply.raw.off('close', onClose);
  }
  reply.code(res.statusCode);
  for (const [name, value] of Object.entries(res.headers)) {
    if (value !== undefined && !NOT_ANSWERED.has(name)) reply.header(name, value);
  }
  return reply.send(answer);
}
