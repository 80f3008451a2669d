/**
 * One bus per session: numbered events, a bounded replay ring, and a bounded
 * queue per subscriber. Publishing never blocks and never throws; a subscriber
 * that falls too far behind is evicted with a synthetic `client_evicted` frame
 * while everybody else carries on.
 */
import { SubscriberLimitExceededError } from '../errors.js';

export const EVENT_SCHEMA_VERSION = 1 as const;
export const DEFAULT_RING_SIZE = 4000;
export const DEFAULT_MAX_QUEUED = 256;
export const DEFAULT_MAX_SUBSCRIBERS = 64;

export interface EventEnvelope {
  id?: number;
  v: typeof EVENT_SCHEMA_VERSION;
  type: string;
  data: unknown;
  originatorClientId?: string;
}

/**
 * An envelope with its JSON text and its Server-Sent Events frame, both
 * built once at publish and shared by every subscriber.
 */
export interface BusEvent {
  readonly envelope: EventEnvelope;
  readonly json: string;
  /** `id:` (when the envelope has one), `event:` and one `data:` line, then the blank line. */
  readonly frame: string;
}

/** A subscriber's view of the bus: an async iterator that can also hand over its backlog at once. */
export interface EventSubscription extends AsyncIterableIterator<BusEvent> {
  /** Everything buffered right now, in order, without waiting (possibly nothing). */
  takeBuffered(): BusEvent[];
}

/**
 * Counters a bus bumps as it works, for metrics. One instance is usually
 * shared by every bus of an app; each update is a plain integer increment.
 */
export class BusStats {
  /** Events given an id and stored. */
  published = 0;
  /** Ring events handed to a subscriber that reconnected with a Last-Event-ID. */
  replayed = 0;
  /** Events pushed out of a full ring: a reconnect from before them can no longer replay them. */
  dropped = 0;
  /** Subscribers cut off because their queue overflowed. */
  evicted = 0;
}

export interface BusOptions {
  ringSize?: number;
  maxQueued?: number;
  maxSubscribers?: number;
  /** Where to count; a private instance when absent. */
  stats?: BusStats;
}

export interface SubscribeOptions {
  /** Replay every ring event with a larger id before live events. */
  lastEventId?: number;
  signal?: AbortSignal;
  maxQueued?: number;
}

function makeEvent(envelope: EventEnvelope): BusEvent {
  const json = JSON.stringify(envelope);
  const head = envelope.id === undefined ? '' : `id: ${envelope.id}\n`;
  return { envelope, json, frame: `${head}event: ${envelope.type}\ndata: ${json}\n\n` };
}

/** A fixed-capacity circular buffer of events, oldest first. */
class Ring {
  private readonly slots: (BusEvent | undefined)[];
  private start = 0;
  size = 0;

  constructor(readonly capacity: number) {
    this.slots = new Array<BusEvent | undefined>(capacity);
  }

  /** Returns true when the oldest event had to make room. */
  push(ev: BusEvent): boolean {
    if (this.capacity === 0) return false;
    if (this.size < this.capacity) {
      this.slots[(this.start + this.size) % this.capacity] = ev;
      this.size++;
      return false;
    }
    this.slots[this.start] = ev;
    this.start = (this.start + 1) % this.capacity;
    return true;
  }

  at(i: number): BusEvent {
    return this.slots[(this.start + i) % this.capacity] as BusEvent;
  }

  /** Events with an id greater than `afterId`, in order. Ids in the ring are consecutive. */
  *after(afterId: number): Generator<BusEvent> {
    if (this.size === 0) return;
    const firstId = this.at(0).envelope.id as number;
    const skip = Math.max(0, Math.min(this.size, afterId - firstId + 1));
    for (let i = skip; i < this.size; i++) yield this.at(i);
  }
}

/**
 * A subscriber's queue. Replayed events sit at the front and do not count
 * against the live cap; only live events waiting to be consumed do.
 */
class Subscription implements EventSubscription {
  private items: (BusEvent | undefined)[] = [];
  private head = 0;
  private replayed = 0;
  private closed = false;
  private waiter: ((r: IteratorResult<BusEvent>) => void) | undefined;
  private onAbort: (() => void) | undefined;

  constructor(
    private readonly maxQueued: number,
    private readonly dispose: (sub: Subscription) => void,
  ) {}

  get liveQueued(): number {
    return this.items.length - this.head - this.replayed;
  }

  watch(signal: AbortSignal | undefined): void {
    if (!signal) return;
    this.onAbort = () => this.abort();
    signal.addEventListener('abort', this.onAbort, { once: true });
    this.unwatch = () => signal.removeEventListener('abort', this.onAbort as () => void);
  }

  private unwatch: () => void = () => {};

  pushReplay(ev: BusEvent): void {
    this.items.push(ev);
    this.replayed++;
  }

  /** Returns false when the subscriber has to be evicted. */
  pushLive(ev: BusEvent): boolean {
    if (this.closed) return true;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w({ value: ev, done: false });
      return true;
    }
    if (this.liveQueued >= this.maxQueued) return false;
    this.items.push(ev);
    return true;
  }

  /** Closes the queue; with `drain` the consumer still receives what is buffered (and `last`). */
  end(drain: boolean, last?: BusEvent): void {
    if (this.closed) return;
    this.closed = true;
    if (!drain) {
      this.items = [];
      this.head = 0;
      this.replayed = 0;
    } else if (last) {
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w({ value: last, done: false });
      } else {
        this.items.push(last);
      }
    }
    if (this.waiter && this.items.length === this.head) {
      const w = this.waiter;
      this.waiter = undefined;
      w({ value: undefined, done: true });
    }
    this.unwatch();
    this.dispose(this);
  }

  abort(): void {
    this.end(false);
  }

  next(): Promise<IteratorResult<BusEvent>> {
    if (this.head < this.items.length) {
      const value = this.items[this.head] as BusEvent;
      this.items[this.head] = undefined;
      this.head++;
      if (this.replayed > 0) this.replayed--;
      if (this.head === this.items.length) {
        this.items = [];
        this.head = 0;
      } else if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head);
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  takeBuffered(): BusEvent[] {
    if (this.head === this.items.length) return [];
    const taken = (this.head === 0 ? this.items : this.items.slice(this.head)) as BusEvent[];
    this.items = [];
    this.head = 0;
    this.replayed = 0;
    return taken;
  }

  return(): Promise<IteratorResult<BusEvent>> {
    this.end(false);
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

const EMPTY: EventSubscription = {
  next: () => Promise.resolve({ value: undefined, done: true }),
  takeBuffered: () => [],
  [Symbol.asyncIterator]() {
    return this;
  },
};

export class EventBus {
  private readonly ring: Ring;
  private readonly subscribers = new Set<Subscription>();
  private readonly maxQueued: number;
  private readonly maxSubscribers: number;
  private readonly stats: BusStats;
  private nextId = 1;
  private closed = false;

  constructor(opts: BusOptions = {}) {
    this.ring = new Ring(opts.ringSize ?? DEFAULT_RING_SIZE);
    this.maxQueued = opts.maxQueued ?? DEFAULT_MAX_QUEUED;
    this.maxSubscribers = opts.maxSubscribers ?? DEFAULT_MAX_SUBSCRIBERS;
    this.stats = opts.stats ?? new BusStats();
  }

  get lastEventId(): number {
    return this.nextId - 1;
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Assigns the next id, stores the event in the ring and fans it out. Undefined on a closed bus. */
  publish(type: string, data: unknown): EventEnvelope | undefined {
    if (this.closed) return undefined;
    const envelope: EventEnvelope = { id: this.nextId++, v: EVENT_SCHEMA_VERSION, type, data };
    const ev = makeEvent(envelope);
    this.stats.published++;
    if (this.ring.push(ev)) this.stats.dropped++;
    for (const sub of this.subscribers) {
      if (!sub.pushLive(ev)) {
        this.stats.evicted++;
        sub.end(
          true,
          makeEvent({
            v: EVENT_SCHEMA_VERSION,
            type: 'client_evicted',
            data: { reason: 'queue_overflow', droppedAfter: envelope.id },
          }),
        );
      }
    }
    return envelope;
  }

  /**
   * Registers a subscriber synchronously: events published after this call
   * returns are delivered even before the consumer starts iterating.
   */
  subscribe(opts: SubscribeOptions = {}): EventSubscription {
    if (this.closed) return EMPTY;
    if (this.subscribers.size >= this.maxSubscribers) throw new SubscriberLimitExceededError(this.maxSubscribers);
    const sub = new Subscription(opts.maxQueued ?? this.maxQueued, (s) => this.subscribers.delete(s));
    if (opts.lastEventId !== undefined) {
      for (const ev of this.ring.after(opts.lastEventId)) {
        sub.pushReplay(ev);
        this.stats.replayed++;
      }
    }
    if (opts.signal?.aborted) {
      sub.abort();
      return sub;
    }
    this.subscribers.add(sub);
    sub.watch(opts.signal);
    return sub;
  }

  /** Ends every subscription after it drains; later publishes and subscribes are no-ops. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const sub of [...this.subscribers]) sub.end(true);
    this.subscribers.clear();
  }
}
