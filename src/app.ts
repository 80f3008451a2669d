/**
 * buildApp(config): the whole daemon as a Fastify instance — options, body
 * handling, plugins, routes, the error and 404 handlers. It never listens;
 * server.ts does, and tests call this same function.
 */
import Fastify, { type FastifyError, type FastifyInstance, type FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { fastifySSE } from '@fastify/sse';
import type { Config } from './config.js';
import { BadRequestError, isWireError } from './errors.js';
import { isRequestError } from './services/acp-sdk.js';
import channelSupervisor from './plugins/channel-supervisor.js';
import cluster, { clusterRoutes } from './plugins/cluster.js';
import connections, { connectionTimeouts } from './plugins/connections.js';
import metrics from './plugins/metrics.js';
import nodeHeader from './plugins/node-header.js';
import openapi from './plugins/openapi.js';
import probes from './plugins/probes.js';
import rateLimits from './plugins/rate-limits.js';
import requestLog, {
  loggerOptions,
  RequestLogController,
  requestIdFor,
  type LogOutput,
} from './plugins/request-log.js';
import restoreCoordinator from './plugins/restore-coordinator.js';
import dataStore from './plugins/data-store.js';
import idempotency from './plugins/idempotency.js';
import type { ReceiptStore } from './services/receipts.js';
import routePolicy from './plugins/route-policy.js';
import security from './plugins/security.js';
import sessionRegistry from './plugins/session-registry.js';
import webhooks from './plugins/webhooks.js';
import acpRoutes, { upgradesEnd } from './routes/acp.js';
import consoleRoutes from './routes/console.js';
import workspaceRoutes from './routes/workspace.js';
import eventRoutes from './routes/events.js';
import metaRoutes from './routes/meta.js';
import operationRoutes from './routes/operations.js';
import permissionRoutes from './routes/permissions.js';
import promptRoutes from './routes/prompts.js';
import sessionRoutes from './routes/sessions.js';
import { sharedSchemas } from './schemas/components.js';
import { formatByteLimit, nestsDeeperThan, safeBody, validationMessage } from './schemas/validation.js';
import { lazySchemaController, type PendingSchemas } from './schemas/lazy-compilers.js';

/** JSON-RPC's code for invalid method parameters. */
const INVALID_PARAMS = -32602;

const MAX_PARAM_LENGTH = 16 * 1024;

declare module 'fastify' {
  interface FastifyInstance {
    /** SIGKILL every agent now: the last resort of a forced exit. */
    killAllSync(): void;
    /** Route schemas not compiled yet (they compile on first use; see schemas/lazy-compilers.ts). */
    pendingSchemas: PendingSchemas;
  }
}

export interface BuildOptions {
  /** Where log lines go (JSON); stdout when absent. */
  logStream?: LogOutput['stream'];
  /** Pretty logs for a human; defaults to whether stdout is a terminal. */
  prettyLogs?: boolean;
  /** The clock idempotency receipts expire by (Date.now); tests move it. */
  now?: () => number;
  /** Where idempotency receipts go, instead of the store the config picks (a shared Redis store in tests). */
  receipts?: ReceiptStore;
}

export async function buildApp(config: Config, options: BuildOptions = {}): Promise<FastifyInstance> {
  const timeouts = connectionTimeouts(config);
  const { schemaController, schemas } = lazySchemaController();
  const app = Fastify({
    logger: loggerOptions(config, {
      stream: options.logStream,
      isTTY: options.prettyLogs ?? process.stdout.isTTY === true,
    }),
    logController: new RequestLogController(),
    requestIdHeader: false,
    genReqId: requestIdFor,
    // Every body, whatever its content type, is read up to this and no further (413).
    bodyLimit: config.maxBodyBytes,
    // A connection has --header-timeout-ms to send a complete request head
    // (counted from the accept, so silent ones are closed too) and five
    // minutes for its body; neither deadline applies once the request is in,
    // so streams and long prompts are unaffected. Fastify turns Node's
    // request timeout off unless given here; see plugins/connections.ts.
    http: timeouts,
    requestTimeout: timeouts.requestTimeout,
    // `/workspace/:id/sessions` takes a whole URL-encoded workspace path as
    // `:id`; the router's default cap of 100 characters would answer 414 for
    // any workspace a few folders deep. Node's 16 KiB header limit (request
    // line included) bounds what can arrive anyway.
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // The drain (preClose) ends every stream and answers every request it
    // can; whatever connection is left after it is closed, not waited for.
    forceCloseConnections: true,
    // During the drain the session registry answers new work itself (503
    // `draining` with Retry-After), so Fastify must keep routing requests.
    return503OnClosing: false,
    // X-Forwarded-For/-Proto/-Host count only from the proxies the operator
    // named (--trust-proxy); then req.ip, which the rate limits key on and the
    // request log records, is the client behind the proxy.
    trustProxy: config.trustProxy,
    onProtoPoisoning: 'remove',
    onConstructorPoisoning: 'remove',
    ajv: {
      // `discriminator` lets a content block's `type` pick the one schema it is checked against.
      customOptions: {
        coerceTypes: false,
        removeAdditional: false,
        verbose: true,
        allErrors: false,
        discriminator: true,
      },
      plugins: [
        (ajv) => {
          ajv.addKeyword({ keyword: 'errorMessage' });
          ajv.addKeyword({ keyword: 'errorCode' });
          return ajv;
        },
      ],
    },
    // Validators and serializers compile on a route's first request rather than at ready.
    schemaController,
    schemaErrorFormatter: (errors) => {
      const { message, code } = validationMessage(errors);
      return new BadRequestError(message, code);
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

  // Bodies: JSON only (empty means {}), nested no deeper than the limit;
  // anything else is read (within the same byte limit) and ignored. Every
  // route then sees a plain, prototype-free object. A non-empty body that was
  // ignored is remembered with its content type, so that a route whose body
  // then fails validation says why rather than "`prompt` is required"; a
  // route with an optional body (cancel) works whatever was sent.
  const unreadBodies = new WeakMap<FastifyRequest, string | undefined>();
  const parseJson = app.getDefaultJsonParser('remove', 'remove');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, {});
    if (nestsDeeperThan(text, config.maxBodyDepth)) {
      return done(
        new BadRequestError(`JSON body nests deeper than ${config.maxBodyDepth} levels`, 'body_too_deep'),
        undefined,
      );
    }
    // Fastify's own JSON parser is the callback form: it answers through `done` and returns nothing.
    // Its declared type is the union of the callback and promise forms, hence the `void`.
    void parseJson(req, text, done);
  });
  // Fastify's own text/plain parser would hand the text on; it goes the way of every other non-JSON type.
  // (It returns the instance, which is thenable: nothing to await.)
  void app.removeContentTypeParser('text/plain');
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (req, body, done) => {
    if (body.length > 0) unreadBodies.set(req, req.headers['content-type']);
    done(null, undefined);
  });
  app.addHook('preValidation', async (req) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') req.body = safeBody(req.body);
  });

  for (const schema of sharedSchemas) app.addSchema(schema);
  app.decorate('pendingSchemas', schemas);

  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (err.validationContext === 'body' && unreadBodies.has(req)) {
      return reply.code(400).send({ error: unreadBodyMessage(unreadBodies.get(req)), code: 'body_not_json' });
    }
    if (isWireError(err)) {
      const status = err.statusCode ?? 500;
      if (err.retryAfter !== undefined) reply.header('Retry-After', String(err.retryAfter));
      if (status >= 500) req.log.error({ err }, 'request failed');
      return reply.code(status).send(err.envelope());
    }
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return reply.code(413).send({ error: `Request body too large (max ${formatByteLimit(config.maxBodyBytes)})` });
    }
    if (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || (err instanceof SyntaxError && err.statusCode === 400)) {
      return reply.code(400).send({ error: 'Invalid JSON in request body' });
    }
    if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.code(err.statusCode).send({ error: err.message });
    }
    // Agent errors, timeouts, a closed channel, a drain: the contract's 500
    // carries the JSON-RPC `code` and `data` when the error has them. An
    // agent refusing the client's own params (-32602) is the client's error.
    const body: Record<string, unknown> = { error: err.message || 'Internal server error' };
    if ('code' in err && err.code !== undefined) body.code = err.code;
    if ('data' in err) body.data = (err as { data?: unknown }).data;
    if (isAgentInvalidParams(err)) return reply.code(400).send(body);
    req.log.error({ err, sessionId: sessionIdOf(req.params) }, 'request failed');
    return reply.code(500).send(body);
  });

  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({ error: `Route ${req.method} ${req.url.split('?')[0]} not found` });
  });

  // Every route declares its policy, which the plugins below read; ready() checks that none is missing.
  await app.register(routePolicy);
  await app.register(requestLog);
  await app.register(nodeHeader, { config });
  // Before the guards: a connection over the cap gets its 503 whoever sends it.
  await app.register(connections, { config });
  await app.register(security, { config });
  // Both work in onRoute, so they come before every route.
  await app.register(rateLimits, { config });
  await app.register(openapi, { config });
  await app.register(fastifySSE, { heartbeatInterval: config.sseHeartbeatMs });
  await app.register(channelSupervisor, { config });
  await app.register(cluster, { config });
  await app.register(dataStore, { config });
  // In onRoute, so before every route; its receipts live in the data store.
  await app.register(idempotency, { config, now: options.now, store: options.receipts });
  await app.register(clusterRoutes);
  await app.register(sessionRegistry, { config });
  await app.register(restoreCoordinator);
  await app.register(webhooks, { config });
  await app.register(probes, { config });
  await app.register(metrics);
  app.decorate('killAllSync', () => app.sessions.killAllSync());

  await app.register(metaRoutes, { allowFileWrites: config.allowFileWrites });
  await app.register(sessionRoutes);
  await app.register(promptRoutes);
  await app.register(eventRoutes);
  await app.register(permissionRoutes);
  await app.register(operationRoutes);
  await app.register(upgradesEnd);
  await app.register(acpRoutes, { heartbeatMs: config.sseHeartbeatMs });
  await app.register(consoleRoutes);
  await app.register(workspaceRoutes, { config });

  return app;
}

/** Why a request's body was not looked at: it was not sent as JSON. */
function unreadBodyMessage(contentType: string | undefined): string {
  const sent =
    contentType === undefined ? 'it has no content-type' : `its content-type is ${JSON.stringify(contentType)}`;
  return `The body was not read: ${sent}; send JSON with content-type: application/json`;
}

/** The agent's JSON-RPC "invalid params" answer to a request acpd forwarded for a client. */
function isAgentInvalidParams(err: Error): boolean {
  return isRequestError(err) && err.code === INVALID_PARAMS;
}

function sessionIdOf(params: unknown): string | undefined {
  if (typeof params !== 'object' || params === null) return undefined;
  const id = (params as { id?: unknown }).id;
  return typeof id === 'string' ? id : undefined;
}
