/**
 * The Agent Client Protocol (schema v1) shapes that cross acpd's HTTP API:
 * content blocks in prompts, and what the agent answers or announces
 * (restore state, model answer, permission options and outcomes, session
 * notifications). Each named one is a shared schema (`$id`), so the API
 * document shows it once as a component and refers to it.
 *
 * Requests are checked as agents check them: the fields ACP requires, with
 * the types it gives every field it defines; unknown extra fields pass
 * through. What comes from the agent is described, not enforced: the
 * response serializer must not turn an agent's small deviation into a 500,
 * so those fields are optional and their objects open.
 */
import { Type, type TSchema } from '@sinclair/typebox';
import type { ContentBlock as ContentBlockType } from '@agentclientprotocol/sdk';

/** `_meta`: reserved by ACP for extensions; opaque to acpd. */
const Meta = Type.Optional(
  Type.Union([Type.Object({}, { additionalProperties: true }), Type.Null()], {
    description: 'Extension metadata (ACP `_meta`), passed through untouched.',
  }),
);

function nullable(schema: TSchema, description: string) {
  return Type.Optional(Type.Union([schema, Type.Null()], { description }));
}

export const Annotations = Type.Object(
  {
    audience: nullable(
      Type.Array(Type.Union([Type.Literal('assistant'), Type.Literal('user')])),
      'Who the content is for.',
    ),
    lastModified: nullable(Type.String(), 'When the underlying resource last changed (ISO 8601).'),
    priority: nullable(Type.Number(), 'Relative importance, 0 to 1.'),
    _meta: Meta,
  },
  {
    $id: 'Annotations',
    additionalProperties: true,
    description: 'Hints on how to display or route a content block.',
  },
);

const annotations = nullable(Type.Ref('Annotations'), 'Display and routing hints.');

/** A string field a content block requires; the message names the block and the field. */
function requiredText(block: string, field: string, description: string) {
  return Type.String({ description, errorMessage: `a "${block}" content block needs \`${field}\` as a string` });
}

export const TextContent = Type.Object(
  {
    type: Type.Literal('text'),
    text: requiredText('text', 'text', 'The text (agents may read it as Markdown).'),
    annotations,
    _meta: Meta,
  },
  { $id: 'TextContent', additionalProperties: true, description: 'Text. Every agent accepts it.' },
);

export const ImageContent = Type.Object(
  {
    type: Type.Literal('image'),
    data: requiredText('image', 'data', 'The image, base64-encoded.'),
    mimeType: requiredText('image', 'mimeType', 'Its media type, e.g. `image/png`.'),
    uri: nullable(Type.String(), 'Where the image comes from.'),
    annotations,
    _meta: Meta,
  },
  {
    $id: 'ImageContent',
    additionalProperties: true,
    description: 'An image; only for agents whose prompt capabilities include `image`.',
  },
);

export const AudioContent = Type.Object(
  {
    type: Type.Literal('audio'),
    data: requiredText('audio', 'data', 'The audio, base64-encoded.'),
    mimeType: requiredText('audio', 'mimeType', 'Its media type, e.g. `audio/wav`.'),
    annotations,
    _meta: Meta,
  },
  {
    $id: 'AudioContent',
    additionalProperties: true,
    description: 'Audio; only for agents whose prompt capabilities include `audio`.',
  },
);

export const ResourceLink = Type.Object(
  {
    type: Type.Literal('resource_link'),
    uri: requiredText('resource_link', 'uri', 'The resource the agent may read.'),
    name: requiredText('resource_link', 'name', 'A name for it.'),
    title: nullable(Type.String(), 'A title to show.'),
    description: nullable(Type.String(), 'What it is.'),
    mimeType: nullable(Type.String(), 'Its media type.'),
    size: nullable(Type.Integer(), 'Its size in bytes.'),
    annotations,
    _meta: Meta,
  },
  { $id: 'ResourceLink', additionalProperties: true, description: 'A reference to a resource the agent can read.' },
);

export const TextResourceContents = Type.Object(
  {
    uri: Type.String({ description: 'The resource.' }),
    text: Type.String({ description: 'Its text.' }),
    mimeType: nullable(Type.String(), 'Its media type.'),
    _meta: Meta,
  },
  { $id: 'TextResourceContents', additionalProperties: true, description: 'A text resource, inline.' },
);

export const BlobResourceContents = Type.Object(
  {
    uri: Type.String({ description: 'The resource.' }),
    blob: Type.String({ description: 'Its bytes, base64-encoded.' }),
    mimeType: nullable(Type.String(), 'Its media type.'),
    _meta: Meta,
  },
  { $id: 'BlobResourceContents', additionalProperties: true, description: 'A binary resource, inline.' },
);

export const EmbeddedResource = Type.Object(
  {
    type: Type.Literal('resource'),
    resource: Type.Union([Type.Ref('TextResourceContents'), Type.Ref('BlobResourceContents')], {
      description: 'The contents: `text` or `blob`, with the `uri` they come from.',
      errorMessage: 'a "resource" content block needs `resource` with a string `uri` and a string `text` or `blob`',
    }),
    annotations,
    _meta: Meta,
  },
  {
    $id: 'EmbeddedResource',
    additionalProperties: true,
    description:
      'A resource inlined in the prompt; only for agents whose prompt capabilities include `embeddedContext`.',
  },
);

const BLOCK_TYPES = ['text', 'image', 'audio', 'resource_link', 'resource'] as const;
const BLOCK_MESSAGE = 'each `prompt` element must be an object (content block)';
const BLOCK_TYPE_MESSAGE = `each \`prompt\` element needs a \`type\`: one of ${BLOCK_TYPES.join(', ')}`;

/** The component of each block type, in the order of BLOCK_TYPES. */
export const CONTENT_BLOCK_COMPONENTS = {
  text: 'TextContent',
  image: 'ImageContent',
  audio: 'AudioContent',
  resource_link: 'ResourceLink',
  resource: 'EmbeddedResource',
} as const satisfies Record<(typeof BLOCK_TYPES)[number], string>;

/**
 * One ACP content block. Ajv's `discriminator` picks the one branch named by
 * `type`, so an error is reported against that branch alone rather than
 * against all five. (Ajv refuses a discriminator `mapping`; the API document
 * gets one from plugins/openapi.ts.)
 */
export const ContentBlock = Type.Unsafe<ContentBlockType>({
  $id: 'ContentBlock',
  description:
    'An ACP content block, told apart by `type`. Fields beyond those listed pass through to the agent unchecked.',
  type: 'object',
  required: ['type'],
  discriminator: { propertyName: 'type' },
  oneOf: BLOCK_TYPES.map((type) => Type.Ref(CONTENT_BLOCK_COMPONENTS[type])),
  errorMessage: { type: BLOCK_MESSAGE, discriminator: BLOCK_TYPE_MESSAGE, required: BLOCK_TYPE_MESSAGE },
});

export const PermissionOutcome = Type.Union(
  [
    Type.Object({ outcome: Type.Literal('cancelled') }, { additionalProperties: true }),
    Type.Object({ outcome: Type.Literal('selected'), optionId: Type.String() }, { additionalProperties: true }),
  ],
  {
    $id: 'PermissionOutcome',
    description: 'How a permission request ended: an option the client selected, or cancelled.',
  },
);

export const PermissionOption = Type.Object(
  {
    optionId: Type.String({ description: 'What a vote names in `optionId`.' }),
    name: Type.String({ description: 'A label to show.' }),
    kind: Type.Union(
      [
        Type.Literal('allow_once'),
        Type.Literal('allow_always'),
        Type.Literal('reject_once'),
        Type.Literal('reject_always'),
      ],
      { description: 'What choosing it means.' },
    ),
    _meta: Meta,
  },
  { $id: 'PermissionOption', additionalProperties: true, description: 'One answer the agent offers.' },
);

export const ToolCallUpdate = Type.Object(
  {
    toolCallId: Type.String({ description: 'The tool call the agent wants to make.' }),
    title: nullable(Type.String(), 'What it does, for a human.'),
    kind: nullable(Type.String(), 'ACP tool kind: read, edit, delete, move, search, execute, think, fetch, other…'),
    status: nullable(Type.String(), 'pending, in_progress, completed or failed.'),
  },
  {
    $id: 'ToolCallUpdate',
    additionalProperties: true,
    description: 'The ACP tool call a permission request is about (content, locations and raw input pass through).',
  },
);

export const SessionNotification = Type.Object(
  {
    sessionId: Type.String(),
    update: Type.Object(
      {
        sessionUpdate: Type.String({
          description:
            'The kind of update: user_message_chunk, agent_message_chunk, agent_thought_chunk, tool_call, tool_call_update, plan, available_commands_update, current_mode_update, …',
        }),
      },
      { additionalProperties: true, description: 'The ACP SessionUpdate; its other fields depend on its kind.' },
    ),
    _meta: Meta,
  },
  {
    $id: 'SessionNotification',
    additionalProperties: true,
    description: "The agent's ACP `session/update` notification, whole.",
  },
);

const open = { additionalProperties: true } as const;

export const SessionState = Type.Object(
  {
    modes: nullable(
      Type.Object(
        {
          currentModeId: Type.Optional(Type.String()),
          availableModes: Type.Optional(
            Type.Array(
              Type.Object(
                {
                  id: Type.Optional(Type.String()),
                  name: Type.Optional(Type.String()),
                  description: nullable(Type.String(), 'What the mode does.'),
                },
                open,
              ),
            ),
          ),
        },
        open,
      ),
      'The modes the agent offers and the current one.',
    ),
    models: nullable(
      Type.Object(
        {
          currentModelId: Type.Optional(Type.String()),
          availableModels: Type.Optional(
            Type.Array(
              Type.Object(
                {
                  modelId: Type.Optional(Type.String()),
                  name: Type.Optional(Type.String()),
                  description: nullable(Type.String(), 'What the model is.'),
                },
                open,
              ),
            ),
          ),
        },
        open,
      ),
      'The models the agent offers and the current one (ACP unstable).',
    ),
    configOptions: nullable(Type.Array(Type.Object({}, open)), "The session's configuration options."),
    _meta: Meta,
  },
  {
    $id: 'SessionState',
    additionalProperties: true,
    description:
      "The agent's answer to ACP `session/load` or `session/resume`, as it sent it (`{}` for a session that was created, not restored).",
  },
);

export const PromptResponse = Type.Object(
  {
    stopReason: Type.String({
      description: 'Why the turn ended: end_turn, max_tokens, max_turn_requests, refusal or cancelled.',
    }),
    _meta: Meta,
  },
  { $id: 'PromptResponse', additionalProperties: true, description: "The agent's ACP PromptResponse." },
);

export const SetModelResponse = Type.Object(
  { _meta: Meta },
  {
    $id: 'SetModelResponse',
    additionalProperties: true,
    description: "The agent's answer to ACP `session/set_model`, as it sent it (usually `{}`).",
  },
);

/** The ACP schemas, for `addSchema`: each referenced schema before the ones that refer to it. */
export const acpSchemas = [
  Annotations,
  TextContent,
  ImageContent,
  AudioContent,
  ResourceLink,
  TextResourceContents,
  BlobResourceContents,
  EmbeddedResource,
  ContentBlock,
  PermissionOutcome,
  PermissionOption,
  ToolCallUpdate,
  SessionNotification,
  SessionState,
  PromptResponse,
  SetModelResponse,
];
