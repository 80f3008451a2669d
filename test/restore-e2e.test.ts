// Restoring persisted sessions end to end with the embedded agent (issue 3): a session created and
// prompted on one daemon comes back on the next one over the same workspace and data directory —
// `load` with its history, `resume` without — and again after its agent was killed. The event log is
// durable (SQLite), so each daemon's frames follow the previous one's: every stream below starts from
// the last id the session had before the step it checks. The log already holds the history a load
// replays, so the load answers it merged in `compactedReplay` instead of publishing it twice.
import t, { type Test } from 'tap';
import { within } from '../harness/wait.js';
import type { EventBus } from '../src/services/event-bus.js';
import { startDaemon, tempDir, type TestDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { isType, openEvents, type SseFrame, type SseStream } from './support/sse.js';
import { textPrompt } from './support/values.js';

type Envelope = NonNullable<SseFrame['envelope']>;

function updateOf(e: Envelope): Record<string, unknown> | undefined {
  if (e.type !== 'session_update') return undefined;
  const update = e.data.update;
  return typeof update === 'object' && update !== null && !Array.isArray(update) ? obj(update) : undefined;
}

function kindOf(e: Envelope): unknown {
  return updateOf(e)?.sessionUpdate;
}

/** The daemon's echo of a prompt (`_meta.source: "bridge-echo"`), as opposed to an agent's replay. */
function isEcho(e: Envelope): boolean {
  const meta = updateOf(e)?._meta;
  return typeof meta === 'object' && meta !== null && obj(meta).source === 'bridge-echo';
}

/** `compactedReplay` of a load answer, as envelopes. */
function compacted(body: unknown): Envelope[] {
  const list = obj(body).compactedReplay;
  return Array.isArray(list) ? (list as Envelope[]) : [];
}

function textOf(e: Envelope): string {
  const content = updateOf(e)?.content;
  if (typeof content !== 'object' || content === null || Array.isArray(content)) return '';
  const text = obj(content).text;
  return typeof text === 'string' ? text : '';
}

/** The text of the run of `kind` chunks that starts at the first one after `from`. */
function chunkRun(events: Envelope[], kind: string, from = 0): string {
  let text = '';
  let started = false;
  for (const e of events.slice(from)) {
    if (kindOf(e) === kind) {
      started = true;
      text += textOf(e);
    } else if (started && e.type === 'session_update') break;
  }
  return text;
}

/** Waits until the agent chunks seen so far contain `text`. */
async function waitForAgentText(sse: SseStream, text: string): Promise<void> {
  let seen = '';
  await within(
    sse.waitFor(
      (f) => {
        if (f.envelope && kindOf(f.envelope) === 'agent_message_chunk') seen += textOf(f.envelope);
        return seen.includes(text);
      },
      `agent text ${JSON.stringify(text)}`,
    ),
    `agent text ${JSON.stringify(text)}`,
  );
}

/** The bus of a live session (kept to read its last id once the session is gone). */
function busOf(d: TestDaemon, sessionId: string): EventBus {
  const session = d.app.sessions.get(sessionId);
  if (!session) throw new Error(`no live session ${sessionId}`);
  return session.events;
}

function restart(t: Test, workspace: string, dataDir: string): Promise<TestDaemon> {
  return startDaemon(t, { workspace, dataDir });
}

t.test(
  'end to end with the embedded agent: load replays, resume does not, unknown → 404, load after an agent crash',
  async (t) => {
    const workspace = tempDir(t, 'acpd-ws-');
    const dataDir = tempDir(t, 'acpd-data-');

    // 1. Create and prompt, then stop the daemon.
    const first = await restart(t, workspace, dataDir);
    const caps = obj((await call(first, 'GET', '/capabilities')).body);
    t.ok(Array.isArray(caps.features) && caps.features.includes('session_load'), 'session_load advertised');
    t.ok(
      Array.isArray(caps.features) && caps.features.includes('unstable_session_resume'),
      'unstable_session_resume advertised',
    );
    const id = await createSession(first);
    t.same((await call(first, 'POST', `/session/${id}/prompt`, textPrompt('hello world'))).body, {
      stopReason: 'end_turn',
    });
    const firstBus = busOf(first, id);
    await first.app.close();
    const endOfFirst = firstBus.lastEventId;

    // 2. A new daemon loads it: the history comes back in the answer, and the log has it from id 1.
    const second = await restart(t, workspace, dataDir);
    const loaded = await call(second, 'POST', `/session/${id}/load`, {});
    t.equal(loaded.status, 200);
    t.match(loaded.body, {
      sessionId: id,
      workspaceCwd: workspace,
      attached: false,
      state: { models: { currentModelId: 'acpd-echo' } },
      lastEventId: endOfFirst,
    });
    const restored = compacted(loaded.body);
    t.equal(chunkRun(restored, 'user_message_chunk'), 'hello world', 'the user turn, in the answer');
    t.equal(chunkRun(restored, 'agent_message_chunk'), 'echo: hello world', 'the agent turn, in the answer');
    const fromStart = await openEvents(t, second, id, { lastEventId: 0 });
    t.equal(fromStart.status, 200);
    await waitForAgentText(fromStart, 'echo: hello world');
    const logged = fromStart.events().filter((e) => e.id !== undefined);
    t.equal(logged[0]?.id, 1, 'the log holds the session from its first frame');
    t.equal(chunkRun(logged, 'user_message_chunk'), 'hello world', 'the prompt (its echo) is in the log');
    t.notOk(
      logged.some((e) => (e.id ?? 0) > endOfFirst && kindOf(e) === 'user_message_chunk'),
      'the load published no history again',
    );

    // Unknown ids are the contract's 404.
    const unknown = await call(second, 'POST', '/session/no-such-session/load', {});
    t.equal(unknown.status, 404);
    t.same(unknown.body, { error: 'No session with id "no-such-session"', sessionId: 'no-such-session' });
    const unknownResume = await call(second, 'POST', '/session/no-such-session/resume', {});
    t.same({ status: unknownResume.status, body: unknownResume.body }, { status: 404, body: unknown.body });
    const secondBus = busOf(second, id);
    await second.app.close();
    const endOfSecond = secondBus.lastEventId;

    // 3. Another daemon resumes it: context back, no history frames.
    const third = await restart(t, workspace, dataDir);
    const resumed = await call(third, 'POST', `/session/${id}/resume`, {});
    t.equal(resumed.status, 200);
    t.match(resumed.body, {
      sessionId: id,
      workspaceCwd: workspace,
      attached: false,
      state: { models: { currentModelId: 'acpd-echo' } },
    });
    const live = await openEvents(t, third, id, { lastEventId: endOfSecond });
    const history = await call(third, 'POST', `/session/${id}/prompt`, textPrompt('/history'));
    t.same(history.body, { stopReason: 'end_turn' });
    // Every frame of the turn is published before the prompt answers; wait until the stream has them all.
    const lastId = third.app.sessions.get(id)?.events.lastEventId ?? 0;
    await within(
      live.waitFor((f) => f.envelope?.id === lastId),
      `frame ${lastId}`,
    );
    // The numbered frames only: the stream also opens with replay_complete and session_state.
    const afterResume = live.events().filter((e) => e.id !== undefined);
    const answerAt = afterResume.findIndex((e) => kindOf(e) === 'agent_message_chunk');
    t.same(
      afterResume
        .slice(0, answerAt)
        .filter((e) => !isEcho(e))
        .map(kindOf)
        .filter((k) => k !== 'available_commands_update'),
      [],
      "before the new turn only available_commands_update and the prompt's echo, no replay",
    );
    t.notOk(
      afterResume.some((e) => kindOf(e) === 'user_message_chunk' && !isEcho(e)),
      'no user turn replayed',
    );
    t.match(
      chunkRun(afterResume, 'agent_message_chunk'),
      /1 earlier turn stored[\s\S]*1\. hello world/,
      'the agent has the context',
    );

    // 4. The agent dies; the session comes back by load, with both turns.
    const [channel] = [...third.app.channels.alive];
    const pid = channel?.pid;
    t.ok(pid, 'the agent runs');
    const thirdBus = busOf(third, id);
    if (pid !== undefined) process.kill(pid, 'SIGKILL');
    const died = await within(live.waitFor(isType('session_died')), 'session_died');
    t.match(died.envelope?.data, { sessionId: id, reason: 'channel_closed' });
    const endOfCrash = thirdBus.lastEventId;
    t.equal(third.app.sessions.get(id), undefined);
    const reloaded = await call(third, 'POST', `/session/${id}/load`, {});
    t.equal(reloaded.status, 200);
    t.match(reloaded.body, { sessionId: id, attached: false });
    t.not([...third.app.channels.alive][0]?.pid, pid, 'on a new agent');
    const users = compacted(reloaded.body)
      .filter((e) => kindOf(e) === 'user_message_chunk')
      .map(textOf);
    t.same(users, ['hello world', '/history'], 'both turns replayed, in the answer');
    t.equal(obj(reloaded.body).lastEventId, endOfCrash, 'ids go on after the crash');
    t.same((await call(third, 'POST', `/session/${id}/prompt`, textPrompt('back'))).body, { stopReason: 'end_turn' });
  },
);
