// What a scenario records: named facts (some required for the scenario to pass, the rest kept to
// compare the two daemons), frame sequences, and the HTTP exchanges the SDK made.
import type { DaemonEvent } from '@qwen-code/sdk/daemon';
import { TimeoutError, within } from '../../harness/wait.js';

interface Fact {
  /** Stable key, also the key of the known-differences map. */
  key: string;
  /** Human text for the table. */
  behaviour: string;
  /** Normalized value: identical strings mean identical behaviour. */
  value: string;
  /** true/false for a requirement of the issue; undefined for a fact that is only compared. */
  ok: boolean | undefined;
}

export class Observation {
  readonly facts: Fact[] = [];
  readonly sequences: Record<string, string[]> = {};
  readonly http: string[] = [];
  readonly notes: string[] = [];
  error: string | undefined;
  durationMs = 0;

  /** A requirement: `ok` decides pass/fail; `value` is what is shown and compared. */
  require(key: string, behaviour: string, value: unknown, ok: boolean): void {
    this.facts.push({ key, behaviour, value: show(value), ok });
  }

  /** A compared fact that does not decide pass/fail. */
  info(key: string, behaviour: string, value: unknown): void {
    this.facts.push({ key, behaviour, value: show(value), ok: undefined });
  }

  note(text: string): void {
    this.notes.push(text);
  }

  get failures(): string[] {
    const out = this.facts.filter((f) => f.ok === false).map((f) => `${f.behaviour}: got ${f.value}`);
    if (this.error) out.push(`error: ${this.error}`);
    return out;
  }

  get passed(): boolean {
    return this.failures.length === 0;
  }
}

function show(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v === undefined) return '—';
  return JSON.stringify(v);
}

/** The v1 frame types of the reference contract (qwen-serve-v1.md §3.3). */
export const V1_TYPES = new Set([
  'session_update',
  'permission_request',
  'permission_resolved',
  'model_switched',
  'model_switch_failed',
  'session_died',
  'client_evicted',
  'stream_error',
]);

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `data.update` of a session_update frame, when it has one. */
export function updateOf(ev: DaemonEvent): Record<string, unknown> | undefined {
  if (ev.type !== 'session_update' || !isRecord(ev.data)) return undefined;
  const u = ev.data.update;
  return isRecord(u) ? u : undefined;
}

export function updateKind(ev: DaemonEvent): string | undefined {
  const u = updateOf(ev);
  return typeof u?.sessionUpdate === 'string' ? u.sessionUpdate : undefined;
}

/** Text of a message chunk update (agent or user), '' otherwise. */
export function chunkText(ev: DaemonEvent): string {
  const u = updateOf(ev);
  const c = u?.content;
  return isRecord(c) && typeof c.text === 'string' ? c.text : '';
}

export function dataOf(ev: DaemonEvent): Record<string, unknown> {
  return isRecord(ev.data) ? ev.data : {};
}

/** The daemon's own echo of a prompt (qwen 0.24: `_meta.source: "bridge-echo"`), not from the agent. */
export function isBridgeEcho(ev: DaemonEvent): boolean {
  const meta = updateOf(ev)?._meta;
  return isRecord(meta) && meta.source === 'bridge-echo';
}

/** `session_update:agent_message_chunk`, `permission_request`, … */
function frameLabel(ev: DaemonEvent): string {
  const kind = updateKind(ev);
  const base = kind ? `su:${kind}` : ev.type;
  return isBridgeEcho(ev) ? `${base}(echo)` : base;
}

/** Labels with consecutive repeats folded: `su:agent_message_chunk×3`. */
function foldLabels(labels: string[]): string[] {
  const out: string[] = [];
  let prev: string | undefined;
  let n = 0;
  const flush = (): void => {
    if (prev !== undefined) out.push(n > 1 ? `${prev}×${n}` : prev);
  };
  for (const l of labels) {
    if (l === prev) {
      n += 1;
      continue;
    }
    flush();
    prev = l;
    n = 1;
  }
  flush();
  return out;
}

/** Every frame as received (id-less frames included), folded. */
export function fullSequence(frames: DaemonEvent[]): string[] {
  return foldLabels(frames.map(frameLabel));
}

/**
 * The part both daemons should agree on: v1 frame types only, without the daemon's prompt echo,
 * without `available_commands_update` (the agent sends it from a timer, its position is not
 * deterministic) and without usage-only empty agent chunks; repeats folded without counts.
 */
export function coreSequence(frames: DaemonEvent[]): string[] {
  const labels = frames
    .filter((ev) => V1_TYPES.has(ev.type) && !isBridgeEcho(ev))
    .filter((ev) => updateKind(ev) !== 'available_commands_update')
    .filter((ev) => !(updateKind(ev) === 'agent_message_chunk' && chunkText(ev) === ''))
    .map(frameLabel);
  return foldLabels(labels).map((l) => l.replace(/×\d+$/, '+'));
}

/**
 * The published client's ACP transports hand `session/update` notifications over as events whose `type` is the
 * update's kind (`agent_message_chunk`, …) and whose `data` is the update with `sessionId` added; REST gives
 * `type: 'session_update'`, `data: {sessionId, update}`. This puts them back into the REST shape so every check
 * reads one shape; the other frames (`_qwen/notify`) already arrive as the REST ones. The client's doing, not
 * the daemon's: on the wire acpd sends ACP's `{sessionId, update}`.
 */
export async function* restShaped(gen: AsyncGenerator<DaemonEvent>): AsyncGenerator<DaemonEvent> {
  for await (const ev of gen) {
    const data = ev.data;
    if (ev.type === 'session_update' || !isRecord(data) || data.sessionUpdate !== ev.type) {
      yield ev;
      continue;
    }
    const { sessionId, ...update } = data;
    yield { ...ev, type: 'session_update', data: { sessionId, update } };
  }
}

/** Consumes an SDK event generator in the background; lets a scenario wait for frames with a deadline. */
export class FrameCollector {
  readonly frames: DaemonEvent[] = [];
  /** How the stream ended: 'eof' (server closed), 'aborted' (we closed), or the error message. */
  readonly ended: Promise<string>;
  private readonly waiters = new Set<() => void>();
  private done = false;

  constructor(
    readonly name: string,
    gen: AsyncGenerator<DaemonEvent>,
    private readonly ac: AbortController,
  ) {
    this.ended = (async () => {
      try {
        for await (const ev of gen) {
          this.frames.push(ev);
          for (const w of this.waiters) w();
        }
        return ac.signal.aborted ? 'aborted' : 'eof';
      } catch (err) {
        return ac.signal.aborted ? 'aborted' : `error: ${err instanceof Error ? err.message : String(err)}`;
      } finally {
        this.done = true;
        for (const w of this.waiters) w();
      }
    })();
  }

  get isOpen(): boolean {
    return !this.ac.signal.aborted;
  }

  /** The first frame (already received or future) that matches; rejects on timeout or end of stream. */
  async waitFor(pred: (ev: DaemonEvent) => boolean, ms: number, label: string): Promise<DaemonEvent> {
    let wake: (() => void) | undefined;
    try {
      return await within(
        new Promise<DaemonEvent>((resolve, reject) => {
          wake = (): void => {
            const hit = this.frames.find(pred);
            if (hit) resolve(hit);
            else if (this.done) reject(new Error(`${this.name}: stream ended before ${label}`));
          };
          this.waiters.add(wake);
          wake();
        }),
        `${this.name}: ${label}`,
        ms,
      );
    } finally {
      if (wake) this.waiters.delete(wake);
    }
  }

  /** Waits until no frame arrived for `quietMs` (or `maxMs` passed). */
  async settle(quietMs: number, maxMs: number): Promise<void> {
    const end = Date.now() + maxMs;
    let seen = this.frames.length;
    let lastChange = Date.now();
    while (Date.now() < end) {
      await new Promise((r) => setTimeout(r, 50));
      if (this.frames.length !== seen) {
        seen = this.frames.length;
        lastChange = Date.now();
      }
      if (Date.now() - lastChange >= quietMs) return;
    }
  }

  /** Aborts the subscription and waits (bounded) for the consumer loop to end. */
  async close(): Promise<string> {
    this.ac.abort();
    try {
      return await within(this.ended, `${this.name}: close`, 5000);
    } catch (err) {
      return err instanceof TimeoutError ? 'close timed out' : String(err);
    }
  }

  /** Frames that carry an id, as `id:label`. */
  idLabels(): string[] {
    return this.frames.filter((f) => f.id !== undefined).map((f) => `${f.id}:${frameLabel(f)}`);
  }

  maxId(): number {
    return this.frames.reduce((m, f) => (f.id !== undefined && f.id > m ? f.id : m), 0);
  }
}

/** A fetch for DaemonClient that records `METHOD /route → status` (ids replaced by `:id`; `/acp` with its JSON-RPC method). */
export function recordingFetch(log: string[]): typeof globalThis.fetch {
  const idRe = /\/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?=\/|$)/gi;
  return async (input, init) => {
    const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
    const href = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const url = new URL(href);
    const path = url.pathname.replace(idRe, '/:id').replace(/^\/workspace\/[^/]+/, '/workspace/:id');
    const query = [...new Set(url.searchParams.keys())].join('&');
    // Over `/acp` every call is a POST of one JSON-RPC message: the method names the call.
    const rpc = path === '/acp' && typeof init?.body === 'string' ? rpcMethod(init.body) : undefined;
    const route = `${method} ${path}${query ? `?${query}` : ''}${rpc ? ` ${rpc}` : ''}`;
    try {
      const res = await globalThis.fetch(input, init);
      log.push(`${route} → ${res.status}`);
      return res;
    } catch (err) {
      log.push(`${route} → ${err instanceof Error ? err.name : 'error'}`);
      throw err;
    }
  };
}

function rpcMethod(body: string): string | undefined {
  try {
    const msg: unknown = JSON.parse(body);
    return isRecord(msg) && typeof msg.method === 'string' ? msg.method : isRecord(msg) ? 'response' : undefined;
  } catch {
    return undefined;
  }
}

/** Collapses the HTTP log into distinct `route → status` entries, in first-seen order. */
export function distinctHttp(log: string[]): string[] {
  return [...new Set(log)];
}
