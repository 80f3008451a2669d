/**
 * The header a node sets on a request it forwards to another node (the
 * session's owner). Its value is the forwarding node's id. The receiving
 * node treats such a request as already admitted by the first node: the
 * idempotency plugin, for one, skips it, since the first node holds the
 * key's claim and keeps the receipt.
 */
import type { FastifyRequest } from 'fastify';

export const FORWARDED_BY_HEADER = 'x-acpd-forwarded-by';

/** Whether another node forwarded this request. */
export function isForwarded(req: Pick<FastifyRequest, 'headers'>): boolean {
  const value = req.headers[FORWARDED_BY_HEADER];
  return typeof value === 'string' && value !== '';
}
