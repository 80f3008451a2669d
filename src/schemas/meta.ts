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
    }),
    503: Type.Object({ status: Type.String() }),
    ...commonErrors,
  },
};

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
    }),
    ...commonErrors,
  },
};
