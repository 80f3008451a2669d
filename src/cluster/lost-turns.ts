/**
 * The prompts a dead node had admitted and never ended. Every prompt gets a
 * `turn_complete` or a `turn_error` (and a waiting one its
 * `pending_prompt_completed`), and clients wait for them; a node killed
 * mid-turn publishes neither. The node that takes the session over reads
 * the session's log and ends each such prompt itself, saying why. The prompt
 * is not run again: whether its work happened is for the client to judge.
 */
import type { EventBus } from '../services/event-bus.js';

const LOST = 'the node that ran this prompt stopped before its turn ended; it was not run again';

interface PromptFacts {
  waited: boolean;
  started: boolean;
  ended: boolean;
}

function promptIdOf(data: unknown): string | undefined {
  if (typeof data !== 'object' || data === null) return undefined;
  const { promptId, _meta } = data as { promptId?: unknown; _meta?: { promptId?: unknown } };
  const id = promptId ?? _meta?.promptId;
  return typeof id === 'string' ? id : undefined;
}

/** Ends, on `events`, every prompt its log shows admitted and not ended; returns their ids. */
export function endLostTurns(events: EventBus, sessionId: string): string[] {
  const prompts = new Map<string, PromptFacts>();
  const replay = events.subscribe({ lastEventId: 0 });
  for (const { envelope } of replay.takeBuffered()) {
    const promptId = promptIdOf(envelope.data);
    if (promptId === undefined) continue;
    let facts = prompts.get(promptId);
    if (!facts) prompts.set(promptId, (facts = { waited: false, started: false, ended: false }));
    switch (envelope.type) {
      case 'pending_prompt_added':
        facts.waited = true;
        break;
      // Its echo (`session_update`) only says it was admitted; a prompt that never waited started at once.
      case 'pending_prompt_started':
        facts.started = true;
        break;
      case 'turn_complete':
      case 'turn_error':
      case 'pending_prompt_completed':
        facts.ended = true;
        break;
    }
  }
  void replay.return?.();
  const lost = [...prompts].filter(([, facts]) => !facts.ended);
  for (const [promptId, facts] of lost) {
    if (facts.waited && !facts.started) {
      events.publish('pending_prompt_completed', { sessionId, promptId, state: 'removed' });
    } else {
      events.publish('turn_error', { sessionId, promptId, message: LOST, error: LOST });
    }
  }
  return lost.map(([promptId]) => promptId);
}
