/**
 * Pending `session/request_permission` calls. The table is daemon-wide; the
 * permission policy (permission-policy.ts) says whose votes count and when
 * they settle a request: under `first-responder` (the default) any client
 * with the approve scope answers and the first answer wins. Every
 * settlement publishes `permission_resolved` on the session's bus.
 */
import { actorMeta, type Actor } from './actor.js';
import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { RequestPermissionRequest, RequestPermissionResponse } from '@agentclientprotocol/sdk';
import { InvalidPermissionOptionError, VoteAlreadyCastError, VoteNotAllowedError } from '../errors.js';
import { ANONYMOUS_USER, quorumFor, type CastVote, type PermissionPolicy, type Voter } from './permission-policy.js';
import type { EventBus } from './event-bus.js';

export const DEFAULT_MAX_PENDING_PER_SESSION = 64;

/** How many settled requests are remembered with their session and outcome (for `permission_already_resolved`). */
const RESOLVED_MEMORY = 1024;

const CANCELLED: RequestPermissionResponse = { outcome: { outcome: 'cancelled' } };

interface Pending {
  requestId: string;
  sessionId: string;
  /** When the agent asked (ms since the epoch). */
  createdAt: number;
  toolCall: RequestPermissionRequest['toolCall'];
  options: RequestPermissionRequest['options'];
  events: EventBus;
  allowedOptionIds: Set<string>;
  resolve: (r: RequestPermissionResponse) => void;
  timer: NodeJS.Timeout | undefined;
  /** The user whose prompt's turn asked (`designated`); undefined outside a turn or without tokens. */
  originator: string | undefined;
  /** Distinct users that must agree (`consensus` only). */
  quorum: number | undefined;
  /** The votes counted so far, in order (one per user under `consensus`). */
  votes: CastVote[];
}

/** What the session layer knows of a session when its agent asks. */
export interface SessionContext {
  /** The user who sent the running prompt. */
  originator: string | undefined;
  attachedUsers: number;
}

/** A request waiting for a vote, as the session status shows it. */
export interface PendingPermission {
  requestId: string;
  /** Milliseconds since the epoch. */
  createdAt: number;
  toolCall: RequestPermissionRequest['toolCall'];
  options: RequestPermissionRequest['options'];
}

/** How a request that is no longer pending ended. */
export interface ResolvedPermission {
  sessionId: string;
  outcome: RequestPermissionResponse['outcome'];
}

interface PermissionOptions {
  timeoutMs: number;
  /** Whose votes count; first-responder when absent. */
  policy?: PermissionPolicy;
  /**
   * Whether frames say which policy decides and who voted. Off for a daemon
   * with neither tokens nor a policy of its own, whose frames stay as v1 has them.
   */
  announcePolicy?: boolean;
  /**
   * Whether users are told apart (a tokens file). Without it every client is
   * `default`, and `designated` and `consensus` take the first answer.
   */
  namedUsers?: boolean;
  maxPendingPerSession: number;
  log: FastifyBaseLogger;
}

export class PermissionBroker {
  private readonly pending = new Map<string, Pending>();
  private readonly bySession = new Map<string, Set<string>>();
  /** Recently settled requests by id, oldest first, at most RESOLVED_MEMORY. */
  private readonly resolved = new Map<string, ResolvedPermission>();

  private readonly policy: PermissionPolicy;
  private contextOf: (sessionId: string) => SessionContext | undefined = () => undefined;

  constructor(private readonly opts: PermissionOptions) {
    this.policy = opts.policy ?? { name: 'first-responder', consensusQuorum: 0 };
  }

  /** The policy, as `/capabilities.policy` shows it. */
  get policyInfo(): PermissionPolicy {
    return { ...this.policy };
  }

  /** The session layer tells who runs a session's turn and who is attached (for `designated` and `consensus`). */
  lookupSessions(contextOf: (sessionId: string) => SessionContext | undefined): void {
    this.contextOf = contextOf;
  }

  get size(): number {
    return this.pending.size;
  }

  /** Whether `requestId` waits for a vote here. */
  has(requestId: string): boolean {
    return this.pending.has(requestId);
  }

  /**
   * `listener` hears of each request as it starts waiting, with the
   * longest it may wait (ms; 0 = no bound): a cluster records where it is.
   */
  watchPending(listener: (requestId: string, sessionId: string, timeoutMs: number) => void): void {
    this.pendingListener = listener;
  }

  private pendingListener: ((requestId: string, sessionId: string, timeoutMs: number) => void) | undefined;

  /** Parks the agent's request until a vote, a cancel, a kill or the timeout. */
  request(sessionId: string, events: EventBus, params: RequestPermissionRequest): Promise<RequestPermissionResponse> {
    const ids = this.bySession.get(sessionId);
    const max = this.opts.maxPendingPerSession;
    if (max > 0 && Number.isFinite(max) && ids && ids.size >= max) {
      this.opts.log.warn({ sessionId, max }, 'too many pending permissions; resolving the new one as cancelled');
      return Promise.resolve(CANCELLED);
    }
    const requestId = randomUUID();
    const allowedOptionIds = new Set(params.options.map((o) => String(o.optionId)).filter((id) => id !== ''));
    // Fixed when the agent asks: a prompt queued meanwhile or a user leaving changes neither.
    const context = this.contextOf(sessionId);
    const policy = this.policy.name;
    const originator = policy === 'designated' ? context?.originator : undefined;
    const quorum = policy === 'consensus' ? quorumFor(this.policy, context?.attachedUsers ?? 0) : undefined;
    return new Promise<RequestPermissionResponse>((resolve) => {
      const entry: Pending = {
        requestId,
        sessionId,
        createdAt: Date.now(),
        toolCall: params.toolCall,
        options: params.options,
        events,
        allowedOptionIds,
        resolve,
        timer: undefined,
        originator,
        quorum,
        votes: [],
      };
      this.pending.set(requestId, entry);
      this.pendingListener?.(requestId, sessionId, this.opts.timeoutMs);
      let set = this.bySession.get(sessionId);
      if (!set) this.bySession.set(sessionId, (set = new Set()));
      set.add(requestId);
      const published = events.publish('permission_request', {
        requestId,
        sessionId,
        toolCall: params.toolCall,
        options: params.options,
        ...(this.opts.announcePolicy ? { policy } : {}),
        ...(originator !== undefined ? { originator } : {}),
        ...(quorum !== undefined ? { quorum } : {}),
      });
      if (!published) {
        this.take(requestId);
        resolve(CANCELLED);
        return;
      }
      const ms = this.opts.timeoutMs;
      if (ms > 0 && Number.isFinite(ms)) {
        entry.timer = setTimeout(() => {
          this.opts.log.warn({ sessionId, requestId, ms }, 'permission timed out; resolving as cancelled');
          this.settle(requestId, CANCELLED);
        }, ms);
        entry.timer.unref();
      }
    });
  }

  /**
   * A client's vote. False when the request is unknown or already settled;
   * throws when a selected option was never offered or the policy does not
   * count this voter (the request stays open either way). True when the
   * vote counted, whether or not it settled the request.
   */
  respond(requestId: string, response: RequestPermissionResponse, actor?: Actor, voter?: Voter): boolean {
    const entry = this.pending.get(requestId);
    if (!entry) return false;
    const outcome = response.outcome;
    if (outcome.outcome === 'selected' && !entry.allowedOptionIds.has(outcome.optionId)) {
      throw new InvalidPermissionOptionError(requestId, outcome.optionId);
    }
    const user = this.opts.namedUsers ? voter?.user : undefined;
    const vote: CastVote = {
      user: voter?.user ?? ANONYMOUS_USER,
      outcome: outcome.outcome,
      ...(outcome.outcome === 'selected' ? { optionId: outcome.optionId } : {}),
    };
    const policy = this.policy.name;
    if (policy === 'local-only' && voter !== undefined && !voter.loopback) {
      throw new VoteNotAllowedError(requestId, policy, 'only clients on a loopback address may answer');
    }
    // Without tokens nobody can be told apart: designated and consensus then take the first answer.
    if (policy === 'designated' && user !== undefined && entry.originator !== undefined && user !== entry.originator) {
      throw new VoteNotAllowedError(requestId, policy, `only ${entry.originator}, who sent the prompt, may answer`);
    }
    if (policy === 'consensus' && user !== undefined && entry.quorum !== undefined) {
      if (entry.votes.some((v) => v.user === user)) throw new VoteAlreadyCastError(requestId, user);
      entry.votes.push(vote);
      const same = entry.votes.filter((v) => v.outcome === vote.outcome && v.optionId === vote.optionId).length;
      if (same < entry.quorum) {
        entry.events.publish('permission_vote', {
          requestId,
          sessionId: entry.sessionId,
          policy,
          quorum: entry.quorum,
          votes: [...entry.votes],
          ...actorMeta(actor),
        });
        return true;
      }
      return this.settle(requestId, response, actor);
    }
    entry.votes.push(vote);
    return this.settle(requestId, response, actor);
  }

  /** A request settled recently: its session and how it ended; undefined when unknown or long forgotten. */
  resolvedRecently(requestId: string): ResolvedPermission | undefined {
    return this.resolved.get(requestId);
  }

  /** The requests of a session still waiting for a vote, oldest first. */
  pendingFor(sessionId: string): PendingPermission[] {
    const ids = this.bySession.get(sessionId);
    if (!ids) return [];
    return [...ids].flatMap((id) => {
      const entry = this.pending.get(id);
      return entry
        ? [{ requestId: entry.requestId, createdAt: entry.createdAt, toolCall: entry.toolCall, options: entry.options }]
        : [];
    });
  }

  /** Resolves every pending request of a session as cancelled. */
  cancelSession(sessionId: string): void {
    const ids = this.bySession.get(sessionId);
    if (!ids) return;
    for (const id of [...ids]) this.settle(id, CANCELLED);
  }

  /** Resolves everything as cancelled (shutdown). */
  cancelAll(): void {
    for (const id of [...this.pending.keys()]) this.settle(id, CANCELLED);
  }

  private take(requestId: string): Pending | undefined {
    const entry = this.pending.get(requestId);
    if (!entry) return undefined;
    this.pending.delete(requestId);
    clearTimeout(entry.timer);
    const set = this.bySession.get(entry.sessionId);
    set?.delete(requestId);
    if (set?.size === 0) this.bySession.delete(entry.sessionId);
    return entry;
  }

  /**
   * Publishes the resolution first and only then removes the request: if the
   * publish throws, the request is still pending, its timeout still armed,
   * and the agent still waiting for an answer someone can give.
   */
  private settle(requestId: string, response: RequestPermissionResponse, actor?: Actor): boolean {
    const entry = this.pending.get(requestId);
    if (!entry) return false;
    // A settlement without votes (timeout, cancel, shutdown) was decided by no policy.
    const decided =
      this.opts.announcePolicy && entry.votes.length > 0 ? { policy: this.policy.name, votes: entry.votes } : {};
    entry.events.publish('permission_resolved', {
      requestId,
      outcome: response.outcome,
      ...decided,
      ...actorMeta(actor),
    });
    this.take(requestId);
    this.resolved.set(requestId, { sessionId: entry.sessionId, outcome: response.outcome });
    if (this.resolved.size > RESOLVED_MEMORY) {
      const oldest = this.resolved.keys().next().value;
      if (oldest !== undefined) this.resolved.delete(oldest);
    }
    entry.resolve(response);
    return true;
  }
}
