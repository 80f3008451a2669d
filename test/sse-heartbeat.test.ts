// The heartbeat of idle event streams (issue 5): a `: heartbeat` comment
// frame at the interval --sse-heartbeat-ms sets, never inside another frame,
// so that proxies with an idle timeout keep the stream and SSE parsers skip
// it. The exact bytes are read off the socket.
import t from 'tap';
import { request } from 'undici';
import { within } from '../harness/wait.js';
import { Steer } from './fixtures/steer.js';
import { startDaemon, type Teardown, type TestDaemon } from './support/app.js';
import { createSession } from './support/http.js';
import { chunk } from './support/values.js';

const HEARTBEAT = ': heartbeat\n\n';

interface RawStream {
  text(): string;
  /** Resolves once the received text satisfies `pred`; rejects after harness/wait's WAIT_LIMIT_MS. */
  waitForText(pred: (text: string) => boolean, label: string): Promise<string>;
}

/** GET /session/:id/events, kept as the exact text received. */
async function openRaw(t: Teardown, d: TestDaemon, sessionId: string): Promise<RawStream> {
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const res = await request(`${d.baseUrl}/session/${encodeURIComponent(sessionId)}/events`, {
    headers: { ...d.headers, accept: 'text/event-stream' },
    signal: ac.signal,
  });
  if (res.statusCode !== 200) throw new Error(`events → ${res.statusCode}`);
  let text = '';
  const waiters: { pred: (s: string) => boolean; resolve: (s: string) => void }[] = [];
  res.body.setEncoding('utf8');
  res.body.on('data', (chunk: string) => {
    text += chunk;
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i];
      if (w && w.pred(text)) {
        waiters.splice(i, 1);
        w.resolve(text);
      }
    }
  });
  return {
    text: () => text,
    waitForText(pred, label) {
      if (pred(text)) return Promise.resolve(text);
      const seen = new Promise<string>((resolve) => {
        waiters.push({ pred, resolve });
      });
      // Say what did arrive: the text as it is when the wait gives up.
      return within(seen, label).catch((err: unknown) => {
        throw new Error(`${String(err)}; got ${JSON.stringify(text)}`);
      });
    },
  };
}

function count(text: string, part: string): number {
  return text.split(part).length - 1;
}

t.test('an idle stream gets `: heartbeat` comment frames at the configured interval', async (t) => {
  const steer = await Steer.create();
  // Teardowns run last-in first-out: the daemon closes before its controller.
  t.teardown(() => steer.close());
  const d = await startDaemon(t, { agent: steer.argv, args: ['--sse-heartbeat-ms', '50'] });
  t.equal(d.config.sseHeartbeatMs, 50);
  const sid = await createSession(d);
  const raw = await openRaw(t, d, sid);

  const start = performance.now();
  const text = await raw.waitForText((s) => count(s, HEARTBEAT) >= 3, 'three heartbeats');
  const elapsed = performance.now() - start;
  t.ok(text.startsWith('retry: 3000\n\n'), 'the retry frame comes first');
  // Then the two id-less frames every stream opens with, then only heartbeats.
  const opening = /^retry: 3000\n\nevent: replay_complete\ndata: [^\n]*\n\nevent: session_state\ndata: [^\n]*\n\n/.exec(
    text,
  )?.[0];
  t.ok(opening, 'replay_complete and session_state follow it');
  t.equal(
    text.slice(opening?.length ?? 0),
    HEARTBEAT.repeat(count(text, HEARTBEAT)),
    'then nothing but whole heartbeat frames',
  );
  // The default (15 s) would take 45 s for three; this shows the setting is the one in force.
  t.ok(elapsed < 5000, `three heartbeats within ${elapsed.toFixed(0)} ms`);

  // Events and heartbeats interleave as whole frames.
  const agent = await steer.agent();
  await agent.notify(sid, chunk('between beats'));
  const before = count(raw.text(), HEARTBEAT);
  const after = await raw.waitForText(
    (s) => s.includes('"between beats"') && count(s, HEARTBEAT) >= before + 2,
    'an event between heartbeats',
  );
  const frames = after.split('\n\n');
  t.equal(frames.pop(), '', 'the text ends on a frame boundary');
  for (const frame of frames.slice(3)) {
    if (frame === ': heartbeat') continue;
    t.match(frame, /^id: 1\nevent: session_update\ndata: \{.*"between beats".*\}$/, 'the one event frame is whole');
  }
  t.equal(
    frames.filter((frame) => frame !== ': heartbeat').length,
    4,
    'the retry frame, the two opening frames and the event, the rest heartbeats',
  );
});
