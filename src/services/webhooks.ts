/**
 * Webhooks: the events a person may have to act on away from any client
 * (`permission_request`, `turn_complete`, `session_died`), POSTed as JSON to
 * each receiver of `--webhook-url`, signed with `--webhook-secret`.
 *
 * The guarantees, and how they are kept:
 * - **At least once, across restarts.** A delivery is written to the queue
 *   (`WebhookQueue`: the data store's database when there is one) before its
 *   first attempt and removed only once its receiver answered 2xx or it was
 *   given up; the next daemon sends what the last one left. Its id
 *   (`Acpd-Delivery`, also the body's `id`) never changes, so a receiver
 *   drops what it has seen already.
 * - **In order, per receiver.** One delivery at a time goes to a receiver,
 *   the oldest first; the next waits while the first is retried. Receivers
 *   do not wait for one another. A delivery given up leaves a gap.
 * - **Bounded retries.** A network error, a timeout, 5xx or 429 is retried
 *   after an exponential backoff with jitter (a `Retry-After` is honoured),
 *   up to `maxAttempts` attempts; any other answer (a 4xx: the receiver
 *   refused it, a 3xx: redirects are not followed) ends it at once. A
 *   delivery given up is logged and counted (`stats.failed`).
 *
 * The signature is Stripe's scheme in our header: `Acpd-Signature:
 * t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, made afresh at each
 * attempt, so a receiver can refuse old timestamps without refusing retries.
 */
import { createHmac, randomUUID } from 'node:crypto';
import { Agent, request } from 'undici';
import type { EventEnvelope } from './event-bus.js';
import type { WebhookDelivery, WebhookQueue } from './webhook-queue.js';

/** The event types sent to webhooks. */
export const WEBHOOK_EVENTS: ReadonlySet<string> = new Set(['permission_request', 'turn_complete', 'session_died']);

/** The body of a delivery. */
export interface WebhookPayload {
  /** The delivery id, as in `Acpd-Delivery`. */
  id: string;
  type: string;
  sessionId: string;
  /** The event's `data`, as its SSE frame carries it. */
  data: unknown;
  /** When the event was published, in milliseconds since the epoch. */
  createdAt: number;
}

/** Counters the service keeps, read by metrics at scrape time. */
export class WebhookStats {
  /** Deliveries a receiver took (2xx). */
  delivered = 0;
  /** Deliveries given up: refused, out of attempts, or pushed out of a full queue. */
  failed = 0;
  /** Attempts that failed and were scheduled again. */
  retried = 0;
}

export interface WebhookLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface WebhookOptions {
  /** Absolute http(s) URLs. */
  receivers: readonly string[];
  secret: string;
  /** Attempts at one delivery before it is given up (at least 1). */
  maxAttempts: number;
  /** The wait before the first retry; it doubles with each retry, up to `MAX_RETRY_MS`. */
  retryMs: number;
  queue: WebhookQueue;
  log: WebhookLogger;
  userAgent: string;
  /** How long one attempt may take, connection included. */
  timeoutMs?: number;
  now?: () => number;
  /** In [0, 1): the jitter of the backoff. */
  random?: () => number;
}

const MAX_RETRY_MS = 5 * 60_000;
const ATTEMPT_TIMEOUT_MS = 10_000;
/** Deliveries one receiver may have waiting; past it the oldest waiting one is given up. */
const MAX_QUEUED = 10_000;

/** `t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed with secret>`. */
export function webhookSignature(secret: string, timestamp: number, body: string): string {
  const mac = createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
  return `t=${timestamp},v1=${mac}`;
}

type Outcome =
  | { kind: 'delivered' }
  | { kind: 'retry'; reason: string; afterMs: number | undefined }
  | { kind: 'refused'; reason: string }
  /** The service closed during the attempt: the delivery stays queued for the next start. */
  | { kind: 'stopped' };

/** One receiver's deliveries, oldest first; the first is being sent or waits for its retry. */
interface Receiver {
  readonly url: string;
  /** The URL without its query (which may hold a credential), for logs. */
  readonly label: string;
  readonly queue: WebhookDelivery[];
  sending: boolean;
  timer: NodeJS.Timeout | undefined;
}

export class Webhooks {
  readonly stats = new WebhookStats();
  private readonly receivers = new Map<string, Receiver>();
  private readonly agent: Agent;
  private readonly stop = new AbortController();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly now: () => number;
  private readonly random: () => number;
  private started = false;
  private closed = false;

  /** Takes over, in their order, the deliveries the queue kept from the last run. */
  constructor(private readonly opts: WebhookOptions) {
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    const timeout = opts.timeoutMs ?? ATTEMPT_TIMEOUT_MS;
    this.agent = new Agent({ connect: { timeout }, headersTimeout: timeout, bodyTimeout: timeout });
    for (const url of opts.receivers) {
      const parsed = new URL(url);
      this.receivers.set(url, {
        url,
        label: parsed.origin + parsed.pathname,
        queue: [],
        sending: false,
        timer: undefined,
      });
    }
    const orphans = new Map<string, number>();
    for (const delivery of opts.queue.pending()) {
      const receiver = this.receivers.get(delivery.url);
      if (receiver) receiver.queue.push(delivery);
      else {
        // Its receiver is no longer configured: nobody to send it to.
        opts.queue.remove(delivery);
        this.stats.failed++;
        orphans.set(delivery.url, (orphans.get(delivery.url) ?? 0) + 1);
      }
    }
    for (const [url, count] of orphans) {
      const parsed = new URL(url);
      opts.log.warn(
        { receiver: parsed.origin + parsed.pathname, count },
        'webhook deliveries dropped: their receiver is no longer configured',
      );
    }
    const resumed = this.queued;
    if (resumed > 0) opts.log.info({ count: resumed }, 'webhook deliveries resumed from the last run');
  }

  /** Deliveries waiting, over every receiver (the one being sent included). */
  get queued(): number {
    let count = 0;
    for (const receiver of this.receivers.values()) count += receiver.queue.length;
    return count;
  }

  /** Starts sending (once the daemon is ready). */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    for (const receiver of this.receivers.values()) this.pump(receiver);
  }

  /**
   * A session published an event: when it is one webhooks carry, one
   * delivery per receiver is kept in the queue, then sent.
   */
  publish(sessionId: string, envelope: EventEnvelope): void {
    if (this.closed || !WEBHOOK_EVENTS.has(envelope.type)) return;
    const id = randomUUID();
    const payload: WebhookPayload = { id, type: envelope.type, sessionId, data: envelope.data, createdAt: this.now() };
    const body = JSON.stringify(payload);
    const deliveries = [...this.receivers.keys()].map((url) => ({ id, url, type: envelope.type, body, attempts: 0 }));
    this.opts.queue.add(deliveries);
    for (const delivery of deliveries) {
      const receiver = this.receivers.get(delivery.url);
      if (!receiver) continue;
      receiver.queue.push(delivery);
      if (receiver.queue.length > MAX_QUEUED) {
        // The first may be on the wire: the oldest of those that only wait goes.
        const oldest = receiver.queue[receiver.sending ? 1 : 0];
        if (oldest) this.giveUp(receiver, oldest, 'queue full');
      }
      this.pump(receiver);
    }
  }

  /**
   * Stops sending: retries are not scheduled any more and attempts on the
   * wire are aborted. What is queued stays in the queue for the next start.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const receiver of this.receivers.values()) {
      if (receiver.timer) clearTimeout(receiver.timer);
      receiver.timer = undefined;
    }
    this.stop.abort();
    await Promise.allSettled([...this.inFlight]);
    await this.agent.destroy();
  }

  /** Sends the receiver's oldest delivery, unless one is on the wire or waits for its retry. */
  private pump(receiver: Receiver): void {
    if (!this.started || this.closed || receiver.sending || receiver.timer) return;
    const delivery = receiver.queue[0];
    if (!delivery) return;
    receiver.sending = true;
    const sent = this.attempt(delivery).then((outcome) => {
      this.inFlight.delete(sent);
      receiver.sending = false;
      this.settle(receiver, delivery, outcome);
    });
    this.inFlight.add(sent);
  }

  /** One POST; never rejects. */
  private async attempt(delivery: WebhookDelivery): Promise<Outcome> {
    delivery.attempts++;
    // Counted before it is made: an attempt cut short by a crash still counts against the bound.
    this.opts.queue.attempted(delivery);
    const timestamp = Math.floor(this.now() / 1000);
    try {
      const res = await request(delivery.url, {
        dispatcher: this.agent,
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': this.opts.userAgent,
          'acpd-delivery': delivery.id,
          'acpd-event': delivery.type,
          'acpd-timestamp': String(timestamp),
          'acpd-attempt': String(delivery.attempts),
          'acpd-signature': webhookSignature(this.opts.secret, timestamp, delivery.body),
        },
        body: delivery.body,
        signal: this.stop.signal,
      });
      await res.body.dump();
      const status = res.statusCode;
      if (status >= 200 && status < 300) return { kind: 'delivered' };
      if (status >= 500 || status === 429) {
        return {
          kind: 'retry',
          reason: `HTTP ${status}`,
          afterMs: retryAfterMs(res.headers['retry-after'], this.now()),
        };
      }
      return { kind: 'refused', reason: `HTTP ${status}` };
    } catch (err) {
      if (this.closed) return { kind: 'stopped' };
      return { kind: 'retry', reason: err instanceof Error ? err.message : String(err), afterMs: undefined };
    }
  }

  private settle(receiver: Receiver, delivery: WebhookDelivery, outcome: Outcome): void {
    switch (outcome.kind) {
      case 'stopped':
        return;
      case 'delivered':
        this.forget(receiver, delivery);
        this.stats.delivered++;
        this.opts.log.debug(
          { deliveryId: delivery.id, receiver: receiver.label, type: delivery.type, attempts: delivery.attempts },
          'webhook delivered',
        );
        break;
      case 'refused':
        this.giveUp(receiver, delivery, `refused: ${outcome.reason}`);
        break;
      case 'retry':
        if (delivery.attempts >= this.opts.maxAttempts) {
          this.giveUp(receiver, delivery, `${outcome.reason}, after ${delivery.attempts} attempts`);
          break;
        }
        this.stats.retried++;
        this.opts.log.info(
          { deliveryId: delivery.id, receiver: receiver.label, attempts: delivery.attempts, reason: outcome.reason },
          'webhook delivery failed; retrying',
        );
        receiver.timer = setTimeout(
          () => {
            receiver.timer = undefined;
            this.pump(receiver);
          },
          this.backoff(delivery.attempts, outcome.afterMs),
        );
        // The queue outlives the process; a retry waiting must not keep it alive.
        receiver.timer.unref();
        return;
    }
    this.pump(receiver);
  }

  /** Removes a delivery that is done with, from memory and from the queue. */
  private forget(receiver: Receiver, delivery: WebhookDelivery): void {
    const index = receiver.queue.indexOf(delivery);
    if (index !== -1) receiver.queue.splice(index, 1);
    this.opts.queue.remove(delivery);
  }

  private giveUp(receiver: Receiver, delivery: WebhookDelivery, reason: string): void {
    this.forget(receiver, delivery);
    this.stats.failed++;
    this.opts.log.warn(
      { deliveryId: delivery.id, receiver: receiver.label, type: delivery.type, attempts: delivery.attempts, reason },
      'webhook delivery dropped',
    );
  }

  /**
   * The wait before the next attempt: `retryMs` doubled per failed attempt,
   * capped, then a random point in its upper half (so receivers that fail
   * together are not retried together); a longer `Retry-After` wins.
   */
  private backoff(attempts: number, afterMs: number | undefined): number {
    const base = Math.min(this.opts.retryMs * 2 ** (attempts - 1), MAX_RETRY_MS);
    const jittered = base / 2 + (this.random() * base) / 2;
    return Math.max(jittered, Math.min(afterMs ?? 0, MAX_RETRY_MS));
  }
}

/** A `Retry-After` (seconds, or an HTTP date) in milliseconds from now, when there is a valid one. */
function retryAfterMs(header: string | string[] | undefined, now: number): number | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined) return undefined;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
