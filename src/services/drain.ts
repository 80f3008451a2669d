/**
 * The prompt half of a graceful drain: running prompts get up to `drainMs`
 * to finish; whatever still runs is then cancelled, and given a moment to
 * answer `cancelled` before the agents are stopped.
 */
import type { FastifyBaseLogger } from 'fastify';
import type { Session } from './session.js';

/** How long cancelled prompts get to answer before the agents are stopped anyway. */
const CANCEL_GRACE_MS = 2000;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** Resolves when no prompt of `sessions()` runs any more, or the deadlines passed. */
export async function drainPrompts(sessions: () => Session[], drainMs: number, log: FastifyBaseLogger): Promise<void> {
  const busy = () => sessions().filter((s) => s.busy);
  const settled = () => Promise.all(sessions().map((s) => s.promptsSettled()));
  if (busy().length > 0 && drainMs > 0) {
    log.info({ prompts: busy().length, drainMs }, 'draining: waiting for running prompts');
    await Promise.race([settled(), delay(drainMs)]);
  }
  const left = busy();
  if (left.length === 0) return;
  log.info({ prompts: left.length }, 'draining: cancelling running prompts');
  for (const session of left) void session.cancelTurn();
  await Promise.race([settled(), delay(CANCEL_GRACE_MS)]);
}
