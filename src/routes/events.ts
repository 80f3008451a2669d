/**
 * GET /session/:id/events — the session's bus as Server-Sent Events.
 * Subscribing is synchronous, so an unknown session (404) or a full bus (429)
 * is answered as JSON before any SSE byte.
 *
 * @fastify/sse owns the response's SSE life cycle here: headers, the
 * heartbeat comments, and noticing the client leave. The frames themselves
 * are written straight to the socket: the bus builds each frame's bytes once
 * for every subscriber, and a subscriber's backlog (a replay of thousands of
 * frames, or a burst) goes out as few writes of up to WRITE_CHUNK_BYTES each,
 * waiting for 'drain' between them, so a client that reads slowly never makes
 * the daemon copy its whole backlog into one string or one socket buffer.
 * Formatting each frame again per subscriber through `reply.sse.send()`
 * measured as the largest cost of fan-out after the socket writes themselves
 * (bench/RESULTS.md).
 *
 * Every stream opens with the bus's reconnect frames (a resync when the
 * cursor cannot resume, the replay, `replay_complete`, `session_state`), and
 * its headers name the epoch of the ids (`X-Qwen-Event-Epoch`), which a
 * client sends back with its `Last-Event-ID`.
 *
 * HEAD /session/:id/events answers what GET would (404 for an unknown
 * session, else 200 with the SSE headers) and ends there: it never subscribes,
 * so it cannot hold one of the bus's subscriber slots.
 */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyBaseLogger } from 'fastify';
import { policies } from '../plugins/route-policy.js';
import { sessionEvents, sessionEventsHead } from '../schemas/events.js';
import { SessionNotFoundError } from '../errors.js';
import { openSessionEvents } from '../services/session-events.js';

const SSE_RETRY_MS = 3000;

/**
 * The most frame bytes joined into one socket write. A frame larger than this
 * goes out alone, as one write of its own.
 */
export const WRITE_CHUNK_BYTES = 64 * 1024;

const SSE_CONTENT_TYPE = 'text/event-stream';
const SSE_CACHE_CONTROL = 'no-cache, no-transform';
/** The qwen daemon's names: the epoch of the ids (sent both ways) and one id per stream. */
const EPOCH_HEADER = 'x-qwen-event-epoch';
const STREAM_ID_HEADER = 'x-qwen-sse-stream-id';

/** A decimal `Last-Event-ID` up to MAX_SAFE_INTEGER; anything else counts as absent. */
function parseLastEventId(raw: string | undefined, log: FastifyBaseLogger): number | undefined {
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
  async function followedEpoch(sessionId: string): Promise<string> {
    if (!app.cluster) throw new SessionNotFoundError(sessionId);
    return app.cluster.cluster.followedEpoch(sessionId);
  }

  app.head(
    '/session/:id/events',
    { schema: sessionEventsHead, config: { policy: policies.read, cluster: 'events' } },
    async (req, reply) => {
      // Throws SessionNotFoundError (404) exactly as subscribing would.
      const epoch = app.sessions.get(req.params.id)
        ? app.sessions.require(req.params.id).events.epoch
        : await followedEpoch(req.params.id);
      reply
        .header('content-type', SSE_CONTENT_TYPE)
        .header('cache-control', SSE_CACHE_CONTROL)
        .header(EPOCH_HEADER, epoch)
        .header(STREAM_ID_HEADER, randomUUID());
      return reply.send();
    },
  );

  // Fastify's automatic HEAD twin of this route would run the handler below and subscribe.
  app.get(
    '/session/:id/events',
    {
      schema: sessionEvents,
      config: { policy: policies.read, cluster: 'events' },
      sse: 'manual',
      exposeHeadRoute: false,
    },
    async (req, reply) => {
      const sessionId = req.params.id;
      const lastEventId = parseLastEventId(req.headers['last-event-id'], req.log);
      const epoch = req.headers[EPOCH_HEADER];
      const ac = new AbortController();
      const { events, epoch: streamEpoch } = await openSessionEvents(
        app,
        sessionId,
        {
          lastEventId,
          epoch,
          signal: ac.signal,
        },
        req.identity?.user,
      );
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
      reply
        .header('Cache-Control', SSE_CACHE_CONTROL)
        .header(EPOCH_HEADER, streamEpoch)
        .header(STREAM_ID_HEADER, randomUUID());
      sse.sendHeaders();
      try {
        await write(`retry: ${SSE_RETRY_MS}\n\n`);
        while (sse.isConnected) {
          // The first buffered event (or the next one to come), then as many
          // buffered events after it as fit in one chunk with it.
          const next = await events.next();
          if (next.done) break;
          let chunk = next.value.frame;
          for (const ev of events.takeBuffered(WRITE_CHUNK_BYTES - next.value.bytes)) chunk += ev.frame;
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
    },
  );
};

export default eventRoutes;
