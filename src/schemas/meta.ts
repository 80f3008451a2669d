/** Schemas of health and capabilities. */
import { Type } from '@sinclair/typebox';
import { commonErrors } from './common.js';

export const health = {
  summary: 'Liveness; `?deep` adds counters',
  querystring: Type.Object({ deep: Type.Optional(Type.String()) }, { additionalProperties: true }),
  response: {
    200: Type.Object({
      status: Type.String(),
      sessions: Type.Optional(Type.Integer()),
      pendingPermissions: Type.Optional(Type.Integer()),
      version: Type.Optional(Type.String({ description: "acpd's version (deep probe only)" })),
    }),
    503: Type.Object({ status: Type.String() }),
    ...commonErrors,
  },
};

/** An object passed through as the agent sent it. */
const AsSent = Type.Object({}, { additionalProperties: true });

const AgentDescription = Type.Object(
  {
    command: Type.Array(Type.String(), { description: 'The argv every agent process is spawned with' }),
    protocolVersion: Type.Optional(Type.Integer()),
    agentInfo: Type.Optional(AsSent),
    agentCapabilities: Type.Optional(AsSent),
  },
  {
    description:
      'The agent acpd runs: its command, and what its latest successful `initialize` answered (absent until one has run)',
  },
);

export const capabilities = {
  summary: 'What this daemon speaks',
  response: {
    200: Type.Object({
      v: Type.Literal(1),
      protocolVersions: Type.Object({ current: Type.String(), supported: Type.Array(Type.String()) }),
      mode: Type.Literal('http-bridge'),
      features: Type.Array(Type.String()),
      modelServices: Type.Array(Type.Unknown()),
      workspaceCwd: Type.String(),
      // acpd's additions to the v1 document.
      version: Type.String({ description: "acpd's version" }),
      agent: AgentDescription,
    }),
    ...commonErrors,
  },
};
