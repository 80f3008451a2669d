// GET /metrics (issue 5): every series is read from the real daemon over HTTP and must move exactly as the
// sessions, channels, streams, frames, restores and requests behind it do.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { startDaemon, steerDaemon, type TestDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { isType, lastEventId, openEvents } from './support/sse.js';
import { textPrompt } from './support/values.js';

/** Samples keyed by `name{label="value",…}` with the labels sorted, so lookups do not depend on their order. */
type Samples = Map<string, number>;

function sampleKey(name: string, labels: Record<string, string> = {}): string {
  const parts = Object.keys(labels)
    .sort()
    .map((key) => `${key}="${labels[key]}"`);
  return parts.length === 0 ? name : `${name}{${parts.join(',')}}`;
}

function parseExposition(text: string): Samples {
  const samples: Samples = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    samples.set(sampleKey(match[1], labels), Number(match[3]));
  }
  return samples;
}

interface Scrape {
  samples: Samples;
  text: string;
  /** The value of one series; a missing series is a failure, not a zero. A plain function: it can be destructured. */
  value: (name: string, labels?: Record<string, string>) => number;
}

async function scrape(d: TestDaemon): Promise<Scrape> {
  const res = await call(d, 'GET', '/metrics');
  if (res.status !== 200 || typeof res.body !== 'string')
    throw new Error(`GET /metrics → ${res.status} ${JSON.stringify(res.body)}`);
  const text = res.body;
  const samples = parseExposition(text);
  return {
    samples,
    text,
    value: (name, labels) => {
      const found = samples.get(sampleKey(name, labels));
      if (found === undefined) throw new Error(`no series ${sampleKey(name, labels)} in:\n${text}`);
      return found;
    },
  };
}

t.test('Prometheus text, behind the token like every other route', async (t) => {
  const d = await startDaemon(t, { args: ['--token', 'metrics-secret'] });
  const denied = await call(d, 'GET', '/metrics', undefined, { authorization: 'Bearer wrong' });
  t.equal(denied.status, 401);
  const res = await call(d, 'GET', '/metrics');
  t.equal(res.status, 200);
  t.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  const { value } = await scrape(d);
  t.equal(value('acpd_sessions'), 0);
  t.equal(value('acpd_agent_spawns_total'), 0);
  for (const outcome of ['restored', 'coalesced', 'conflict', 'limited', 'not_found']) {
    t.equal(value('acpd_restores_total', { outcome }), 0, `restores{outcome="${outcome}"} starts at 0`);
  }
});

t.test('acpd_build_info carries the version of package.json', async (t) => {
  const manifest = obj(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')));
  const d = await startDaemon(t);
  const scraped = await scrape(d);
  t.equal(scraped.value('acpd_build_info', { version: String(manifest.version) }), 1);
  t.equal([...scraped.samples.keys()].filter((key) => key.startsWith('acpd_build_info')).length, 1, 'one series');
});

t.test('two apps in one process keep separate registries', async (t) => {
  const a = await startDaemon(t);
  const b = await startDaemon(t);
  await createSession(a);
  t.equal((await scrape(a)).value('acpd_sessions'), 1);
  t.equal((await scrape(b)).value('acpd_sessions'), 0, 'the other app saw nothing');
  t.not(a.app.metrics, b.app.metrics);
});

t.test('sessions, channels, subscribers, frames and request durations follow the traffic', async (t) => {
  const d = await startDaemon(t);
  const before = await scrape(d);
  t.equal(before.value('acpd_sessions'), 0);
  t.equal(before.value('acpd_agent_spawns_total'), 0);
  t.equal(before.value('acpd_agent_channels', { state: 'active' }), 0);
  t.equal(before.value('acpd_sse_subscribers'), 0);
  t.equal(before.value('acpd_events_published_total'), 0);

  const id = await createSession(d);
  const created = await scrape(d);
  t.equal(created.value('acpd_sessions'), 1);
  t.equal(created.value('acpd_agent_spawns_total'), 1);
  t.equal(created.value('acpd_agent_channels', { state: 'active' }), 1);
  t.equal(created.value('acpd_agent_channels', { state: 'dying' }), 0);

  // The first frame (retry:) is written after the subscription exists.
  const live = await openEvents(t, d, id);
  await live.waitFor((f) => f.retry !== undefined, 'retry frame');
  t.equal((await scrape(d)).value('acpd_sse_subscribers'), 1);

  const prompt = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('metrics please'));
  t.equal(prompt.status, 200);
  const published = lastEventId(d, id);
  t.ok(published >= 2, 'the prompt produced events');
  await live.waitFor((f) => f.envelope?.id === published, 'the last event, live');

  // A reconnect from 0 replays the whole ring.
  const again = await openEvents(t, d, id, { lastEventId: 0 });
  await again.waitFor((f) => f.envelope?.id === published, 'the last event, replayed');
  const after = await scrape(d);
  t.equal(after.value('acpd_events_published_total'), published, 'published = the events the bus numbered');
  t.equal(after.value('acpd_events_replayed_total'), published, 'replayed = what the reconnect received');
  t.equal(after.value('acpd_events_dropped_total'), 0);
  t.equal(after.value('acpd_sse_subscribers'), 2);

  // Durations are labelled by route pattern and status, never by the raw URL.
  const missing = await call(d, 'POST', '/session/no-such-session/prompt', textPrompt('x'));
  t.equal(missing.status, 404);
  t.equal((await call(d, 'GET', '/no/such/route')).status, 404);
  const end = await scrape(d);
  const http = 'acpd_http_request_duration_seconds_count';
  t.equal(end.value(http, { method: 'POST', route: '/session/:id/prompt', status_code: '200' }), 1);
  t.equal(end.value(http, { method: 'POST', route: '/session/:id/prompt', status_code: '404' }), 1);
  t.equal(end.value(http, { method: 'POST', route: '/session', status_code: '200' }), 1);
  t.equal(end.value(http, { method: 'GET', route: '(unmatched)', status_code: '404' }), 1);
  t.ok(end.value(http, { method: 'GET', route: '/metrics', status_code: '200' }) >= 4, 'scrapes are requests too');
  t.equal(end.value('acpd_prompt_duration_seconds_count', { status_code: '200' }), 1);
  t.equal(end.value('acpd_prompt_duration_seconds_count', { status_code: '404' }), 1);
  t.ok(end.value('acpd_prompt_duration_seconds_sum', { status_code: '200' }) > 0);
  t.notOk(end.text.includes(id), 'no series carries a session id');
  t.notOk(end.text.includes('no-such-session'), 'no series carries a raw URL');
});

t.test('agent spawns and crashes, and the channel gauge, follow the agent processes', async (t) => {
  const { steer, d } = await steerDaemon(t);
  const id = await createSession(d);
  const events = await openEvents(t, d, id);
  await events.waitFor((f) => f.retry !== undefined, 'retry frame');
  const up = await scrape(d);
  t.equal(up.value('acpd_agent_spawns_total'), 1);
  t.equal(up.value('acpd_agent_crashes_total'), 0);
  t.equal(up.value('acpd_agent_channels', { state: 'active' }), 1);

  await (await steer.agent()).crash();
  // The supervisor counts the crash before the registry tells the session's subscribers.
  await events.waitFor(isType('session_died'), 'session_died');
  const down = await scrape(d);
  t.equal(down.value('acpd_agent_crashes_total'), 1);
  t.equal(down.value('acpd_agent_channels', { state: 'active' }), 0);
  t.equal(down.value('acpd_sessions'), 0);
  t.equal(down.value('acpd_sse_subscribers'), 0, "the dead session's stream ended");

  await createSession(d);
  const respawned = await scrape(d);
  t.equal(respawned.value('acpd_agent_spawns_total'), 2);
  t.equal(respawned.value('acpd_agent_crashes_total'), 1, 'a new spawn is not a crash');
});

t.test('restores by outcome: restored, coalesced, conflict (409), limited (503), not found (404)', async (t) => {
  const { steer, d } = await steerDaemon(t, { hold: ['session/load'], args: ['--max-sessions', '1'] });
  const count = async (outcome: string) => (await scrape(d)).value('acpd_restores_total', { outcome });

  const unknown = call(d, 'POST', '/session/unknown-1/load', {});
  await (await steer.nextCall('session/load')).release();
  t.equal((await unknown).status, 404);
  t.equal(await count('not_found'), 1);

  const owner = call(d, 'POST', '/session/s-1/load', {});
  const held = await steer.nextCall('session/load');
  const joiner = call(d, 'POST', '/session/s-1/load', {});
  const conflict = await call(d, 'POST', '/session/s-1/resume', {});
  t.equal(conflict.status, 409);
  const limited = await call(d, 'POST', '/session/s-2/load', {});
  t.equal(limited.status, 503, 'the in-flight restore holds the only slot');
  t.equal(await count('conflict'), 1);
  t.equal(await count('limited'), 1);
  t.equal(await count('restored'), 0, 'nothing restored while the agent holds the load');

  await held.release();
  t.equal((await owner).status, 200);
  t.equal((await joiner).status, 200);
  t.same(obj((await joiner).body).attached, true);
  const end = await scrape(d);
  t.equal(end.value('acpd_restores_total', { outcome: 'restored' }), 1);
  t.equal(end.value('acpd_restores_total', { outcome: 'coalesced' }), 1);
  t.equal(end.value('acpd_restores_total', { outcome: 'not_found' }), 1);
  t.equal(end.value('acpd_sessions'), 1);
});

t.test('evicted streams and events pushed out of the replay ring', async (t) => {
  const { d } = await steerDaemon(t);
  const id = await createSession(d);

  // A subscriber that never reads, with room for one event beyond the burst being sent (a group commit):
  // what the first turn left waiting makes a later burst evict it.
  const stuck = d.app.sessions.subscribe(id, { maxQueued: 1 });
  t.teardown(() => stuck.return?.());
  t.equal((await call(d, 'POST', `/session/${id}/prompt`, textPrompt('two chunks'))).status, 200);
  t.equal((await call(d, 'POST', `/session/${id}/prompt`, textPrompt('two more'))).status, 200);
  const evicted = await scrape(d);
  t.equal(evicted.value('acpd_sse_evictions_total'), 1);
  t.equal(evicted.value('acpd_events_dropped_total'), 0, 'the ring still holds everything');

  // The ring keeps 4000 events; a flood past that pushes the oldest out.
  t.equal((await call(d, 'POST', `/session/${id}/prompt`, textPrompt('flood 4100'))).status, 200);
  const published = lastEventId(d, id);
  t.ok(published > 4000);
  const flooded = await scrape(d);
  t.equal(flooded.value('acpd_events_published_total'), published);
  t.equal(flooded.value('acpd_events_dropped_total'), published - 4000);
  t.equal(flooded.value('acpd_sse_evictions_total'), 1, 'nobody else was evicted');
});
