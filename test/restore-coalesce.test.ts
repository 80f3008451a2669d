// Restoring persisted sessions (issue 3), rules 1–5 of the restore coordinator: coalescing, the
// cross-action conflict, the session cap, not-found and workspace errors, and the default session.
// Real daemon on 127.0.0.1, the steerable agent, real HTTP; races are ordered by parking agent calls.
import t from 'tap';
import { until } from '../harness/wait.js';
import { steerDaemon, tempDir } from './support/app.js';
import { call, createSession, obj, type JsonResponse } from './support/http.js';
import { openEvents } from './support/sse.js';
import { agentCalls, parked, restore, type Action } from './restore-kit.js';

/** The four fields of a v1 restore answer (later fields left out). */
function v1Fields(body: Record<string, unknown>): Record<string, unknown> {
  const keys = ['sessionId', 'workspaceCwd', 'attached', 'state'];
  return Object.fromEntries(Object.entries(body).filter(([key]) => keys.includes(key)));
}

t.test(
  'rule 1: concurrent restores of the same id + action coalesce into one agent call, same state, one owner',
  async (t) => {
    const { steer, d } = await steerDaemon(t, { hold: ['session/load'] });
    const first = restore(d, 'load', 's1');
    const held = await parked(steer, 'session/load', first);
    const others = [restore(d, 'load', 's1'), restore(d, 'load', 's1')];
    await until(
      () => d.app.restores.stats.coalesced === 2 || agentCalls(steer, 'session/load') > 1,
      'two more callers reached the restore in flight',
    );
    // Nothing else may be parked from now on: a second agent call would show up in the log, not hang.
    await steer.unhold(['session/load']);
    t.equal(agentCalls(steer, 'session/load'), 1, 'three callers, one agent call in flight');

    await held.release();
    const results = await Promise.all([first, ...others]);
    t.same(
      results.map((r) => r.status),
      [200, 200, 200],
    );
    const bodies = results.map((r) => obj(r.body));
    t.same(
      bodies.map((b) => b.attached),
      [false, true, true],
      'the first caller owns the session, the others attached',
    );
    const state = bodies[0]?.state;
    t.match(state, { _meta: { restoredBy: 'session/load', pid: held.pid } }, "state is the agent's load answer");
    const history = bodies[0]?.compactedReplay;
    const text = (sessionUpdate: string, value: string) => ({
      v: 1,
      type: 'session_update',
      data: { sessionId: 's1', update: { sessionUpdate, content: { type: 'text', text: value } } },
    });
    t.same(
      history,
      [text('user_message_chunk', 'hi'), text('agent_message_chunk', 'helloagain')],
      'the replay, its two agent chunks merged',
    );
    for (const b of bodies) {
      t.same(
        v1Fields(b),
        { sessionId: 's1', workspaceCwd: d.config.workspace, attached: b.attached, state },
        'every caller gets the same state',
      );
      t.match(b, { lastEventId: 3, eventEpoch: String, hasActivePrompt: false, createdAt: String, clientId: String });
      t.same(b.compactedReplay, history, 'and the same history');
    }
    t.equal(agentCalls(steer, 'session/load'), 1, 'still exactly one session/load reached the agent');
    t.equal(d.app.sessions.get('s1')?.attachCount, 2, 'both joiners count as attaches');

    // Later attachers, by either action, get the cached state and cause no agent call.
    for (const action of ['load', 'resume'] as const) {
      const later = await restore(d, action, 's1');
      t.equal(later.status, 200);
      t.same(
        v1Fields(obj(later.body)),
        { sessionId: 's1', workspaceCwd: d.config.workspace, attached: true, state },
        `a later ${action} gets the cached state`,
      );
      t.same(
        obj(later.body).compactedReplay,
        action === 'load' ? [] : undefined,
        'nothing replayed when it was live already',
      );
    }
    t.equal(agentCalls(steer, 'session/load'), 1);
    t.equal(agentCalls(steer, 'session/resume'), 0);
    t.equal(d.app.sessions.get('s1')?.attachCount, 4);

    // The one replay landed once, in the session's ring, from id 1.
    const sse = await openEvents(t, d, 's1', { lastEventId: 0 });
    await sse.waitFor((f) => f.id === '3', 'the third replayed update');
    const replay = sse.events().slice(0, 3);
    t.same(
      replay.map((e) => e.id),
      [1, 2, 3],
    );
    t.same(
      replay.map((e) => obj(e.data.update).sessionUpdate),
      ['user_message_chunk', 'agent_message_chunk', 'agent_message_chunk'],
      'the history replayed once',
    );
  },
);

t.test(
  'rule 2: the other action while a restore is in flight → 409 restore_in_progress (both directions)',
  async (t) => {
    const { steer, d } = await steerDaemon(t);
    const directions: [Action, Action][] = [
      ['load', 'resume'],
      ['resume', 'load'],
    ];
    for (const [active, requested] of directions) {
      const sid = `s-${active}-first`;
      await steer.hold([`session/${active}`]);
      const owner = restore(d, active, sid);
      const held = await parked(steer, `session/${active}`, owner);
      await steer.unhold([`session/${active}`]);

      const res = await restore(d, requested, sid);
      t.equal(res.status, 409, `${requested} during ${active}`);
      t.equal(res.headers['retry-after'], '5');
      t.same(res.body, {
        error: `Session "${sid}" is already being restored via session/${active}; retry session/${requested} after it completes`,
        code: 'restore_in_progress',
        sessionId: sid,
        activeAction: active,
        requestedAction: requested,
      });
      t.equal(agentCalls(steer, `session/${requested}`, sid), 0, `no session/${requested} reached the agent`);

      await held.release();
      const owned = await owner;
      t.equal(owned.status, 200);
      t.match(owned.body, { sessionId: sid, attached: false, state: { _meta: { restoredBy: `session/${active}` } } });

      // Once it is live there is no conflict: the other action attaches.
      const after = await restore(d, requested, sid);
      t.equal(after.status, 200);
      t.match(after.body, { sessionId: sid, attached: true, state: { _meta: { restoredBy: `session/${active}` } } });
    }
  },
);

t.test(
  'rule 3: the cap counts live sessions + in-flight spawns + in-flight restores → 503 session_limit_exceeded',
  async (t) => {
    const { steer, d } = await steerDaemon(t, { hold: ['session/new', 'session/load'], args: ['--max-sessions', '3'] });
    const live = call(d, 'POST', '/session');
    await (await parked(steer, 'session/new', live)).release();
    const liveId = String(obj((await live).body).sessionId);

    const spawning = call(d, 'POST', '/session', { sessionScope: 'thread' });
    const heldNew = await parked(steer, 'session/new', spawning);
    const restoring = restore(d, 'load', 's1');
    const heldLoad = await parked(steer, 'session/load', restoring);
    // Probes that wrongly get through must answer, not park.
    await steer.unhold(['session/new', 'session/load']);
    t.equal(d.app.sessions.sessionCount, 1, 'one live session');
    t.equal(d.app.restores.inFlightCount, 1, 'one restore in flight');

    const limited = { error: 'Session limit reached (3)', code: 'session_limit_exceeded', limit: 3 };
    const probes: [string, () => Promise<JsonResponse>][] = [
      ['load', () => restore(d, 'load', 's2')],
      ['resume', () => restore(d, 'resume', 's2')],
      ['create', () => call(d, 'POST', '/session', { sessionScope: 'thread' })],
    ];
    for (const [label, probe] of probes) {
      const res = await probe();
      t.equal(res.status, 503, `${label}: 1 live + 1 spawning + 1 restoring = 3`);
      t.equal(res.headers['retry-after'], '5');
      t.same(res.body, limited);
    }
    t.equal(
      agentCalls(steer, 'session/load', 's2') + agentCalls(steer, 'session/resume', 's2'),
      0,
      'the agent was not asked',
    );

    // Joining what is in flight or live takes no new slot.
    const joiner = restore(d, 'load', 's1');
    await until(() => d.app.restores.stats.coalesced === 1, 'the joiner reached the restore in flight');
    const shared = await call(d, 'POST', '/session');
    t.match(shared, { status: 200, body: { sessionId: liveId, attached: true } });

    await heldNew.release();
    await heldLoad.release();
    const spawned = await spawning;
    t.match(spawned, { status: 200, body: { attached: false } });
    t.match(await restoring, { status: 200, body: { sessionId: 's1', attached: false } });
    t.match(await joiner, { status: 200, body: { sessionId: 's1', attached: true } });
    t.equal(d.app.sessions.sessionCount, 3);

    const full = await restore(d, 'resume', 's2');
    t.equal(full.status, 503, 'three live sessions fill the cap');
    t.same(full.body, limited);
    await d.app.sessions.killSession(String(obj(spawned.body).sessionId));
    const freed = await restore(d, 'resume', 's2');
    t.match(freed, { status: 200, body: { sessionId: 's2', attached: false } }, 'a killed session frees its slot');
  },
);

t.test(
  "rule 4: unknown id → 404 only for this id's -32002; workspace mismatch → 400; cwd validated as POST /session",
  async (t) => {
    const { steer, d } = await steerDaemon(t);
    for (const action of ['load', 'resume'] as const) {
      const res = await restore(d, action, 'unknown-1');
      t.equal(res.status, 404, `${action} of an id the agent does not know`);
      t.same(res.body, { error: 'No session with id "unknown-1"', sessionId: 'unknown-1' });
    }
    t.equal(d.app.sessions.get('unknown-1'), undefined);
    t.equal(d.app.restores.inFlightCount, 0);
    // On an idle daemon the agent started for the restore is released again (issue 9); with a session
    // on it, below, a not-found answer does not cost the agent its life.
    t.equal(d.app.channels.spawnCount, 2);
    t.equal(d.app.channels.crashCount, 0, 'released, not crashed');
    await until(() => d.app.channels.alive.size === 0, 'the idle agent released');

    // Near misses: only -32002 naming exactly this session is a 404; the rest is the agent's 500.
    await createSession(d);
    await steer.hold(['session/load']);
    const cases: { label: string; error: { code: number; message: string; data?: unknown }; notFound: boolean }[] = [
      {
        label: 'data.uri names another session',
        error: { code: -32002, message: 'Resource not found: session:other', data: { uri: 'session:other' } },
        notFound: false,
      },
      {
        label: 'data.uri has the id as a prefix',
        error: { code: -32002, message: 'Resource not found: session:abcd', data: { uri: 'session:abcd' } },
        notFound: false,
      },
      {
        label: 'data.uri of another session, message of this one',
        error: { code: -32002, message: 'not found', data: { uri: 'session:xabc' } },
        notFound: false,
      },
      {
        label: 'message contains the id',
        error: { code: -32002, message: 'Resource not found: session:abc (expired)' },
        notFound: false,
      },
      {
        label: 'message names a longer id',
        error: { code: -32002, message: 'Resource not found: session:abc2' },
        notFound: false,
      },
      {
        label: 'message fallback, exact',
        error: { code: -32002, message: 'Resource not found: session:abc' },
        notFound: true,
      },
      {
        label: 'data.uri exact',
        error: { code: -32002, message: 'gone', data: { uri: 'session:abc' } },
        notFound: true,
      },
      {
        label: 'another code with the right uri',
        error: { code: -32603, message: 'Resource not found: session:abc', data: { uri: 'session:abc' } },
        notFound: false,
      },
    ];
    for (const c of cases) {
      const pending = restore(d, 'load', 'abc');
      await (await parked(steer, 'session/load', pending)).fail(c.error);
      const res = await pending;
      if (c.notFound) {
        t.equal(res.status, 404, c.label);
        t.same(res.body, { error: 'No session with id "abc"', sessionId: 'abc' });
      } else {
        t.equal(res.status, 500, c.label);
        t.same(res.body, {
          error: c.error.message,
          code: c.error.code,
          ...(c.error.data === undefined ? {} : { data: c.error.data }),
        });
      }
      t.equal(d.app.sessions.get('abc'), undefined);
      t.equal(d.app.restores.inFlightCount, 0);
    }
    await steer.unhold(['session/load']);

    // Workspace: another directory is refused before the agent hears of it.
    const other = tempDir(t, 'acpd-other-');
    const ws = d.config.workspace;
    for (const action of ['load', 'resume'] as const) {
      const res = await restore(d, action, 's-ws', { cwd: other });
      t.equal(res.status, 400, `${action} in another workspace`);
      t.same(res.body, {
        error:
          `Workspace mismatch: daemon is bound to ${JSON.stringify(ws)} but request asked for ${JSON.stringify(other)}. ` +
          `Each acpd daemon binds to exactly one workspace; start a separate daemon for ${JSON.stringify(other)} ` +
          '(or route the request to one via an orchestrator).',
        code: 'workspace_mismatch',
        boundWorkspace: ws,
        requestedWorkspace: other,
      });
    }
    t.equal(agentCalls(steer, 'session/load', 's-ws') + agentCalls(steer, 'session/resume', 's-ws'), 0);

    // cwd: the checks and texts of POST /session, in the same order.
    const cwdCases: [unknown, string][] = [
      ['relative/dir', '`cwd` must be an absolute path when provided'],
      ['', '`cwd` must be an absolute path when provided'],
      [42, '`cwd` must be a string absolute path when provided'],
      [null, '`cwd` must be a string absolute path when provided'],
      [['/'], '`cwd` must be a string absolute path when provided'],
      [`/${'a'.repeat(4096)}`, '`cwd` exceeds the 4096-character limit'],
      [`r${'a'.repeat(4096)}`, '`cwd` exceeds the 4096-character limit'],
    ];
    for (const [cwd, error] of cwdCases) {
      const created = await call(d, 'POST', '/session', { cwd });
      t.same(
        { status: created.status, body: created.body },
        { status: 400, body: { error } },
        `POST /session cwd=${JSON.stringify(cwd).slice(0, 20)}`,
      );
      for (const action of ['load', 'resume'] as const) {
        const res = await restore(d, action, 's-cwd', { cwd });
        t.same(
          { status: res.status, body: res.body },
          { status: 400, body: { error } },
          `${action} cwd=${JSON.stringify(cwd).slice(0, 20)}`,
        );
      }
    }
    t.equal(agentCalls(steer, 'session/load', 's-cwd') + agentCalls(steer, 'session/resume', 's-cwd'), 0);
    const ok = await restore(d, 'resume', 's-cwd', { cwd: ws });
    t.match(
      ok,
      { status: 200, body: { sessionId: 's-cwd', workspaceCwd: ws, attached: false } },
      'the bound workspace, spelled out, is fine',
    );
  },
);

t.test('rule 5: a restored session never becomes the default single-scope session', async (t) => {
  const { d } = await steerDaemon(t);
  t.match(await restore(d, 'load', 's1'), { status: 200, body: { sessionId: 's1', attached: false } });
  t.match(await restore(d, 'resume', 's2'), { status: 200, body: { sessionId: 's2', attached: false } });
  const created = await call(d, 'POST', '/session');
  t.equal(created.status, 200);
  const createdId = obj(created.body).sessionId;
  t.not(createdId, 's1');
  t.not(createdId, 's2');
  t.equal(obj(created.body).attached, false, 'POST /session after restores creates a new session');
  t.match(await call(d, 'POST', '/session', { sessionScope: 'single' }), {
    status: 200,
    body: { sessionId: createdId, attached: true },
  });
  t.equal(d.app.sessions.get('s1')?.attachCount, 0, 'nobody attached to the restored session');
});
