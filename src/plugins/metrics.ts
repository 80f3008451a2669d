/**
 * Prometheus metrics (prom-client), in a registry of this app's own: two apps
 * in one process never share a series. The services already count what
 * matters (sessions, channels, bus traffic, restores); their numbers are read
 * at scrape time, so nothing here runs on the hot paths. Only durations are
 * observed as they happen, from one `onResponse` hook.
 *
 * prom-client's default process metrics are left out on purpose: they start
 * event-loop and GC monitors that can never be stopped, which would outlive
 * the app. Event-loop delay and memory come from under-pressure's sampler
 * instead (the probes plugin).
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { VERSION } from '../version.js';
import { policyOf } from './route-policy.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** This app's Prometheus registry; `GET /metrics` renders it. */
    metrics: Registry;
  }
}

/** The `route` label of a request that matched no route (a 404). */
const UNMATCHED_ROUTE = '(unmatched)';

// Prompts run from milliseconds to many minutes.
const PROMPT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];
// Ordinary requests are fast; SSE streams land in the last buckets.
const HTTP_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

async function metrics(app: FastifyInstance) {
  const registry = new Registry();
  const registers = [registry];
  const { sessions, channels, restores } = app;

  /** A counter whose value a service keeps; copied at scrape time. */
  function mirrored(name: string, help: string, read: () => number): void {
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  }

  new Gauge({
    name: 'acpd_build_info',
    help: 'Always 1; the version of acpd that runs is in its label.',
    labelNames: ['version'],
    registers,
  }).set({ version: VERSION }, 1);
  new Gauge({
    name: 'acpd_sessions',
    help: 'Live sessions.',
    registers,
    collect() {
      this.set(sessions.sessionCount);
    },
  });
  new Gauge({
    name: 'acpd_agent_channels',
    help: 'Agent processes not reaped yet, by state: active (may take sessions) or dying (being stopped).',
    labelNames: ['state'],
    registers,
    collect() {
      let dying = 0;
      for (const channel of channels.alive) if (channel.isDying) dying++;
      this.set({ state: 'active' }, channels.alive.size - dying);
      this.set({ state: 'dying' }, dying);
    },
  });
  mirrored('acpd_agent_spawns_total', 'Agent processes started.', () => channels.spawnCount);
  mirrored(
    'acpd_agent_crashes_total',
    'Agent processes that exited without being asked to.',
    () => channels.crashCount,
  );
  new Gauge({
    name: 'acpd_sse_subscribers',
    help: 'Open event streams, over all sessions.',
    registers,
    collect() {
      let subscribers = 0;
      for (const entry of sessions.list()) subscribers += entry.events.subscriberCount;
      this.set(subscribers);
    },
  });

  const bus = sessions.busStats;
  mirrored('acpd_events_published_total', 'Session events published.', () => bus.published);
  mirrored(
    'acpd_events_replayed_total',
    'Events replayed to streams that reconnected with Last-Event-ID.',
    () => bus.replayed,
  );
  mirrored(
    'acpd_events_dropped_total',
    'Events pushed out of a full replay ring (a reconnect from before them can no longer replay them).',
    () => {
      // The durable log pushes events out lazily; as its readers, the count sees the exact bounds.
      for (const entry of sessions.list()) void entry.events.firstHeldId;
      return bus.dropped;
    },
  );
  mirrored(
    'acpd_sse_evictions_total',
    'Event streams cut off because the client fell too far behind.',
    () => bus.evicted,
  );

  new Counter({
    name: 'acpd_restores_total',
    help: 'Session load/resume requests by outcome: restored, coalesced (joined one in flight), conflict (409), limited (503), not_found (404).',
    labelNames: ['outcome'],
    registers,
    collect() {
      const { stats } = restores;
      this.reset();
      this.inc({ outcome: 'restored' }, stats.restored);
      this.inc({ outcome: 'coalesced' }, stats.coalesced);
      this.inc({ outcome: 'conflict' }, stats.conflicts);
      this.inc({ outcome: 'limited' }, stats.limited);
      this.inc({ outcome: 'not_found' }, stats.notFound);
    },
  });

  const hooks = app.webhooks;
  if (hooks) {
    new Counter({
      name: 'acpd_webhook_deliveries_total',
      help: 'Webhook deliveries by outcome: ok (the receiver answered 2xx), failed (given up: refused, out of attempts, or pushed out of a full queue).',
      labelNames: ['outcome'],
      registers,
      collect() {
        this.reset();
        this.inc({ outcome: 'ok' }, hooks.stats.delivered);
        this.inc({ outcome: 'failed' }, hooks.stats.failed);
      },
    });
    mirrored(
      'acpd_webhook_retries_total',
      'Webhook attempts that failed (network error, 5xx, 429) and were scheduled again.',
      () => hooks.stats.retried,
    );
    new Gauge({
      name: 'acpd_webhook_queued',
      help: 'Webhook deliveries waiting for their receiver (the one being sent included).',
      registers,
      collect() {
        this.set(hooks.queued);
      },
    });
  }

  const cluster = app.cluster;
  if (cluster) {
    const { node } = cluster;
    new Gauge({
      name: 'acpd_cluster_redis_up',
      help: 'Cluster node: 1 while the heartbeat reaches Redis, else 0 (the node takes no new work).',
      registers,
      collect() {
        this.set(node.healthy ? 1 : 0);
      },
    });
    new Gauge({
      name: 'acpd_cluster_owned_sessions',
      help: 'Cluster node: sessions whose lease this node holds (it runs them on its agent).',
      registers,
      collect() {
        this.set(node.ownedCount);
      },
    });
    mirrored(
      'acpd_cluster_forwards_total',
      'Cluster node: requests forwarded to the node that owns their session.',
      () => node.stats.forwarded,
    );
    mirrored(
      'acpd_cluster_forward_failures_total',
      'Cluster node: forwarded requests that got no answer from the owner (503 session_owner_unavailable).',
      () => node.stats.forwardFailures,
    );
    mirrored(
      'acpd_cluster_lease_takeovers_total',
      'Cluster node: sessions this node took over from a node that was gone.',
      () => node.stats.takeovers,
    );
    mirrored(
      'acpd_cluster_leases_lost_total',
      'Cluster node: leases this node found taken by another node at renewal (the session stopped here).',
      () => node.stats.lost,
    );
    // The cluster view, read from Redis at scrape time (left out of a scrape while Redis is away).
    new Gauge({
      name: 'acpd_cluster_nodes',
      help: 'Cluster view: nodes whose heartbeat is within the lease TTL.',
      registers,
      async collect() {
        this.reset();
        const live = await node.liveNodes().catch(() => undefined);
        if (live !== undefined) this.set(live);
      },
    });
    new Gauge({
      name: 'acpd_cluster_sessions',
      help: 'Cluster view: sessions live on some node (what --max-sessions counts cluster-wide).',
      registers,
      async collect() {
        this.reset();
        const live = await cluster.cluster.liveSessions().catch(() => undefined);
        if (live !== undefined) this.set(live);
      },
    });
  }

  new Gauge({
    name: 'acpd_event_loop_delay_milliseconds',
    help: 'Mean event-loop delay over the last sample (under-pressure).',
    registers,
    collect() {
      this.set(app.memoryUsage().eventLoopDelay);
    },
  });
  new Gauge({
    name: 'acpd_heap_used_bytes',
    help: 'V8 heap in use at the last sample.',
    registers,
    collect() {
      this.set(app.memoryUsage().heapUsed);
    },
  });
  new Gauge({
    name: 'acpd_rss_bytes',
    help: 'Resident set size at the last sample.',
    registers,
    collect() {
      this.set(app.memoryUsage().rssBytes);
    },
  });

  const promptDuration = new Histogram({
    name: 'acpd_prompt_duration_seconds',
    help: 'Time from a prompt request to its answer, by HTTP status.',
    labelNames: ['status_code'],
    buckets: PROMPT_BUCKETS,
    registers,
  });
  const httpDuration = new Histogram({
    name: 'acpd_http_request_duration_seconds',
    help: 'HTTP request durations by method, route pattern and status (an SSE stream counts until it ends).',
    labelNames: ['method', 'route', 'status_code'],
    buckets: HTTP_BUCKETS,
    registers,
  });

  const userRequests = new Counter({
    name: 'acpd_user_requests_total',
    help: 'Requests answered, by the user of their token (--token, --tokens-file) and status class.',
    labelNames: ['user', 'status_class'],
    registers,
  });
  const userPrompts = new Counter({
    name: 'acpd_user_prompts_total',
    help: 'Prompt requests answered, by the user of their token.',
    labelNames: ['user'],
    registers,
  });

  app.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? UNMATCHED_ROUTE;
    const seconds = reply.elapsedTime / 1000;
    const status = String(reply.statusCode);
    httpDuration.observe({ method: req.method, route, status_code: status }, seconds);
    if (policyOf(req).promptDuration) promptDuration.observe({ status_code: status }, seconds);
    // Only names from the token table become labels, so the series stay as few as the users.
    const user = req.identity?.user;
    if (user !== undefined && app.auth.userNames.has(user)) {
      userRequests.inc({ user, status_class: `${status.charAt(0)}xx` });
      if (policyOf(req).budget === 'prompts') userPrompts.inc({ user });
    }
    done();
  });

  app.decorate('metrics', registry);
}

export default fp(metrics, {
  name: 'metrics',
  fastify: '5.x',
  dependencies: ['session-registry', 'channel-supervisor', 'restore-coordinator', 'probes', 'webhooks', 'security'],
});
