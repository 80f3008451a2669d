/**
 * Opt-in rate limits (@fastify/rate-limit, `global: false`), per client
 * address, in three budgets that each route draws from as it is registered:
 *  - prompts:   POST /session/:id/prompt
 *  - mutations: every other POST
 *  - reads:     every GET, except the probes and /metrics
 * One limiter per budget, so the budget is shared by all of its routes. A
 * spent budget answers 429 with our envelope (`code: 'rate_limited'`) and
 * Retry-After. Must be registered before the routes (it works in onRoute).
 */
import fp from 'fastify-plugin';
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, onRequestHookHandler, RouteOptions } from 'fastify';
import type { Config } from '../config.js';
import { RateLimitedError } from '../errors.js';

const BUDGETS = ['prompts', 'mutations', 'reads'] as const;
export type Budget = (typeof BUDGETS)[number];

const WINDOW_MS = 60_000;
const PROMPT_ROUTE = '/session/:id/prompt';
/** GET routes no budget applies to: orchestrators and scrapers poll them. */
export const UNLIMITED_READS: ReadonlySet<string> = new Set(['/health', '/livez', '/readyz', '/metrics']);

export function budgetOf(method: string, url: string): Budget | undefined {
  if (method === 'POST') return url === PROMPT_ROUTE ? 'prompts' : 'mutations';
  if (method === 'GET' || method === 'HEAD') return UNLIMITED_READS.has(url) ? undefined : 'reads';
  return undefined;
}

function asArray<T>(value: T | T[] | undefined): T[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

async function rateLimits(app: FastifyInstance, opts: { config: Config }) {
  const { config } = opts;
  const perMinute: Record<Budget, number> = {
    prompts: config.rateLimitPrompts,
    mutations: config.rateLimitMutations,
    reads: config.rateLimitReads,
  };
  if (Object.values(perMinute).every((max) => max === 0)) return;

  await app.register(rateLimit, { global: false });

  const limiters = new Map<Budget, onRequestHookHandler>();
  for (const budget of BUDGETS) {
    const max = perMinute[budget];
    if (max === 0) continue;
    limiters.set(
      budget,
      app.rateLimit({
        max,
        timeWindow: WINDOW_MS,
        errorResponseBuilder: (_req, context) =>
          new RateLimitedError(budget, Math.max(1, Math.ceil(context.ttl / 1000))),
      }),
    );
  }

  app.addHook('onRoute', (route: RouteOptions) => {
    for (const method of asArray(route.method)) {
      const budget = budgetOf(method, route.url);
      const limiter = budget === undefined ? undefined : limiters.get(budget);
      if (limiter === undefined) continue;
      route.onRequest = [...asArray(route.onRequest), limiter];
      return;
    }
  });
}

export default fp(rateLimits, { name: 'rate-limits', fastify: '5.x' });
