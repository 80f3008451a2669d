/**
 * One bus per session: numbered events, a replay ring bounded by count and by
 * bytes, and a queue per subscriber bounded the same two ways. Publishing
 * never blocks; it throws only when the data cannot be serialised, and then
 * nothing changes (see `EventBus.publish`). A subscriber that falls too far
 * behind is evicted with a synthetic `client_evicted` frame while everybody
 * else carries on.
 *
 * A log that commits over the network (Redis) commits asynchronously: the
 * bus keeps one commit in flight, sends a batch only once its commit has
 * resolved, retries a failed one with backoff and stops for good when the
 * log says another node owns the session (`FencedError`). See `flush`.
 *
 * Sizes are the UTF-8 byte length of an event's SSE frame (`BusEvent.bytes`),
 * measured once at publish: exactly what the frame costs on the wire, and the
 * order of magnitude of what it costs in memory.
 */
import { FencedError, SubscriberLimitExceededError } from '../errors.js';
import { MemoryEventLog, type EventLog } from './event-log.js';

const EVENT_SCHEMA_VERSION = 1 as const;
export const DEFAULT_RING_SIZE = 4000;
export const DEFAULT_MAX_QUEUED = 256;
export const DEFAULT_MAX_SUBSCRIBERS = 64;
/** The same defaults as the `ringBytes` and `subscriberBacklogBytes` settings. */
export const DEFAULT_RING_BYTES = 16 * 1024 * 1024;
export const DEFAULT_MAX_QUEUED_BYTES = 8 * 1024 * 1024;

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
  /** The envelope's id, read without the envelope (which may be built only when asked for). */
  readonly id: number | undefined;
  readonly envelope: EventEnvelope;
  readonly json: string;
  /** `id:` (when the envelope has one), `event:` and one `data:` line, then the blank line. */
  readonly frame: string;
  /** `Buffer.byteLength(frame)`: the frame's size in UTF-8 bytes. */
  readonly bytes: number;
}

/** A subscriber's view of the bus: an async iterator that can also hand over its backlog at once. */
export interface EventSubscription extends AsyncIterableIterator<BusEvent, undefined> {
  /**
   * What is buffered right now, in order, without waiting (possibly nothing).
   * With `maxBytes`, only the leading events whose frames fit in it together;
   * an event that alone is larger is left for `next()`.
   */
  takeBuffered(maxBytes?: number): BusEvent[];
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
  /** Events pushed out of the ring (by count or by bytes): a reconnect from before them can no longer replay them. */
  dropped = 0;
  /** Subscribers cut off because their queue overflowed (by count or by bytes). */
  evicted = 0;
}

export interface BusOptions {
  /** How many events the ring keeps at most. */
  ringSize?: number;
  /** How many bytes of frames the ring keeps at most (the newest event always stays); 0 = count only. */
  ringBytes?: number;
  /** Where events are kept for replay; an in-memory ring of `ringSize`/`ringBytes` when absent. */
  log?: EventLog;
  /** How many live events may wait for one subscriber. */
  maxQueued?: number;
  /** How many bytes of live frames may wait for one subscriber; 0 = count only. */
  maxQueuedBytes?: number;
  maxSubscribers?: number;
  /** Where to count; a private instance when absent. */
  stats?: BusStats;
  /**
   * An asynchronous commit was refused with a `FencedError` (another node
   * owns the session now): called once; the bus has closed, its uncommitted
   * events are never sent and its subscribers' streams end.
   */
  onFenced?: () => void;
  /** An asynchronous commit started failing (the error) or succeeded again (undefined). */
  onCommitError?: (err: unknown) => void;
  /** The last subscriber left (a follower's bus is shared by its subscribers and closed then). */
  onIdle?: () => void;
  /**
   * An event was published here (numbered and handed to the log; not the
   * events `ingest` mirrors from another node's log). Called synchronously:
   * a listener that must keep the event (webhooks) keeps it before the
   * publisher goes on.
   */
  onPublish?: (envelope: EventEnvelope) => void;
}

/** The first retry of a failed asynchronous commit waits this long; each next one twice as long, up to the cap. */
const COMMIT_RETRY_FIRST_MS = 50;
const COMMIT_RETRY_MAX_MS = 1000;

export interface SubscribeOptions {
  /** Replay every ring event with a larger id before live events. */
  lastEventId?: number;
  /**
   * The epoch `lastEventId` was read in; absent = this log's own (v1 clients
   * send no epoch, and their cursors are taken at their word).
   */
  epoch?: string;
  /**
   * The session's state as a client needs it after a (re)connect. Given, the
   * subscription is a client's stream and opens with the frames of the
   * reconnect protocol (see `EventBus.subscribe`); absent, it gets the bare
   * replay (the bus's own consumers and its unit tests).
   */
  snapshot?: () => unknown;
  signal?: AbortSignal;
  maxQueued?: number;
  maxQueuedBytes?: number;
}

/**
 * The event for an envelope whose JSON text is `json`: its frame and size.
 * Also how a durable log rebuilds a stored event from its JSON.
 */
export function frameOf(envelope: EventEnvelope, json: string): BusEvent {
  const frame = frameText(envelope.id, envelope.type, json);
  return { id: envelope.id, envelope, json, frame, bytes: Buffer.byteLength(frame) };
}

/**
 * An event as `publish` keeps it: its id, its frame and the frame's size.
 * The envelope and its JSON are taken out of the frame when someone asks
 * (a subscriber's stream and the durable log only write frames). The bus
 * keeps thousands of these in its tail; an envelope held beside each, with
 * its data's objects and strings, made every young-generation collection
 * copy all of them at least once.
 */
class PublishedEvent implements BusEvent {
  private parsed: EventEnvelope | undefined;
  private text: string | undefined;

  constructor(
    readonly id: number,
    readonly frame: string,
    readonly bytes: number,
    /** Where the envelope's JSON starts in the frame (it ends before the blank line). */
    private readonly jsonStart: number,
  ) {}

  get json(): string {
    return (this.text ??= this.frame.slice(this.jsonStart, this.frame.length - 2));
  }

  get envelope(): EventEnvelope {
    return (this.parsed ??= JSON.parse(this.json) as EventEnvelope);
  }
}

/** The SSE frame of an event: `id:` (when it has one), `event:` and one `data:` line, then the blank line. */
export function frameText(id: number | undefined, type: string, json: string): string {
  const head = id === undefined ? '' : `id: ${id}\n`;
  return `${head}event: ${type}\ndata: ${json}\n\n`;
}

/** Why a cursor cannot resume where it says: qwen's `state_resync_required` details. */
export type ResyncDetail = 'epoch_mismatch' | 'cursor_ahead' | 'cursor_expired';

/** An event without an id (`client_evicted` and the frames that open a client's stream). */
function makeEvent(envelope: EventEnvelope): BusEvent {
  return frameOf(envelope, JSON.stringify(envelope));
}

/**
 * A subscriber's queue. Replayed events sit at the front and do not count
 * against the live caps (they are the ring's own objects, not copies); only
 * live events waiting to be consumed do, by count and by bytes.
 */
class Subscription implements EventSubscription {
  private items: (BusEvent | undefined)[] = [];
  private head = 0;
  /** How many of the events from `head` on are replayed ones. */
  private replayed = 0;
  /** Bytes of the live events waiting (everything from `head` on but the replayed ones). */
  private liveBytes = 0;
  private closed = false;
  /** Live events up to this id were already queued by the replay (or the client holds them): skipped. */
  skipThrough = 0;
  private waiter: ((r: IteratorResult<BusEvent, undefined>) => void) | undefined;
  private onAbort: (() => void) | undefined;

  constructor(
    private readonly maxQueued: number,
    private readonly maxQueuedBytes: number,
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

  /** Queues a replayed event, or an id-less frame the bus sends ahead of live events: neither counts against the live caps. */
  pushReplay(ev: BusEvent): void {
    this.items.push(ev);
    this.replayed++;
  }

  /**
   * Returns false when the subscriber has to be evicted: `maxQueued` live
   * events (plus `burst`, the size of a group commit being sent) are already
   * waiting, or `ev` would take the waiting live bytes over `maxQueuedBytes`.
   * An empty live queue takes one event of any size, as the
   * ring keeps its newest event of any size: a reader that keeps up is never
   * evicted for the size of a single event.
   */
  pushLive(ev: BusEvent, burst = 0): boolean {
    if (this.closed || (ev.id ?? Infinity) <= this.skipThrough) return true;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w({ value: ev, done: false });
      return true;
    }
    const waiting = this.liveQueued;
    if (waiting >= this.maxQueued + burst) return false;
    if (this.maxQueuedBytes > 0 && waiting > 0 && this.liveBytes + ev.bytes > this.maxQueuedBytes) return false;
    this.items.push(ev);
    this.liveBytes += ev.bytes;
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
      this.liveBytes = 0;
    } else if (last) {
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w({ value: last, done: false });
      } else {
        this.items.push(last);
        this.liveBytes += last.bytes;
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

  /** Removes the front event (the caller checked there is one) and keeps the counters right. */
  private shift(): BusEvent {
    const value = this.items[this.head] as BusEvent;
    this.items[this.head] = undefined;
    this.head++;
    if (this.replayed > 0) this.replayed--;
    else this.liveBytes -= value.bytes;
    return value;
  }

  /** Frees the consumed front of the array once it is empty or mostly consumed. */
  private compact(): void {
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }

  next(): Promise<IteratorResult<BusEvent, undefined>> {
    if (this.head < this.items.length) {
      const value = this.shift();
      this.compact();
      return Promise.resolve({ value, done: false });
    }
    if (this.closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  takeBuffered(maxBytes = Infinity): BusEvent[] {
    if (this.head === this.items.length) return [];
    if (maxBytes === Infinity) {
      const taken = (this.head === 0 ? this.items : this.items.slice(this.head)) as BusEvent[];
      this.items = [];
      this.head = 0;
      this.replayed = 0;
      this.liveBytes = 0;
      return taken;
    }
    const taken: BusEvent[] = [];
    let bytes = 0;
    while (this.head < this.items.length) {
      const ev = this.items[this.head] as BusEvent;
      if (bytes + ev.bytes > maxBytes) break;
      bytes += ev.bytes;
      taken.push(this.shift());
    }
    this.compact();
    return taken;
  }

  return(): Promise<IteratorResult<BusEvent, undefined>> {
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
  private readonly log: EventLog;
  private readonly subscribers = new Set<Subscription>();
  private readonly maxQueued: number;
  private readonly maxQueuedBytes: number;
  private readonly maxSubscribers: number;
  private readonly stats: BusStats;
  private readonly unwatchDrops: (() => void) | undefined;
  private closed = false;
  /** Published, not yet committed and sent (a log that commits in groups). */
  private unsent: BusEvent[] = [];
  private flushScheduled = false;
  /** The id of the newest event sent to subscribers: a replay covers exactly up to it. */
  private sentId: number;
  /** The batch whose asynchronous commit is in flight (one at a time). */
  private inFlight: BusEvent[] | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = 0;
  private failing: string | undefined;
  private fenced = false;
  /** Subscribers ended and drop watch stopped (a close whose last commit settled). */
  private finished = false;
  private onDrained: (() => void) | undefined;
  private drainedPromise: Promise<void> | undefined;
  private readonly hooks: Pick<BusOptions, 'onFenced' | 'onCommitError' | 'onIdle' | 'onPublish'>;

  constructor(opts: BusOptions = {}) {
    this.log =
      opts.log ??
      new MemoryEventLog({
        maxEvents: opts.ringSize ?? DEFAULT_RING_SIZE,
        maxBytes: opts.ringBytes ?? DEFAULT_RING_BYTES,
      });
    this.maxQueued = opts.maxQueued ?? DEFAULT_MAX_QUEUED;
    this.maxQueuedBytes = opts.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    this.maxSubscribers = opts.maxSubscribers ?? DEFAULT_MAX_SUBSCRIBERS;
    this.stats = opts.stats ?? new BusStats();
    this.hooks = opts;
    this.sentId = this.log.nextId - 1;
    // A log that trims in the background reports its drops as they happen, not from `append`.
    this.unwatchDrops = this.log.watchDrops?.((count) => {
      this.stats.dropped += count;
    });
  }

  /** The newest id handed to the subscribers (behind `lastEventId` while a group commit is pending). */
  get lastSentId(): number {
    return this.sentId;
  }

  get lastEventId(): number {
    return this.log.nextId - 1;
  }

  /**
   * The oldest event a reconnect can still replay. Asking applies the log's
   * exact bounds (a durable log trims lazily, a little past them), so the
   * `dropped` count is exact afterwards too.
   */
  get firstHeldId(): number {
    return this.log.firstId;
  }

  /**
   * Whether a publish reaches nobody before the log's next group commit (a
   * log that commits in groups), so publishing cannot fill a subscriber's
   * queue by itself: the commit sends the burst, and the burst stretches the
   * queue's cap by its size.
   */
  get sendsAtCommit(): boolean {
    return this.log.commit !== undefined && !this.closed;
  }

  /** The epoch of the log behind this bus. */
  get epoch(): string {
    return this.log.epoch;
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Why the asynchronous commits fail now (Redis unreachable), while they fail; undefined otherwise. */
  get commitError(): string | undefined {
    return this.failing;
  }

  /** Whether a commit refused with `FencedError` stopped this bus. */
  get isFenced(): boolean {
    return this.fenced;
  }

  /** Bytes of the frames the replay ring holds now (for tests and metrics). */
  get ringBytes(): number {
    return this.log.bytes;
  }

  /**
   * Assigns the next id, stores the event in the ring and fans it out.
   * Undefined on a closed bus.
   *
   * `data` is serialised before an id is taken. When that throws (a cycle, a
   * BigInt, nesting too deep for JSON.stringify: RangeError), the error
   * propagates to the caller and the bus is exactly as before: no id used up,
   * nothing in the ring, nothing sent, so ids stay dense for every subscriber.
   *
   * `dataJson`, when given, must be exactly `JSON.stringify(data)`: a caller
   * that has that text already (a text chunk scanned from the agent's line)
   * spares the bus serializing the object again.
   */
  publish(type: string, data: unknown, dataJson: string | undefined = JSON.stringify(data)): EventEnvelope | undefined {
    if (this.closed) return undefined;
    // The envelope's JSON is assembled around the serialised data, giving the
    // same text as JSON.stringify(envelope) (an undefined `data` is left out,
    // as JSON.stringify leaves it out) without needing the id beforehand. The
    // one difference: a toJSON() on `data` itself is called with the key ''.
    const id = this.log.nextId;
    const envelope: EventEnvelope = { id, v: EVENT_SCHEMA_VERSION, type, data };
    // The frame is built whole and the event keeps nothing else: one string per event kept in the
    // ring, not a frame, a JSON text and the envelope's objects beside it (see PublishedEvent).
    const head = `id: ${id}\nevent: ${type}\ndata: `;
    const frame =
      `${head}{"id":${id},"v":${EVENT_SCHEMA_VERSION},"type":${JSON.stringify(type)}` +
      (dataJson === undefined ? '}\n\n' : `,"data":${dataJson}}\n\n`);
    // byteLength flattens the frame first, so a later slice of it shares its characters.
    const ev = new PublishedEvent(id, frame, Buffer.byteLength(frame), head.length);
    this.stats.published++;
    this.stats.dropped += this.log.append(ev);
    if (this.log.commit) {
      // Group commit: the burst's events are committed together, then sent (`flush`).
      this.unsent.push(ev);
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    } else this.fanOut(ev);
    this.hooks.onPublish?.(envelope);
    return envelope;
  }

  /**
   * With a log that commits in groups: commits every event published since
   * the last flush, then sends them in order. Runs once per burst (on
   * `setImmediate`), and before anything that must see every event: a new
   * subscriber, the bus closing. Nothing reaches a subscriber before the log
   * has made it durable; a burst costs one commit, not one per event.
   *
   * A synchronous commit (SQLite) sends the batch at once. An asynchronous
   * one (Redis) is kept alone in flight: what is published meanwhile waits
   * for the next commit, started as soon as this one resolves. A rejection
   * keeps the batch (the log keeps it pending too) and retries with backoff;
   * a `FencedError` stops the bus instead (`fence`).
   */
  flush(): void {
    this.flushScheduled = false;
    if (this.inFlight || this.fenced || this.retryTimer || this.unsent.length === 0) return;
    const batch = this.unsent;
    this.unsent = [];
    const committed = this.log.commit?.();
    if (!(committed instanceof Promise)) {
      this.send(batch);
      return;
    }
    this.inFlight = batch;
    committed.then(
      () => this.committed(batch),
      (err: unknown) => this.commitFailed(batch, err),
    );
  }

  /** A burst arrives at once, so the count cap stretches by its size: a reader is evicted for falling
   * behind (or for bytes), not for the daemon having grouped the events it is sent. */
  private send(batch: BusEvent[]): void {
    for (const ev of batch) this.fanOut(ev, batch.length);
  }

  private committed(batch: BusEvent[]): void {
    this.inFlight = undefined;
    this.retryMs = 0;
    if (this.failing !== undefined) {
      this.failing = undefined;
      this.hooks.onCommitError?.(undefined);
    }
    this.send(batch);
    this.flush();
    if (this.closed && !this.inFlight) this.finish();
  }

  private commitFailed(batch: BusEvent[], err: unknown): void {
    this.inFlight = undefined;
    if (err instanceof FencedError) {
      this.fence();
      return;
    }
    const reason = err instanceof Error ? err.message : String(err);
    if (this.failing === undefined) this.hooks.onCommitError?.(err);
    this.failing = reason;
    if (this.closed) {
      // Closing gives up on an outage: the log still holds the events pending (a later commit of the
      // log itself may write them), but nobody waits here any longer.
      this.unsent = [];
      this.finish();
      return;
    }
    this.unsent = batch.concat(this.unsent);
    this.retryMs = Math.min(Math.max(COMMIT_RETRY_FIRST_MS, this.retryMs * 2), COMMIT_RETRY_MAX_MS);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.flush();
    }, this.retryMs);
    this.retryTimer.unref();
  }

  /**
   * Another node owns the session: nothing uncommitted is ever sent, and the
   * subscribers' streams end after what they were sent (all of it committed),
   * so they reconnect to the new owner with a cursor that loses nothing.
   */
  private fence(): void {
    if (this.fenced) return;
    this.fenced = true;
    this.closed = true;
    this.unsent = [];
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.hooks.onFenced?.();
    this.finish();
  }

  /** Ends every subscription (after what it holds) and resolves `drained`. */
  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.unwatchDrops?.();
    for (const sub of [...this.subscribers]) sub.end(true);
    this.subscribers.clear();
    this.onDrained?.();
  }

  /**
   * For a follower (a bus mirroring a log another node writes): stores and
   * fans out `ev`, which already has its id. True when taken, or when it was
   * already held (a duplicate is ignored); false when its id is past `nextId`:
   * events were missed (trimmed before this node read them), and the caller
   * must rebuild the follower. Meant for a bus whose log does not commit.
   */
  ingest(ev: BusEvent): boolean {
    const id = ev.id;
    if (this.closed || id === undefined || id < this.log.nextId) return true;
    if (id > this.log.nextId) return false;
    this.stats.dropped += this.log.append(ev);
    this.fanOut(ev);
    return true;
  }

  private fanOut(ev: BusEvent, burst = 0): void {
    const id = ev.id;
    if (id !== undefined) this.sentId = id;
    for (const sub of this.subscribers) {
      if (!sub.pushLive(ev, burst)) {
        this.stats.evicted++;
        sub.end(
          true,
          makeEvent({
            v: EVENT_SCHEMA_VERSION,
            type: 'client_evicted',
            data: { reason: 'queue_overflow', droppedAfter: id },
          }),
        );
      }
    }
  }

  /**
   * Registers a subscriber synchronously: events published after this call
   * returns are delivered even before the consumer starts iterating.
   */
  subscribe(opts: SubscribeOptions = {}): EventSubscription {
    if (this.closed) return EMPTY;
    // Whatever is published but not yet sent goes out first: with a synchronous commit the replay below
    // then covers every event; with an asynchronous one, the events of the commit this starts (or of the
    // one in flight) reach the new subscriber live, once committed.
    this.flush();
    if (this.subscribers.size >= this.maxSubscribers) throw new SubscriberLimitExceededError(this.maxSubscribers);
    const sub = new Subscription(opts.maxQueued ?? this.maxQueued, opts.maxQueuedBytes ?? this.maxQueuedBytes, (s) => {
      if (this.subscribers.delete(s) && this.subscribers.size === 0) this.hooks.onIdle?.();
    });
    if (opts.snapshot) sub.skipThrough = this.greet(sub, opts.lastEventId, opts.epoch, opts.snapshot) ?? 0;
    else if (opts.lastEventId !== undefined) {
      this.replay(sub, opts.lastEventId);
      // A cursor past every id handed out means nothing here (v1 takes it at its word): live events all come.
      sub.skipThrough = Math.min(opts.lastEventId, this.lastEventId);
    }
    if (opts.signal?.aborted) {
      sub.abort();
      return sub;
    }
    this.subscribers.add(sub);
    sub.watch(opts.signal);
    return sub;
  }

  /**
   * Why `cursor` (read in `epoch`) cannot resume this log without a gap, if
   * it cannot: another epoch, an id not handed out yet, or events after it
   * that the log's bounds already pushed out.
   */
  resyncReason(cursor: number, epoch: string | undefined): ResyncDetail | undefined {
    if (epoch !== undefined && epoch !== this.log.epoch) return 'epoch_mismatch';
    if (cursor > this.lastEventId) return 'cursor_ahead';
    if (cursor < this.log.firstId - 1) return 'cursor_expired';
    return undefined;
  }

  /** Queues every held event after `cursor` that was sent already; returns how many and the id of the last. */
  private replay(sub: Subscription, cursor: number): { count: number; lastId: number | null } {
    let count = 0;
    let lastId: number | null = null;
    for (const ev of this.log.after(cursor)) {
      // The log may hold events whose commit is still in flight: they come live, like to everybody.
      if ((ev.id ?? 0) > this.sentId) break;
      sub.pushReplay(ev);
      count++;
      lastId = ev.id ?? lastId;
    }
    this.stats.replayed += count;
    return { count, lastId };
  }

  /**
   * The opening of a client's stream, all of it queued before any live event
   * can be: `state_resync_required` when the cursor cannot resume without a
   * gap (then the replay starts at the oldest event held), the replay,
   * `replay_complete` (on every subscribe, with or without a cursor, as the
   * qwen daemon sends it), then `session_state`. None of these carries an id:
   * a client's cursor only ever moves over numbered events. Returns the
   * cursor the replay started from (live events up to it are skipped: the
   * client holds them).
   */
  private greet(
    sub: Subscription,
    cursor: number | undefined,
    epoch: string | undefined,
    snapshot: () => unknown,
  ): number | undefined {
    let from = cursor;
    const detail = cursor === undefined ? undefined : this.resyncReason(cursor, epoch);
    if (detail) {
      sub.pushReplay(
        makeEvent({
          v: EVENT_SCHEMA_VERSION,
          type: 'state_resync_required',
          data: {
            // qwen's reasons: a gap within the epoch is `ring_evicted`; any other cursor that does not
            // point into this log is an `epoch_reset`.
            reason: detail === 'cursor_expired' ? 'ring_evicted' : 'epoch_reset',
            detail,
            lastDeliveredId: cursor,
            earliestAvailableId: this.log.firstId,
          },
        }),
      );
      from = 0;
    }
    const replayed = from === undefined ? { count: 0, lastId: null } : this.replay(sub, from);
    sub.pushReplay(
      makeEvent({
        v: EVENT_SCHEMA_VERSION,
        type: 'replay_complete',
        data: { lastReplayedEventId: replayed.lastId, lastEventId: this.sentId, replayedCount: replayed.count },
      }),
    );
    sub.pushReplay(makeEvent({ v: EVENT_SCHEMA_VERSION, type: 'session_state', data: snapshot() }));
    return from;
  }

  /**
   * Ends every subscription after it drains; later publishes and subscribes
   * are no-ops. With an asynchronous log the subscriptions end once the
   * commits of what was published settle (`drained`), so the last event
   * (`session_closed`, `session_died`) still reaches everybody; a commit
   * failing then is not retried.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.retryTimer) {
      // One last attempt now rather than after the backoff.
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    this.flush();
    if (!this.inFlight) this.finish();
  }

  /** Settles once a closed bus has ended its subscriptions (at once for a synchronous log). */
  drained(): Promise<void> {
    if (this.finished) return Promise.resolve();
    this.drainedPromise ??= new Promise<void>((resolve) => {
      this.onDrained = resolve;
    });
    return this.drainedPromise;
  }
}
