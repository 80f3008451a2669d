/**
 * The live sessions of the daemon: the map and the session cap, create or
 * attach, kill and detach, the teardown when an agent process goes away, and
 * the drain. What a single session does (queues, attaches, prompt, model) is
 * `Session`'s; what the agent calls lands in the channel supervisor's
 * router; restores are the restore coordinator's.
 */
import { actorMeta, type Actor } from './actor.js';
import type { Voter } from './permission-policy.js';
import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { RequestPermissionResponse } from '@agentclientprotocol/sdk';
import {
  DrainingError,
  InvalidSessionScopeError,
  PendingPromptNotFoundError,
  SessionLimitExceededError,
  SessionNotFoundError,
  ShuttingDownError,
} from '../errors.js';
import type { AgentChannel, ExitInfo } from './agent-channel.js';
import type { ChannelLease, ChannelSupervisor } from './channel-supervisor.js';
import { drainPrompts } from './drain.js';
import {
  BusStats,
  EventBus,
  type BusOptions,
  type EventEnvelope,
  type EventSubscription,
  type SubscribeOptions,
} from './event-bus.js';
import type { SessionSnapshot } from '../schemas/events.js';
import type { SessionStatus } from '../schemas/sessions.js';
import type { EventLog } from './event-log.js';
import type { PermissionBroker } from './permissions.js';
import type { Admission, CurrentTurn, PendingPrompt } from './prompt-queue.js';
import { Session, type SessionContext } from './session.js';
import { isPromise, type MaybePromise } from './maybe-promise.js';
import { SessionCatalog, type IsLive } from './session-catalog.js';
import { displayNameOf, type SessionMeta, type SessionStore } from './session-store.js';
import { WarmPool } from './warm-pool.js';
import { resolveWorkspace } from './workspace.js';

type SessionScope = 'single' | 'thread';

/** Hands out the event log of a session (SqliteEventStore, or the Redis store of a cluster). */
export interface EventLogSource {
  logFor(sessionId: string): EventLog | Promise<EventLog>;
}

/**
 * With several nodes: who may run a session. Before a session becomes live
 * here the registry claims it (the cluster-wide cap, then the session's
 * lease: throws when the cap is reached or another node owns it); once it
 * has ended here, and its last frame is written, the registry releases it.
 * A single node has no ownership: every session is its own.
 */
export interface SessionOwnership {
  claim(sessionId: string): Promise<void>;
  release(sessionId: string): Promise<void>;
  /** Throws while the node must take no new work (its shared state is unreachable). */
  assertHealthy(): void;
  /**
   * False: sessions outlive this node (another node takes them over), so a
   * shutdown ends no session for its clients, it only lets go of them.
   */
  readonly endsSessionsOnShutdown: boolean;
}

interface SessionHandle {
  sessionId: string;
  workspaceCwd: string;
  attached: boolean;
}

interface RegistryOptions {
  workspace: string;
  maxSessions: number;
  initTimeoutMs: number;
  /** Prompts that may wait per session behind the running one; 0 = no limit. */
  maxPendingPrompts: number;
  defaultScope: SessionScope;
  /** Agent sessions kept created ahead of demand (0 = none). */
  warmSessions: number;
  bus: BusOptions;
  /** Where each session's events are kept; absent = every bus keeps its own in-memory ring. */
  eventLogs?: EventLogSource;
  store: SessionStore;
  /** Absent on a single node. */
  ownership?: SessionOwnership;
  /** Whether a session is live anywhere (the catalog's `isLive`); absent = live on this node. */
  isLive?: IsLive;
  log: FastifyBaseLogger;
}

interface SpawnRequest {
  workspaceCwd?: string;
  modelServiceId?: string;
  sessionScope?: unknown;
}

/** Things outside the registry that hold session slots or must finish before shutdown ends. */
export interface SlotHolder {
  readonly inFlightCount: number;
  /** Settles when every operation in flight has settled. */
  settled(): Promise<void>;
}

/** How long a close waits for the turn it cancelled to end before it closes anyway. */
const CLOSE_CANCEL_WAIT_MS = 5_000;

const CRASHED_DURING_INIT = 'the agent child likely crashed during initialization — retry to spawn a new session';

export class SessionRegistry {
  readonly permissions: PermissionBroker;
  /** What every session bus counts, summed over the app's lifetime (for metrics). */
  readonly busStats: BusStats;
  readonly pool: WarmPool;
  /** The workspace's sessions, live and remembered, for the session list. */
  readonly catalog: SessionCatalog;
  private readonly byId = new Map<string, Session>();
  /** The catalog writes of sessions just registered, until their creator awaited them. */
  private readonly cataloging = new WeakMap<Session, Promise<void>>();
  private defaultSession: Session | undefined;
  private readonly inFlightSpawns = new Map<string, Promise<Session>>();
  private readonly holders: SlotHolder[] = [];
  private readonly sessionContext: SessionContext;
  private readonly publishListeners: Array<(sessionId: string, envelope: EventEnvelope) => void> = [];
  private shuttingDown = false;
  private draining = false;
  private drained: Promise<void> | undefined;

  constructor(
    private readonly opts: RegistryOptions,
    readonly channels: ChannelSupervisor,
  ) {
    if (!Number.isNaN(opts.maxSessions) && opts.maxSessions < 0)
      throw new TypeError(`Invalid maxSessions: ${opts.maxSessions}`);
    this.permissions = channels.router.permissions;
    this.busStats = opts.bus.stats ?? new BusStats();
    this.pool = new WarmPool({
      size: opts.warmSessions,
      log: opts.log,
      create: (channel) => this.newAgentSession(channel),
      newBus: (sessionId) => this.newBusNow(sessionId),
      router: channels.router,
      hasRoom: (pooled) => this.hasRoomFor(pooled + 1),
    });
    this.sessionContext = {
      permissions: this.permissions,
      initTimeoutMs: opts.initTimeoutMs,
      maxPendingPrompts: opts.maxPendingPrompts,
      assertAcceptingWork: () => this.assertAcceptingWork(),
      touched: (sessionId) => void opts.store.touch(sessionId, Date.now()),
    };
    this.catalog = new SessionCatalog(opts.store, (sessionId) => this.byId.get(sessionId), opts.isLive);
    channels.onExit((channel, info, sessionIds) => this.channelExited(channel, info, sessionIds));
    this.permissions.lookupSessions((sessionId) => {
      const session = this.byId.get(sessionId);
      return session && { originator: session.turnUser, attachedUsers: session.attachedUsers.length };
    });
  }

  get workspace(): string {
    return this.opts.workspace;
  }

  get initTimeoutMs(): number {
    return this.opts.initTimeoutMs;
  }

  /** The limits a client may plan with, as `/capabilities.limits` names them. */
  get limits() {
    return {
      maxSessionsPerWorkspace: this.opts.maxSessions,
      maxPendingPromptsPerSession: this.opts.maxPendingPrompts,
      sessionRestoreTimeoutMs: this.opts.initTimeoutMs,
    };
  }

  get isShuttingDown(): boolean {
    return this.shuttingDown;
  }

  /** True from the first moment of a drain: no new sessions, restores or prompts. */
  get isDraining(): boolean {
    return this.draining;
  }

  /** Refuses new work while draining (503), and everything once stopped. */
  assertAcceptingWork(): void {
    if (this.shuttingDown) throw new ShuttingDownError();
    if (this.draining) throw new DrainingError();
    this.opts.ownership?.assertHealthy();
  }

  get sessionCount(): number {
    return this.byId.size;
  }

  get pendingPermissionCount(): number {
    return this.permissions.size;
  }

  /** The restore coordinator registers here so that its in-flight work counts and is awaited. */
  addSlotHolder(holder: SlotHolder): void {
    this.holders.push(holder);
  }

  get(sessionId: string): Session | undefined {
    return this.byId.get(sessionId);
  }

  require(sessionId: string): Session {
    const session = this.byId.get(sessionId);
    if (!session) throw new SessionNotFoundError(sessionId);
    return session;
  }

  list(): Session[] {
    return [...this.byId.values()];
  }

  /** The single-scope default session's id, while there is one here. */
  get defaultSessionId(): string | undefined {
    return this.defaultSession?.sessionId;
  }

  /**
   * Makes a live session the single-scope default (in a cluster: the
   * cluster's default session, taken over by this node).
   */
  adoptDefault(sessionId: string): void {
    const session = this.byId.get(sessionId);
    if (session && !this.defaultSession) this.defaultSession = session;
  }

  resolveWorkspace(requested: string | undefined): string {
    return resolveWorkspace(this.opts.workspace, requested);
  }

  /** Whether `more` sessions fit beside the live, spawning and restoring ones. */
  private hasRoomFor(more: number): boolean {
    const max = this.opts.maxSessions;
    if (max === 0 || !Number.isFinite(max)) return true;
    let used = this.byId.size + this.inFlightSpawns.size;
    for (const h of this.holders) used += h.inFlightCount;
    return used + more <= max;
  }

  /** Throws when one more session would exceed the cap (live + spawning + restoring). */
  checkCapacity(): void {
    if (!this.hasRoomFor(1)) throw new SessionLimitExceededError(this.opts.maxSessions);
  }

  /**
   * Makes a session the agent now knows live here: it keeps `lease`, its
   * events go to `events`, and clients can find it.
   */
  register(
    sessionId: string,
    lease: ChannelLease,
    events: EventBus,
    restore: { action: SessionMeta['origin']; state: unknown; attaches: number },
  ): Session {
    const session = new Session(
      sessionId,
      this.opts.workspace,
      events,
      lease,
      restore.state,
      restore.attaches,
      this.sessionContext,
    );
    this.byId.set(sessionId, session);
    this.channels.router.bind(sessionId, lease.channel, events, true);
    const now = Date.now();
    const record = (known: SessionMeta | undefined): MaybePromise<void> =>
      this.opts.store.put({
        sessionId,
        workspaceCwd: this.opts.workspace,
        origin: restore.action,
        createdAt: known?.createdAt ?? now,
        updatedAt: now,
        // A restored session keeps the name its first prompt gave it.
        ...(known?.displayName !== undefined ? { displayName: known.displayName } : {}),
      });
    // At once with a local store; a remote one is written before the session's creator is answered
    // (`cataloged`), so that other nodes know the session by the time its client names it to them.
    const known = this.opts.store.get(sessionId);
    if (isPromise(known)) {
      this.cataloging.set(
        session,
        known
          .then(record)
          .catch((err: unknown) => this.opts.log.error({ err, sessionId }, 'session catalog not written')),
      );
    } else void record(known);
    return session;
  }

  /** Settles once the catalog holds `session` (at once with a local store). */
  cataloged(session: Session): Promise<void> | undefined {
    const writing = this.cataloging.get(session);
    this.cataloging.delete(session);
    return writing;
  }

  /** When `sessionId` was first created or restored here (ms since the epoch), when the store knows it. */
  createdAt(sessionId: string): MaybePromise<number | undefined> {
    const meta = this.opts.store.get(sessionId);
    return isPromise(meta) ? meta.then((found) => found?.createdAt) : meta?.createdAt;
  }

  /** The bus of `sessionId`, over its log from `eventLogs` when there is one (else the bus's own ring). */
  async newBus(sessionId: string): Promise<EventBus> {
    const log = await this.opts.eventLogs?.logFor(sessionId);
    return new EventBus({
      ...this.opts.bus,
      stats: this.busStats,
      ...(log ? { log } : {}),
      // A log written under a lease refuses the writes of a node that lost it: the session stops here.
      onFenced: () => void this.relinquish(sessionId),
      onPublish: (envelope) => this.published(sessionId, envelope),
    });
  }

  /** The same for a log that opens synchronously (the warm pool's: there is no warm pool in a cluster). */
  private newBusNow(sessionId: string): EventBus {
    const log = this.opts.eventLogs?.logFor(sessionId);
    if (log instanceof Promise) throw new Error('the warm pool needs an event log that opens synchronously');
    return new EventBus({
      ...this.opts.bus,
      stats: this.busStats,
      ...(log ? { log } : {}),
      onPublish: (envelope) => this.published(sessionId, envelope),
    });
  }

  /**
   * Calls `listener` with every event a session of this node publishes (one
   * tap for every bus the registry makes, instead of a subscriber per
   * session), synchronously, before the publisher goes on.
   */
  onPublish(listener: (sessionId: string, envelope: EventEnvelope) => void): void {
    this.publishListeners.push(listener);
  }

  private published(sessionId: string, envelope: EventEnvelope): void {
    for (const listener of this.publishListeners) {
      try {
        listener(sessionId, envelope);
      } catch (err) {
        // A listener's failure is its own: the session's event is published all the same.
        this.opts.log.error({ err, sessionId, type: envelope.type }, 'event listener failed');
      }
    }
  }

  /**
   * Claims `sessionId` for this node (a no-op on a single node). The restore
   * coordinator and the spawn call it before they register a session.
   */
  async claim(sessionId: string): Promise<void> {
    await this.opts.ownership?.claim(sessionId);
  }

  /** Claims `sessionId`, then opens its bus (which a cluster's log writes under the claim). */
  async claimWithBus(sessionId: string): Promise<EventBus> {
    await this.claim(sessionId);
    try {
      return await this.newBus(sessionId);
    } catch (err) {
      await this.unclaim(sessionId);
      throw err;
    }
  }

  /**
   * Gives a claim back when the session did not become live here after all
   * (once `events`, when given, has written what it holds).
   */
  async unclaim(sessionId: string, events?: EventBus): Promise<void> {
    const ownership = this.opts.ownership;
    if (!ownership || this.byId.has(sessionId)) return;
    await events?.drained();
    await ownership.release(sessionId).catch((err: unknown) => {
      this.opts.log.warn({ err, sessionId }, 'session lease not released');
    });
  }

  // ---- create / attach -------------------------------------------------

  async spawnOrAttach(req: SpawnRequest): Promise<SessionHandle> {
    this.assertAcceptingWork();
    const workspaceCwd = this.resolveWorkspace(req.workspaceCwd);
    if (req.sessionScope !== undefined && req.sessionScope !== 'single' && req.sessionScope !== 'thread') {
      throw new InvalidSessionScopeError(req.sessionScope);
    }
    const scope: SessionScope = req.sessionScope ?? this.opts.defaultScope;

    if (scope === 'single') {
      const existing = this.defaultSession;
      if (existing) return this.attachTo(existing, workspaceCwd, req.modelServiceId);
      const inFlight = this.inFlightSpawns.get(workspaceCwd);
      if (inFlight) {
        const spawned = await inFlight;
        // Same microtask as the await: the owner's disconnect reaper sees this attach.
        const session = this.byId.get(spawned.sessionId);
        if (!session) throw new SessionNotFoundError(spawned.sessionId, CRASHED_DURING_INIT);
        return this.attachTo(session, workspaceCwd, req.modelServiceId);
      }
    }

    this.checkCapacity();
    const key = scope === 'single' ? workspaceCwd : `${workspaceCwd}#${randomUUID()}`;
    const spawn = this.doSpawn(scope);
    this.inFlightSpawns.set(key, spawn);
    // Waiters on a failed spawn see its rejection; nobody else must.
    spawn.catch(() => {}).finally(() => this.inFlightSpawns.delete(key));
    const session = await spawn;
    if (req.modelServiceId) {
      await session.setModel(req.modelServiceId).catch(() => {});
      if (!this.byId.has(session.sessionId))
        throw new Error(`Session ${session.sessionId} died during model-switch initialization`);
    }
    return { sessionId: session.sessionId, workspaceCwd, attached: false };
  }

  private async attachTo(session: Session, workspaceCwd: string, modelId: string | undefined): Promise<SessionHandle> {
    session.attach();
    if (modelId) await session.setModel(modelId).catch(() => {});
    return { sessionId: session.sessionId, workspaceCwd, attached: true };
  }

  private async newAgentSession(channel: AgentChannel): Promise<string> {
    const res = await channel.call<{ sessionId: string }>(
      'session/new',
      { cwd: this.opts.workspace, mcpServers: [] },
      { timeoutMs: this.opts.initTimeoutMs, closedMessage: 'agent channel closed during session/new' },
    );
    return res.sessionId;
  }

  private async doSpawn(scope: SessionScope): Promise<Session> {
    const lease = await this.channels.acquire();
    const channel = lease.channel;
    const warm = this.pool.take(channel);
    let sessionId = warm?.sessionId;
    let events = warm?.events;
    try {
      sessionId ??= await this.newAgentSession(channel);
      events ??= await this.claimWithBus(sessionId);
    } catch (err) {
      // A session the agent made for nobody (another node owns it, or the cluster is full) goes again.
      if (sessionId !== undefined && !warm) await channel.closeSession(sessionId, this.opts.initTimeoutMs);
      await lease.release();
      throw err;
    }
    if (this.shuttingDown) throw new ShuttingDownError();
    if (!channel.usable) throw new SessionNotFoundError(sessionId, CRASHED_DURING_INIT);
    const session = this.register(sessionId, lease, events, {
      action: 'created',
      state: undefined,
      attaches: 0,
    });
    if (scope === 'single' && !this.defaultSession) this.defaultSession = session;
    this.opts.log.info({ sessionId, scope, warm: warm !== undefined }, 'session created');
    const cataloged = this.cataloged(session);
    if (cataloged) await cataloged;
    // After this spawn has left the in-flight set, so the cap counts it once.
    setImmediate(() => this.pool.refill(channel));
    return session;
  }

  // ---- model, prompt, cancel, events, permissions -----------------------

  setSessionModel(
    sessionId: string,
    body: Record<string, unknown> & { modelId: string },
    actor?: Actor,
  ): Promise<unknown> {
    return this.require(sessionId).setModel(body.modelId, body, actor);
  }

  /** Admits a prompt behind the session's earlier ones (or throws: 404, 503); an aborted signal cancels it. */
  sendPrompt(sessionId: string, body: Record<string, unknown>, signal?: AbortSignal, actor?: Actor): Admission {
    const admission = this.require(sessionId).prompt(body, signal, actor);
    // The first admitted prompt with text names the session in the catalog; the store keeps the first name.
    const name = displayNameOf(body.prompt);
    if (name !== undefined) void this.opts.store.name(sessionId, name);
    return admission;
  }

  /** The running then the waiting prompts of a live session (a closing one is not found). */
  pendingPrompts(sessionId: string): PendingPrompt[] {
    return this.requireOpen(sessionId).pendingPrompts();
  }

  /** Removes a waiting prompt or cancels the running one. */
  removePendingPrompt(sessionId: string, promptId: string, actor?: Actor): void {
    if (!this.requireOpen(sessionId).removePrompt(promptId, actor))
      throw new PendingPromptNotFoundError(sessionId, promptId);
  }

  /** The running prompt of a live session; undefined when it is idle. */
  currentTurn(sessionId: string): CurrentTurn | undefined {
    return this.requireOpen(sessionId).currentTurn();
  }

  /** A live session that is not being closed, else 404 `session_not_found` (the qwen routes' answer). */
  private requireOpen(sessionId: string): Session {
    const session = this.byId.get(sessionId);
    if (!session || session.isClosing) throw new SessionNotFoundError(sessionId, undefined, 'session_not_found');
    return session;
  }

  async cancel(sessionId: string, body: Record<string, unknown> = {}, actor?: Actor): Promise<void> {
    await this.require(sessionId).cancelTurn(body, true, actor);
  }

  /**
   * Synchronous: a 404 or 429 is thrown before any response byte. The stream
   * opens with the session's state (`snapshot`), taken as it subscribes.
   */
  subscribe(sessionId: string, opts: SubscribeOptions): EventSubscription {
    const session = this.require(sessionId);
    return session.events.subscribe({ ...opts, snapshot: () => this.snapshotOf(session) });
  }

  /** What a client needs of a live session's state to carry on after a (re)connect: the `session_state` frame. */
  snapshot(sessionId: string): SessionSnapshot {
    return this.snapshotOf(this.require(sessionId));
  }

  private snapshotOf(session: Session): SessionSnapshot {
    const turn = session.currentTurn();
    return {
      sessionId: session.sessionId,
      lastEventId: session.events.lastEventId,
      eventEpoch: session.events.epoch,
      turn: turn ? { state: 'running', ...turn } : { state: 'idle' },
      pendingPermissions: this.pendingInteractions(session.sessionId),
      pendingPrompts: session.pendingPrompts(),
    };
  }

  /** The permission requests of a session that wait for a vote, oldest first, as clients see them. */
  private pendingInteractions(sessionId: string): SessionStatus['pendingInteractions'] {
    return this.permissions.pendingFor(sessionId).map((p) => ({
      requestId: p.requestId,
      kind: 'permission' as const,
      createdAt: new Date(p.createdAt).toISOString(),
      toolCall: p.toolCall,
      options: p.options,
    }));
  }

  /**
   * A client's vote. False when nothing waits for it; a vote on a request
   * resolved a moment ago also tells its session's clients
   * (`permission_already_resolved`), so a UI that still shows it can drop it.
   */
  respondToPermission(requestId: string, response: RequestPermissionResponse, actor?: Actor, voter?: Voter): boolean {
    if (this.permissions.respond(requestId, response, actor, voter)) return true;
    const resolved = this.permissions.resolvedRecently(requestId);
    if (resolved !== undefined) {
      const { sessionId, outcome } = resolved;
      this.channels.router.busFor(sessionId)?.publish('permission_already_resolved', { requestId, sessionId, outcome });
    }
    return false;
  }

  /**
   * What a client sees of a live session: its times, how many event streams
   * read it, whether a prompt runs, and the permission requests that wait
   * for a vote. A closing session is gone already (404).
   */
  status(sessionId: string): MaybePromise<SessionStatus> {
    const session = this.requireOpen(sessionId);
    const meta = this.opts.store.get(sessionId);
    return isPromise(meta) ? meta.then((found) => this.statusOf(session, found)) : this.statusOf(session, meta);
  }

  private statusOf(session: Session, meta: SessionMeta | undefined): SessionStatus {
    const sessionId = session.sessionId;
    const now = Date.now();
    const pending = this.pendingInteractions(sessionId);
    const hasActivePrompt = session.busy;
    return {
      sessionId,
      workspaceCwd: session.workspaceCwd,
      createdAt: new Date(meta?.createdAt ?? now).toISOString(),
      updatedAt: new Date(meta?.updatedAt ?? now).toISOString(),
      clientCount: session.events.subscriberCount,
      hasActivePrompt,
      activeWorkState: hasActivePrompt || pending.length > 0 ? 'active' : 'idle',
      isWaitingForPermission: pending.length > 0,
      pendingInteractionCount: pending.length,
      pendingInteractions: pending,
      // Only with named tokens: without them nobody has a name, and the status stays as v1 has it.
      ...(session.attachedUsers.length > 0 ? { attachedUsers: session.attachedUsers } : {}),
    };
  }

  // ---- kill / detach ---------------------------------------------------

  async killSession(sessionId: string, opts: { requireZeroAttaches?: boolean } = {}): Promise<void> {
    const session = this.byId.get(sessionId);
    if (!session) return;
    if (opts.requireZeroAttaches && !session.creatorLeft()) return;
    await this.retire(session, 'killed', () => session.end({ reason: 'killed' }));
  }

  /**
   * `DELETE /session/:id`: a client closes the session for everyone. A
   * running turn is cancelled first (its prompt answers `cancelled`, its
   * `turn_complete` says so, with no `prompt_cancelled`) and given a bounded
   * time to end; prompts waiting behind it are removed (404 to their
   * callers); then `session_closed` ends every stream and the agent is told.
   * The agent keeps the session: it can be loaded again. A session that is
   * closing already is not found.
   */
  async closeSession(sessionId: string, actor?: Actor): Promise<void> {
    const session = this.byId.get(sessionId);
    if (!session?.beginClose()) throw new SessionNotFoundError(sessionId, undefined, 'session_not_found');
    if (session.busy) {
      await session.cancelTurn({}, false);
      await settledWithin(session.promptsSettled(), CLOSE_CANCEL_WAIT_MS);
    }
    // The agent or the daemon may have ended it meanwhile; then that was its end.
    if (this.byId.get(sessionId) !== session) return;
    await this.retire(session, 'closed', () =>
      session.end({ reason: 'client_close', ...actorMeta(actor) }, 'session_closed'),
    );
  }

  /** Forgets the session, lets `end` publish its last frame, tells the agent, then returns the lease. */
  private async retire(session: Session, reason: string, end: () => void): Promise<void> {
    const sessionId = session.sessionId;
    this.forget(session, reason);
    end();
    this.opts.log.info({ sessionId, reason }, 'session ended');
    // The agent forgets it too, when it can; then the hold on the agent goes.
    await session.channel.closeSession(sessionId, this.opts.initTimeoutMs);
    await session.release();
  }

  async detachClient(sessionId: string): Promise<void> {
    const session = this.byId.get(sessionId);
    if (session?.detach()) await this.killSession(sessionId);
  }

  /** Removes the session eagerly so that no concurrent attach can find it. */
  private forget(session: Session, reason: string | undefined): void {
    if (this.byId.get(session.sessionId) !== session) return;
    this.byId.delete(session.sessionId);
    if (this.defaultSession === session) this.defaultSession = undefined;
    this.channels.router.unbind(session.sessionId, session.events);
    if (reason !== undefined) void this.opts.store.end(session.sessionId, Date.now(), reason);
    this.releaseWhenWritten(session);
  }

  /** Lets go of the session's lease once its bus has written its last frame (the lease fences those writes). */
  private releaseWhenWritten(session: Session): void {
    const ownership = this.opts.ownership;
    if (!ownership) return;
    void session.events
      .drained()
      .then(() => ownership.release(session.sessionId))
      .catch((err: unknown) => this.opts.log.warn({ err, sessionId: session.sessionId }, 'session lease not released'));
  }

  /**
   * Another node owns `sessionId` now (this node's lease expired or was
   * taken over): it stops here without a word to its clients or to the
   * catalog, which are the new owner's. Its streams end (the clients
   * reconnect, through any node, and carry on from their cursor); its turn,
   * if one runs, is cancelled; the agent forgets it.
   */
  async relinquish(sessionId: string): Promise<void> {
    const session = this.byId.get(sessionId);
    if (!session) return;
    this.forget(session, undefined);
    session.relinquish();
    this.opts.log.warn({ sessionId }, 'session given up: another node owns it');
    await session.channel.closeSession(sessionId, this.opts.initTimeoutMs);
    await session.release();
  }

  private channelExited(channel: AgentChannel, info: ExitInfo | undefined, sessionIds: string[]): void {
    this.pool.discard(channel);
    if (!this.shuttingDown && sessionIds.length > 0) {
      this.opts.log.warn(
        { exitCode: info?.exitCode ?? null, signal: info?.signalCode ?? null, sessions: sessionIds.length },
        'agent channel exited; sessions torn down',
      );
    }
    for (const sessionId of sessionIds) {
      const session = this.byId.get(sessionId);
      if (!session || session.channel !== channel) continue;
      this.forget(session, 'channel_closed');
      session.end({
        reason: 'channel_closed',
        exitCode: info?.exitCode ?? null,
        signalCode: info?.signalCode ?? null,
      });
    }
  }

  // ---- shutdown --------------------------------------------------------

  /**
   * The graceful drain: refuse new work at once; give running prompts up to
   * `drainMs` to finish, then cancel them; then stop everything. Idempotent.
   */
  shutdown(drainMs = 0): Promise<void> {
    this.drained ??= this.drain(drainMs);
    return this.drained;
  }

  private async drain(drainMs: number): Promise<void> {
    this.draining = true;
    await drainPrompts(() => this.list(), drainMs, this.opts.log);
    await this.stop();
  }

  /** Tells every subscriber, kills the agents, awaits everything in flight. */
  private async stop(): Promise<void> {
    this.shuttingDown = true;
    this.pool.discard();
    const sessions = this.list();
    this.channels.retireAll();
    this.permissions.cancelAll();
    this.defaultSession = undefined;
    this.byId.clear();
    const handOver = this.opts.ownership?.endsSessionsOnShutdown === false;
    for (const session of sessions) {
      this.channels.router.unbind(session.sessionId, session.events);
      if (handOver) {
        // Another node takes the session on its next request: its clients reconnect there.
        session.relinquish();
        this.releaseWhenWritten(session);
        continue;
      }
      void this.opts.store.end(session.sessionId, Date.now(), 'daemon_shutdown');
      session.end({ reason: 'daemon_shutdown' });
    }
    await Promise.all([
      this.channels.shutdown(),
      ...[...this.inFlightSpawns.values()].map((p) => p.catch(() => undefined)),
      ...this.holders.map((h) => h.settled()),
    ]);
  }

  killAllSync(): void {
    this.shuttingDown = true;
    this.defaultSession = undefined;
    this.byId.clear();
    this.channels.killAllSync();
  }
}

/** Settles when `work` does or after `ms`, whichever comes first. */
async function settledWithin(work: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
    timer.unref();
  });
  try {
    await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
