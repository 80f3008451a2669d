/**
 * What the daemon itself remembers about the sessions it has served, apart
 * from the agent's own persistence: when a session was created or restored,
 * when it was last used, whether it is live here. The registry writes it;
 * later a durable store keeps it across restarts (and, with several nodes,
 * tells one node about another's sessions). The memory store below is the
 * first implementation and keeps at most `maxEnded` sessions that ended.
 */
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
}

export interface SessionStore {
  put(meta: SessionMeta): void;
  get(sessionId: string): SessionMeta | undefined;
  /** Records that `sessionId` was used now. */
  touch(sessionId: string, at: number): void;
  /** Records that the session is no longer live here. */
  end(sessionId: string, at: number, reason: string): void;
  list(): SessionMeta[];
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

  list(): SessionMeta[] {
    return [...this.metas.values()].map((meta) => ({ ...meta }));
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
