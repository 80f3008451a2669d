/**
 * Who caused something: the user of the request's token and the client id
 * it sent. Threaded from a route down to the frame the action publishes,
 * whose `data._meta` then says `{user, clientId}`. Absent when no token is
 * configured: there is nobody to name, and the frames stay as v1 has them.
 */
export interface Actor {
  readonly user: string;
  readonly clientId?: string;
}

/** `{_meta: {user, clientId}}` to spread into a frame's data, or nothing. */
export function actorMeta(actor: Actor | undefined): { _meta?: { user: string; clientId?: string } } {
  if (actor === undefined) return {};
  return { _meta: { user: actor.user, ...(actor.clientId !== undefined ? { clientId: actor.clientId } : {}) } };
}
