/** Schemas of the session routes. */
import { Type, type TSchema } from '@sinclair/typebox';
import type { ContentBlock as ContentBlockType } from '@agentclientprotocol/sdk';
import { commonErrors, Cwd, ErrorRef, Opaque, SessionHandle, SessionIdParams } from './common.js';

const SCOPE_MESSAGE = '`sessionScope` must be "single" or "thread" when provided';

const CreateSessionBody = Type.Object({
  cwd: Type.Optional(Cwd),
  modelServiceId: Type.Optional(Type.Unknown()),
  sessionScope: Type.Optional(
    Type.Unsafe<'single' | 'thread'>({
      type: 'string',
      enum: ['single', 'thread'],
      errorMessage: SCOPE_MESSAGE,
      errorCode: 'invalid_session_scope',
    }),
  ),
});

export const createSession = {
  summary: 'Create a session, or attach to the shared one',
  body: CreateSessionBody,
  response: { 200: SessionHandle, 404: ErrorRef, 503: ErrorRef, ...commonErrors },
};

const RestoreBody = Type.Object({ cwd: Type.Optional(Cwd) });

export const restoreSession = {
  summary: 'Restore a persisted session by id',
  params: SessionIdParams,
  body: RestoreBody,
  response: {
    200: Type.Object({
      sessionId: Type.String(),
      workspaceCwd: Type.String(),
      attached: Type.Boolean(),
      state: Opaque,
    }),
    404: ErrorRef,
    409: ErrorRef,
    503: ErrorRef,
    ...commonErrors,
  },
};

export const listSessions = {
  summary: 'List the live sessions of the workspace',
  params: Type.Object({
    id: Type.String({ pattern: '^/', errorMessage: '`:id` must decode to an absolute workspace path' }),
  }),
  response: {
    200: Type.Object({
      sessions: Type.Array(Type.Object({ sessionId: Type.String(), workspaceCwd: Type.String() })),
    }),
    ...commonErrors,
  },
};

const PROMPT_MESSAGE = '`prompt` is required and must be a non-empty array of content blocks';
const BLOCK_MESSAGE = 'each `prompt` element must be an object (content block)';
const BLOCK_TYPES = ['text', 'image', 'audio', 'resource_link', 'resource'] as const;
const BLOCK_TYPE_MESSAGE = `each \`prompt\` element needs a \`type\`: one of ${BLOCK_TYPES.join(', ')}`;

/** A string field an ACP content block requires; the message names the block and the field. */
function requiredText(block: string, field: string) {
  return Type.String({ errorMessage: `a "${block}" content block needs \`${field}\` as a string` });
}

/**
 * One ACP content block (schema v1), checked as agents check it: the
 * discriminating `type` and the fields each kind requires. Optional fields
 * (annotations, _meta, uri, size…) and unknown extra fields pass through
 * unchecked, since agents drop the ones they cannot read.
 */
function contentBlock(type: (typeof BLOCK_TYPES)[number], fields: Record<string, TSchema>, required: string[]) {
  return Type.Object(
    { type: Type.Literal(type), ...fields },
    { additionalProperties: true, required: ['type', ...required] },
  );
}

const ResourceContents = Type.Union(
  [
    Type.Object({ uri: Type.String(), text: Type.String() }, { additionalProperties: true }),
    Type.Object({ uri: Type.String(), blob: Type.String() }, { additionalProperties: true }),
  ],
  { errorMessage: 'a "resource" content block needs `resource` with a string `uri` and a string `text` or `blob`' },
);

/**
 * Ajv's `discriminator` picks the one branch named by `type`, so an error is
 * reported against that branch alone rather than against all five.
 */
const ContentBlock = Type.Unsafe<ContentBlockType>({
  type: 'object',
  required: ['type'],
  discriminator: { propertyName: 'type' },
  oneOf: [
    contentBlock('text', { text: requiredText('text', 'text') }, ['text']),
    contentBlock('image', { data: requiredText('image', 'data'), mimeType: requiredText('image', 'mimeType') }, [
      'data',
      'mimeType',
    ]),
    contentBlock('audio', { data: requiredText('audio', 'data'), mimeType: requiredText('audio', 'mimeType') }, [
      'data',
      'mimeType',
    ]),
    contentBlock(
      'resource_link',
      { uri: requiredText('resource_link', 'uri'), name: requiredText('resource_link', 'name') },
      ['uri', 'name'],
    ),
    contentBlock('resource', { resource: ResourceContents }, ['resource']),
  ],
  errorMessage: { type: BLOCK_MESSAGE, discriminator: BLOCK_TYPE_MESSAGE, required: BLOCK_TYPE_MESSAGE },
});

const PromptBody = Type.Object(
  {
    prompt: Type.Array(ContentBlock, { minItems: 1, errorMessage: PROMPT_MESSAGE }),
  },
  { additionalProperties: true },
);

export const promptSession = {
  summary: "Send a prompt; answers with the agent's PromptResponse when the turn ends",
  params: SessionIdParams,
  body: PromptBody,
  response: {
    200: Type.Object({ stopReason: Type.String() }, { additionalProperties: true }),
    404: ErrorRef,
    ...commonErrors,
  },
};

export const cancelSession = {
  summary: 'Cancel the active prompt',
  params: SessionIdParams,
  body: Type.Object({}, { additionalProperties: true }),
  response: { 204: Type.Null(), 404: ErrorRef, ...commonErrors },
};

const SetModelBody = Type.Object(
  {
    modelId: Type.String({ minLength: 1, errorMessage: '`modelId` is required and must be a non-empty string' }),
  },
  { additionalProperties: true },
);

export const setModel = {
  summary: "Switch the session's model",
  params: SessionIdParams,
  body: SetModelBody,
  response: { 200: Opaque, 404: ErrorRef, ...commonErrors },
};

export const sessionEvents = {
  summary: "Follow the session's events (Server-Sent Events); `Last-Event-ID` replays from the ring",
  params: SessionIdParams,
  headers: Type.Object({ 'last-event-id': Type.Optional(Type.String()) }),
  response: { 404: ErrorRef, 429: ErrorRef, ...commonErrors },
};
