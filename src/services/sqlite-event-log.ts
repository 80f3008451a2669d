/**
 * The durable `EventLog`: every session's numbered events in one SQLite
 * database (`<dataDir>/events.sqlite`), written through better-sqlite3.
 *
 * Group commit: `append` only takes an event; `commit` writes every event
 * taken since the last one in a single transaction. The bus calls `commit`
 * before it sends any of them (once per burst, see `EventBus.flush`), and
 * better-sqlite3 is synchronous, so no client ever holds a frame the log
 * could lose to a crash of the daemon, and a streamed answer of hundreds of
 * events costs a few transactions instead of one each.
 *
 * Durability: WAL with `synchronous=NORMAL`. A commit then lands in the WAL
 * file through write(2) before `commit` returns, so it survives the process
 * dying at any moment (`kill -9`, an abort): the kernel already holds the
 * bytes. Only an operating-system crash or a power cut can lose the last
 * commits, and even then the database stays consistent. FULL would add an
 * fsync per event (a streamed answer is hundreds of events) to guard against
 * that last case, which replay after a reboot does not need. The fsyncs
 * NORMAL does make, a checkpoint's, are mostly a worker thread's
 * (`WalCheckpointer`), not the event loop's.
 *
 * Storage: a row holds a run of consecutive events (up to `RUN_EVENTS` of
 * one commit), as the concatenation of their SSE frames: the very strings
 * the bus built once, sent and keeps in its tail. A commit of a burst is one
 * row (or a few), not a row per event: SQLite's cost was per row (one B-tree
 * insertion, one value binding and its UTF-8 conversion each, and more WAL
 * pages touched), about as much CPU per event as the rest of the path
 * (bench/notes/16-round-two.md). A replay from the file splits a run at its
 * blank lines (no frame holds one: the JSON on a `data:` line has no raw
 * newline), and parses an envelope only if someone asks for it.
 *
 * Bounds are kept lazily: a commit inserts its burst and trims its session
 * only once it holds an eighth more than the bounds (`TRIM_SLACK`), back to
 * the bounds, in the same transaction; so a flood costs one transaction per
 * burst and one trim per eighth of the bounds, not a trim after every burst.
 * A trim deletes the runs that fall wholly before the new oldest event and
 * records that event's id (`logs.first_id`); the run it cuts stays as it
 * is, its older frames skipped by every read, until a later trim deletes it
 * whole. Rewriting that run instead cost a copy of up to `RUN_EVENTS` frames
 * per trim for nothing a client can see (bench/notes/16-round-two.md, step
 * 6). So the file holds the bounds plus at most one run's older part. Where
 * to cut comes from the tail when it can (it keeps the same bounds over the
 * same events, so its oldest event is where the file's must start), else
 * from a walk over the runs. Readers never see the excess:
 * `after` (and `firstId`, `size`, `bytes`) trim their session to the exact
 * bounds first, and an unref'd timer trims every session over its bounds and
 * truncates the WAL file now and then. What a trim drops is reported to the
 * buses watching the log (their `dropped` stats), so under a flood the count
 * comes in steps. Only the oldest events go: ids stay dense and the newest
 * event always stays, which is also what gives a log's next id at open (its
 * `logs.next_id` is written only by a log that keeps no events).
 *
 * Each log also keeps its newest events in memory, as the bus built them
 * (a `MemoryEventLog` with the same bounds): a reconnect replays from there
 * whenever its cursor is within what this process logged, and reads the
 * database only for older events (after a restart). The database is the
 * truth; the tail is a cache of it.
 *
 * A write that fails (disk full, an I/O error) does not stop the session:
 * the event still goes to the tail and so to every subscriber, the failure
 * is reported once per outage through `onWriteError` (readiness turns
 * false), and the next write that succeeds clears it. Events of an outage
 * live in memory only, so a restart before they age out of the tail loses
 * them: a cursor from then on replays around the gap.
 *
 * A database that cannot be opened or fails `quick_check` at start-up is
 * reported, moved aside (`events.sqlite.corrupt-<time>`, with its -wal and
 * -shm) and replaced by an empty one.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { BusEvent, EventEnvelope } from './event-bus.js';
import { MemoryEventLog, type EventLog } from './event-log.js';
import {
  AUTOCHECKPOINT_PAGES_WITH_WORKER,
  CHECKPOINT_EVERY_PAGES,
  CHECKPOINTER_IDLE_MS,
  SQLITE_AUTOCHECKPOINT_PAGES,
  WalCheckpointer,
} from './wal-checkpointer.js';

export const EVENTS_FILE = 'events.sqlite';

/** What the store reports; a pino logger fits. */
export interface StoreLogger {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface SqliteLogBounds {
  /** At most this many events per session (0 keeps none). */
  maxEvents: number;
  /** At most this many frame bytes per session, the newest event always kept (0 = count only). */
  maxBytes: number;
}

interface StoreOptions {
  /** The directory of the database file; created when missing. */
  dataDir: string;
  bounds: SqliteLogBounds;
  log: StoreLogger;
  /**
   * How often the store compacts every session still over its bounds and
   * truncates the WAL file (`PRAGMA wal_checkpoint(TRUNCATE)`); 0 = never
   * on a timer (bursts are still compacted). One minute when absent.
   */
  maintenanceMs?: number;
  /**
   * Whether a worker thread makes the WAL's checkpoints (see
   * `WalCheckpointer`); true when absent. False leaves them to SQLite, inside
   * the commits.
   */
  checkpointWorker?: boolean;
  /** The checkpoint worker's module (tests); the daemon's own when absent. */
  checkpointWorkerUrl?: URL;
}

const DEFAULT_MAINTENANCE_MS = 60_000;

/**
 * The most events one row holds: a commit of a larger burst is several rows.
 * Bounds what a trim leaves behind in the run it cuts.
 */
const RUN_EVENTS = 256;

/**
 * A commit lets its log grow past the bounds by this fraction of them before
 * it trims it back to the bounds, in the same transaction: under a flood one
 * DELETE of many rows every eighth of the bounds, instead of a few rows (and
 * a transaction of its own) after every burst. Readers never see the excess:
 * `after`, `firstId`, `size` and `bytes` trim to the exact bounds first.
 */
const TRIM_SLACK = 8;

/** What a session's log tells its store. */
interface LogHooks {
  /** Events were committed (`bytes` of frames): the log may now be over its bounds. */
  appended(log: SqliteEventLog, bytes: number): void;
  /** A write failed (disk full, I/O error); the event lives in memory only. */
  writeFailed(err: unknown): void;
  /** The last bus watching the log let go of it (its session ended here). */
  unused(log: SqliteEventLog): void;
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS logs (
    session_id TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    next_id INTEGER NOT NULL,
    first_id INTEGER NOT NULL DEFAULT 0
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS event_runs (
    session_id TEXT NOT NULL,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    frames TEXT NOT NULL,
    PRIMARY KEY (session_id, first_id)
  );
`;

/**
 * A database written before runs (one row per event, table `events`): its
 * rows become runs of one event each, the same frames, and the old table
 * goes. Runs once, in one transaction, at open.
 */
const MIGRATE_EVENTS = `
  INSERT INTO event_runs (session_id, first_id, last_id, bytes, frames)
    SELECT session_id, id, id, bytes,
      'id: ' || id || char(10) || 'event: ' || type || char(10) || 'data: ' || json || char(10) || char(10)
    FROM events ORDER BY session_id, id;
  DROP TABLE events;
`;

/**
 * A database written before trims kept the run they cut (its `logs` had no
 * `first_id`): every event its runs hold is readable, which 0 says.
 */
const ADD_FIRST_ID = 'ALTER TABLE logs ADD COLUMN first_id INTEGER NOT NULL DEFAULT 0';

interface LogRow {
  epoch: string;
  next_id: number;
  /** The oldest id a read may give: a trim's cut (older frames of the run it cut are skipped); 0 before any. */
  first_id: number;
}

interface ExtentRow {
  first: number | null;
  last: number | null;
  count: number;
  bytes: number | null;
}

interface RunRow {
  first_id: number;
  last_id: number;
  bytes: number;
  frames: string;
}

/** The prepared statements every session log shares. */
class Statements {
  readonly getLog;
  readonly putLog;
  readonly setNext;
  readonly extent;
  readonly insertRun;
  readonly after;
  readonly dropRuns;
  readonly setFirst;
  readonly runAt;
  /** Write transactions run so far (commits, trims), for tests and the bench: a flood's cost per event. */
  transactions = 0;

  constructor(db: Database.Database) {
    this.getLog = db.prepare<[string], LogRow>('SELECT epoch, next_id, first_id FROM logs WHERE session_id = ?');
    this.putLog = db.prepare<[string, string]>('INSERT INTO logs (session_id, epoch, next_id) VALUES (?, ?, 1)');
    this.setNext = db.prepare<[number, string]>('UPDATE logs SET next_id = ? WHERE session_id = ?');
    // The runs wholly readable: from the trim's cut on (the run it cut, if any, is `runAt` the cut).
    this.extent = db.prepare<[string, number], ExtentRow>(
      'SELECT MIN(first_id) AS first, MAX(last_id) AS last, SUM(last_id - first_id + 1) AS count, SUM(bytes) AS bytes' +
        ' FROM event_runs WHERE session_id = ? AND first_id >= ?',
    );
    this.insertRun = db.prepare<[string, number, number, number, string]>(
      'INSERT INTO event_runs (session_id, first_id, last_id, bytes, frames) VALUES (?, ?, ?, ?, ?)',
    );
    this.after = db.prepare<[string, number], RunRow>(
      'SELECT first_id, last_id, bytes, frames FROM event_runs WHERE session_id = ? AND last_id > ? ORDER BY first_id',
    );
    // `first_id <= ?` bounds the walk of the primary key to the runs that can go.
    this.dropRuns = db.prepare<[string, number, number]>(
      'DELETE FROM event_runs WHERE session_id = ? AND first_id <= ? AND last_id <= ?',
    );
    this.runAt = db.prepare<[string, number, number], RunRow>(
      'SELECT first_id, last_id, bytes, frames FROM event_runs WHERE session_id = ? AND first_id < ? AND last_id >= ?',
    );
    this.setFirst = db.prepare<[number, string]>('UPDATE logs SET first_id = ? WHERE session_id = ?');
  }
}

/** One database for every session's log. `logFor` hands out each session's log. */
export class SqliteEventStore {
  readonly file: string;
  private readonly db: Database.Database;
  private readonly statements: Statements;
  private readonly logs = new Map<string, SqliteEventLog>();
  /** Sessions that took events since their last trim. */
  private readonly dirty = new Set<SqliteEventLog>();
  private readonly compactTx: (logs: SqliteEventLog[]) => (Trim | undefined)[];
  private readonly timer: NodeJS.Timeout | undefined;
  /** Makes the WAL's checkpoints beside the event loop; undefined when SQLite makes them all in the commits. */
  readonly checkpointer: WalCheckpointer | undefined;

  /** Why the last write failed, while writes fail; undefined when the last one succeeded. */
  private failing: string | undefined;
  private readonly hooks: LogHooks = {
    appended: (log, bytes) => {
      if (this.failing !== undefined) {
        this.opts.log.warn({ file: this.file }, 'event log writable again');
        this.failing = undefined;
      }
      this.markDirty(log);
      this.checkpointer?.wrote(bytes);
    },
    writeFailed: (err) => {
      const reason = err instanceof Error ? err.message : String(err);
      if (this.failing === undefined)
        this.opts.log.error(
          { file: this.file, reason },
          'event log write failed; events are kept in memory only until writes succeed again',
        );
      this.failing = reason;
    },
    unused: (log) => {
      // Its trim is made now, and the log (with its tail of frames) forgotten: the next bus of that
      // session reads its counters from the file again.
      this.dirty.delete(log);
      log.trimIfOver();
      if (this.logs.get(log.sessionId) === log) this.logs.delete(log.sessionId);
    },
  };

  constructor(private readonly opts: StoreOptions) {
    mkdirSync(opts.dataDir, { recursive: true });
    this.file = path.join(opts.dataDir, EVENTS_FILE);
    this.db = this.openChecked();
    this.statements = new Statements(this.db);
    if (opts.checkpointWorker !== false) {
      const db = this.db;
      this.checkpointer = new WalCheckpointer({
        file: this.file,
        everyPages: CHECKPOINT_EVERY_PAGES,
        idleMs: CHECKPOINTER_IDLE_MS,
        workerUrl: opts.checkpointWorkerUrl,
        fallBack: (reason) => {
          opts.log.warn(
            { file: this.file, reason },
            'checkpoint worker unavailable; checkpoints are made by the commits',
          );
          if (db.open) db.pragma(`wal_autocheckpoint = ${SQLITE_AUTOCHECKPOINT_PAGES}`);
        },
      });
      this.db.pragma(`wal_autocheckpoint = ${AUTOCHECKPOINT_PAGES_WITH_WORKER}`);
    }
    this.compactTx = this.db.transaction((logs: SqliteEventLog[]) => {
      this.statements.transactions++;
      return logs.map((log) => log.planTrim());
    });
    const every = opts.maintenanceMs ?? DEFAULT_MAINTENANCE_MS;
    if (every > 0) {
      // Never what keeps the daemon alive: a stopped daemon needs no compaction.
      this.timer = setInterval(() => this.maintain(), every);
      this.timer.unref();
    }
  }

  /** How many write transactions the store has run (commits and trims). */
  get transactions(): number {
    return this.statements.transactions;
  }

  get isOpen(): boolean {
    return this.db.open;
  }

  /** Why writes fail now (disk full, I/O error), or undefined while they succeed. */
  get writeError(): string | undefined {
    return this.failing;
  }

  /** The open database, for the stores that keep their tables beside the logs (receipts, the session catalog). */
  get database(): Database.Database {
    return this.db;
  }

  /**
   * The log of `sessionId`, the same instance for as long as the store is
   * open, so two buses of one session (a restore racing a live one) can never
   * hand out the same id twice. Its epoch and next id come from the database
   * when the session was seen before, which is what keeps a client's cursor
   * meaningful across a restart.
   */
  logFor(sessionId: string): SqliteEventLog {
    let log = this.logs.get(sessionId);
    if (!log) {
      log = new SqliteEventLog(sessionId, this.db, this.statements, this.opts.bounds, this.hooks);
      this.logs.set(sessionId, log);
    }
    return log;
  }

  /**
   * Trims every session that took events since its last trim and is over
   * its bounds, in one transaction; returns how many events went. Runs by
   * itself once per burst and on the timer; tests call it directly.
   */
  compact(): number {
    if (!this.db.open || this.dirty.size === 0) return 0;
    // Only the logs over their bounds cost a transaction; the others are within them until their next commit.
    const logs = [...this.dirty].filter((log) => log.overBounds);
    this.dirty.clear();
    if (logs.length === 0) return 0;
    let trims: (Trim | undefined)[];
    try {
      trims = this.compactTx(logs);
    } catch (err) {
      // Nothing changed (the transaction rolled back): try again on the next round.
      for (const log of logs) this.dirty.add(log);
      throw err;
    }
    let dropped = 0;
    logs.forEach((log, i) => {
      const trim = trims[i];
      if (trim) dropped += log.trimmed(trim);
    });
    return dropped;
  }

  /** Folds the WAL into the database and truncates the -wal file, so it does not grow for as long as the daemon runs. */
  checkpoint(): void {
    if (this.db.open) this.db.pragma('wal_checkpoint(TRUNCATE)');
  }

  /** Closes the database; a log asked to append afterwards keeps nothing. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.checkpointer?.close();
    if (!this.db.open) return;
    for (const log of this.logs.values()) log.commit();
    this.guarded(() => this.compact());
    this.db.close();
  }

  private markDirty(log: SqliteEventLog): void {
    this.dirty.add(log);
  }

  private maintain(): void {
    this.guarded(() => {
      this.compact();
      this.checkpoint();
    });
  }

  /** Compaction runs outside any request: what it throws (a full disk) is reported, never fatal. */
  private guarded(work: () => void): void {
    try {
      work();
    } catch (err) {
      this.opts.log.warn({ err, file: this.file }, 'event log compaction failed; will retry');
    }
  }

  /**
   * Opens the file and checks it; when that fails, moves it aside and opens
   * an empty one. Errors of the second open (a directory we cannot write)
   * propagate: there is nothing left to move aside.
   */
  private openChecked(): Database.Database {
    try {
      return this.open();
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      const movedTo = this.moveAside();
      this.opts.log.error(
        { file: this.file, reason, movedTo },
        'event log database unreadable or corrupt; moved aside, starting an empty one',
      );
      return this.open();
    }
  }

  private open(): Database.Database {
    const db = new Database(this.file);
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      const verdict: unknown = db.pragma('quick_check', { simple: true });
      if (verdict !== 'ok') throw new Error(`quick_check: ${String(verdict)}`);
      db.exec(SCHEMA);
      const logColumns = db.pragma('table_info(logs)') as { name: string }[];
      if (!logColumns.some((column) => column.name === 'first_id')) db.exec(ADD_FIRST_ID);
      const old = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").get();
      if (old !== undefined) db.transaction(() => db.exec(MIGRATE_EVENTS))();
      return db;
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /** Renames the database and its -wal and -shm files to `<file>.corrupt-<time>…`; returns the new name. */
  private moveAside(): string {
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    let target = `${this.file}.corrupt-${stamp}`;
    for (let n = 1; existsSync(target); n++) target = `${this.file}.corrupt-${stamp}-${n}`;
    for (const suffix of ['', '-wal', '-shm']) {
      if (existsSync(this.file + suffix)) renameSync(this.file + suffix, target + suffix);
    }
    return target;
  }
}

/** A session's extent after a trim, and how many events the trim dropped. */
interface Trim {
  /** The oldest id left. */
  first: number;
  count: number;
  bytes: number;
  dropped: number;
}

/**
 * One session's events in the store's database, and its newest ones in
 * memory (the tail). Its size and bytes are the database's, kept in memory
 * as well (read once when it is made), so an append is one insert and one
 * update; trimming is the store's compaction (or a reader's, when it comes
 * before it).
 */
export class SqliteEventLog implements EventLog {
  readonly epoch: string;
  private next: number;
  private first: number;
  private count: number;
  private heldBytes: number;
  /** The newest events this process logged, as the bus built them, within the same bounds. */
  private readonly tail: MemoryEventLog;
  /** Appended, not yet committed. */
  private pending: BusEvent[] = [];
  /**
   * From this id on, every event the file holds the tail was given too, and
   * the other way round (a failed write moves it past the events it lost):
   * when the tail has dropped an event of its own past here, its oldest event
   * is exactly where a trim of the file must start (`planTrim`).
   */
  private tailFrom: number;
  private readonly commitTx: (batch: BusEvent[], count: number, bytes: number) => Trim | undefined;
  private readonly trimTx: () => Trim | undefined;
  /** Past these a commit trims its log (back to the bounds); see `TRIM_SLACK`. */
  private readonly trimAtEvents: number;
  private readonly trimAtBytes: number;
  private readonly dropWatchers = new Set<(count: number) => void>();

  constructor(
    readonly sessionId: string,
    private readonly db: Database.Database,
    private readonly sql: Statements,
    private readonly bounds: SqliteLogBounds,
    private readonly hooks: LogHooks,
  ) {
    const known = sql.getLog.get(sessionId);
    const floor = known?.first_id ?? 0;
    if (known) {
      this.epoch = known.epoch;
      this.next = known.next_id;
    } else {
      this.epoch = randomUUID();
      this.next = 1;
      sql.putLog.run(sessionId, this.epoch);
    }
    const extent = sql.extent.get(sessionId, floor);
    // `next_id` is written only by a log that keeps no rows; otherwise the newest row (never trimmed) says it.
    if (extent?.last != null) this.next = Math.max(this.next, extent.last + 1);
    this.first = extent?.first ?? this.next;
    this.count = extent?.count ?? 0;
    this.heldBytes = extent?.bytes ?? 0;
    // The run the last trim cut: its frames from the cut on are readable, the older ones are not.
    const cut = floor > 0 ? sql.runAt.get(sessionId, floor, floor) : undefined;
    if (cut) {
      eachFrame(cut, (id, frame) => {
        if (id < floor) return;
        this.count++;
        this.heldBytes += Buffer.byteLength(frame);
      });
      this.first = floor;
      this.next = Math.max(this.next, cut.last_id + 1);
    }
    this.tail = new MemoryEventLog(bounds);
    this.tailFrom = this.next;
    this.trimAtEvents = bounds.maxEvents + Math.ceil(bounds.maxEvents / TRIM_SLACK);
    this.trimAtBytes = bounds.maxBytes + Math.ceil(bounds.maxBytes / TRIM_SLACK);
    this.commitTx = db.transaction((batch: BusEvent[], count: number, bytes: number) => {
      this.sql.transactions++;
      if (this.bounds.maxEvents === 0) {
        const last = batch[batch.length - 1]?.id ?? 0;
        this.sql.setNext.run(last + 1, this.sessionId);
        return undefined;
      }
      this.insert(batch);
      const over = count > this.trimAtEvents || (this.bounds.maxBytes > 0 && bytes > this.trimAtBytes && count > 1);
      return over ? this.planTrim(count, bytes) : undefined;
    });
    this.trimTx = db.transaction(() => {
      this.sql.transactions++;
      return this.planTrim(this.count, this.heldBytes);
    });
  }

  get nextId(): number {
    return this.next;
  }

  /** The oldest id a replay can start from: a trim the compaction has not made yet is made first. */
  get firstId(): number {
    this.commit();
    this.trimIfOver();
    return this.first;
  }

  /** How many events a replay can give now (a pending trim is made first). */
  get size(): number {
    this.commit();
    this.trimIfOver();
    return this.count;
  }

  /** The frame bytes a replay can give now (a pending trim is made first). */
  get bytes(): number {
    this.commit();
    this.trimIfOver();
    return this.heldBytes;
  }

  /**
   * Takes the event, with the next id; it becomes durable at `commit`, which
   * the bus calls before it sends it to anyone. On a closed store (the daemon
   * shutting down) the id is used up and nothing is kept. Trimming is left to
   * the compaction, so this reports no drops: they reach `watchDrops`.
   */
  append(event: BusEvent): number {
    this.next++;
    if (!this.db.open) {
      if (this.count === 0) this.first = this.next;
      return 0;
    }
    this.pending.push(event);
    return 0;
  }

  /**
   * Writes every event appended since the last commit in one transaction
   * (one WAL write for a whole burst), then counts them and keeps them in
   * the tail. A write that fails keeps them in the tail only (see the file's
   * comment).
   */
  commit(): void {
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    if (!this.db.open) return;
    let first = this.first;
    let count = this.count;
    let bytes = this.heldBytes;
    let written = 0;
    for (const event of batch) {
      this.tail.append(event);
      if (count === 0) first = event.id ?? first;
      count++;
      written += event.bytes;
    }
    bytes += written;
    let trim: Trim | undefined;
    try {
      trim = this.commitTx(batch, count, bytes);
    } catch (err) {
      // The tail holds events the file lacks now: it no longer says where the file's trim goes.
      this.tailFrom = this.next;
      this.hooks.writeFailed(err);
      return;
    }
    if (this.bounds.maxEvents === 0) {
      this.first = this.next;
      return;
    }
    this.first = first;
    this.count = count;
    this.heldBytes = bytes;
    if (trim) this.trimmed(trim);
    this.hooks.appended(this, written);
  }

  /** Inside the commit's transaction: the batch as runs of up to `RUN_EVENTS` events, one row each. */
  private insert(batch: BusEvent[]): void {
    for (let i = 0; i < batch.length; i += RUN_EVENTS) {
      const end = Math.min(batch.length, i + RUN_EVENTS);
      let frames = '';
      let bytes = 0;
      for (let k = i; k < end; k++) {
        frames += batch[k].frame;
        bytes += batch[k].bytes;
      }
      const firstId = batch[i].id ?? 0;
      const lastId = batch[end - 1].id ?? 0;
      this.sql.insertRun.run(this.sessionId, firstId, lastId, bytes, frames);
    }
  }

  /**
   * Every bus of the session watches its log; when the last one stops
   * (its session ended), the store forgets the log and its tail.
   */
  watchDrops(listener: (count: number) => void): () => void {
    this.dropWatchers.add(listener);
    return () => {
      if (this.dropWatchers.delete(listener) && this.dropWatchers.size === 0) this.hooks.unused(this);
    };
  }

  /**
   * The events after `cursor`, never more than the bounds allow. From the
   * tail when it holds every one of them (a reconnect within what this
   * process logged), else from the database, trimmed first.
   */
  after(cursor: number): BusEvent[] {
    this.commit();
    if (this.tail.size > 0 && cursor >= this.tail.firstId - 1) return [...this.tail.after(cursor)];
    if (!this.db.open || this.count === 0) return [];
    this.trimIfOver();
    // A cursor older than everything held: the tail serves when the file holds nothing before it.
    if (this.tail.size > 0 && this.first >= this.tail.firstId) return [...this.tail.after(cursor)];
    // The run a trim cut holds frames older than the log's first: never read.
    const from = Math.max(cursor, this.first - 1);
    const events: BusEvent[] = [];
    for (const run of this.sql.after.iterate(this.sessionId, from)) {
      eachFrame(run, (id, frame) => {
        if (id > from) events.push(storedEvent(id, frame));
      });
    }
    return events;
  }

  /** Whether the log holds more than its bounds now (at most `TRIM_SLACK` more: a commit trims past that). */
  get overBounds(): boolean {
    return this.db.open && this.isOver(this.count, this.heldBytes);
  }

  /** Makes now the trim the compaction would make (readers and a log being let go need it at once). */
  trimIfOver(): void {
    if (!this.db.open || !this.isOver(this.count, this.heldBytes)) return;
    const trim = this.trimTx();
    if (trim) this.trimmed(trim);
  }

  /**
   * Inside a transaction: deletes the oldest events while the count or the
   * bytes are over their bound, the newest event always staying. Undefined
   * when the log is within its bounds. The counters are left to `trimmed`,
   * called once the transaction has committed.
   *
   * Where to cut: the tail keeps the same bounds, by the same rule, over the
   * same events from `tailFrom` on; once it has dropped one of those itself,
   * the file must keep exactly what it keeps (no row read). Otherwise (after
   * a restart, or a failed write) the runs are walked, oldest first.
   */
  planTrim(count = this.count, bytes = this.heldBytes): Trim | undefined {
    if (!this.isOver(count, bytes)) return undefined;
    const tailFirst = this.tail.firstId;
    const trim =
      this.tail.size > 0 && tailFirst > this.tailFrom
        ? { first: tailFirst, count: this.tail.size, bytes: this.tail.bytes, dropped: count - this.tail.size }
        : this.walkTrim(count, bytes);
    this.dropThrough(trim.first - 1);
    return trim;
  }

  /**
   * Where a trim cuts, from the runs themselves (the readable part of each):
   * whole runs while that is not too many, then event by event.
   */
  private walkTrim(count: number, bytes: number): Trim {
    let first = this.first;
    const total = count;
    for (const run of this.sql.after.iterate(this.sessionId, first - 1)) {
      const events = run.last_id - run.first_id + 1;
      if (run.first_id >= first && this.isOver(count - events, bytes - run.bytes)) {
        count -= events;
        bytes -= run.bytes;
        first = run.last_id + 1;
        continue;
      }
      eachFrame(run, (id, frame) => {
        if (id < first) return true;
        if (!this.isOver(count, bytes)) return false;
        count--;
        bytes -= Buffer.byteLength(frame);
        first = id + 1;
        return true;
      });
      if (!this.isOver(count, bytes)) break;
    }
    return { first, count, bytes, dropped: total - count };
  }

  /** Drops every event up to `id`: the runs wholly before it go, the one it cuts stays, read from `id + 1` on. */
  private dropThrough(id: number): void {
    this.sql.dropRuns.run(this.sessionId, id, id);
    this.sql.setFirst.run(id + 1, this.sessionId);
  }

  /** Takes a committed trim into the counters and tells the watchers; returns how many events it dropped. */
  trimmed(trim: Trim): number {
    this.first = trim.first;
    this.count = trim.count;
    this.heldBytes = trim.bytes;
    for (const watch of this.dropWatchers) watch(trim.dropped);
    return trim.dropped;
  }

  private isOver(count: number, bytes: number): boolean {
    const { maxEvents, maxBytes } = this.bounds;
    return count > maxEvents || (maxBytes > 0 && bytes > maxBytes && count > 1);
  }
}

const FRAME_END = '\n\n';
const DATA_LINE = '\ndata: ';

/**
 * Calls `each` with the id and frame of every event of a run, oldest first,
 * until it returns false. A frame ends at the first blank line: none holds
 * one before its end (its lines are `id:`, `event:` and one `data:` line of
 * JSON, which escapes every newline).
 */
function eachFrame(run: RunRow, each: (id: number, frame: string) => boolean | void): void {
  const text = run.frames;
  let at = 0;
  for (let id = run.first_id; id <= run.last_id && at < text.length; id++) {
    const end = text.indexOf(FRAME_END, at) + FRAME_END.length;
    if (end < FRAME_END.length) return;
    if (each(id, text.slice(at, end)) === false) return;
    at = end;
  }
}

/**
 * An event read back from the database, as the bus built it: its frame as
 * stored; its JSON (the `data:` line) and envelope are taken out of the
 * frame only if someone asks for them (a replay writes frames and never
 * does).
 */
function storedEvent(id: number, frame: string): BusEvent {
  let envelope: EventEnvelope | undefined;
  let json: string | undefined;
  let bytes: number | undefined;
  const jsonOf = (): string =>
    (json ??= frame.slice(frame.indexOf(DATA_LINE) + DATA_LINE.length, frame.length - FRAME_END.length));
  return {
    id,
    get envelope() {
      return (envelope ??= JSON.parse(jsonOf()) as EventEnvelope);
    },
    get json() {
      return jsonOf();
    },
    frame,
    get bytes() {
      return (bytes ??= Buffer.byteLength(frame));
    },
  };
}

/**
 * Every event the database holds for `sessionId`, oldest first, with its id
 * and its JSON (the frame's `data:` line), read straight from the file
 * without a store (tests, and anyone inspecting a data directory).
 */
export function storedEvents(db: Database.Database, sessionId: string): { id: number; json: string }[] {
  const floor =
    db.prepare<[string], { first_id: number }>('SELECT first_id FROM logs WHERE session_id = ?').get(sessionId)
      ?.first_id ?? 0;
  const rows = db
    .prepare<[string], RunRow>(
      'SELECT first_id, last_id, bytes, frames FROM event_runs WHERE session_id = ? ORDER BY first_id',
    )
    .all(sessionId);
  const events: { id: number; json: string }[] = [];
  for (const row of rows)
    eachFrame(row, (id, frame) => {
      if (id >= floor) events.push({ id, json: storedEvent(id, frame).json });
    });
  return events;
}
