// compactedReplay (issue 12): a load's history with each run of text chunks of one kind merged.
import type { SessionNotification, SessionUpdate } from '@agentclientprotocol/sdk';
import t from 'tap';
import { ReplayCollector } from '../src/services/compacted-replay.js';

const text = (sessionUpdate: 'agent_message_chunk' | 'user_message_chunk' | 'agent_thought_chunk', value: string) =>
  ({ sessionUpdate, content: { type: 'text', text: value } }) satisfies SessionUpdate;

function note(update: SessionUpdate): SessionNotification {
  return { sessionId: 's', update };
}

t.test('runs of one kind merge; another kind, a non-text chunk or another update ends a run', (t) => {
  const replay = new ReplayCollector(false);
  const image: SessionUpdate = {
    sessionUpdate: 'agent_message_chunk',
    content: { type: 'image', data: 'AA==', mimeType: 'image/png' },
  };
  const plan: SessionUpdate = { sessionUpdate: 'plan', entries: [] };
  const first = note(text('agent_message_chunk', 'a'));
  for (const n of [
    note(text('user_message_chunk', 'q1')),
    note(text('user_message_chunk', 'q2')),
    note(text('agent_thought_chunk', 't1')),
    note(text('agent_thought_chunk', 't2')),
    first,
    note(text('agent_message_chunk', 'b')),
    note(image),
    note(text('agent_message_chunk', 'c')),
    note(plan),
    note(text('agent_message_chunk', 'd')),
    note(text('agent_message_chunk', 'e')),
  ])
    replay.collect(n);
  t.same(
    replay.events.map((e) => e.data.update),
    [
      text('user_message_chunk', 'q1q2'),
      text('agent_thought_chunk', 't1t2'),
      text('agent_message_chunk', 'ab'),
      image,
      text('agent_message_chunk', 'c'),
      plan,
      text('agent_message_chunk', 'de'),
    ],
  );
  t.ok(
    replay.events.every((e) => e.v === 1 && e.type === 'session_update' && e.data.sessionId === 's'),
    'session_update envelopes without ids',
  );
  t.same(first.update, text('agent_message_chunk', 'a'), 'the notifications themselves are left alone');
  t.equal(replay.publish, false);
  t.end();
});
