/**
 * Readiness for orchestrators, and load shedding through
 * @fastify/under-pressure: when the event loop lags or memory is past its
 * threshold, requests get 503 + Retry-After (our envelope, code `overloaded`)
 * — except on routes whose policy says not to shed them (the probes and
 * /metrics, which must keep answering exactly then).
 *
 * Ready means: the config was valid (or there would be no app), the listener
 * is up, the agent command resolves to an executable, the daemon is not
 * draining, the process is not under pressure, and (on a cluster node)
 * Redis answers the heartbeat. The agent command is
 * looked up at start-up (a miss is logged) and again on every check, so
 * installing the agent later makes the daemon ready without a restart.
 */
import fp from 'fastify-plugin';
import underPressure from '@fastify/under-pressure';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { OverloadedError } from '../errors.js';
import type { CommandCheck } from '../services/agent-command.js';
import { policyOf } from './route-policy.js';

/** How often under-pressure samples the event loop and memory. */
const SAMPLE_INTERVAL_MS = 1000;
/**
 * Start-up itself (compiling every route schema, mostly) blocks the loop for
 * up to a second or so, and under-pressure's first sample would report that
 * as lag and shed the first requests. Pressure counts from the second sample
 * after ready on.
 */
const WARM_UP_MS = 2 * SAMPLE_INTERVAL_MS;

interface ReadinessChecks {
  config: 'ok';
  listener: 'ok' | 'down';
  agent: 'ok' | 'missing';
  drain: 'ok' | 'draining';
  load: 'ok' | 'overloaded';
  eventLog: 'ok' | 'failing';
  /** Only on a cluster node. */
  redis?: 'ok' | 'unreachable';
}

interface ReadinessReport {
  ready: boolean;
  checks: ReadinessChecks;
}

interface Readiness {
  /** The agent's argv[0] as configured. */
  readonly agentCommand: string;
  /** Looks the agent command up now: the file it runs, or why it cannot run. */
  checkAgent(): Promise<CommandCheck>;
  /** The same lookup, as it came out when the app was built. */
  readonly agentAtStart: CommandCheck;
  /** Looks everything up now, the agent command included. */
  check(): Promise<ReadinessReport>;
}

declare module 'fastify' {
  interface FastifyInstance {
    readiness: Readiness;
  }
}

async function probes(app: FastifyInstance, opts: { config: Config }) {
  const { config } = opts;
  let readyAt: number | undefined;
  const warmingUp = () => readyAt === undefined || performance.now() - readyAt < WARM_UP_MS;
  app.addHook('onReady', async () => {
    readyAt = performance.now();
  });
  const overloaded = () => !warmingUp() && app.isUnderPressure();

  await app.register(underPressure, {
    sampleInterval: SAMPLE_INTERVAL_MS,
    maxEventLoopDelay: config.maxEventLoopDelayMs,
    maxHeapUsedBytes: config.maxHeapUsedBytes,
    maxRssBytes: config.maxRssBytes,
    // Through the error handler, so the body is our envelope and Retry-After
    // comes from the error like every other 503.
    pressureHandler: async (req, _reply, type) => {
      if (warmingUp()) return;
      if (!policyOf(req).shed) return;
      req.log.warn({ pressure: type }, 'shedding load');
      throw new OverloadedError(type);
    },
  });

  const agentCommand = app.channels.argv[0] ?? '';
  const checkAgent = () => app.channels.checkCommand();
  const agentFound = async (): Promise<boolean> => (await checkAgent()).ok;

  const atStart = await checkAgent();
  if (!atStart.ok) {
    app.log.warn({ agentCommand, reason: atStart.reason }, 'agent command cannot run: not ready until it can');
  }

  app.decorate('readiness', {
    agentCommand,
    checkAgent,
    agentAtStart: atStart,
    async check(): Promise<ReadinessReport> {
      const checks: ReadinessChecks = {
        config: 'ok',
        listener: app.server.listening ? 'ok' : 'down',
        agent: (await agentFound()) ? 'ok' : 'missing',
        drain: app.sessions.isDraining ? 'draining' : 'ok',
        load: overloaded() ? 'overloaded' : 'ok',
        eventLog: app.dataStore?.writeError === undefined ? 'ok' : 'failing',
        ...(app.cluster ? { redis: app.cluster.node.healthy ? ('ok' as const) : ('unreachable' as const) } : {}),
      };
      return { ready: Object.values(checks).every((state) => state === 'ok'), checks };
    },
  });
}

export default fp(probes, {
  name: 'probes',
  fastify: '5.x',
  dependencies: ['session-registry', 'data-store', 'cluster'],
});
