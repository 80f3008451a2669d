/**
 * Route policy: what the guards, the load shedder, the rate limits and the
 * metrics do with a route's requests, declared once by the route itself in
 * its `config.policy` (`{ config: { policy: policies.read } }`) and read by
 * those plugins through `policyOf(req)`. No plugin keeps a list of URLs.
 *
 * The plugin makes the declaration mandatory: a route that reaches
 * `ready()` without a policy fails start-up. The check waits for ready
 * because an onRoute hook that runs after this one may still give a route
 * its policy (the way to fit routes a library registers, which take no
 * route config).
 */
import fp from 'fastify-plugin';
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify';
import type { Scope } from '../services/tokens.js';

/** The --rate-limit-* budgets, each one allowance per client shared by all of its routes. */
export const BUDGETS = ['prompts', 'mutations', 'reads'] as const;
export type Budget = (typeof BUDGETS)[number];

export interface RoutePolicy {
  /**
   * An orchestrator's probe: answered without the token on a loopback bind
   * (unless --require-auth), and answered as usual on a connection over
   * --max-connections. A GET route's automatic HEAD twin shares its policy.
   */
  readonly probe: boolean;
  /** Whether load shedding may refuse it (503 `overloaded`) while the process is under pressure. */
  readonly shed: boolean;
  /** The rate budget its requests draw from, or none. */
  readonly budget: Budget | 'none';
  /** Whether its durations are also prompt durations (`acpd_prompt_duration_seconds`). */
  readonly promptDuration: boolean;
  /**
   * Answered without the token on every bind: the web console's static files, a page that holds no
   * data and asks the user for the token itself. Absent means false.
   */
  readonly public?: boolean;
  /**
   * The scope a named token needs for it (--tokens-file; `admin` has them
   * all). Absent: any valid token will do (the probes), or none (public).
   */
  readonly scope?: Scope;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    policy?: RoutePolicy;
  }
}

/** The kinds of route acpd has, each with its policy; a route names one of these. */
export const policies = {
  /** /health, /livez, /readyz: must answer whenever the daemon is alive; any valid token may ask. */
  probe: { probe: true, shed: false, budget: 'none', promptDuration: false },
  /** /metrics: a scraper polls it and must see the daemon under pressure too, but it needs the token. */
  scrape: { probe: false, shed: false, budget: 'none', promptDuration: false, scope: 'admin' },
  /** Reads: capabilities, listings, status, event streams. */
  read: { probe: false, shed: true, budget: 'reads', promptDuration: false, scope: 'read' },
  /** The API document and its viewer (/docs): reads, but only for admins. */
  docs: { probe: false, shed: true, budget: 'reads', promptDuration: false, scope: 'admin' },
  /** Every POST or DELETE that drives a session: create, restore, cancel, model, close, queue removal. */
  mutation: { probe: false, shed: true, budget: 'mutations', promptDuration: false, scope: 'prompt' },
  /** A vote on a permission request: a mutation, by those who may approve. */
  vote: { probe: false, shed: true, budget: 'mutations', promptDuration: false, scope: 'approve' },
  /** A prompt turn, which may run for minutes. */
  prompt: { probe: false, shed: true, budget: 'prompts', promptDuration: true, scope: 'prompt' },
  /** The web console's static files (routes/console.ts): public, served from memory, counted by no budget. */
  asset: { probe: false, shed: true, budget: 'none', promptDuration: false, public: true },
} as const satisfies Record<string, RoutePolicy>;

/**
 * Whether a route changes state: the mutations and the prompts, which draw on
 * those two budgets. These take an `Idempotency-Key` (plugins/idempotency.ts).
 */
export function mutates(policy: RoutePolicy): boolean {
  return policy.budget === 'mutations' || policy.budget === 'prompts';
}

/** What a request that matched no route (a 404) gets: the guards apply, it may be shed, no budget counts it. */
const UNROUTED: RoutePolicy = { probe: false, shed: true, budget: 'none', promptDuration: false };

/** The policy of the route a request matched. */
export function policyOf(req: FastifyRequest): RoutePolicy {
  return req.routeOptions.config.policy ?? UNROUTED;
}

function describe(route: RouteOptions): string {
  const methods = Array.isArray(route.method) ? route.method.join(',') : route.method;
  return `${methods} ${route.url}`;
}

async function routePolicy(app: FastifyInstance) {
  let routes: RouteOptions[] = [];
  app.addHook('onRoute', (route) => {
    routes.push(route);
  });
  app.addHook('onReady', async () => {
    const missing = routes.filter((route) => route.config?.policy === undefined).map(describe);
    routes = [];
    if (missing.length > 0) throw new Error(`Routes without a policy (config.policy): ${missing.join('; ')}`);
  });
}

export default fp(routePolicy, { name: 'route-policy', fastify: '5.x' });
