/**
 * `acpd/client`: a typed client of the acpd HTTP API, for Node 20+ and
 * browsers (it uses only fetch, streams, TextDecoder, AbortController,
 * timers and crypto, and loads nothing but its own files).
 *
 *   const acpd = new AcpdClient({ baseUrl: 'http://127.0.0.1:4170', token });
 *   const { sessionId } = await acpd.createSession();
 *   for await (const frame of acpd.events(sessionId, { signal })) …
 *   await acpd.prompt(sessionId, 'hello');
 *
 * Every type here is derived from the daemon's route schemas (type-only
 * imports: nothing of them is loaded at run time).
 */
import type { Static } from '@sinclair/typebox';
import type { ContentBlock, PromptResponse, SessionNotification, SetModelResponse } from '../schemas/acp.js';
import type { SessionHandle } from '../schemas/common.js';
import type { capabilities, health } from '../schemas/meta.js';
import type { VoteBody } from '../schemas/permissions.js';
import type {
  CreateSessionBody,
  CurrentTurnResponse,
  loadSession,
  PendingPromptItem,
  PromptAccepted,
  resumeSession,
  SessionListPage,
  SessionStatus,
} from '../schemas/sessions.js';
import type {
  gitBranches,
  gitCommit,
  gitDiff,
  gitDiffFile,
  gitLog,
  gitStatus,
  globFiles,
  listDir,
  readFile,
  readFileBytes,
  statFile,
} from '../schemas/workspace.js';
import { sessionEvents, type EventsOptions, type SessionEvent } from './events.js';
import { Transport, type TransportOptions } from './http.js';

export * from './errors.js';
export type { EventOf, EventsOptions, SessionEvent, SessionEventType } from './events.js';
export type { RetryInfo, RetryOptions } from './http.js';
export { SseParser, type SseMessage } from './sse.js';

export type Capabilities = Static<(typeof capabilities.response)[200]>;
export type Health = Static<(typeof health.response)[200]>;
export type Session = Static<typeof SessionHandle>;
export type CreateSessionOptions = Static<typeof CreateSessionBody>;
export type LoadedSession = Static<(typeof loadSession.response)[200]>;
export type ResumedSession = Static<(typeof resumeSession.response)[200]>;
export type SessionList = Static<typeof SessionListPage>;
export type Status = Static<typeof SessionStatus>;
export type PendingPrompt = Static<typeof PendingPromptItem>;
export type CurrentTurn = Static<typeof CurrentTurnResponse>;
export type PromptResult = Static<typeof PromptResponse>;
export type PromptAdmitted = Static<typeof PromptAccepted>;
export type ModelResult = Static<typeof SetModelResponse>;
export type Content = Static<typeof ContentBlock>;
export type Notification = Static<typeof SessionNotification>;
export type VoteOutcome = Static<typeof VoteBody>['outcome'];
export type FileText = Static<(typeof readFile.response)[200]>;
export type FileBytes = Static<(typeof readFileBytes.response)[200]>;
export type FileStat = Static<(typeof statFile.response)[200]>;
export type DirListing = Static<(typeof listDir.response)[200]>;
export type DirEntry = DirListing['entries'][number];
export type GlobResult = Static<(typeof globFiles.response)[200]>;
export type GitStatus = Static<(typeof gitStatus.response)[200]>;
export type GitDiff = Static<(typeof gitDiff.response)[200]>;
export type GitDiffEntry = GitDiff['files'][number];
export type GitFileDiff = Static<(typeof gitDiffFile.response)[200]>;
export type GitLog = Static<(typeof gitLog.response)[200]>;
export type GitCommit = GitLog['entries'][number];
export type GitCommitDetail = Static<(typeof gitCommit.response)[200]>;
export type GitBranches = Static<(typeof gitBranches.response)[200]>;

/** A window of a text file: from `line` (1-based) or the `cursor` of the last page, `limit` lines, `maxBytes`. */
export interface ReadFileOptions {
  line?: number;
  limit?: number;
  maxBytes?: number;
  cursor?: string;
  signal?: AbortSignal;
}

/** A page of the log: `limit` commits after `skip`; `range` (`a..b`), `all` branches, `search` in messages. */
export interface GitLogOptions {
  limit?: number;
  skip?: number;
  range?: string;
  all?: boolean;
  search?: string;
  signal?: AbortSignal;
}

/** How a client reaches the daemon: the transport's own options. */
export type AcpdClientOptions = TransportOptions;

/** A prompt: plain text, or ACP content blocks as they are. */
export type PromptInput = string | Content[];

function blocks(prompt: PromptInput): Content[] {
  return typeof prompt === 'string' ? [{ type: 'text', text: prompt }] : prompt;
}

const sessionPath = (id: string) => `/session/${encodeURIComponent(id)}`;

/** A path with its query string; parameters left undefined are not sent. */
function withQuery(path: string, params: Record<string, string | number | boolean | undefined>): string {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined) continue;
    query.set(name, typeof value === 'boolean' ? (value ? '1' : '0') : String(value));
  }
  const qs = query.toString();
  return qs === '' ? path : `${path}?${qs}`;
}

export class AcpdClient {
  readonly #http: Transport;
  #workspace: string | undefined;

  constructor(options: AcpdClientOptions) {
    this.#http = new Transport(options);
  }

  get baseUrl(): string {
    return this.#http.baseUrl;
  }

  /** What the daemon serves: features, limits, the workspace, the agent. */
  async capabilities(signal?: AbortSignal): Promise<Capabilities> {
    return (await this.#http.request<Capabilities>('GET', '/capabilities', { signal })).body;
  }

  /** Liveness; `deep` adds the session and permission counters. */
  async health(deep = false, signal?: AbortSignal): Promise<Health> {
    return (await this.#http.request<Health>('GET', deep ? '/health?deep=1' : '/health', { signal })).body;
  }

  /**
   * A page of the workspace's sessions, live and remembered (`isLive`), newest
   * first; pass `nextCursor` back as `cursor` for the next page. The workspace
   * is the daemon's own (read from /capabilities once) unless given.
   */
  async listSessions(opts: { size?: number; cursor?: string; workspace?: string; signal?: AbortSignal } = {}) {
    const workspace = opts.workspace ?? (this.#workspace ??= (await this.capabilities(opts.signal)).workspaceCwd);
    const path = withQuery(`/workspace/${encodeURIComponent(workspace)}/sessions`, {
      size: opts.size,
      cursor: opts.cursor,
    });
    return (await this.#http.request<SessionList>('GET', path, { signal: opts.signal })).body;
  }

  /** A new session (or, with `sessionScope: 'single'`, the workspace's shared one: `attached`). */
  async createSession(options: CreateSessionOptions = {}, signal?: AbortSignal): Promise<Session> {
    return (await this.#http.request<Session>('POST', '/session', { body: options, signal })).body;
  }

  /** Restores a stored session, replaying its history (`compactedReplay`, and frames when the log was empty). */
  async load(sessionId: string, options: { cwd?: string } = {}, signal?: AbortSignal): Promise<LoadedSession> {
    return (
      await this.#http.request<LoadedSession>('POST', `${sessionPath(sessionId)}/load`, { body: options, signal })
    ).body;
  }

  /** Restores a stored session without replaying its history. */
  async resume(sessionId: string, options: { cwd?: string } = {}, signal?: AbortSignal): Promise<ResumedSession> {
    const path = `${sessionPath(sessionId)}/resume`;
    return (await this.#http.request<ResumedSession>('POST', path, { body: options, signal })).body;
  }

  /**
   * Sends a prompt and waits for its turn to end (the agent's `stopReason`).
   * Aborting the signal leaves, which cancels the turn (or takes it off the queue).
   */
  async prompt(sessionId: string, prompt: PromptInput, signal?: AbortSignal): Promise<PromptResult> {
    const path = `${sessionPath(sessionId)}/prompt`;
    return (await this.#http.request<PromptResult>('POST', path, { body: { prompt: blocks(prompt) }, signal })).body;
  }

  /**
   * Sends a prompt and returns once it is admitted (`Prefer: respond-async`):
   * its `promptId`, and the cursor and epoch to read its frames from. The turn
   * runs on; it ends with a `turn_complete` (or `turn_error`) frame.
   */
  async submitPrompt(sessionId: string, prompt: PromptInput, signal?: AbortSignal): Promise<PromptAdmitted> {
    const path = `${sessionPath(sessionId)}/prompt`;
    const init = { body: { prompt: blocks(prompt) }, headers: { prefer: 'respond-async' }, signal };
    return (await this.#http.request<PromptAdmitted>('POST', path, init)).body;
  }

  /** Cancels the running prompt (queued ones stay); does nothing when none runs. */
  async cancel(sessionId: string, signal?: AbortSignal): Promise<void> {
    await this.#http.request('POST', `${sessionPath(sessionId)}/cancel`, { body: {}, signal });
  }

  /** Switches the session's model (`model_switched` follows as a frame). */
  async setModel(sessionId: string, modelId: string, signal?: AbortSignal): Promise<ModelResult> {
    const path = `${sessionPath(sessionId)}/model`;
    return (await this.#http.request<ModelResult>('POST', path, { body: { modelId }, signal })).body;
  }

  /** Answers a `permission_request` frame: `{ outcome: 'selected', optionId }` or `{ outcome: 'cancelled' }`. */
  async vote(requestId: string, outcome: VoteOutcome, signal?: AbortSignal): Promise<void> {
    await this.#http.request('POST', `/permission/${encodeURIComponent(requestId)}`, { body: { outcome }, signal });
  }

  /** Closes the session for every client (it can be loaded again later). */
  async close(sessionId: string, signal?: AbortSignal): Promise<void> {
    await this.#http.request('DELETE', sessionPath(sessionId), { signal });
  }

  /** The live session now: whether a prompt runs, the permission requests waiting, its clients. */
  async status(sessionId: string, signal?: AbortSignal): Promise<Status> {
    return (await this.#http.request<Status>('GET', `${sessionPath(sessionId)}/status`, { signal })).body;
  }

  /** The running prompt, then the queued ones in the order they will run. */
  async pendingPrompts(sessionId: string, signal?: AbortSignal): Promise<PendingPrompt[]> {
    const path = `${sessionPath(sessionId)}/pending-prompts`;
    return (await this.#http.request<{ pendingPrompts: PendingPrompt[] }>('GET', path, { signal })).body.pendingPrompts;
  }

  /** Takes a queued prompt off the queue, or cancels it when it is the running one. */
  async removePendingPrompt(sessionId: string, promptId: string, signal?: AbortSignal): Promise<void> {
    const path = `${sessionPath(sessionId)}/pending-prompts/${encodeURIComponent(promptId)}`;
    await this.#http.request('DELETE', path, { signal });
  }

  /** The prompt running now, or `state: 'idle'`. */
  async currentTurn(sessionId: string, signal?: AbortSignal): Promise<CurrentTurn> {
    return (await this.#http.request<CurrentTurn>('GET', `${sessionPath(sessionId)}/turns/current`, { signal })).body;
  }

  // ---- the workspace: files and git (read-only here), as the qwen daemon serves them ----
  // Paths are relative to the daemon's workspace (or absolute inside it). Refusals are AcpdErrors whose
  // `code` is the qwen daemon's error kind: `path_not_found`, `binary_file`, `file_too_large`,
  // `path_outside_workspace`, `symlink_escape`, …

  /**
   * A text file, whole (up to the daemon's byte cap: 413 `file_too_large` past it) or a window of it;
   * `nextCursor` of the answer (with `hasMore`) reads on. A binary file is 422 `binary_file`.
   */
  async readFile(path: string, opts: ReadFileOptions = {}): Promise<FileText> {
    const { signal, ...window } = opts;
    return (await this.#http.request<FileText>('GET', withQuery('/file', { path, ...window }), { signal })).body;
  }

  /** A window of any regular file's bytes, as base64 (`contentBase64`). */
  async readFileBytes(
    path: string,
    opts: { offset?: number; maxBytes?: number; signal?: AbortSignal } = {},
  ): Promise<FileBytes> {
    const { signal, ...window } = opts;
    return (await this.#http.request<FileBytes>('GET', withQuery('/file/bytes', { path, ...window }), { signal })).body;
  }

  /** What a path is (symlinks followed), its size and modification time. */
  async stat(path: string, signal?: AbortSignal): Promise<FileStat> {
    return (await this.#http.request<FileStat>('GET', withQuery('/stat', { path }), { signal })).body;
  }

  /**
   * A directory's entries (`.` for the workspace itself); symlinks are listed as such, not followed. What the
   * workspace's ignore rules match is left out unless `includeIgnored` (then marked `ignored`).
   */
  async listDir(path = '.', opts: { includeIgnored?: boolean; signal?: AbortSignal } = {}): Promise<DirListing> {
    const url = withQuery('/list', { path, includeIgnored: opts.includeIgnored || undefined });
    return (await this.#http.request<DirListing>('GET', url, { signal: opts.signal })).body;
  }

  /** Workspace paths matching a glob pattern (relative, no `..`), sorted; ignored ones only with `includeIgnored`. */
  async glob(
    pattern: string,
    opts: { cwd?: string; maxResults?: number; includeIgnored?: boolean; signal?: AbortSignal } = {},
  ): Promise<GlobResult> {
    const { signal, cwd, maxResults, includeIgnored } = opts;
    const path = withQuery('/glob', { pattern, cwd, maxResults, includeIgnored: includeIgnored || undefined });
    return (await this.#http.request<GlobResult>('GET', path, { signal })).body;
  }

  /** The branch, ahead/behind its upstream, counts of changed files; `branch: null` outside a repository. */
  async gitStatus(signal?: AbortSignal): Promise<GitStatus> {
    return (await this.#http.request<GitStatus>('GET', '/workspace/git', { signal })).body;
  }

  /** The working tree against HEAD: totals and the changed files; `available: false` outside a repository. */
  async gitDiff(signal?: AbortSignal): Promise<GitDiff> {
    return (await this.#http.request<GitDiff>('GET', '/workspace/git/diff', { signal })).body;
  }

  /** One file's hunks against HEAD (`oldPath` for a rename); `truncated` when the daemon cut it. */
  async gitDiffFile(path: string, opts: { oldPath?: string; signal?: AbortSignal } = {}): Promise<GitFileDiff> {
    const url = withQuery('/workspace/git/diff/file', { path, oldPath: opts.oldPath });
    return (await this.#http.request<GitFileDiff>('GET', url, { signal: opts.signal })).body;
  }

  /** A page of commits, newest first; `hasMore` when there are older ones (ask again with `skip`). */
  async gitLog(opts: GitLogOptions = {}): Promise<GitLog> {
    const { signal, all, ...rest } = opts;
    // `all` is sent only when asked for (the daemon takes `all=1` and nothing else as yes).
    const path = withQuery('/workspace/git/log', { ...rest, all: all === true || undefined });
    return (await this.#http.request<GitLog>('GET', path, { signal })).body;
  }

  /** One commit: message, parents, the files it changed with line counts; `available: false` when unknown. */
  async gitCommit(sha: string, signal?: AbortSignal): Promise<GitCommitDetail> {
    const url = withQuery('/workspace/git/log/commit', { sha });
    return (await this.#http.request<GitCommitDetail>('GET', url, { signal })).body;
  }

  /** Local and remote-tracking branches, tags, recently checked-out branches and HEAD. */
  async gitBranches(signal?: AbortSignal): Promise<GitBranches> {
    return (await this.#http.request<GitBranches>('GET', '/workspace/git/branches', { signal })).body;
  }

  /**
   * The session's frames as they come, reconnecting by itself after a drop
   * with no gap and no repeat. `state_resync_required` is yielded as it comes
   * (what was built from earlier frames is stale; the replay from the oldest
   * event held follows). Ends after `session_closed` / `session_died`, or when
   * `signal` aborts; throws SessionNotFoundError when the session is gone.
   */
  events(sessionId: string, options: EventsOptions = {}): AsyncGenerator<SessionEvent, void, undefined> {
    return sessionEvents(this.#http, sessionId, options);
  }
}
