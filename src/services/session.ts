/**
 * One live session: its bus, its hold on the agent channel, its prompt and
 * model queues (one at a time each, FIFO), and who is attached to it. Other
 * modules ask it (`attach`, `detach`, `prompt`…); none edits its counters.
 */
import type { PromptResponse } from '@agentclientprotocol/sdk';
import { PromptAbortedError, SessionNotFoundError } from '../errors.js';
import type { AgentChannel } from './agent-channel.js';
import type { ChannelLease } from './channel-supervisor.js';
import type { EventBus } from './event-bus.js';
import type { PermissionBroker } from './permissions.js';

/** What a session needs from the daemon around it. */
export interface SessionContext {
  permissions: PermissionBroker;
  initTimeoutMs: number;
  /** Throws when no new work is taken (draining, stopped). */
  assertAcceptingWork(): void;
  /** Called when a prompt starts (to record the session's last use). */
  touched(sessionId: string): void;
}

export class Session {
  private promptTail: Promise<void> = Promise.resolve();
  private modelTail: Promise<void> = Promise.resolve();
  private running = 0;
  private attaches: number;
  private ownerLeft = false;
  private closing = false;

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
    return this.running > 0;
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

  /** Settles when every prompt queued so far has settled. */
  promptsSettled(): Promise<void> {
    return this.promptTail;
  }

  /** Queues a prompt behind the earlier ones; an aborted signal cancels it. */
  prompt(body: Record<string, unknown>, signal?: AbortSignal): Promise<PromptResponse> {
    this.ctx.assertAcceptingWork();
    if (this.closing) return Promise.reject(new SessionNotFoundError(this.sessionId));
    if (signal?.aborted) return Promise.reject(new PromptAbortedError());
    const sessionId = this.sessionId;
    const request = { ...body, sessionId };
    const run = this.promptTail.then(async () => {
      if (signal?.aborted) throw new PromptAbortedError();
      // A prompt still queued when the drain or a close began never starts.
      this.ctx.assertAcceptingWork();
      if (this.closing) throw new SessionNotFoundError(sessionId);
      const onAbort = () => void this.cancelTurn();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.running++;
      this.ctx.touched(sessionId);
      try {
        return await this.channel.call<PromptResponse>('session/prompt', request, {
          closedMessage: `agent channel closed mid-request (session ${sessionId})`,
        });
      } finally {
        this.running--;
        signal?.removeEventListener('abort', onAbort);
      }
    });
    this.promptTail = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  /** Cancels the running turn: its pending permissions resolve `cancelled`, the agent is told. */
  cancelTurn(extra: Record<string, unknown> = {}): Promise<void> {
    this.ctx.permissions.cancelSession(this.sessionId);
    return this.channel.notify('session/cancel', { ...extra, sessionId: this.sessionId });
  }

  /** Queues a model switch; `model_switched` or `model_switch_failed` goes on the bus. */
  setModel(modelId: string, extra: Record<string, unknown> = {}): Promise<unknown> {
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
        this.events.publish('model_switched', { sessionId, modelId });
        return res ?? {};
      } catch (err) {
        this.events.publish('model_switch_failed', {
          sessionId,
          requestedModelId: modelId,
          error: err instanceof Error ? err.message : String(err),
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
    this.ctx.permissions.cancelSession(this.sessionId);
    this.events.publish(frame, { sessionId: this.sessionId, ...data });
    this.events.close();
  }

  /** Returns the hold on the channel; resolves when a stop it caused is done. */
  release(): Promise<void> {
    return this.lease.release();
  }

  /** The turn running now, undefined when idle. Only whether one runs is known until prompts get ids. */
  currentTurn(): { promptId?: string; promptText?: string; queuedAt?: string; startedAt?: string } | undefined {
    return this.busy ? {} : undefined;
  }

  /** The prompts running or waiting, oldest first. None is tracked by id yet. */
  pendingPrompts(): Array<{ promptId: string; text: string; queuedAt: string; state: 'running' | 'queued' }> {
    return [];
  }
}
