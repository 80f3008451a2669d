/**
 * Opt-in rate limits (@fastify/rate-limit, `global: false`), per client
 * address, in three budgets (prompts, mutations, reads). Each route names the
 * budget it draws from in its policy (plugins/route-policy.ts); the probes
 * and /metrics draw from none. One limiter per budget, so the budget is
 * shared by all of its routes. A spent budget answers 429 with our envelope
 * (`code: 'rate_limited'`) and Retry-After. Must be registered before the
 * routes (it works in onRoute).
 *
 * A user of the tokens file with a `promptRate` has a prompt budget of its
 * own besides: keyed by the user, not the address, so it holds whichever
 * clients the user's prompts come from.
 */
import fp from 'fastify-plugin';
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import type { Config } from '../config.js';
import { RateLimitedError } from '../errors.js';
import { BUDGETS, policyOf, type Budget } from './route-policy.js';

const WINDOW_MS = 60_000;

type Limiter = ReturnType<FastifyInstance['rateLimit']>;

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
  // The tokens file may give a user a prompt rate at any reload, so with one the plugin is always on.
  if (Object.values(perMinute).every((max) => max === 0) && config.tokensFile === undefined) return;

  // Imported only when some budget is limited: with rate limits off (the default) it is never loaded.
  const { default: rateLimit } = await import('@fastify/rate-limit');
  await app.register(rateLimit, { global: false });

  const limiters = new Map<Budget, Limiter>();
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

  const userPrompts = app.rateLimit({
    max: (req) => req.identity?.promptRate ?? 0,
    keyGenerator: (req) => `user:${req.identity?.user ?? ''}`,
    timeWindow: WINDOW_MS,
    errorResponseBuilder: (_req, context) =>
      new RateLimitedError('prompts', Math.max(1, Math.ceil(context.ttl / 1000))),
  });

  /**
   * The limiter of the request's budget, if that budget is limited. Looked up
   * per request rather than when the route is added: the docs routes get
   * their policy from a hook that runs after this plugin's.
   */
  async function limit(this: FastifyInstance, req: FastifyRequest, reply: FastifyReply): Promise<void> {
    // A request another cluster node forwarded here spent its budget on the node it first reached.
    if (app.cluster?.cluster.isForwarded(req)) return;
    const { budget } = policyOf(req);
    const limiter = budget === 'none' ? undefined : limiters.get(budget);
    if (limiter !== undefined) await limiter.call(this, req, reply);
    if (budget === 'prompts' && req.identity?.promptRate !== undefined && !reply.sent) {
      await userPrompts.call(this, req, reply);
    }
  }

  // A route-level hook, so it runs after every global onRequest hook (the
  // guards, load shedding): a refused request never spends a budget.
  app.addHook('onRoute', (route: RouteOptions) => {
    route.onRequest = [...asArray(route.onRequest), limit];
  });
}

export default fp(rateLimits, { name: 'rate-limits', fastify: '5.x' });
