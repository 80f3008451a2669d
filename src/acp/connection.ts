/**
 * One `/acp` connection: the client's messages in, and out the answers, the
 * sessions' events and the agent's questions, over one WebSocket or over
 * Streamable HTTP's streams (one for the connection, one per session).
 *
 * A session the connection follows is read from the session's event log,
 * like an SSE client reads it: the same frames, the same ids. Over HTTP the
 * session's stream is resumable (`Last-Event-ID`, with the epoch) because
 * each message it carries for an event has that event's id. An answer about
 * a session goes on that session's stream after every event that came
 * before it (a turn's updates precede the turn's answer, as from a local
 * agent); other answers go on the connection's stream.
 */
import { randomUUID } from 'node:crypto';
import type { EventEnvelope, EventSubscription } from '../services/event-bus.js';
import type { FsClient } from '../services/fs-proxy.js';
import type { SessionEventsOptions } from '../services/session-events.js';
import { METHODS, SESSION_STREAM_REPLIES, type Dialect, type RestCall } from './methods.js';
import {
  RPC,
  failure,
  isObject,
  isRequest,
  isResponse,
  notification,
  parseMessage,
  request,
  sessionOf,
  success,
  type RpcId,
  type RpcMessage,
  type RpcRequest,
  type RpcResponse,
} from './wire.js';

/** Where messages go: an SSE response or a WebSocket. */
export interface Outlet {
  /** Sends one message (with the id of the event it carries, if any); settles once it is out or dropped. */
  write(msg: RpcMessage, eventId?: number): Promise<void>;
  /** Moves the reader's cursor past an event that carries no message for it (a stream's bare `id:`). */
  pass(eventId: number): void;
  readonly closed: boolean;
  /** Resolves when the outlet closes, whoever closed it. */
  readonly done: Promise<void>;
  end(): void;
}

/** What a connection needs of the daemon. */
export interface AcpHost {
  readonly workspace: string;
  /** One REST call as the connection's client, with its headers: status and parsed body. */
  rest(call: RestCall, headers: Record<string, string>, ip: string): Promise<{ status: number; body: unknown }>;
  /**
   * The session's events (throws when the session is live nowhere). `user`
   * is listed among the session's attached users while the read lasts.
   */
  openEvents(
    sessionId: string,
    opts: SessionEventsOptions,
    user?: string,
  ): Promise<{ events: EventSubscription; epoch: string }>;
  /** The id of the session's last event, when the session is live on this node. */
  lastEventId(sessionId: string): number | undefined;
  isNotFound(err: unknown): boolean;
  /** Lets this client serve the session's files (the agent's `fs/*`); returns the undo. */
  serveFiles(sessionId: string, client: FsClient): () => void;
  /** The answer to `initialize`, after the client's params. */
  initialize(params: Record<string, unknown>, connectionId: string): Promise<unknown>;
  warn(obj: Record<string, unknown>, msg: string): void;
}

/** The most messages a connection holds for a stream nobody reads; past it the connection ends. */
const MAX_QUEUED = 4096;
/** How long the agent's file request waits for the client's answer. */
const FS_ANSWER_MS = 60_000;

/** A session as one connection sees it. */
interface Binding {
  readonly sessionId: string;
  /** The outlet of the session's messages: its own SSE stream, or the WebSocket. */
  outlet: Outlet | undefined;
  /** The running read of the session's events. */
  feed: { ac: AbortController; delivered: number; done: boolean } | undefined;
  /** Answers waiting for the events before them to go out (`anchor`: the last such event's id). */
  replies: { anchor: number | undefined; msg: RpcResponse }[];
  /** Over HTTP: the client has read this session's own stream (its answers go there from now on). */
  streamed: boolean;
  /** Loaded by this connection and not streamed yet: the first stream starts at the log's beginning. */
  replayFromStart: boolean;
  /** The agent's questions put to this client: our request id → acpd's permission request id. */
  readonly asks: Map<string, string>;
}

/** A queue in front of an outlet that may come later (the connection's own stream over HTTP). */
class Mailbox {
  private queue: RpcMessage[] = [];
  private outlet: Outlet | undefined;

  constructor(private readonly overflow: () => void) {}

  attach(outlet: Outlet): void {
    this.outlet?.end();
    this.outlet = outlet;
    const queued = this.queue;
    this.queue = [];
    for (const msg of queued) void outlet.write(msg);
  }

  get attached(): boolean {
    return this.outlet !== undefined && !this.outlet.closed;
  }

  post(msg: RpcMessage): void {
    if (this.outlet && !this.outlet.closed) {
      void this.outlet.write(msg);
      return;
    }
    this.queue.push(msg);
    if (this.queue.length > MAX_QUEUED) this.overflow();
  }

  end(): void {
    this.outlet?.end();
    this.queue = [];
  }
}

export class AcpConnection {
  readonly id = randomUUID();
  dialect: Dialect = 'acp';
  initialized = false;
  closed = false;
  /** When the client was last heard from or read from us (for the idle sweep). */
  lastActive = Date.now();
  private readonly bindings = new Map<string, Binding>();
  /** Every open question: our request id → its session. */
  private readonly asks = new Map<string, string>();
  private readonly out: Mailbox;
  private readonly closedHooks: (() => void)[] = [];
  /** The `fs` methods the client said it serves (ACP clients only). */
  private clientFs: { readTextFile: boolean; writeTextFile: boolean } = { readTextFile: false, writeTextFile: false };
  /** The agent's file requests put to this client, by our request id. */
  private readonly fsAsks = new Map<string, { resolve(v: unknown): void; reject(e: Error): void }>();
  private fsAskSeq = 0;
  /** Over WebSocket: the socket, where every message goes. */
  private socket: Outlet | undefined;

  constructor(
    readonly transport: 'http' | 'ws',
    private readonly host: AcpHost,
    private readonly headers: Record<string, string>,
    private readonly ip: string,
    /** The user of the token it was opened with (undefined without tokens): a reader of its sessions. */
    private readonly user?: string,
  ) {
    this.out = new Mailbox(() => this.close());
  }

  onClose(hook: () => void): void {
    this.closedHooks.push(hook);
  }

  /** Over WebSocket, everything goes out on the socket. */
  useSocket(outlet: Outlet): void {
    this.socket = outlet;
    this.out.attach(outlet);
    void outlet.done.then(() => this.close());
  }

  /** Over HTTP: the connection's own stream. */
  attachConnectionStream(outlet: Outlet): void {
    this.lastActive = Date.now();
    this.out.attach(outlet);
  }

  /** Whether any of the connection's streams is being read. */
  get streaming(): boolean {
    if (this.out.attached) return true;
    for (const b of this.bindings.values()) if (b.outlet && !b.outlet.closed) return true;
    return false;
  }

  /**
   * Over HTTP: the stream of one session. A later one replaces it (a client
   * reconnecting before the server saw the old one drop). With a cursor it
   * resumes after that event; without, a session this connection loaded
   * starts at its log's beginning (the history), any other at the present.
   */
  async attachSessionStream(sessionId: string, outlet: Outlet, cursor?: { lastEventId: number; epoch?: string }) {
    this.lastActive = Date.now();
    const b = this.binding(sessionId);
    this.stopFeed(b);
    b.outlet?.end();
    b.outlet = outlet;
    b.streamed = true;
    void outlet.done.then(() => {
      if (b.outlet !== outlet) return;
      b.outlet = undefined;
      this.stopFeed(b);
      this.lastActive = Date.now();
    });
    await this.startFeed(b, cursor);
    this.flush(b);
  }

  /** The first message of a connection (over HTTP, answered in the POST's own response). */
  async initialize(msg: RpcRequest): Promise<RpcResponse> {
    const params = isObject(msg.params) ? msg.params : {};
    // ACP clients say which protocol version they speak; the qwen daemon's client says nothing of it.
    this.dialect = params.protocolVersion === undefined ? 'daemon' : 'acp';
    const caps = isObject(params.clientCapabilities) ? params.clientCapabilities : {};
    const fs = isObject(caps.fs) ? caps.fs : {};
    this.clientFs = { readTextFile: fs.readTextFile === true, writeTextFile: fs.writeTextFile === true };
    this.initialized = true;
    return success(msg.id, await this.host.initialize(params, this.id));
  }

  /**
   * One message from the client. With `direct`, an answer that would go on
   * the connection's stream is handed to it instead (the daemon's client
   * takes such answers in the POST's own response).
   */
  async receive(raw: unknown, direct?: (msg: RpcResponse) => void): Promise<void> {
    this.lastActive = Date.now();
    const msg = parseMessage(raw);
    if (!msg) {
      this.out.post(failure(null, RPC.invalidRequest, 'Malformed JSON-RPC message'));
      return;
    }
    if (isResponse(msg)) return this.answered(msg);
    if (msg.method === 'initialize' && isRequest(msg)) {
      this.out.post(await this.initialize(msg));
      return;
    }
    await this.call(msg.method, isObject(msg.params) ? msg.params : {}, isRequest(msg) ? msg.id : undefined, direct);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const b of this.bindings.values()) {
      this.stopFeed(b);
      b.outlet?.end();
    }
    this.bindings.clear();
    this.asks.clear();
    for (const ask of [...this.fsAsks.values()]) ask.reject(new Error('the client went away'));
    this.out.end();
    for (const hook of this.closedHooks) hook();
  }

  private async call(
    method: string,
    params: Record<string, unknown>,
    id: RpcId | undefined,
    direct?: (msg: RpcResponse) => void,
  ): Promise<void> {
    const spec = METHODS[method];
    const sessionId = sessionOf({ jsonrpc: '2.0', method, params });
    if (!spec) {
      if (id !== undefined)
        this.reply(method, sessionId, failure(id, RPC.methodNotFound, `Method not found: ${method}`), direct);
      return;
    }
    const call = spec.call(params, { dialect: this.dialect, workspace: this.host.workspace });
    if (typeof call === 'string') {
      if (id !== undefined) this.reply(method, sessionId, failure(id, RPC.invalidParams, call), direct);
      return;
    }
    // A session this connection speaks to is followed from now on, before the call, so that what the
    // call causes (a prompt's echo and updates) reaches it. A load is followed after, from the start.
    if (sessionId && method !== 'session/load') await this.follow(sessionId);
    // The client that sent a turn serves its files, when it said it can (an editor and its buffers).
    const undoFiles =
      method === 'session/prompt' && sessionId && (this.clientFs.readTextFile || this.clientFs.writeTextFile)
        ? this.host.serveFiles(sessionId, this.filesFor(sessionId))
        : undefined;
    let res: { status: number; body: unknown };
    try {
      res = await this.host.rest(call, this.headers, this.ip);
    } catch (err) {
      if (id !== undefined) this.reply(method, sessionId, failure(id, RPC.internalError, String(err)), direct);
      return;
    } finally {
      undoFiles?.();
    }
    if (this.closed) return;
    if (res.status >= 400) {
      if (id !== undefined) this.reply(method, sessionId, restError(id, res.status, res.body), direct);
      return;
    }
    const created = isObject(res.body) && typeof res.body.sessionId === 'string' ? res.body.sessionId : undefined;
    if (method === 'session/new' && created) await this.follow(created);
    if (method === 'session/load' && sessionId) {
      const b = this.binding(sessionId);
      if (!b.feed) b.replayFromStart = true;
      await this.follow(sessionId);
    }
    if (id !== undefined) {
      const result = spec.result ? spec.result(res.body ?? {}, { dialect: this.dialect }) : (res.body ?? {});
      this.reply(method, sessionId, success(id, result), direct);
    }
  }

  /** The agent's file access, put to this client over the session's stream. */
  private filesFor(sessionId: string): FsClient {
    const ask = (method: string, params: unknown) =>
      new Promise<unknown>((resolve, reject) => {
        const id = `acpd-fs-${++this.fsAskSeq}`;
        const timer = setTimeout(
          () => settle(() => reject(new Error(`the client did not answer ${method}`))),
          FS_ANSWER_MS,
        );
        const settle = (then: () => void) => {
          clearTimeout(timer);
          this.fsAsks.delete(id);
          then();
        };
        this.fsAsks.set(id, { resolve: (v) => settle(() => resolve(v)), reject: (e) => settle(() => reject(e)) });
        this.sendToSession(sessionId, request(id, method, params));
      });
    return {
      ...(this.clientFs.readTextFile
        ? { readTextFile: async (req) => (await ask('fs/read_text_file', req)) as { content: string } }
        : {}),
      ...(this.clientFs.writeTextFile
        ? { writeTextFile: async (req) => (await ask('fs/write_text_file', req)) ?? {} }
        : {}),
    };
  }

  /** A message of a session: on its stream when it has one, else the connection's. */
  private sendToSession(sessionId: string, msg: RpcMessage): void {
    const outlet = this.bindings.get(sessionId)?.outlet;
    if (outlet && !outlet.closed) void outlet.write(msg);
    else this.out.post(msg);
  }

  /** A client's answer to one of the agent's questions: its vote, as `POST /permission/:id` would cast it. */
  private async answered(msg: RpcResponse): Promise<void> {
    const fsAsk = typeof msg.id === 'string' ? this.fsAsks.get(msg.id) : undefined;
    if (fsAsk) {
      if ('result' in msg) fsAsk.resolve(msg.result);
      else fsAsk.reject(new Error(msg.error.message));
      return;
    }
    const askId = typeof msg.id === 'string' ? msg.id : undefined;
    const sessionId = askId ? this.asks.get(askId) : undefined;
    if (!askId || !sessionId) return;
    this.asks.delete(askId);
    const b = this.bindings.get(sessionId);
    const requestId = b?.asks.get(askId);
    b?.asks.delete(askId);
    if (!requestId) return;
    const vote = 'result' in msg && isObject(msg.result) ? msg.result : { outcome: { outcome: 'cancelled' } };
    const res = await this.host.rest(
      { method: 'POST', url: `/permission/${encodeURIComponent(requestId)}`, body: vote },
      this.headers,
      this.ip,
    );
    // A question settled by another client first is simply not counted (404), as for REST.
    if (res.status >= 400 && res.status !== 404) {
      this.host.warn({ requestId, status: res.status, body: res.body }, '/acp permission answer refused');
    }
  }

  private binding(sessionId: string): Binding {
    let b = this.bindings.get(sessionId);
    if (!b) {
      b = {
        sessionId,
        outlet: undefined,
        feed: undefined,
        replies: [],
        streamed: false,
        replayFromStart: false,
        asks: new Map(),
      };
      this.bindings.set(sessionId, b);
    }
    return b;
  }

  /**
   * Makes sure the session's events reach this client: over WebSocket from
   * now on; over HTTP when its session stream is open (a stream opened
   * before the session was live starts now).
   */
  private async follow(sessionId: string): Promise<void> {
    const b = this.binding(sessionId);
    if (this.transport === 'ws' && !b.outlet) b.outlet = this.socket;
    if (b.outlet && !b.feed) await this.startFeed(b);
  }

  private async startFeed(b: Binding, cursor?: { lastEventId: number; epoch?: string }): Promise<void> {
    if (!b.outlet || b.outlet.closed) return;
    const ac = new AbortController();
    const from = cursor?.lastEventId ?? (b.replayFromStart ? 0 : undefined);
    let opened: { events: EventSubscription; epoch: string };
    try {
      opened = await this.host.openEvents(
        b.sessionId,
        {
          ...(from !== undefined ? { lastEventId: from } : {}),
          ...(cursor?.epoch !== undefined ? { epoch: cursor.epoch } : {}),
          signal: ac.signal,
        },
        this.user,
      );
    } catch (err) {
      // Not live anywhere yet (a stream opened before its load): it starts when a call makes it live.
      if (this.host.isNotFound(err)) return;
      throw err;
    }
    if (b.feed || !b.outlet || b.outlet.closed) {
      ac.abort();
      return;
    }
    b.replayFromStart = false;
    const feed = { ac, delivered: from ?? this.host.lastEventId(b.sessionId) ?? 0, done: false };
    b.feed = feed;
    void this.pump(b, feed, opened.events, b.outlet);
  }

  private stopFeed(b: Binding): void {
    b.feed?.ac.abort();
    b.feed = undefined;
  }

  private async pump(b: Binding, feed: NonNullable<Binding['feed']>, events: EventSubscription, outlet: Outlet) {
    try {
      for await (const ev of events) {
        const env = ev.envelope;
        const msgs = this.translate(b, env);
        for (let i = 0; i < msgs.length; i++) {
          await outlet.write(msgs[i], i === msgs.length - 1 ? env.id : undefined);
        }
        if (msgs.length === 0 && env.id !== undefined) outlet.pass(env.id);
        if (env.id !== undefined) feed.delivered = env.id;
        this.flush(b);
      }
    } catch (err) {
      if (!feed.ac.signal.aborted) this.host.warn({ err, sessionId: b.sessionId }, '/acp session feed failed');
    } finally {
      feed.done = true;
      if (b.feed === feed) {
        // The session ended (closed, died, handed over): what waited for its events goes out now.
        // The stream stays open: an answer about the session may still come (its close's), and a client
        // that reads the stream for its answers takes its end for a failure.
        this.flush(b);
        b.feed = undefined;
      }
    }
  }

  /** An answer: on the session's stream when it has one (or must, for the daemon's client), else the connection's. */
  private reply(
    method: string,
    sessionId: string | undefined,
    msg: RpcResponse,
    direct?: (msg: RpcResponse) => void,
  ): void {
    if (sessionId && !this.closed) {
      const b = this.bindings.get(sessionId);
      // An ACP client reads every stream it opened: once it has read the session's, the session's answers
      // go there (after the events before them), and wait for it while it reconnects. The daemon's client
      // waits for some answers on the session stream and takes the others from the connection's, whose
      // reader outlives any one subscription.
      // Over WebSocket everything shares the socket: a followed session's answers only keep their place.
      const open = b?.outlet !== undefined && !b.outlet.closed;
      const onSession =
        this.transport === 'ws'
          ? open
          : this.dialect === 'daemon'
            ? SESSION_STREAM_REPLIES.has(method)
            : b?.streamed === true || open;
      if (onSession) {
        const binding = b ?? this.binding(sessionId);
        const anchor = binding.feed ? this.host.lastEventId(sessionId) : undefined;
        binding.replies.push({ anchor, msg });
        if (binding.replies.length > MAX_QUEUED) return this.close();
        this.flush(binding);
        return;
      }
    }
    if (direct) direct(msg);
    else this.out.post(msg);
  }

  private flush(b: Binding): void {
    const outlet = b.outlet;
    if (!outlet || outlet.closed) return;
    while (b.replies.length > 0) {
      const { anchor, msg } = b.replies[0];
      const ready = anchor === undefined || !b.feed || b.feed.done || b.feed.delivered >= anchor;
      if (!ready) return;
      b.replies.shift();
      void outlet.write(msg);
    }
  }

  /** One event as the messages this client reads. */
  private translate(b: Binding, env: EventEnvelope): RpcMessage[] {
    const data = env.data as Record<string, unknown>;
    switch (env.type) {
      case 'session_update':
        return [notification('session/update', env.data)];
      case 'permission_request':
        // The daemon's client reads WebSocket requests as events, without their id: it gets the event.
        if (this.dialect === 'daemon' && this.transport === 'ws') return [this.notify(env)];
        return [this.ask(b, data)];
      case 'permission_resolved': {
        if (this.dialect === 'daemon') return [this.notify(env)];
        const askId = askIdOf(String(data.requestId));
        if (!b.asks.delete(askId)) return [];
        this.asks.delete(askId);
        return [notification('$/cancel_request', { requestId: askId })];
      }
      case 'session_state': {
        if (this.dialect === 'daemon') return [this.notify(env)];
        // A client that joins while a question waits is asked it too.
        const pending = Array.isArray(data.pendingPermissions) ? data.pendingPermissions : [];
        return pending
          .filter((p): p is Record<string, unknown> => isObject(p) && !b.asks.has(askIdOf(String(p.requestId))))
          .map((p) => this.ask(b, { ...p, sessionId: b.sessionId }));
      }
      default:
        return this.dialect === 'daemon' ? [this.notify(env)] : [];
    }
  }

  /** An event as the daemon's client reads it over ACP (`_qwen/notify`). */
  private notify(env: EventEnvelope): RpcMessage {
    return notification('_qwen/notify', {
      kind: env.type,
      data: env.data,
      ...(env.originatorClientId !== undefined ? { originatorClientId: env.originatorClientId } : {}),
    });
  }

  private ask(b: Binding, data: Record<string, unknown>): RpcMessage {
    const requestId = String(data.requestId);
    const askId = askIdOf(requestId);
    b.asks.set(askId, requestId);
    this.asks.set(askId, b.sessionId);
    return request(askId, 'session/request_permission', {
      sessionId: data.sessionId ?? b.sessionId,
      toolCall: data.toolCall,
      options: data.options,
      _meta: { qwen: { requestId } },
    });
  }
}

/** Our request id for the question of one acpd permission request (a string: never taken for an answer). */
const askIdOf = (requestId: string) => `acpd-permission-${requestId}`;

/**
 * A REST error as a JSON-RPC one: 404 is ACP's "resource not found", another
 * 4xx invalid params, the rest internal. `data` is acpd's envelope with the
 * HTTP status, which the daemon's client turns back into the REST error.
 */
function restError(id: RpcId, status: number, body: unknown): RpcResponse {
  const envelope = isObject(body) ? body : {};
  const message = typeof envelope.error === 'string' ? envelope.error : `HTTP ${status}`;
  const code =
    status === 404 ? RPC.resourceNotFound : status >= 400 && status < 500 ? RPC.invalidParams : RPC.internalError;
  return failure(id, code, message, { ...envelope, httpStatus: status });
}
