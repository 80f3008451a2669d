/**
 * Domain errors, declared once. Each carries its HTTP status (through
 * `@fastify/error`), the extra envelope fields the wire contract puts next to
 * `error`, and a `Retry-After` value where the contract asks for one. Services
 * throw these; the single error handler in app.ts turns them into responses.
 */
import createError from '@fastify/error';

/** Seconds a client is told to wait on 503 / 409 / 429. */
export const RETRY_AFTER_SECONDS = 5;

/** What the error handler needs from a domain error. */
interface WireError extends Error {
  statusCode?: number;
  retryAfter?: number;
  /** The JSON body, `error` included. */
  envelope(): Record<string, unknown>;
}

export function isWireError(err: unknown): err is WireError {
  return err instanceof Error && typeof (err as Partial<WireError>).envelope === 'function';
}

const SessionNotFoundBase = createError<[string]>('ACPD_SESSION_NOT_FOUND', '%s', 404);
export class SessionNotFoundError extends SessionNotFoundBase implements WireError {
  readonly sessionId: string;
  /**
   * `session_not_found` on the routes taken from the qwen daemon (close,
   * status), whose clients read it; v1's routes answer without a code.
   */
  readonly wireCode: 'session_not_found' | undefined;
  constructor(sessionId: string, extra?: string, wireCode?: 'session_not_found') {
    super(`No session with id ${JSON.stringify(sessionId)}${extra ? `. ${extra}` : ''}`);
    this.sessionId = sessionId;
    this.wireCode = wireCode;
  }
  envelope() {
    return this.wireCode
      ? { error: this.message, code: this.wireCode, sessionId: this.sessionId }
      : { error: this.message, sessionId: this.sessionId };
  }
}

const WorkspaceMismatchBase = createError<[string]>('ACPD_WORKSPACE_MISMATCH', '%s', 400);
export class WorkspaceMismatchError extends WorkspaceMismatchBase implements WireError {
  readonly bound: string;
  readonly requested: string;
  constructor(bound: string, requested: string, message?: string) {
    const req = truncatePath(requested);
    super(
      message ??
        `Workspace mismatch: daemon is bound to ${JSON.stringify(bound)} but request asked for ` +
          `${JSON.stringify(req)}. Each acpd daemon binds to exactly one workspace; start a separate ` +
          `daemon for ${JSON.stringify(req)} (or route the request to one via an orchestrator).`,
    );
    this.bound = bound;
    this.requested = req;
  }
  envelope() {
    return {
      error: this.message,
      code: 'workspace_mismatch',
      boundWorkspace: this.bound,
      requestedWorkspace: this.requested,
    };
  }
}

const InvalidSessionScopeBase = createError<[string]>('ACPD_INVALID_SESSION_SCOPE', '%s', 400);
export class InvalidSessionScopeError extends InvalidSessionScopeBase implements WireError {
  constructor(scope: unknown, message?: string) {
    super(message ?? `Invalid sessionScope: ${JSON.stringify(scope)}. Expected 'single' or 'thread'.`);
  }
  envelope() {
    return { error: this.message, code: 'invalid_session_scope' };
  }
}

const SessionLimitBase = createError<[number]>('ACPD_SESSION_LIMIT', 'Session limit reached (%d)', 503);
export class SessionLimitExceededError extends SessionLimitBase implements WireError {
  readonly limit: number;
  readonly retryAfter = RETRY_AFTER_SECONDS;
  constructor(limit: number) {
    super(limit);
    this.limit = limit;
  }
  envelope() {
    return { error: this.message, code: 'session_limit_exceeded', limit: this.limit };
  }
}

export type RestoreAction = 'load' | 'resume';

const RestoreInProgressBase = createError<[string, string, string]>(
  'ACPD_RESTORE_IN_PROGRESS',
  'Session "%s" is already being restored via session/%s; retry session/%s after it completes',
  409,
);
export class RestoreInProgressError extends RestoreInProgressBase implements WireError {
  readonly retryAfter = RETRY_AFTER_SECONDS;
  constructor(
    readonly sessionId: string,
    readonly activeAction: RestoreAction,
    readonly requestedAction: RestoreAction,
  ) {
    super(sessionId, activeAction, requestedAction);
  }
  envelope() {
    return {
      error: this.message,
      code: 'restore_in_progress',
      sessionId: this.sessionId,
      activeAction: this.activeAction,
      requestedAction: this.requestedAction,
    };
  }
}

const PromptQueueFullBase = createError<[string, number, number]>(
  'ACPD_PROMPT_QUEUE_FULL',
  'Prompt queue full for session "%s" (%d/%d pending)',
  503,
);
/** A prompt that would wait behind --max-pending-prompts others of its session. */
export class PromptQueueFullError extends PromptQueueFullBase implements WireError {
  readonly retryAfter = RETRY_AFTER_SECONDS;
  constructor(
    readonly sessionId: string,
    readonly limit: number,
    readonly pendingCount: number,
  ) {
    super(sessionId, pendingCount, limit);
  }
  envelope() {
    return {
      error: this.message,
      code: 'prompt_queue_full',
      sessionId: this.sessionId,
      limit: this.limit,
      pendingCount: this.pendingCount,
    };
  }
}

const PendingPromptNotFoundBase = createError<[string, string]>(
  'ACPD_PENDING_PROMPT_NOT_FOUND',
  'No running or queued prompt "%s" in session "%s"',
  404,
);
/** `DELETE /session/:id/pending-prompts/:promptId` for a prompt that ended already, or never was. */
export class PendingPromptNotFoundError extends PendingPromptNotFoundBase implements WireError {
  constructor(
    readonly sessionId: string,
    readonly promptId: string,
  ) {
    super(promptId, sessionId);
  }
  envelope() {
    return {
      error: this.message,
      code: 'pending_prompt_not_found',
      sessionId: this.sessionId,
      promptId: this.promptId,
    };
  }
}

const SubscriberLimitBase = createError<[number]>(
  'ACPD_SUBSCRIBER_LIMIT',
  'EventBus subscriber limit reached (%d)',
  429,
);
export class SubscriberLimitExceededError extends SubscriberLimitBase implements WireError {
  readonly retryAfter = RETRY_AFTER_SECONDS;
  constructor(readonly limit: number) {
    super(limit);
  }
  envelope() {
    return { error: this.message, code: 'subscriber_limit_exceeded', limit: this.limit };
  }
}

const InvalidPermissionOptionBase = createError<[string, string]>(
  'ACPD_INVALID_OPTION_ID',
  'Permission %s: optionId "%s" is not in the set of options the agent offered.',
  400,
);
export class InvalidPermissionOptionError extends InvalidPermissionOptionBase implements WireError {
  constructor(
    readonly requestId: string,
    readonly optionId: string,
  ) {
    super(requestId, optionId);
  }
  envelope() {
    return { error: this.message, code: 'invalid_option_id', requestId: this.requestId, optionId: this.optionId };
  }
}

const PermissionNotFoundBase = createError('ACPD_PERMISSION_NOT_FOUND', 'No pending permission request', 404);
export class PermissionNotFoundError extends PermissionNotFoundBase implements WireError {
  constructor(readonly requestId: string) {
    super();
  }
  envelope() {
    return { error: this.message, requestId: this.requestId };
  }
}

const VoteNotAllowedBase = createError<[string, string]>(
  'ACPD_VOTE_NOT_ALLOWED',
  'The permission policy %s does not count this vote: %s',
  403,
);
/** A vote the permission policy does not count (not the originator, not on loopback). */
export class VoteNotAllowedError extends VoteNotAllowedBase implements WireError {
  constructor(
    readonly requestId: string,
    readonly policy: string,
    reason: string,
  ) {
    super(policy, reason);
  }
  envelope() {
    return { error: this.message, code: 'vote_not_allowed', policy: this.policy, requestId: this.requestId };
  }
}

const VoteAlreadyCastBase = createError<[string]>(
  'ACPD_VOTE_ALREADY_CAST',
  'User %s has already voted on this permission request',
  403,
);
/**
 * Under consensus, a user's second vote on the same request (whatever client
 * id it comes from). 403, not 409: no waiting makes it count.
 */
export class VoteAlreadyCastError extends VoteAlreadyCastBase implements WireError {
  constructor(
    readonly requestId: string,
    readonly user: string,
  ) {
    super(user);
  }
  envelope() {
    return {
      error: this.message,
      code: 'vote_already_cast',
      policy: 'consensus',
      requestId: this.requestId,
      user: this.user,
    };
  }
}

const RateLimitedBase = createError<[string]>('ACPD_RATE_LIMITED', 'Rate limit exceeded for %s; retry later', 429);
/** A client spent its budget (prompts, mutations or reads) for the current window. */
export class RateLimitedError extends RateLimitedBase implements WireError {
  constructor(
    readonly budget: string,
    readonly retryAfter: number,
  ) {
    super(budget);
  }
  envelope() {
    return { error: this.message, code: 'rate_limited', budget: this.budget };
  }
}

const InsufficientScopeBase = createError<[string]>(
  'ACPD_INSUFFICIENT_SCOPE',
  'This token lacks the "%s" scope this request needs',
  403,
);
/** A named token (--tokens-file) whose user lacks the scope of the route. */
export class InsufficientScopeError extends InsufficientScopeBase implements WireError {
  constructor(
    readonly scope: string,
    readonly user: string,
  ) {
    super(scope);
  }
  envelope() {
    return { error: this.message, code: 'insufficient_scope', scope: this.scope, user: this.user };
  }
}

const TokenExpiredBase = createError('ACPD_TOKEN_EXPIRED', 'Token expired', 401);
/** A token of a user whose `expires` has passed. */
export class TokenExpiredError extends TokenExpiredBase implements WireError {
  envelope() {
    return { error: this.message, code: 'token_expired' };
  }
}

const ClientIdTakenBase = createError<[string]>('ACPD_CLIENT_ID_TAKEN', 'Client id %s belongs to another user', 403);
/** An `X-Qwen-Client-Id` (or an /acp connection) first used by another user. */
export class ClientIdTakenError extends ClientIdTakenBase implements WireError {
  constructor(readonly clientId: string) {
    super(JSON.stringify(clientId));
  }
  envelope() {
    return { error: this.message, code: 'client_id_taken', clientId: this.clientId };
  }
}

const OverloadedBase = createError<[string]>('ACPD_OVERLOADED', 'acpd is overloaded (%s); retry later', 503);
/** Load shedding: the event loop lags or memory is past its threshold. */
export class OverloadedError extends OverloadedBase implements WireError {
  readonly retryAfter = RETRY_AFTER_SECONDS;
  constructor(readonly reason: string) {
    super(reason);
  }
  envelope() {
    return { error: this.message, code: 'overloaded', reason: this.reason };
  }
}

const InvalidCursorBase = createError<[string]>('ACPD_INVALID_CURSOR', 'Invalid cursor: %s is not a valid cursor', 400);
/** A session-list cursor acpd did not make (the qwen daemon's code and wording). */
export class InvalidCursorError extends InvalidCursorBase implements WireError {
  constructor(cursor: string) {
    // Quoted and cut short: it is the client's text, echoed back.
    super(JSON.stringify(cursor.length > 100 ? `${cursor.slice(0, 100)}…` : cursor));
  }
  envelope() {
    return { error: this.message, code: 'invalid_cursor' };
  }
}

/** A 400 for a route's own body/param check, with an optional `code`. */
const BadRequestBase = createError<[string]>('ACPD_BAD_REQUEST', '%s', 400);
export class BadRequestError extends BadRequestBase implements WireError {
  constructor(
    message: string,
    readonly wireCode?: string,
  ) {
    super(message);
  }
  envelope() {
    return this.wireCode ? { error: this.message, code: this.wireCode } : { error: this.message };
  }
}

/** What acpd knows about an agent that could not be started or did not finish its handshake. */
export interface AgentFailure {
  /** The agent's command line, as configured. */
  command: string;
  /** Why, for a person: `"agent" is not on PATH (ENOENT)`, "exited with code 3 during initialize", … */
  reason: string;
  /** When the process exited by itself during the handshake: its exit code, or the signal that ended it. */
  exitCode?: number;
  signal?: string;
  /** The last lines the agent wrote to its stderr, oldest first, when it wrote any. */
  stderr?: string[];
}

const AgentUnavailableBase = createError<[string, string]>(
  'ACPD_AGENT_UNAVAILABLE',
  'The agent cannot be used: %s (command: %s)',
  503,
);
/**
 * No agent to give work to: its command cannot be spawned, or the process
 * exited, refused or timed out during `initialize`. A 503 rather than a 500:
 * the daemon is fine, and the same request succeeds once the agent is fixed.
 */
export class AgentUnavailableError extends AgentUnavailableBase implements WireError {
  readonly retryAfter = RETRY_AFTER_SECONDS;
  constructor(readonly failure: AgentFailure) {
    super(failure.reason, failure.command);
  }
  envelope() {
    return { error: this.message, code: 'agent_unavailable', ...this.failure };
  }
}

/** Work that was under way when the daemon stopped its sessions. A 500, as in the reference. */
export class ShuttingDownError extends Error {
  constructor() {
    super('acpd is shutting down');
  }
}

const DrainingBase = createError('ACPD_DRAINING', 'acpd is draining: it takes no new sessions or prompts', 503);
/** New work that arrives while the daemon drains: 503, so a proxy or client retries another node. */
export class DrainingError extends DrainingBase implements WireError {
  readonly retryAfter = RETRY_AFTER_SECONDS;
  envelope() {
    return { error: this.message, code: 'draining' };
  }
}

/** A prompt whose client went away before or while it ran. */
export class PromptAbortedError extends Error {
  override readonly name = 'AbortError';
  constructor() {
    super('Prompt aborted');
  }
}

/** The agent process went away while a call was outstanding. */
export class ChannelClosedError extends Error {}

/** A call to the agent outlived its deadline. */
export class AgentTimeoutError extends Error {
  constructor(label: string, ms: number) {
    super(`acpd ${label} timed out after ${ms}ms`);
  }
}

const MAX_WORKSPACE_PATH_LENGTH = 4096;

function truncatePath(p: string): string {
  return p.length > MAX_WORKSPACE_PATH_LENGTH ? `${p.slice(0, MAX_WORKSPACE_PATH_LENGTH)}…[truncated]` : p;
}

const ConnectionLimitBase = createError<[number]>(
  'ACPD_CONNECTION_LIMIT',
  'Connection limit reached (%d open connections); retry later',
  503,
);
/** A request on a connection accepted past --max-connections (the probes excepted). */
export class ConnectionLimitError extends ConnectionLimitBase implements WireError {
  readonly retryAfter = RETRY_AFTER_SECONDS;
  constructor(readonly limit: number) {
    super(limit);
  }
  envelope() {
    return { error: this.message, code: 'connection_limit', limit: this.limit };
  }
}

const IdempotencyKeyMismatchBase = createError(
  'ACPD_IDEMPOTENCY_KEY_MISMATCH',
  'This Idempotency-Key was already used for a different request (method, path or body); use a new key',
  422,
);
/** A retry whose key names an earlier request that was not this one. */
export class IdempotencyKeyMismatchError extends IdempotencyKeyMismatchBase implements WireError {
  envelope() {
    return { error: this.message, code: 'idempotency_key_mismatch' };
  }
}

/**
 * A write about a session refused because this node no longer holds its lease
 * (the fencing token in Redis is not ours): another node took the session
 * over. Not an HTTP answer; the bus that meets it stops (see `EventBus`). The
 * cluster's Lua scripts refuse with an error reply that starts `FENCED`.
 */
export class FencedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FencedError';
  }
}

const SessionOwnerUnavailableBase = createError<[string, string]>(
  'ACPD_SESSION_OWNER_UNAVAILABLE',
  'The node that runs this session (%s) cannot be reached (%s); retry once its lease has expired',
  503,
);
/**
 * A request forwarded to a session's owner that did not get an answer. It is
 * not sent anywhere else in its place: the owner may have started it. Once the
 * owner's lease expires, a retry is served by another node.
 */
export class SessionOwnerUnavailableError extends SessionOwnerUnavailableBase implements WireError {
  constructor(
    readonly node: string,
    reason: string,
    readonly retryAfter: number,
  ) {
    super(node, reason);
  }
  envelope() {
    return { error: this.message, code: 'session_owner_unavailable', node: this.node };
  }
}

const IdempotencyKeyInterruptedBase = createError(
  'ACPD_IDEMPOTENCY_KEY_INTERRUPTED',
  'The request first sent with this Idempotency-Key was interrupted (its node stopped) and left no answer; it may or may not have taken effect: check, then use a new key',
  409,
);
/**
 * A duplicate of a request whose node died while running it (its claim
 * lapsed without a receipt). Running it again could do the work twice, so
 * the client has to look at the state and decide.
 */
export class IdempotencyKeyInterruptedError extends IdempotencyKeyInterruptedBase implements WireError {
  envelope() {
    return { error: this.message, code: 'idempotency_key_interrupted' };
  }
}

const RedisUnavailableBase = createError<[string, string]>(
  'ACPD_REDIS_UNAVAILABLE',
  'Redis cannot be reached (%s): %s',
  503,
);
/** A command to the cluster's Redis failed: nothing was changed by it; try again later. */
export class RedisUnavailableError extends RedisUnavailableBase implements WireError {
  readonly retryAfter = RETRY_AFTER_SECONDS;
  constructor(what: string, cause: unknown) {
    super(what, cause instanceof Error ? cause.message : String(cause));
  }
  envelope() {
    return { error: this.message, code: 'redis_unavailable' };
  }
}
