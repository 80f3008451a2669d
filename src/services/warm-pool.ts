/**
 * Agent sessions created ahead of demand, so that `POST /session` can answer
 * without waiting for the agent's `session/new`.
 *
 * The pool only lives on a channel that is already up (it never spawns an
 * agent by itself, and never keeps one alive: a channel whose last real
 * session left is stopped, pool and all). It refills in the background after
 * each session it hands out, never beyond the session cap, and stops trying
 * after a failure until the next real spawn succeeds.
 */
import type { FastifyBaseLogger } from 'fastify';
import type { AgentChannel } from './agent-channel.js';
import type { AgentRouter } from './agent-router.js';
import type { EventBus } from './event-bus.js';

interface WarmSession {
  sessionId: string;
  channel: AgentChannel;
  /** Catches what the agent says about the session before anyone takes it. */
  events: EventBus;
}

interface WarmPoolOptions {
  size: number;
  log: FastifyBaseLogger;
  /** Asks the agent for a fresh session on `channel`. */
  create(channel: AgentChannel): Promise<string>;
  /** The bus of the agent session `sessionId`. */
  newBus(sessionId: string): EventBus;
  /** Where the agent's words about a ready session go until someone takes it. */
  router: AgentRouter;
  /** Whether one more session may exist without passing the session cap. */
  hasRoom(pooled: number): boolean;
}

export class WarmPool {
  private readonly ready: WarmSession[] = [];
  private creating = 0;
  private paused = false;
  /** Hand-outs and misses, for metrics and tests. */
  readonly stats = { hits: 0, misses: 0 };

  constructor(private readonly opts: WarmPoolOptions) {}

  get size(): number {
    return this.ready.length;
  }

  /** Ids of the ready sessions, oldest first. */
  get sessionIds(): string[] {
    return this.ready.map((w) => w.sessionId);
  }

  /** A ready session on `channel`, or undefined (a miss). */
  take(channel: AgentChannel): WarmSession | undefined {
    const i = this.ready.findIndex((w) => w.channel === channel);
    if (i === -1) {
      if (this.opts.size > 0) this.stats.misses++;
      return undefined;
    }
    this.stats.hits++;
    const [warm] = this.ready.splice(i, 1);
    return warm;
  }

  /** Starts background creations until the pool is full (or the cap is reached). */
  refill(channel: AgentChannel): void {
    this.paused = false;
    while (
      !this.paused &&
      channel.usable &&
      this.ready.length + this.creating < this.opts.size &&
      this.opts.hasRoom(this.ready.length + this.creating)
    ) {
      this.creating++;
      void this.opts
        .create(channel)
        .then(
          (sessionId) => {
            if (channel.usable) {
              const events = this.opts.newBus(sessionId);
              this.opts.router.bind(sessionId, channel, events, false);
              this.ready.push({ sessionId, channel, events });
            }
          },
          (err: unknown) => {
            this.paused = true;
            this.opts.log.debug({ err }, 'warm session creation failed; pool paused');
          },
        )
        .finally(() => {
          this.creating--;
        });
    }
  }

  /** Forgets the sessions of `channel` (or all of them). */
  discard(channel?: AgentChannel): void {
    for (let i = this.ready.length - 1; i >= 0; i--) {
      const warm = this.ready[i];
      if (warm && (channel === undefined || warm.channel === channel)) {
        this.opts.router.unbind(warm.sessionId, warm.events);
        warm.events.close();
        this.ready.splice(i, 1);
      }
    }
  }
}
