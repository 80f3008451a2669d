/**
 * The daemon's error answers as classes, so that a caller can `catch (err)`
 * and test `err instanceof SessionNotFoundError` instead of reading status
 * codes. One table maps the envelope's `code` to its class; the answers that
 * carry no code (v1's 404s, the token check) are told apart by status.
 */
import type { Static } from '@sinclair/typebox';
import type { ErrorEnvelope } from '../schemas/common.js';

/** Every error body the daemon sends: `error`, and `code` and context fields where there are some. */
export type ErrorBody = Static<typeof ErrorEnvelope>;

/** An error answer of the daemon (any status from 400 up). */
export class AcpdError extends Error {
  override name = 'AcpdError';
  constructor(
    readonly status: number,
    /** The envelope's `code` (a wire code such as `restore_in_progress`, or an agent's JSON-RPC code). */
    readonly code: string | number | undefined,
    /** The whole envelope (undefined when the body was not one). */
    readonly body: ErrorBody | undefined,
    /** Seconds the daemon asked to wait (`Retry-After`), when it did. */
    readonly retryAfter?: number,
  ) {
    super(body?.error ?? `HTTP ${status}`);
  }
}

/** 401: no token, or the wrong one. */
export class UnauthorizedError extends AcpdError {
  override name = 'UnauthorizedError';
}
/** 403: the Origin or Host is not allowed. */
export class ForbiddenError extends AcpdError {
  override name = 'ForbiddenError';
}
/** 404 about a session: not live (or, for a restore, not stored by the agent). */
export class SessionNotFoundError extends AcpdError {
  override name = 'SessionNotFoundError';
}
/** 404 about a permission request: unknown, or answered already. */
export class PermissionNotFoundError extends AcpdError {
  override name = 'PermissionNotFoundError';
}
/** 404 `pending_prompt_not_found`. */
export class PendingPromptNotFoundError extends AcpdError {
  override name = 'PendingPromptNotFoundError';
}
/** 400 `workspace_mismatch`: the daemon serves another workspace (`body.boundWorkspace`). */
export class WorkspaceMismatchError extends AcpdError {
  override name = 'WorkspaceMismatchError';
}
/** 400 `invalid_option_id`: the vote named an option the agent did not offer. */
export class InvalidOptionError extends AcpdError {
  override name = 'InvalidOptionError';
}
/** 409 `restore_in_progress`: the other restore action runs for this id; retry after `retryAfter` s. */
export class RestoreInProgressError extends AcpdError {
  override name = 'RestoreInProgressError';
}
/** 409 `idempotency_key_interrupted` or 422 `idempotency_key_mismatch`: the key cannot be reused. */
export class IdempotencyKeyError extends AcpdError {
  override name = 'IdempotencyKeyError';
}
/** 429 `rate_limited`. */
export class RateLimitedError extends AcpdError {
  override name = 'RateLimitedError';
}
/** 429 `subscriber_limit_exceeded`: the session has as many event streams as it takes. */
export class SubscriberLimitExceededError extends AcpdError {
  override name = 'SubscriberLimitExceededError';
}
/** 503 `session_limit_exceeded`: --max-sessions sessions are live. */
export class SessionLimitExceededError extends AcpdError {
  override name = 'SessionLimitExceededError';
}
/** 503 `prompt_queue_full`. */
export class PromptQueueFullError extends AcpdError {
  override name = 'PromptQueueFullError';
}
/** 503 for a daemon that cannot take work now: `draining`, `agent_unavailable`, `overloaded`, … */
export class UnavailableError extends AcpdError {
  override name = 'UnavailableError';
}

type ErrorClass = new (...args: ConstructorParameters<typeof AcpdError>) => AcpdError;

/** The envelope's `code` → its class. */
const BY_CODE: Record<string, ErrorClass> = {
  session_not_found: SessionNotFoundError,
  pending_prompt_not_found: PendingPromptNotFoundError,
  workspace_mismatch: WorkspaceMismatchError,
  invalid_option_id: InvalidOptionError,
  restore_in_progress: RestoreInProgressError,
  idempotency_key_interrupted: IdempotencyKeyError,
  idempotency_key_mismatch: IdempotencyKeyError,
  rate_limited: RateLimitedError,
  subscriber_limit_exceeded: SubscriberLimitExceededError,
  session_limit_exceeded: SessionLimitExceededError,
  prompt_queue_full: PromptQueueFullError,
  draining: UnavailableError,
  agent_unavailable: UnavailableError,
  overloaded: UnavailableError,
  connection_limit: UnavailableError,
  redis_unavailable: UnavailableError,
  session_owner_unavailable: UnavailableError,
};

/** The class of an answer without a known code, by its status and the field it names. */
function byStatus(status: number, body: ErrorBody | undefined): ErrorClass {
  if (status === 401) return UnauthorizedError;
  if (status === 403) return ForbiddenError;
  if (status === 404 && body?.requestId !== undefined) return PermissionNotFoundError;
  if (status === 404 && body?.sessionId !== undefined) return SessionNotFoundError;
  if (status === 503) return UnavailableError;
  return AcpdError;
}

function isErrorBody(value: unknown): value is ErrorBody {
  return typeof value === 'object' && value !== null && typeof (value as { error?: unknown }).error === 'string';
}

/** `Retry-After` in seconds: a delay, or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(header: string | null, now = Date.now()): number | undefined {
  if (header === null || header.trim() === '') return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim());
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - now) / 1000));
}

/** The typed error for an error answer (its body already read). */
export function errorFromAnswer(status: number, body: unknown, retryAfter: number | undefined): AcpdError {
  const envelope = isErrorBody(body) ? body : undefined;
  const code = envelope?.code;
  const Class = (typeof code === 'string' ? BY_CODE[code] : undefined) ?? byStatus(status, envelope);
  return new Class(status, code, envelope, retryAfter);
}
