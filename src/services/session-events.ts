/**
 * A client's subscription to a session's events, wherever the session runs:
 * its own bus when it is live on this node; on a cluster node, the shared
 * log's (the same ids and epoch), whichever node runs it. The SSE route and
 * `/acp` both read sessions through this.
 */
import type { FastifyInstance } from 'fastify';
import type { EventSubscription, SubscribeOptions } from './event-bus.js';

export type SessionEventsOptions = Pick<SubscribeOptions, 'lastEventId' | 'epoch' | 'signal'>;

export async function openSessionEvents(
  app: FastifyInstance,
  sessionId: string,
  opts: SessionEventsOptions,
  user?: string,
): Promise<{ events: EventSubscription; epoch: string }> {
  const session = app.sessions.get(sessionId);
  if (session || !app.cluster) {
    const events = app.sessions.subscribe(sessionId, opts);
    // The reader's user is listed in the session's status while its stream lasts.
    if (session && user !== undefined) {
      const leave = session.join(user);
      if (opts.signal?.aborted) leave();
      else opts.signal?.addEventListener('abort', leave, { once: true });
    }
    return { events, epoch: app.sessions.require(sessionId).events.epoch };
  }
  return app.cluster.cluster.follow(sessionId, opts);
}
