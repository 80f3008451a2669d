/** Schemas of the operator endpoints: probes and metrics. */
import { Type } from '@sinclair/typebox';

export const livez = {
  operationId: 'getLivez',
  tags: ['probes'],
  summary: 'Liveness: the process is up and its event loop turns',
  description:
    'For an orchestrator: public on a loopback bind unless --require-auth, and answered past --max-connections.',
  response: {
    200: Type.Object({ status: Type.Literal('ok') }, { description: 'Alive.' }),
  },
};

const ReadinessBody = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('unavailable')]),
  checks: Type.Object(
    {
      config: Type.Literal('ok'),
      listener: Type.Union([Type.Literal('ok'), Type.Literal('down')]),
      agent: Type.Union([Type.Literal('ok'), Type.Literal('missing')]),
      drain: Type.Union([Type.Literal('ok'), Type.Literal('draining')]),
      load: Type.Union([Type.Literal('ok'), Type.Literal('overloaded')]),
      eventLog: Type.Union([Type.Literal('ok'), Type.Literal('failing')], {
        description: '`failing` while writes to the durable event log fail (disk full, I/O error).',
      }),
      redis: Type.Optional(
        Type.Union([Type.Literal('ok'), Type.Literal('unreachable')], {
          description:
            'Only on a cluster node (--redis-url): `unreachable` while the node cannot reach Redis; it then takes no new work (503 `cluster_unavailable`).',
        }),
      ),
    },
    { description: 'Each check and its state.' },
  ),
});

export const readyz = {
  operationId: 'getReadyz',
  tags: ['probes'],
  summary:
    'Readiness: listening, agent command found, not draining, not overloaded, event log writable, Redis reachable on a cluster node (503 + Retry-After otherwise)',
  description:
    'For an orchestrator: whether to send this daemon work. Public on a loopback bind unless --require-auth, and answered past --max-connections.',
  response: {
    200: Type.Object(ReadinessBody.properties, { description: 'Ready: every check is `ok`.' }),
    503: {
      description: 'Not ready: a check failed. `Retry-After` says when to look again.',
      headers: { 'retry-after': Type.Integer({ minimum: 1, description: 'Seconds before asking again.' }) },
      content: { 'application/json': { schema: ReadinessBody } },
    },
  },
};

export const metrics = {
  operationId: 'getMetrics',
  tags: ['operations'],
  summary: 'Prometheus metrics (text exposition format)',
  description: 'For a scraper: answered under load too, but it needs the token when one is set.',
  response: {
    200: {
      description: 'Prometheus text format 0.0.4',
      content: { 'text/plain': { schema: Type.String() } },
    },
  },
};
