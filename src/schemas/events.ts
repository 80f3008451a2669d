/**
 * Schemas of the event stream: one per frame type (the JSON each `data:`
 * line carries), the union of them all, and the route's schema. The frames
 * are written straight to the socket (routes/events.ts), so these describe
 * the stream for the API document and its clients; the bus and the services
 * that publish are what produce them.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { PermissionOption, PermissionOutcome, SessionNotification, ToolCallUpdate } from './acp.js';
import { refTo, SessionIdParams } from './common.js';
import { errors } from './errors.js';
import { PendingInteraction, PendingPromptItem } from './sessions.js';

/** The envelope around an event's `data`; `type` stays a literal so that frame types can be told apart. */
function envelope<K extends string, D extends TSchema>(type: K, data: D) {
  return {
    v: Type.Literal(1, { description: 'Version of the envelope.' }),
    type: Type.Literal(type),
    data,
    originatorClientId: Type.Optional(Type.String({ description: 'Reserved; never set.' })),
  };
}

/** The frame of one numbered event type: the envelope, with its `id`, around its `data`. */
function frame<K extends string, D extends TSchema>(type: K, id: string, data: D, description: string) {
  return Type.Object(
    {
      id: Type.Integer({
        minimum: 1,
        description: "The event's number on the session's bus (also the frame's `id:` line).",
      }),
      ...envelope(type, data),
    },
    { $id: id, description },
  );
}

/** The frame of an event type sent without an `id` (it is about this stream, not the session's log). */
function unnumberedFrame<K extends string, D extends TSchema>(type: K, id: string, data: D, description: string) {
  return Type.Object(envelope(type, data), { $id: id, description });
}

const sessionId = Type.String({ description: 'The session.' });

/** Who caused the frame, when a token names users (--token, --tokens-file). */
const causedBy = Type.Optional(
  Type.Object(
    {
      user: Type.String({ description: 'The user of the token of the request that caused it.' }),
      clientId: Type.Optional(Type.String({ description: 'The `X-Qwen-Client-Id` that request sent.' })),
    },
    { description: 'Who caused it; present only when a token is configured.' },
  ),
);

export const SessionUpdateEvent = frame(
  'session_update',
  'SessionUpdateEvent',
  refTo(SessionNotification),
  'An ACP `session/update` from the agent (also the history a load replays, and the commands after a create, load or resume); and the echo of every prompt, a `user_message_chunk` per content block whose `_meta` is `{source: "bridge-echo", promptId}`, with `user` and `clientId` when a token names users.',
);

export const PermissionRequestEvent = frame(
  'permission_request',
  'PermissionRequestEvent',
  Type.Object({
    requestId: Type.String({ description: 'What `POST /permission/{requestId}` answers.' }),
    sessionId,
    toolCall: refTo(ToolCallUpdate),
    options: Type.Array(refTo(PermissionOption)),
  }),
  'The agent asks for permission; the first vote wins.',
);

export const PermissionResolvedEvent = frame(
  'permission_resolved',
  'PermissionResolvedEvent',
  Type.Object({ requestId: Type.String(), outcome: refTo(PermissionOutcome), _meta: causedBy }),
  'A permission request ended: a vote, or cancelled (cancel, abort, timeout, kill, shutdown).',
);

export const ModelSwitchedEvent = frame(
  'model_switched',
  'ModelSwitchedEvent',
  Type.Object({ sessionId, modelId: Type.String(), _meta: causedBy }),
  'The session now uses this model.',
);

export const ModelSwitchFailedEvent = frame(
  'model_switch_failed',
  'ModelSwitchFailedEvent',
  Type.Object({ sessionId, requestedModelId: Type.String(), error: Type.String(), _meta: causedBy }),
  'A model switch failed; the session keeps its model.',
);

export const SessionDiedEvent = frame(
  'session_died',
  'SessionDiedEvent',
  Type.Object({
    sessionId,
    reason: Type.Union(
      [
        Type.Literal('channel_closed'),
        Type.Literal('killed'),
        Type.Literal('daemon_shutdown'),
        Type.Literal('node_lost'),
      ],
      {
        description:
          'The agent process exited, the session was killed, or the daemon stopped; `node_lost` (with --redis-url): the node that ran it died and no agent could bring it back.',
      },
    ),
    exitCode: Type.Optional(
      Type.Union([Type.Integer(), Type.Null()], { description: "The agent's exit code (`channel_closed`)." }),
    ),
    signalCode: Type.Optional(
      Type.Union([Type.String(), Type.Null()], { description: 'The signal that ended it (`channel_closed`).' }),
    ),
  }),
  'The session ended. The last frame: the stream ends after it.',
);

export const SessionClosedEvent = frame(
  'session_closed',
  'SessionClosedEvent',
  Type.Object({
    sessionId,
    reason: Type.Literal('client_close', { description: 'A client closed it (`DELETE /session/{id}`).' }),
    _meta: causedBy,
  }),
  'The session was closed; it can be loaded again. The last frame: the stream ends after it.',
);

const promptId = Type.String({ description: 'The prompt, as its admission answered it (`promptId`).' });
const epochMs = (description: string) => Type.Number({ description: `${description} Milliseconds since the epoch.` });
const promptText = Type.String({ description: "The prompt's text blocks, joined with newlines." });

export const PendingPromptAddedEvent = frame(
  'pending_prompt_added',
  'PendingPromptAddedEvent',
  Type.Object({ sessionId, promptId, text: promptText, queuedAt: epochMs('When it was admitted.') }),
  'A prompt was admitted behind another and waits its turn (after its echo).',
);

export const PendingPromptStartedEvent = frame(
  'pending_prompt_started',
  'PendingPromptStartedEvent',
  Type.Object({ sessionId, promptId, text: promptText }),
  'A prompt that waited now runs in the agent.',
);

export const PendingPromptCompletedEvent = frame(
  'pending_prompt_completed',
  'PendingPromptCompletedEvent',
  Type.Object({
    sessionId,
    promptId,
    state: Type.Union([Type.Literal('completed'), Type.Literal('removed')], {
      description:
        '`completed`: it ran and its turn ended (after its `turn_complete` or `turn_error`); `removed`: it left the queue without running (deleted, its client left, or the session closed).',
    }),
  }),
  'A prompt that had waited is done with.',
);

export const PromptCancelledEvent = frame(
  'prompt_cancelled',
  'PromptCancelledEvent',
  Type.Object({ sessionId, promptId, cancelledAt: epochMs('When the cancel came.'), _meta: causedBy }),
  'A client cancelled the running prompt (`POST /session/{id}/cancel`, or deleting it from the queue); the agent is told next, and its `turn_complete` follows.',
);

export const TurnCompleteEvent = frame(
  'turn_complete',
  'TurnCompleteEvent',
  Type.Object({
    sessionId,
    promptId,
    stopReason: Type.String({ description: "The agent's ACP stop reason (`end_turn`, `cancelled`, …)." }),
    promptCancelled: Type.Optional(
      Type.Object(
        {
          cancelledAt: epochMs('When the cancel came.'),
          elapsedMs: Type.Number({ minimum: 0, description: 'How long the prompt had run when it was cancelled.' }),
        },
        { description: 'Present when the turn ended `cancelled` after a client cancelled it.' },
      ),
    ),
  }),
  "A prompt's turn ended: the agent answered it. Every prompt gets one (or `turn_error`).",
);

export const TurnErrorEvent = frame(
  'turn_error',
  'TurnErrorEvent',
  Type.Object({
    sessionId,
    promptId,
    message: Type.String({ description: 'What went wrong (the field the qwen daemon uses).' }),
    error: Type.String({ description: 'The same text, as acpd error envelopes name it.' }),
    code: Type.Optional(
      Type.Union([Type.String(), Type.Number()], {
        description: 'The JSON-RPC code of an agent error, when there is one.',
      }),
    ),
  }),
  "A prompt's turn failed: the agent answered with an error, or went away.",
);

export const PermissionAlreadyResolvedEvent = frame(
  'permission_already_resolved',
  'PermissionAlreadyResolvedEvent',
  Type.Object({
    requestId: Type.String(),
    sessionId,
    outcome: refTo(PermissionOutcome, {
      description: 'How the request was resolved (the earlier vote or a cancel).',
    }),
  }),
  'A vote came for a permission request resolved a moment ago (the vote got 404); its session and outcome as they were.',
);

export const FsAccessEvent = frame(
  'fs.access',
  'FsAccessEvent',
  Type.Object({
    kind: Type.Literal('fs.access'),
    intent: Type.Union([Type.Literal('write'), Type.Literal('edit')]),
    route: Type.String({
      description: 'The route that wrote (`POST /file/write`, `POST /file/edit`, `POST /file/upload`).',
    }),
    relPath: Type.String({ description: 'The file written, relative to the workspace.' }),
    sizeBytes: Type.Integer({ minimum: 0 }),
    hash: Type.String({ description: 'The hash of what was written.' }),
  }),
  "A file of the session's workspace was written over HTTP (the qwen daemon's audit frame for writes). Every live session of the workspace gets it.",
);

export const ClientEvictedEvent = unnumberedFrame(
  'client_evicted',
  'ClientEvictedEvent',
  Type.Object({
    reason: Type.Literal('queue_overflow'),
    droppedAfter: Type.Integer({ description: 'The first event this client did not get; reconnect from before it.' }),
  }),
  'This client read too slowly and was cut off (no `id`). The last frame of this stream only.',
);

export const StreamErrorEvent = unnumberedFrame(
  'stream_error',
  'StreamErrorEvent',
  Type.Object({ error: Type.String() }),
  'The stream failed (no `id`). The last frame.',
);

export const StateResyncRequiredEvent = unnumberedFrame(
  'state_resync_required',
  'StateResyncRequiredEvent',
  Type.Object({
    reason: Type.Union([Type.Literal('epoch_reset'), Type.Literal('ring_evicted')], {
      description:
        "The qwen daemon's reasons: `ring_evicted` when the cursor is older than what the log still holds (a gap in the same epoch), `epoch_reset` otherwise.",
    }),
    detail: Type.Union([Type.Literal('epoch_mismatch'), Type.Literal('cursor_ahead'), Type.Literal('cursor_expired')], {
      description:
        'The cursor came from another epoch (`X-Qwen-Event-Epoch`), is ahead of the newest event, or is older than what the log still holds.',
    }),
    lastDeliveredId: Type.Integer({ minimum: 0, description: 'The `Last-Event-ID` the client sent.' }),
    earliestAvailableId: Type.Integer({
      minimum: 1,
      description: 'The oldest event held (the next id when none is): the replay that follows starts there.',
    }),
  }),
  "The client's cursor cannot resume without a gap (no `id`): drop what was built from earlier frames; every event still held follows.",
);

export const ReplayCompleteEvent = unnumberedFrame(
  'replay_complete',
  'ReplayCompleteEvent',
  Type.Object({
    lastReplayedEventId: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], {
      description: 'The last event replayed; null when none was.',
    }),
    lastEventId: Type.Integer({ minimum: 0, description: 'The newest event of the session when the stream opened.' }),
    replayedCount: Type.Integer({ minimum: 0 }),
  }),
  'The replay is over (no `id`); live events follow. Sent on every subscribe, with or without `Last-Event-ID`.',
);

export const TurnState = Type.Object(
  {
    state: Type.Union([Type.Literal('running'), Type.Literal('idle')]),
    promptId: Type.Optional(Type.String()),
    promptText: Type.Optional(Type.String()),
    queuedAt: Type.Optional(epochMs('When the running prompt was admitted.')),
    startedAt: Type.Optional(epochMs('When it started.')),
  },
  { description: 'The turn of the session: whether a prompt runs, and which.' },
);

export const SessionSnapshot = Type.Object(
  {
    sessionId,
    lastEventId: Type.Integer({ minimum: 0, description: 'The newest event when the state was taken.' }),
    eventEpoch: Type.String({ description: "The epoch of the session's event ids (`X-Qwen-Event-Epoch`)." }),
    turn: TurnState,
    pendingPermissions: Type.Array(PendingInteraction, { description: 'Requests that wait for a vote, oldest first.' }),
    pendingPrompts: Type.Array(PendingPromptItem, { description: 'The prompt queue, the running one first.' }),
  },
  { description: 'The session as it is when the stream opens.' },
);
export type SessionSnapshot = Static<typeof SessionSnapshot>;

export const SessionStateEvent = unnumberedFrame(
  'session_state',
  'SessionStateEvent',
  SessionSnapshot,
  "The session's state now (no `id`), after `replay_complete` on every subscribe: a reconnecting client need not rebuild it from frames.",
);

/** Every frame type, in the document's order; `Static<(typeof FRAMES)[number]>` is any frame. */
export const FRAMES = [
  SessionUpdateEvent,
  PermissionRequestEvent,
  PermissionResolvedEvent,
  PermissionAlreadyResolvedEvent,
  PendingPromptAddedEvent,
  PendingPromptStartedEvent,
  PendingPromptCompletedEvent,
  PromptCancelledEvent,
  TurnCompleteEvent,
  TurnErrorEvent,
  ModelSwitchedEvent,
  ModelSwitchFailedEvent,
  FsAccessEvent,
  SessionDiedEvent,
  SessionClosedEvent,
  ClientEvictedEvent,
  StreamErrorEvent,
  StateResyncRequiredEvent,
  ReplayCompleteEvent,
  SessionStateEvent,
] as const;

/** `type` → the frame's component name, for the document's discriminator mapping. */
export const EVENT_COMPONENTS: Record<string, string> = Object.fromEntries(
  FRAMES.map((schema) => [schema.properties.type.const, schema.$id ?? '']),
);

export const SessionEvent = Type.Unsafe<unknown>({
  $id: 'SessionEvent',
  description:
    'What the `data:` line of an event frame carries: the whole envelope, told apart by `type` (which the `event:` line repeats).',
  type: 'object',
  required: ['type'],
  discriminator: { propertyName: 'type' },
  oneOf: FRAMES.map((schema) => Type.Ref(schema.$id ?? '')),
});

/** The event schemas, for `addSchema`. */
export const eventSchemas = [...FRAMES, SessionEvent];

const STREAM_DESCRIPTION = [
  'Server-Sent Events. First `retry: 3000`; then, per event, an `id:` line (numbered events only), an `event:` line with its `type`, and one `data:` line with the JSON envelope (`SessionEvent`); `: heartbeat` comments while idle.',
  'Every stream opens with: `state_resync_required` when the cursor cannot resume, the replay, `replay_complete`, then `session_state`, before any live event.',
  'The stream ends after `session_died`, `session_closed`, `client_evicted` or `stream_error`.',
].join(' ');

const EPOCH_DESCRIPTION =
  "The epoch of the session's event ids. It stays the same across restores and daemon restarts with the durable log (`--event-log sqlite`), where ids go on; a new epoch means earlier ids mean nothing here.";

const streamHeaders = {
  'x-qwen-event-epoch': Type.String({ description: EPOCH_DESCRIPTION }),
  'x-qwen-sse-stream-id': Type.String({ description: 'A new UUID for each stream (for logs and support).' }),
};

const eventErrors = errors('sessionNotFound', 'subscriberLimit');

export const sessionEvents = {
  operationId: 'streamSessionEvents',
  tags: ['events'],
  summary: "Follow the session's events (Server-Sent Events); `Last-Event-ID` replays from the log",
  description: [
    'Subscribes before answering, so an unknown session (404) or a full session (429) is answered as JSON, never as a stream.',
    'With `Last-Event-ID: n` the stream starts with every event after `n` still in the log (`0`: all of them); a value that is not a decimal integer counts as absent.',
    'With `X-Qwen-Event-Epoch` too, a cursor from another epoch gets `state_resync_required` and every event held; without it the cursor is taken to be in the current epoch.',
  ].join(' '),
  params: SessionIdParams,
  headers: Type.Object({
    'last-event-id': Type.Optional(
      Type.String({ description: 'Replay the events after this one (a decimal event id; `0` for all).' }),
    ),
    'x-qwen-event-epoch': Type.Optional(
      Type.String({ description: 'The epoch `Last-Event-ID` was read in (the `X-Qwen-Event-Epoch` of that stream).' }),
    ),
  }),
  response: {
    200: {
      description: STREAM_DESCRIPTION,
      headers: streamHeaders,
      content: { 'text/event-stream': { schema: Type.Ref('SessionEvent') } },
    },
    ...eventErrors,
  },
};

export const sessionEventsHead = {
  ...sessionEvents,
  operationId: 'probeSessionEvents',
  summary: 'The headers GET would answer with, without subscribing',
  description:
    "Answers 404 for an unknown session, else 200 with the stream's headers, and never holds a subscriber slot.",
  response: {
    200: {
      description: 'The session exists; GET would stream.',
      headers: streamHeaders,
      content: { 'text/event-stream': { schema: Type.String() } },
    },
    ...errors('sessionNotFound'),
  },
};
