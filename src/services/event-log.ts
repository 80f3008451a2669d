/**
 * Where a session's numbered events are kept for replay (`Last-Event-ID`).
 *
 * The bus numbers and fans out events; the log only stores them and hands
 * back what follows a cursor. Today's log is the in-memory ring below,
 * bounded by count and by bytes. A durable log (a file, SQLite, Redis)
 * implements the same interface and keeps its `epoch` across restarts, so a
 * client's cursor from before a restart still means the same events.
 */
import { randomUUID } from 'node:crypto';
import type { BusEvent } from './event-bus.js';

export interface EventLog {
  /**
   * Names this log's sequence of ids. A cursor from another epoch does not
   * point into this log (a new log after a restart of a memory-only daemon).
   */
  readonly epoch: string;
  /** The id the next appended event must carry: ids are dense, from 1. */
  readonly nextId: number;
  /**
   * The oldest id the log still holds (`nextId` when it holds none). Above 1,
   * the events before it were pushed out: a cursor older than `firstId - 1`
   * can no longer be replayed without a gap.
   */
  readonly firstId: number;
  /** How many events and how many frame bytes the log holds now. */
  readonly size: number;
  readonly bytes: number;
  /**
   * Stores `event` (whose id is `nextId`) and returns how many of the oldest
   * events the log's bounds pushed out to make room for it at once.
   */
  append(event: BusEvent): number;
  /**
   * For a log that commits appends in groups: makes every event appended so
   * far durable. The bus calls it before it sends any of them, once per burst
   * (see `EventBus.publish`); a log without it keeps each event at `append`.
   * A log on the network (Redis) answers with a promise: the bus then keeps
   * one commit in flight and sends the events once it resolves; a rejection
   * leaves them pending for the next commit (or, a `FencedError`, stops the
   * bus). A synchronous commit is taken as done when it returns.
   */
  commit?(): void | Promise<void>;
  /**
   * For a log that trims later, in the background: calls `listener` with
   * the number of events each trim dropped. Returns the way to stop.
   */
  watchDrops?(listener: (count: number) => void): () => void;
  /** The stored events with an id greater than `cursor`, oldest first. */
  after(cursor: number): Iterable<BusEvent>;
}

export interface MemoryLogBounds {
  /** At most this many events (0 keeps none). */
  maxEvents: number;
  /** At most this many frame bytes, the newest event always kept (0 = count only). */
  maxBytes: number;
}

/** Where a memory log starts when it continues a log kept elsewhere (a Redis stream's tail). */
export interface MemoryLogStart {
  /** The epoch of the log it continues; a fresh one when absent. */
  epoch?: string;
  /** The id of the first event it will be given; 1 when absent. */
  nextId?: number;
}

/** A fixed-capacity circular buffer of events, oldest first, bounded by count and by bytes. */
export class MemoryEventLog implements EventLog {
  readonly epoch: string;
  private readonly slots: (BusEvent | undefined)[];
  private start = 0;
  private count = 0;
  private heldBytes = 0;
  private next: number;

  constructor(
    private readonly bounds: MemoryLogBounds,
    from: MemoryLogStart = {},
  ) {
    this.slots = new Array<BusEvent | undefined>(bounds.maxEvents);
    this.epoch = from.epoch ?? randomUUID();
    this.next = from.nextId ?? 1;
  }

  get nextId(): number {
    return this.next;
  }

  get firstId(): number {
    return this.count === 0 ? this.next : (this.at(0).id ?? this.next);
  }

  get size(): number {
    return this.count;
  }

  get bytes(): number {
    return this.heldBytes;
  }

  /**
   * One event out when the count is full, then as many as it takes to get
   * back within the byte budget; the newest event always stays, even alone
   * over budget.
   */
  append(event: BusEvent): number {
    this.next++;
    const capacity = this.bounds.maxEvents;
    if (capacity === 0) return 0;
    let evicted = 0;
    if (this.count === capacity) {
      this.shift();
      evicted++;
    }
    this.slots[(this.start + this.count) % capacity] = event;
    this.count++;
    this.heldBytes += event.bytes;
    if (this.bounds.maxBytes > 0) {
      while (this.heldBytes > this.bounds.maxBytes && this.count > 1) {
        this.shift();
        evicted++;
      }
    }
    return evicted;
  }

  *after(cursor: number): Generator<BusEvent> {
    if (this.count === 0) return;
    const firstId = this.at(0).id ?? 0;
    const skip = Math.max(0, Math.min(this.count, cursor - firstId + 1));
    for (let i = skip; i < this.count; i++) yield this.at(i);
  }

  private at(i: number): BusEvent {
    return this.slots[(this.start + i) % this.bounds.maxEvents] as BusEvent;
  }

  private shift(): void {
    const oldest = this.at(0);
    this.slots[this.start] = undefined;
    this.start = (this.start + 1) % this.bounds.maxEvents;
    this.count--;
    this.heldBytes -= oldest.bytes;
  }
}
