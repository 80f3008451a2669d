/**
 * The listener's connections: how long one may take to send its request, and
 * what happens once --max-connections of them are open.
 *
 * Deadlines. Node's http server checks, every `connectionsCheckingInterval`,
 * the connections that are in the middle of receiving a request, and a
 * connection counts as such from the moment it is accepted, so one that never
 * sends a byte is caught too: past `headersTimeout` without a complete request
 * head, the socket gets a 408 and is closed. Node's default interval (30 s)
 * would let a short header timeout run late by that much, so it is derived
 * from the timeout. `requestTimeout` bounds the whole request (head and body)
 * but stops counting once the body is complete: a prompt whose handler waits
 * minutes for the agent, and an SSE stream (a GET has no body), are not
 * subject to it. Neither deadline touches a connection between requests;
 * keep-alive idleness is Fastify's keepAliveTimeout. These are constructor
 * options of the server, so app.ts hands them to Fastify; the cap below is a
 * plugin.
 *
 * The cap. A connection accepted while --max-connections are already open
 * first makes room by closing idle keep-alive connections (never one with a
 * response in progress, so streams and running prompts stay). If that is not
 * enough it is still let in, up to a hard ceiling above the cap, so it can get
 * an HTTP answer instead of a reset: the probes (routes whose policy says so)
 * answer as usual, anything else gets 503 `connection_limit` with
 * Retry-After, and either way the connection is closed after that response.
 * Past the ceiling Node closes new connections at once (server.maxConnections),
 * before any byte is read.
 */
import type { ServerOptions } from 'node:http';
import type { Socket } from 'node:net';
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { ConnectionLimitError } from '../errors.js';
import { policyOf } from './route-policy.js';

/**
 * Whole-request deadline (head and body). Node's own default, which Fastify
 * turns off; it never applies once the body has arrived.
 */
const REQUEST_TIMEOUT_MS = 300_000;

/** Bounds of the deadline check's period: often enough for short timeouts, cheap for long ones. */
const MIN_CHECK_INTERVAL_MS = 10;
const MAX_CHECK_INTERVAL_MS = 1_000;

/** Connections let in past the cap so they can be answered: a quarter of the cap, at least 64. */
const MIN_RESERVE = 64;

type ConnectionTimeouts = Required<
  Pick<ServerOptions, 'headersTimeout' | 'requestTimeout' | 'connectionsCheckingInterval'>
>;

/**
 * The http server's deadlines. A header timeout is honoured within a quarter
 * of itself (and at most a second) late; Node refuses a header timeout longer
 * than the request timeout, so the latter is never shorter.
 */
export function connectionTimeouts(config: Pick<Config, 'headerTimeoutMs'>): ConnectionTimeouts {
  const headersTimeout = config.headerTimeoutMs;
  const interval = Math.round(headersTimeout / 4);
  return {
    headersTimeout,
    requestTimeout: Math.max(REQUEST_TIMEOUT_MS, headersTimeout),
    connectionsCheckingInterval: Math.min(MAX_CHECK_INTERVAL_MS, Math.max(MIN_CHECK_INTERVAL_MS, interval)),
  };
}

/** How many connections may be open at all with `cap` of them served normally. */
export function connectionCeiling(cap: number): number {
  return cap + Math.max(MIN_RESERVE, Math.ceil(cap / 4));
}

async function connections(app: FastifyInstance, opts: { config: Config }) {
  const cap = opts.config.maxConnections;
  // Infinity (or 0, which config turns into Infinity) means no cap.
  if (!Number.isFinite(cap) || cap <= 0) return;

  const server = app.server;
  // Node reads this on every accept, so setting it before listen() leaves no window.
  server.maxConnections = connectionCeiling(cap);

  const open = new Set<Socket>();
  const overCap = new WeakSet<Socket>();
  // A destroyed socket emits 'close' a turn later: it no longer counts.
  const openCount = (): number => {
    let count = 0;
    for (const socket of open) if (!socket.destroyed) count++;
    return count;
  };

  // Node's own connection listener (registered by the server's constructor)
  // has run by now, so the socket is already tracked for the deadlines; it is
  // mid-request from Node's point of view and never counts as idle.
  server.on('connection', (socket: Socket) => {
    if (openCount() >= cap) {
      server.closeIdleConnections();
      if (openCount() >= cap) overCap.add(socket);
    }
    open.add(socket);
    socket.once('close', () => open.delete(socket));
  });

  // Before the guards of the security plugin: a connection over the cap is
  // answered the same with or without credentials, and its body is not read.
  // The request is routed by now, so its policy says whether it is a probe
  // (an orchestrator must still see the daemon alive).
  app.addHook('onRequest', async (req, reply) => {
    if (!overCap.has(req.raw.socket)) return;
    reply.header('connection', 'close');
    if (policyOf(req).probe) return;
    throw new ConnectionLimitError(cap);
  });
}

export default fp(connections, { name: 'connections', fastify: '5.x' });
