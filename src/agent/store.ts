// Session persistence: one JSON file per session, `<dataDir>/<sessionId>.json`.
// Every write goes to a temporary file in the same directory and is renamed over the target, so a
// reader (or an agent that restarts after a crash) sees either the old file or the new one, never half.
// A process killed between the two steps leaves its temporary file behind; the next store to start in
// the directory removes those whose writer is no longer alive.
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { SessionUpdate } from '@agentclientprotocol/sdk';

export interface SessionRecord {
  sessionId: string;
  cwd: string;
  createdAt: string;
  updatedAt: string;
  currentModelId: string;
  currentModeId: string;
  history: SessionUpdate[];
}

/** Thrown when a session file exists but cannot be understood. */
export class CorruptSessionError extends Error {
  constructor(
    readonly sessionId: string,
    reason: string,
  ) {
    super(`session file for ${sessionId} is unreadable: ${reason}`);
    this.name = 'CorruptSessionError';
  }
}

// Ids end up in file names: allow only a conservative alphabet and length. Anything else is treated
// as a session that does not exist, so it can never name a path outside the data directory.
const SAFE_ID = /^[A-Za-z0-9_-]{1,128}$/;

// `<sessionId>.json.<pid>.<uuid>.tmp`: the name of a temporary file, with the pid of its writer.
const TEMP_NAME = /^[A-Za-z0-9_-]{1,128}\.json\.(\d+)\.[0-9a-f-]{36}\.tmp$/;

function isSafeSessionId(sessionId: string): boolean {
  return SAFE_ID.test(sessionId);
}

export class SessionStore {
  readonly dataDir: string;
  // One promise tail per session, so that writes of one session land in the order they were asked for.
  readonly #tails = new Map<string, Promise<void>>();
  #ready: Promise<void> | undefined;
  #swept: Promise<void> | undefined;
  #closed = false;

  constructor(dataDir: string) {
    this.dataDir = dataDir;
  }

  #ensureDir(): Promise<void> {
    this.#ready ??= mkdir(this.dataDir, { recursive: true }).then(() => this.#sweepOnce());
    return this.#ready;
  }

  /** Removes, once per store, the temporary files that writers killed before their rename left behind. */
  #sweepOnce(): Promise<void> {
    this.#swept ??= removeStaleTempFiles(this.dataDir);
    return this.#swept;
  }

  #file(sessionId: string): string {
    return join(this.dataDir, `${sessionId}.json`);
  }

  /** Reads a session; `undefined` when the id is unsafe or no file exists. */
  async read(sessionId: string): Promise<SessionRecord | undefined> {
    if (!isSafeSessionId(sessionId)) return undefined;
    // Let a pending write of this session finish first, so a read never sees an older state.
    await this.#tails.get(sessionId);
    let text: string;
    try {
      text = await readFile(this.#file(sessionId), 'utf8');
    } catch (error) {
      if (isErrnoException(error) && error.code === 'ENOENT') return undefined;
      throw error;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new CorruptSessionError(sessionId, 'not JSON');
    }
    const record = toSessionRecord(parsed);
    if (record === undefined || record.sessionId !== sessionId) {
      throw new CorruptSessionError(sessionId, 'unexpected shape');
    }
    return record;
  }

  /**
   * Queues an atomic write of a snapshot of `record`. The returned promise settles when this write
   * (and every earlier write of the same session) is on disk.
   */
  write(record: SessionRecord): Promise<void> {
    if (this.#closed) {
      return Promise.reject(new Error(`the store is closed; session ${record.sessionId} was not written`));
    }
    if (!isSafeSessionId(record.sessionId)) {
      return Promise.reject(new Error(`refusing to persist unsafe session id ${JSON.stringify(record.sessionId)}`));
    }
    const text = JSON.stringify(record);
    const target = this.#file(record.sessionId);
    const previous = this.#tails.get(record.sessionId) ?? Promise.resolve();
    const next = previous.then(async () => {
      await this.#ensureDir();
      const temp = `${target}.${process.pid}.${randomUUID()}.tmp`;
      try {
        await writeFile(temp, text, 'utf8');
        await rename(temp, target);
      } catch (error) {
        // The write's own error is the one to report, even if the clean-up fails as well.
        await rm(temp, { force: true }).catch(() => undefined);
        throw error;
      }
    });
    // The tail never rejects, so one failed write does not poison the following ones.
    const tail = next.catch(() => undefined);
    this.#tails.set(record.sessionId, tail);
    void tail.then(() => {
      if (this.#tails.get(record.sessionId) === tail) this.#tails.delete(record.sessionId);
    });
    return next;
  }

  /** Every readable session on disk, newest first. Unreadable files are skipped. */
  async list(): Promise<SessionRecord[]> {
    await this.#sweepOnce();
    let names: string[];
    try {
      names = await readdir(this.dataDir);
    } catch (error) {
      if (isErrnoException(error) && error.code === 'ENOENT') return [];
      throw error;
    }
    const records: SessionRecord[] = [];
    for (const name of names) {
      if (!name.endsWith('.json')) continue;
      const sessionId = name.slice(0, -'.json'.length);
      try {
        const record = await this.read(sessionId);
        if (record !== undefined) records.push(record);
      } catch {
        // A corrupt file must not hide the others.
      }
    }
    return records.sort((a, b) => b.updatedAt.localeCompare(a.updatedAt));
  }

  /** Settles when every queued write has finished. */
  async flush(): Promise<void> {
    while (this.#tails.size > 0) {
      await Promise.all(this.#tails.values());
    }
  }

  /**
   * Refuses further writes and settles once the queued ones are on disk. The process can exit after
   * that without killing a write between its temporary file and its rename.
   */
  async close(): Promise<void> {
    this.#closed = true;
    await this.flush();
  }
}

/** Whether a process with this pid exists (it may belong to another user: EPERM still means alive). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return isErrnoException(error) && error.code === 'EPERM';
  }
}

// Best effort: a directory that cannot be listed, or a file that cannot be removed, must not stop the
// store from working. Files of a live writer are kept (two agents may share the directory while one of
// them is being replaced), and so is anything not named like our temporary files.
async function removeStaleTempFiles(dataDir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dataDir);
  } catch {
    return;
  }
  const stale = names.filter((name) => {
    const pid = Number(TEMP_NAME.exec(name)?.[1] ?? Number.NaN);
    return Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && !isAlive(pid);
  });
  await Promise.all(stale.map((name) => rm(join(dataDir, name), { force: true }).catch(() => undefined)));
}

function isErrnoException(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && 'code' in error;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

// A shallow check: entries were written by this agent from SDK-typed values, so the discriminant and
// the object shape are enough to tell a real history from a foreign file.
function isSessionUpdate(value: unknown): value is SessionUpdate {
  return isObject(value) && typeof value.sessionUpdate === 'string';
}

function toSessionRecord(value: unknown): SessionRecord | undefined {
  if (!isObject(value)) return undefined;
  const { sessionId, cwd, createdAt, updatedAt, currentModelId, currentModeId, history } = value;
  if (
    typeof sessionId !== 'string' ||
    typeof cwd !== 'string' ||
    typeof createdAt !== 'string' ||
    typeof currentModelId !== 'string' ||
    typeof currentModeId !== 'string' ||
    !Array.isArray(history)
  ) {
    return undefined;
  }
  const updates: SessionUpdate[] = [];
  for (const entry of history) {
    if (!isSessionUpdate(entry)) return undefined;
    updates.push(entry);
  }
  return {
    sessionId,
    cwd,
    createdAt,
    updatedAt: typeof updatedAt === 'string' ? updatedAt : createdAt,
    currentModelId,
    currentModeId,
    history: updates,
  };
}
