// The bounds of GET /session/:id/events over real sockets: HEAD answers and
// ends without subscribing; the replay ring keeps within --ring-bytes; a
// replay leaves in writes of bounded size; a client that stops reading is
// evicted once its live backlog passes --subscriber-backlog-bytes, long
// before the count cap. Every wait is for a frame, an id or a condition.
import type { IncomingMessage, ServerResponse } from 'node:http';
import t from 'tap';
import { Client, request } from 'undici';
import type { SteeredAgent } from './fixtures/steer.js';
import { WRITE_CHUNK_BYTES } from '../src/routes/events.js';
import { DEFAULT_MAX_QUEUED, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_RING_BYTES } from '../src/services/event-bus.js';
import { spinUntil, within } from '../harness/wait.js';
import { steerDaemon, testConfig, type TestDaemon } from './support/app.js';
import { call, createSession } from './support/http.js';
import { openEvents, type SseFrame } from './support/sse.js';
import { chunk } from './support/values.js';

function busOf(d: TestDaemon, sessionId: string) {
  const entry = d.app.sessions.get(sessionId);
  if (!entry) throw new Error(`session ${sessionId} is not registered`);
  return entry.events;
}

function hasId(id: number): (f: SseFrame) => boolean {
  return (f) => f.envelope?.id === id;
}

/** Makes the agent publish one chunk per text, and waits until the bus has given the last one its id. */
async function publish(d: TestDaemon, agent: SteeredAgent, sessionId: string, ...texts: string[]): Promise<void> {
  const bus = busOf(d, sessionId);
  const target = bus.lastEventId + texts.length;
  for (const text of texts) await agent.notify(sessionId, chunk(text));
  // Sent, not only numbered: a group commit hands events to the subscribers a turn later.
  await spinUntil(() => bus.lastSentId === target, `event ${target}`);
}

t.test('the byte budgets default to the settings, wired into every session bus', async (t) => {
  const config = testConfig(t);
  t.equal(config.ringBytes, DEFAULT_RING_BYTES, 'ring: the setting and the bus agree');
  t.equal(config.subscriberBacklogBytes, DEFAULT_MAX_QUEUED_BYTES, 'backlog: the setting and the bus agree');
});

// ---- HEAD ---------------------------------------------------------------------

t.test('HEAD answers the SSE headers and ends, and never takes a subscriber slot', async (t) => {
  const { d } = await steerDaemon(t);
  const sid = await createSession(d);
  const bus = busOf(d, sid);
  const path = `/session/${encodeURIComponent(sid)}/events`;

  // One connection: a HEAD response that never ended would hold up every request after it.
  const client = new Client(d.baseUrl, { pipelining: 1 });
  t.teardown(() => client.destroy());
  const statuses: number[] = [];
  const types = new Set<unknown>();
  const caches = new Set<unknown>();
  const bodies = new Set<string>();
  let counts = 0;
  for (let i = 1; i <= 70; i++) {
    const res = await within(
      client.request({ method: 'HEAD', path, headers: { ...d.headers, accept: 'text/event-stream' } }),
      `HEAD number ${i}`,
    );
    statuses.push(res.statusCode);
    types.add(res.headers['content-type']);
    caches.add(res.headers['cache-control']);
    bodies.add(await within(res.body.text(), `the end of HEAD number ${i}`));
    counts = Math.max(counts, bus.subscriberCount);
  }
  t.ok(
    statuses.every((s) => s === 200),
    `70 × 200 (${[...new Set(statuses)].join(', ')})`,
  );
  t.strictSame([...types], ['text/event-stream']);
  t.strictSame([...caches], ['no-cache, no-transform']);
  t.strictSame([...bodies], [''], 'no body');
  t.equal(counts, 0, 'no HEAD ever subscribed');

  // The same connection still serves a GET stream, with every slot free.
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const get = await within(
    client.request({ method: 'GET', path, headers: { ...d.headers, accept: 'text/event-stream' }, signal: ac.signal }),
    'the GET after 70 HEADs',
  );
  t.equal(get.statusCode, 200);
  t.equal(get.headers['content-type'], 'text/event-stream');
  t.equal(bus.subscriberCount, 1, 'the GET is the only subscriber');
  get.body.setEncoding('utf8');
  const first = await within(
    new Promise<string>((resolve) => {
      let text = '';
      get.body.on('data', (piece: string) => {
        text += piece;
        if (text.length >= 13) resolve(text);
      });
    }),
    'the first bytes of the stream',
  );
  t.equal(first, 'retry: 3000\n\n', 'the stream begins');
});

t.test('HEAD on an unknown session is the same 404 as GET', async (t) => {
  const { d } = await steerDaemon(t);
  const head = await request(`${d.baseUrl}/session/no-such-session/events`, { method: 'HEAD', headers: d.headers });
  t.equal(await head.body.text(), '', 'no body');
  const get = await call(d, 'GET', '/session/no-such-session/events', undefined, { accept: 'text/event-stream' });
  t.equal(head.statusCode, 404);
  t.equal(get.status, 404);
  t.match(head.headers['content-type'], /^application\/json/);
  t.equal(head.headers['content-type'], get.headers['content-type']);
  t.equal(head.headers['content-length'], get.headers['content-length'], 'the length of the body GET gets');
});

// ---- the replay ring ----------------------------------------------------------

t.test('the replay ring keeps within --ring-bytes and always keeps the newest event', async (t) => {
  const budget = 350_000;
  const { d, steer } = await steerDaemon(t, { args: ['--ring-bytes', String(budget)] });
  const sid = await createSession(d);
  const bus = busOf(d, sid);
  const agent = await steer.agent();

  // Ten frames of about 100 kB: three fit in the budget, four do not.
  const texts = Array.from({ length: 10 }, (_, i) => `${i + 1}`.padEnd(100_000, '.'));
  await publish(d, agent, sid, ...texts);
  t.ok(bus.ringBytes <= budget, `the ring holds ${bus.ringBytes} bytes`);

  const replay = await openEvents(t, d, sid, { lastEventId: 0 });
  await publish(d, agent, sid, 'marker');
  await replay.waitFor(hasId(11), 'the marker');
  const numbered = (s: typeof replay) => s.events().filter((e) => e.id !== undefined);
  t.strictSame(
    numbered(replay).map((e) => e.id),
    [8, 9, 10, 11],
    'Last-Event-ID: 0 replays only what the budget kept',
  );
  t.match(
    replay.events()[0],
    { type: 'state_resync_required', data: { detail: 'cursor_expired', lastDeliveredId: 0, earliestAvailableId: 8 } },
    'after telling the client that events 1..7 are gone',
  );
  t.same(numbered(replay)[0]?.data, { sessionId: sid, update: chunk(texts[7] ?? '') }, 'replayed intact');

  await publish(d, agent, sid, 'x'.repeat(2 * budget));
  t.ok(bus.ringBytes > budget, 'an event over the budget on its own stays');
  const alone = await openEvents(t, d, sid, { lastEventId: 0 });
  await publish(d, agent, sid, 'after');
  await alone.waitFor(hasId(13), 'the event after the oversized one');
  t.strictSame(
    numbered(alone).map((e) => e.id),
    [12, 13],
    'the oversized event was all the ring held',
  );
});

// ---- writes -------------------------------------------------------------------

t.test('a replay leaves in writes of at most WRITE_CHUNK_BYTES; a larger frame goes alone', async (t) => {
  const { d, steer } = await steerDaemon(t);
  const sid = await createSession(d);
  const agent = await steer.agent();

  // Records the size of every write to the responses of requests marked for it.
  const writes: number[] = [];
  const record = (req: IncomingMessage, res: ServerResponse): void => {
    if (req.headers['x-record-writes'] === undefined) return;
    const original = res.write.bind(res);
    const counting = (...args: Parameters<ServerResponse['write']>): boolean => {
      const data: unknown = args[0];
      writes.push(
        typeof data === 'string' ? Buffer.byteLength(data) : data instanceof Uint8Array ? data.byteLength : 0,
      );
      return original(...args);
    };
    Object.defineProperty(res, 'write', { value: counting, configurable: true, writable: true });
  };
  d.app.server.prependListener('request', record);
  t.teardown(() => d.app.server.off('request', record));

  const small = Array.from({ length: 300 }, (_, i) => `${i}`.padEnd(2_000, '.'));
  const large = 'L'.repeat(3 * WRITE_CHUNK_BYTES);
  await publish(d, agent, sid, ...small, large);

  const replay = await openEvents(t, d, sid, { lastEventId: 0, headers: { 'x-record-writes': '1' } });
  await replay.waitFor(hasId(301), 'the whole replay');
  const frames = replay.frames
    .filter((f) => f.envelope?.id !== undefined)
    .map((f) => Buffer.byteLength(`${f.raw}\n\n`));
  t.equal(frames.length, 301);
  const largeFrame = frames[300] ?? 0;
  t.ok(largeFrame > WRITE_CHUNK_BYTES, 'the last frame alone is over a chunk');
  const total = frames.reduce((a, b) => a + b, 0);
  t.ok(total > 5 * WRITE_CHUNK_BYTES, `the replay is ${total} bytes`);

  const over = writes.filter((n) => n > WRITE_CHUNK_BYTES);
  t.strictSame(over, [largeFrame], 'the only write over a chunk is the large frame, on its own');
  t.ok(
    writes.filter((n) => n > 1000).length >= Math.ceil((total - largeFrame) / WRITE_CHUNK_BYTES),
    `the small frames went out in several writes (${writes.length} writes in all)`,
  );
});

// ---- a subscriber's backlog ---------------------------------------------------

t.test('a client that stops reading is evicted once its backlog passes --subscriber-backlog-bytes', async (t) => {
  const budget = 1024 * 1024;
  const { d, steer } = await steerDaemon(t, { args: ['--subscriber-backlog-bytes', String(budget)] });
  const sid = await createSession(d);
  const bus = busOf(d, sid);
  const agent = await steer.agent();

  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const stalled = await request(`${d.baseUrl}/session/${encodeURIComponent(sid)}/events`, {
    headers: { ...d.headers, accept: 'text/event-stream' },
    signal: ac.signal,
  });
  t.equal(stalled.statusCode, 200);
  // Nothing reads the body: undici stops reading the socket, then the kernel's
  // buffers fill, then the route waits for 'drain' and the bus queues for it.
  t.equal(bus.subscriberCount, 1);

  // Frames of about 256 kB: whatever the socket buffers hold, the count cap (256)
  // is never reached below, so only the byte budget can evict.
  const limit = DEFAULT_MAX_QUEUED - 10;
  const text = 'b'.repeat(256 * 1024);
  let evictedBy = 0;
  for (let id = 1; id <= limit; id++) {
    await publish(d, agent, sid, text);
    if (bus.subscriberCount === 0) {
      evictedBy = id;
      break;
    }
  }
  t.ok(evictedBy > 0, `evicted after ${evictedBy} events of ${limit} at most`);

  const body = await within(stalled.body.text(), 'the rest of the evicted stream');
  const frames = body.split('\n\n');
  t.equal(frames.pop(), '', 'the stream ends after a whole frame');
  t.equal(frames[0], 'retry: 3000');
  t.strictSame(
    frames.at(-1),
    `event: client_evicted\ndata: ${JSON.stringify({
      v: 1,
      type: 'client_evicted',
      data: { reason: 'queue_overflow', droppedAfter: evictedBy },
    })}`,
    'the last frame is client_evicted, naming the event that overflowed',
  );
  // After the retry frame, replay_complete and session_state.
  const delivered = frames.slice(3, -1).map((f) => Number(/^id: (\d+)\n/.exec(f)?.[1]));
  t.ok(
    delivered.length === evictedBy - 1 && delivered.every((id, i) => id === i + 1),
    `everything queued before the overflow is delivered (${delivered.length} frames)`,
  );
});
