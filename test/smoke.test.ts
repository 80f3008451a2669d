import t from 'tap';
import { startDaemon } from './support/app.js';
import { call, createSession } from './support/http.js';
import { openEvents } from './support/sse.js';
import { textPrompt } from './support/values.js';

t.test("a newcomer's path: create, subscribe, prompt, streamed answer from the embedded agent", async (t) => {
  const d = await startDaemon(t);
  const id = await createSession(d);
  const sse = await openEvents(t, d, id, { lastEventId: 0 });
  t.equal(sse.status, 200);
  const res = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('hello world'));
  t.same(res.body, { stopReason: 'end_turn' });
  // The turn's last frame: the prompt's echo, then the agent's answer, then turn_complete.
  await sse.waitFor((f) => f.envelope?.type === 'turn_complete');
  t.equal(sse.frames[0]?.retry, '3000', 'the stream opens with retry: 3000');
  const chunks = sse.events().filter((e) => JSON.stringify(e.data).includes('agent_message_chunk'));
  t.ok(chunks.length >= 2, 'the answer arrives in several chunks');
});
