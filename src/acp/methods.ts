/**
 * What each ACP method is in acpd's REST protocol. An `/acp` request is
 * served by the REST route it names, through `app.inject`, with the headers
 * of the `/acp` request that carried it: the token, the Host/Origin guards,
 * the rate budgets (a prompt draws on the prompt budget), the restore
 * coordinator, the session cap, idempotency and cluster forwarding all apply
 * exactly as they do to the REST call, because they are the REST call.
 *
 * Two dialects ask for the same things. `acp` is the protocol's own
 * (`session/list` by `cwd`, the agent's load answer); `daemon` is the qwen
 * daemon's client (`@qwen-code/sdk`), which maps its REST calls one for one
 * onto these methods and reads the REST shapes back (`session/permission`
 * for a vote, `session/list` by `workspaceCwd`).
 */
import { isObject } from './wire.js';

export type Dialect = 'acp' | 'daemon';

/** One REST call. */
export interface RestCall {
  method: 'GET' | 'POST' | 'DELETE';
  url: string;
  body?: Record<string, unknown>;
}

export interface MethodSpec {
  /** The REST call for these params, or a message saying what is missing. */
  call(params: Record<string, unknown>, ctx: { dialect: Dialect; workspace: string }): RestCall | string;
  /** The result from the REST answer's body (as it is when absent). */
  result?(body: unknown, ctx: { dialect: Dialect }): unknown;
}

const seg = (s: string) => encodeURIComponent(s);

function str(params: Record<string, unknown>, key: string): string | undefined {
  const v = params[key];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** The params without the ones that address the call (they are in its URL). */
function rest(params: Record<string, unknown>, ...drop: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) if (!drop.includes(k)) out[k] = v;
  return out;
}

/** A method addressed to one session: `POST|DELETE /session/:id<suffix>`. */
function onSession(
  method: 'POST' | 'DELETE',
  suffix: string,
  body?: (params: Record<string, unknown>) => Record<string, unknown>,
): MethodSpec['call'] {
  return (params) => {
    const sessionId = str(params, 'sessionId');
    if (!sessionId) return '`sessionId` is required';
    return { method, url: `/session/${seg(sessionId)}${suffix}`, ...(body ? { body: body(params) } : {}) };
  };
}

/**
 * A read of the workspace's files: `GET <url>?<query>` from the params the
 * daemon's client sends (its route table turns `/file`, `/file/bytes`,
 * `/stat`, `/list`, `/glob` into these methods, query values as params).
 * The route checks them, so a bad one is refused exactly as over REST.
 */
function fileRead(url: string, ...keys: string[]): MethodSpec {
  return {
    call: (params) => {
      const query = new URLSearchParams();
      for (const k of keys) {
        const v = params[k];
        if (typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v))) query.set(k, String(v));
      }
      const q = query.toString();
      return { method: 'GET', url: q ? `${url}?${q}` : url };
    },
  };
}

/** A catalog row as ACP's `SessionInfo`. */
function sessionInfo(row: unknown): unknown {
  if (!isObject(row)) return row;
  const updatedAt = row.updatedAt;
  return {
    sessionId: row.sessionId,
    cwd: row.workspaceCwd,
    ...(typeof row.displayName === 'string' ? { title: row.displayName } : {}),
    ...(typeof updatedAt === 'number' ? { updatedAt: new Date(updatedAt).toISOString() } : {}),
    ...(typeof updatedAt === 'string' ? { updatedAt } : {}),
  };
}

const restore = (action: 'load' | 'resume'): MethodSpec => ({
  call: onSession('POST', `/${action}`, (p) => (str(p, 'cwd') ? { cwd: p.cwd } : {})),
  // The protocol's answer is the agent's own answer to the restore; the daemon's client reads acpd's.
  result: (body, { dialect }) => (dialect === 'acp' && isObject(body) && isObject(body.state) ? body.state : body),
});

export const METHODS: Record<string, MethodSpec> = {
  'session/new': {
    call: (p, { dialect }) => ({
      method: 'POST',
      url: '/session',
      // Every ACP session/new is a session of its own, as with a local agent. The daemon's client means its
      // `POST /session`, whose scope it does not forward: the daemon's default applies, as over REST.
      body: {
        ...(str(p, 'cwd') ? { cwd: p.cwd } : {}),
        ...(str(p, 'modelServiceId') ? { modelServiceId: p.modelServiceId } : {}),
        ...(dialect === 'acp' ? { sessionScope: 'thread' } : {}),
      },
    }),
  },
  'session/load': restore('load'),
  'session/resume': restore('resume'),
  'session/prompt': { call: onSession('POST', '/prompt', (p) => rest(p, 'sessionId')) },
  'session/cancel': { call: onSession('POST', '/cancel', () => ({})), result: () => ({}) },
  'session/set_model': { call: onSession('POST', '/model', (p) => rest(p, 'sessionId')) },
  'session/close': { call: onSession('DELETE', ''), result: () => ({}) },
  'session/list': {
    call: (p, { dialect, workspace }) => {
      const cwd = (dialect === 'daemon' ? str(p, 'workspaceCwd') : str(p, 'cwd')) ?? workspace;
      const query = new URLSearchParams();
      const cursor = str(p, 'cursor');
      if (cursor) query.set('cursor', cursor);
      const size = isObject(p._meta) ? p._meta.size : undefined;
      if (typeof size === 'number') query.set('size', String(size));
      const q = query.toString();
      return { method: 'GET', url: `/workspace/${seg(cwd)}/sessions${q ? `?${q}` : ''}` };
    },
    result: (body, { dialect }) => {
      if (dialect === 'daemon' || !isObject(body) || !Array.isArray(body.sessions)) return body;
      return {
        sessions: body.sessions.map(sessionInfo),
        ...(typeof body.nextCursor === 'string' ? { nextCursor: body.nextCursor } : {}),
      };
    },
  },
  // The daemon client's vote: `POST /permission/:requestId` (with or without its session in the path).
  'session/permission': {
    call: (p) => {
      const requestId = str(p, 'requestId');
      if (!requestId) return '`requestId` is required';
      return { method: 'POST', url: `/permission/${seg(requestId)}`, body: rest(p, 'sessionId', 'requestId') };
    },
  },
  authenticate: { call: () => ({ method: 'GET', url: '/health' }), result: () => ({}) },
  '_qwen/health': { call: () => ({ method: 'GET', url: '/health' }) },
  '_qwen/file/read': fileRead('/file', 'path', 'maxBytes', 'line', 'limit', 'cursor'),
  '_qwen/file/read_bytes': fileRead('/file/bytes', 'path', 'offset', 'maxBytes'),
  '_qwen/file/stat': fileRead('/stat', 'path'),
  '_qwen/file/list': fileRead('/list', 'path'),
  '_qwen/file/glob': fileRead('/glob', 'pattern', 'maxResults', 'cwd'),
  // Writes are the REST routes' too: off without --allow-file-writes, confined, announced.
  '_qwen/file/write': { call: (p) => ({ method: 'POST', url: '/file/write', body: p }) },
  '_qwen/file/edit': { call: (p) => ({ method: 'POST', url: '/file/edit', body: p }) },
};

/**
 * Methods whose answer the daemon's client waits for on the session's own
 * stream (the rest it takes from either stream).
 */
export const SESSION_STREAM_REPLIES = new Set([
  'session/prompt',
  'session/cancel',
  'session/set_model',
  'session/set_mode',
  'session/set_config_option',
]);
