/**
 * What the daemon itself remembers about the sessions it has served, apart
 * from the agent's own persistence: when a session was created or restored,
 * when it was last used, what its first prompt asked, whether it is live
 * here. The registry writes it; the session catalog (`session-catalog.ts`)
 * lists it. The memory store below keeps at most `maxEnded` sessions that
 * ended; `SqliteSessionStore` keeps them across restarts (and, with several
 * nodes, could tell one node about another's sessions).
 */
import { DISPLAY_NAME_MAX } from '../schemas/sessions.js';
import type { MaybePromise } from './maybe-promise.js';

export interface SessionMeta {
  sessionId: string;
  workspaceCwd: string;
  /** How it became live here: a fresh `session/new`, or a load/resume. */
  origin: 'created' | 'load' | 'resume';
  /** Milliseconds since the epoch. */
  createdAt: number;
  updatedAt: number;
  /** Unset while the session is live on this daemon. */
  endedAt?: number;
  endReason?: string;
  /** The text of its first prompt, shortened (`displayNameOf`). */
  displayName?: string;
}

/** Where a page of the catalog starts: after the session with this sort key. */
export interface SessionSortKey {
  updatedAt: number;
  sessionId: string;
}

export interface SessionPageQuery {
  workspaceCwd: string;
  /** Only sessions that sort after this one; from the most recent when absent. */
  after?: SessionSortKey;
  limit: number;
}

/**
 * The seam. Each method may answer at once (memory, SQLite) or with a
 * promise (Redis); callers await only a promise. A write never rejects: a
 * store logs its failed writes, as the catalog must not make a session fail
 * to start, prompt or end.
 */
export interface SessionStore {
  put(meta: SessionMeta): MaybePromise<void>;
  get(sessionId: string): MaybePromise<SessionMeta | undefined>;
  /** Records that `sessionId` was used now. */
  touch(sessionId: string, at: number): MaybePromise<void>;
  /** Records that the session is no longer live here. */
  end(sessionId: string, at: number, reason: string): MaybePromise<void>;
  /** Names the session, unless it has a name already: the first prompt names it. */
  name(sessionId: string, displayName: string): MaybePromise<void>;
  list(): MaybePromise<SessionMeta[]>;
  /** The sessions of a workspace, most recently updated first (`compareRecent`). */
  page(query: SessionPageQuery): MaybePromise<SessionMeta[]>;
}

/**
 * The catalog's order: most recently updated first, ties by id, so that
 * every session has one place and a page can start right after any of them.
 */
export function compareRecent(a: SessionSortKey, b: SessionSortKey): number {
  if (a.updatedAt !== b.updatedAt) return b.updatedAt - a.updatedAt;
  return a.sessionId < b.sessionId ? -1 : a.sessionId > b.sessionId ? 1 : 0;
}

/**
 * A session's name from a prompt, as the qwen daemon shows one: the text
 * blocks joined, whitespace collapsed, cut to `DISPLAY_NAME_MAX`
 * characters. Undefined when the prompt has no text to name it by.
 */
export function displayNameOf(prompt: unknown): string | undefined {
  if (!Array.isArray(prompt)) return undefined;
  const texts: string[] = [];
  for (const block of prompt as unknown[]) {
    if (typeof block !== 'object' || block === null) continue;
    const { type, text } = block as { type?: unknown; text?: unknown };
    if (type === 'text' && typeof text === 'string') texts.push(text);
  }
  const joined = texts.join(' ').replace(/\s+/g, ' ').trim();
  if (joined === '') return undefined;
  // By code points, so that a cut never splits a surrogate pair.
  const chars = Array.from(joined);
  return chars.length <= DISPLAY_NAME_MAX ? joined : chars.slice(0, DISPLAY_NAME_MAX).join('').trimEnd();
}

export class MemorySessionStore implements SessionStore {
  /** Insertion order doubles as age order: an ended session is moved to the end. */
  private readonly metas = new Map<string, SessionMeta>();
  private ended = 0;

  constructor(private readonly maxEnded = 10_000) {}

  put(meta: SessionMeta): void {
    const old = this.metas.get(meta.sessionId);
    if (old?.endedAt !== undefined) this.ended--;
    this.metas.delete(meta.sessionId);
    this.metas.set(meta.sessionId, { ...meta });
    if (meta.endedAt !== undefined) this.noteEnded();
  }

  get(sessionId: string): SessionMeta | undefined {
    const meta = this.metas.get(sessionId);
    return meta && { ...meta };
  }

  touch(sessionId: string, at: number): void {
    const meta = this.metas.get(sessionId);
    if (meta) meta.updatedAt = at;
  }

  end(sessionId: string, at: number, reason: string): void {
    const meta = this.metas.get(sessionId);
    if (!meta || meta.endedAt !== undefined) return;
    this.metas.delete(sessionId);
    this.metas.set(sessionId, { ...meta, updatedAt: at, endedAt: at, endReason: reason });
    this.noteEnded();
  }

  name(sessionId: string, displayName: string): void {
    const meta = this.metas.get(sessionId);
    if (meta && meta.displayName === undefined) meta.displayName = displayName;
  }

  list(): SessionMeta[] {
    return [...this.metas.values()].map((meta) => ({ ...meta }));
  }

  page({ workspaceCwd, after, limit }: SessionPageQuery): SessionMeta[] {
    const found: SessionMeta[] = [];
    for (const meta of this.metas.values()) {
      if (meta.workspaceCwd !== workspaceCwd) continue;
      if (after && compareRecent(meta, after) <= 0) continue;
      found.push(meta);
    }
    return found
      .sort(compareRecent)
      .slice(0, limit)
      .map((meta) => ({ ...meta }));
  }

  /** Forgets the oldest ended sessions past the bound; live ones are never dropped. */
  private noteEnded(): void {
    this.ended++;
    if (this.ended <= this.maxEnded) return;
    for (const [id, meta] of this.metas) {
      if (this.ended <= this.maxEnded) break;
      if (meta.endedAt !== undefined) {
        this.metas.delete(id);
        this.ended--;
      }
    }
  }
}
