/**
 * Request logging: exactly one line per request, written when its response
 * is finished (Fastify's "incoming request" line is dropped by the log
 * controller below, which app.ts installs), carrying the request id. The id is the client's
 * `X-Request-Id` when that is a sane token, a fresh UUID otherwise, and it is
 * echoed back in the response so a client can quote it.
 *
 * A line's message is the request in a few words (`GET /capabilities 200 1.2ms`)
 * and its fields say the same for a machine (`req`, `res`, `route`,
 * `responseTime`). The probes and the metrics scrape, which machines poll every
 * few seconds, log their successes at debug; anything they answer with 4xx or
 * 5xx stays at info.
 *
 * The logger options live here too, as they belong to the same concern but
 * must be handed to the Fastify constructor: JSON lines, the bearer token
 * redacted (in the Authorization header, and in the query string should a
 * client put one there), and pino-pretty only for a human at a terminal (when installed —
 * it is a dev dependency, so a production install always logs JSON), one line per record.
 */
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import type { IncomingMessage } from 'node:http';
import fp from 'fastify-plugin';
import {
  LogController,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
} from 'fastify';
import type { Config } from '../config.js';
import { policies, policyOf } from './route-policy.js';

const REQUEST_ID_HEADER = 'x-request-id';

// Printable, no spaces or quotes, bounded: safe to echo and to index.
const SANE_REQUEST_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

/** Fastify's `genReqId`: the client's X-Request-Id when sane, else a UUID. */
export function requestIdFor(req: IncomingMessage): string {
  const header = req.headers[REQUEST_ID_HEADER];
  return typeof header === 'string' && SANE_REQUEST_ID.test(header) ? header : randomUUID();
}

/** Paths pino censors wherever a request's headers get logged. */
const REDACTED_PATHS = ['req.headers.authorization', 'headers.authorization'];

const CENSOR = '[redacted]';

/**
 * Query keys whose values never reach a log: a token is only ever accepted in
 * the Authorization header, but a client may still put one in the URL
 * (`?token=`, `?access_token=`, `?api_key=`…). Matched on the decoded key in
 * any letter case; a harmless key that matches too (`?author=`) only loses its
 * value in the log.
 */
const SENSITIVE_QUERY_KEY =
  /token|secret|passw|pwd|auth|api[-_.]?key|^key$|^sig$|signature|credential|session[-_.]?id/i;

function decodedKey(raw: string): string {
  try {
    return decodeURIComponent(raw.replaceAll('+', ' '));
  } catch {
    return raw;
  }
}

/** `url` with the values of sensitive query parameters replaced by `[redacted]`, key names kept. */
export function redactUrl(url: string): string {
  const mark = url.indexOf('?');
  if (mark === -1) return url;
  const query = url
    .slice(mark + 1)
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const key = eq === -1 ? pair : pair.slice(0, eq);
      return eq !== -1 && SENSITIVE_QUERY_KEY.test(decodedKey(key)) ? `${key}=${CENSOR}` : pair;
    });
  return `${url.slice(0, mark + 1)}${query.join('&')}`;
}

/**
 * `argv` with the value of every sensitive-looking option replaced by
 * `[redacted]` (`--api-key X`, `--api-key=X`, `-token X`), by the same key
 * rule as the query string: for printing a command line someone configured.
 */
export function redactArgv(argv: readonly string[]): string[] {
  const option = /^--?([^=\s]+)(=?)/;
  const sensitive = (match: RegExpExecArray | null, joined: boolean): match is RegExpExecArray =>
    match !== null && (match[2] === '=') === joined && SENSITIVE_QUERY_KEY.test(match[1]);
  return argv.map((arg, i) => {
    // The word after `--token` is its value, whatever it looks like.
    if (i > 0 && sensitive(option.exec(argv[i - 1]), false)) return CENSOR;
    const own = option.exec(arg);
    return sensitive(own, true) ? `${own[0]}${CENSOR}` : arg;
  });
}

/** What the request serializer reads: a Fastify request or a raw IncomingMessage. */
interface LoggedRequest {
  method?: string;
  url?: string;
  headers?: IncomingMessage['headers'];
  host?: string;
  ip?: string;
  socket?: { remotePort?: number } | null;
}

/**
 * Fastify's request serializer (same fields), with the query redacted: every
 * line that carries `req` (completed, errored, aborted) goes through it.
 */
export function serializeRequest(req: LoggedRequest): Record<string, unknown> {
  return {
    method: req.method,
    url: req.url === undefined ? undefined : redactUrl(req.url),
    version: req.headers?.['accept-version'],
    host: req.host,
    remoteAddress: req.ip,
    remotePort: req.socket?.remotePort,
  };
}

/** The pino-pretty entry point, when it is installed. */
function prettyTarget(): string | undefined {
  try {
    return createRequire(import.meta.url).resolve('pino-pretty');
  } catch {
    return undefined;
  }
}

/**
 * What pino-pretty is given (plain values: they cross to the transport's
 * worker thread). One line per record: the time, the level, the message, the
 * request id in brackets, then whatever other fields the record has, as
 * compact JSON on the same line. A request's fields are left out, its message
 * says them; an error's stack still follows on the lines below.
 */
export const PRETTY_OPTIONS = {
  translateTime: 'SYS:HH:MM:ss.l',
  ignore: 'pid,hostname,reqId,req,res,route,responseTime,aborted',
  messageFormat: '{msg}{if reqId} ({reqId}){end}',
  singleLine: true,
} as const;

export interface LogOutput {
  /** Write log lines here instead of stdout (always JSON). */
  stream?: { write(line: string): void };
  /** Whether a human reads stdout; pretty output needs pino-pretty too. */
  isTTY?: boolean;
}

/** Whether the logs on stdout are pretty: a terminal, and pino-pretty installed. Otherwise they are JSON lines. */
export function logsArePretty(isTTY: boolean): boolean {
  return isTTY && prettyTarget() !== undefined;
}

type LoggerOptions = Exclude<FastifyServerOptions['logger'], boolean | undefined>;

export function loggerOptions(config: Pick<Config, 'logLevel'>, output: LogOutput = {}): LoggerOptions {
  const base = {
    level: config.logLevel,
    redact: { paths: REDACTED_PATHS, censor: CENSOR },
    serializers: { req: serializeRequest },
  };
  if (output.stream !== undefined) return { ...base, stream: output.stream };
  const target = output.isTTY === true ? prettyTarget() : undefined;
  if (target === undefined) return base;
  return { ...base, transport: { target, options: { ...PRETTY_OPTIONS } } };
}

/** `12.3ms` under a second, `4.56s` from there on. */
function formatDuration(ms: number): string {
  return ms < 1000 ? `${ms.toFixed(1)}ms` : `${(ms / 1000).toFixed(2)}s`;
}

/** A request's line in words: `POST /session/…/prompt 200 12.3ms`, or `aborted` for a status never sent. */
function summary(request: FastifyRequest, outcome: number | 'aborted', ms: number): string {
  return `${request.method} ${redactUrl(request.url)} ${outcome} ${formatDuration(ms)}`;
}

/** Routes machines poll (the probes, the metrics scrape): their successes are logged at debug. */
function isPolled(request: FastifyRequest): boolean {
  const policy = policyOf(request);
  return policy.probe || policy === policies.scrape;
}

/**
 * The fields of a request's line; the status only when a response was sent,
 * headers (token censored) only when debugging.
 */
function requestLine(request: FastifyRequest, reply: FastifyReply, sent: boolean): Record<string, unknown> {
  const line: Record<string, unknown> = { req: request, route: request.routeOptions.url };
  if (sent) line.res = reply;
  // The token's user (never the token): set once the token was checked, so a refused request has none.
  if (request.identity !== undefined) line.user = request.identity.user;
  line.responseTime = reply.elapsedTime;
  if (request.log.level === 'debug' || request.log.level === 'trace') line.headers = request.headers;
  return line;
}

/**
 * Fastify's request log lines, reduced to one per request: nothing when it
 * arrives, everything when its response is done.
 */
export class RequestLogController extends LogController {
  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const line = requestLine(request, reply, true);
    const msg = summary(request, reply.statusCode, reply.elapsedTime);
    if (error) request.log.error({ ...line, err: error }, msg);
    else if (reply.statusCode < 400 && isPolled(request)) request.log.debug(line, msg);
    else request.log.info(line, msg);
  }
}

async function requestLog(app: FastifyInstance) {
  // First hook of all, so that even a request refused by the guards gets it.
  app.addHook('onRequest', (req, reply, done) => {
    reply.header(REQUEST_ID_HEADER, req.id);
    // A response that never finished (the client left mid-prompt or
    // mid-stream) gets no line from the controller; this is its one line.
    // Its own 'finish' event is watched rather than `writableFinished`,
    // which app.inject's responses never set.
    const res = reply.raw;
    let finished = false;
    res.once('finish', () => {
      finished = true;
    });
    res.once('close', () => {
      if (!finished && !res.errored) {
        req.log.info({ ...requestLine(req, reply, false), aborted: true }, summary(req, 'aborted', reply.elapsedTime));
      }
    });
    done();
  });
}

export default fp(requestLog, { name: 'request-log', fastify: '5.x' });
