// Several acpd nodes on one Redis (issue 13), as apps in this process: each node has its own listener, its
// own Redis connections and its own agent processes (the steerable agent, so that races are ordered by
// parking agent calls), and they share a workspace and a data directory as a cluster's nodes do. What a
// node that dies with SIGKILL costs is in cluster.test.ts, with real processes behind nginx.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { RedisServer } from '../harness/redis.js';
import { until } from '../harness/wait.js';
import { Steer } from './fixtures/steer.js';
import { buildApp } from '../src/app.js';
import { hashToken } from '../src/services/tokens.js';
import { freePort } from '../harness/ports.js';
import { startDaemon, tempDir, testConfig, type TestDaemon } from './support/app.js';
import { call, createSession, obj, type JsonResponse } from './support/http.js';
import { isType, openEvents } from './support/sse.js';
import { SYSTEM_PACKAGES, requireSystemPackage } from './support/system-deps.js';
import { agentCalls, parked, restore } from './restore-kit.js';

const LEASE_TTL_S = 2;

interface Cluster {
  redis: RedisServer;
  steer: Steer;
  nodes: TestDaemon[];
  /** A plain Redis client for the test's own looks at the keys. */
  client: Redis;
}

async function cluster(
  t: Test,
  count: number,
  opts: { hold?: string[]; args?: string[]; nodeArgs?: (i: number) => string[] } = {},
): Promise<Cluster> {
  const redis = await RedisServer.start();
  t.teardown(() => redis.stop());
  const steer = await Steer.create({ hold: opts.hold });
  t.teardown(() => steer.close());
  const workspace = tempDir(t, 'acpd-cluster-ws-');
  const dataDir = tempDir(t, 'acpd-cluster-data-');
  const nodes: TestDaemon[] = [];
  for (let i = 1; i <= count; i++) {
    nodes.push(
      await startDaemon(t, {
        agent: steer.argv,
        workspace,
        dataDir,
        args: [
          '--redis-url',
          redis.url,
          '--node-id',
          `node-${i}`,
          '--lease-ttl',
          String(LEASE_TTL_S),
          ...(opts.args ?? []),
          ...(opts.nodeArgs?.(i) ?? []),
        ],
      }),
    );
  }
  const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  t.teardown(() => client.disconnect());
  return { redis, steer, nodes, client };
}

/** Which node owns `sessionId` (its index), from the nodes' own registries. */
function ownerIndex(c: Cluster, sessionId: string): number {
  const i = c.nodes.findIndex((d) => d.app.sessions.get(sessionId) !== undefined);
  if (i < 0) throw new Error(`no node runs ${sessionId}`);
  return i;
}

function retryAfter(res: JsonResponse): string | undefined {
  const value = res.headers['retry-after'];
  return Array.isArray(value) ? value[0] : value;
}

t.test('cluster nodes', async (t) => {
  if (!requireSystemPackage(t, SYSTEM_PACKAGES.redis)) return;

  t.test('a session runs on one node and is driven, followed and closed through another', async (t) => {
    const c = await cluster(t, 2);
    const [a, b] = c.nodes as [TestDaemon, TestDaemon];
    const sessionId = await createSession(a, { sessionScope: 'thread' });
    t.equal(ownerIndex(c, sessionId), 0, 'the node that created it runs it');
    t.notOk(b.app.sessions.get(sessionId), 'the other node does not');

    // Followed on both nodes: the same ids and the same epoch.
    const onA = await openEvents(t, a, sessionId);
    const onB = await openEvents(t, b, sessionId);
    t.equal(onB.status, 200, 'the other node serves its stream');
    t.equal(onB.headers['x-qwen-event-epoch'], onA.headers['x-qwen-event-epoch'], 'one epoch on every node');
    await onB.waitFor(isType('session_state'));
    const head = await request(`${b.baseUrl}/session/${sessionId}/events`, { method: 'HEAD', headers: b.headers });
    await head.body.dump();
    t.equal(head.statusCode, 200, 'HEAD on the other node too');
    t.equal(head.headers['x-qwen-event-epoch'], onA.headers['x-qwen-event-epoch']);

    // Prompted through the other node: forwarded to the owner, answered as the owner answers.
    const prompt = await call(b, 'POST', `/session/${sessionId}/prompt`, { prompt: [{ type: 'text', text: 'hello' }] });
    t.equal(prompt.status, 200, JSON.stringify(prompt.body));
    t.equal(obj(prompt.body).stopReason, 'end_turn');
    t.equal(b.app.cluster?.node.stats.forwarded, 1, 'the prompt was forwarded');
    await onA.waitFor(isType('turn_complete'));
    await onB.waitFor(isType('turn_complete'));
    const ids = (s: typeof onA) => s.events().flatMap((e) => (e.id === undefined ? [] : [e.id]));
    t.same(ids(onB), ids(onA), 'both streams carry the same numbered events');

    // Each node counts what it did, and both see the cluster as Redis holds it.
    const metrics = String((await call(b, 'GET', '/metrics')).body);
    t.match(metrics, /^acpd_cluster_forwards_total 1$/m, 'the forward, counted where it left');
    t.match(metrics, /^acpd_cluster_owned_sessions 0$/m, 'this node owns nothing');
    t.match(metrics, /^acpd_cluster_nodes 2$/m, 'two live nodes');
    t.match(metrics, /^acpd_cluster_sessions 1$/m, 'one session live in the cluster');
    t.match(metrics, /^acpd_cluster_redis_up 1$/m);
    t.match(String((await call(a, 'GET', '/metrics')).body), /^acpd_cluster_owned_sessions 1$/m, 'the owner owns it');

    // Its status through the other node is the owner's.
    const status = await call(b, 'GET', `/session/${sessionId}/status`);
    t.equal(status.status, 200);
    t.equal(obj(status.body).clientCount, 1, "the owner's count of its own streams");

    // Closed through the other node: both streams end with session_closed.
    const closed = await call(b, 'DELETE', `/session/${sessionId}`);
    t.equal(closed.status, 204);
    await onA.waitFor(isType('session_closed'));
    await onB.waitFor(isType('session_closed'));
    await onB.ended;
    const after = await call(b, 'GET', `/session/${sessionId}/events`);
    t.equal(after.status, 404, 'a closed session is not found on any node');
    await until(async () => (await c.client.exists(`acpd:s:{${sessionId}}:lease`)) === 0, 'lease released');
  });

  t.test('a permission request is voted on through a node that does not run the session', async (t) => {
    const c = await cluster(t, 2);
    const [a, b] = c.nodes as [TestDaemon, TestDaemon];
    const sessionId = await createSession(a, { sessionScope: 'thread' });
    const stream = await openEvents(t, b, sessionId);
    const agent = await c.steer.agent(0);
    const asked = agent.permission(sessionId, { toolCallId: 'tc-1', title: 'write a file' }, [
      { optionId: 'allow', name: 'Allow', kind: 'allow_once' },
    ]);
    const frame = await stream.waitFor(isType('permission_request'));
    const requestId = String(frame.envelope?.data.requestId);
    const optionId = String((frame.envelope?.data.options as { optionId: string }[])[0]?.optionId);
    const vote = await call(b, 'POST', `/permission/${requestId}`, { outcome: { outcome: 'selected', optionId } });
    t.equal(vote.status, 200, JSON.stringify(vote.body));
    t.same(await asked, { outcome: { outcome: 'selected', optionId } }, 'the agent got the vote');
    const again = await call(b, 'POST', `/permission/${requestId}`, { outcome: { outcome: 'selected', optionId } });
    t.equal(again.status, 404, 'a second vote finds nothing, as on one node');
  });

  t.test("a forwarded vote is judged by the client's user and address, not the forwarding node's", async (t) => {
    const tokens = path.join(tempDir(t, 'acpd-cluster-tokens-'), 'tokens.yaml');
    const user = (name: string) =>
      `  - name: ${name}\n    tokens: ["${hashToken(`tok-${name}`)}"]\n    scopes: [admin]\n`;
    writeFileSync(tokens, `users:\n${user('alice')}${user('bob')}`);
    // Node 2 sits behind a proxy on this machine and believes its X-Forwarded-For; node 1 believes nobody,
    // so a request node 2 forwards reaches node 1 from loopback whoever its client is.
    const c = await cluster(t, 2, {
      args: ['--tokens-file', tokens, '--permission-policy', 'local-only'],
      nodeArgs: (i) => (i === 2 ? ['--trust-proxy', '127.0.0.1'] : []),
    });
    const [a, b] = c.nodes as [TestDaemon, TestDaemon];
    const as = (d: TestDaemon, name: string, extra: Record<string, string> = {}) => ({
      baseUrl: d.baseUrl,
      headers: { authorization: `Bearer tok-${name}`, ...extra },
    });
    const sessionId = String(
      obj((await call(as(a, 'alice'), 'POST', '/session', { sessionScope: 'thread' })).body).sessionId,
    );
    t.ok(a.app.sessions.get(sessionId), 'node 1 runs the session');
    const stream = await openEvents(t, as(a, 'alice'), sessionId);
    const agent = await c.steer.agent(0);
    const asked = agent.permission(sessionId, { toolCallId: 'tc-1', title: 'write a file' }, [
      { optionId: 'allow', name: 'Allow', kind: 'allow_once' },
    ]);
    const frame = await stream.waitFor(isType('permission_request'));
    const requestId = String(frame.envelope?.data.requestId);
    const allow = { outcome: { outcome: 'selected', optionId: 'allow' } };

    // A remote client through node 2, claiming to be loopback and alice in the headers nodes use between them.
    const forged = { 'x-acpd-client-ip': '127.0.0.1', 'x-acpd-client-user': 'alice', 'x-forwarded-for': '203.0.113.7' };
    const remote = await call(as(b, 'bob', forged), 'POST', `/permission/${requestId}`, allow);
    t.match([remote.status, remote.body], [403, { code: 'vote_not_allowed', policy: 'local-only' }], 'remote: refused');
    // The same headers sent straight to the owner, without the cluster's secret, are not believed either.
    const direct = await call(
      as(a, 'bob', { 'x-acpd-client-user': 'alice' }),
      'POST',
      `/permission/${requestId}`,
      allow,
    );
    t.equal(direct.status, 200, 'a loopback client of node 1 votes');
    t.same(await asked, allow);
    const resolved = await stream.waitFor(isType('permission_resolved'));
    t.match(resolved.envelope?.data, { votes: [{ user: 'bob' }], _meta: { user: 'bob' } }, 'as bob, not alice');

    // Through node 2 from a client on this machine: counted, as bob.
    const again = agent.permission(sessionId, { toolCallId: 'tc-2', title: 'write another' }, [
      { optionId: 'allow', name: 'Allow', kind: 'allow_once' },
    ]);
    const second = await stream.waitFor(
      (f) => isType('permission_request')(f) && f.envelope?.data.requestId !== requestId,
      'the second permission_request',
    );
    const local = await call(
      as(b, 'bob', { 'x-forwarded-for': '127.0.0.2', 'x-acpd-client-user': 'alice' }),
      'POST',
      `/permission/${String(second.envelope?.data.requestId)}`,
      allow,
    );
    t.equal(local.status, 200, 'a loopback client of node 2 votes through it');
    t.same(await again, allow);
    const settled = await stream.waitFor(
      (f) => isType('permission_resolved')(f) && f.envelope?.data.requestId === second.envelope?.data.requestId,
      'the second permission_resolved',
    );
    t.match(settled.envelope?.data, { votes: [{ user: 'bob' }], _meta: { user: 'bob' } }, 'still as bob');
  });

  t.test('restores racing on three nodes: one agent call for one action, 409 for the other', async (t) => {
    const c = await cluster(t, 3, { hold: ['session/load'] });
    const [a, b, third] = c.nodes as [TestDaemon, TestDaemon, TestDaemon];
    const first = restore(a, 'load', 's1');
    const held = await parked(c.steer, 'session/load', first);
    // Node a holds the lease while its agent loads: the others send their restores there.
    const joined = restore(b, 'load', 's1');
    await until(() => a.app.restores.stats.coalesced === 1, 'the second restore joined the first');
    const conflict = await restore(third, 'resume', 's1');
    t.equal(conflict.status, 409, JSON.stringify(conflict.body));
    t.match(obj(conflict.body), {
      code: 'restore_in_progress',
      sessionId: 's1',
      activeAction: 'load',
      requestedAction: 'resume',
    });
    t.ok(retryAfter(conflict), 'with Retry-After');
    await c.steer.unhold(['session/load']);
    await held.release();
    const [one, two] = await Promise.all([first, joined]);
    t.equal(one.status, 200);
    t.equal(two.status, 200, JSON.stringify(two.body));
    t.same(
      [obj(one.body).attached, obj(two.body).attached].sort(),
      [false, true],
      'one caller restored it, the other attached',
    );
    t.same(obj(two.body).state, obj(one.body).state, 'the same state');
    t.equal(agentCalls(c.steer, 'session/load'), 1, 'one agent call in the whole cluster');
    t.equal(ownerIndex(c, 's1'), 0);
  });

  // Before the lease is taken, a restore is only a claim in Redis (`s:{sid}:restore`). The test writes
  // node a's claim itself, so that the other nodes meet it in exactly that window.
  async function claimAsNode(c: Cluster, d: TestDaemon, sessionId: string, action: 'load' | 'resume') {
    const instance = d.app.cluster?.node.instance;
    await c.client.set(`acpd:s:{${sessionId}}:restore`, JSON.stringify({ action, instance }), 'PX', 30_000);
  }

  t.test('a restore claimed by another node: the same action waits for it, another gets 409', async (t) => {
    const c = await cluster(t, 3);
    const [a, b, third] = c.nodes as [TestDaemon, TestDaemon, TestDaemon];
    await claimAsNode(c, a, 's2', 'load');
    const joined = restore(b, 'load', 's2');
    await until(() => (b.app.cluster?.node.stats.restoreJoins ?? 0) > 0, 'the second node waits on the claim');
    const conflict = await restore(third, 'resume', 's2');
    t.equal(conflict.status, 409, JSON.stringify(conflict.body));
    t.match(obj(conflict.body), { code: 'restore_in_progress', activeAction: 'load', requestedAction: 'resume' });
    t.ok(retryAfter(conflict), 'with Retry-After');
    const first = await restore(a, 'load', 's2');
    t.equal(first.status, 200, JSON.stringify(first.body));
    const second = await joined;
    t.equal(second.status, 200, JSON.stringify(second.body));
    t.same([obj(first.body).attached, obj(second.body).attached], [false, true]);
    t.equal(agentCalls(c.steer, 'session/load'), 1, 'one agent call');
    t.equal(await c.client.exists('acpd:s:{s2}:restore'), 0, 'the claim is gone');
  });

  t.test('a failed restore is answered to the node that waited on it, without a second agent call', async (t) => {
    const c = await cluster(t, 2, { hold: ['session/load'] });
    const [a, b] = c.nodes as [TestDaemon, TestDaemon];
    await claimAsNode(c, a, 'missing', 'load');
    const joined = restore(b, 'load', 'missing');
    await until(() => (b.app.cluster?.node.stats.restoreJoins ?? 0) > 0, 'the second node waits on the claim');
    const first = restore(a, 'load', 'missing');
    const held = await parked(c.steer, 'session/load', first);
    await c.steer.unhold(['session/load']);
    await held.fail({ code: -32002, message: 'Resource not found: session:missing', data: { uri: 'session:missing' } });
    const [one, two] = await Promise.all([first, joined]);
    t.equal(one.status, 404);
    t.equal(two.status, 404, 'the waiting node gets the same answer');
    t.same(two.body, one.body);
    t.equal(agentCalls(c.steer, 'session/load'), 1);
  });

  t.test('a keyed prompt retried through another node is answered from its receipt, not run again', async (t) => {
    const c = await cluster(t, 2);
    const [a, b] = c.nodes as [TestDaemon, TestDaemon];
    const sessionId = await createSession(a, { sessionScope: 'thread' });
    const body = { prompt: [{ type: 'text', text: 'once' }] };
    const first = await call(b, 'POST', `/session/${sessionId}/prompt`, body, { 'idempotency-key': 'k-once' });
    t.equal(first.status, 200, JSON.stringify(first.body));
    const retry = await call(a, 'POST', `/session/${sessionId}/prompt`, body, { 'idempotency-key': 'k-once' });
    t.equal(retry.status, 200);
    t.equal(retry.headers['idempotent-replayed'], 'true', 'replayed from the receipt the first node kept');
    t.same(retry.body, first.body);
    t.equal(agentCalls(c.steer, 'session/prompt'), 1, 'the agent ran it once');
  });

  t.test('a forwarded prompt whose owner went away mid-turn: its retry is told, never run again', async (t) => {
    const c = await cluster(t, 2, { hold: ['session/prompt'] });
    const [a, b] = c.nodes as [TestDaemon, TestDaemon];
    const sessionId = await createSession(a, { sessionScope: 'thread' });
    const body = { prompt: [{ type: 'text', text: 'maybe' }] };
    const first = call(b, 'POST', `/session/${sessionId}/prompt`, body, { 'idempotency-key': 'k-maybe' });
    await parked(c.steer, 'session/prompt', first);
    // The owner's connections drop while its agent runs the prompt: the forwarding node cannot know
    // whether it took effect.
    a.app.server.closeAllConnections();
    const lost = await first;
    t.equal(lost.status, 503, JSON.stringify(lost.body));
    t.equal(obj(lost.body).code, 'session_owner_unavailable');
    const retry = await call(b, 'POST', `/session/${sessionId}/prompt`, body, { 'idempotency-key': 'k-maybe' });
    t.equal(retry.status, 409, JSON.stringify(retry.body));
    t.equal(obj(retry.body).code, 'idempotency_key_interrupted');
    t.equal(agentCalls(c.steer, 'session/prompt'), 1, 'the prompt reached the agent once');
  });

  t.test('the session cap holds across the cluster', async (t) => {
    const c = await cluster(t, 2, { args: ['--max-sessions', '2'] });
    const [a, b] = c.nodes as [TestDaemon, TestDaemon];
    await createSession(a, { sessionScope: 'thread' });
    await createSession(b, { sessionScope: 'thread' });
    const third = await call(a, 'POST', '/session', { sessionScope: 'thread' });
    t.equal(third.status, 503, JSON.stringify(third.body));
    t.equal(obj(third.body).code, 'session_limit_exceeded');
  });

  t.test('the single-scope default session is one for the whole cluster', async (t) => {
    const c = await cluster(t, 2);
    const [a, b] = c.nodes as [TestDaemon, TestDaemon];
    const [one, two] = await Promise.all([call(a, 'POST', '/session', {}), call(b, 'POST', '/session', {})]);
    t.equal(one.status, 200, JSON.stringify(one.body));
    t.equal(two.status, 200, JSON.stringify(two.body));
    t.equal(obj(one.body).sessionId, obj(two.body).sessionId, 'both clients share one session');
    t.same([obj(one.body).attached, obj(two.body).attached].sort(), [false, true]);
    t.equal(agentCalls(c.steer, 'session/new'), 1, 'one agent session');
  });

  t.test('the default session outlives the node that ran it: the next create attaches to it elsewhere', async (t) => {
    const c = await cluster(t, 2);
    const [a, b] = c.nodes as [TestDaemon, TestDaemon];
    const first = await call(a, 'POST', '/session', {});
    t.equal(first.status, 200);
    const sessionId = String(obj(first.body).sessionId);
    const prompt = await call(a, 'POST', `/session/${sessionId}/prompt`, { prompt: [{ type: 'text', text: 'hi' }] });
    t.equal(prompt.status, 200);
    await a.app.close();
    const again = await call(b, 'POST', '/session', {});
    t.equal(again.status, 200, JSON.stringify(again.body));
    t.equal(obj(again.body).sessionId, sessionId, 'the same default session');
    t.equal(obj(again.body).attached, true, 'attached, not created');
    t.ok(b.app.sessions.get(sessionId), 'now run by the other node');
    t.equal(agentCalls(c.steer, 'session/new'), 1, 'no second agent session');
  });

  t.test('a node that shuts down hands its sessions over; streams keep their cursor and epoch', async (t) => {
    const c = await cluster(t, 2);
    const [a, b] = c.nodes as [TestDaemon, TestDaemon];
    const sessionId = await createSession(a, { sessionScope: 'thread' });
    const first = await call(a, 'POST', `/session/${sessionId}/prompt`, { prompt: [{ type: 'text', text: 'one' }] });
    t.equal(first.status, 200);
    const onB = await openEvents(t, b, sessionId);
    await onB.waitFor(isType('session_state'));
    const epoch = onB.headers['x-qwen-event-epoch'];
    const before = onB.events().flatMap((e) => (e.id === undefined ? [] : [e.id]));

    await a.app.close();
    t.notOk(
      onB.frames.some((f) => f.envelope?.type === 'session_died'),
      'the session did not die with the node that ran it',
    );
    // The next request takes it over on the node it reaches.
    const second = await call(b, 'POST', `/session/${sessionId}/prompt`, { prompt: [{ type: 'text', text: 'two' }] });
    t.equal(second.status, 200, JSON.stringify(second.body));
    t.ok(b.app.sessions.get(sessionId), 'the other node runs it now');
    t.equal(b.app.cluster?.node.stats.takeovers, 1);
    await onB.waitFor(
      (f) =>
        f.envelope?.type === 'turn_complete' && f.envelope.id !== undefined && f.envelope.id > (before.at(-1) ?? 0),
    );
    const ids = onB.events().flatMap((e) => (e.id === undefined ? [] : [e.id]));
    t.same(
      ids,
      Array.from({ length: ids.length }, (_, i) => (ids[0] ?? 1) + i),
      'one stream, dense ids across the handover',
    );
    const again = await openEvents(t, b, sessionId, {
      lastEventId: before.at(-1) ?? 0,
      headers: { 'x-qwen-event-epoch': String(epoch) },
    });
    t.equal(again.headers['x-qwen-event-epoch'], epoch, 'the same epoch on the new owner');
    await again.waitFor(isType('replay_complete'));
    t.notOk(
      again.frames.some((f) => f.envelope?.type === 'state_resync_required'),
      'the old cursor is good',
    );
  });

  t.test('a session no agent can bring back is ended for everyone: session_died node_lost, then 404', async (t) => {
    const c = await cluster(t, 2);
    const [a, b] = c.nodes as [TestDaemon, TestDaemon];
    const sessionId = await createSession(a, { sessionScope: 'thread' });
    const onB = await openEvents(t, b, sessionId);
    await onB.waitFor(isType('session_state'));
    await a.app.close();
    await c.steer.hold(['session/resume']);
    const prompt = call(b, 'POST', `/session/${sessionId}/prompt`, { prompt: [{ type: 'text', text: 'lost?' }] });
    const resume = await parked(c.steer, 'session/resume', prompt);
    await resume.fail({
      code: -32002,
      message: `Resource not found: session:${sessionId}`,
      data: { uri: `session:${sessionId}` },
    });
    const answer = await prompt;
    t.equal(answer.status, 404, JSON.stringify(answer.body));
    const died = await onB.waitFor(isType('session_died'));
    t.equal(died.envelope?.data.reason, 'node_lost', 'its followers are told why');
    await onB.ended;
    const again = await call(b, 'POST', `/session/${sessionId}/prompt`, { prompt: [{ type: 'text', text: 'lost?' }] });
    t.equal(again.status, 404, 'it stays gone');
    t.equal(agentCalls(c.steer, 'session/resume'), 1, 'nobody tries to bring it back again');
    const listed = await call(b, 'GET', `/workspace/${encodeURIComponent(b.config.workspace)}/sessions`);
    const entry = (obj(listed.body).sessions as { sessionId: string; isLive?: boolean }[]).find(
      (s) => s.sessionId === sessionId,
    );
    t.equal(entry?.isLive, false, 'the catalog shows it ended');
  });

  t.test('a node whose lease was taken stops writing: its writes are fenced', async (t) => {
    const c = await cluster(t, 2);
    const [a] = c.nodes as [TestDaemon, TestDaemon];
    const sessionId = await createSession(a, { sessionScope: 'thread' });
    const stream = await openEvents(t, a, sessionId);
    await stream.waitFor(isType('session_state'));
    const lastBefore = await c.client.xrevrange(`acpd:s:{${sessionId}}:events`, '+', '-', 'COUNT', 1);
    // Another node took the lease (as after a pause longer than the TTL): a newer token.
    await c.client.hset(`acpd:s:{${sessionId}}:lease`, 'holder', 'node-x/other', 'node', 'node-x', 'token', '999');
    const agent = await c.steer.agent(0);
    await agent.notify(sessionId, { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 'late' } });
    await stream.ended;
    const lastAfter = await c.client.xrevrange(`acpd:s:{${sessionId}}:events`, '+', '-', 'COUNT', 1);
    t.same(lastAfter, lastBefore, 'nothing was written under the stale token');
    await until(() => a.app.sessions.get(sessionId) === undefined, 'the node gave the session up');
  });

  t.test('a node that cannot reach Redis at start-up does not start, and says why', async (t) => {
    const port = await freePort();
    const config = testConfig(t, { args: ['--redis-url', `redis://127.0.0.1:${port}`] });
    await t.rejects(buildApp(config), /cannot reach Redis at --redis-url: connect ECONNREFUSED/);
  });

  t.test('Redis lost: not ready, new work refused with 503; back: ready, sessions work', async (t) => {
    const c = await cluster(t, 1);
    const [a] = c.nodes as [TestDaemon];
    const sessionId = await createSession(a, { sessionScope: 'thread' });
    await c.redis.kill();
    const refused = await until(async () => {
      const res = await call(a, 'POST', '/session', { sessionScope: 'thread' });
      return res.status === 503 ? res : undefined;
    }, 'new work refused');
    t.equal(obj(refused.body).code, 'redis_unavailable');
    t.ok(retryAfter(refused));
    const notReady = await until(async () => {
      const res = await call(a, 'GET', '/readyz');
      return res.status === 503 ? res : undefined;
    }, 'not ready');
    t.equal(obj(obj(notReady.body).checks).redis, 'unreachable');
    await c.redis.restart();
    await until(async () => (await call(a, 'GET', '/readyz')).status === 200, 'ready again', {
      ms: 20_000,
      everyMs: 50,
    });
    const prompt = await call(a, 'POST', `/session/${sessionId}/prompt`, { prompt: [{ type: 'text', text: 'back' }] });
    t.equal(prompt.status, 200, JSON.stringify(prompt.body));
  });
});
