/**
 * Idempotency receipts: the first answer to a request sent with an
 * `Idempotency-Key`, kept so that a retry with the same key gets that answer
 * again instead of doing the work twice.
 *
 * `ReceiptStore` is the seam. `MemoryReceiptStore` keeps them in a map (lost
 * on restart); `SqliteReceiptStore` keeps them in a `receipts` table of the
 * daemon's one database, beside the event logs, so a retry that arrives after
 * a restart is still answered from its receipt.
 *
 * A receipt lives for the store's TTL. An expired one is never handed out,
 * even before `sweep()` has removed it; the owner of the store calls `sweep()`
 * now and then. Both stores also keep at most `maxReceipts`, the oldest going
 * first, so a client minting a new key per request cannot grow them without
 * bound.
 */
import type Database from 'better-sqlite3';
import type { MaybePromise } from './maybe-promise.js';

/** What a retry is answered with. */
export interface StoredAnswer {
  /** Method, path and body digest of the request that was answered (see plugins/idempotency.ts). */
  readonly fingerprint: string;
  readonly status: number;
  /** The response headers worth repeating, by lower-case name. */
  readonly headers: Readonly<Record<string, string>>;
  /** The response body as sent ('' for none). */
  readonly body: string;
}

export interface Receipt extends StoredAnswer {
  /** Milliseconds since the epoch, on the store's clock. */
  readonly createdAt: number;
  readonly expiresAt: number;
}

/**
 * Where a keyed request stands in the cluster (`ReceiptClaims.claim`): this
 * node may run it (`claimed`); its receipt is there already (`answered`:
 * read it); another node runs it now (`held`); or the
 * node that ran it stopped renewing its claim and left no answer
 * (`interrupted`: it died mid-request, and nobody may run it again).
 */
export type ClaimOutcome =
  | { readonly state: 'claimed' }
  | { readonly state: 'answered' }
  | { readonly state: 'held' | 'interrupted'; readonly node: string; readonly fingerprint: string };

/**
 * What a store shared by several nodes adds so that a duplicate arriving at
 * one node while the first runs on another waits for it instead of running
 * it again (plugins/idempotency.ts). A single node's stores have no need of
 * it: the plugin's in-flight map coalesces there.
 */
export interface ReceiptClaims {
  /** Claims `key` for `nodeId` for `ttlMs`, unless a receipt or another live claim has it. */
  claim(key: string, fingerprint: string, nodeId: string, ttlMs: number): Promise<ClaimOutcome>;
  /** Extends this node's claim by `ttlMs`; false when it is no longer this node's or has lapsed. */
  renewClaim(key: string, nodeId: string, ttlMs: number): Promise<boolean>;
  /** Drops this node's claim without an answer kept: the next duplicate runs the request. */
  releaseClaim(key: string, nodeId: string): Promise<void>;
}

/**
 * The seam. Each method may answer at once or with a promise: the plugin
 * awaits only a promise, so memory and SQLite stay synchronous.
 */
export interface ReceiptStore {
  /** The live receipt under `key`, or undefined (none, or expired). */
  get(key: string): MaybePromise<Receipt | undefined>;
  /** Keeps `answer` under `key` for the TTL, replacing what was there (and ending a claim on it). */
  put(key: string, answer: StoredAnswer): MaybePromise<void>;
  /** Removes expired receipts, and the oldest beyond the count bound; returns how many went. */
  sweep(): MaybePromise<number>;
  /** Present on a store shared by several nodes. */
  readonly claims?: ReceiptClaims;
}

export const DEFAULT_MAX_RECEIPTS = 100_000;

export interface ReceiptStoreOptions {
  /** How long a receipt is kept, in milliseconds. */
  ttlMs: number;
  /** At most this many receipts (DEFAULT_MAX_RECEIPTS). */
  maxReceipts?: number;
  /** The clock, in milliseconds since the epoch (Date.now): tests move it instead of sleeping. */
  now?: () => number;
}

export class MemoryReceiptStore implements ReceiptStore {
  // A Map iterates in insertion order, and `put` re-inserts: the first entry is the oldest.
  private readonly receipts = new Map<string, Receipt>();
  private readonly ttlMs: number;
  private readonly maxReceipts: number;
  private readonly now: () => number;

  constructor(opts: ReceiptStoreOptions) {
    this.ttlMs = opts.ttlMs;
    this.maxReceipts = opts.maxReceipts ?? DEFAULT_MAX_RECEIPTS;
    this.now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.receipts.size;
  }

  get(key: string): Receipt | undefined {
    const receipt = this.receipts.get(key);
    return receipt !== undefined && receipt.expiresAt > this.now() ? receipt : undefined;
  }

  put(key: string, answer: StoredAnswer): void {
    const createdAt = this.now();
    this.receipts.delete(key);
    this.receipts.set(key, { ...answer, headers: { ...answer.headers }, createdAt, expiresAt: createdAt + this.ttlMs });
    for (const oldest of this.receipts.keys()) {
      if (this.receipts.size <= this.maxReceipts) break;
      this.receipts.delete(oldest);
    }
  }

  sweep(): number {
    const now = this.now();
    let removed = 0;
    for (const [key, receipt] of this.receipts) {
      if (receipt.expiresAt > now) continue;
      this.receipts.delete(key);
      removed++;
    }
    return removed;
  }
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS receipts (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    headers TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS receipts_expires_at ON receipts (expires_at);
`;

interface ReceiptRow {
  fingerprint: string;
  status: number;
  headers: string;
  body: string;
  created_at: number;
  expires_at: number;
}

/**
 * Receipts in the daemon's database (the data-store plugin's). A receipt is
 * written in `put`, synchronously, before the answer it records leaves: a
 * client cannot hold an answer whose receipt a crash could lose. The
 * database belongs to the data store, which closes it; once it is closed
 * this store remembers nothing and keeps nothing.
 */
export class SqliteReceiptStore implements ReceiptStore {
  private readonly ttlMs: number;
  private readonly maxReceipts: number;
  private readonly now: () => number;
  private readonly statements;

  constructor(
    private readonly db: Database.Database,
    opts: ReceiptStoreOptions,
  ) {
    this.ttlMs = opts.ttlMs;
    this.maxReceipts = opts.maxReceipts ?? DEFAULT_MAX_RECEIPTS;
    this.now = opts.now ?? Date.now;
    db.exec(SCHEMA);
    this.statements = {
      get: db.prepare<[string, number], ReceiptRow>(
        'SELECT fingerprint, status, headers, body, created_at, expires_at FROM receipts WHERE key = ? AND expires_at > ?',
      ),
      put: db.prepare<[string, string, number, string, string, number, number]>(
        'INSERT OR REPLACE INTO receipts (key, fingerprint, status, headers, body, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      expire: db.prepare<[number]>('DELETE FROM receipts WHERE expires_at <= ?'),
      count: db.prepare<[], { count: number }>('SELECT COUNT(*) AS count FROM receipts'),
      // Receipts share one TTL, so the soonest to expire are the oldest.
      dropOldest: db.prepare<[number]>(
        'DELETE FROM receipts WHERE key IN (SELECT key FROM receipts ORDER BY expires_at LIMIT ?)',
      ),
    };
  }

  get(key: string): Receipt | undefined {
    if (!this.db.open) return undefined;
    const row = this.statements.get.get(key, this.now());
    if (row === undefined) return undefined;
    return {
      fingerprint: row.fingerprint,
      status: row.status,
      headers: parseHeaders(row.headers),
      body: row.body,
      createdAt: row.created_at,
      expiresAt: row.expires_at,
    };
  }

  put(key: string, answer: StoredAnswer): void {
    if (!this.db.open) return;
    const createdAt = this.now();
    const { fingerprint, status, headers, body } = answer;
    this.statements.put.run(key, fingerprint, status, JSON.stringify(headers), body, createdAt, createdAt + this.ttlMs);
  }

  sweep(): number {
    if (!this.db.open) return 0;
    return this.db.transaction(() => {
      let removed = this.statements.expire.run(this.now()).changes;
      const over = (this.statements.count.get()?.count ?? 0) - this.maxReceipts;
      if (over > 0) removed += this.statements.dropOldest.run(over).changes;
      return removed;
    })();
  }
}

/** The stored headers JSON as a map of strings; anything else in it is dropped. */
function parseHeaders(json: string): Record<string, string> {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return {};
  }
  if (typeof value !== 'object' || value === null) return {};
  return Object.fromEntries(
    Object.entries(value).filter((entry): entry is [string, string] => typeof entry[1] === 'string'),
  );
}
