// The agent's stdout before the ACP SDK (services/agent-lines): text chunks of the plain shape skip the
// SDK's zod validation and come out exactly as zod would have built them; every other line, malformed
// updates included, still goes through the SDK, which refuses what is malformed; and the order of the
// agent's messages is kept across the two paths.
import { PassThrough } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import t from 'tap';
import type { SessionNotification, SessionUpdate } from '@agentclientprotocol/sdk';
import { AgentLines, fastSessionUpdate, scanChunkLine } from '../src/services/agent-lines.js';
import { EventBus } from '../src/services/event-bus.js';
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

/** A chunk line as `JSON.stringify` writes the SDK's message: the exact text the scanner matches. */
function chunkLine(sessionId: string, text: string, kind = 'agent_message_chunk'): string {
  return JSON.stringify({
    jsonrpc: '2.0',
    method: 'session/update',
    params: { sessionId, update: { sessionUpdate: kind, content: { type: 'text', text } } },
  });
}

/** What the general path makes of a line: the whole line parsed, then the shape check. */
function generalPath(line: string): SessionNotification | undefined {
  return fastSessionUpdate((JSON.parse(line) as { params: unknown }).params);
}

t.test('the scanned text chunk is the general path’s update, and its JSON the same bytes', async (t) => {
  const texts = ['hi', '', 'é\n"\\', 'tab\there\r\u0001\u001f', '😀 \u2028 \u007f', '\ud800 lone', 'a/b', '\\u0041'];
  const lines = texts.flatMap((text, i) => [
    chunkLine(`s-${i}`, text),
    chunkLine('s', text, 'agent_thought_chunk'),
    chunkLine('s', text, 'user_message_chunk'),
  ]);
  // Escapes an agent may write that JSON.stringify would not: the text is serialized again.
  const head = '{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s","update":';
  const written = (literal: string) =>
    `${head}{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":${literal}}}}}`;
  lines.push(written('"\\u0041"'), written('"\\/"'), written('"\\u0041\\/\\uD83D\\ude00"'));
  for (const [i, line] of lines.entries()) {
    const scanned = scanChunkLine(line);
    const general = generalPath(line);
    t.ok(scanned, `line ${i} scanned`);
    t.same(scanned?.update, general, 'the same update');
    t.equal(scanned?.json, JSON.stringify(general), 'its JSON, byte for byte');
    // And the frame a bus builds from that JSON is the frame it builds from the object.
    const [a, b] = [new EventBus(), new EventBus()];
    const frames: string[] = [];
    for (const bus of [a, b]) {
      const sub = bus.subscribe({ lastEventId: 0 });
      bus.publish('session_update', general, bus === a ? scanned?.json : undefined);
      frames.push(
        sub
          .takeBuffered()
          .map((ev) => ev.frame)
          .join(''),
      );
    }
    t.equal(frames[0], frames[1], 'the same frame');
  }
  t.equal(scanChunkLine(lines.at(-1) ?? '')?.json?.includes('"text":"A/😀"'), true, 'escapes written anew');
  t.equal(scanChunkLine(lines.at(-2) ?? '')?.json?.includes('"text":"/"'), true, 'an escaped slash written anew');
});

t.test(
  'a line that is not exactly that serialization takes the general path; a malformed one goes to the SDK',
  async (t) => {
    const good = chunkLine('s', 'x');
    const head = '{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s","update":{"sessionUpdate":';
    // Valid updates in another serialization: the general path delivers them, without a JSON text.
    const valid = [
      ` ${good}`,
      `${good} `,
      JSON.stringify(JSON.parse(good), null, 1),
      `${head}"agent_message_chunk","content":{"type":"text","text": "x"}}}}`,
      `${head}"agent_message_chunk","content":{"type":"text","text":"x" }}}}`,
      `{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s\\u0041","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"x"}}}}`,
    ];
    // Near misses that the SDK must see (and refuse, or answer): each differs from a chunk line in one place.
    const refused = [
      `${head}"agent_message_chunk","content":{"type":"text","text":5}}}}`,
      `${head}"agent_message_chunk","content":{"type":"text","text":"a","x":"b"}}}}`,
      `${head}"agent_message_chunk","content":{"type":"text","text":"a\tb"}}}}`,
      `${head}"agent_message_chunk","content":{"type":"text","text":"a\\qb"}}}}`,
      `${head}"agent_message_chunk","content":{"type":"text","text":"a\\"}}}}`,
      `${head}"agent_message_chunk","content":{"type":"text","text":""}}}}}`,
      `${head}"agent_message_chunk","content":{"type":"text","text":"a"}}}`,
      `${head}"plan","content":{"type":"text","text":"a"}}}}`,
      `${head}"agent_message_chunk\\u0000","content":{"type":"text","text":"a"}}}}`,
      `{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s\u0001","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"x"}}}}`,
      good.replace('"jsonrpc":"2.0"', '"jsonrpc":"2.0","id":1'),
    ];
    for (const line of valid) t.equal(scanChunkLine(line), undefined, `not scanned: ${line}`);
    for (const line of refused) t.equal(scanChunkLine(line), undefined, `not scanned: ${line}`);

    const input = new PassThrough();
    const delivered: (string | undefined)[] = [];
    const lines = new AgentLines(
      input,
      (_params, json) => {
        delivered.push(json);
      },
      (err) => t.error(err),
    );
    const forwarded: string[] = [];
    const reading = (async () => {
      const reader = lines.rest.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        forwarded.push(
          ...Buffer.from(value)
            .toString()
            .split('\n')
            .filter((l) => l !== ''),
        );
      }
    })();
    input.end([good, ...valid.filter((l) => !l.includes('\n')), ...refused].map((l) => `${l}\n`).join(''));
    await reading;
    t.strictSame(forwarded, refused, 'every near miss went to the SDK, as it came');
    t.equal(delivered[0], JSON.stringify(generalPath(good)), 'the exact line was scanned');
    t.strictSame(
      delivered.slice(1),
      valid.filter((l) => !l.includes('\n')).map(() => undefined),
      'the others parsed whole',
    );
  },
);
