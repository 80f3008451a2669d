/**
 * Where webhook deliveries wait until their receiver has taken them: the
 * seam behind "at least once across a restart". A delivery is added before
 * its first attempt and removed once delivered or given up; what is still
 * here when the daemon stops is sent again by the next one.
 *
 * `MemoryWebhookQueue` keeps nothing across a restart (no data store:
 * `--event-log memory`, a cluster node, a database that would not open).
 * `SqliteWebhookQueue` keeps a table `webhook_deliveries` in the data
 * store's database. Its writes are logged, never thrown: a full disk must
 * not stop a session, and the delivery still goes out from memory.
 */
import type Database from 'better-sqlite3';
import type { StoreLogger } from './sqlite-event-log.js';

/** One event on its way to one receiver. */
export interface WebhookDelivery {
  /** The delivery id (`Acpd-Delivery`): the same for every receiver of the event, every attempt and every restart. */
  id: string;
  url: string;
  type: string;
  /** The JSON body, serialised once so that every attempt sends the same bytes. */
  body: string;
  /** Attempts made so far (across restarts). */
  attempts: number;
}

export interface WebhookQueue {
  /** Keeps deliveries; done before their first attempt. */
  add(deliveries: readonly WebhookDelivery[]): void;
  /** Every delivery kept, oldest first. */
  pending(): WebhookDelivery[];
  /** Records how many attempts `delivery` has had. */
  attempted(delivery: WebhookDelivery): void;
  /** Forgets `delivery` (delivered, or given up). */
  remove(delivery: WebhookDelivery): void;
}

/** Deliveries kept in this process only: the service's own queues are all there is. */
export class MemoryWebhookQueue implements WebhookQueue {
  add(): void {}
  pending(): WebhookDelivery[] {
    return [];
  }
  attempted(): void {}
  remove(): void {}
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS webhook_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL,
    url TEXT NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    UNIQUE (delivery_id, url)
  );
`;

interface Row {
  delivery_id: string;
  url: string;
  type: string;
  body: string;
  attempts: number;
}

export class SqliteWebhookQueue implements WebhookQueue {
  private readonly db: Database.Database;
  private readonly log: StoreLogger;
  private readonly sql;
  private readonly insertAll: (deliveries: readonly WebhookDelivery[]) => void;

  constructor(opts: { db: Database.Database; log: StoreLogger }) {
    this.db = opts.db;
    this.log = opts.log;
    this.db.exec(SCHEMA);
    const db = this.db;
    this.sql = {
      insert: db.prepare<[string, string, string, string, number]>(
        `INSERT OR IGNORE INTO webhook_deliveries (delivery_id, url, type, body, attempts) VALUES (?, ?, ?, ?, ?)`,
      ),
      all: db.prepare<[], Row>('SELECT delivery_id, url, type, body, attempts FROM webhook_deliveries ORDER BY seq'),
      attempted: db.prepare<[number, string, string]>(
        'UPDATE webhook_deliveries SET attempts = ? WHERE delivery_id = ? AND url = ?',
      ),
      remove: db.prepare<[string, string]>('DELETE FROM webhook_deliveries WHERE delivery_id = ? AND url = ?'),
    };
    // One event's deliveries (one per receiver) are kept together or not at all.
    this.insertAll = db.transaction((deliveries: readonly WebhookDelivery[]) => {
      for (const d of deliveries) this.sql.insert.run(d.id, d.url, d.type, d.body, d.attempts);
    });
  }

  add(deliveries: readonly WebhookDelivery[]): void {
    this.write('add', () => this.insertAll(deliveries));
  }

  pending(): WebhookDelivery[] {
    if (!this.db.open) return [];
    return this.sql.all
      .all()
      .map((row) => ({ id: row.delivery_id, url: row.url, type: row.type, body: row.body, attempts: row.attempts }));
  }

  attempted(delivery: WebhookDelivery): void {
    this.write('attempted', () => this.sql.attempted.run(delivery.attempts, delivery.id, delivery.url));
  }

  remove(delivery: WebhookDelivery): void {
    this.write('remove', () => this.sql.remove.run(delivery.id, delivery.url));
  }

  /** Runs a write; after the database closed (the daemon stopping) there is nothing to keep. */
  private write(op: string, run: () => void): void {
    if (!this.db.open) return;
    try {
      run();
    } catch (err) {
      this.log.error({ err, op }, 'webhook queue write failed; the delivery is kept in memory only');
    }
  }
}
