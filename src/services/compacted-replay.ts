/**
 * The history a `load` replays, as the answer's `compactedReplay` carries
 * it: the agent's `session/update` notifications in order, with each run of
 * consecutive text chunks of one kind (a streamed message, a streamed
 * thought) merged into a single update. A client rebuilds its view from a
 * handful of events instead of one per token.
 */
import type { SessionNotification } from '@agentclientprotocol/sdk';
import type { ReplaySink } from './agent-router.js';

/** One entry of `compactedReplay`: a `session_update` envelope without an id (it is not on the bus). */
export interface ReplayEvent {
  v: 1;
  type: 'session_update';
  data: SessionNotification;
}

type ChunkKind = 'agent_message_chunk' | 'user_message_chunk' | 'agent_thought_chunk';

/** The kind and text of a text chunk that runs can be merged from; undefined for anything else. */
function textChunk(n: SessionNotification): { kind: ChunkKind; text: string } | undefined {
  const u = n.update;
  if (
    u.sessionUpdate !== 'agent_message_chunk' &&
    u.sessionUpdate !== 'user_message_chunk' &&
    u.sessionUpdate !== 'agent_thought_chunk'
  )
    return undefined;
  return u.content.type === 'text' ? { kind: u.sessionUpdate, text: u.content.text } : undefined;
}

/** `n` with its chunk's text replaced; the notification itself is left alone (the bus may hold it). */
function withText(n: SessionNotification, kind: ChunkKind, text: string): SessionNotification {
  const u = n.update;
  if (u.sessionUpdate !== kind || u.content.type !== 'text') return n;
  return { ...n, update: { ...u, content: { ...u.content, text } } };
}

/**
 * Collects a restore's replay, merging as it goes. With `publish` the
 * router also puts each update on the session's bus (a log that has not
 * seen this history); without, the updates only land here.
 */
export class ReplayCollector implements ReplaySink {
  private readonly merged: ReplayEvent[] = [];
  /** The kind and text of the run the last entry holds, when it is a mergeable chunk. */
  private run: { kind: ChunkKind; text: string } | undefined;

  constructor(readonly publish: boolean) {}

  collect(update: SessionNotification): void {
    const chunk = textChunk(update);
    const last = this.merged.at(-1);
    if (chunk && last && this.run?.kind === chunk.kind && last.data.sessionId === update.sessionId) {
      this.run.text += chunk.text;
      last.data = withText(last.data, chunk.kind, this.run.text);
      return;
    }
    this.merged.push({ v: 1, type: 'session_update', data: update });
    this.run = chunk && { ...chunk };
  }

  get events(): ReplayEvent[] {
    return [...this.merged];
  }
}
