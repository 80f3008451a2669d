/** Whether the client of a request has gone away before its response could be written. */
import type { FastifyReply, FastifyRequest } from 'fastify';

export function clientGone(req: FastifyRequest, reply: FastifyReply): boolean {
  return !reply.raw.writable || reply.raw.destroyed || req.raw.socket.destroyed;
}
