/**
 * Shared schema pieces. Request schemas carry the contract's exact 400 text
 * in an `errorMessage` annotation (and an `errorCode` where the contract has
 * one); app.ts turns the first failing keyword into that envelope.
 */
import { Type, type SchemaOptions, type Static, type TSchema, type TUnsafe } from '@sinclair/typebox';

/**
 * A reference to a shared schema (one with an `$id`, added with addSchema),
 * typed as the schema it names. The API document shows it as a component.
 */
export function refTo<T extends TSchema>(schema: T, options?: SchemaOptions): TUnsafe<Static<T>> {
  if (schema.$id === undefined) throw new Error('refTo: the schema has no $id');
  return Type.Unsafe<Static<T>>(Type.Ref(schema.$id, options));
}

export const ErrorEnvelope = Type.Object(
  {
    error: Type.String({ description: 'What went wrong, in words.' }),
    // A wire code ("workspace_mismatch"), a JSON-RPC code forwarded from the
    // agent (-32602), or a Node system error code ("ENOENT"): kept as sent.
    code: Type.Optional(
      Type.Union([Type.String(), Type.Number()], {
        description:
          'A stable code where there is one (`workspace_mismatch`, `session_limit_exceeded`, …), or the JSON-RPC code of an agent error.',
      }),
    ),
    // Context fields, each present only with the codes that carry it.
    sessionId: Type.Optional(Type.String({ description: 'The session the error is about.' })),
    requestId: Type.Optional(Type.String({ description: 'The permission request the error is about.' })),
    optionId: Type.Optional(Type.String({ description: 'The option that was not offered (`invalid_option_id`).' })),
    limit: Type.Optional(Type.Number({ description: 'The limit that was reached.' })),
    pendingCount: Type.Optional(
      Type.Integer({ description: 'How many prompts wait in the session (`prompt_queue_full`).' }),
    ),
    promptId: Type.Optional(
      Type.String({ description: 'The prompt the error is about (`pending_prompt_not_found`).' }),
    ),
    budget: Type.Optional(Type.String({ description: 'The rate budget that is spent (`rate_limited`).' })),
    reason: Type.Optional(Type.String({ description: 'What is overloaded (`overloaded`).' })),
    boundWorkspace: Type.Optional(Type.String({ description: 'The workspace this daemon serves.' })),
    requestedWorkspace: Type.Optional(Type.String({ description: 'The workspace the request asked for.' })),
    activeAction: Type.Optional(
      Type.Union([Type.Literal('load'), Type.Literal('resume')], { description: 'The restore under way.' }),
    ),
    requestedAction: Type.Optional(
      Type.Union([Type.Literal('load'), Type.Literal('resume')], { description: 'The restore that was refused.' }),
    ),
    data: Type.Optional(Type.Unknown({ description: "The agent's JSON-RPC error data." })),
  },
  {
    additionalProperties: true,
    $id: 'ErrorEnvelope',
    description: 'Every error body: `error` and, where the contract has one, `code` and context fields.',
  },
);

/** Printable ASCII, 1 to 255 characters. */
export const IDEMPOTENCY_KEY_PATTERN = '^[\\x20-\\x7E]{1,255}$';

/**
 * The `Idempotency-Key` request header, which every route that changes state
 * takes (plugins/idempotency.ts adds it to their schemas, so it is validated
 * and documented once for all of them).
 */
export const IdempotencyKeyHeaders = Type.Object({
  'idempotency-key': Type.Optional(
    Type.String({
      pattern: IDEMPOTENCY_KEY_PATTERN,
      description:
        'Makes a retry safe: the first answer (status, body, `Content-Type`, `Retry-After`, `Preference-Applied`) to a request with this key is kept for --idempotency-ttl seconds, and a retry with the same key, method, path and body gets it again, with `Idempotent-Replayed: true`, without the work being done twice (also across a restart with --event-log sqlite). A retry while the first is still running waits for its answer. The same key with another method, path or body is a 422 `idempotency_key_mismatch`. 5xx, 408, 409, 425 and 429 answers are not kept. 1 to 255 printable ASCII characters.',
      errorMessage: 'Idempotency-Key must be 1 to 255 printable ASCII characters',
      errorCode: 'invalid_idempotency_key',
    }),
  ),
});

export const CWD_MESSAGES = {
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
  description: 'An absolute path: the workspace to work in (at most 4096 characters). The bound workspace when absent.',
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
export const SessionId = Type.String({
  description: 'The session id, as `POST /session` or a restore answered it.',
  pattern: '^(?!\\.{1,2}$)[A-Za-z0-9._:@+=~-]{1,256}$',
  errorMessage: {
    pattern:
      '`:id` is not a session id: letters, digits and . _ : @ + = ~ - only, at most 256 characters, not "." or ".."',
  },
  errorCode: 'invalid_session_id',
});

export const SessionIdParams = Type.Object({ id: SessionId });

export const SessionHandle = Type.Object(
  {
    sessionId: Type.String({ description: 'The session, for every later call.' }),
    workspaceCwd: Type.String({ description: 'The canonical workspace it runs in.' }),
    attached: Type.Boolean({ description: 'Whether this joined a session that was already live.' }),
  },
  { description: 'The session the request created, restored or joined.' },
);
