/** Schemas of the session routes. */
import { Type, type Static } from '@sinclair/typebox';
import {
  ContentBlock,
  PermissionOption,
  PromptResponse,
  SessionNotification,
  SessionState,
  SetModelResponse,
  ToolCallUpdate,
} from './acp.js';
import { Cwd, refTo, SessionHandle, SessionIdParams } from './common.js';
import { errors } from './errors.js';

const SCOPE_MESSAGE = '`sessionScope` must be "single" or "thread" when provided';

/** How long a display name gets, in characters. */
export const DISPLAY_NAME_MAX = 100;

export const CreateSessionBody = Type.Object(
  {
    cwd: Type.Optional(Cwd),
    modelServiceId: Type.Optional(
      Type.Unknown({
        description:
          'A model to switch the session to once it runs (a string; anything else is ignored). A failed switch is a `model_switch_failed` event, not an error.',
      }),
    ),
    sessionScope: Type.Optional(
      Type.Unsafe<'single' | 'thread'>({
        type: 'string',
        enum: ['single', 'thread'],
        description:
          "`single`: join the workspace's shared session when there is one; `thread`: always a new session. The daemon's default when absent.",
        errorMessage: SCOPE_MESSAGE,
        errorCode: 'invalid_session_scope',
      }),
    ),
  },
  { description: 'Every field is optional; the body may be absent.' },
);
export type CreateSessionBody = Static<typeof CreateSessionBody>;

export const createSession = {
  operationId: 'createSession',
  tags: ['sessions'],
  summary: 'Create a session, or attach to the shared one',
  description:
    "Starts the agent if needed and opens an ACP session in the workspace, or (scope `single`) joins the workspace's live shared session. A client that leaves before the answer releases the session it would have got.",
  body: CreateSessionBody,
  response: {
    200: SessionHandle,
    ...errors('workspaceMismatch', 'persistedNotFound', 'sessionLimit', 'draining', 'agentUnavailable'),
  },
};

export const RestoreBody = Type.Object(
  { cwd: Type.Optional(Cwd) },
  { description: 'Optional; the body may be absent. A `sessionId` here is ignored: the path names the session.' },
);

/** An ISO 8601 time (as the qwen daemon sends them); no `format`, which no validator here checks. */
const Timestamp = (description: string) => Type.String({ description: `${description} ISO 8601.` });

/** The answer of a load or resume: v1's four fields, then the qwen daemon's later additions (all optional). */
function restoredSession(load: boolean) {
  return Type.Object(
    {
      sessionId: Type.String({ description: 'The session (the id in the path).' }),
      workspaceCwd: Type.String({ description: 'The canonical workspace it runs in.' }),
      attached: Type.Boolean({
        description: 'Whether it was already live (the state is then the one cached at its restore).',
      }),
      state: refTo(SessionState),
      clientId: Type.Optional(
        Type.String({ description: 'The `X-Qwen-Client-Id` request header when one was sent, else a fresh UUID.' }),
      ),
      createdAt: Type.Optional(Timestamp('When the session was first created or restored on this daemon.')),
      hasActivePrompt: Type.Optional(
        Type.Boolean({ description: 'A prompt turn is running (only ever true when the session was live already).' }),
      ),
      lastEventId: Type.Optional(
        Type.Integer({
          minimum: 0,
          description: "The newest id on the session's event stream once the restore is done (0: none yet).",
        }),
      ),
      eventEpoch: Type.Optional(
        Type.String({ description: "The epoch of the session's event log: a cursor is meaningful within it." }),
      ),
      ...(load
        ? {
            compactedReplay: Type.Optional(
              Type.Array(
                Type.Object(
                  {
                    v: Type.Literal(1),
                    type: Type.Literal('session_update'),
                    data: refTo(SessionNotification),
                  },
                  { description: 'A `session_update` envelope without an id.' },
                ),
                {
                  description:
                    "The history the agent replayed, in order, each run of consecutive text chunks of one kind (agent_message_chunk, user_message_chunk, agent_thought_chunk) merged into one update. Empty when the session was live already. When the session's durable log holds events already, the replay is only here, not on the event stream (the log has it).",
                },
              ),
            ),
          }
        : {}),
    },
    { description: 'The restored (or already live) session, with the state the agent restored.' },
  );
}

/** The schema of `POST /session/:id/load` or `/resume`. */
function restoreSession(action: 'load' | 'resume') {
  const load = action === 'load';
  return {
    operationId: load ? 'loadSession' : 'resumeSession',
    tags: ['sessions'],
    summary: load
      ? 'Restore a stored session by id, replaying its history as events'
      : 'Restore a stored session by id, without replaying its history',
    description: load
      ? "ACP `session/load`: the agent replays the session's history before this answers; it comes back merged in `compactedReplay`, and as `session_update` events on the stream when the session's event log was empty (subscribe with `Last-Event-ID: 0` to read them). Joins the session if it is already live."
      : 'ACP `session/resume` (unstable): the agent restores the context without replaying it. Joins the session if it is already live.',
    params: SessionIdParams,
    body: RestoreBody,
    response: {
      200: restoredSession(load),
      ...errors(
        'workspaceMismatch',
        'persistedNotFound',
        'restoreInProgress',
        'sessionLimit',
        'draining',
        'agentUnavailable',
      ),
    },
  };
}

/** The restore routes' schemas, by action. */
export const loadSession = restoreSession('load');
export const resumeSession = restoreSession('resume');
export const restoreSchemas = { load: loadSession, resume: resumeSession };

/** The largest page of the session catalog (the published client never asks for more). */
export const MAX_CATALOG_PAGE = 1000;
/** A page's size when the request names none: every live session of a default daemon (20) fits. */
export const DEFAULT_CATALOG_PAGE = 100;

const SIZE_MESSAGE = `\`size\` must be an integer from 1 to ${MAX_CATALOG_PAGE}`;

export const ListSessionsQuery = Type.Object(
  {
    size: Type.Optional(
      Type.String({
        pattern: '^(?:[1-9][0-9]{0,2}|1000)$',
        description: `Sessions per page, 1 to ${MAX_CATALOG_PAGE} (${DEFAULT_CATALOG_PAGE} when absent).`,
        errorMessage: SIZE_MESSAGE,
        errorCode: 'invalid_page_size',
      }),
    ),
    cursor: Type.Optional(
      Type.String({
        description:
          'The `nextCursor` of the previous page, as it was given (opaque). Empty or absent: the first page. One that acpd did not make is a 400 `invalid_cursor`.',
        errorMessage: '`cursor` must be a single value',
        errorCode: 'invalid_cursor',
      }),
    ),
    archiveState: Type.Optional(
      Type.Unsafe<'active' | 'archived'>({
        type: 'string',
        enum: ['active', 'archived'],
        description: 'acpd archives nothing: `active` (the default) lists every session, `archived` none.',
        errorMessage: '`archiveState` must be "active" or "archived"',
        errorCode: 'invalid_archive_state',
      }),
    ),
  },
  {
    additionalProperties: true,
    description: "Other parameters (the qwen daemon's `view`, `group`, `sourceType`…) are ignored.",
  },
);
export type ListSessionsQuery = Static<typeof ListSessionsQuery>;

export const SessionSummary = Type.Object(
  {
    sessionId: Type.String({ description: 'The session.' }),
    workspaceCwd: Type.String({ description: 'The canonical workspace it ran in.' }),
    createdAt: Timestamp('When it was first created or restored on this daemon.'),
    updatedAt: Timestamp('When it last became live, started a prompt or ended.'),
    displayName: Type.Optional(
      Type.String({
        description: `The text of its first prompt, whitespace collapsed, at most ${DISPLAY_NAME_MAX} characters. Absent until a prompt with text.`,
      }),
    ),
    clientCount: Type.Integer({ minimum: 0, description: 'Its open event streams; 0 when it is not live.' }),
    hasActivePrompt: Type.Boolean({ description: 'A prompt turn is running (never when it is not live).' }),
    isArchived: Type.Boolean({ description: 'Always false: acpd archives nothing.' }),
    isLive: Type.Boolean({
      description:
        "acpd's own: the session runs on this daemon now. One that is not can be loaded or resumed (`POST /session/{id}/load`).",
    }),
  },
  { description: 'A session of the workspace, live or remembered from before.' },
);
export type SessionSummary = Static<typeof SessionSummary>;

export const SessionListPage = Type.Object(
  {
    sessions: Type.Array(SessionSummary, { description: 'Most recently updated first.' }),
    nextCursor: Type.Optional(
      Type.String({ description: 'Present when more sessions follow: pass it as `cursor` for the next page.' }),
    ),
  },
  { description: "A page of the workspace's sessions." },
);
export type SessionListPage = Static<typeof SessionListPage>;

export const listSessions = {
  operationId: 'listWorkspaceSessions',
  tags: ['sessions'],
  summary: 'List the sessions of the workspace, live and ended, a page at a time',
  description: [
    'The path names the workspace: its absolute path, URL-encoded as one segment (`/work/a` is `%2Fwork%2Fa`). It must be the workspace this daemon serves.',
    'Lists the live sessions and the ones this daemon served before (ended, closed, or live when it last stopped), which the catalog keeps across restarts with the SQLite event log. Most recently updated first.',
    'Pages follow `nextCursor`; a session created between two pages sorts before the cursor, so a walk neither repeats nor skips the others. Without `size` the first page has up to 100 sessions.',
  ].join(' '),
  params: Type.Object({
    id: Type.String({
      pattern: '^/',
      description: 'The absolute workspace path, URL-encoded as a single path segment (e.g. `%2Fhome%2Fme%2Fproject`).',
      errorMessage: '`:id` must decode to an absolute workspace path',
    }),
  }),
  querystring: ListSessionsQuery,
  response: {
    200: SessionListPage,
    ...errors('workspaceMismatch', 'invalidListQuery'),
  },
};

const PROMPT_MESSAGE = '`prompt` is required and must be a non-empty array of content blocks';

export const PromptBody = Type.Object(
  {
    prompt: Type.Array(refTo(ContentBlock), {
      minItems: 1,
      description: 'What to send the agent, in order.',
      errorMessage: PROMPT_MESSAGE,
    }),
  },
  { additionalProperties: true, description: 'Fields besides `prompt` (such as `_meta`) go to the agent as they are.' },
);
export type PromptBody = Static<typeof PromptBody>;

export const PromptAccepted = Type.Object(
  {
    promptId: Type.String({ description: 'The prompt: its frames, its queue entry and `turn_complete` carry it.' }),
    lastEventId: Type.Integer({
      minimum: 0,
      description:
        "The session's last event id just before this prompt's first frame: `Last-Event-ID` with it replays all of them.",
    }),
    eventEpoch: Type.String({ description: "The epoch of the session's event ids." }),
  },
  { description: 'The prompt was admitted (`Prefer: respond-async`); its turn runs on and ends with `turn_complete`.' },
);

export const promptSession = {
  operationId: 'promptSession',
  tags: ['sessions'],
  summary: "Send a prompt; answers with the agent's PromptResponse when the turn ends, or at once with 202",
  description: [
    'Prompts of a session run one at a time, in order; at most --max-pending-prompts wait behind the running one (503 `prompt_queue_full` past it).',
    'Every prompt is echoed first as `session_update` frames (`user_message_chunk`, `_meta.source` `bridge-echo`); one that must wait gets `pending_prompt_added`, then `pending_prompt_started` and `pending_prompt_completed`; each turn ends with `turn_complete` (or `turn_error`).',
    'Without `Prefer: respond-async` this answers when the turn ends, and a client that leaves cancels its turn (or removes it from the queue); a prompt deleted from the queue answers `{stopReason: "cancelled"}`.',
    'With it, this answers 202 at once (`Preference-Applied: respond-async`) and the turn runs on whatever the client does.',
  ].join(' '),
  params: SessionIdParams,
  headers: Type.Object({
    prefer: Type.Optional(
      Type.String({
        description: 'RFC 7240 preferences; `respond-async` asks for the 202 answer instead of waiting for the turn.',
      }),
    ),
  }),
  body: PromptBody,
  response: {
    200: refTo(PromptResponse),
    202: PromptAccepted,
    ...errors('sessionNotFound', 'agentRefusedParams', 'draining', 'promptQueueFull'),
  },
};

export const PendingPromptItem = Type.Object(
  {
    promptId: Type.String(),
    text: Type.String({ description: "The prompt's text blocks, joined with newlines." }),
    queuedAt: Type.Number({ description: 'When it was admitted. Milliseconds since the epoch.' }),
    state: Type.Union([Type.Literal('running'), Type.Literal('queued')]),
  },
  { description: 'A prompt of the session that has not ended.' },
);

export const listPendingPrompts = {
  operationId: 'listPendingPrompts',
  tags: ['sessions'],
  summary: 'The running prompt and those waiting behind it',
  description: 'Running first, then the queued ones in the order they will run.',
  params: SessionIdParams,
  response: {
    200: Type.Object(
      { pendingPrompts: Type.Array(PendingPromptItem) },
      { description: 'The prompts of the session that have not ended.' },
    ),
    ...errors('sessionGone'),
  },
};

export const removePendingPrompt = {
  operationId: 'removePendingPrompt',
  tags: ['sessions'],
  summary: 'Remove a queued prompt, or cancel the running one',
  description:
    'A queued prompt leaves the queue without reaching the agent (`pending_prompt_completed` `removed`; a caller waiting on it gets `{stopReason: "cancelled"}`). The running prompt is cancelled as `POST /session/{id}/cancel` would.',
  params: Type.Object({
    id: SessionIdParams.properties.id,
    promptId: Type.String({ minLength: 1, maxLength: 256, description: 'The `promptId` of the prompt.' }),
  }),
  response: {
    200: Type.Object({ removed: Type.Literal(true) }, { description: 'Removed (or, running, cancelled).' }),
    ...errors('sessionGone', 'pendingPromptNotFound'),
  },
};

export const CurrentTurnResponse = Type.Object(
  {
    sessionId: Type.String(),
    state: Type.Union([Type.Literal('running'), Type.Literal('idle')]),
    promptId: Type.Union([Type.String(), Type.Null()], { description: 'The running prompt; null when idle.' }),
    promptText: Type.Union([Type.String(), Type.Null()], { description: 'Its text blocks, joined; null when idle.' }),
    queuedAt: Type.Union([Type.Number(), Type.Null()], {
      description: 'When it was admitted (ms since the epoch); null when idle.',
    }),
    startedAt: Type.Union([Type.Number(), Type.Null()], {
      description: 'When it started in the agent (ms since the epoch); null when idle.',
    }),
  },
  { description: 'The turn running in the agent, or `idle` with nulls.' },
);

export const currentTurn = {
  operationId: 'getCurrentTurn',
  tags: ['sessions'],
  summary: 'The prompt running now',
  description: 'The running prompt\'s id, text and times; `state: "idle"` with nulls when none runs.',
  params: SessionIdParams,
  response: {
    200: CurrentTurnResponse,
    ...errors('sessionGone'),
  },
};

export const cancelSession = {
  operationId: 'cancelSession',
  tags: ['sessions'],
  summary: 'Cancel the active prompt',
  description:
    "Cancels the running prompt only: `prompt_cancelled` goes out, the session's pending permission requests are cancelled, then ACP `session/cancel` is sent; its `turn_complete` carries `promptCancelled`, and the next queued prompt then starts. Idempotent.",
  params: SessionIdParams,
  body: Type.Object(
    {},
    { additionalProperties: true, description: 'Optional; any fields go to the agent in the ACP `session/cancel`.' },
  ),
  response: {
    204: Type.Null({ description: 'Cancelled (or nothing was running).' }),
    ...errors('sessionNotFound'),
  },
};

export const SetModelBody = Type.Object(
  {
    modelId: Type.String({
      minLength: 1,
      description: 'The model, as the agent names it.',
      errorMessage: '`modelId` is required and must be a non-empty string',
    }),
  },
  { additionalProperties: true, description: 'Other fields go to the agent as they are.' },
);
export type SetModelBody = Static<typeof SetModelBody>;

export const setModel = {
  operationId: 'setSessionModel',
  tags: ['sessions'],
  summary: "Switch the session's model",
  description:
    'ACP `session/set_model`, in order with the other switches of the session; `model_switched` or `model_switch_failed` follows as an event.',
  params: SessionIdParams,
  body: SetModelBody,
  response: {
    200: refTo(SetModelResponse),
    ...errors('sessionNotFound', 'agentRefusedParams'),
  },
};

export const closeSession = {
  operationId: 'closeSession',
  tags: ['sessions'],
  summary: 'Close a session for every client',
  description: [
    'A running turn is cancelled first: its waiting prompt answers `{stopReason: "cancelled"}` and its `turn_complete` says so, with no `prompt_cancelled` (acpd waits a bounded time for the turn to end); prompts still queued get `pending_prompt_completed` `removed` and their callers 404.',
    'Then every event stream gets `session_closed` (`reason` `client_close`) and ends, and the agent is sent ACP `session/close` when it advertises it.',
    'The agent keeps what it stored: the session can be loaded or resumed again. Closing it again is a 404.',
  ].join(' '),
  params: SessionIdParams,
  response: {
    204: Type.Null({ description: 'Closed.' }),
    ...errors('sessionGone'),
  },
};

export const PendingInteraction = Type.Object(
  {
    requestId: Type.String({ description: 'What `POST /permission/{requestId}` answers.' }),
    kind: Type.Literal('permission', { description: 'The only kind acpd has: an ACP permission request.' }),
    createdAt: Timestamp('When the agent asked.'),
    toolCall: refTo(ToolCallUpdate),
    options: Type.Array(refTo(PermissionOption)),
  },
  { description: 'A permission request of the session that waits for a vote (as its `permission_request` frame).' },
);

export const SessionStatus = Type.Object(
  {
    sessionId: Type.String({ description: 'The session.' }),
    workspaceCwd: Type.String({ description: 'The canonical workspace it runs in.' }),
    createdAt: Timestamp('When it was first created or restored on this daemon.'),
    updatedAt: Timestamp('When it last became live or last started a prompt.'),
    clientCount: Type.Integer({
      minimum: 0,
      description:
        'The clients reading it now: its open event streams (acpd gives clients no ids, so a stream is what it counts).',
    }),
    hasActivePrompt: Type.Boolean({ description: 'A prompt turn is running in the agent.' }),
    activeWorkState: Type.Union([Type.Literal('idle'), Type.Literal('active')], {
      description: '`active` while a prompt runs or a permission request waits.',
    }),
    isWaitingForPermission: Type.Boolean({ description: 'At least one permission request waits for a vote.' }),
    pendingInteractionCount: Type.Integer({
      minimum: 0,
      description: 'How many requests wait (`pendingInteractions`).',
    }),
    pendingInteractions: Type.Array(PendingInteraction, { description: 'Oldest first.' }),
    attachedUsers: Type.Optional(
      Type.Array(Type.String(), {
        description:
          'With a token (--token, --tokens-file): the users who created, attached to or restored it, and those reading its event stream now, sorted.',
      }),
    ),
  },
  { description: 'A live session as it is now.' },
);
export type SessionStatus = Static<typeof SessionStatus>;

export const sessionStatus = {
  operationId: 'getSessionStatus',
  tags: ['sessions'],
  summary: 'The state of a live session',
  description:
    'Whether a prompt runs, which permission requests wait for a vote, how many event streams read it, and its times (ISO 8601). A session being closed is not found.',
  params: SessionIdParams,
  response: {
    200: SessionStatus,
    ...errors('sessionGone'),
  },
};
