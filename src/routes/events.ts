/**
 * GET /session/:id/events — the session's bus as Server-Sent Events, written
 * through @fastify/sse. Subscribing is synchronous, so an unknown session
 * (404) or a full bus (429) is answered as JSON before any SSE byte.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyBaseLogger } from 'fastify';
import type { SSEMessage } from '@fastify/sse';
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

/** Envelopes are serialized once by the bus; the SSE writer gets the JSON text as is. */
const passThrough = (data: string) => data;

const eventRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/session/:id/events',
    { schema: sessionEvents, sse: { kind: 'manual', serializer: passThrough } },
    async (req, reply) => {
      const sessionId = req.params.id;
      const lastEventId = parseLastEventId(req.headers['last-event-id'], req.log);
      const ac = new AbortController();
      const events = app.sessions.subscribe(sessionId, { lastEventId, signal: ac.signal });
      const sse = reply.sse;
      // A write blocked on back-pressure waits in @fastify/sse for 'drain' or
      // 'error' only; a client that goes away meanwhile sends neither, so the
      // socket's close has to end that wait too, or this handler never returns.
      const closed = new Promise<void>((resolve) => {
        sse.onClose(() => {
          ac.abort();
          resolve();
        });
      });
      const send = (message: SSEMessage) => Promise.race([sse.send(message), closed]);
      reply.header('Cache-Control', 'no-cache, no-transform');
      try {
        await send({ retry: SSE_RETRY_MS, data: undefined });
        for await (const ev of events) {
          if (!sse.isConnected) break;
          const { id, type } = ev.envelope;
          await send({ id: id === undefined ? undefined : String(id), event: type, data: ev.json });
        }
      } catch (err) {
        if (sse.isConnected) {
          const message = err instanceof Error ? err.message : String(err);
          req.log.warn({ err, sessionId }, 'SSE stream failed');
          await sse
            .send({ event: 'stream_error', data: JSON.stringify({ v: 1, type: 'stream_error', data: { error: message } }) })
            .catch(() => {});
        }
      } finally {
        ac.abort();
      }
    },
  );
};

export default eventRoutes;
