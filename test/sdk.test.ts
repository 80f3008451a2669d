/**
 * The published client (`@qwen-code/sdk/daemon`, used as shipped) against a
 * real acpd: every call goes over real HTTP, every event over real SSE, and
 * the embedded agent answers. When the SDK and acpd disagree, the assertion
 * that shows it stays in place.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import {
  DaemonClient,
  DaemonHttpError,
  DaemonSessionClient,
  asKnownDaemonEvent,
  reduceDaemonSessionEvents,
  requireWorkspaceCwd,
  type DaemonEvent,
} from '@qwen-code/sdk/daemon';
import { startDaemon, type Teardown, type TestDaemon } from './support/app.js';
import { rejection } from './support/rejections.js';
import { lastEventId } from './support/sse.js';

// ---- helpers ------------------------------------------------------------------

/**
 * A DaemonClient for the daemon, plus a way to know when an SSE subscription
 * is live: acpd registers the subscriber before it writes the response
 * headers, so a resolved events fetch means later events reach it.
 */
interface SdkHandle {
  client: DaemonClient;
  /** Resolves once `n` event streams (counted over the client's lifetime) have their headers. */
  streamsOpened: (n: number) => Promise<void>;
}

function sdkFor(d: TestDaemon): SdkHandle {
  let opened = 0;
  const watchers: { n: number; resolve: () => void }[] = [];
  const fetch: typeof globalThis.fetch = async (input, init) => {
    const res = await globalThis.fetch(input, init);
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (res.ok && new URL(url).pathname.endsWith('/events')) {
      opened++;
      for (let i = watchers.length - 1; i >= 0; i--) {
        const w = watchers[i];
        if (w && opened >= w.n) {
          watchers.splice(i, 1);
          w.resolve();
        }
      }
    }
    return res;
  };
  return {
    client: new DaemonClient({ baseUrl: d.baseUrl, fetch }),
    streamsOpened: (n) =>
      opened >= n ? Promise.resolve() : new Promise<void>((resolve) => watchers.push({ n, resolve })),
  };
}

/** What one `session.events()` subscription has received so far. */
interface Feed {
  /** The numbered events. */
  readonly events: DaemonEvent[];
  /** The id-less frames every stream opens with (replay_complete, session_state), which this SDK passes on as they are. */
  readonly opening: DaemonEvent[];
  /** The first event (already received or future) that matches; rejects if the stream ends first. */
  waitFor(match: (ev: DaemonEvent) => boolean, label: string): Promise<DaemonEvent>;
  /** Settles when the subscription is over. */
  readonly ended: Promise<void>;
  stop(): void;
}

function follow(t: Teardown, session: DaemonSessionClient, opts: { lastEventId?: number } = {}): Feed {
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const events: DaemonEvent[] = [];
  const opening: DaemonEvent[] = [];
  const waiters = new Set<{ match: (ev: DaemonEvent) => boolean; resolve: (ev: DaemonEvent) => void }>();
  /** How the stream failed, as text, when it ended with an error nobody asked for. */
  let failure: string | undefined;
  const ended = (async () => {
    try {
      for await (const ev of session.events({ ...opts, signal: ac.signal })) {
        (ev.id === undefined ? opening : events).push(ev);
        for (const w of [...waiters]) {
          if (w.match(ev)) {
            waiters.delete(w);
            w.resolve(ev);
          }
        }
      }
    } catch (err) {
      if (!ac.signal.aborted) failure = String(err);
    }
  })();
  return {
    events,
    opening,
    waitFor(match, label) {
      const found = events.find(match);
      if (found) return Promise.resolve(found);
      return new Promise<DaemonEvent>((resolve, reject) => {
        const w = { match, resolve };
        waiters.add(w);
        void ended.then(() => {
          // After a teardown abort nobody is waiting any more; stay quiet.
          if (waiters.delete(w) && !ac.signal.aborted) {
            const why = failure === undefined ? '' : ` (${failure})`;
            reject(new Error(`event stream ended before ${label}${why}; got ${events.map((e) => e.type).join(',')}`));
          }
        });
      });
    },
    ended,
    stop: () => ac.abort(),
  };
}

function record(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

/** The ACP update inside a `session_update` event. */
function updateOf(ev: DaemonEvent): Record<string, unknown> | undefined {
  return ev.type === 'session_update' ? record(record(ev.data)?.update) : undefined;
}

function updateKind(ev: DaemonEvent): string | undefined {
  const kind = updateOf(ev)?.sessionUpdate;
  return typeof kind === 'string' ? kind : undefined;
}

function textOf(ev: DaemonEvent): string {
  const text = record(updateOf(ev)?.content)?.text;
  return typeof text === 'string' ? text : '';
}

function agentText(events: DaemonEvent[]): string {
  return events
    .filter((e) => updateKind(e) === 'agent_message_chunk')
    .map(textOf)
    .join('');
}

// ---- 1. DaemonClient basics ------------------------------------------------------

t.test('DaemonClient: health, capabilities, create then attach, list', async (t) => {
  const d = await startDaemon(t);
  const { client } = sdkFor(d);

  t.same(await client.health(), { status: 'ok' });

  const caps = await client.capabilities();
  t.equal(caps.v, 1);
  t.equal(caps.mode, 'http-bridge');
  t.ok(caps.features.includes('session_events'), 'features advertise session_events');
  t.same(caps.modelServices, []);
  t.equal(requireWorkspaceCwd(caps), d.config.workspace, 'requireWorkspaceCwd returns the bound workspace');

  const first = await client.createOrAttachSession({});
  t.equal(first.attached, false, 'the first create spawns');
  t.equal(first.workspaceCwd, d.config.workspace);
  t.type(first.sessionId, 'string');
  const second = await client.createOrAttachSession({});
  t.equal(second.attached, true, 'the second create attaches (single scope)');
  t.equal(second.sessionId, first.sessionId);

  const listed = await client.listWorkspaceSessions(d.config.workspace);
  t.match(listed, [{ sessionId: first.sessionId, workspaceCwd: d.config.workspace, isLive: true, clientCount: 0 }]);
  t.equal(listed.length, 1);
});

// ---- 2. prompt and streamed events ------------------------------------------------

t.test('DaemonSessionClient: prompt streams echo chunks that the SDK recognises', async (t) => {
  const d = await startDaemon(t);
  const { client, streamsOpened } = sdkFor(d);
  const session = await DaemonSessionClient.createOrAttach(client);
  t.equal(session.attached, false);
  t.equal(session.workspaceCwd, d.config.workspace);

  const feed = follow(t, session);
  await streamsOpened(1);
  const result = await session.prompt({ prompt: [{ type: 'text', text: 'hello from the sdk' }] });
  t.same(result, { stopReason: 'end_turn' });

  // The answer comes only after the turn's last update is on the bus.
  const last = lastEventId(d, session.sessionId);
  await feed.waitFor((e) => e.id === last, `event ${last}`);

  const events = feed.events;
  t.same(
    feed.opening.map((e) => e.type),
    ['replay_complete', 'session_state'],
    'the stream opened with replay_complete and session_state',
  );
  t.equal(agentText(events), 'echo: hello from the sdk', 'the chunks join to the echo');
  t.ok(events.filter((e) => updateKind(e) === 'agent_message_chunk').length >= 2, 'the echo arrives in several chunks');
  for (const ev of events) {
    t.equal(asKnownDaemonEvent(ev), ev, `event ${ev.id ?? '?'} (${ev.type}) is a valid known event`);
    t.equal(ev.v, 1);
    const data = record(ev.data);
    if (ev.type === 'session_update')
      t.equal(data?.sessionId, session.sessionId, 'session_update carries the session id');
  }
  const ids = events.map((e) => e.id);
  t.same(
    ids,
    ids.map((_, i) => (ids[0] ?? 0) + i),
    'ids are consecutive',
  );

  const state = reduceDaemonSessionEvents(events);
  t.equal(state.unrecognizedKnownEventCount, 0);
  t.equal(state.alive, true);
  t.equal(state.lastEventId, last);
  t.equal(state.sessionId, session.sessionId);
});

// ---- 3. cancel ------------------------------------------------------------------

t.test('DaemonSessionClient: cancel mid-turn ends the prompt with cancelled', async (t) => {
  const d = await startDaemon(t);
  const { client, streamsOpened } = sdkFor(d);
  const session = await DaemonSessionClient.createOrAttach(client);
  const feed = follow(t, session);
  await streamsOpened(1);

  const turn = session.prompt({ prompt: [{ type: 'text', text: '/slow 50 100' }] });
  await feed.waitFor((e) => textOf(e).startsWith('slow 1/50'), 'the first slow chunk');
  await session.cancel();
  t.same(await turn, { stopReason: 'cancelled' });

  const slow = feed.events.filter((e) => textOf(e).startsWith('slow '));
  t.ok(slow.length < 50, `the turn stopped early (${slow.length} of 50 chunks)`);
});

t.test('DaemonSessionClient.prompt(signal): aborting the request makes the daemon cancel the turn', async (t) => {
  const d = await startDaemon(t);
  const { client, streamsOpened } = sdkFor(d);
  const session = await DaemonSessionClient.createOrAttach(client);
  const feed = follow(t, session);
  await streamsOpened(1);

  const ac = new AbortController();
  const aborted = rejection(session.prompt({ prompt: [{ type: 'text', text: '/slow 10000 100' }] }, ac.signal));
  await feed.waitFor((e) => textOf(e).startsWith('slow 1/10000'), 'the first slow chunk');
  ac.abort();
  const err = await aborted;
  t.equal(err instanceof Error ? err.name : String(err), 'AbortError', 'the SDK rejects with AbortError');

  // Prompts of a session run one at a time, so this one starts only after the aborted turn has ended;
  // without the daemon's cancel it would wait for all 10000 chunks.
  const mark = lastEventId(d, session.sessionId);
  t.same(await session.prompt({ prompt: [{ type: 'text', text: 'still here' }] }), { stopReason: 'end_turn' });
  const last = lastEventId(d, session.sessionId);
  await feed.waitFor((e) => e.id === last, `event ${last}`);
  // A last chunk of the cancelled turn may still land after the mark; only the new turn's text counts.
  const later = feed.events.filter((e) => (e.id ?? 0) > mark && !textOf(e).startsWith('slow '));
  t.equal(agentText(later), 'echo: still here');
  t.ok(feed.events.filter((e) => textOf(e).startsWith('slow ')).length < 10000, 'the slow turn stopped early');
});

// ---- 4. permission vote ------------------------------------------------------------

t.test('DaemonClient.respondToPermission: first vote wins and the write happens', async (t) => {
  const d = await startDaemon(t);
  const { client, streamsOpened } = sdkFor(d);
  const session = await DaemonSessionClient.createOrAttach(client);
  const feed = follow(t, session);
  await streamsOpened(1);

  const turn = session.prompt({ prompt: [{ type: 'text', text: '/write note.txt hi' }] });
  const request = await feed.waitFor((e) => e.type === 'permission_request', 'permission_request');
  t.equal(asKnownDaemonEvent(request), request, 'permission_request is valid for the SDK');
  const data = record(request.data);
  const requestId = data?.requestId;
  if (typeof requestId !== 'string') throw new Error('permission_request without a requestId');
  t.equal(data?.sessionId, session.sessionId);
  const options = Array.isArray(data?.options) ? data.options.map((o) => record(o)?.optionId) : [];
  t.same(options, ['allow', 'reject']);
  t.same(
    Object.keys(reduceDaemonSessionEvents(feed.events).pendingPermissions),
    [requestId],
    'the view state holds it as pending',
  );

  t.equal(await client.respondToPermission(requestId, { outcome: { outcome: 'selected', optionId: 'allow' } }), true);
  const resolved = await feed.waitFor(
    (e) => e.type === 'permission_resolved' && record(e.data)?.requestId === requestId,
    'permission_resolved',
  );
  t.equal(asKnownDaemonEvent(resolved), resolved, 'permission_resolved is valid for the SDK');
  t.same(record(resolved.data)?.outcome, { outcome: 'selected', optionId: 'allow' });
  t.same(await turn, { stopReason: 'end_turn' });
  t.equal(
    readFileSync(path.join(d.config.workspace, 'note.txt'), 'utf8'),
    'hi',
    'the file is written in the workspace',
  );

  t.equal(
    await client.respondToPermission(requestId, { outcome: { outcome: 'selected', optionId: 'reject' } }),
    false,
    'a late vote is refused',
  );

  const last = lastEventId(d, session.sessionId);
  await feed.waitFor((e) => e.id === last, `event ${last}`);
  const state = reduceDaemonSessionEvents(feed.events);
  t.same(state.pendingPermissions, {}, 'nothing is pending any more');
  // The late vote's permission_already_resolved names a request that is no longer pending: the SDK counts it.
  t.equal(state.unmatchedPermissionResolutionCount, 1);
  t.equal(state.lastUnmatchedPermissionResolutionId, requestId);
  t.equal(state.unrecognizedKnownEventCount, 0);
  t.match(agentText(feed.events), /wrote 2 bytes to note\.txt/);
});

// ---- 5. model switch ------------------------------------------------------------

t.test('DaemonClient.setSessionModel: model_switched, then the shout model answers', async (t) => {
  const d = await startDaemon(t);
  const { client, streamsOpened } = sdkFor(d);
  const session = await DaemonSessionClient.createOrAttach(client);
  const feed = follow(t, session);
  await streamsOpened(1);

  t.same(await client.setSessionModel(session.sessionId, 'acpd-shout'), {});
  const mark = lastEventId(d, session.sessionId);
  t.same(await session.prompt({ prompt: [{ type: 'text', text: 'quiet words' }] }), { stopReason: 'end_turn' });
  const last = lastEventId(d, session.sessionId);
  await feed.waitFor((e) => e.id === last, `event ${last}`);
  t.equal(agentText(feed.events.filter((e) => (e.id ?? 0) > mark)), 'ECHO: QUIET WORDS', 'the shout model answers');

  // The switch is announced before the model route answers, so it precedes the turn.
  const switched = feed.events.filter((e) => e.type === 'model_switched');
  t.equal(switched.length, 1, 'one model_switched event');
  const ev = switched[0];
  if (ev) {
    t.ok((ev.id ?? 0) <= mark, 'model_switched comes before the next turn');
    t.equal(asKnownDaemonEvent(ev), ev, 'model_switched is valid for the SDK');
    t.same(ev.data, { sessionId: session.sessionId, modelId: 'acpd-shout' });
  }

  const state = reduceDaemonSessionEvents(feed.events);
  t.equal(state.currentModelId, 'acpd-shout');
  t.equal(state.lastModelSwitchFailure, undefined);
});

// ---- 6. errors ------------------------------------------------------------------

t.test('DaemonHttpError: 404 for an unknown session, 400 for a relative cwd', async (t) => {
  const d = await startDaemon(t);
  const { client } = sdkFor(d);

  const unknown = await rejection(client.prompt('no-such-session', { prompt: [{ type: 'text', text: 'hi' }] }));
  t.ok(unknown instanceof DaemonHttpError, 'prompt on an unknown session throws DaemonHttpError');
  if (unknown instanceof DaemonHttpError) {
    t.equal(unknown.status, 404);
    t.match(record(unknown.body)?.error, /no-such-session/);
    t.match(unknown.message, /^POST \/session\/:id\/prompt: /);
  }

  const relative = await rejection(client.createOrAttachSession({ workspaceCwd: 'relative/dir' }));
  t.ok(relative instanceof DaemonHttpError, 'a relative workspaceCwd throws DaemonHttpError');
  if (relative instanceof DaemonHttpError) {
    t.equal(relative.status, 400);
    t.equal(record(relative.body)?.error, '`cwd` must be an absolute path when provided');
    t.equal(relative.message, 'POST /session: `cwd` must be an absolute path when provided');
  }

  const notStored = await rejection(DaemonSessionClient.load(client, 'never-existed'));
  t.ok(notStored instanceof DaemonHttpError && notStored.status === 404, 'loading an unknown id is a 404');
  t.equal(d.app.sessions.sessionCount, 0, 'no session was created by the failures');
});

// ---- 7. restore across daemons ----------------------------------------------------

t.test('DaemonSessionClient.load replays history on a new daemon; resume on a third does not', async (t) => {
  // The SDK seeds its cursor at 0 from a load answer, so with the durable log (ids going on across restarts)
  // it would replay the earlier daemons' frames too; this test is about the history a load replays, on a
  // daemon that starts with an empty ring. The durable log's restarts: epochs.test.ts, sqlite-event-log.test.ts.
  const memory = { args: ['--event-log', 'memory'] };
  const d1 = await startDaemon(t, memory);
  const sdk1 = sdkFor(d1);
  const original = await DaemonSessionClient.createOrAttach(sdk1.client);
  const sessionId = original.sessionId;
  t.same(await original.prompt({ prompt: [{ type: 'text', text: 'remember me' }] }), { stopReason: 'end_turn' });
  // The restart is the point of this test: the first daemon goes away now (teardown closes it again, a no-op).
  await d1.app.close();

  const d2 = await startDaemon(t, { ...memory, workspace: d1.config.workspace, dataDir: d1.config.dataDir });
  const sdk2 = sdkFor(d2);
  const loaded = await DaemonSessionClient.load(sdk2.client, sessionId);
  t.equal(loaded.sessionId, sessionId);
  t.equal(loaded.attached, false);
  t.equal(loaded.workspaceCwd, d2.config.workspace);
  t.equal(record(loaded.state.models)?.currentModelId, 'acpd-echo', "the agent's load answer is the session state");

  const head = lastEventId(d2, sessionId);
  t.ok(head >= 2, 'the history was published before the load answer');
  // The answer's lastEventId (after the replay) seeds the SDK's cursor: the history comes in the answer.
  t.equal(loaded.lastEventId, head, 'load seeds the cursor at the head');
  const replay = follow(t, loaded);
  await sdk2.streamsOpened(1);
  // A live turn after the subscription: once its last event is in, any replay has come before it.
  t.same(await loaded.prompt({ prompt: [{ type: 'text', text: 'back again' }] }), { stopReason: 'end_turn' });
  const afterLoad = lastEventId(d2, sessionId);
  await replay.waitFor((e) => e.id === afterLoad, `event ${afterLoad}`);
  t.equal(agentText(replay.events.filter((e) => (e.id ?? 0) > head)), 'echo: back again', 'the loaded session answers');
  t.notOk(
    replay.events.some((e) => (e.id ?? 0) <= head),
    'the stream starts after the history',
  );
  const history = loaded.replaySnapshot.compactedReplay;
  const user = history.filter((e) => updateKind(e) === 'user_message_chunk').map(textOf);
  t.same(user, ['remember me'], 'the user prompt is replayed');
  t.equal(agentText(history), 'echo: remember me', 'the echo is replayed');
  for (const ev of history) t.equal(asKnownDaemonEvent(ev), ev, `replayed ${ev.type} is a valid known event`);
  replay.stop();
  await replay.ended;
  await d2.app.close();

  const d3 = await startDaemon(t, { ...memory, workspace: d1.config.workspace, dataDir: d1.config.dataDir });
  const sdk3 = sdkFor(d3);
  const resumed = await DaemonSessionClient.resume(sdk3.client, sessionId);
  t.equal(resumed.sessionId, sessionId);
  t.equal(resumed.attached, false);
  t.equal(resumed.lastEventId, lastEventId(d3, sessionId), 'resume seeds the cursor at the head');
  const live = follow(t, resumed);
  await sdk3.streamsOpened(1);
  const mark = lastEventId(d3, sessionId);
  t.same(await resumed.prompt({ prompt: [{ type: 'text', text: 'after resume' }] }), { stopReason: 'end_turn' });
  const last = lastEventId(d3, sessionId);
  await live.waitFor((e) => e.id === last, `event ${last}`);

  const beforeTurn = live.events.filter((e) => (e.id ?? 0) <= mark);
  t.same(
    beforeTurn.map((e) => updateKind(e) ?? e.type),
    beforeTurn.length === 0 ? [] : ['available_commands_update'],
    'resume replays no history (at most the command list)',
  );
  t.equal(agentText(live.events), 'echo: after resume', 'a prompt works after resume');
  t.notOk(
    live.events.some((e) => textOf(e).includes('remember me')),
    'nothing of the old turn is replayed',
  );
});

// ---- 8. fan-out and Last-Event-ID ----------------------------------------------------

t.test('several DaemonSessionClients: each sees every frame; lastEventId=n replays exactly the rest', async (t) => {
  const d = await startDaemon(t);
  const { client, streamsOpened } = sdkFor(d);
  const a = await DaemonSessionClient.createOrAttach(client);
  const b = await DaemonSessionClient.createOrAttach(client);
  t.equal(a.attached, false);
  t.equal(b.attached, true);
  t.equal(b.sessionId, a.sessionId);
  const sessionId = a.sessionId;

  const feedA = follow(t, a);
  await streamsOpened(1);
  const feedB = follow(t, b);
  await streamsOpened(2);
  const mark = lastEventId(d, sessionId);

  t.same(await a.prompt({ prompt: [{ type: 'text', text: 'one two three four five' }] }), { stopReason: 'end_turn' });
  t.same(await b.prompt({ prompt: [{ type: 'text', text: 'six seven' }] }), { stopReason: 'end_turn' });
  const last = lastEventId(d, sessionId);
  await feedA.waitFor((e) => e.id === last, `A: event ${last}`);
  await feedB.waitFor((e) => e.id === last, `B: event ${last}`);

  const liveA = feedA.events.filter((e) => (e.id ?? 0) > mark);
  t.ok(liveA.length >= 2, 'the turn produced frames');
  t.same(feedB.events, liveA, 'B saw exactly the frames A saw while both were subscribed');
  t.same(
    liveA.map((e) => e.id),
    liveA.map((_, i) => mark + 1 + i),
    'no frame was skipped',
  );

  const n = liveA[Math.floor(liveA.length / 2)]?.id ?? mark;
  const c = await DaemonSessionClient.createOrAttach(client);
  t.equal(c.attached, true);
  const feedC = follow(t, c, { lastEventId: n });
  await streamsOpened(3);
  // One more turn that all three follow live: when it is in, C's replay is complete.
  t.same(await c.prompt({ prompt: [{ type: 'text', text: 'eight' }] }), { stopReason: 'end_turn' });
  const end = lastEventId(d, sessionId);
  await Promise.all(
    [feedA, feedB, feedC].map((f, i) => f.waitFor((e) => e.id === end, `${'ABC'[i] ?? '?'}: event ${end}`)),
  );
  t.same(
    feedC.events,
    feedA.events.filter((e) => (e.id ?? 0) > n),
    `lastEventId=${n} replays exactly the frames after ${n}, then follows live`,
  );
  t.same(
    feedB.events,
    feedA.events.filter((e) => (e.id ?? 0) > mark),
    'B still sees every frame A sees',
  );
});
