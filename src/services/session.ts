/**
 * One live session: its bus, its hold on the agent channel, its prompt and
 * model queues (one at a time each, FIFO; the prompt queue is PromptQueue's),
 * and who is attached to it. Other
 * modules ask it (`attach`, `detach`, `prompt`…); none edits its counters.
 */
import type { PromptResponse } from '@agentclientprotocol/sdk';
import { SessionNotFoundError } from '../errors.js';
import { actorMeta, type Actor } from './actor.js';
import type { AgentChannel } from './agent-channel.js';
import type { ChannelLease } from './channel-supervisor.js';
import type { EventBus } from './event-bus.js';
import type { PermissionBroker } from './permissions.js';
import { PromptQueue, type Admission, type CurrentTurn, type PendingPrompt } from './prompt-queue.js';

/** What a session needs from the daemon around it. */
export interface SessionContext {
  permissions: PermissionBroker;
  initTimeoutMs: number;
  /** Prompts that may wait behind the running one (--max-pending-prompts); 0 = no limit. */
  maxPendingPrompts: number;
  /** Throws when no new work is taken (draining, stopped). */
  assertAcceptingWork(): void;
  /** Called when a prompt starts (to record the session's last use). */
  touched(sessionId: string): void;
}

export class Session {
  private readonly prompts: PromptQueue;
  private modelTail: Promise<void> = Promise.resolve();
  private attaches: number;
  private ownerLeft = false;
  private closing = false;
  /** The users holding it (created, attached, restored) or reading its events, each with a count. */
  private readonly users = new Map<string, number>();

  constructor(
    readonly sessionId: string,
    readonly workspaceCwd: string,
    readonly events: EventBus,
    private readonly lease: ChannelLease,
    /** The agent's load/resume answer, handed to later attachers (undefined for a created session). */
    readonly restoreState: unknown,
    attaches: number,
    private readonly ctx: SessionContext,
  ) {
    this.attaches = attaches;
    this.prompts = new PromptQueue({
      sessionId,
      events,
      maxPending: ctx.maxPendingPrompts,
      assertOpen: () => {
        // A prompt still queued when the drain or a close began never starts.
        this.ctx.assertAcceptingWork();
        if (this.closing) throw new SessionNotFoundError(sessionId);
      },
      run: (request) =>
        this.channel.call<PromptResponse>('session/prompt', request, {
          closedMessage: `agent channel closed mid-request (session ${sessionId})`,
        }),
      cancelAgent: (extra) => {
        this.ctx.permissions.cancelSession(sessionId);
        return this.channel.notify('session/cancel', { ...extra, sessionId });
      },
      started: () => this.ctx.touched(sessionId),
    });
  }

  get channel(): AgentChannel {
    return this.lease.channel;
  }

  /** Clients attached besides the one that created or restored it. */
  get attachCount(): number {
    return this.attaches;
  }

  /** The creator left before its answer was written, while others were attached. */
  get spawnOwnerWantedKill(): boolean {
    return this.ownerLeft;
  }

  /** A prompt is running in the agent. */
  get busy(): boolean {
    return this.prompts.busy;
  }

  /** The user who sent the running prompt (the originator of its turn's permission requests). */
  get turnUser(): string | undefined {
    return this.prompts.runningUser;
  }

  /** A client asked to close it: it takes no new prompts and is on its way out. */
  get isClosing(): boolean {
    return this.closing;
  }

  /**
   * Marks the session as closing: prompts sent or still queued from now on
   * fail with 404 instead of running. False when it was closing already.
   */
  beginClose(): boolean {
    if (this.closing) return false;
    this.closing = true;
    return true;
  }

  /**
   * A user holds the session or reads it; the returned function lets go
   * (a create or restore never does: the user stays listed while it lives).
   */
  join(user: string): () => void {
    this.users.set(user, (this.users.get(user) ?? 0) + 1);
    let left = false;
    return () => {
      if (left) return;
      left = true;
      const n = (this.users.get(user) ?? 1) - 1;
      if (n > 0) this.users.set(user, n);
      else this.users.delete(user);
    };
  }

  /** The users attached to it, sorted: what the status lists. */
  get attachedUsers(): string[] {
    return [...this.users.keys()].sort();
  }

  attach(count = 1): void {
    this.attaches += count;
  }

  /** One attached client went away. True when the session should now be killed. */
  detach(): boolean {
    if (this.attaches > 0) this.attaches--;
    return this.ownerLeft && this.attaches === 0 && this.events.subscriberCount === 0;
  }

  /** The creator went away before its answer. True when nobody else holds the session: kill it now. */
  creatorLeft(): boolean {
    if (this.attaches === 0) return true;
    this.ownerLeft = true;
    return false;
  }

  /** Settles when every prompt admitted so far has settled. */
  promptsSettled(): Promise<void> {
    return this.prompts.settled();
  }

  /**
   * Admits a prompt (throws when it cannot be: closing, draining, queue
   * full) and runs it after the earlier ones; an aborted signal removes or
   * cancels it. Its end is `done`, and `turn_complete` on the bus.
   */
  prompt(body: Record<string, unknown>, signal?: AbortSignal, actor?: Actor): Admission {
    return this.prompts.admit(body, signal, actor);
  }

  /**
   * Cancels the running prompt (waiting ones then go on): its pending
   * permissions resolve `cancelled`, the agent is told. `announce: false`
   * (a close) skips `prompt_cancelled`.
   */
  cancelTurn(extra: Record<string, unknown> = {}, announce = true, actor?: Actor): Promise<void> {
    return this.prompts.cancel(extra, announce, actor);
  }

  /** Removes a waiting prompt, or cancels the running one. False when no prompt has this id. */
  removePrompt(promptId: string, actor?: Actor): boolean {
    return this.prompts.remove(promptId, undefined, actor);
  }

  /** The running prompt then the waiting ones. */
  pendingPrompts(): PendingPrompt[] {
    return this.prompts.list();
  }

  /** The running prompt; undefined when idle. */
  currentTurn(): CurrentTurn | undefined {
    return this.prompts.current();
  }

  /** Queues a model switch; `model_switched` or `model_switch_failed` goes on the bus. */
  setModel(modelId: string, extra: Record<string, unknown> = {}, actor?: Actor): Promise<unknown> {
    const sessionId = this.sessionId;
    const run = this.modelTail.then(async () => {
      try {
        const res = await this.channel.call<unknown>(
          'session/set_model',
          { ...extra, sessionId, modelId },
          {
            timeoutMs: this.ctx.initTimeoutMs,
            closedMessage: `agent channel closed mid-request (session ${sessionId})`,
          },
        );
        this.events.publish('model_switched', { sessionId, modelId, ...actorMeta(actor) });
        return res ?? {};
      } catch (err) {
        this.events.publish('model_switch_failed', {
          sessionId,
          requestedModelId: modelId,
          error: err instanceof Error ? err.message : String(err),
          ...actorMeta(actor),
        });
        throw err;
      }
    });
    this.modelTail = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  /**
   * The end of the session here: every pending permission cancelled, the
   * last frame (`session_died`, or `session_closed` when a client closed it)
   * published and the bus closed. The lease is returned by `release` (after
   * the agent was told, when it still runs).
   */
  end(data: Record<string, unknown>, frame: 'session_died' | 'session_closed' = 'session_died'): void {
    this.prompts.clear(new SessionNotFoundError(this.sessionId));
    this.ctx.permissions.cancelSession(this.sessionId);
    this.events.publish(frame, { sessionId: this.sessionId, ...data });
    this.events.close();
  }

  /**
   * The end of the session on this node only, when another node carries it
   * on: waiting prompts and permission requests are dropped and the streams
   * end with no last frame, since the session itself goes on elsewhere.
   */
  relinquish(): void {
    this.prompts.clear(new SessionNotFoundError(this.sessionId));
    this.ctx.permissions.cancelSession(this.sessionId);
    this.events.close();
  }

  /** Returns the hold on the channel; resolves when a stop it caused is done. */
  release(): Promise<void> {
    return this.lease.release();
  }
}
