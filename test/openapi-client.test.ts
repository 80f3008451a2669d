// Issue 11: the API document is complete enough to generate a working, typed client. The types in
// test/generated/acpd-api.d.ts come from openapi-typescript over /docs/json (and must still be what the
// document generates today); openapi-fetch, typed by them, then drives a session the way an integrator
// would: create, follow the events, prompt, vote on a permission, list, restore. Every answer and every
// frame is checked against the document as well.
import { readFileSync } from 'node:fs';
import t from 'tap';
import createClient from 'openapi-fetch';
import type { components, paths } from './generated/acpd-api.js';
import { steerDaemon } from './support/app.js';
import { API_TYPES_FILE, apiTypes } from './support/api-types.js';
import { AnswerChecker } from './support/openapi.js';

type SessionEvent = components['schemas']['SessionEvent'];

t.test('the committed client types are what the document generates', async (t) => {
  const { d } = await steerDaemon(t);
  const res = await fetch(`${d.baseUrl}/docs/json`);
  const generated = await apiTypes(await res.json());
  t.equal(readFileSync(API_TYPES_FILE, 'utf8'), generated, 'stale: run `npm run openapi:types`');
});

/** The SSE stream's events, read as they come, for a client that has only fetch. */
function readEvents(body: ReadableStream<Uint8Array>) {
  const events: SessionEvent[] = [];
  const waiters: Array<{ match: (e: SessionEvent) => boolean; resolve: (e: SessionEvent) => void }> = [];
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const pump = (async () => {
    let buffered = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += value;
      let end: number;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const frame = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const data = frame.split('\n').find((line) => line.startsWith('data: '));
        if (data === undefined) continue;
        const event = JSON.parse(data.slice(6)) as SessionEvent;
        events.push(event);
        for (const w of waiters.filter((w) => w.match(event))) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(event);
        }
      }
    }
  })();
  return {
    events,
    next<T extends SessionEvent['type']>(type: T): Promise<Extract<SessionEvent, { type: T }>> {
      const isType = (e: SessionEvent): e is Extract<SessionEvent, { type: T }> => e.type === type;
      const found = events.find(isType);
      if (found) return Promise.resolve(found);
      return new Promise((resolve) => {
        waiters.push({ match: isType, resolve: (e) => resolve(e as Extract<SessionEvent, { type: T }>) });
      });
    },
    async close() {
      await reader.cancel().catch(() => {});
      await pump.catch(() => {});
    },
  };
}

t.test('a typed client generated from the document drives a session', async (t) => {
  const { d } = await steerDaemon(t, { args: ['--token', 'client-secret'], checkAnswers: true });
  const api = createClient<paths>({ baseUrl: d.baseUrl, headers: { authorization: 'Bearer client-secret' } });

  const caps = await api.GET('/capabilities');
  t.equal(caps.data?.workspaceCwd, d.config.workspace);

  const created = await api.POST('/session', { body: { sessionScope: 'thread' } });
  const sessionId = created.data?.sessionId ?? '';
  t.equal(created.response.status, 200);
  t.equal(created.data?.attached, false);

  const stream = await api.GET('/session/{id}/events', {
    params: { path: { id: sessionId }, header: { 'last-event-id': '0' } },
    parseAs: 'stream',
  });
  t.equal(stream.response.status, 200);
  t.match(stream.response.headers.get('content-type'), /^text\/event-stream/);
  if (!stream.data) throw new Error('no stream');
  const events = readEvents(stream.data);
  t.teardown(() => events.close());

  // A prompt whose turn asks for permission: the vote goes through the typed route.
  const turn = api.POST('/session/{id}/prompt', {
    params: { path: { id: sessionId } },
    body: { prompt: [{ type: 'text', text: 'perm' }] },
  });
  const asked = await events.next('permission_request');
  t.equal(asked.data.sessionId, sessionId);
  const [option] = asked.data.options;
  const vote = await api.POST('/permission/{requestId}', {
    params: { path: { requestId: asked.data.requestId } },
    body: { outcome: { outcome: 'selected', optionId: option.optionId } },
  });
  t.equal(vote.response.status, 200);
  const resolved = await events.next('permission_resolved');
  t.same(resolved.data.outcome, { outcome: 'selected', optionId: option.optionId });
  const answer = await turn;
  t.equal(answer.response.status, 200, 'blocking without Prefer');
  t.equal(answer.data && 'stopReason' in answer.data ? answer.data.stopReason : undefined, 'end_turn');
  const update = await events.next('session_update');
  t.type(update.data.update.sessionUpdate, 'string');

  // Errors come back typed as the envelope.
  const missing = await api.POST('/session/{id}/prompt', {
    params: { path: { id: 'no-such-session' } },
    body: { prompt: [{ type: 'text', text: 'hi' }] },
  });
  t.equal(missing.response.status, 404);
  t.equal(missing.error?.sessionId, 'no-such-session');

  const model = await api.POST('/session/{id}/model', { params: { path: { id: sessionId } }, body: { modelId: 'm2' } });
  t.equal(model.response.status, 200);
  const switched = await events.next('model_switched');
  t.equal(switched.data.modelId, 'm2');

  const cancelled = await api.POST('/session/{id}/cancel', { params: { path: { id: sessionId } } });
  t.equal(cancelled.response.status, 204, 'cancel takes no body');

  const listed = await api.GET('/workspace/{id}/sessions', { params: { path: { id: d.config.workspace } } });
  t.same(
    listed.data?.sessions.map((s) => s.sessionId),
    [sessionId],
    'the path parameter is URL-encoded by the client',
  );

  const restored = await api.POST('/session/{id}/load', { params: { path: { id: 'stored-7' } } });
  t.equal(restored.response.status, 200, 'load takes no body');
  t.equal(restored.data?.sessionId, 'stored-7');
  t.type(restored.data?.state, 'object');
  const resumed = await api.POST('/session/{id}/resume', { params: { path: { id: 'stored-8' } }, body: {} });
  t.equal(resumed.data?.attached, false);

  const checker = new AnswerChecker(d.app.swagger());
  for (const event of events.events) t.equal(checker.checkFrame(event), undefined, `${event.type} frame`);
  t.ok((d.answers ?? []).length >= 10, 'the answers were checked against the document');
});
