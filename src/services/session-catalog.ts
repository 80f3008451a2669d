/**
 * The workspace's session catalog, as `GET /workspace/:id/sessions` shows
 * it: every session the store remembers (live ones included, since the
 * registry puts them there when they start), most recently updated first,
 * a page at a time, with what is live about each read from the live session.
 *
 * A cursor is the sort key of the last session of a page (base64url JSON):
 * the next page starts right after it, wherever that session has moved
 * meanwhile. A session created between two pages sorts before the cursor,
 * so a walk neither repeats nor skips the sessions it was walking.
 *
 * With several nodes (the Redis store) a session may be live on another
 * node: whether it is live comes from `isLive` (the lead's lease check),
 * while the counts only this node can see (streams, a running prompt) come
 * from the local session, and are zero for a session live elsewhere.
 */
import { InvalidCursorError } from '../errors.js';
import type { SessionListPage, SessionSummary } from '../schemas/sessions.js';
import { isPromise, type MaybePromise } from './maybe-promise.js';
import type { Session } from './session.js';
import type { SessionMeta, SessionSortKey, SessionStore } from './session-store.js';

/** Whether a session is live anywhere in the cluster (a single node: whether it is live here). */
export type IsLive = (sessionId: string) => MaybePromise<boolean>;

export interface CatalogQuery {
  workspaceCwd: string;
  size: number;
  /** A `nextCursor` of an earlier page; empty or absent for the first. */
  cursor?: string;
}

export class SessionCatalog {
  constructor(
    private readonly store: SessionStore,
    /** The live session with this id, if any. */
    private readonly live: (sessionId: string) => Session | undefined,
    /** Live anywhere; by default, live here. */
    private readonly isLive: IsLive = (sessionId) => live(sessionId) !== undefined,
  ) {}

  /** A page; a promise only when the store or `isLive` answers with one. */
  page({ workspaceCwd, size, cursor }: CatalogQuery): MaybePromise<SessionListPage> {
    const after = cursor ? decodeCursor(cursor) : undefined;
    // One more than asked: whether it exists says whether a next page does.
    const metas = this.store.page({ workspaceCwd, limit: size + 1, ...(after ? { after } : {}) });
    return isPromise(metas) ? metas.then((found) => this.pageOf(found, size)) : this.pageOf(metas, size);
  }

  private pageOf(metas: SessionMeta[], size: number): MaybePromise<SessionListPage> {
    const shown = metas.slice(0, size);
    const last = shown.at(-1);
    const next = metas.length > size && last ? { nextCursor: encodeCursor(last) } : {};
    const live = shown.map((meta) => this.isLive(meta.sessionId));
    const answer = (flags: boolean[]): SessionListPage => ({
      sessions: shown.map((meta, i) => this.summary(meta, flags[i] ?? false)),
      ...next,
    });
    if (live.some(isPromise)) return Promise.all(live.map(async (flag) => await flag)).then(answer);
    return answer(live as boolean[]);
  }

  private summary(meta: SessionMeta, isLive: boolean): SessionSummary {
    const session = this.live(meta.sessionId);
    return {
      sessionId: meta.sessionId,
      workspaceCwd: meta.workspaceCwd,
      createdAt: new Date(meta.createdAt).toISOString(),
      updatedAt: new Date(meta.updatedAt).toISOString(),
      ...(meta.displayName !== undefined ? { displayName: meta.displayName } : {}),
      clientCount: session?.events.subscriberCount ?? 0,
      hasActivePrompt: session?.busy ?? false,
      isArchived: false,
      isLive,
    };
  }
}

export function encodeCursor(key: SessionSortKey): string {
  return Buffer.from(JSON.stringify([key.updatedAt, key.sessionId])).toString('base64url');
}

/** The sort key in a cursor; InvalidCursorError (400) for anything `encodeCursor` would not have made. */
export function decodeCursor(cursor: string): SessionSortKey {
  // Node's base64url decoder skips what it cannot read; a cursor must be made of nothing else.
  if (/^[A-Za-z0-9_-]+$/.test(cursor)) {
    try {
      const parsed: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
      if (Array.isArray(parsed) && parsed.length === 2) {
        const [updatedAt, sessionId] = parsed as unknown[];
        if (typeof updatedAt === 'number' && Number.isSafeInteger(updatedAt) && typeof sessionId === 'string')
          if (sessionId !== '') return { updatedAt, sessionId };
      }
    } catch {
      // not JSON: the 400 below
    }
  }
  throw new InvalidCursorError(cursor);
}
