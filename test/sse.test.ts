// GET /session/:id/events over real sockets: response head and first bytes,
// frame layout, Last-Event-ID replay and its parsing, the 404/429 answers
// that come before any SSE byte, eviction of a client that stops reading,
// and the end of the stream on session_died. The steerable agent publishes
// the frames, so every wait here is for a frame or a condition, never a delay.
import t from 'tap';
import { request } from 'undici';
import type { Steer } from './fixtures/steer.js';
import { spinUntil } from '../harness/wait.js';
import { startDaemon, steerDaemon, type Teardown, type TestDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { isType, openEvents, type SseFrame, type SseStream } from './support/sse.js';
import { chunk, range, textPrompt } from './support/values.js';

interface Ctx {
  steer: Steer;
  d: TestDaemon;
  sid: string;
}

/** A daemon running the steerable agent, with one fresh session (whose bus starts empty). */
async function setup(t: Teardown): Promise<Ctx> {
  const { steer, d } = await steerDaemon(t);
  const sid = await createSession(d);
  return { steer, d, sid };
}

/** Makes the agent send one session/update per text, in order. */
async function notify(ctx: Ctx, ...texts: string[]): Promise<void> {
  const agent = await ctx.steer.agent();
  for (const text of texts) await agent.notify(ctx.sid, chunk(text));
}

function busOf(ctx: Ctx) {
  const entry = ctx.d.app.sessions.get(ctx.sid);
  if (!entry) throw new Error(`session ${ctx.sid} is not registered`);
  return entry.events;
}

/** The ids of the numbered events received (the id-less frames that open every stream are left out). */
function ids(stream: SseStream): (number | undefined)[] {
  return stream
    .events()
    .filter((e) => e.id !== undefined)
    .map((e) => e.id);
}

/** The types of the id-less frames received, in order. */
function unnumbered(stream: SseStream): string[] {
  return stream
    .events()
    .filter((e) => e.id === undefined)
    .map((e) => e.type);
}

/** The frames every stream opens with after `retry: 3000`, for a session whose newest event is `lastEventId`. */
function greetingText(ctx: Ctx, lastEventId: number): string {
  const bus = busOf(ctx);
  const complete = {
    v: 1,
    type: 'replay_complete',
    data: { lastReplayedEventId: null, lastEventId, replayedCount: 0 },
  };
  const state = {
    v: 1,
    type: 'session_state',
    data: {
      sessionId: ctx.sid,
      lastEventId,
      eventEpoch: bus.epoch,
      turn: { state: 'idle' },
      pendingPermissions: [],
      pendingPrompts: [],
    },
  };
  return (
    `event: replay_complete\ndata: ${JSON.stringify(complete)}\n\n` +
    `event: session_state\ndata: ${JSON.stringify(state)}\n\n`
  );
}

function hasId(id: number): (f: SseFrame) => boolean {
  return (f) => f.envelope?.id === id;
}

// ---- a raw reader: exact bytes, optional pause, and how the response ended --

interface RawStream {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Everything received so far. */
  text(): string;
  /** Resolves once the received text satisfies `pred`. */
  waitForText(pred: (text: string) => boolean, label: string): Promise<string>;
  /** 'end' when the server finished the response cleanly, 'error' when the connection broke. */
  ended: Promise<'end' | 'error'>;
  /** Starts reading (only needed with `paused`). */
  resume(): void;
  close(): void;
}

async function openRaw(
  t: Teardown,
  d: TestDaemon,
  sessionId: string,
  opts: { headers?: Record<string, string>; paused?: boolean } = {},
): Promise<RawStream> {
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const res = await request(`${d.baseUrl}/session/${encodeURIComponent(sessionId)}/events`, {
    headers: { ...d.headers, accept: 'text/event-stream', ...opts.headers },
    signal: ac.signal,
  });
  let text = '';
  const waiters: { pred: (s: string) => boolean; resolve: (s: string) => void }[] = [];
  const ended = new Promise<'end' | 'error'>((resolve) => {
    res.body.on('end', () => resolve('end'));
    res.body.on('error', () => resolve('error'));
    res.body.on('close', () => resolve('error'));
  });
  let reading = false;
  const resume = () => {
    if (reading) return;
    reading = true;
    res.body.setEncoding('utf8');
    res.body.on('data', (c: string) => {
      text += c;
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i];
        if (w && w.pred(text)) {
          waiters.splice(i, 1);
          w.resolve(text);
        }
      }
    });
    res.body.resume();
  };
  if (opts.paused) res.body.pause();
  else resume();
  return {
    status: res.statusCode,
    headers: res.headers,
    text: () => text,
    waitForText(pred, label) {
      if (pred(text)) return Promise.resolve(text);
      return new Promise((resolve, reject) => {
        waiters.push({ pred, resolve });
        void ended.then(() => {
          if (pred(text)) resolve(text);
          else reject(new Error(`stream ended before ${label}; got ${JSON.stringify(text.slice(-300))}`));
        });
      });
    },
    ended,
    resume,
    close: () => ac.abort(),
  };
}

/** Splits SSE text into frames (without their blank-line terminators); a trailing partial frame is dropped. */
function splitFrames(text: string): string[] {
  const parts = text.split('\n\n');
  parts.pop();
  return parts;
}

// ---- response head ----------------------------------------------------------

t.test('200 with the exact SSE headers, and retry: 3000 as the first bytes', async (t) => {
  const ctx = await setup(t);
  const raw = await openRaw(t, ctx.d, ctx.sid);
  t.equal(raw.status, 200);
  t.equal(raw.headers['content-type'], 'text/event-stream');
  t.equal(raw.headers['cache-control'], 'no-cache, no-transform');
  t.equal(raw.headers['connection'], 'keep-alive');
  t.equal(raw.headers['x-accel-buffering'], 'no');
  t.equal(raw.headers['content-length'], undefined, 'an open-ended body');
  t.equal(raw.headers['x-qwen-event-epoch'], busOf(ctx).epoch, "the epoch of the session's ids");
  t.match(raw.headers['x-qwen-sse-stream-id'], /^[0-9a-f-]{36}$/, 'a stream id');

  // Before anything is published, the retry line, then replay_complete and session_state (no ids).
  const opening = `retry: 3000\n\n${greetingText(ctx, 0)}`;
  await raw.waitForText((s) => s.length >= opening.length, 'the opening frames');
  t.equal(raw.text(), opening);
  await notify(ctx, 'first');
  const text = await raw.waitForText((s) => s.includes('\n\nid: 1\n'), 'event 1');
  t.ok(text.startsWith(`${opening}id: 1\nevent: session_update\ndata: {`), 'the first event follows them');
});

t.test('the Accept header is not enforced', async (t) => {
  const ctx = await setup(t);
  const raw = await openRaw(t, ctx.d, ctx.sid, { headers: { accept: 'application/json' } });
  t.equal(raw.status, 200);
  t.equal(raw.headers['content-type'], 'text/event-stream');
  t.ok((await raw.waitForText((s) => s.length >= 13, 'the retry frame')).startsWith('retry: 3000\n\n'));
});

// ---- framing ----------------------------------------------------------------

t.test('framing: id, event, one data line with the whole envelope, blank line', async (t) => {
  const ctx = await setup(t);
  const a = await openRaw(t, ctx.d, ctx.sid);
  const b = await openRaw(t, ctx.d, ctx.sid);
  // Line breaks in the payload must not break the one-line data field.
  const texts = ['plain', 'two\nlines', 'cr\r\nlf', 'unicode é ✓', '"quoted" {json}'];
  await notify(ctx, ...texts);
  const last = `\n\nid: ${texts.length}\n`;
  const text = await a.waitForText((s) => s.includes(last) && s.endsWith('\n\n'), 'every event');
  await b.waitForText((s) => s.length >= text.length, 'every event on the second stream');
  t.equal(b.text(), text, 'every subscriber gets the same bytes');

  const frames = splitFrames(text);
  t.equal(frames.length, texts.length + 3, 'one frame per event after the retry frame and the two opening ones');
  t.equal(frames[0], 'retry: 3000');
  t.equal(`${frames[1]}\n\n${frames[2]}\n\n`, greetingText(ctx, 0));
  texts.forEach((value, i) => {
    const id = i + 1;
    const frame = frames[id + 2] ?? '';
    const lines = frame.split('\n');
    t.equal(lines.length, 3, `frame ${id} has exactly three lines`);
    t.equal(lines[0], `id: ${id}`);
    t.equal(lines[1], 'event: session_update');
    const dataLine = lines[2] ?? '';
    t.ok(dataLine.startsWith(`data: {"id":${id},"v":1,"type":"session_update","data":{`), 'envelope keys in order');
    const json = dataLine.slice('data: '.length);
    const envelope: unknown = JSON.parse(json);
    t.equal(json, JSON.stringify(envelope), 'compact JSON.stringify output');
    t.same(envelope, { id, v: 1, type: 'session_update', data: { sessionId: ctx.sid, update: chunk(value) } });
    t.strictSame(Object.keys(obj(envelope)), ['id', 'v', 'type', 'data'], 'no originatorClientId');
  });
});

// ---- Last-Event-ID ----------------------------------------------------------

t.test('Last-Event-ID: 2 replays 3.. in order before live frames, without duplicates', async (t) => {
  const ctx = await setup(t);
  const live = await openEvents(t, ctx.d, ctx.sid);
  await notify(ctx, 'e1', 'e2', 'e3', 'e4', 'e5');
  await live.waitFor(hasId(5), 'event 5');

  // Reconnect while the agent is publishing: whatever the interleaving, the
  // reconnecting client sees one gap-free, duplicate-free sequence.
  const flood = call(ctx.d, 'POST', `/session/${ctx.sid}/prompt`, textPrompt('flood 200'));
  const again = await openEvents(t, ctx.d, ctx.sid, { lastEventId: 2 });
  t.equal(again.status, 200);
  t.same((await flood).body, { stopReason: 'end_turn' });
  // The prompt's echo, its 200 chunks and its turn_complete: events 6..207.
  await live.waitFor(hasId(207), 'event 207 on the live stream');
  await again.waitFor(hasId(207), 'event 207 on the reconnected stream');

  // And once more with a deterministic order: replay is complete before this
  // subscriber sees the live frames published after it connected.
  const late = await openEvents(t, ctx.d, ctx.sid, { lastEventId: 2 });
  await notify(ctx, 'after-1', 'after-2');
  await late.waitFor(hasId(209), 'event 209');
  await again.waitFor(hasId(209), 'event 209');
  await live.waitFor(hasId(209), 'event 209');

  t.strictSame(ids(again), range(3, 209));
  t.strictSame(ids(late), range(3, 209));
  t.strictSame(ids(live), range(1, 209), 'no replay without Last-Event-ID');
  t.strictSame(unnumbered(late), ['replay_complete', 'session_state'], 'a cursor in the log: no resync');
  t.strictSame(
    late.events()[205],
    { v: 1, type: 'replay_complete', data: { lastReplayedEventId: 207, lastEventId: 207, replayedCount: 205 } },
    'replay_complete right after the replay',
  );
  t.equal(late.events()[207]?.id, 208, 'then session_state, then the live frames');
  t.same(late.events().at(-1)?.data, { sessionId: ctx.sid, update: chunk('after-2') });
  for (const s of [again, late]) {
    t.ok(
      s.frames
        .filter((f) => f.envelope)
        .every((f) => f.id === (f.envelope?.id === undefined ? undefined : String(f.envelope.id))),
      'the id: line matches the envelope id on replayed and live frames, and id-less frames have none',
    );
  }
});

t.test('Last-Event-ID: 0 replays the whole ring; at or past the current id, nothing', async (t) => {
  const ctx = await setup(t);
  const first = await openEvents(t, ctx.d, ctx.sid);
  await notify(ctx, 'a', 'b', 'c');
  await first.waitFor(hasId(3), 'event 3');

  const all = await openEvents(t, ctx.d, ctx.sid, { lastEventId: 0 });
  const current = await openEvents(t, ctx.d, ctx.sid, { lastEventId: 3 });
  const future = await openEvents(t, ctx.d, ctx.sid, { lastEventId: 1000 });
  const padded = await openEvents(t, ctx.d, ctx.sid, { lastEventId: '002' });
  const maxSafe = await openEvents(t, ctx.d, ctx.sid, { lastEventId: String(Number.MAX_SAFE_INTEGER) });
  await notify(ctx, 'marker');
  for (const s of [all, current, future, padded, maxSafe]) await s.waitFor(hasId(4), 'the marker');

  t.strictSame(ids(all), [1, 2, 3, 4]);
  t.strictSame(ids(current), [4]);
  t.strictSame(ids(padded), [3, 4], 'leading zeros are still decimal digits');
  for (const s of [all, current, padded]) t.strictSame(unnumbered(s), ['replay_complete', 'session_state']);
  // A cursor the session never reached: the client is told, and gets everything held.
  for (const s of [future, maxSafe]) {
    t.strictSame(ids(s), [1, 2, 3, 4]);
    t.strictSame(unnumbered(s), ['state_resync_required', 'replay_complete', 'session_state']);
    t.match(s.events()[0]?.data, { reason: 'epoch_reset', detail: 'cursor_ahead', earliestAvailableId: 1 });
  }
});

t.test('invalid Last-Event-ID values are ignored: 200 and a live-only stream', async (t) => {
  const ctx = await setup(t);
  const first = await openEvents(t, ctx.d, ctx.sid);
  await notify(ctx, 'a', 'b', 'c');
  await first.waitFor(hasId(3), 'event 3');

  const values = [
    'abc',
    '-1',
    '1.5',
    '1abc',
    '1.5e10z',
    '+1',
    '0x1',
    '1 2',
    '99999999999999999999',
    '9007199254740992',
    '',
  ];
  const streams: SseStream[] = [];
  for (const value of values) {
    const s = await openEvents(t, ctx.d, ctx.sid, { lastEventId: value });
    t.equal(s.status, 200, `Last-Event-ID ${JSON.stringify(value)} → 200`);
    streams.push(s);
  }
  await notify(ctx, 'marker');
  for (const [i, s] of streams.entries()) {
    await s.waitFor(hasId(4), 'the marker');
    t.strictSame(ids(s), [4], `Last-Event-ID ${JSON.stringify(values[i])} replays nothing`);
    t.strictSame(unnumbered(s), ['replay_complete', 'session_state'], 'and is no cursor to resync');
    t.equal(s.frames[0]?.retry, '3000');
  }
});

// ---- answers before any SSE byte ----------------------------------------------

t.test('unknown session: 404 JSON, not an SSE response', async (t) => {
  const d = await startDaemon(t);
  for (const lastEventId of [undefined, '0']) {
    const res = await call(
      d,
      'GET',
      '/session/no-such-session/events',
      undefined,
      lastEventId === undefined
        ? { accept: 'text/event-stream' }
        : { accept: 'text/event-stream', 'last-event-id': lastEventId },
    );
    t.equal(res.status, 404);
    t.match(res.headers['content-type'], /^application\/json/);
    t.equal(res.headers['x-accel-buffering'], undefined, 'no SSE headers');
    t.strictSame(res.body, { error: 'No session with id "no-such-session"', sessionId: 'no-such-session' });
  }
});

t.test('64 subscribers are fine, the 65th gets 429 JSON, and a freed slot is reusable', async (t) => {
  const ctx = await setup(t);
  const bus = busOf(ctx);
  const streams = await Promise.all(Array.from({ length: 64 }, () => openEvents(t, ctx.d, ctx.sid)));
  t.ok(
    streams.every((s) => s.status === 200),
    '64 × 200',
  );
  t.equal(bus.subscriberCount, 64);

  const refused = await call(ctx.d, 'GET', `/session/${ctx.sid}/events`, undefined, { accept: 'text/event-stream' });
  t.equal(refused.status, 429);
  t.match(refused.headers['content-type'], /^application\/json/);
  t.equal(refused.headers['retry-after'], '5');
  t.strictSame(refused.body, {
    error: 'EventBus subscriber limit reached (64)',
    code: 'subscriber_limit_exceeded',
    limit: 64,
  });
  t.equal(bus.subscriberCount, 64, 'the refused request left nothing behind');

  // Every one of the 64 still works.
  await notify(ctx, 'to all');
  await Promise.all(streams.map((s) => s.waitFor(hasId(1), 'event 1')));

  streams[0]?.close();
  await spinUntil(() => bus.subscriberCount === 63, 'the server to notice the disconnect');
  const next = await openEvents(t, ctx.d, ctx.sid);
  t.equal(next.status, 200, 'accepted once a slot is free');
  t.equal(bus.subscriberCount, 64);
  await notify(ctx, 'newcomer');
  await next.waitFor(hasId(2), 'event 2');
  t.strictSame(ids(next), [2]);
});

// ---- eviction -----------------------------------------------------------------

t.test('a client that stops reading is evicted; a reading client gets everything', async (t) => {
  const ctx = await setup(t);
  const bus = busOf(ctx);
  const stalled = await openRaw(t, ctx.d, ctx.sid, { paused: true });
  t.equal(stalled.status, 200);
  const reader = await openEvents(t, ctx.d, ctx.sid);
  t.equal(bus.subscriberCount, 2);

  // The stalled client's socket buffers have to fill before the route stops
  // pulling from the bus and its queue grows past 256: flood until that happens.
  const perFlood = 5000;
  let floods = 0;
  while (bus.subscriberCount === 2 && floods < 40) {
    const res = await call(ctx.d, 'POST', `/session/${ctx.sid}/prompt`, textPrompt(`flood ${perFlood}`));
    t.same(res.body, { stopReason: 'end_turn' });
    floods++;
  }
  t.equal(bus.subscriberCount, 1, `evicted after ${floods} floods`);
  // Each flood is its echo, its chunks and its turn_complete.
  const total = floods * (perFlood + 2);
  await reader.waitFor(hasId(total), `event ${total} on the reading client`);
  t.equal(bus.lastEventId, total);
  t.ok(ids(reader).every((id, i) => id === i + 1) && ids(reader).length === total, 'the reader got 1..total, in order');
  t.notOk(reader.frames.some(isType('client_evicted')), 'the reader was not evicted');

  stalled.resume();
  t.equal(await stalled.ended, 'end', 'the server ends the evicted response cleanly');
  const frames = splitFrames(stalled.text());
  t.equal(stalled.text().endsWith('\n\n'), true, 'nothing after the last frame');
  const lastFrame = frames.at(-1) ?? '';
  const match =
    /^event: client_evicted\ndata: \{"v":1,"type":"client_evicted","data":\{"reason":"queue_overflow","droppedAfter":(\d+)\}\}$/.exec(
      lastFrame,
    );
  t.ok(match, `the last frame is client_evicted without an id line: ${JSON.stringify(lastFrame)}`);
  const droppedAfter = Number(match?.[1]);
  t.ok(droppedAfter > 256 && droppedAfter <= total, `droppedAfter ${droppedAfter} is a real event id`);
  // After the retry frame and the two opening ones.
  const delivered = frames.slice(3, -1).map((f) => Number(/^id: (\d+)\n/.exec(f)?.[1]));
  t.equal(frames[0], 'retry: 3000');
  t.ok(
    delivered.length === droppedAfter - 1 && delivered.every((id, i) => id === i + 1),
    `everything buffered before the overflow is delivered (1..${droppedAfter - 1}), got ${delivered.length} frames`,
  );
});

// ---- terminal frames ------------------------------------------------------------

t.test('session_died ends the stream', async (t) => {
  const ctx = await setup(t);
  const raw = await openRaw(t, ctx.d, ctx.sid);
  const sse = await openEvents(t, ctx.d, ctx.sid);
  await notify(ctx, 'before');
  await sse.waitFor(hasId(1), 'event 1');

  const agent = await ctx.steer.agent();
  await agent.crash();
  t.equal(await raw.ended, 'end', 'the server ends the response (no reset)');
  await sse.ended;

  const died = sse.frames.at(-1);
  t.equal(died?.event, 'session_died', 'session_died is the last frame');
  t.equal(died?.id, '2', 'session_died carries the next id');
  t.strictSame(died?.envelope, {
    id: 2,
    v: 1,
    type: 'session_died',
    data: { sessionId: ctx.sid, reason: 'channel_closed', exitCode: null, signalCode: 'SIGKILL' },
  });
  t.ok(raw.text().endsWith(`event: session_died\ndata: ${died?.data ?? ''}\n\n`), 'the raw stream ends right after it');

  const after = await call(ctx.d, 'GET', `/session/${ctx.sid}/events`, undefined, { accept: 'text/event-stream' });
  t.equal(after.status, 404, 'the dead session is gone');
});
