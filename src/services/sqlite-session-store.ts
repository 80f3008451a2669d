/**
 * The durable `SessionStore`: one row per session in table `sessions` of the
 * data store's database (beside the event logs), so that the workspace's
 * session catalog still lists every session after the daemon restarts.
 *
 * A row with no `ended_at` is a session live on this daemon. A daemon that
 * died without its drain (kill -9, a crash) leaves such rows behind; opening
 * the store ends them, as the drain would have, with `daemon_shutdown` at
 * their last update: nothing is live in a daemon that has just started.
 *
 * Like the memory store it keeps at most `maxEnded` ended sessions, the
 * oldest ended going first. A failed write is logged, never thrown: the
 * catalog must not make a session fail to start, prompt or end.
 */
import type Database from 'better-sqlite3';
import type { SessionMeta, SessionPageQuery, SessionStore } from './session-store.js';
import type { StoreLogger } from './sqlite-event-log.js';

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    workspace_cwd TEXT NOT NULL,
    origin TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    ended_at INTEGER,
    end_reason TEXT,
    display_name TEXT
  );
  CREATE INDEX IF NOT EXISTS sessions_recent ON sessions (workspace_cwd, updated_at DESC, session_id);
  CREATE INDEX IF NOT EXISTS sessions_ended ON sessions (ended_at) WHERE ended_at IS NOT NULL;
`;

interface Row {
  session_id: string;
  workspace_cwd: string;
  origin: string;
  created_at: number;
  updated_at: number;
  ended_at: number | null;
  end_reason: string | null;
  display_name: string | null;
}

const COLUMNS = 'session_id, workspace_cwd, origin, created_at, updated_at, ended_at, end_reason, display_name';

function metaOf(row: Row): SessionMeta {
  return {
    sessionId: row.session_id,
    workspaceCwd: row.workspace_cwd,
    origin: row.origin === 'load' || row.origin === 'resume' ? row.origin : 'created',
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    ...(row.ended_at !== null ? { endedAt: row.ended_at } : {}),
    ...(row.end_reason !== null ? { endReason: row.end_reason } : {}),
    ...(row.display_name !== null ? { displayName: row.display_name } : {}),
  };
}

interface StoreOptions {
  /** The open database (`SqliteEventStore.database`); the table is created when missing. */
  db: Database.Database;
  log: StoreLogger;
  /** Ended sessions kept; the oldest ended go past it. */
  maxEnded?: number;
}

export class SqliteSessionStore implements SessionStore {
  private readonly db: Database.Database;
  private readonly log: StoreLogger;
  private readonly maxEnded: number;
  private readonly sql;
  /** Ended rows in the table, counted once at open and kept up to date by every write. */
  private ended: number;

  constructor(opts: StoreOptions) {
    this.db = opts.db;
    this.log = opts.log;
    this.maxEnded = opts.maxEnded ?? 10_000;
    this.db.exec(SCHEMA);
    const db = this.db;
    this.sql = {
      get: db.prepare<[string], Row>(`SELECT ${COLUMNS} FROM sessions WHERE session_id = ?`),
      put: db.prepare<[string, string, string, number, number, number | null, string | null, string | null]>(
        `INSERT INTO sessions (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (session_id) DO UPDATE SET workspace_cwd = excluded.workspace_cwd, origin = excluded.origin,
           created_at = excluded.created_at, updated_at = excluded.updated_at, ended_at = excluded.ended_at,
           end_reason = excluded.end_reason, display_name = excluded.display_name`,
      ),
      touch: db.prepare<[number, string]>('UPDATE sessions SET updated_at = ? WHERE session_id = ?'),
      end: db.prepare<[number, number, string, string]>(
        'UPDATE sessions SET updated_at = ?, ended_at = ?, end_reason = ? WHERE session_id = ? AND ended_at IS NULL',
      ),
      name: db.prepare<[string, string]>(
        'UPDATE sessions SET display_name = ? WHERE session_id = ? AND display_name IS NULL',
      ),
      all: db.prepare<[], Row>(`SELECT ${COLUMNS} FROM sessions ORDER BY rowid`),
      first: db.prepare<[string, number], Row>(
        `SELECT ${COLUMNS} FROM sessions WHERE workspace_cwd = ?
         ORDER BY updated_at DESC, session_id LIMIT ?`,
      ),
      after: db.prepare<[string, number, number, string, number], Row>(
        `SELECT ${COLUMNS} FROM sessions WHERE workspace_cwd = ?
           AND (updated_at < ? OR (updated_at = ? AND session_id > ?))
         ORDER BY updated_at DESC, session_id LIMIT ?`,
      ),
      countEnded: db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM sessions WHERE ended_at IS NOT NULL'),
      dropOldestEnded: db.prepare<[number]>(
        `DELETE FROM sessions WHERE session_id IN (
           SELECT session_id FROM sessions WHERE ended_at IS NOT NULL ORDER BY ended_at, rowid LIMIT ?)`,
      ),
    };
    db.prepare(
      "UPDATE sessions SET ended_at = updated_at, end_reason = 'daemon_shutdown' WHERE ended_at IS NULL",
    ).run();
    this.ended = this.sql.countEnded.get()?.n ?? 0;
    this.trim();
  }

  put(meta: SessionMeta): void {
    this.write('put', meta.sessionId, () => {
      const old = this.sql.get.get(meta.sessionId);
      this.sql.put.run(
        meta.sessionId,
        meta.workspaceCwd,
        meta.origin,
        meta.createdAt,
        meta.updatedAt,
        meta.endedAt ?? null,
        meta.endReason ?? null,
        meta.displayName ?? null,
      );
      if (old && old.ended_at !== null) this.ended--;
      if (meta.endedAt !== undefined) this.ended++;
      this.trim();
    });
  }

  get(sessionId: string): SessionMeta | undefined {
    if (!this.db.open) return undefined;
    const row = this.sql.get.get(sessionId);
    return row && metaOf(row);
  }

  touch(sessionId: string, at: number): void {
    this.write('touch', sessionId, () => this.sql.touch.run(at, sessionId));
  }

  end(sessionId: string, at: number, reason: string): void {
    this.write('end', sessionId, () => {
      if (this.sql.end.run(at, at, reason, sessionId).changes === 0) return;
      this.ended++;
      this.trim();
    });
  }

  name(sessionId: string, displayName: string): void {
    this.write('name', sessionId, () => this.sql.name.run(displayName, sessionId));
  }

  list(): SessionMeta[] {
    if (!this.db.open) return [];
    return this.sql.all.all().map(metaOf);
  }

  page({ workspaceCwd, after, limit }: SessionPageQuery): SessionMeta[] {
    if (!this.db.open) return [];
    const rows = after
      ? this.sql.after.all(workspaceCwd, after.updatedAt, after.updatedAt, after.sessionId, limit)
      : this.sql.first.all(workspaceCwd, limit);
    return rows.map(metaOf);
  }

  /** Forgets the oldest ended sessions past the bound; live ones are never dropped. */
  private trim(): void {
    if (this.ended <= this.maxEnded) return;
    this.ended -= this.sql.dropOldestEnded.run(this.ended - this.maxEnded).changes;
  }

  /** Runs a write; after the database closed (the daemon stopping) there is nothing to keep. */
  private write(op: string, sessionId: string, run: () => void): void {
    if (!this.db.open) return;
    try {
      run();
    } catch (err) {
      this.log.error({ err, op, sessionId }, 'session catalog write failed');
    }
  }
}
