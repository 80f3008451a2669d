/**
 * ACP itself at `/acp` (issue 14, first step): the ACP remote transport's
 * Streamable HTTP side (POST a JSON-RPC message; GET an SSE stream per
 * connection or per session; DELETE ends a connection; `Acp-Connection-Id`
 * and `Acp-Session-Id` headers), served by the SDK's experimental
 * `AcpServer`. acpd supplies the agent side: one `AgentApp` per ACP
 * connection whose handlers call the same registry the REST routes call, so
 * an ACP client and a REST client share sessions, prompts, cancels and votes.
 *
 * The three methods are ordinary Fastify routes with a policy, so the
 * Origin/Host/token guards, load shedding and rate budgets apply as to REST.
 * The body is parsed by acpd's own JSON parser (its limits and errors) and
 * handed to the SDK as a web `Request`; the SDK's web `Response` (JSON, or an
 * SSE body) is sent as it is (Fastify 5 sends a `Response` natively).
 */
import type { IncomingMessage } from 'node:http';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import websocket from '@fastify/websocket';
import fp from 'fastify-plugin';
import {
  PROTOCOL_VERSION,
  RequestError,
  agent,
  type AgentConnection,
  type AgentContext,
  type InitializeResponse,
  type RequestPermissionRequest,
  type SessionNotification,
} from '@agentclientprotocol/sdk';
import { AcpServer, type PreparedWebSocketUpgrade } from '@agentclientprotocol/sdk/experimental/server';
import { policies } from '../plugins/route-policy.js';
import { isWireError } from '../errors.js';
import type { SessionRegistry } from '../services/session-registry.js';

export const ACP_PATH = '/acp';

/** Request headers that describe acpd's hop, not the ACP message; the SDK's `Request` gets the rest. */
const HOP_HEADERS = new Set(['host', 'connection', 'content-length', 'transfer-encoding', 'keep-alive', 'upgrade']);

/** The socket shape the SDK accepts (`WebSocketLike`; the server entry point does not export its name). */
type WebSocketServerSocket = Parameters<PreparedWebSocketUpgrade['accept']>[0];

/** The `ws` server's event that lets an upgrade add headers to its 101. */
interface HeadersEmitter {
  on(event: 'headers', listener: (headers: string[], req: IncomingMessage) => void): void;
}

/** How many sessions one `session/list` answer holds. */
const LIST_PAGE = 50;

/**
 * acpd's domain errors as JSON-RPC errors: a 404 is ACP's resource not
 * found, another 4xx invalid params; `data` keeps acpd's envelope (its
 * `code`, `sessionId`, …) for clients that read it.
 */
function rpcError(err: unknown): unknown {
  if (!isWireError(err)) return err;
  const status = err.statusCode ?? 500;
  const code = status === 404 ? -32002 : status >= 400 && status < 500 ? -32602 : -32603;
  return new RequestError(code, err.message, err.envelope());
}

/** Runs a handler with acpd's errors turned into JSON-RPC ones. */
async function rpc<T>(work: () => Promise<T> | T): Promise<T> {
  try {
    return await work();
  } catch (err) {
    throw rpcError(err);
  }
}

/** One bus subscription of one ACP connection: what it has forwarded, and who waits for that. */
interface Follow {
  readonly ac: AbortController;
  forwardedId: number;
  waiters: { id: number; resolve: () => void }[];
  /** The open `session/request_permission` of each acpd permission request id, to withdraw it once settled. */
  readonly asks: Map<string, AbortController>;
}

/**
 * The agent side of one ACP connection. Sessions it creates or attaches are
 * followed on their bus: `session_update` frames become `session/update`
 * notifications, `permission_request` frames become
 * `session/request_permission` requests whose answer is this client's vote.
 */
function connectionAgent(sessions: SessionRegistry, handshake: () => Promise<InitializeResponse>) {
  const follows = new Map<string, Follow>();
  let connection: AgentConnection | undefined;

  function unfollowAll(): void {
    for (const f of follows.values()) {
      f.ac.abort();
      for (const ask of f.asks.values()) ask.abort();
    }
    follows.clear();
  }

  function ask(client: AgentContext, f: Follow, data: Record<string, unknown>): void {
    const requestId = data.requestId as string;
    const ac = new AbortController();
    f.asks.set(requestId, ac);
    const params = {
      sessionId: data.sessionId,
      toolCall: data.toolCall,
      options: data.options,
    } as RequestPermissionRequest;
    client
      .request('session/request_permission', params, { cancellationSignal: ac.signal, stopWaitingOnCancel: true })
      .then((answer) => {
        // A vote on a request another client settled first is simply not counted.
        if (!ac.signal.aborted) sessions.respondToPermission(requestId, answer);
      })
      .catch(() => {})
      .finally(() => f.asks.delete(requestId));
  }

  /** Follows a session's bus from now on (once per connection and session). */
  function follow(sessionId: string, client: AgentContext): void {
    if (follows.has(sessionId)) return;
    const f: Follow = { ac: new AbortController(), forwardedId: 0, waiters: [], asks: new Map() };
    const events = sessions.subscribe(sessionId, { signal: f.ac.signal });
    f.forwardedId = sessions.require(sessionId).events.lastEventId;
    follows.set(sessionId, f);
    void (async () => {
      try {
        for await (const ev of events) {
          const { type, data, id } = ev.envelope;
          if (type === 'session_update') {
            await client.notify('session/update', data as SessionNotification);
          } else if (type === 'permission_request') {
            ask(client, f, data as Record<string, unknown>);
          } else if (type === 'permission_resolved') {
            f.asks.get((data as { requestId: string }).requestId)?.abort();
          }
          if (id !== undefined) {
            f.forwardedId = id;
            f.waiters = f.waiters.filter((w) => (w.id <= id ? (w.resolve(), false) : true));
          }
        }
      } catch {
        // The connection closed under a notify: nothing left to forward to.
      } finally {
        follows.delete(sessionId);
        for (const w of f.waiters) w.resolve();
      }
    })();
  }

  /** Resolves once every frame up to the session's current last event has gone out on this connection. */
  function flushed(sessionId: string): Promise<void> {
    const f = follows.get(sessionId);
    const target = sessions.get(sessionId)?.events.lastEventId;
    if (!f || target === undefined || f.forwardedId >= target) return Promise.resolve();
    return new Promise((resolve) => f.waiters.push({ id: target, resolve }));
  }

  return agent()
    .onConnect((conn) => {
      connection = conn;
      void conn.closed.finally(unfollowAll);
    })
    .onRequest('initialize', async (): Promise<InitializeResponse> => {
      const hosted = await handshake();
      return {
        protocolVersion: PROTOCOL_VERSION,
        agentCapabilities: hosted.agentCapabilities ?? {},
        authMethods: [],
        ...(hosted.agentInfo ? { agentInfo: hosted.agentInfo } : {}),
      };
    })
    .onRequest('session/new', ({ params, client }) =>
      rpc(async () => {
        const handle = await sessions.spawnOrAttach({ workspaceCwd: params.cwd, sessionScope: 'thread' });
        follow(handle.sessionId, client);
        return { sessionId: handle.sessionId };
      }),
    )
    .onRequest('session/resume', ({ params, client }) => {
      // A session live here (created over REST or by another ACP client) is joined as it is.
      if (!sessions.get(params.sessionId)) throw RequestError.resourceNotFound(params.sessionId);
      follow(params.sessionId, client);
      return {};
    })
    .onRequest('session/list', ({ params }) =>
      rpc(async () => {
        // The daemon serves one workspace: another cwd has no sessions here.
        if (params.cwd && params.cwd !== sessions.workspace) return { sessions: [] };
        const page = await sessions.catalog.page({
          workspaceCwd: sessions.workspace,
          size: LIST_PAGE,
          ...(params.cursor ? { cursor: params.cursor } : {}),
        });
        return {
          sessions: page.sessions.map((s) => ({
            sessionId: s.sessionId,
            cwd: s.workspaceCwd,
            updatedAt: s.updatedAt,
            ...(s.displayName !== undefined ? { title: s.displayName } : {}),
          })),
          ...(page.nextCursor !== undefined ? { nextCursor: page.nextCursor } : {}),
        };
      }),
    )
    .onRequest('session/close', ({ params }) =>
      rpc(async () => {
        // Closed for everyone, as DELETE /session/:id: a running turn is cancelled first.
        await sessions.closeSession(params.sessionId);
        return {};
      }),
    )
    .onRequest('session/prompt', ({ params, client, signal }) =>
      rpc(async () => {
        const { sessionId, ...body } = params;
        follow(sessionId, client);
        const answer = await sessions.sendPrompt(sessionId, body, signal).done;
        // The turn's updates reach the client before its answer, as from a local agent.
        await flushed(sessionId);
        return answer;
      }),
    )
    .onNotification('session/cancel', async ({ params }) => {
      await sessions.cancel(params.sessionId).catch(() => {});
    })
    .onRequest('*', ({ method }) => {
      void connection;
      throw RequestError.methodNotFound(method);
    });
}

/** The `Request` the SDK reads: the client's headers and acpd's already parsed body. */
function webRequest(req: FastifyRequest, signal: AbortSignal): Request {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || HOP_HEADERS.has(name)) continue;
    headers.set(name, Array.isArray(value) ? value.join(', ') : value);
  }
  const hasBody = req.method === 'POST' && req.body !== undefined;
  return new Request(`http://${req.host}${ACP_PATH}`, {
    method: req.method,
    headers,
    signal,
    ...(hasBody ? { body: typeof req.body === 'string' ? req.body : JSON.stringify(req.body) } : {}),
  });
}

/** An SSE comment, sent first so the stream's headers leave at once rather than with its first message. */
const OPENING = new TextEncoder().encode(': acp\n\n');

/**
 * The SDK's SSE body behind an opening comment. Without it the client waits
 * for the headers until the first message: Node sends a response's headers
 * with its first body chunk. Still pulled, one read per read, so messages the
 * client has not read stay queued in the SDK.
 */
function opened(body: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let first = true;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (first) {
        first = false;
        controller.enqueue(OPENING);
        return;
      }
      const next = await reader.read();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
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

const acpRoutes: FastifyPluginAsync = async (app) => {
  const sessions = app.sessions;
  const server = new AcpServer({
    createAgent: () => connectionAgent(sessions, handshake),
  });

  /**
   * The hosted agent's answer to its own initialize. Before any agent has
   * run, one is started for it (and let go): an ACP client decides what to
   * call from these capabilities, so "none yet" would mislead it.
   */
  async function handshake(): Promise<InitializeResponse> {
    const known = app.channels.lastInitialize;
    if (known) return known;
    const lease = await app.channels.acquire();
    await lease.release();
    return app.channels.lastInitialize ?? { protocolVersion: PROTOCOL_VERSION };
  }
  app.addHook('onClose', async () => {
    await server.close();
  });

  const handler = async (req: FastifyRequest, reply: FastifyReply) => {
    const ac = new AbortController();
    // A client that leaves before its answer aborts what the SDK waits on for it.
    reply.raw.once('close', () => {
      if (!reply.raw.writableEnded) ac.abort();
    });
    const res = await server.handleRequest(webRequest(req, ac.signal));
    if (!res.body || !res.headers.get('content-type')?.startsWith('text/event-stream')) return res;
    return new Response(opened(res.body), { status: res.status, headers: res.headers });
  };
  // WebSocket: @fastify/websocket routes the upgrade request through Fastify, so the guards run
  // before it; the SDK's connection is prepared in preHandler (after them) and its id goes on the 101.
  await app.register(websocket, { options: { maxPayload: app.initialConfig.bodyLimit } });
  const upgrades = new WeakMap<IncomingMessage, PreparedWebSocketUpgrade>();
  // Typed here by what is used: `ws` ships no types of its own and @types/ws is not a dependency.
  const wss = app.websocketServer as unknown as HeadersEmitter;
  wss.on('headers', (headers, raw) => {
    const up = upgrades.get(raw);
    if (up) headers.push(`Acp-Connection-Id: ${up.connectionId}`);
  });

  const hidden = { hide: true } as Record<string, unknown>;
  app.post(ACP_PATH, { schema: hidden, config: { policy: policies.mutation } }, handler);
  app.route({
    method: 'GET',
    url: ACP_PATH,
    schema: hidden,
    config: { policy: policies.read },
    exposeHeadRoute: false,
    preHandler: async (req) => {
      if (req.headers.upgrade?.toLowerCase() !== 'websocket') return;
      const up = server.prepareWebSocketUpgrade();
      upgrades.set(req.raw, up);
      // An upgrade that never completes (a bad handshake, the client gone) leaves no connection behind.
      req.raw.socket.once('close', () => up.reject());
    },
    handler,
    wsHandler: (ws, req) => {
      const socket = ws as unknown as WebSocketServerSocket;
      const up = upgrades.get(req.raw);
      if (!up) return socket.close(1011, 'upgrade not prepared');
      up.accept(socket);
    },
  });
  app.delete(ACP_PATH, { schema: hidden, config: { policy: policies.mutation } }, handler);
};

export default acpRoutes;
