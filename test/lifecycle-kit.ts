/**
 * Shared pieces of the lifecycle tests: the few signals the race tests wait on (a registry method was
 * entered, the server saw a client leave, an SSE chunk). The steered daemon is in support/app.ts.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AgentChannel } from '../src/services/agent-channel.js';
import type { SessionRegistry } from '../src/services/session-registry.js';
import type { TestDaemon } from './support/app.js';
import type { JsonResponse } from './support/http.js';
import type { SseFrame } from './support/sse.js';

/** The daemon's only agent channel (its own view of the child); throws unless there is exactly one. */
export function onlyChannel(d: TestDaemon): AgentChannel {
  const [channel, ...more] = d.app.channels.alive;
  if (!channel || more.length > 0) throw new Error(`expected one agent channel, got ${d.app.channels.alive.size}`);
  return channel;
}

/** Counts calls; `reached(n)` resolves once the n-th call has happened. */
class CallCounter {
  count = 0;
  private readonly waiters: { n: number; resolve: () => void }[] = [];

  bump(): void {
    this.count++;
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i];
      if (w && w.n <= this.count) {
        this.waiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  reached(n: number): Promise<void> {
    if (this.count >= n) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ n, resolve }));
  }
}

/**
 * Counts the requests that reached `spawnOrAttach`. The method runs synchronously up to its first await
 * (the channel spawn, or the coalesced spawn it joins), so once `reached(n)` resolves the n-th caller is
 * parked there.
 */
export function countCreates(registry: SessionRegistry): CallCounter {
  const counter = new CallCounter();
  const original = registry.spawnOrAttach.bind(registry);
  registry.spawnOrAttach = (req) => {
    counter.bump();
    return original(req);
  };
  return counter;
}

/** Counts the prompts handed to `sendPrompt`; it queues synchronously, so a counted prompt is in the FIFO. */
export function countPrompts(registry: SessionRegistry): CallCounter {
  const counter = new CallCounter();
  const original = registry.sendPrompt.bind(registry);
  registry.sendPrompt = (sessionId, body, signal) => {
    counter.bump();
    return original(sessionId, body, signal);
  };
  return counter;
}

/**
 * Resolves with the server-side request once the server has seen the connection of the next `method url`
 * request close. It listens on the raw Node server's `request` event (Fastify's own handler is another
 * listener of the same event) and waits for the response's `close`, which Node emits when the socket
 * goes away before the response was sent; by then `req.socket.destroyed` is true, which is what the
 * routes' client-gone check looks at.
 */
export function serverSawClose(d: TestDaemon, method: string, url: string): Promise<IncomingMessage> {
  return new Promise((resolve) => {
    const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
      if (req.method !== method || req.url !== url) return;
      d.app.server.off('request', onRequest);
      res.once('close', () => resolve(req));
    };
    d.app.server.on('request', onRequest);
  });
}

/** The text of an `agent_message_chunk` session_update frame, if that is what the frame is. */
export function chunkText(f: SseFrame): string | undefined {
  const env = f.envelope;
  if (env?.type !== 'session_update') return undefined;
  const update = env.data.update;
  if (typeof update !== 'object' || update === null) return undefined;
  const u = update as { sessionUpdate?: unknown; content?: { type?: unknown; text?: unknown } };
  if (u.sessionUpdate !== 'agent_message_chunk' || u.content?.type !== 'text' || typeof u.content.text !== 'string') {
    return undefined;
  }
  return u.content.text;
}

/** The `update` object of a session_update frame whose kind is `kind`. */
export function updateOf(f: SseFrame, kind: string): Record<string, unknown> | undefined {
  const env = f.envelope;
  if (env?.type !== 'session_update') return undefined;
  const update = env.data.update;
  if (typeof update !== 'object' || update === null || Array.isArray(update)) return undefined;
  const rec = update as Record<string, unknown>;
  return rec.sessionUpdate === kind ? rec : undefined;
}

/** The text of the first text block of a `session/prompt` params object ('' when none). */
export function promptTextOf(params: unknown): string {
  if (typeof params !== 'object' || params === null) return '';
  const prompt = (params as { prompt?: unknown }).prompt;
  if (!Array.isArray(prompt)) return '';
  for (const block of prompt) {
    if (typeof block === 'object' && block !== null && (block as { type?: unknown }).type === 'text') {
      const text = (block as { text?: unknown }).text;
      if (typeof text === 'string') return text;
    }
  }
  return '';
}

/**
 * A request the test abandons (aborts): resolves with the name of the error the client saw, or with
 * `answered <status>` when it was answered after all.
 */
export function abandoned(p: Promise<JsonResponse>): Promise<string> {
  return p.then(
    (res) => `answered ${res.status}`,
    (err: unknown) => (err instanceof Error ? err.name : String(err)),
  );
}

/** One event-loop turn: lets queued I/O callbacks and rejection reports run. */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
