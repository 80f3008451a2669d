/** Schemas of health and capabilities. */
import { PERMISSION_POLICIES } from '../services/permission-policy.js';
import { Type } from '@sinclair/typebox';

export const health = {
  operationId: 'getHealth',
  tags: ['probes'],
  summary: 'Liveness; `?deep` adds counters',
  description:
    'Answers whenever the process is up. With `?deep` (bare, empty, `1` or `true`) it also counts the live sessions and pending permission requests. Public on a loopback bind unless --require-auth.',
  querystring: Type.Object(
    { deep: Type.Optional(Type.String({ description: '`1`, `true` or empty: add the counters.' })) },
    { additionalProperties: true },
  ),
  response: {
    200: Type.Object(
      {
        status: Type.String({ description: '`ok`.' }),
        sessions: Type.Optional(Type.Integer({ description: 'Live sessions (deep only).' })),
        pendingPermissions: Type.Optional(Type.Integer({ description: 'Unanswered permission requests (deep only).' })),
        version: Type.Optional(Type.String({ description: "acpd's version (deep only)." })),
      },
      { description: 'Alive.' },
    ),
    503: Type.Object(
      { status: Type.String({ description: '`degraded`.' }) },
      { description: 'The deep probe could not read its counters.' },
    ),
  },
};

/** An object passed through as the agent sent it. */
const AsSent = Type.Object({}, { additionalProperties: true });

const AgentDescription = Type.Object(
  {
    command: Type.Array(Type.String(), { description: 'The argv every agent process is spawned with.' }),
    protocolVersion: Type.Optional(Type.Integer()),
    agentInfo: Type.Optional(AsSent),
    agentCapabilities: Type.Optional(AsSent),
  },
  {
    description:
      'The agent acpd runs: its command, and what its latest successful `initialize` answered (absent until one has run).',
  },
);

export const capabilities = {
  operationId: 'getCapabilities',
  tags: ['meta'],
  summary: 'What this daemon speaks',
  description: 'The protocol version, the features this build serves, and the workspace it is bound to.',
  response: {
    200: Type.Object(
      {
        v: Type.Literal(1, { description: 'Version of this document.' }),
        protocolVersions: Type.Object(
          { current: Type.String(), supported: Type.Array(Type.String()) },
          { description: 'Wire protocol versions.' },
        ),
        mode: Type.Literal('http-bridge'),
        features: Type.Array(Type.String(), { description: 'Feature tags, one per capability served.' }),
        modelServices: Type.Array(Type.Unknown(), { description: 'Always empty in v1.' }),
        workspaceCwd: Type.String({ description: 'The canonical workspace this daemon serves.' }),
        limits: Type.Object(
          {
            maxSessionsPerWorkspace: Type.Integer({
              description: 'Live sessions at most (`--max-sessions`); 0 = unlimited.',
            }),
            maxPendingPromptsPerSession: Type.Integer({
              description: 'Prompts that may wait behind the running one (`--max-pending-prompts`); 0 = unlimited.',
            }),
            sessionRestoreTimeoutMs: Type.Integer({
              description: 'How long a load or resume may take (`--init-timeout-ms`).',
            }),
          },
          { description: "The daemon's limits, with the qwen daemon's names." },
        ),
        transports: Type.Array(Type.Union([Type.Literal('rest'), Type.Literal('acp-http'), Type.Literal('acp-ws')]), {
          description:
            "How clients may reach the sessions, with the qwen daemon's names: `rest` (these routes and SSE), `acp-http` and `acp-ws` (ACP itself at `/acp`, over Streamable HTTP or a WebSocket).",
        }),
        policy: Type.Object(
          {
            name: Type.Union(
              PERMISSION_POLICIES.map((n) => Type.Literal(n)),
              { description: 'Whose votes settle a permission request (`--permission-policy`).' },
            ),
            consensusQuorum: Type.Integer({
              minimum: 0,
              description:
                'Under `consensus`, the distinct users that must choose the same option (`--consensus-quorum`); 0 = a majority of the users attached when the agent asks.',
            }),
          },
          { description: 'The permission policy this daemon enforces.' },
        ),
        // acpd's additions to the v1 document.
        version: Type.String({ description: "acpd's version." }),
        agent: AgentDescription,
      },
      { description: 'The capabilities.' },
    ),
  },
};
