/** Schemas of the operator endpoints: probes and metrics. */
import { Type } from '@sinclair/typebox';
import { commonErrors } from './common.js';

export const livez = {
  summary: 'Liveness: the process is up and its event loop turns',
  response: {
    200: Type.Object({ status: Type.Literal('ok') }),
    ...commonErrors,
  },
};

const ReadinessBody = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('unavailable')]),
  checks: Type.Object({
    config: Type.Literal('ok'),
    listener: Type.Union([Type.Literal('ok'), Type.Literal('down')]),
    agent: Type.Union([Type.Literal('ok'), Type.Literal('missing')]),
    drain: Type.Union([Type.Literal('ok'), Type.Literal('draining')]),
    load: Type.Union([Type.Literal('ok'), Type.Literal('overloaded')]),
  }),
});

export const readyz = {
  summary: 'Readiness: listening, agent command found, not draining, not overloaded (503 + Retry-After otherwise)',
  response: {
    200: ReadinessBody,
    503: ReadinessBody,
    ...commonErrors,
  },
};

export const metrics = {
  summary: 'Prometheus metrics (text exposition format)',
  response: {
    200: {
      description: 'Prometheus text format 0.0.4',
      content: { 'text/plain': { schema: Type.String() } },
    },
    ...commonErrors,
  },
};
