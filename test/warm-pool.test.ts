/**
 * The warm-session pool (`--warm-sessions N`, issue 6): sessions created ahead
 * of demand, handed out without waiting for the agent, refilled in the
 * background within the session cap, and dropped with their agent.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import type { FastifyInstance } from 'fastify';
import { Steer } from './fixtures/steer.js';
import { spinUntil } from '../harness/wait.js';
import { startDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { openEvents } from './support/sse.js';

function poolSize(app: FastifyInstance): number {
  return app.sessions.pool.size;
}

t.test('a create takes a warm session without waiting for the agent, and the pool refills', async (t) => {
  const steer = await Steer.create();
  t.teardown(() => steer.close());
  const d = await startDaemon(t, { agent: steer.argv, args: ['--warm-sessions', '1'] });
  t.equal(steer.pids.length, 0, 'the pool does not spawn an agent by itself');

  const first = await createSession(d, { sessionScope: 'thread' });
  await steer.seen('session/new');
  await steer.seen('session/new');
  await spinUntil(() => poolSize(d.app) === 1, 'one warm session in the pool');
  t.pass('one session/new for the create, one for the pool');
  const [warmId] = d.app.sessions.pool.sessionIds;

  // From now on the agent parks every session/new: a create that needed one would hang.
  await steer.hold(['session/new']);
  const second = await call(d, 'POST', '/session', { sessionScope: 'thread' });
  t.equal(second.status, 200, 'answered while the agent holds session/new');
  t.not(obj(second.body).sessionId, first);
  t.equal(obj(second.body).sessionId, warmId, 'the warm session was handed out');
  t.equal(obj(second.body).attached, false);
  const refill = await steer.nextCall('session/new');
  t.pass('the pool refills in the background');
  await refill.release();
  await spinUntil(() => poolSize(d.app) === 1, 'one warm session in the pool');
  t.equal(d.app.sessions.pool.stats.hits, 1);
});

t.test('what the agent says about a warm session before it is taken reaches its stream', async (t) => {
  const steer = await Steer.create();
  t.teardown(() => steer.close());
  const d = await startDaemon(t, { agent: steer.argv, args: ['--warm-sessions', '1'] });
  await createSession(d, { sessionScope: 'thread' });
  await spinUntil(() => poolSize(d.app) === 1, 'one warm session in the pool');
  const [warmId] = d.app.sessions.pool.sessionIds;
  if (warmId === undefined) throw new Error('no warm session');
  const agent = await steer.agent();
  await agent.notify(warmId, { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 'early' } });
  await spinUntil(() => d.app.channels.router.busFor(warmId)?.lastEventId === 1, 'the early update on the warm bus');

  const taken = await createSession(d, { sessionScope: 'thread' });
  t.equal(taken, warmId);
  const sse = await openEvents(t, d, taken, { lastEventId: 0 });
  const early = await sse.waitFor((f) => f.envelope?.id === 1);
  t.match(early.envelope?.data, { sessionId: warmId, update: { content: { text: 'early' } } });
});

t.test('the pool never passes the session cap', async (t) => {
  const steer = await Steer.create();
  t.teardown(() => steer.close());
  const d = await startDaemon(t, { agent: steer.argv, args: ['--warm-sessions', '3', '--max-sessions', '2'] });
  await createSession(d, { sessionScope: 'thread' });
  await spinUntil(() => poolSize(d.app) === 1, 'one warm session in the pool');
  await steer.seen('session/new');
  await steer.seen('session/new');
  t.equal(d.app.sessions.pool.size, 1, 'room for one warm session only');
  const second = await call(d, 'POST', '/session', { sessionScope: 'thread' });
  t.equal(second.status, 200);
  t.equal(poolSize(d.app), 0, 'at the cap the pool stays empty');
  const third = await call(d, 'POST', '/session', { sessionScope: 'thread' });
  t.equal(third.status, 503);
  t.equal(obj(third.body).code, 'session_limit_exceeded');
  // The agent saw exactly two session/new: nothing was refilled beyond the cap. (Its log can lag
  // the answers, but it cannot over-count, and two were already seen above.)
  t.equal(steer.log.filter((r) => r.method === 'session/new').length, 2, 'no refill beyond the cap');
});

t.test('the pool goes with its agent, and a warm session never keeps an agent alive', async (t) => {
  const steer = await Steer.create();
  t.teardown(() => steer.close());
  const d = await startDaemon(t, { agent: steer.argv, args: ['--warm-sessions', '1'] });
  const id = await createSession(d, { sessionScope: 'thread' });
  await spinUntil(() => poolSize(d.app) === 1, 'one warm session in the pool');
  const sse = await openEvents(t, d, id);
  const agent = await steer.agent();
  await agent.crash();
  await sse.ended;
  await spinUntil(() => d.app.channels.alive.size === 0, 'the crashed agent channel gone');
  t.equal(poolSize(d.app), 0, 'the warm session died with its agent');

  const next = await createSession(d, { sessionScope: 'thread' });
  t.equal(steer.pids.length, 2, 'a fresh agent for the next create');
  await spinUntil(() => poolSize(d.app) === 1, 'one warm session in the pool');
  const channel = d.app.sessions.get(next)?.channel;
  await d.app.sessions.killSession(next);
  await channel?.exited;
  t.equal(d.app.channels.alive.size, 0, 'the last real session leaving stops the agent despite the pool');
  t.equal(poolSize(d.app), 0);
});

t.test('warm sessions the user never prompted leave no file behind', async (t) => {
  // The embedded agent, which persists sessions: only the one that had a turn may reach its data dir.
  const d = await startDaemon(t, { args: ['--warm-sessions', '2'] });
  const id = await createSession(d, { sessionScope: 'thread' });
  await spinUntil(() => poolSize(d.app) === 2, 'two warm sessions in the pool');
  const warmIds = d.app.sessions.pool.sessionIds;
  const answer = await call(d, 'POST', `/session/${id}/prompt`, { prompt: [{ type: 'text', text: 'hello' }] });
  t.same(answer.body, { stopReason: 'end_turn' });

  // Closing the app stops the agent, which finishes its writes before it exits.
  await d.app.close();
  const files = readdirSync(path.join(d.config.dataDir, 'sessions'));
  t.same(files, [`${id}.json`], 'one file: the prompted session');
  t.equal(warmIds.length, 2);
  t.notOk(
    files.some((name) => warmIds.some((warm) => name.startsWith(warm))),
    'the warm sessions wrote nothing',
  );
});
