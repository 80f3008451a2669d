/**
 * Every reason acpd answers with an error, named once with its status and
 * the sentence the API document gives it, and the response schemas built
 * from them. A route's schema lists the reasons of its own (`errors(...)`);
 * the reasons every guarded route shares (the token, the Origin and Host
 * checks, the rate limits, load shedding, the connection cap) follow from
 * the route's policy and are added by plugins/openapi.ts (`guardErrors`), so
 * the document says exactly what the guards do.
 */
import { Type } from '@sinclair/typebox';
import { RETRY_AFTER_SECONDS } from '../errors.js';
import { mutates, type RoutePolicy } from '../plugins/route-policy.js';

export type ErrorStatus = 400 | 401 | 403 | 404 | 409 | 413 | 422 | 429 | 500 | 503;

export interface ErrorCause {
  readonly status: ErrorStatus;
  /** One line of the response's description: when it happens, and the `code` it carries. */
  readonly when: string;
  /** Whether the answer carries `Retry-After`. */
  readonly retryAfter?: boolean;
}

/** The reasons, by name. */
export const causes = {
  invalidRequest: {
    status: 400,
    when: 'The path, query, headers or JSON body break a rule of this route; `error` names it (`code` is `invalid_session_id` or `invalid_session_scope` for those checks).',
  },
  invalidBody: {
    status: 400,
    when: 'The body is not JSON (`Invalid JSON in request body`), or nests deeper than --max-body-depth (`code` `body_too_deep`).',
  },
  workspaceMismatch: {
    status: 400,
    when: '`code` `workspace_mismatch`: the workspace asked for is not the one this daemon serves (`boundWorkspace`, `requestedWorkspace`).',
  },
  invalidListQuery: {
    status: 400,
    when: '`code` `invalid_cursor`: `cursor` is not a `nextCursor` acpd gave; `invalid_page_size` or `invalid_archive_state` for those parameters.',
  },
  agentRefusedParams: {
    status: 400,
    when: "The agent refused the request's parameters: `code` -32602 (JSON-RPC invalid params) and the agent's `data`.",
  },
  invalidOption: {
    status: 400,
    when: '`code` `invalid_option_id`: `optionId` is not one of the options the agent offered (`requestId`, `optionId`).',
  },
  unauthorized: {
    status: 401,
    when: 'A token is configured and `Authorization: Bearer <token>` is missing or wrong (`Unauthorized`).',
  },
  forbidden: {
    status: 403,
    when: "An `Origin` that is neither the daemon's own origin nor listed in --allow-origin (`Request denied by CORS policy`); on a loopback bind, a `Host` outside the allowlist (`Invalid Host header`).",
  },
  tokenExpired: {
    status: 401,
    when: '`code` `token_expired`: the token is one of a --tokens-file user whose `expires` has passed.',
  },
  insufficientScope: {
    status: 403,
    when: "`code` `insufficient_scope`: the token's user (--tokens-file) lacks the scope this route needs (`scope`, `user`).",
  },
  clientIdTaken: {
    status: 403,
    when: '`code` `client_id_taken`: the `X-Qwen-Client-Id` (or the /acp connection) was first used by another user (`clientId`).',
  },
  voteNotAllowed: {
    status: 403,
    when: '`code` `vote_not_allowed`: --permission-policy does not count this vote (`policy`, `requestId`): under `designated` the voter did not send the prompt, under `local-only` it is not on loopback.',
  },
  voteAlreadyCast: {
    status: 403,
    when: '`code` `vote_already_cast`: under `consensus`, this user voted on the request already, from whichever client (`user`, `requestId`).',
  },
  sessionNotFound: {
    status: 404,
    when: 'No live session has this id (`sessionId`).',
  },
  sessionGone: {
    status: 404,
    when: '`code` `session_not_found`: no live session has this id, or it was closed already (`sessionId`).',
  },
  persistedNotFound: {
    status: 404,
    when: 'The agent has no stored session with this id (`sessionId`), or it died while the session was being started.',
  },
  pendingPromptNotFound: {
    status: 404,
    when: '`code` `pending_prompt_not_found`: no running or queued prompt of the session has this id (`sessionId`, `promptId`).',
  },
  permissionNotFound: {
    status: 404,
    when: 'No pending permission request has this id: unknown, already answered, timed out or cancelled (`requestId`).',
  },
  restoreInProgress: {
    status: 409,
    when: '`code` `restore_in_progress`: the other restore action is under way for this id (`activeAction`, `requestedAction`).',
    retryAfter: true,
  },
  invalidIdempotencyKey: {
    status: 400,
    when: '`code` `invalid_idempotency_key`: the `Idempotency-Key` header is not 1 to 255 printable ASCII characters.',
  },
  idempotencyKeyMismatch: {
    status: 422,
    when: '`code` `idempotency_key_mismatch`: this `Idempotency-Key` was used for another request (method, path or body).',
  },
  idempotencyKeyInterrupted: {
    status: 409,
    when: '`code` `idempotency_key_interrupted`: with --redis-url, the request first sent with this `Idempotency-Key` was running on a node that stopped before it answered; it is not run again (check the state, then use a new key).',
    // No Retry-After: waiting will not help.
  },
  bodyTooLarge: {
    status: 413,
    when: 'The body is larger than --max-body-bytes.',
  },
  subscriberLimit: {
    status: 429,
    when: '`code` `subscriber_limit_exceeded`: the session has as many event streams as it takes (`limit`).',
    retryAfter: true,
  },
  rateLimited: {
    status: 429,
    when: "`code` `rate_limited`: the client spent this route's budget for the minute (`budget`); only when --rate-limit-* sets one.",
    retryAfter: true,
  },
  sessionLimit: {
    status: 503,
    when: '`code` `session_limit_exceeded`: --max-sessions sessions are live (`limit`).',
    retryAfter: true,
  },
  promptQueueFull: {
    status: 503,
    when: '`code` `prompt_queue_full`: --max-pending-prompts prompts wait in the session already (`sessionId`, `limit`, `pendingCount`).',
    retryAfter: true,
  },
  draining: {
    status: 503,
    when: '`code` `draining`: the daemon is shutting down and takes no new work.',
    retryAfter: true,
  },
  agentUnavailable: {
    status: 503,
    when: '`code` `agent_unavailable`: the agent cannot be started or keeps failing.',
    retryAfter: true,
  },
  overloaded: {
    status: 503,
    when: '`code` `overloaded`: the daemon is shedding load (event-loop delay or memory past its limit; `reason`).',
    retryAfter: true,
  },
  redisUnavailable: {
    status: 503,
    when: "`code` `redis_unavailable`: with --redis-url, the cluster's Redis cannot be reached.",
    retryAfter: true,
  },
  connectionLimit: {
    status: 503,
    when: '`code` `connection_limit`: the request came on a connection past --max-connections (`limit`).',
    retryAfter: true,
  },
  sessionOwnerUnavailable: {
    status: 503,
    when: '`code` `session_owner_unavailable`: with --redis-url, the node that runs the session cannot be reached (`node`); another takes it over once the lease expires.',
    retryAfter: true,
  },
  fsRefused: {
    status: 400,
    when: '`errorKind` (and `code`) `path_outside_workspace`, `symlink_escape` (a symlink, or a symlinked parent, leads out), or `parse_error` (a directory, device, FIFO or socket where a file was wanted; a bad cursor or pattern).',
  },
  fsDenied: {
    status: 403,
    when: "`errorKind` `permission_denied`: the OS refused, or the write aims at acpd's data directory or `.git`.",
  },
  fsWritesDisabled: {
    status: 403,
    when: '`errorKind` `file_writes_disabled`: acpd runs without --allow-file-writes.',
  },
  fsNotFound: {
    status: 404,
    when: '`errorKind` `path_not_found`.',
  },
  fsConflict: {
    status: 409,
    when: '`errorKind` `hash_mismatch` (the file changed since `expectedHash` was read: `currentHash` is its hash now; or a cursor no longer matches the file) or `file_already_exists` (`mode: create`).',
    // No Retry-After: the client re-reads the file instead of waiting.
  },
  fsTooLarge: {
    status: 413,
    when: '`errorKind` `file_too_large`: past the read, write or upload cap.',
  },
  fsUnprocessable: {
    status: 422,
    when: '`errorKind` `binary_file`, `text_not_found` or `ambiguous_text_match` (`oldText` occurs more than once).',
  },
  fsIo: {
    status: 503,
    when: '`errorKind` `io_error`: the disk failed, is full, or too many files are open.',
  },
  gitInvalidSha: {
    status: 400,
    when: '`errorKind` (and `code`) `parse_error`: `sha` is missing or not 7 to 40 hex digits.',
  },
  gitNotRepository: {
    status: 404,
    when: "`error` (and `code`) `not_a_git_repository`: the workspace is not in a git repository; `message` is git's, its paths redacted.",
  },
  internal: {
    status: 500,
    when: 'The agent failed, timed out or went away, or acpd failed; a JSON-RPC error keeps its `code` and `data`.',
  },
} as const satisfies Record<string, ErrorCause>;

export type CauseName = keyof typeof causes;

const RetryAfter = Type.Integer({
  minimum: 1,
  description: `Seconds to wait before retrying (${RETRY_AFTER_SECONDS} unless a rate limit says otherwise).`,
});

/** A bullet of a response description; `mergeErrorResponse` recognises its own by this text. */
function bullet(cause: ErrorCause): string {
  return `- ${cause.when}`;
}

/**
 * The response for one status: the ErrorEnvelope as JSON, a description
 * listing every reason, and `Retry-After` when one of them sends it. In
 * Fastify's `content` form, which both the serializer and @fastify/swagger read.
 */
export interface ErrorResponse {
  description: string;
  headers?: { 'retry-after': typeof RetryAfter };
  content: { 'application/json': { schema: { $ref: 'ErrorEnvelope' } } };
}

export function errorResponse(list: readonly ErrorCause[]): ErrorResponse {
  const response: ErrorResponse = {
    description: list.map(bullet).join('\n'),
    content: { 'application/json': { schema: { $ref: 'ErrorEnvelope' } } },
  };
  if (list.some((cause) => cause.retryAfter === true)) response.headers = { 'retry-after': RetryAfter };
  return response;
}

/** The error responses of these reasons, one per status. */
export function errors(...names: CauseName[]): Partial<Record<ErrorStatus, ErrorResponse>> {
  const byStatus = new Map<ErrorStatus, ErrorCause[]>();
  for (const name of names) {
    const cause: ErrorCause = causes[name];
    byStatus.set(cause.status, [...(byStatus.get(cause.status) ?? []), cause]);
  }
  return Object.fromEntries([...byStatus].map(([status, list]) => [status, errorResponse(list)]));
}

export function isErrorResponse(value: unknown): value is ErrorResponse {
  if (typeof value !== 'object' || value === null) return false;
  const { description, content } = value as Partial<ErrorResponse>;
  return typeof description === 'string' && content?.['application/json']?.schema?.$ref === 'ErrorEnvelope';
}

/** `declared` with the reasons of `extra` it does not list yet; the same object when it lists them all. */
export function mergeErrorResponse(declared: ErrorResponse, extra: readonly ErrorCause[]): ErrorResponse {
  const lines = declared.description.split('\n');
  const missing = extra.filter((cause) => !lines.includes(bullet(cause)));
  if (missing.length === 0) return declared;
  const merged: ErrorResponse = {
    ...declared,
    description: [...lines, ...missing.map(bullet)].join('\n'),
  };
  if (missing.some((cause) => cause.retryAfter === true)) merged.headers = { 'retry-after': RetryAfter };
  return merged;
}

/** What a route's own schema accepts: whether it can answer 400 or 413 whatever its handler does. */
export interface RouteInput {
  /** It reads a body (not GET/HEAD: Fastify reads no body there). */
  readonly body: boolean;
  /** It validates a body, params, querystring or headers. */
  readonly validated: boolean;
}

/**
 * The reasons every request to a route may meet before its handler runs,
 * from its policy and its input. `tokenChecked` is false for a probe that
 * is public on a loopback bind.
 */
export function guardErrors(policy: RoutePolicy, input: RouteInput, tokenChecked: boolean): ErrorCause[] {
  const list: ErrorCause[] = [causes.forbidden, causes.internal];
  if (tokenChecked) list.push(causes.unauthorized, causes.tokenExpired, causes.clientIdTaken);
  if (tokenChecked && policy.scope !== undefined) list.push(causes.insufficientScope);
  if (input.validated) list.push(causes.invalidRequest);
  if (input.body) list.push(causes.invalidBody, causes.bodyTooLarge);
  if (mutates(policy))
    list.push(causes.invalidIdempotencyKey, causes.idempotencyKeyMismatch, causes.idempotencyKeyInterrupted);
  if (policy.budget !== 'none') list.push(causes.rateLimited);
  if (policy.shed) list.push(causes.overloaded);
  // A cluster node may meet these on any route it does not answer alone.
  if (!policy.probe) list.push(causes.connectionLimit, causes.redisUnavailable, causes.sessionOwnerUnavailable);
  return list;
}
