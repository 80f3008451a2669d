/** Schemas of the session routes. */
import { Type, type Static } from '@sinclair/typebox';
import { commonErrors, Cwd, ErrorRef, Opaque, SessionHandle, SessionIdParams } from './common.js';

const SCOPE_MESSAGE = '`sessionScope` must be "single" or "thread" when provided';

export const CreateSessionBody = Type.Object({
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
export type CreateSessionBody = Static<typeof CreateSessionBody>;

export const createSession = {
  summary: 'Create a session, or attach to the shared one',
  body: CreateSessionBody,
  response: { 200: SessionHandle, 404: ErrorRef, 503: ErrorRef, ...commonErrors },
};

export const RestoreBody = Type.Object({ cwd: Type.Optional(Cwd) });

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

export const PromptBody = Type.Object(
  {
    prompt: Type.Array(Type.Object({}, { additionalProperties: true, errorMessage: BLOCK_MESSAGE }), {
      minItems: 1,
      errorMessage: PROMPT_MESSAGE,
    }),
  },
  { additionalProperties: true },
);
export type PromptBody = Static<typeof PromptBody>;

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

export const SetModelBody = Type.Object(
  {
    modelId: Type.String({ minLength: 1, errorMessage: '`modelId` is required and must be a non-empty string' }),
  },
  { additionalProperties: true },
);
export type SetModelBody = Static<typeof SetModelBody>;

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
