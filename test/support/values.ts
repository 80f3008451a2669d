/** Small values tests build again and again: a prompt body, an agent's text chunk, a run of integers. */
import type { SessionUpdate } from '@agentclientprotocol/sdk';

/** The body of POST /session/:id/prompt with one text block. */
export function textPrompt(text: string): { prompt: { type: 'text'; text: string }[] } {
  return { prompt: [{ type: 'text', text }] };
}

/** An `agent_message_chunk` update carrying `text`. */
export function chunk(text: string): SessionUpdate {
  return { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text } };
}

/** The integers from `from` to `to`, both included. */
export function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
