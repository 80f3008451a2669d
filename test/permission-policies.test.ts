// Permission policies (--permission-policy): whose vote settles a permission request, decided by the user of
// the bearer token that cast it, so no client can vote as somebody else. Frames say which policy decided and
// who voted; /capabilities.policy advertises it.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { client } from '@agentclientprotocol/sdk';
import { createHttpStream } from '@agentclientprotocol/sdk/experimental/http-client';
import { hashToken } from '../src/services/tokens.js';
import { steerDaemon, tempDir, type Endpoint, type TestDaemon } from './support/app.js';
import { call, obj } from './support/http.js';
import { isType, openEvents } from './support/sse.js';
import { textPrompt } from './support/values.js';

/** Three voters and one who may not vote at all; the token of each is `tok-<name>`. */
const USERS: Record<string, string[]> = {
  alice: ['read', 'prompt', 'approve'],
  bob: ['read', 'prompt', 'approve'],
  carol: ['read', 'approve'],
  dave: ['read', 'prompt'],
};

function tokensYaml(): string {
  const lines = ['users:'];
  for (const [name, scopes] of Object.entries(USERS)) {
    lines.push(
      `  - name: ${name}`,
      `    tokens: ["${hashToken(`tok-${name}`)}"]`,
      `    scopes: [${scopes.join(', ')}]`,
    );
  }
  return lines.join('\n') + '\n';
}

function as(d: TestDaemon, user: string, extra: Record<string, string> = {}): Endpoint {
  return { baseUrl: d.baseUrl, headers: { authorization: `Bearer tok-${user}`, ...extra } };
}

async function policyDaemon(t: Test, args: string[]) {
  const dir = tempDir(t, 'acpd-policy-');
  const file = path.join(dir, 'tokens.yaml');
  writeFileSync(file, tokensYaml());
  return steerDaemon(t, { args: ['--tokens-file', file, ...args] });
}

const OPTIONS = [
  { optionId: 'allow', name: 'Allow', kind: 'allow_once' as const },
  { optionId: 'deny', name: 'Deny', kind: 'reject_once' as const },
];
const ALLOW = { outcome: { outcome: 'selected' as const, optionId: 'allow' } };
const DENY = { outcome: { outcome: 'selected' as const, optionId: 'deny' } };

/**
 * A session created by alice, with every user's events stream open (so all are attached), a prompt by
 * `originator` held in the agent, and the agent asking for permission during that turn.
 */
async function askDuringTurn(t: Test, args: string[], originator = 'alice') {
  const { d, steer } = await policyDaemon(t, args);
  const id = String(obj((await call(as(d, 'alice'), 'POST', '/session', {})).body).sessionId);
  const events = await openEvents(t, as(d, 'carol'), id);
  await events.waitFor(isType('session_state'), 'session_state');
  await steer.hold(['session/prompt']);
  const turn = call(as(d, originator), 'POST', `/session/${id}/prompt`, textPrompt('edit a file'));
  const held = await steer.nextCall('session/prompt');
  const agent = await steer.agent(0);
  const answer = agent.permission(id, { toolCallId: 'tc-1', title: 'write' }, OPTIONS);
  const asked = await events.waitFor(isType('permission_request'), 'permission_request');
  const requestId = String(asked.envelope?.data.requestId);
  const finish = async () => {
    await held.release({ stopReason: 'end_turn' });
    await turn;
  };
  return { d, steer, id, events, answer, asked: asked.envelope?.data ?? {}, requestId, finish };
}

t.test('/capabilities.policy names the policy and the quorum', async (t) => {
  const { d } = await policyDaemon(t, ['--permission-policy', 'consensus', '--consensus-quorum', '2']);
  const caps = await call(as(d, 'carol'), 'GET', '/capabilities');
  t.same(obj(caps.body).policy, { name: 'consensus', consensusQuorum: 2 });
});

t.test('designated: only the user whose prompt the turn runs may answer', async (t) => {
  const { d, events, answer, asked, requestId, finish } = await askDuringTurn(t, ['--permission-policy', 'designated']);
  t.match(asked, { policy: 'designated', originator: 'alice' }, 'the request says who decides');

  const other = await call(as(d, 'bob'), 'POST', `/permission/${requestId}`, ALLOW);
  t.equal(other.status, 403, 'another approver is refused');
  t.match(other.body, { code: 'vote_not_allowed', policy: 'designated', requestId });
  // Claiming the originator's client id does not help: it is bound to her, and the token decides who votes.
  t.equal((await call(as(d, 'alice', { 'x-qwen-client-id': 'alice-laptop' }), 'GET', '/capabilities')).status, 200);
  const spoof = await call(as(d, 'bob', { 'x-qwen-client-id': 'alice-laptop' }), 'POST', `/permission/${requestId}`, {
    ...ALLOW,
  });
  t.match([spoof.status, spoof.body], [403, { code: 'client_id_taken' }], "bob cannot vote as alice's client");

  const own = await call(as(d, 'alice', { 'x-qwen-client-id': 'alice-laptop' }), 'POST', `/permission/${requestId}`, {
    ...DENY,
  });
  t.equal(own.status, 200, 'the originator answers');
  t.same(await answer, DENY, 'the agent gets her answer');
  const resolved = await events.waitFor(isType('permission_resolved'), 'permission_resolved');
  t.match(resolved.envelope?.data, {
    requestId,
    policy: 'designated',
    votes: [{ user: 'alice', outcome: 'selected', optionId: 'deny' }],
    _meta: { user: 'alice', clientId: 'alice-laptop' },
  });
  await finish();
});

t.test('designated: the originator is the prompt sender, not the session creator', async (t) => {
  const { d, answer, asked, requestId, finish } = await askDuringTurn(t, ['--permission-policy', 'designated'], 'bob');
  t.match(asked, { policy: 'designated', originator: 'bob' });
  t.equal((await call(as(d, 'alice'), 'POST', `/permission/${requestId}`, ALLOW)).status, 403, 'the creator may not');
  t.equal((await call(as(d, 'bob'), 'POST', `/permission/${requestId}`, ALLOW)).status, 200, 'the prompter may');
  t.same(await answer, ALLOW);
  await finish();
});

t.test('consensus (quorum 2): one vote per user, whatever client it comes from', async (t) => {
  const { d, events, answer, asked, requestId, finish } = await askDuringTurn(t, [
    '--permission-policy',
    'consensus',
    '--consensus-quorum',
    '2',
  ]);
  t.match(asked, { policy: 'consensus', quorum: 2 });

  const first = await call(as(d, 'alice', { 'x-qwen-client-id': 'a-1' }), 'POST', `/permission/${requestId}`, ALLOW);
  t.equal(first.status, 200, 'the first vote counts');
  const tally = await events.waitFor(isType('permission_vote'), 'permission_vote');
  t.match(tally.envelope?.data, { requestId, policy: 'consensus', quorum: 2, votes: [{ user: 'alice' }] });

  const again = await call(as(d, 'alice', { 'x-qwen-client-id': 'a-2' }), 'POST', `/permission/${requestId}`, ALLOW);
  t.equal(again.status, 403, 'the same user from a second client id does not count twice');
  t.match(again.body, { code: 'vote_already_cast', policy: 'consensus', user: 'alice' });
  const sameClient = await call(as(d, 'alice', { 'x-qwen-client-id': 'a-1' }), 'POST', `/permission/${requestId}`, {
    ...ALLOW,
  });
  t.equal(sameClient.status, 403, 'nor from the same one');

  const noScope = await call(as(d, 'dave'), 'POST', `/permission/${requestId}`, ALLOW);
  t.match([noScope.status, noScope.body], [403, { code: 'insufficient_scope', scope: 'approve' }]);

  // A different option does not add to alice's.
  t.equal((await call(as(d, 'bob'), 'POST', `/permission/${requestId}`, DENY)).status, 200, 'bob differs');
  const second = await events.waitFor(
    (f) => isType('permission_vote')(f) && (f.envelope?.data.votes as unknown[]).length === 2,
    'second permission_vote',
  );
  t.match(second.envelope?.data.votes, [{ user: 'alice' }, { user: 'bob', optionId: 'deny' }], 'still open');

  t.equal((await call(as(d, 'carol'), 'POST', `/permission/${requestId}`, ALLOW)).status, 200, 'carol agrees');
  t.same(await answer, ALLOW, 'the first option two users chose');
  const resolved = await events.waitFor(isType('permission_resolved'), 'permission_resolved');
  t.match(resolved.envelope?.data, {
    requestId,
    outcome: ALLOW.outcome,
    policy: 'consensus',
    votes: [
      { user: 'alice', optionId: 'allow' },
      { user: 'bob', optionId: 'deny' },
      { user: 'carol', optionId: 'allow' },
    ],
  });
  const late = await call(as(d, 'bob'), 'POST', `/permission/${requestId}`, ALLOW);
  t.equal(late.status, 404, 'settled: later votes find nothing');
  await finish();
});

t.test('local-only: a client that is not on loopback may not answer', async (t) => {
  const { d, events, answer, asked, requestId, finish } = await askDuringTurn(t, [
    '--permission-policy',
    'local-only',
    '--trust-proxy',
    '127.0.0.1',
  ]);
  t.match(asked, { policy: 'local-only' });
  // Through a proxy on this machine that the daemon trusts: the forwarded client is the one that counts.
  const remote = await call(as(d, 'bob', { 'x-forwarded-for': '203.0.113.7' }), 'POST', `/permission/${requestId}`, {
    ...ALLOW,
  });
  t.equal(remote.status, 403, 'a remote client is refused');
  t.match(remote.body, { code: 'vote_not_allowed', policy: 'local-only', requestId });
  const local = await call(as(d, 'bob', { 'x-forwarded-for': '127.0.0.2' }), 'POST', `/permission/${requestId}`, {
    ...DENY,
  });
  t.equal(local.status, 200, 'all of 127/8 is loopback');
  t.same(await answer, DENY);
  const resolved = await events.waitFor(isType('permission_resolved'), 'permission_resolved');
  t.match(resolved.envelope?.data, { policy: 'local-only', votes: [{ user: 'bob', optionId: 'deny' }] });
  await finish();
});

t.test("consensus over /acp: an ACP client's answer is its user's vote", async (t) => {
  const { d, steer } = await policyDaemon(t, ['--permission-policy', 'consensus', '--consensus-quorum', '2']);
  const cwd = d.config.workspace;
  const id = String(obj((await call(as(d, 'alice'), 'POST', '/session', {})).body).sessionId);
  const events = await openEvents(t, as(d, 'carol'), id);
  await events.waitFor(isType('session_state'), 'session_state');

  const acp = client({ name: 'policy-test' }).onRequest('session/request_permission', () => ALLOW);
  const stream = createHttpStream(`${d.baseUrl}/acp`, { headers: as(d, 'bob').headers });
  await acp.connectWith(stream, async (agentSide) => {
    await agentSide.request('initialize', { protocolVersion: 1, clientCapabilities: {} });
    await agentSide.request('session/load', { sessionId: id, cwd, mcpServers: [] });

    const agent = await steer.agent(0);
    const answer = agent.permission(id, { toolCallId: 'tc-1', title: 'write' }, OPTIONS);
    const tally = await events.waitFor(isType('permission_vote'), 'permission_vote');
    t.match(tally.envelope?.data, { policy: 'consensus', votes: [{ user: 'bob', optionId: 'allow' }] }, 'bob voted');
    const requestId = String(tally.envelope?.data.requestId);

    t.equal((await call(as(d, 'bob'), 'POST', `/permission/${requestId}`, ALLOW)).status, 403, 'bob again: no');
    t.equal((await call(as(d, 'alice'), 'POST', `/permission/${requestId}`, ALLOW)).status, 200, 'alice');
    t.same(await answer, ALLOW);
    const resolved = await events.waitFor(isType('permission_resolved'), 'permission_resolved');
    t.match(resolved.envelope?.data, { votes: [{ user: 'bob' }, { user: 'alice' }] });
  });
});

t.test('without tokens every client is the same user: designated takes the first answer', async (t) => {
  const { d, steer } = await steerDaemon(t, { args: ['--permission-policy', 'designated'] });
  const id = String(obj((await call(d, 'POST', '/session', {})).body).sessionId);
  const events = await openEvents(t, d, id);
  const agent = await steer.agent(0);
  const answer = agent.permission(id, { toolCallId: 'tc-1', title: 'write' }, OPTIONS);
  const asked = await events.waitFor(isType('permission_request'), 'permission_request');
  t.match(asked.envelope?.data, { policy: 'designated' });
  const requestId = String(asked.envelope?.data.requestId);
  t.equal((await call(d, 'POST', `/permission/${requestId}`, ALLOW)).status, 200);
  t.same(await answer, ALLOW);
  const resolved = await events.waitFor(isType('permission_resolved'), 'permission_resolved');
  t.match(resolved.envelope?.data, { policy: 'designated', votes: [{ user: 'default' }] });
});

t.test('with only --token every client is `default`: consensus takes the first answer', async (t) => {
  const { d, steer } = await steerDaemon(t, {
    args: ['--token', 'tok-one', '--permission-policy', 'consensus', '--consensus-quorum', '2'],
  });
  const one = { baseUrl: d.baseUrl, headers: { authorization: 'Bearer tok-one' } };
  const id = String(obj((await call(one, 'POST', '/session', {})).body).sessionId);
  const events = await openEvents(t, one, id);
  const agent = await steer.agent(0);
  const answer = agent.permission(id, { toolCallId: 'tc-1', title: 'write' }, OPTIONS);
  const asked = await events.waitFor(isType('permission_request'), 'permission_request');
  const requestId = String(asked.envelope?.data.requestId);
  t.equal((await call(one, 'POST', `/permission/${requestId}`, DENY)).status, 200);
  t.same(await answer, DENY, 'one vote settles it: nobody can be told apart');
  const resolved = await events.waitFor(isType('permission_resolved'), 'permission_resolved');
  t.match(resolved.envelope?.data, { policy: 'consensus', votes: [{ user: 'default', optionId: 'deny' }] });
});

t.test('consensus without a quorum: a majority of the users attached when the agent asks', async (t) => {
  const { d, steer } = await policyDaemon(t, ['--permission-policy', 'consensus']);
  const id = String(obj((await call(as(d, 'alice'), 'POST', '/session', {})).body).sessionId);
  const events = await openEvents(t, as(d, 'carol'), id);
  await events.waitFor(isType('session_state'), 'session_state');
  const agent = await steer.agent(0);
  const ask = async (toolCallId: string) => {
    const answer = agent.permission(id, { toolCallId, title: 'write' }, OPTIONS);
    const asked = await events.waitFor(
      (f) =>
        isType('permission_request')(f) &&
        (f.envelope?.data.toolCall as { toolCallId?: string }).toolCallId === toolCallId,
      `permission_request ${toolCallId}`,
    );
    return { answer, data: asked.envelope?.data ?? {}, requestId: String(asked.envelope?.data.requestId) };
  };

  // Two users attached (alice created it, carol reads it): both must agree.
  const two = await ask('tc-2');
  t.match(two.data, { policy: 'consensus', quorum: 2 }, 'two attached: quorum 2');
  const notAllowed = await call(as(d, 'dave'), 'POST', `/permission/${two.requestId}`, ALLOW);
  t.match([notAllowed.status, notAllowed.body], [403, { code: 'insufficient_scope' }], 'dave may not vote');
  t.equal((await call(as(d, 'alice'), 'POST', `/permission/${two.requestId}`, ALLOW)).status, 200);
  await events.waitFor(isType('permission_vote'), 'one vote of two');
  t.equal((await call(as(d, 'carol'), 'POST', `/permission/${two.requestId}`, ALLOW)).status, 200);
  t.same(await two.answer, ALLOW, 'settled by the second user');

  // Three attached (bob reads too): two of three settle it; four (dave reads as well): three of four.
  await (await openEvents(t, as(d, 'bob'), id)).waitFor(isType('session_state'), 'bob attached');
  const three = await ask('tc-3');
  t.match(three.data, { quorum: 2 }, 'three attached: quorum 2');
  t.equal((await call(as(d, 'bob'), 'POST', `/permission/${three.requestId}`, DENY)).status, 200);
  t.equal((await call(as(d, 'carol'), 'POST', `/permission/${three.requestId}`, DENY)).status, 200);
  t.same(await three.answer, DENY, 'two of three');
  await (await openEvents(t, as(d, 'dave'), id)).waitFor(isType('session_state'), 'dave attached');
  const four = await ask('tc-4');
  t.match(four.data, { quorum: 3 }, 'four attached: quorum 3, although dave cannot vote');
  for (const voter of ['alice', 'bob', 'carol']) {
    t.equal((await call(as(d, voter), 'POST', `/permission/${four.requestId}`, ALLOW)).status, 200, voter);
  }
  t.same(await four.answer, ALLOW, 'three of four');
  t.match(obj((await call(as(d, 'dave'), 'GET', `/session/${id}/status`)).body).attachedUsers, [
    'alice',
    'bob',
    'carol',
    'dave',
  ]);
});
