/**
 * One request to the daemon, retried when retrying is safe and may help:
 * after a network error, and on the answers that say "later" (409
 * `restore_in_progress`, 429, 503), waiting what `Retry-After` says or a
 * backoff with full jitter. Never on other 4xx. A mutation carries an
 * `Idempotency-Key` that stays the same across its retries, so the daemon
 * runs it once however many times it arrives.
 *
 * Only what a browser has: fetch, AbortSignal, setTimeout, crypto.
 */
import { AcpdError, errorFromAnswer, parseRetryAfter } from './errors.js';

export interface RetryOptions {
  /** Tries in all, the first one included. */
  attempts: number;
  /** The first backoff's ceiling; each later one doubles, up to `maxMs`. */
  baseMs: number;
  maxMs: number;
}

export const DEFAULT_RETRY: RetryOptions = { attempts: 4, baseMs: 250, maxMs: 10_000 };

/** What `onRetry` is told before each wait. */
export interface RetryInfo {
  method: string;
  path: string;
  /** The try that failed (1 for the first). */
  attempt: number;
  /** What it failed with: an AcpdError, or the network error. */
  error: unknown;
  /** How long the client waits before the next try. */
  delayMs: number;
  /** The request's `Idempotency-Key` (mutations only). */
  idempotencyKey?: string;
}

export interface TransportOptions {
  /** Where the daemon listens, e.g. `http://127.0.0.1:4170` (a path prefix behind a proxy is kept). */
  baseUrl: string;
  /** The daemon's bearer token, when it has one. */
  token?: string;
  /** A fetch to use instead of the global one (tests, proxies, instrumentation). */
  fetch?: typeof fetch;
  /** Sent as `X-Qwen-Client-Id` (the daemon echoes it in restore answers). */
  clientId?: string;
  /** Bounds of the retries of requests and of event-stream reconnects. */
  retry?: Partial<RetryOptions>;
  /** Told before each wait for a retry (to show "retrying in 5 s", or to log). */
  onRetry?: (info: RetryInfo) => void;
}

export interface CallOptions {
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

export interface Answer<T> {
  status: number;
  headers: Headers;
  body: T;
}

/** A random UUID: crypto.randomUUID where there is one (browsers lack it outside secure contexts). */
export function uuid(): string {
  const c = globalThis.crypto;
  if (typeof c?.randomUUID === 'function') return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (typeof c?.getRandomValues === 'function') c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Full jitter: anywhere from 0 to the attempt's ceiling, so many clients do not come back at once. */
export function backoffMs(attempt: number, retry: RetryOptions): number {
  return Math.random() * Math.min(retry.maxMs, retry.baseMs * 2 ** attempt);
}

/** Resolves after `ms`, or rejects with the signal's reason once it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal));
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortReason(signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function abortReason(signal: AbortSignal | undefined): Error {
  return signal?.reason instanceof Error ? signal.reason : new Error('aborted');
}

/**
 * How long to wait before trying again after `error`, or undefined when a
 * retry must not happen. `attempt` counts the tries made so far.
 */
export function retryDelay(error: unknown, attempt: number, retry: RetryOptions): number | undefined {
  if (error instanceof AcpdError) {
    const later =
      error.status === 429 || error.status === 503 || (error.status === 409 && error.code === 'restore_in_progress');
    if (!later) return undefined;
    return error.retryAfter !== undefined ? error.retryAfter * 1000 : backoffMs(attempt, retry);
  }
  // Anything fetch threw that was not our own abort: the network.
  return backoffMs(attempt, retry);
}

export class Transport {
  readonly baseUrl: string;
  readonly retry: RetryOptions;
  readonly #token: string | undefined;
  readonly #clientId: string | undefined;
  readonly #fetch: typeof fetch;
  readonly #onRetry: ((info: RetryInfo) => void) | undefined;

  constructor(opts: TransportOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
    this.retry = { ...DEFAULT_RETRY, ...opts.retry };
    this.#token = opts.token;
    this.#clientId = opts.clientId;
    // Called through a closure: a browser's fetch throws when called with another `this`.
    this.#fetch = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.#onRetry = opts.onRetry;
  }

  /** One try: the response when it is a success, else the typed error for it. */
  async send(method: string, path: string, init: CallOptions = {}): Promise<Response> {
    const headers: Record<string, string> = { ...init.headers };
    if (this.#token !== undefined) headers.authorization = `Bearer ${this.#token}`;
    if (this.#clientId !== undefined) headers['x-qwen-client-id'] = this.#clientId;
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    const res = await this.#fetch(`${this.baseUrl}${path}`, {
      method,
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      signal: init.signal,
    });
    if (res.ok) return res;
    const text = await res.text().catch(() => '');
    throw errorFromAnswer(res.status, parseJson(text), parseRetryAfter(res.headers.get('retry-after')));
  }

  /**
   * The request with its retries; the body parsed as JSON (undefined for an
   * empty one). POST and DELETE get an `Idempotency-Key`, the same on every try.
   */
  async request<T>(method: 'GET' | 'POST' | 'DELETE', path: string, init: CallOptions = {}): Promise<Answer<T>> {
    const idempotencyKey = method === 'GET' ? undefined : uuid();
    const headers =
      idempotencyKey === undefined ? init.headers : { ...init.headers, 'idempotency-key': idempotencyKey };
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await this.send(method, path, { ...init, headers });
        const text = await res.text();
        return { status: res.status, headers: res.headers, body: parseJson(text) as T };
      } catch (error) {
        if (init.signal?.aborted) throw error;
        const delayMs = attempt < this.retry.attempts ? retryDelay(error, attempt - 1, this.retry) : undefined;
        if (delayMs === undefined) throw error;
        this.#onRetry?.({ method, path, attempt, error, delayMs, ...(idempotencyKey ? { idempotencyKey } : {}) });
        await sleep(delayMs, init.signal);
      }
    }
  }
}

function parseJson(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}
