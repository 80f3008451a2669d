/**
 * The live sessions of the daemon and everything that happens to them:
 * create or attach, prompt (one at a time per session, FIFO), cancel, model
 * switch, permissions, subscribe, kill, detach, and the teardown when the
 * agent process goes away or the daemon drains.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type {
  PromptResponse,
  ReadTextFileRequest,
  RequestPermissionRequest,
  RequestPermissionResponse,
  SessionNotification,
  WriteTextFileRequest,
} from '@agentclientprotocol/sdk';
import {
  InvalidSessionScopeError,
  PromptAbortedError,
  SessionLimitExceededError,
  SessionNotFoundError,
  DrainingError,
  ShuttingDownError,
} from '../errors.js';
import type { AgentChannel, ExitInfo } from './agent-channel.js';
import type { ChannelListener, ChannelSupervisor } from './channel-supervisor.js';
import { BusStats, EventBus, type BusOptions, type EventSubscription, type SubscribeOptions } from './event-bus.js';
import { FsProxy } from './fs-proxy.js';
import { PermissionBroker } from './permissions.js';
import { WarmPool } from './warm-pool.js';
import { resolveWorkspace } from './workspace.js';

export type SessionScope = 'single' | 'thread';

export interface SessionEntry {
  readonly sessionId: string;
  readonly workspaceCwd: string;
  readonly channel: AgentChannel;
  readonly events: EventBus;
  readonly createdAt: number;
  /** Tails of the per-session FIFOs; they always resolve. */
  promptQueue: Promise<void>;
  modelQueue: Promise<void>;
  activePrompts: number;
  attachCount: number;
  /** The creator left before its response was written, while others were attached. */
  spawnOwnerWantedKill: boolean;
  /** The agent's load/resume answer, handed to later attachers. */
  restoreState: unknown;
}

export interface SessionHandle {
  sessionId: string;
  workspaceCwd: string;
  attached: boolean;
}

export interface RegistryOptions {
  workspace: string;
  maxSessions: number;
  initTimeoutMs: number;
  permissionTimeoutMs: number;
  maxPendingPermissionsPerSession: number;
  defaultScope: SessionScope;
  /** Agent sessions kept created ahead of demand (0 = none). */
  warmSessions: number;
  bus: BusOptions;
  log: FastifyBaseLogger;
}

/** How long cancelled prompts get to answer before the agents are stopped anyway. */
const CANCEL_GRACE_MS = 2000;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

export interface SpawnRequest {
  workspaceCwd?: string;
  modelServiceId?: string;
  sessionScope?: unknown;
}

/** Things outside the registry that hold session slots or must finish before shutdown ends. */
export interface SlotHolder {
  readonly inFlightCount: number;
  /** Settles when every operation in flight has settled. */
  settled(): Promise<void>;
  /** Routing for agent notifications about a session that is not registered yet. */
  pendingBus(sessionId: string): EventBus | undefined;
}

export class SessionRegistry implements ChannelListener {
  readonly permissions: PermissionBroker;
  /** What every session bus counts, summed over the app's lifetime (for metrics). */
  readonly busStats: BusStats;
  private readonly byId = new Map<string, SessionEntry>();
  private defaultEntry: SessionEntry | undefined;
  private readonly inFlightSpawns = new Map<string, Promise<SessionEntry>>();
  private readonly holders: SlotHolder[] = [];
  private readonly fsProxy: FsProxy;
  readonly pool: WarmPool;
  private shuttingDown = false;
  private draining = false;
  private drained: Promise<void> | undefined;

  constructor(
    private readonly opts: RegistryOptions,
    readonly channels: ChannelSupervisor,
  ) {
    if (!Number.isNaN(opts.maxSessions) && opts.maxSessions < 0)
      throw new TypeError(`Invalid maxSessions: ${opts.maxSessions}`);
    this.permissions = new PermissionBroker({
      timeoutMs: opts.permissionTimeoutMs,
      maxPendingPerSession: opts.maxPendingPermissionsPerSession,
      log: opts.log,
    });
    this.fsProxy = new FsProxy(opts.workspace);
    this.pool = new WarmPool({
      size: opts.warmSessions,
      log: opts.log,
      create: (channel) => this.newAgentSession(channel),
      newBus: () => this.newBus(),
      hasRoom: (pooled) => this.hasRoomFor(pooled + 1),
    });
    this.busStats = opts.bus.stats ?? new BusStats();
    channels.setListener(this);
  }

  get workspace(): string {
    return this.opts.workspace;
  }

  get initTimeoutMs(): number {
    return this.opts.initTimeoutMs;
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

  get(sessionId: string): SessionEntry | undefined {
    return this.byId.get(sessionId);
  }

  require(sessionId: string): SessionEntry {
    const entry = this.byId.get(sessionId);
    if (!entry) throw new SessionNotFoundError(sessionId);
    return entry;
  }

  list(): SessionEntry[] {
    return [...this.byId.values()];
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

  /** Creates the bus-bearing entry for a session the agent now knows. */
  register(
    sessionId: string,
    channel: AgentChannel,
    events: EventBus,
    restoreState: unknown,
    attachCount: number,
  ): SessionEntry {
    const entry: SessionEntry = {
      sessionId,
      workspaceCwd: this.opts.workspace,
      channel,
      events,
      createdAt: Date.now(),
      promptQueue: Promise.resolve(),
      modelQueue: Promise.resolve(),
      activePrompts: 0,
      attachCount,
      spawnOwnerWantedKill: false,
      restoreState,
    };
    channel.sessionIds.add(sessionId);
    this.byId.set(sessionId, entry);
    return entry;
  }

  newBus(): EventBus {
    return new EventBus({ ...this.opts.bus, stats: this.busStats });
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
      const existing = this.defaultEntry;
      if (existing) {
        existing.attachCount++;
        if (req.modelServiceId) await this.applyModel(existing, req.modelServiceId).catch(() => {});
        return { sessionId: existing.sessionId, workspaceCwd, attached: true };
      }
      const inFlight = this.inFlightSpawns.get(workspaceCwd);
      if (inFlight) {
        const spawned = await inFlight;
        // Same microtask as the await: the owner's disconnect reaper sees this attach.
        const entry = this.byId.get(spawned.sessionId);
        if (!entry) {
          throw new SessionNotFoundError(
            spawned.sessionId,
            'the agent child likely crashed during initialization — retry to spawn a new session',
          );
        }
        entry.attachCount++;
        if (req.modelServiceId) await this.applyModel(entry, req.modelServiceId).catch(() => {});
        return { sessionId: entry.sessionId, workspaceCwd, attached: true };
      }
    }

    this.checkCapacity();
    const key = scope === 'single' ? workspaceCwd : `${workspaceCwd}#${randomUUID()}`;
    const spawn = this.doSpawn(scope);
    this.inFlightSpawns.set(key, spawn);
    // Waiters on a failed spawn see its rejection; nobody else must.
    spawn.catch(() => {}).finally(() => this.inFlightSpawns.delete(key));
    const entry = await spawn;
    if (req.modelServiceId) {
      await this.applyModel(entry, req.modelServiceId).catch(() => {});
      if (!this.byId.has(entry.sessionId))
        throw new Error(`Session ${entry.sessionId} died during model-switch initialization`);
    }
    return { sessionId: entry.sessionId, workspaceCwd, attached: false };
  }

  private async newAgentSession(channel: AgentChannel): Promise<string> {
    const res = await channel.call<{ sessionId: string }>(
      'session/new',
      { cwd: this.opts.workspace, mcpServers: [] },
      { timeoutMs: this.opts.initTimeoutMs, closedMessage: 'agent channel closed during session/new' },
    );
    return res.sessionId;
  }

  private async doSpawn(scope: SessionScope): Promise<SessionEntry> {
    const channel = await this.channels.ensure();
    const warm = this.pool.take(channel);
    let sessionId: string;
    channel.pendingCreates++;
    try {
      sessionId = warm?.sessionId ?? (await this.newAgentSession(channel));
    } catch (err) {
      channel.pendingCreates--;
      await this.channels.releaseIfIdle(channel);
      throw err;
    }
    channel.pendingCreates--;
    if (this.shuttingDown) throw new ShuttingDownError();
    if (!channel.alive || channel.isDying) {
      throw new SessionNotFoundError(
        sessionId,
        'the agent child likely crashed during initialization — retry to spawn a new session',
      );
    }
    const entry = this.register(sessionId, channel, warm?.events ?? this.newBus(), undefined, 0);
    if (scope === 'single' && !this.defaultEntry) this.defaultEntry = entry;
    this.opts.log.info({ sessionId, scope, warm: warm !== undefined }, 'session created');
    // After this spawn has left the in-flight set, so the cap counts it once.
    setImmediate(() => this.pool.refill(channel));
    return entry;
  }

  // ---- model -----------------------------------------------------------

  private applyModel(entry: SessionEntry, modelId: string, extra: Record<string, unknown> = {}): Promise<unknown> {
    const run = entry.modelQueue.then(async () => {
      try {
        const res = await entry.channel.call<unknown>(
          'session/set_model',
          { ...extra, sessionId: entry.sessionId, modelId },
          {
            timeoutMs: this.opts.initTimeoutMs,
            closedMessage: `agent channel closed mid-request (session ${entry.sessionId})`,
          },
        );
        entry.events.publish('model_switched', { sessionId: entry.sessionId, modelId });
        return res ?? {};
      } catch (err) {
        entry.events.publish('model_switch_failed', {
          sessionId: entry.sessionId,
          requestedModelId: modelId,
          error: err instanceof Error ? err.message : String(err),
        });
        throw err;
      }
    });
    entry.modelQueue = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  setSessionModel(sessionId: string, body: Record<string, unknown> & { modelId: string }): Promise<unknown> {
    return this.applyModel(this.require(sessionId), body.modelId, body);
  }

  // ---- prompt / cancel -------------------------------------------------

  /** Queues a prompt behind the session's earlier ones; an aborted signal cancels it. */
  sendPrompt(sessionId: string, body: Record<string, unknown>, signal?: AbortSignal): Promise<PromptResponse> {
    const entry = this.require(sessionId);
    this.assertAcceptingWork();
    if (signal?.aborted) return Promise.reject(new PromptAbortedError());
    const request = { ...body, sessionId };
    const run = entry.promptQueue.then(async () => {
      if (signal?.aborted) throw new PromptAbortedError();
      // A prompt still queued when the drain began never starts.
      this.assertAcceptingWork();
      const onAbort = () => {
        this.permissions.cancelSession(sessionId);
        void entry.channel.notify('session/cancel', { sessionId });
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      entry.activePrompts++;
      try {
        return await entry.channel.call<PromptResponse>('session/prompt', request, {
          closedMessage: `agent channel closed mid-request (session ${sessionId})`,
        });
      } finally {
        entry.activePrompts--;
        signal?.removeEventListener('abort', onAbort);
      }
    });
    entry.promptQueue = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  async cancel(sessionId: string, body: Record<string, unknown> = {}): Promise<void> {
    const entry = this.require(sessionId);
    this.permissions.cancelSession(sessionId);
    await entry.channel.notify('session/cancel', { ...body, sessionId });
  }

  // ---- events ----------------------------------------------------------

  /** Synchronous: a 404 or 429 is thrown before any response byte. */
  subscribe(sessionId: string, opts: SubscribeOptions): EventSubscription {
    return this.require(sessionId).events.subscribe(opts);
  }

  respondToPermission(requestId: string, response: RequestPermissionResponse): boolean {
    return this.permissions.respond(requestId, response);
  }

  // ---- kill / detach ---------------------------------------------------

  async killSession(sessionId: string, opts: { requireZeroAttaches?: boolean } = {}): Promise<void> {
    const entry = this.byId.get(sessionId);
    if (!entry) return;
    if (opts.requireZeroAttaches && entry.attachCount > 0) {
      entry.spawnOwnerWantedKill = true;
      return;
    }
    this.forget(entry);
    this.permissions.cancelSession(sessionId);
    entry.events.publish('session_died', { sessionId, reason: 'killed' });
    entry.events.close();
    this.opts.log.info({ sessionId }, 'session killed');
    await entry.channel.closeSession(sessionId, this.opts.initTimeoutMs);
    await this.channels.releaseIfIdle(entry.channel);
  }

  async detachClient(sessionId: string): Promise<void> {
    const entry = this.byId.get(sessionId);
    if (!entry) return;
    if (entry.attachCount > 0) entry.attachCount--;
    if (entry.spawnOwnerWantedKill && entry.attachCount === 0 && entry.events.subscriberCount === 0) {
      await this.killSession(sessionId);
    }
  }

  /** Removes the entry eagerly so that no concurrent attach can find it. */
  private forget(entry: SessionEntry): void {
    if (this.byId.get(entry.sessionId) === entry) this.byId.delete(entry.sessionId);
    if (this.defaultEntry === entry) this.defaultEntry = undefined;
    entry.channel.sessionIds.delete(entry.sessionId);
  }

  // ---- agent → daemon --------------------------------------------------

  sessionUpdate(params: SessionNotification): void {
    const bus = this.byId.get(params.sessionId)?.events ?? this.pendingBus(params.sessionId);
    bus?.publish('session_update', params);
  }

  private pendingBus(sessionId: string): EventBus | undefined {
    const warm = this.pool.pendingBus(sessionId);
    if (warm) return warm;
    for (const h of this.holders) {
      const bus = h.pendingBus(sessionId);
      if (bus) return bus;
    }
    return undefined;
  }

  requestPermission(params: RequestPermissionRequest): Promise<RequestPermissionResponse> {
    const entry = this.byId.get(params.sessionId);
    if (!entry) return Promise.resolve({ outcome: { outcome: 'cancelled' } });
    return this.permissions.request(entry.sessionId, entry.events, params);
  }

  readTextFile(params: ReadTextFileRequest) {
    return this.fsProxy.readTextFile(params);
  }

  writeTextFile(params: WriteTextFileRequest) {
    return this.fsProxy.writeTextFile(params);
  }

  channelExited(channel: AgentChannel, info: ExitInfo | undefined): void {
    this.pool.discard(channel);
    const ids = [...channel.sessionIds];
    channel.sessionIds.clear();
    if (!this.shuttingDown && ids.length > 0) {
      this.opts.log.warn(
        { exitCode: info?.exitCode ?? null, signal: info?.signalCode ?? null, sessions: ids.length },
        'agent channel exited; sessions torn down',
      );
    }
    for (const sessionId of ids) {
      const entry = this.byId.get(sessionId);
      if (!entry || entry.channel !== channel) continue;
      this.forget(entry);
      this.permissions.cancelSession(sessionId);
      entry.events.publish('session_died', {
        sessionId,
        reason: 'channel_closed',
        exitCode: info?.exitCode ?? null,
        signalCode: info?.signalCode ?? null,
      });
      entry.events.close();
    }
  }

  // ---- shutdown --------------------------------------------------------

  /**
   * The graceful drain: refuse new work at once; give running prompts up to
   * `drainMs` to finish, then cancel them (and give the agent a moment to
   * answer `cancelled`); then stop everything. Idempotent.
   */
  shutdown(drainMs = 0): Promise<void> {
    this.drained ??= this.drain(drainMs);
    return this.drained;
  }

  private async drain(drainMs: number): Promise<void> {
    this.draining = true;
    const busy = () => [...this.byId.values()].filter((e) => e.activePrompts > 0);
    const promptsSettled = () => Promise.all([...this.byId.values()].map((e) => e.promptQueue));
    if (busy().length > 0 && drainMs > 0) {
      this.opts.log.info({ prompts: busy().length, drainMs }, 'draining: waiting for running prompts');
      await Promise.race([promptsSettled(), delay(drainMs)]);
    }
    const left = busy();
    if (left.length > 0) {
      this.opts.log.info({ prompts: left.length }, 'draining: cancelling running prompts');
      for (const entry of left) {
        this.permissions.cancelSession(entry.sessionId);
        void entry.channel.notify('session/cancel', { sessionId: entry.sessionId });
      }
      await Promise.race([promptsSettled(), delay(CANCEL_GRACE_MS)]);
    }
    await this.stop();
  }

  /** Tells every subscriber, kills the agents, awaits everything in flight. */
  private async stop(): Promise<void> {
    this.shuttingDown = true;
    this.pool.discard();
    const entries = [...this.byId.values()];
    for (const ch of this.channels.alive) ch.isDying = true;
    this.permissions.cancelAll();
    this.defaultEntry = undefined;
    this.byId.clear();
    for (const entry of entries) {
      entry.events.publish('session_died', { sessionId: entry.sessionId, reason: 'daemon_shutdown' });
      entry.events.close();
    }
    await Promise.all([
      this.channels.shutdown(),
      ...[...this.inFlightSpawns.values()].map((p) => p.catch(() => undefined)),
      ...this.holders.map((h) => h.settled()),
    ]);
  }

  killAllSync(): void {
    this.shuttingDown = true;
    this.defaultEntry = undefined;
    this.byId.clear();
    this.channels.killAllSync();
  }
}
