/**
 * GET /session/:id/events — the session's bus as Server-Sent Events.
 * Subscribing is synchronous, so an unknown session (404) or a full bus (429)
 * is answered as JSON before any SSE byte.
 *
 * @fastify/sse owns the response's SSE life cycle here: headers, the
 * heartbeat comments, and noticing the client leave. The frames themselves
 * are written straight to the socket: the bus builds each frame's bytes once
 * for every subscriber, and a subscriber's whole backlog (a replay of
 * thousands of frames, or a burst) goes out as one write. Formatting each
 * frame again per subscriber through `reply.sse.send()` measured as the
 * largest cost of fan-out after the socket writes themselves (bench/RESULTS.md).
 */
import { once } from 'node:events';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyBaseLogger } from 'fastify';
import { sessionEvents } from '../schemas/sessions.js';

export const SSE_RETRY_MS = 3000;

/** A decimal `Last-Event-ID` up to MAX_SAFE_INTEGER; anything else counts as absent. */
export function parseLastEventId(raw: string | undefined, log: FastifyBaseLogger): number | undefined {
  if (raw === undefined || raw === '') return undefined;
  if (!/^\d+$/.test(raw)) {
    log.warn({ lastEventId: raw.slice(0, 80) }, 'rejected Last-Event-ID (not a decimal integer)');
    return undefined;
  }
  const n = Number(raw);
  if (n > Number.MAX_SAFE_INTEGER) {
    log.warn({ lastEventId: raw.slice(0, 80) }, 'rejected Last-Event-ID (exceeds Number.MAX_SAFE_INTEGER)');
    return undefined;
  }
  return n;
}

function streamErrorFrame(message: string): string {
  return `event: stream_error\ndata: ${JSON.stringify({ v: 1, type: 'stream_error', data: { error: message } })}\n\n`;
}

const eventRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/session/:id/events', { schema: sessionEvents, sse: 'manual' }, async (req, reply) => {
    const sessionId = req.params.id;
    const lastEventId = parseLastEventId(req.headers['last-event-id'], req.log);
    const ac = new AbortController();
    const events = app.sessions.subscribe(sessionId, { lastEventId, signal: ac.signal });
    const sse = reply.sse;
    const raw = reply.raw;
    // The client leaving ends the subscription and any wait for 'drain'.
    const closed = new Promise<void>((resolve) => {
      sse.onClose(() => {
        ac.abort();
        resolve();
      });
    });
    /** One write; on back-pressure, wait until the socket drains or closes. */
    const write = async (chunk: string): Promise<void> => {
      if (!sse.isConnected || raw.writableEnded) return;
      if (raw.write(chunk)) return;
      // A socket error ends the stream through `closed`; it must not reject here unobserved.
      const drained = once(raw, 'drain').then(
        () => {},
        () => {},
      );
      await Promise.race([drained, closed]);
    };
    reply.header('Cache-Control', 'no-cache, no-transform');
    sse.sendHeaders();
    try {
      await write(`retry: ${SSE_RETRY_MS}\n\n`);
      while (sse.isConnected) {
        let batch = events.takeBuffered();
        if (batch.length === 0) {
          const next = await events.next();
          if (next.done) break;
          batch = [next.value, ...events.takeBuffered()];
        }
        let chunk = '';
        for (const ev of batch) chunk += ev.frame;
        await write(chunk);
      }
    } catch (err) {
      if (sse.isConnected) {
        req.log.warn({ err, sessionId }, 'SSE stream failed');
        await write(streamErrorFrame(err instanceof Error ? err.message : String(err))).catch(() => {});
      }
    } finally {
      ac.abort();
    }
  });
};

export default eventRoutes;
