/**
 * Shared schema pieces. Request schemas carry the contract's exact 400 text
 * in an `errorMessage` annotation (and an `errorCode` where the contract has
 * one); app.ts turns the first failing keyword into that envelope.
 */
import { Type } from '@sinclair/typebox';

export const ErrorEnvelope = Type.Object(
  {
    error: Type.String(),
    // A wire code ("workspace_mismatch"), a JSON-RPC code forwarded from the
    // agent (-32602), or a Node system error code ("ENOENT"): kept as sent.
    code: Type.Optional(Type.Union([Type.String(), Type.Number()])),
  },
  {
    additionalProperties: true,
    $id: 'ErrorEnvelope',
    description: 'Every error body: `error` and, where the contract has one, `code` and context fields.',
  },
);

export const ErrorRef = Type.Ref('ErrorEnvelope');

/** Responses every route can give, besides its own. */
export const commonErrors = {
  400: ErrorRef,
  401: ErrorRef,
  403: ErrorRef,
  413: ErrorRef,
  500: ErrorRef,
};

const CWD_MESSAGES = {
  type: '`cwd` must be a string absolute path when provided',
  length: '`cwd` exceeds the 4096-character limit',
  absolute: '`cwd` must be an absolute path when provided',
};

/**
 * `cwd`: absent → the bound workspace; present → a string, at most 4096
 * characters, absolute (checked in that order, as ajv checks type, then
 * maxLength, then pattern).
 */
export const Cwd = Type.String({
  maxLength: 4096,
  pattern: '^/',
  errorMessage: { type: CWD_MESSAGES.type, maxLength: CWD_MESSAGES.length, pattern: CWD_MESSAGES.absolute },
});

/**
 * A session id as agents issue them: UUIDs and other tokens of letters,
 * digits and `. _ : @ + = ~ -`, at most 256 characters, never `.` or `..`.
 * ACP itself allows any string, but an id reaches the agent, and agents
 * that keep sessions in files name them after it: nothing that could be a
 * path separator or a dot-segment may pass.
 */
const SessionId = Type.String({
  pattern: '^(?!\\.{1,2}$)[A-Za-z0-9._:@+=~-]{1,256}$',
  errorMessage: {
    pattern:
      '`:id` is not a session id: letters, digits and . _ : @ + = ~ - only, at most 256 characters, not "." or ".."',
  },
  errorCode: 'invalid_session_id',
});

export const SessionIdParams = Type.Object({ id: SessionId });

export const SessionHandle = Type.Object({
  sessionId: Type.String(),
  workspaceCwd: Type.String(),
  attached: Type.Boolean(),
});

/** An agent's answer passed through untouched. */
export const Opaque = Type.Object({}, { additionalProperties: true });
