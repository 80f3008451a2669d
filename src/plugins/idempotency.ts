/**
 * Safe retries: every route that changes state (its policy `mutates`) takes
 * an `Idempotency-Key` header. The first answer to a keyed request is kept
 * as a receipt (services/receipts.ts); a retry with the same key and the
 * same request gets that answer again, with `Idempotent-Replayed: true`,
 * and the handler does not run. The same key on another request is a 422.
 *
 * A request is identified by its fingerprint: method, path (no query) and a
 * digest of its validated body in canonical JSON, so a retry that orders
 * its fields differently is still the same request.
 *
 * Concurrent duplicates coalesce: while the first request with a key runs,
 * a retry waits for it and is then answered from its receipt. When the first
 * ends with nothing to keep (a 5xx, a "try again" status, or its client left
 * and the answer was never written), the next waiter runs the request itself.
 *
 * Receipts go to the data store's database when there is one (and so
 * survive a restart), else to memory. An unref'd timer sweeps the expired.
 *
 * With --redis-url they go to Redis (cluster/redis-receipts.ts), and a
 * duplicate may reach another node while the first runs. So the node that
 * runs a keyed request first claims its key in Redis, for --lease-ttl and
 * renewed every third of it while the request runs: the claim is a lease on
 * the request, and a dead node's claims lapse when its session leases do.
 * A duplicate on another node polls (every POLL_MS) until the receipt is
 * there and answers it as a replay; if the claim is dropped with no answer
 * kept, it runs the request itself, as a local waiter would; if the claim
 * lapsed with no receipt (its node died mid-request), it answers 409
 * `idempotency_key_interrupted` and the work is never run a second time. A
 * request another node forwarded here (cluster/forward.ts) is
 * left alone: the node that forwarded it holds the claim and keeps the
 * receipt.
 */
import { createHash } from 'node:crypto';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import fp from 'fastify-plugin';
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchema, RouteOptions } from 'fastify';
import { RedisReceiptStore } from '../cluster/redis-receipts.js';
import type { Config } from '../config.js';
import { IdempotencyKeyInterruptedError, IdempotencyKeyMismatchError } from '../errors.js';
import { IdempotencyKeyHeaders } from '../schemas/common.js';
import { isPromise, type MaybePromise } from '../services/maybe-promise.js';
import {
  MemoryReceiptStore,
  SqliteReceiptStore,
  type Receipt,
  type ReceiptStore,
  type StoredAnswer,
} from '../services/receipts.js';
import { mutates, policyOf } from './route-policy.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Where the answers to keyed requests are kept. */
    receipts: ReceiptStore;
  }
}

export interface IdempotencyOptions {
  config: Config;
  /** The receipts (a test's, or a shared Redis store); chosen from the config when absent. */
  store?: ReceiptStore;
  /** The receipts' clock (Date.now); tests move it instead of waiting for a TTL to pass. */
  now?: () => number;
}

const HEADER = 'idempotency-key';
/** The answer's headers a replay repeats; the rest are the transport's or recomputed. */
const KEPT_HEADERS = ['content-type', 'retry-after', 'preference-applied'] as const;
/** Statuses that tell the client to try again later: a retry must really run again. */
const RETRYABLE = new Set([408, 409, 425, 429]);
/** The longest pause between two sweeps. */
const MAX_SWEEP_INTERVAL_MS = 60_000;
/** How often a duplicate looks again at a claim another node holds. */
const POLL_MS = 50;

/** A keyed request whose handler may be running: retries with its key wait for `done`. */
interface Flight {
  readonly fingerprint: string;
  readonly done: Promise<void>;
  readonly land: () => void;
  /** The handler was entered (so an answer or its end will land the flight). */
  started: boolean;
  /** Its answer went through onSend (stored or not). */
  answered: boolean;
  /** This node holds the key's claim in the shared store, renewed by this timer. */
  claim?: NodeJS.Timeout;
}

/** Whether an answer with this status is kept: 2xx, and 4xx except those that say "try again". */
function keeps(status: number): boolean {
  return (status >= 200 && status < 300) || (status >= 400 && status < 500 && !RETRYABLE.has(status));
}

/** JSON with every object's keys sorted, so equal bodies give equal text whatever their field order. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((item) => canonicalJson(item)).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value)
      .filter(([, item]) => item !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

function fingerprintOf(req: FastifyRequest): string {
  const digest = createHash('sha256')
    .update(canonicalJson(req.body ?? {}))
    .digest('hex');
  return `${req.method} ${req.url.split('?')[0]} ${digest}`;
}

/**
 * The namespace a key lives in: the user of the request's token, so that one
 * user's key can neither replay another's answer (which may name that user's
 * session or say what it did) nor block or mismatch another's request. One
 * namespace without tokens, or with only --token: everyone is the same user.
 */
function namespaceOf(req: FastifyRequest): string {
  return req.identity?.user ?? '';
}

/** The route's schema with the header added (merged into a headers schema it already has). */
function withKeyHeader(schema: FastifySchema | undefined): FastifySchema {
  const own = schema?.headers;
  if (own === undefined) return { ...schema, headers: IdempotencyKeyHeaders };
  if (typeof own !== 'object' || own === null || !('properties' in own)) return schema ?? {};
  const properties = { ...(own.properties as object), ...IdempotencyKeyHeaders.properties };
  return { ...schema, headers: { ...own, properties } };
}

function openStore(app: FastifyInstance, ttlMs: number, now: (() => number) | undefined): ReceiptStore {
  // A cluster node shares its receipts with the other nodes, in Redis.
  const cluster = app.cluster;
  if (cluster !== undefined)
    return new RedisReceiptStore({ redis: cluster.redis, keys: cluster.cluster.keys, ttlMs, now });
  const database = app.dataStore?.database;
  if (database !== undefined) {
    try {
      return new SqliteReceiptStore(database, { ttlMs, now });
    } catch (err) {
      app.log.error({ err }, 'receipts table cannot be used; idempotency receipts kept in memory only');
    }
  }
  return new MemoryReceiptStore({ ttlMs, now });
}

async function idempotency(app: FastifyInstance, opts: IdempotencyOptions) {
  const ttlMs = opts.config.idempotencyTtl * 1000;
  const store = opts.store ?? openStore(app, ttlMs, opts.now);
  const claims = store.claims;
  const nodeId = app.cluster?.node.nodeId ?? opts.config.nodeId ?? os.hostname();
  const claimTtlMs = opts.config.leaseTtl * 1000;
  app.decorate('receipts', store);
  const sweep = () => {
    const swept = store.sweep();
    if (isPromise(swept)) swept.catch((err: unknown) => app.log.warn({ err }, 'idempotency receipts not swept'));
  };
  sweep();
  const sweeper = setInterval(sweep, Math.min(ttlMs, MAX_SWEEP_INTERVAL_MS));
  sweeper.unref();
  app.addHook('onClose', (_app, done) => {
    clearInterval(sweeper);
    done();
  });

  /** Keyed requests running now, by namespaced key. */
  const flights = new Map<string, Flight>();
  /** The flight each running keyed request owns. */
  const owned = new WeakMap<FastifyRequest, { key: string; flight: Flight }>();

  function land(key: string, flight: Flight): void {
    if (flights.get(key) === flight) flights.delete(key);
    flight.land();
  }

  /**
   * Ends a flight that ran: keeps `answer` when there is one (which ends
   * its claim too), else drops its claim so that the next duplicate runs
   * the request, then lands it. At once with a local store; with Redis,
   * the flight lands once the receipt is written, so a duplicate never
   * finds neither the claim nor the receipt.
   */
  function finish(req: FastifyRequest, key: string, flight: Flight, answer?: StoredAnswer): MaybePromise<void> {
    const claimed = flight.claim !== undefined;
    clearInterval(flight.claim);
    let written: MaybePromise<void> = undefined;
    try {
      if (answer !== undefined) written = store.put(key, answer);
      // Unknown whether it took effect: the claim lapses unanswered, and duplicates get 409 interrupted.
      else if (claimed && claims && !outcomeUnknown.has(req)) written = claims.releaseClaim(key, nodeId);
    } catch (err) {
      req.log.error({ err }, 'idempotency receipt not kept');
    }
    if (!isPromise(written)) return land(key, flight);
    return written.then(
      () => land(key, flight),
      (err: unknown) => {
        req.log.error({ err }, answer ? 'idempotency receipt not kept' : 'idempotency claim not released');
        // Without its receipt the claim must not stay held: duplicates would wait for nothing.
        const released = claimed && answer && claims ? claims.releaseClaim(key, nodeId) : undefined;
        void released?.catch(() => undefined);
        land(key, flight);
      },
    );
  }

  function replay(reply: FastifyReply, receipt: Receipt, fingerprint: string) {
    if (receipt.fingerprint !== fingerprint) throw new IdempotencyKeyMismatchError();
    reply.code(receipt.status).headers(receipt.headers).header('idempotent-replayed', 'true');
    return reply.send(receipt.status === 204 ? undefined : receipt.body);
  }

  /** This node's claim on a running request is pushed forward every third of its TTL. */
  function renewing(req: FastifyRequest, key: string): NodeJS.Timeout {
    const timer = setInterval(() => {
      claims?.renewClaim(key, nodeId, claimTtlMs).then(
        (renewed) => renewed || req.log.warn({ key }, 'idempotency claim lapsed while its request ran'),
        (err: unknown) => req.log.warn({ err }, 'idempotency claim not renewed'),
      );
    }, claimTtlMs / 3);
    timer.unref();
    return timer;
  }

  /**
   * Every route that changes state validates the header and, once its
   * handler has settled, lands its flight if no answer did: the answer was
   * hijacked (the client left) and retries must not wait forever.
   */
  app.addHook('onRoute', (route: RouteOptions) => {
    const policy = route.config?.policy;
    if (policy === undefined || !mutates(policy)) return;
    route.schema = withKeyHeader(route.schema);
    const handler = route.handler;
    route.handler = function (this: FastifyInstance, req: FastifyRequest, reply: FastifyReply) {
      const mine = owned.get(req);
      if (mine === undefined) return handler.call(this, req, reply);
      mine.flight.started = true;
      const result: unknown = handler.call(this, req, reply);
      // Fastify sends what the handler settles with in the same run of
      // microtasks (answer, error handler, onSend): by the next macrotask a
      // flight without an answer will not get one.
      const settled = () => setImmediate(() => mine.flight.answered || void finish(req, mine.key, mine.flight));
      void Promise.resolve(result).then(settled, settled);
      return result;
    };
  });

  app.addHook('preHandler', async (req, reply) => {
    // A request another node forwarded here was claimed there: that node keeps its receipt.
    if (!mutates(policyOf(req)) || app.cluster?.cluster.isForwarded(req) === true) return;
    const header = req.headers[HEADER];
    // The route's header schema has checked it (400 `invalid_idempotency_key`).
    if (typeof header !== 'string') return;
    const key = `${namespaceOf(req)}\n${header}`;
    const fingerprint = fingerprintOf(req);
    for (;;) {
      // A local store answers at once: looking it up and then the flights stays one step.
      const found = store.get(key);
      const receipt = isPromise(found) ? await found : found;
      if (receipt !== undefined) return replay(reply, receipt, fingerprint);
      const running = flights.get(key);
      if (running === undefined) break;
      if (running.fingerprint !== fingerprint) throw new IdempotencyKeyMismatchError();
      await running.done;
    }
    let resolve = () => {};
    const done = new Promise<void>((r) => (resolve = r));
    const flight: Flight = { fingerprint, done, land: resolve, started: false, answered: false };
    flights.set(key, flight);
    if (claims) {
      // Local duplicates wait on this flight meanwhile; only this request asks the cluster.
      let receipt: Receipt | undefined;
      try {
        receipt = await claimOrWait(key, fingerprint, reply);
      } catch (err) {
        land(key, flight);
        throw err;
      }
      if (receipt !== undefined) {
        land(key, flight);
        return replay(reply, receipt, fingerprint);
      }
      flight.claim = renewing(req, key);
    }
    owned.set(req, { key, flight });
    // A later hook may end the request before the handler is entered.
    reply.raw.once('close', () => {
      if (!flight.started && !flight.answered) void finish(req, key, flight);
    });
  });

  /**
   * Claims the key for this node (undefined), or waits while another node
   * runs it and answers with its receipt. Throws 422 for another request
   * under the key, 409 when its node died mid-request.
   */
  async function claimOrWait(key: string, fingerprint: string, reply: FastifyReply): Promise<Receipt | undefined> {
    if (!claims) return undefined;
    for (;;) {
      const outcome = await claims.claim(key, fingerprint, nodeId, claimTtlMs);
      if (outcome.state === 'claimed') return undefined;
      if (outcome.state === 'answered') {
        const receipt = await store.get(key);
        // Gone already (expired between the two looks): claim again.
        if (receipt !== undefined) return receipt;
        continue;
      }
      if (outcome.fingerprint !== fingerprint) throw new IdempotencyKeyMismatchError();
      if (outcome.state === 'interrupted') throw new IdempotencyKeyInterruptedError();
      // Nobody to answer once the client has gone: stop asking Redis for it.
      if (reply.raw.destroyed) throw new IdempotencyKeyInterruptedError();
      await sleep(POLL_MS);
    }
  }

  app.addHook('onSend', (req, reply, payload, done) => {
    // Only the request that ran the handler keeps its answer: a replay owns no flight.
    const mine = owned.get(req);
    if (mine === undefined || mine.flight.answered) return done(null, payload);
    mine.flight.answered = true;
    const body = payloadText(payload);
    // A stream is not kept (no mutation answers with one): its retry runs again.
    const answer =
      body !== undefined && keeps(reply.statusCode) ? answerOf(mine.flight.fingerprint, reply, body) : undefined;
    const finished = finish(req, mine.key, mine.flight, answer);
    // A remote receipt is written before its answer leaves, as a local one is.
    if (isPromise(finished)) void finished.then(() => done(null, payload));
    else done(null, payload);
  });
}

/** Requests whose work may or may not have happened (see `leaveOutcomeUnknown`). */
const outcomeUnknown = new WeakSet<FastifyRequest>();

/**
 * Marks a keyed request whose work may have been done although it gets an
 * error: a request forwarded to another node that died while it ran. Its
 * claim is then not released but left to lapse, so that a retry under the
 * same key is told (409 `idempotency_key_interrupted`) instead of doing the
 * work a second time.
 */
export function leaveOutcomeUnknown(req: FastifyRequest): void {
  outcomeUnknown.add(req);
}

/** The body as text; undefined for a stream. */
function payloadText(payload: unknown): string | undefined {
  if (payload === null || payload === undefined) return '';
  if (typeof payload === 'string') return payload;
  if (Buffer.isBuffer(payload)) return payload.toString('utf8');
  return undefined;
}

function answerOf(fingerprint: string, reply: FastifyReply, body: string): StoredAnswer {
  const headers: Record<string, string> = {};
  const empty = reply.statusCode === 204;
  for (const name of KEPT_HEADERS) {
    // A 204 goes out without a content type, whatever the serializer set.
    if (empty && name === 'content-type') continue;
    const value = reply.getHeader(name);
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  return { fingerprint, status: reply.statusCode, headers, body: empty ? '' : body };
}

export default fp(idempotency, {
  name: 'idempotency',
  fastify: '5.x',
  dependencies: ['route-policy', 'data-store', 'cluster'],
});
