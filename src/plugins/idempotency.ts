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
 */
import { createHash } from 'node:crypto';
import fp from 'fastify-plugin';
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchema, RouteOptions } from 'fastify';
import type { Config } from '../config.js';
import { IdempotencyKeyMismatchError } from '../errors.js';
import { IdempotencyKeyHeaders } from '../schemas/common.js';
import { MemoryReceiptStore, SqliteReceiptStore, type ReceiptStore, type StoredAnswer } from '../services/receipts.js';
import { mutates, policyOf } from './route-policy.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Where the answers to keyed requests are kept. */
    receipts: ReceiptStore;
  }
}

export interface IdempotencyOptions {
  config: Config;
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

/** A keyed request whose handler may be running: retries with its key wait for `done`. */
interface Flight {
  readonly fingerprint: string;
  readonly done: Promise<void>;
  readonly land: () => void;
  /** The handler was entered (so an answer or its end will land the flight). */
  started: boolean;
  /** Its answer went through onSend (stored or not). */
  answered: boolean;
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
 * The namespace a key lives in. One for now, as there is one token; with
 * named users each will get their own, so that one user's key can neither
 * replay nor block another's.
 */
function namespaceOf(_req: FastifyRequest): string {
  return '';
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
  const store = openStore(app, ttlMs, opts.now);
  app.decorate('receipts', store);
  store.sweep();
  const sweeper = setInterval(() => store.sweep(), Math.min(ttlMs, MAX_SWEEP_INTERVAL_MS));
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
      const settled = () => setImmediate(() => mine.flight.answered || land(mine.key, mine.flight));
      void Promise.resolve(result).then(settled, settled);
      return result;
    };
  });

  app.addHook('preHandler', async (req, reply) => {
    if (!mutates(policyOf(req))) return;
    const header = req.headers[HEADER];
    // The route's header schema has checked it (400 `invalid_idempotency_key`).
    if (typeof header !== 'string') return;
    const key = `${namespaceOf(req)}\n${header}`;
    const fingerprint = fingerprintOf(req);
    for (;;) {
      const receipt = store.get(key);
      if (receipt !== undefined) {
        if (receipt.fingerprint !== fingerprint) throw new IdempotencyKeyMismatchError();
        reply.code(receipt.status).headers(receipt.headers).header('idempotent-replayed', 'true');
        return reply.send(receipt.status === 204 ? undefined : receipt.body);
      }
      const running = flights.get(key);
      if (running === undefined) break;
      if (running.fingerprint !== fingerprint) throw new IdempotencyKeyMismatchError();
      await running.done;
    }
    let resolve = () => {};
    const done = new Promise<void>((r) => (resolve = r));
    const flight: Flight = { fingerprint, done, land: resolve, started: false, answered: false };
    flights.set(key, flight);
    owned.set(req, { key, flight });
    // A later hook may end the request before the handler is entered.
    reply.raw.once('close', () => {
      if (!flight.started && !flight.answered) land(key, flight);
    });
  });

  app.addHook('onSend', (req, reply, payload, done) => {
    // Only the request that ran the handler keeps its answer: a replay owns no flight.
    const mine = owned.get(req);
    if (mine === undefined || mine.flight.answered) return done(null, payload);
    mine.flight.answered = true;
    const body = payloadText(payload);
    // A stream is not kept (no mutation answers with one): its retry runs again.
    if (body !== undefined && keeps(reply.statusCode)) {
      try {
        store.put(mine.key, answerOf(mine.flight.fingerprint, reply, body));
      } catch (err) {
        req.log.error({ err }, 'idempotency receipt not kept');
      }
    }
    land(mine.key, mine.flight);
    done(null, payload);
  });
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
  dependencies: ['route-policy', 'data-store'],
});
