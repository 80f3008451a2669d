// The prompt queue taken from the qwen daemon: `Prefer: respond-async` (202 {promptId, lastEventId,
// eventEpoch}), the per-session queue and its cap, the prompt echo, the pending_prompt_* and turn frames,
// cancel that stops only the running prompt, the pending-prompts and turns/current routes, a close
// mid-turn, and permission_already_resolved. The steerable agent's "hang" prompt answers only on cancel;
// holding `session/prompt` parks a prompt in the agent until the test releases it.
import { asKnownDaemonEvent, type DaemonEvent } from '@qwen-code/sdk/daemon';
import t from 'tap';
import { Client } from 'undici';
import { steerDaemon } from './support/app.js';
import { call, createSession, obj, type JsonResponse } from './support/http.js';
import { isType, openEvents, type SseStream } from './support/sse.js';
import { textPrompt } from './support/values.js';

const ASYNC = { prefer: 'respond-async' };

/** The first text block of a prompt the agent saw. */
function promptTextOf(params: unknown): string {
  const prompt = obj(params).prompt;
  return Array.isArray(prompt) ? String(obj(prompt[0]).text) : '';
}

/** POST a non-blocking prompt; its promptId, or a failure with the answer. */
async function sendAsync(d: Parameters<typeof call>[0], id: string, text: string): Promise<string> {
  const res = await call(d, 'POST', `/session/${id}/prompt`, textPrompt(text), ASYNC);
  if (res.status !== 202) throw new Error(`prompt → ${res.status} ${JSON.stringify(res.body)}`);
  return String(obj(res.body).promptId);
}

/** The frames of a stream as `type` (or `type:promptId` for the prompt frames), for order checks. */
function timeline(sse: SseStream, names: Map<string, string>): string[] {
  // The numbered frames: the opening replay_complete and session_state are not part of any prompt's story.
  return sse.events().flatMap((e) => {
    if (e.id === undefined) return [];
    const promptId = typeof e.data.promptId === 'string' ? e.data.promptId : undefined;
    const meta = obj(e.data.update ?? {})._meta;
    const echoed = meta === undefined ? undefined : String(obj(meta).promptId);
    const id = promptId ?? echoed;
    const kind = e.type === 'session_update' ? String(obj(e.data.update).sessionUpdate) : e.type;
    return [id === undefined ? kind : `${kind}:${names.get(id) ?? id}`];
  });
}

/**
 * The numbered frames of a stream that the qwen daemon's published client would not accept, by type. Its
 * 0.1.14 names `prompt_cancelled` but has no check for it (it reads only an optional `reason`): that one is
 * skipped. The id-less opening frames are left out: the client has no typed check for `replay_complete`
 * (which the qwen daemon itself sends) nor for acpd's `session_state`, and passes both through.
 */
function refusedBySdk(sse: SseStream): string[] {
  return sse.frames.flatMap((f) => {
    if (f.data === undefined || f.id === undefined) return [];
    const ev = JSON.parse(f.data) as DaemonEvent;
    if (ev.type === 'prompt_cancelled') return [];
    return asKnownDaemonEvent(ev) === ev ? [] : [ev.type];
  });
}

t.test('202: shape, header, lastEventId replays the echo first; the turn ends with nobody connected', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/prompt'], checkAnswers: true });
  const id = await createSession(d);
  const before = await openEvents(t, d, id);

  // Sent over a client of its own, closed right after the answer: no connection is left to the daemon.
  const client = new Client(d.baseUrl);
  const res = await client.request({
    method: 'POST',
    path: `/session/${id}/prompt`,
    headers: { ...d.headers, 'content-type': 'application/json', prefer: 'wait=5, Respond-Async' },
    body: JSON.stringify({
      prompt: [
        { type: 'text', text: 'first' },
        { type: 'text', text: 'second' },
      ],
    }),
  });
  const body = obj(await res.body.json());
  await client.close();
  before.close();
  t.equal(res.statusCode, 202);
  t.equal(res.headers['preference-applied'], 'respond-async');
  t.same(Object.keys(body).sort(), ['eventEpoch', 'lastEventId', 'promptId']);
  t.match(body, { promptId: /^[0-9a-f-]{36}$/, lastEventId: Number, eventEpoch: String });
  t.equal(body.eventEpoch, d.app.sessions.require(id).events.epoch);
  const promptId = String(body.promptId);

  const held = await steer.nextCall('session/prompt');
  await held.release();

  const replay = await openEvents(t, d, id, { lastEventId: Number(body.lastEventId) });
  const done = await replay.waitFor(isType('turn_complete'), 'turn_complete');
  t.same(done.envelope?.data, { sessionId: id, promptId, stopReason: 'end_turn' });
  // The numbered frames; the stream also opens with replay_complete and session_state after them.
  const [first, second, ...rest] = replay.events().filter((e) => e.id !== undefined);
  const meta = { source: 'bridge-echo', promptId };
  t.same(first?.data, {
    sessionId: id,
    update: { sessionUpdate: 'user_message_chunk', content: { type: 'text', text: 'first' }, _meta: meta },
    _meta: meta,
  });
  t.match(second?.data, { update: { sessionUpdate: 'user_message_chunk', content: { text: 'second' } } });
  t.same(
    rest.map((e) => e.type),
    ['session_update', 'session_update', 'turn_complete'],
    "the agent's two chunks, then the end; nothing queued, so no pending_prompt_* frames",
  );
  t.same(steer.log.filter((r) => r.method === 'session/prompt').length, 1, 'the agent ran it once');
  t.same(
    obj((await call(d, 'GET', `/session/${id}/turns/current`)).body),
    { sessionId: id, state: 'idle', promptId: null, promptText: null, queuedAt: null, startedAt: null },
    'idle once it ended',
  );
});

t.test('queue: 5 wait behind the running prompt, the next gets 503 prompt_queue_full', async (t) => {
  const { d, steer } = await steerDaemon(t, { hold: ['session/prompt'], checkAnswers: true });
  const id = await createSession(d);
  const running = await sendAsync(d, id, 'p0');
  const held = await steer.nextCall('session/prompt');
  const queued: string[] = [];
  for (let i = 1; i <= 5; i++) queued.push(await sendAsync(d, id, `p${i}`));

  const expected = {
    error: `Prompt queue full for session "${id}" (5/5 pending)`,
    code: 'prompt_queue_full',
    sessionId: id,
    limit: 5,
    pendingCount: 5,
  };
  const full = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('p6'), ASYNC);
  t.equal(full.status, 503);
  t.equal(full.headers['retry-after'], '5');
  t.strictSame(full.body, expected);
  const blocking = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('p6'));
  t.equal(blocking.status, 503, 'a blocking prompt is refused the same way');
  t.strictSame(blocking.body, expected);

  const list = obj((await call(d, 'GET', `/session/${id}/pending-prompts`)).body);
  const items = list.pendingPrompts as Array<Record<string, unknown>>;
  t.same(
    items.map((p) => [p.promptId, p.text, p.state]),
    [[running, 'p0', 'running'], ...queued.map((p, i) => [p, `p${i + 1}`, 'queued'])],
    'running first, then the queue in order',
  );
  t.ok(items.every((p) => typeof p.queuedAt === 'number'));
  const turn = obj((await call(d, 'GET', `/session/${id}/turns/current`)).body);
  t.match(turn, { sessionId: id, state: 'running', promptId: running, promptText: 'p0' });
  t.ok(Number(turn.startedAt) >= Number(turn.queuedAt), 'started after it was queued');
  t.match(d.app.sessions.require(id).currentTurn(), { promptId: running, promptText: 'p0' });

  // Once the running prompt ends, the first waiting one runs and there is room again.
  await held.release();
  const next = await steer.nextCall('session/prompt');
  t.equal(promptTextOf(next.params), 'p1');
  t.equal((await call(d, 'POST', `/session/${id}/prompt`, textPrompt('p6'), ASYNC)).status, 202);
  t.equal(steer.log.filter((r) => r.method === 'session/prompt').length, 2, 'nothing refused reached the agent');
  await steer.unhold(['session/prompt']);
  await next.release();
});

t.test('a queued prompt: its frames in order; cancel stops only the running prompt', async (t) => {
  const { d, steer } = await steerDaemon(t, { checkAnswers: true });
  const id = await createSession(d);
  const sse = await openEvents(t, d, id);
  const a = await sendAsync(d, id, 'hang');
  await steer.seen('session/prompt');
  const b = await sendAsync(d, id, 'after');

  const cancel = await call(d, 'POST', `/session/${id}/cancel`, {});
  t.equal(cancel.status, 204);
  const end = await sse.waitFor((f) => isType('pending_prompt_completed')(f) && f.envelope?.data.promptId === b);
  t.same(end.envelope?.data, { sessionId: id, promptId: b, state: 'completed' });

  const names = new Map([
    [a, 'A'],
    [b, 'B'],
  ]);
  t.same(timeline(sse, names), [
    'user_message_chunk:A',
    'user_message_chunk:B',
    'pending_prompt_added:B',
    'prompt_cancelled:A',
    'turn_complete:A',
    'pending_prompt_started:B',
    'agent_message_chunk',
    'agent_message_chunk',
    'turn_complete:B',
    'pending_prompt_completed:B',
  ]);
  const byType = (type: string, promptId: string) =>
    sse.events().find((e) => e.type === type && e.data.promptId === promptId)?.data;
  t.match(byType('pending_prompt_added', b), { sessionId: id, promptId: b, text: 'after', queuedAt: Number });
  t.same(byType('pending_prompt_started', b), { sessionId: id, promptId: b, text: 'after' });
  const cancelled = obj(byType('prompt_cancelled', a));
  t.same(Object.keys(cancelled).sort(), ['cancelledAt', 'promptId', 'sessionId']);
  const complete = obj(byType('turn_complete', a));
  t.match(complete, {
    sessionId: id,
    promptId: a,
    stopReason: 'cancelled',
    promptCancelled: { cancelledAt: cancelled.cancelledAt, elapsedMs: Number },
  });
  t.same(byType('turn_complete', b), { sessionId: id, promptId: b, stopReason: 'end_turn' });

  const agentSaw = steer.log
    .filter((r) => obj(r.params).sessionId === id)
    .map((r) => (r.method === 'session/prompt' ? `prompt ${promptTextOf(r.params)}` : r.method));
  t.same(agentSaw, ['prompt hang', 'session/cancel', 'prompt after'], 'B ran after the cancel, not cancelled');
  t.same(refusedBySdk(sse), [], "every frame is valid for the qwen daemon's client");
});

t.test('DELETE pending-prompts: a queued one never reaches the agent; the running one is cancelled', async (t) => {
  const { d, steer } = await steerDaemon(t, { checkAnswers: true });
  const id = await createSession(d);
  const sse = await openEvents(t, d, id);
  const a = await sendAsync(d, id, 'hang');
  await steer.seen('session/prompt');
  const waiting = call(d, 'POST', `/session/${id}/prompt`, textPrompt('blocked'));
  const added = await sse.waitFor(isType('pending_prompt_added'), 'pending_prompt_added');
  const b = String(added.envelope?.data.promptId);
  const c = await sendAsync(d, id, 'last');

  const removed = await call(d, 'DELETE', `/session/${id}/pending-prompts/${b}`);
  t.equal(removed.status, 200);
  t.same(removed.body, { removed: true });
  t.same((await waiting).body, { stopReason: 'cancelled' }, "the removed prompt's blocking caller gets an answer");
  const gone = await sse.waitFor((f) => isType('pending_prompt_completed')(f) && f.envelope?.data.promptId === b);
  t.same(gone.envelope?.data, { sessionId: id, promptId: b, state: 'removed' });
  const again = await call(d, 'DELETE', `/session/${id}/pending-prompts/${b}`);
  t.equal(again.status, 404);
  t.match(obj(again.body), { code: 'pending_prompt_not_found', sessionId: id, promptId: b });

  t.equal((await call(d, 'DELETE', `/session/${id}/pending-prompts/${a}`)).status, 200, 'the running one');
  const cEnd = await sse.waitFor((f) => isType('turn_complete')(f) && f.envelope?.data.promptId === c);
  t.equal(cEnd.envelope?.data.stopReason, 'end_turn');
  t.match(sse.events().find((e) => e.type === 'turn_complete' && e.data.promptId === a)?.data, {
    stopReason: 'cancelled',
    promptCancelled: {},
  });
  t.ok(sse.events().some((e) => e.type === 'prompt_cancelled' && e.data.promptId === a));

  const prompts = steer.log.filter((r) => r.method === 'session/prompt').map((r) => promptTextOf(r.params));
  t.same(prompts, ['hang', 'last'], 'the removed prompt never reached the agent');
  const unknown = await call(d, 'DELETE', `/session/${id}/pending-prompts/nope`);
  t.equal(unknown.status, 404);
  t.match(obj(unknown.body), { code: 'pending_prompt_not_found' });
  t.match(obj((await call(d, 'GET', `/session/nope/pending-prompts`)).body), { code: 'session_not_found' });
});

t.test('closing mid-turn: turn_complete cancelled, the queue removed, then session_closed', async (t) => {
  const { d, steer } = await steerDaemon(t, { checkAnswers: true });
  const id = await createSession(d);
  const sse = await openEvents(t, d, id);
  const a = await sendAsync(d, id, 'hang');
  await steer.seen('session/prompt');
  const b = await sendAsync(d, id, 'never');
  const blocked = call(d, 'POST', `/session/${id}/prompt`, textPrompt('never either'));
  const c = String(
    (await sse.waitFor((f) => isType('pending_prompt_added')(f) && f.envelope?.data.promptId !== b)).envelope?.data
      .promptId,
  );

  t.equal((await call(d, 'DELETE', `/session/${id}`)).status, 204);
  t.equal((await blocked).status, 404, 'a blocking caller of a removed prompt gets the 404 it got before');
  await sse.ended;
  const names = new Map([
    [a, 'A'],
    [b, 'B'],
    [c, 'C'],
  ]);
  t.same(timeline(sse, names).slice(-4), [
    'turn_complete:A',
    'pending_prompt_completed:B',
    'pending_prompt_completed:C',
    'session_closed',
  ]);
  t.same(sse.events().find((e) => e.type === 'turn_complete')?.data, {
    sessionId: id,
    promptId: a,
    stopReason: 'cancelled',
  });
  t.notOk(
    sse.events().some((e) => e.type === 'prompt_cancelled'),
    'no prompt_cancelled on a close',
  );
  t.ok(
    sse
      .events()
      .filter((e) => e.type === 'pending_prompt_completed')
      .every((e) => e.data.state === 'removed'),
  );
  t.same(refusedBySdk(sse), []);
});

t.test('a repeated permission vote: 404 and permission_already_resolved', async (t) => {
  const { d } = await steerDaemon(t, { checkAnswers: true });
  const id = await createSession(d);
  const sse = await openEvents(t, d, id);
  await sendAsync(d, id, 'perm');
  const asked = await sse.waitFor(isType('permission_request'), 'permission_request');
  const requestId = String(asked.envelope?.data.requestId);
  const vote = { outcome: { outcome: 'selected', optionId: 'allow' } };
  t.equal((await call(d, 'POST', `/permission/${requestId}`, vote)).status, 200);
  t.equal((await call(d, 'POST', '/permission/no-such-request', vote)).status, 404, 'an unknown id: just 404');
  const again: JsonResponse = await call(d, 'POST', `/permission/${requestId}`, vote);
  t.equal(again.status, 404);
  t.match(obj(again.body), { requestId });
  const frame = await sse.waitFor(isType('permission_already_resolved'), 'permission_already_resolved');
  t.same(frame.envelope?.data, { requestId, sessionId: id, outcome: { outcome: 'selected', optionId: 'allow' } });
  await sse.waitFor(isType('turn_complete'), 'turn_complete');
  t.equal(sse.events().filter((e) => e.type === 'permission_already_resolved').length, 1, 'one, for the known id');
  t.same(refusedBySdk(sse), []);
});

t.test('without Prefer: v1 blocking 200 {stopReason}, and a client that leaves still cancels', async (t) => {
  const { d, steer } = await steerDaemon(t, { checkAnswers: true });
  const id = await createSession(d);
  const res = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('hello'), { prefer: 'return=minimal' });
  t.equal(res.status, 200);
  t.strictSame(res.body, { stopReason: 'end_turn' });
  t.notOk(res.headers['preference-applied']);

  const ac = new AbortController();
  const left = call(d, 'POST', `/session/${id}/prompt`, textPrompt('hang'), {}, ac.signal).catch(() => 'aborted');
  await steer.seen('session/prompt', (p) => promptTextOf(p) === 'hang');
  ac.abort();
  t.equal(await left, 'aborted');
  await steer.seen('session/cancel');
  const sse = await openEvents(t, d, id, { lastEventId: 0 });
  const end = await sse.waitFor(
    (f) => isType('turn_complete')(f) && f.envelope?.data.stopReason === 'cancelled',
    'the cancelled turn_complete',
  );
  t.match(end.envelope?.data, { sessionId: id, stopReason: 'cancelled' });
});
