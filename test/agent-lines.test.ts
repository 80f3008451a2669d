// The agent's stdout before the ACP SDK (services/agent-lines): text chunks of the plain shape skip the
// SDK's zod validation and come out exactly as zod would have built them; every other line, malformed
// updates included, still goes through the SDK, which refuses what is malformed; and the order of the
// agent's messages is kept across the two paths.
import { PassThrough } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import t from 'tap';
import type { SessionNotification, SessionUpdate } from '@agentclientprotocol/sdk';
import { AgentLines, fastSessionUpdate } from '../src/services/agent-lines.js';
import { steerDaemon } from './support/app.js';
import { createSession } from './support/http.js';
import { openEvents } from './support/sse.js';
import { chunk } from './support/values.js';

/** The SDK's own zod schema for `session/update` params (not exported by the package: loaded by path). */
async function sdkSchema(): Promise<{ safeParse(v: unknown): { success: boolean; data?: unknown } }> {
  const file = fileURLToPath(
    new URL('../../node_modules/@agentclientprotocol/sdk/dist/v1/schema/zod.gen.js', import.meta.url),
  );
  const mod = (await import(pathToFileURL(file).href)) as {
    zSessionNotification: { safeParse(v: unknown): { success: boolean; data?: unknown } };
  };
  return mod.zSessionNotification;
}

t.test('a plain text chunk comes out as the SDK parses it, key order included', async (t) => {
  const schema = await sdkSchema();
  const taken: unknown[] = [
    { sessionId: 's1', update: { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 'hi' } } },
    { update: { content: { text: '', type: 'text' }, sessionUpdate: 'agent_thought_chunk' }, sessionId: 's' },
    { sessionId: 's', update: { sessionUpdate: 'user_message_chunk', content: { type: 'text', text: 'é\n"' } } },
  ];
  for (const params of taken) {
    const parsed = schema.safeParse(params);
    t.ok(parsed.success, 'the SDK accepts it');
    t.equal(JSON.stringify(fastSessionUpdate(params)), JSON.stringify(parsed.data), 'same JSON, byte for byte');
  }
  // Shapes the fast path leaves to the SDK: zod would strip, default or refuse something in each.
  const left: unknown[] = [
    { sessionId: 's', update: { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 5 } } },
    { sessionId: 's', update: { sessionUpdate: 'agent_message_chunk', content: { type: 'text' } } },
    { sessionId: 's', update: { sessionUpdate: 'agent_message_chunk', content: { type: 'image', text: 'x' } } },
    { sessionId: 's', update: { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 'x', x: 1 } } },
    { sessionId: 's', update: { sessionUpdate: 'agent_message_chunk', content: 'x' } },
    {
      sessionId: 's',
      update: { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 'x' }, messageId: 'm' },
    },
    { sessionId: 's', update: { sessionUpdate: 'plan', content: { type: 'text', text: 'x' } } },
    {
      sessionId: 's',
      update: { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 'x' } },
      _meta: {},
    },
    { sessionId: 7, update: { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 'x' } } },
    { sessionId: 's', update: [] },
    null,
    [],
  ];
  for (const params of left) t.equal(fastSessionUpdate(params), undefined, JSON.stringify(params));
});

t.test('lines split anywhere keep their order across the fast path and the SDK', async (t) => {
  const input = new PassThrough();
  const delivered: string[] = [];
  const lines = new AgentLines(
    input,
    (params: SessionNotification) => {
      const { update } = params;
      delivered.push(
        update.sessionUpdate === 'agent_message_chunk' && update.content.type === 'text' ? update.content.text : '?',
      );
    },
    (err) => t.error(err),
  );
  const update = (text: string) =>
    JSON.stringify({ jsonrpc: '2.0', method: 'session/update', params: { sessionId: 's', update: chunk(text) } });
  const answer = JSON.stringify({ jsonrpc: '2.0', id: 1, result: { stopReason: 'end_turn' } });
  const wire = `${update('a')}\n${answer}\r\n\n${update('b')}\n${update('c')}\n{"partial":`;
  // One byte at a time: every line arrives in pieces.
  for (const byte of Buffer.from(wire)) input.write(Buffer.of(byte));
  input.end();

  const reader = lines.rest.getReader();
  let rest = '';
  const order: string[] = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const text = Buffer.from(value).toString();
    // What the fast path had delivered by the time the SDK got this line.
    order.push(`${delivered.join('')}|${text.trim()}`);
    rest += text;
  }
  t.equal(rest, `${answer}\r\n{"partial":`, 'the answer and the unfinished last line go to the SDK, as they came');
  t.strictSame(delivered, ['a', 'b', 'c']);
  t.equal(order[0], `a|${answer}`, 'the chunks after the answer wait until the SDK has it');
});

t.test('a malformed update from the agent never reaches a client; valid ones around it keep their order', async (t) => {
  const { steer, d } = await steerDaemon(t);
  const sid = await createSession(d);
  const agent = await steer.agent();
  const stream = await openEvents(t, d, sid);
  const toolCall: SessionUpdate = { sessionUpdate: 'tool_call', toolCallId: 'tc1', title: 'read', status: 'pending' };
  const malformed = [
    { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 5 } },
    { sessionUpdate: 'agent_message_chunk' },
    { sessionUpdate: 'tool_call', toolCallId: 'tc2' },
  ] as unknown as SessionUpdate[];
  await agent.notify(sid, chunk('first'));
  await agent.notify(sid, toolCall);
  for (const update of malformed) await agent.notify(sid, update);
  await agent.notify(sid, chunk('last'));
  await stream.waitFor((f) => (JSON.stringify(f.envelope?.data) ?? '').includes('"last"'), 'the last chunk');

  const updates = stream
    .events()
    .filter((e) => e.type === 'session_update')
    .map((e) => (e.data as { update: SessionUpdate }).update);
  t.equal(updates.length, 3, 'the three malformed updates were dropped');
  t.same(updates[0], chunk('first'));
  t.equal(updates[1]?.sessionUpdate, 'tool_call', 'a valid update of another kind passes, through the SDK');
  t.same(updates[2], chunk('last'));
});

t.test(
  'a read of chunks for a bus that sends at its commit is delivered in one run; others in runs of 64',
  async (t) => {
    const update = (i: number) =>
      JSON.stringify({ jsonrpc: '2.0', method: 'session/update', params: { sessionId: 's', update: chunk(`c${i}`) } });
    const read = Buffer.from(Array.from({ length: 200 }, (_, i) => `${update(i)}\n`).join(''));
    for (const grouped of [true, false]) {
      const input = new PassThrough();
      let delivered = 0;
      new AgentLines(
        input,
        () => {
          delivered++;
          return grouped;
        },
        (err) => t.error(err),
      );
      // 'data' is emitted synchronously on a flowing PassThrough: what the write delivered before any macrotask.
      input.write(read);
      t.equal(delivered, grouped ? 200 : 64, grouped ? 'the whole read at once: one group commit' : 'a run of 64');
      await new Promise((resolve) => setImmediate(resolve));
      t.equal(delivered, grouped ? 200 : 128, 'the next run after a macrotask');
      input.end();
    }
  },
);
