/**
 * Brings persisted sessions back by id (`session/load` replays history,
 * `session/resume` does not), exactly once however many clients ask at the
 * same time:
 *  - same id, same action → one agent call; everybody gets the same state and
 *    exactly one caller gets `attached: false`;
 *  - same id, other action → RestoreInProgressError (409);
 *  - in-flight restores hold session slots and keep their channel alive;
 *  - a restored session never becomes the single-scope default.
 */
import type { FastifyBaseLogger } from 'fastify';
import {
  ChannelClosedError,
  RestoreInProgressError,
  SessionNotFoundError,
  ShuttingDownError,
  type RestoreAction,
} from '../errors.js';
import { ReplayCollector, type ReplayEvent } from './compacted-replay.js';
import type { EventBus } from './event-bus.js';
import type { SessionRegistry, SlotHolder } from './session-registry.js';

interface RestoreResult {
  sessionId: string;
  workspaceCwd: string;
  attached: boolean;
  state: unknown;
  /** ISO 8601: when the session was first created or restored on this daemon. */
  createdAt: string;
  hasActivePrompt: boolean;
  /** The session bus's newest id and its log's epoch, once the restore is done: where a client's cursor starts. */
  lastEventId: number;
  eventEpoch: string;
  /** `load` only: the history the agent replayed, merged (empty when the session was live already). */
  compactedReplay?: ReplayEvent[];
}

interface Coalesced {
  /** Callers that joined this restore; reserved synchronously, folded into attachCount by the owner. */
  waiters: number;
}

interface InFlight {
  action: RestoreAction;
  promise: Promise<RestoreResult>;
  coalesced: Coalesced;
}

const METHOD: Record<RestoreAction, string> = { load: 'session/load', resume: 'session/resume' };

/** ACP resource-not-found for exactly this session (never a substring match). */
function isSessionNotFound(err: unknown, sessionId: string): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { code?: unknown; data?: unknown; message?: unknown };
  if (e.code !== -32002) return false;
  const uri = typeof e.data === 'object' && e.data !== null ? (e.data as { uri?: unknown }).uri : undefined;
  return uri === `session:${sessionId}` || e.message === `Resource not found: session:${sessionId}`;
}

/**
 * A rejected promise for what a registry check threw (`restore` builds its promises by hand
 * rather than being async). The registry throws domain errors; anything else is wrapped so
 * that every rejection reason is an Error.
 */
function rejection(err: unknown): Promise<never> {
  return Promise.reject(err instanceof Error ? err : new Error(String(err)));
}

export class RestoreCoordinator implements SlotHolder {
  private readonly inFlight = new Map<string, InFlight>();
  /** Counters for metrics and tests. */
  readonly stats = { coalesced: 0, conflicts: 0, notFound: 0, limited: 0, restored: 0 };

  constructor(
    private readonly registry: SessionRegistry,
    private readonly log: FastifyBaseLogger,
  ) {
    registry.addSlotHolder(this);
  }

  get inFlightCount(): number {
    return this.inFlight.size;
  }

  async settled(): Promise<void> {
    await Promise.all([...this.inFlight.values()].map((f) => f.promise.catch(() => undefined)));
  }

  restore(action: RestoreAction, sessionId: string, workspaceCwd: string | undefined): Promise<RestoreResult> {
    const registry = this.registry;
    let key: string;
    try {
      registry.assertAcceptingWork();
      key = registry.resolveWorkspace(workspaceCwd);
    } catch (err) {
      return rejection(err);
    }

    const live = registry.get(sessionId);
    if (live) {
      live.attach();
      return this.facts(sessionId, live.events, action === 'load' ? [] : undefined).then((facts) => ({
        sessionId,
        workspaceCwd: key,
        attached: true,
        state: live.restoreState ?? {},
        ...facts,
      }));
    }

    const running = this.inFlight.get(sessionId);
    if (running) {
      if (running.action !== action) {
        this.stats.conflicts++;
        return Promise.reject(new RestoreInProgressError(sessionId, running.action, action));
      }
      this.stats.coalesced++;
      running.coalesced.waiters++;
      return this.join(running, sessionId);
    }

    try {
      registry.checkCapacity();
    } catch (err) {
      this.stats.limited++;
      return rejection(err);
    }

    const coalesced: Coalesced = { waiters: 0 };
    const flight: InFlight = {
      action,
      coalesced,
      promise: this.own(action, coalesced, sessionId, key),
    };
    this.inFlight.set(sessionId, flight);
    const clear = () => {
      if (this.inFlight.get(sessionId) === flight) this.inFlight.delete(sessionId);
    };
    flight.promise.then(clear, clear);
    return flight.promise;
  }

  private async join(flight: InFlight, sessionId: string): Promise<RestoreResult> {
    let result: RestoreResult;
    try {
      result = await flight.promise;
    } catch (err) {
      flight.coalesced.waiters--;
      throw err;
    }
    if (!this.registry.get(sessionId)) {
      flight.coalesced.waiters--;
      throw new SessionNotFoundError(
        sessionId,
        'the agent child likely crashed during session restore — retry to restore the session',
      );
    }
    return { ...result, attached: true };
  }

  /** What a restore answer says about the session besides its state. */
  private async facts(
    sessionId: string,
    events: EventBus,
    compactedReplay: ReplayEvent[] | undefined,
  ): Promise<Pick<RestoreResult, 'createdAt' | 'hasActivePrompt' | 'lastEventId' | 'eventEpoch' | 'compactedReplay'>> {
    // Where the client's cursor starts is read now, as before; only the catalog's time may come later
    // (a remote store).
    const now = {
      hasActivePrompt: this.registry.get(sessionId)?.busy ?? false,
      lastEventId: events.lastEventId,
      eventEpoch: events.epoch,
      ...(compactedReplay ? { compactedReplay } : {}),
    };
    const createdAt = await this.registry.createdAt(sessionId);
    return { createdAt: new Date(createdAt ?? Date.now()).toISOString(), ...now };
  }

  private async own(
    action: RestoreAction,
    coalesced: Coalesced,
    sessionId: string,
    key: string,
  ): Promise<RestoreResult> {
    const registry = this.registry;
    const router = registry.channels.router;
    // With several nodes, the session's lease first: its log is written under it. The history the
    // agent replays lands on this bus until the session is registered.
    const events = await registry.claimWithBus(sessionId);
    const lease = await registry.channels.acquire().catch(async (err: unknown) => {
      events.close();
      await registry.unclaim(sessionId);
      throw err;
    });
    const channel = lease.channel;
    let registered = false;
    // The agent replays history (load) before it answers. It is collected for the answer, and it lands
    // on this bus only when the session's log is empty: a durable log that holds events already holds
    // that history, and a client coming back with its old cursor must not get it twice.
    const replay = action === 'load' ? new ReplayCollector(events.lastEventId === 0) : undefined;
    router.bind(sessionId, channel, events, false, replay);
    try {
      let state: unknown;
      try {
        state =
          (await channel.call<unknown>(
            METHOD[action],
            { sessionId, cwd: key, mcpServers: [] },
            { timeoutMs: registry.initTimeoutMs, closedMessage: `agent channel closed during session/${action}` },
          )) ?? {};
      } catch (err) {
        if (isSessionNotFound(err, sessionId)) {
          this.stats.notFound++;
          throw new SessionNotFoundError(sessionId);
        }
        throw err;
      }
      if (registry.isShuttingDown) throw new ShuttingDownError();
      if (!channel.usable) throw new ChannelClosedError(`Session ${sessionId} restored on a closed agent channel`);
      const existing = registry.get(sessionId);
      if (existing) {
        existing.attach(1 + coalesced.waiters);
        return {
          sessionId,
          workspaceCwd: key,
          attached: true,
          state: existing.restoreState ?? {},
          ...(await this.facts(sessionId, existing.events, replay?.events)),
        };
      }
      const session = registry.register(sessionId, lease, events, { action, state, attaches: coalesced.waiters });
      registered = true;
      const cataloged = registry.cataloged(session);
      if (cataloged) await cataloged;
      this.stats.restored++;
      this.log.info({ sessionId, action: action }, 'session restored');
      const facts = await this.facts(sessionId, events, replay?.events);
      return { sessionId, workspaceCwd: key, attached: false, state, ...facts };
    } finally {
      if (!registered) {
        router.unbind(sessionId, events);
        events.close();
        void registry.unclaim(sessionId, events);
        // A restore that brought nothing back (not found, refused, failed)
        // must not leave an agent running for nobody. The answer does not
        // wait for the stop: the channel is marked dying at once.
        void lease.release();
      }
    }
  }
}
