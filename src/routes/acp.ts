/**
 * ACP itself at `/acp`: the ACP remote transport (Streamable HTTP and
 * WebSocket), serving the same sessions as the REST routes.
 *
 * - `POST /acp` carries one JSON-RPC message. `initialize` opens a connection
 *   and is answered in the response, with its `Acp-Connection-Id`; any other
 *   message names that connection and is accepted with 202, its answer going
 *   out on a stream.
 * - `GET /acp` (`Accept: text/event-stream`) is a stream: the connection's
 *   own, or with `Acp-Session-Id` one session's, which resumes after a
 *   `Last-Event-ID` (and `X-Qwen-Event-Epoch`) as the REST event stream does.
 * - `GET /acp` with `Upgrade: websocket` is a connection whose messages all
 *   go over the socket; `DELETE /acp` ends an HTTP connection.
 *
 * The three are ordinary Fastify routes, so the Origin/Host/token guards and
 * load shedding apply before anything else. They draw on no rate budget of
 * their own: each message is served by the REST route it names (see
 * acp/methods.ts), which draws on its budget as a REST call does.
 */
import type { IncomingMessage } from 'node:http';
import { once } from 'node:events';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import websocket from '@fastify/websocket';
import fp from 'fastify-plugin';
import type { InitializeResponse } from '@agentclientprotocol/sdk';
import { AcpConnection, type AcpHost, type Outlet } from '../acp/connection.js';
import { SESSION_STREAM_REPLIES } from '../acp/methods.js';
import { RPC, failure, isObject, isRequest, parseMessage, type RpcMessage } from '../acp/wire.js';
import { ClientIdTakenError, SessionNotFoundError } from '../errors.js';
import { openSessionEvents } from '../services/session-events.js';
import { ACP_PROTOCOL_VERSION } from '../services/acp-sdk.js';

export const ACP_PATH = '/acp';
const CONNECTION_HEADER = 'acp-connection-id';
const SESSION_HEADER = 'acp-session-id';
const EPOCH_HEADER = 'x-qwen-event-epoch';

/** The most `/acp` connections at once; past it, `initialize` is refused (503). */
const MAX_CONNECTIONS = 1024;
/** An HTTP connection none of whose streams is read, and whose client is silent this long, is ended. */
const IDLE_MS = 5 * 60_000;

/** The request headers a message is served with: who the client is, and what the guards read. */
const FORWARDED = ['authorization', 'host', 'origin', 'user-agent', 'x-qwen-client-id', 'x-forwarded-for'];

/** The `ws` server's event that lets an upgrade add headers to its 101. */
interface HeadersEmitter {
  on(event: 'headers', listener: (headers: string[], req: IncomingMessage) => void): void;
}

/** What is used of a `ws` socket (`ws` ships no types, and @types/ws is not a dependency). */
interface Socket {
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: string, cb?: (err?: Error) => void): void;
  ping(): void;
  close(code?: number, reason?: string): void;
  on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): void;
  on(event: 'close', listener: () => void): void;
}

/** Past this many unsent bytes on a socket, a writer waits for its message to go out. */
const SOCKET_HIGH_WATER = 1024 * 1024;

function headersOf(req: FastifyRequest): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of FORWARDED) {
    const v = req.headers[name];
    if (typeof v === 'string') out[name] = v;
  }
  return out;
}

function parseCursor(raw: string | undefined): number | undefined {
  if (raw === undefined || !/^\d{1,16}$/.test(raw)) return undefined;
  const n = Number(raw);
  return Number.isSafeInteger(n) ? n : undefined;
}

function jsonError(reply: FastifyReply, status: number, message: string) {
  return reply.code(status).send({ error: message });
}

/** One SSE response as an outlet: `id:` lines for events, one `data:` line per message. */
function sseOutlet(reply: FastifyReply): Outlet {
  const sse = reply.sse;
  const raw = reply.raw;
  let closed = false;
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  sse.onClose(() => {
    closed = true;
    finish();
  });
  reply.header('Cache-Control', 'no-cache, no-transform');
  sse.sendHeaders();
  // The headers leave with the first bytes: a comment, so a client waiting for them is not kept waiting.
  raw.write(': acp\n\n');
  return {
    get closed() {
      return closed || !sse.isConnected;
    },
    done,
    async write(msg: RpcMessage, eventId?: number) {
      if (closed || !sse.isConnected || raw.writableEnded) return;
      const chunk = `${eventId !== undefined ? `id: ${eventId}\n` : ''}data: ${JSON.stringify(msg)}\n\n`;
      if (raw.write(chunk)) return;
      await Promise.race([once(raw, 'drain').catch(() => {}), done]);
    },
    pass(eventId: number) {
      if (!closed && sse.isConnected && !raw.writableEnded) raw.write(`id: ${eventId}\n\n`);
    },
    end() {
      if (closed) return;
      closed = true;
      sse.close();
      finish();
    },
  };
}

/** A WebSocket as an outlet. It is pinged every `heartbeatMs`, so that a proxy does not take it for idle. */
function socketOutlet(socket: Socket, heartbeatMs: number): Outlet {
  let closed = false;
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  const heartbeat = heartbeatMs > 0 ? setInterval(() => socket.ping(), heartbeatMs) : undefined;
  heartbeat?.unref();
  socket.on('close', () => {
    closed = true;
    clearInterval(heartbeat);
    finish();
  });
  return {
    get closed() {
      return closed;
    },
    done,
    async write(msg: RpcMessage) {
      if (closed || socket.readyState !== 1) return;
      const data = JSON.stringify(msg);
      if (socket.bufferedAmount < SOCKET_HIGH_WATER) return socket.send(data);
      await new Promise<void>((resolve) => socket.send(data, () => resolve()));
    },
    pass() {
      // A WebSocket has no cursor to move.
    },
    end() {
      if (closed) return;
      closed = true;
      clearInterval(heartbeat);
      socket.close(1000, 'connection closed');
      finish();
    },
  };
}

function acpHost(app: FastifyInstance): AcpHost {
  /**
   * The hosted agent's answer to its own initialize. Before any agent has
   * run, one is started for it (and let go): an ACP client decides what to
   * call from these capabilities, so "none yet" would mislead it.
   */
  async function hosted(): Promise<InitializeResponse> {
    const known = app.channels.lastInitialize;
    if (known) return known;
    const lease = await app.channels.acquire();
    await lease.release();
    return app.channels.lastInitialize ?? { protocolVersion: ACP_PROTOCOL_VERSION };
  }
  return {
    workspace: app.sessions.workspace,
    async rest(call, headers, ip) {
      const res = await app.inject({
        method: call.method,
        url: call.url,
        remoteAddress: ip,
        headers: { ...headers, ...(call.body ? { 'content-type': 'application/json' } : {}) },
        ...(call.body ? { payload: JSON.stringify(call.body) } : {}),
      });
      let body: unknown;
      try {
        body = res.body === '' ? undefined : JSON.parse(res.body);
      } catch {
        body = { error: res.body };
      }
      return { status: res.statusCode, body };
    },
    openEvents: (sessionId, opts, user) => openSessionEvents(app, sessionId, opts, user),
    lastEventId: (sessionId) => app.sessions.get(sessionId)?.events.lastEventId,
    isNotFound: (err) => err instanceof SessionNotFoundError,
    serveFiles: (sessionId, client) => app.channels.fs.serveBy(sessionId, client),
    async initialize(_params, connectionId) {
      const agent = await hosted();
      const caps = agent.agentCapabilities ?? {};
      return {
        protocolVersion: ACP_PROTOCOL_VERSION,
        // acpd itself lists and closes sessions, whatever the agent does.
        agentCapabilities: {
          ...caps,
          sessionCapabilities: { ...(caps.sessionCapabilities ?? {}), list: {}, close: {} },
        },
        authMethods: [],
        ...(agent.agentInfo ? { agentInfo: agent.agentInfo } : {}),
        _meta: { qwen: { connectionId } },
      };
    },
    warn: (obj, msg) => app.log.warn(obj, msg),
  };
}

/**
 * An upgrade request answered over HTTP (a guard's 401 or 403, a 404, a
 * plain GET handler) has no one left to close its socket: Node stopped
 * tracking it when it emitted 'upgrade', so the client's socket stays open
 * and `close()` waits for it. Registered at the root, for every route
 * (@fastify/websocket takes all of the server's upgrades): the socket is
 * ended once the answer is written; an upgraded request was hijacked and
 * never gets here.
 */
export const upgradesEnd = fp(async (app) => {
  app.addHook('onResponse', async (req) => {
    if (req.headers.upgrade !== undefined) req.raw.socket.end();
  });
});

const acpRoutes: FastifyPluginAsync<{ heartbeatMs: number }> = async (app, opts) => {
  const host = acpHost(app);
  const connections = new Map<string, AcpConnection>();
  const owners = new Map<string, string | undefined>();

  function open(transport: 'http' | 'ws', req: FastifyRequest): AcpConnection | undefined {
    if (connections.size >= MAX_CONNECTIONS) return undefined;
    const conn = new AcpConnection(transport, host, headersOf(req), req.ip, req.identity?.user);
    connections.set(conn.id, conn);
    // Its messages run with the headers it opened with: only their user may send on it or read it.
    owners.set(conn.id, req.identity?.user);
    conn.onClose(() => {
      connections.delete(conn.id);
      owners.delete(conn.id);
    });
    return conn;
  }

  const sweep = setInterval(() => {
    const now = Date.now();
    for (const conn of connections.values()) {
      if (conn.transport === 'http' && !conn.streaming && now - conn.lastActive > IDLE_MS) conn.close();
    }
  }, IDLE_MS / 5);
  sweep.unref();
  app.addHook('onClose', async () => {
    clearInterval(sweep);
    for (const conn of [...connections.values()]) conn.close();
  });

  function connectionOf(req: FastifyRequest, reply: FastifyReply): AcpConnection | undefined {
    const id = req.headers[CONNECTION_HEADER];
    if (typeof id !== 'string' || id === '') {
      void jsonError(reply, 400, 'Missing Acp-Connection-Id');
      return undefined;
    }
    const conn = connections.get(id);
    if (!conn) void jsonError(reply, 404, 'Unknown Acp-Connection-Id');
    else if (owners.get(id) !== req.identity?.user) throw new ClientIdTakenError(id);
    return conn;
  }

  const hidden = { hide: true } as Record<string, unknown>;
  // Reading is the least a client of the transport can do; each message it carries is its REST route, with that
  // route's scope (a prompt needs `prompt`, a vote `approve`), checked when it is served.
  const transport = {
    policy: { probe: false, shed: true, budget: 'none', promptDuration: false, scope: 'read' },
  } as const;

  app.post(ACP_PATH, { schema: hidden, config: transport }, async (req, reply) => {
    const body = req.body;
    if (Array.isArray(body)) {
      return reply.code(400).send(failure(null, RPC.invalidRequest, 'JSON-RPC batches are not supported'));
    }
    const msg = parseMessage(body);
    if (msg && isRequest(msg) && msg.method === 'initialize') {
      if (req.headers[CONNECTION_HEADER] !== undefined) {
        return jsonError(reply, 400, 'initialize is not allowed on an existing connection');
      }
      const conn = open('http', req);
      if (!conn) return jsonError(reply, 503, 'Too many ACP connections');
      reply.header('Acp-Connection-Id', conn.id);
      return conn.initialize(msg);
    }
    const conn = connectionOf(req, reply);
    if (!conn) return reply;
    if (!msg || !isObject(body)) return reply.code(400).send(failure(null, RPC.invalidRequest, 'Malformed message'));
    // The daemon's client takes an answer in the POST's response when it comes as JSON (the RFD's
    // streams are for the protocol's own clients, which read every answer there): a request whose answer
    // would go on the connection's stream is answered here. A prompt's answer still rides its session's
    // stream, after the turn's events, and so does what every ACP client sends.
    if (conn.dialect === 'daemon' && isRequest(msg) && !SESSION_STREAM_REPLIES.has(msg.method)) {
      let answer: RpcMessage | undefined;
      await conn.receive(body, (m) => (answer = m));
      return answer ? reply.code(200).send(answer) : reply.code(202).send();
    }
    // The answer goes out on a stream; this response only says the message was taken.
    void conn.receive(body).catch((err: unknown) => req.log.warn({ err }, '/acp message failed'));
    return reply.code(202).send();
  });

  await app.register(websocket, { options: { maxPayload: app.initialConfig.bodyLimit } });
  const upgrades = new WeakMap<IncomingMessage, AcpConnection>();
  const wss = app.websocketServer as unknown as HeadersEmitter;
  wss.on('headers', (headers, raw) => {
    const conn = upgrades.get(raw);
    if (conn) headers.push(`Acp-Connection-Id: ${conn.id}`);
  });

  app.route({
    method: 'GET',
    url: ACP_PATH,
    schema: hidden,
    config: transport,
    sse: 'manual',
    exposeHeadRoute: false,
    // The WebSocket's connection exists before the 101, so its id can go on it; the guards ran before this.
    preHandler: async (req, reply) => {
      if (req.headers.upgrade?.toLowerCase() !== 'websocket') return;
      const conn = open('ws', req);
      if (!conn) return jsonError(reply, 503, 'Too many ACP connections');
      upgrades.set(req.raw, conn);
      // An upgrade that never completes leaves no connection behind.
      req.raw.socket.once('close', () => conn.close());
    },
    handler: async (req, reply) => {
      if (!String(req.headers.accept ?? '').includes('text/event-stream')) {
        return jsonError(reply, 406, 'GET /acp serves text/event-stream');
      }
      const conn = connectionOf(req, reply);
      if (!conn) return reply;
      const sessionId = req.headers[SESSION_HEADER];
      const outlet = sseOutlet(reply);
      if (typeof sessionId === 'string' && sessionId !== '') {
        const lastEventId = parseCursor(req.headers['last-event-id'] as string | undefined);
        const epoch = req.headers[EPOCH_HEADER];
        const cursor =
          lastEventId === undefined ? undefined : { lastEventId, ...(typeof epoch === 'string' ? { epoch } : {}) };
        await conn.attachSessionStream(sessionId, outlet, cursor);
      } else {
        conn.attachConnectionStream(outlet);
      }
      await outlet.done;
      return reply;
    },
    wsHandler: (ws, req) => {
      const socket = ws as unknown as Socket;
      const conn = upgrades.get(req.raw);
      if (!conn || conn.closed) return socket.close(1011, 'connection not prepared');
      conn.useSocket(socketOutlet(socket, opts.heartbeatMs));
      socket.on('message', (data, isBinary) => {
        let parsed: unknown;
        try {
          parsed = isBinary ? undefined : JSON.parse(data.toString('utf8'));
        } catch {
          parsed = undefined;
        }
        if (parsed === undefined) {
          socket.send(JSON.stringify(failure(null, RPC.parseError, 'Parse error')));
          return;
        }
        void conn.receive(parsed).catch((err: unknown) => req.log.warn({ err }, '/acp message failed'));
      });
    },
  });

  app.delete(ACP_PATH, { schema: hidden, config: transport }, async (req, reply) => {
    const conn = connectionOf(req, reply);
    if (!conn) return reply;
    conn.close();
    return reply.code(202).send();
  });
};

export default acpRoutes;
