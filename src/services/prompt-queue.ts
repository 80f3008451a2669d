/**
 * The prompts of one session: the one running in the agent and those
 * waiting behind it, in order. Every prompt, blocking or not, is admitted
 * here, gets its `promptId`, and is told to every client over the bus as it
 * goes: its echo (`user_message_chunk`, `_meta.source: "bridge-echo"`),
 * `pending_prompt_added`/`_started`/`_completed` when it had to wait,
 * `prompt_cancelled` on a cancel, and `turn_complete` or `turn_error` when
 * the agent is done with it. The frames use the qwen daemon's shapes (times
 * in milliseconds since the epoch), which its published client checks.
 */
import { actorMeta, type Actor } from './actor.js';
import { randomUUID } from 'node:crypto';
import type { PromptResponse } from '@agentclientprotocol/sdk';
import { PromptAbortedError, PromptQueueFullError } from '../errors.js';
import type { EventBus } from './event-bus.js';

/** What the queue needs from its session. */
export interface PromptQueueHost {
  readonly sessionId: string;
  readonly events: EventBus;
  /** How many prompts may wait behind the running one; 0 = no limit. */
  readonly maxPending: number;
  /** Throws when the session takes no new prompt (draining, stopped, closing). */
  assertOpen(): void;
  /** Sends a prompt to the agent; settles when its turn ends. */
  run(request: Record<string, unknown>): Promise<PromptResponse>;
  /** Tells the agent to stop the running turn (and settles its pending permissions). */
  cancelAgent(extra: Record<string, unknown>): Promise<void>;
  /** A prompt started (the session's last use). */
  started(): void;
}

/** A prompt as `GET /session/:id/pending-prompts` lists it. */
export interface PendingPrompt {
  promptId: string;
  text: string;
  /** Milliseconds since the epoch. */
  queuedAt: number;
  state: 'running' | 'queued';
}

/** The running prompt, as `GET /session/:id/turns/current` shows it. */
export interface CurrentTurn {
  promptId: string;
  promptText: string;
  /** Milliseconds since the epoch. */
  queuedAt: number;
  startedAt: number;
}

/** The answer to an admitted prompt: its id, where its frames start, and its end. */
export interface Admission {
  promptId: string;
  /** The bus's last event id just before this prompt's first frame. */
  lastEventId: number;
  eventEpoch: string;
  /** Settles with the agent's answer, or `cancelled` when it was removed while waiting. */
  done: Promise<PromptResponse>;
}

interface Entry {
  readonly promptId: string;
  readonly text: string;
  readonly queuedAt: number;
  readonly request: Record<string, unknown>;
  readonly signal: AbortSignal | undefined;
  readonly done: Promise<PromptResponse>;
  resolve(response: PromptResponse): void;
  reject(err: unknown): void;
  /** It waited behind another (so it has `pending_prompt_*` frames). */
  waited: boolean;
  startedAt?: number;
  /** When a client cancelled it while it ran. */
  cancelledAt?: number;
  /** Undoes what its abort signal does. */
  unwatch?: () => void;
  /** Who sent it: the user a `designated` permission request of its turn belongs to. */
  readonly actor: Actor | undefined;
}

/** The text blocks of a prompt, joined: what the queue listings and `pending_prompt_*` frames show. */
function promptText(prompt: unknown): string {
  if (!Array.isArray(prompt)) return '';
  const texts: string[] = [];
  for (const block of prompt as unknown[]) {
    if (typeof block !== 'object' || block === null) continue;
    const { type, text } = block as { type?: unknown; text?: unknown };
    if (type === 'text' && typeof text === 'string') texts.push(text);
  }
  return texts.join('\n');
}

function errorCode(err: unknown): string | number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' || typeof code === 'number' ? code : undefined;
}

export class PromptQueue {
  private running: Entry | undefined;
  private readonly waiting: Entry[] = [];

  constructor(private readonly host: PromptQueueHost) {}

  get busy(): boolean {
    return this.running !== undefined;
  }

  /** The user who sent the running prompt, if any and if known. */
  get runningUser(): string | undefined {
    return this.running?.actor?.user;
  }

  /**
   * Admits a prompt or throws before anything is published: the session is
   * not open, the signal is aborted, or the queue is full. Runs it now when
   * nothing else is running or waiting, else queues it. A blocking caller's
   * aborted signal removes it while it waits and cancels it while it runs.
   */
  admit(body: Record<string, unknown>, signal?: AbortSignal, actor?: Actor): Admission {
    const { sessionId, events } = this.host;
    this.host.assertOpen();
    if (signal?.aborted) throw new PromptAbortedError();
    const mustWait = this.running !== undefined || this.waiting.length > 0;
    const max = this.host.maxPending;
    if (mustWait && max > 0 && this.waiting.length >= max) {
      throw new PromptQueueFullError(sessionId, max, this.waiting.length);
    }

    let resolve!: (response: PromptResponse) => void;
    let reject!: (err: unknown) => void;
    const done = new Promise<PromptResponse>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // Whoever admitted it may not wait for it (non-blocking prompts): its end is on the bus.
    done.catch(() => {});
    const entry: Entry = {
      promptId: randomUUID(),
      text: promptText(body.prompt),
      queuedAt: Date.now(),
      request: { ...body, sessionId },
      signal,
      done,
      resolve,
      reject,
      waited: mustWait,
      actor,
    };
    const admission: Admission = {
      promptId: entry.promptId,
      lastEventId: events.lastEventId,
      eventEpoch: events.epoch,
      done,
    };

    this.echo(entry, body.prompt, actor);
    if (!mustWait) {
      this.start(entry);
      return admission;
    }
    events.publish('pending_prompt_added', {
      sessionId,
      promptId: entry.promptId,
      text: entry.text,
      queuedAt: entry.queuedAt,
    });
    this.waiting.push(entry);
    if (signal) {
      const onAbort = () => void this.remove(entry.promptId, new PromptAbortedError());
      signal.addEventListener('abort', onAbort, { once: true });
      entry.unwatch = () => signal.removeEventListener('abort', onAbort);
    }
    return admission;
  }

  /**
   * Stops the running prompt, if any, and tells the agent either way (a
   * cancel with nothing running is harmless, as in v1). `announce` publishes
   * `prompt_cancelled` (once per prompt) and marks the turn as cancelled by a
   * client; a close cancels without it.
   */
  cancel(extra: Record<string, unknown> = {}, announce = true, actor?: Actor): Promise<void> {
    const entry = this.running;
    if (entry && announce && entry.cancelledAt === undefined) {
      entry.cancelledAt = Date.now();
      this.host.events.publish('prompt_cancelled', {
        sessionId: this.host.sessionId,
        promptId: entry.promptId,
        cancelledAt: entry.cancelledAt,
        ...actorMeta(actor),
      });
    }
    return this.host.cancelAgent(extra);
  }

  /**
   * `DELETE …/pending-prompts/:promptId`: a waiting prompt leaves the queue
   * (its blocking caller gets `reason`, or `{stopReason: "cancelled"}`); the
   * running one is cancelled. False when no prompt has this id.
   */
  remove(promptId: string, reason?: Error, actor?: Actor): boolean {
    if (this.running?.promptId === promptId) {
      void this.cancel({}, true, actor).catch(() => {});
      return true;
    }
    const index = this.waiting.findIndex((e) => e.promptId === promptId);
    const entry = this.waiting[index];
    if (!entry) return false;
    this.waiting.splice(index, 1);
    this.drop(entry, reason);
    return true;
  }

  /** Removes every waiting prompt; their blocking callers get `reason`. */
  clear(reason: Error): void {
    for (const entry of this.waiting.splice(0)) this.drop(entry, reason);
  }

  /** The running prompt first, then the waiting ones in order. */
  list(): PendingPrompt[] {
    const running = this.running;
    return [
      ...(running
        ? [{ promptId: running.promptId, text: running.text, queuedAt: running.queuedAt, state: 'running' as const }]
        : []),
      ...this.waiting.map((e) => ({
        promptId: e.promptId,
        text: e.text,
        queuedAt: e.queuedAt,
        state: 'queued' as const,
      })),
    ];
  }

  current(): CurrentTurn | undefined {
    const entry = this.running;
    if (!entry) return undefined;
    return {
      promptId: entry.promptId,
      promptText: entry.text,
      queuedAt: entry.queuedAt,
      startedAt: entry.startedAt ?? entry.queuedAt,
    };
  }

  /** Settles when every prompt admitted so far has settled. */
  settled(): Promise<void> {
    const all = [...(this.running ? [this.running] : []), ...this.waiting].map((e) => e.done);
    return Promise.allSettled(all).then(() => {});
  }

  /** The prompt itself, one `user_message_chunk` per content block, before anything else about it. */
  private echo(entry: Entry, prompt: unknown, actor: Actor | undefined): void {
    if (!Array.isArray(prompt)) return;
    // Who sent it goes beside the echo's own marks, in the same `_meta`.
    const meta = { source: 'bridge-echo', promptId: entry.promptId, ...actorMeta(actor)._meta };
    for (const content of prompt as unknown[]) {
      // `_meta` on the update is where the qwen daemon puts it; on the notification too, for readers of ACP's outer slot.
      this.host.events.publish('session_update', {
        sessionId: this.host.sessionId,
        update: { sessionUpdate: 'user_message_chunk', content, _meta: meta },
        _meta: meta,
      });
    }
  }

  private drop(entry: Entry, reason: Error | undefined): void {
    entry.unwatch?.();
    this.host.events.publish('pending_prompt_completed', {
      sessionId: this.host.sessionId,
      promptId: entry.promptId,
      state: 'removed',
    });
    if (reason) entry.reject(reason);
    else entry.resolve({ stopReason: 'cancelled' });
  }

  private start(entry: Entry): void {
    const { sessionId, events } = this.host;
    this.running = entry;
    entry.startedAt = Date.now();
    entry.unwatch?.();
    if (entry.waited)
      events.publish('pending_prompt_started', { sessionId, promptId: entry.promptId, text: entry.text });
    this.host.started();
    const signal = entry.signal;
    const onAbort = () => {
      if (this.running === entry) void this.cancel().catch(() => {});
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const finish = (settle: () => void) => {
      signal?.removeEventListener('abort', onAbort);
      if (entry.waited)
        events.publish('pending_prompt_completed', { sessionId, promptId: entry.promptId, state: 'completed' });
      this.running = undefined;
      settle();
      this.next();
    };
    Promise.resolve()
      .then(() => this.host.run(entry.request))
      .then(
        (response) => {
          const cancelledAt = entry.cancelledAt;
          const startedAt = entry.startedAt ?? entry.queuedAt;
          events.publish('turn_complete', {
            sessionId,
            promptId: entry.promptId,
            stopReason: response.stopReason,
            ...(response.stopReason === 'cancelled' && cancelledAt !== undefined
              ? { promptCancelled: { cancelledAt, elapsedMs: Math.max(0, cancelledAt - startedAt) } }
              : {}),
          });
          finish(() => entry.resolve(response));
        },
        (err: unknown) => {
          const message = err instanceof Error ? err.message : String(err);
          const code = errorCode(err);
          // `message` is what the qwen daemon and its client use; `error` matches acpd's error envelopes.
          events.publish('turn_error', {
            sessionId,
            promptId: entry.promptId,
            message,
            error: message,
            ...(code !== undefined ? { code } : {}),
          });
          finish(() => entry.reject(err));
        },
      );
  }

  /** Starts the next waiting prompt, or removes it when the session no longer takes prompts. */
  private next(): void {
    while (this.running === undefined) {
      const entry = this.waiting.shift();
      if (!entry) return;
      try {
        this.host.assertOpen();
      } catch (err) {
        this.drop(entry, err instanceof Error ? err : new Error(String(err)));
        continue;
      }
      this.start(entry);
    }
  }
}
