// Tests of the steerable agent fixture itself: the agent is spawned directly (no daemon) and driven with
// the SDK's client side over its stdio, while the test steers it through the controller.

import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { Readable, Writable } from 'node:stream';
import t from 'tap';
import { client, ndJsonStream, PROTOCOL_VERSION, RequestError } from '@agentclientprotocol/sdk';
import type { ClientConnection, RequestPermissionRequest, SessionNotification } from '@agentclientprotocol/sdk';
import { Steer } from './fixtures/steer.js';
import { rejection } from './support/rejections.js';

/** What the helpers need of a test: cleanup and comments. */
type Test = Pick<typeof t, 'teardown' | 'comment'>;

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface Spawned {
  child: ChildProcessWithoutNullStreams;
  connection: ClientConnection;
  /** Every session/update the client received, in order. */
  updates: SessionNotification[];
  /** Every session/request_permission the client received. */
  permissions: RequestPermissionRequest[];
  exit: Promise<Exit>;
}

async function createSteer(test: Test, options?: { hold?: string[] }): Promise<Steer> {
  const steer = await Steer.create(options);
  test.teardown(async () => await steer.close());
  return steer;
}

/** Spawns one agent and connects an ACP client to it; it answers every permission request with `allow`. */
function spawnAgent(test: Test, argv: string[], env: NodeJS.ProcessEnv = process.env): Spawned {
  const child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env });
  const exit = new Promise<Exit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (data: string) => {
    stderr += data;
  });
  const updates: SessionNotification[] = [];
  const permissions: RequestPermissionRequest[] = [];
  const connection = client({ name: 'steer-test' })
    .onNotification('session/update', (ctx) => {
      updates.push(ctx.params);
    })
    .onRequest('session/request_permission', (ctx) => {
      permissions.push(ctx.params);
      return { outcome: { outcome: 'selected', optionId: 'allow' } };
    })
    .onRequest('*', (ctx) => {
      throw RequestError.methodNotFound(ctx.method);
    })
    .onNotification('*', () => {})
    .connect(ndJsonStream(Writable.toWeb(child.stdin), Readable.toWeb(child.stdout)));
  test.teardown(async () => {
    connection.close();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exit;
    if (stderr !== '') test.comment(`agent ${child.pid ?? '?'} stderr: ${stderr}`);
  });
  return { child, connection, updates, permissions, exit };
}

async function initialize(connection: ClientConnection): Promise<void> {
  await connection.agent.request('initialize', {
    protocolVersion: PROTOCOL_VERSION,
    clientCapabilities: { fs: { readTextFile: true, writeTextFile: true } },
    clientInfo: { name: 'steer-test', version: '0' },
  });
}

t.test('default behaviour: initialize, session/new, load with replay, resume, set_model', async (t) => {
  const steer = await createSteer(t);
  const { child, connection, updates } = spawnAgent(t, steer.argv);
  const agent = await steer.agent();
  t.equal(agent.pid, child.pid, 'hello carries the pid');
  t.same(steer.pids, [child.pid]);

  const init = await connection.agent.request('initialize', {
    protocolVersion: PROTOCOL_VERSION,
    clientCapabilities: {},
    clientInfo: { name: 'steer-test', version: '0' },
  });
  t.match(init, {
    protocolVersion: PROTOCOL_VERSION,
    agentCapabilities: { loadSession: true, sessionCapabilities: { resume: {} } },
    agentInfo: { name: 'steer-agent' },
  });

  const created = await connection.agent.request('session/new', { cwd: '/tmp', mcpServers: [] });
  t.match(created, {
    sessionId: /^[0-9a-f-]{36}$/,
    models: {
      availableModels: [
        { modelId: 'm1', name: 'm1' },
        { modelId: 'm2', name: 'm2' },
      ],
      currentModelId: 'm1',
    },
  });

  const loaded = await connection.agent.request('session/load', { sessionId: 's-1', cwd: '/tmp', mcpServers: [] });
  t.match(loaded, { models: { currentModelId: 'm1' }, _meta: { restoredBy: 'session/load', pid: child.pid } });
  t.same(
    updates.map((n) => [n.sessionId, n.update]),
    [
      ['s-1', { sessionUpdate: 'user_message_chunk', content: { type: 'text', text: 'hi' } }],
      ['s-1', { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 'hello' } }],
      ['s-1', { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 'again' } }],
    ],
    'load replays the history before answering',
  );

  const resumed = await connection.agent.request('session/resume', { sessionId: 's-2', cwd: '/tmp' });
  t.match(resumed, { models: { currentModelId: 'm1' }, _meta: { restoredBy: 'session/resume', pid: child.pid } });
  t.equal(updates.length, 3, 'resume replays nothing');

  for (const method of ['session/load', 'session/resume'] as const) {
    const error = await rejection(
      connection.agent.request(method, { sessionId: 'unknown-1', cwd: '/tmp', mcpServers: [] }),
    );
    t.match(error, { code: -32002, data: { uri: 'session:unknown-1' } }, `${method} of an unknown id`);
  }

  t.same(await connection.agent.request('session/set_model', { sessionId: created.sessionId, modelId: 'm2' }), {});
  const badModel = await rejection(
    connection.agent.request('session/set_model', { sessionId: created.sessionId, modelId: 'nope' }),
  );
  t.match(badModel, { code: -32602 });
  t.match(
    await connection.agent.request('session/resume', { sessionId: created.sessionId, cwd: '/tmp' }),
    { models: { currentModelId: 'm2' } },
    'the model switch sticks',
  );

  const seenNew = await steer.seen('session/new');
  t.match(seenNew, { pid: child.pid, kind: 'request', params: { cwd: '/tmp' } });
  // The control socket can lag the JSON-RPC answers: the log is complete once the last request's record is in.
  for (let i = 0; i < 3; i++) await steer.seen('session/resume');
  t.same(
    steer.log.map((record) => record.method),
    [
      'initialize',
      'session/new',
      'session/load',
      'session/resume',
      'session/load',
      'session/resume',
      'session/set_model',
      'session/set_model',
      'session/resume',
    ],
  );
});

t.test('hold + release: session/new parks until released, then default or verbatim', async (t) => {
  const steer = await createSteer(t);
  const { connection } = spawnAgent(t, steer.argv);
  await initialize(connection);
  await steer.hold(['session/new']);

  let settled = false;
  const first = connection.agent.request('session/new', { cwd: '/w', mcpServers: [] });
  void first.then(
    () => {
      settled = true;
    },
    () => {
      settled = true;
    },
  );
  const call = await steer.nextCall('session/new');
  t.match(call.params, { cwd: '/w' });
  t.equal(settled, false, 'the request is parked');
  await call.release();
  t.match(await first, { sessionId: /^[0-9a-f-]{36}$/ }, 'released with the default behaviour');

  const second = connection.agent.request('session/new', { cwd: '/w2', mcpServers: [] });
  const call2 = await steer.nextCall(
    'session/new',
    (params) => typeof params === 'object' && params !== null && 'cwd' in params && params.cwd === '/w2',
  );
  await call2.release({ sessionId: 'verbatim', extra: true });
  t.same(await second, { sessionId: 'verbatim', extra: true }, 'released with a verbatim result');

  await t.rejects(call2.release(), /no parked call/, 'a call is released once');

  await steer.unhold(['session/new']);
  t.match(await connection.agent.request('session/new', { cwd: '/w3', mcpServers: [] }), { sessionId: /./ });
});

t.test('hold from the start (Steer.create and --hold) beats the first request', async (t) => {
  const steer = await createSteer(t, { hold: ['initialize'] });
  const { connection } = spawnAgent(t, [...steer.argv, '--hold', 'session/new,session/prompt']);
  const init = initialize(connection);
  await (await steer.nextCall('initialize')).release();
  await init;
  const created = connection.agent.request('session/new', { cwd: '/w', mcpServers: [] });
  await (await steer.nextCall('session/new')).release();
  const { sessionId } = await created;
  const prompt = connection.agent.request('session/prompt', { sessionId, prompt: [{ type: 'text', text: 'x' }] });
  await (await steer.nextCall('session/prompt')).release({ stopReason: 'max_tokens' });
  t.same(await prompt, { stopReason: 'max_tokens' });
});

t.test('fail answers a held call with a JSON-RPC error (-32002)', async (t) => {
  const steer = await createSteer(t);
  const { connection } = spawnAgent(t, steer.argv);
  await initialize(connection);
  await steer.hold(['session/load']);
  const load = connection.agent.request('session/load', { sessionId: 'abc', cwd: '/w', mcpServers: [] });
  const call = await steer.nextCall('session/load');
  t.match(call.params, { sessionId: 'abc' });
  await call.fail({ code: -32002, message: 'Resource not found: session:abc', data: { uri: 'session:abc' } });
  const error = await rejection(load);
  t.ok(error instanceof RequestError);
  t.match(error, { code: -32002, message: /Resource not found/, data: { uri: 'session:abc' } });
});

t.test('prompts: chunks, flood, hang until cancel, permission', async (t) => {
  const steer = await createSteer(t);
  const { connection, updates, permissions } = spawnAgent(t, steer.argv);
  await initialize(connection);
  const { sessionId } = await connection.agent.request('session/new', { cwd: '/w', mcpServers: [] });
  const texts = (): string[] =>
    updates.flatMap((n) =>
      n.update.sessionUpdate === 'agent_message_chunk' && n.update.content.type === 'text'
        ? [n.update.content.text]
        : [],
    );

  t.same(await connection.agent.request('session/prompt', { sessionId, prompt: [{ type: 'text', text: 'yo' }] }), {
    stopReason: 'end_turn',
  });
  t.same(texts(), ['you said: ', 'yo']);

  updates.length = 0;
  t.same(await connection.agent.request('session/prompt', { sessionId, prompt: [{ type: 'text', text: 'flood 5' }] }), {
    stopReason: 'end_turn',
  });
  t.equal(texts().length, 5);

  const hang = connection.agent.request('session/prompt', { sessionId, prompt: [{ type: 'text', text: 'hang' }] });
  await steer.seen('session/prompt', (params) => JSON.stringify(params).includes('"hang"'));
  await connection.agent.notify('session/cancel', { sessionId });
  t.same(await hang, { stopReason: 'cancelled' });
  t.match(await steer.seen('session/cancel'), { kind: 'notification', params: { sessionId } });

  updates.length = 0;
  t.same(await connection.agent.request('session/prompt', { sessionId, prompt: [{ type: 'text', text: 'perm' }] }), {
    stopReason: 'end_turn',
  });
  t.equal(permissions.length, 1);
  t.match(permissions[0], {
    sessionId,
    options: [
      { optionId: 'allow', kind: 'allow_once' },
      { optionId: 'reject', kind: 'reject_once' },
    ],
  });
  t.same(texts(), ['permission: allow']);
});

t.test('commands: notify and permission go to the client', async (t) => {
  const steer = await createSteer(t);
  const { connection, updates, permissions } = spawnAgent(t, steer.argv);
  await initialize(connection);
  const agent = await steer.agent();
  await agent.notify('s-9', { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 'pushed' } });
  t.match(updates, [{ sessionId: 's-9', update: { content: { text: 'pushed' } } }]);
  const answer = await agent.permission('s-9', { toolCallId: 'tc-1', title: 'write' }, [
    { optionId: 'allow', name: 'Allow', kind: 'allow_once' },
  ]);
  t.same(answer, { outcome: { outcome: 'selected', optionId: 'allow' } });
  t.match(permissions, [{ sessionId: 's-9', toolCall: { toolCallId: 'tc-1' } }]);
});

t.test('crash: the process dies, the controller sees it, a second process says hello again', async (t) => {
  const steer = await createSteer(t, { hold: ['session/new'] });
  const one = spawnAgent(t, steer.argv);
  await initialize(one.connection);
  const first = await steer.agent(0);
  const parked = one.connection.agent.request('session/new', { cwd: '/w', mcpServers: [] });
  const orphan = await steer.nextCall('session/new');
  t.equal(orphan.pid, one.child.pid);
  await first.crash();
  t.equal(first.alive, false, 'the controller saw the control connection close');
  t.same(await one.exit, { code: null, signal: 'SIGKILL' });
  t.ok(await rejection(parked), 'the parked request fails with the connection');
  await t.rejects(orphan.release(), /gone/, 'a call of a dead agent cannot be released');

  const two = spawnAgent(t, steer.argv);
  const second = await steer.agent();
  t.equal(second.index, 1);
  t.equal(second.pid, two.child.pid);
  t.same(steer.pids, [one.child.pid, two.child.pid], 'pids has both processes');
  await initialize(two.connection);
  const created = two.connection.agent.request('session/new', { cwd: '/w', mcpServers: [] });
  const call = await steer.nextCall('session/new');
  t.equal(call.pid, two.child.pid, 'the hold was re-sent to the new process');
  await call.release();
  t.match(await created, { sessionId: /./ });

  // a crash in the middle of a prompt
  const { sessionId } = await created;
  const prompt = two.connection.agent.request('session/prompt', {
    sessionId,
    prompt: [{ type: 'text', text: 'crash' }],
  });
  await second.exited;
  t.same(await two.exit, { code: null, signal: 'SIGKILL' });
  t.ok(await rejection(prompt));
  t.same(
    two.updates.map((n) => n.update),
    [{ sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 'crashing' } }],
  );
});

t.test('exit command, stdin EOF, and the socket given through the environment', async (t) => {
  const steer = await createSteer(t);
  const one = spawnAgent(t, steer.argv);
  await (await steer.agent(0)).exit(3);
  t.same(await one.exit, { code: 3, signal: null });

  const [node, script] = steer.argv;
  const two = spawnAgent(t, [node, script], { ...process.env, ...steer.env });
  const second = await steer.agent(1);
  t.equal(second.pid, two.child.pid, 'ACPD_STEER_SOCKET works without --steer');
  await initialize(two.connection);
  two.child.stdin.end();
  t.same(await two.exit, { code: 0, signal: null }, 'exits on stdin EOF');
  await second.exited;
});

t.test('closing the controller ends its agents', async (t) => {
  const steer = await createSteer(t);
  const one = spawnAgent(t, steer.argv);
  await steer.agent();
  await steer.close(); // the subject of this test; the teardown's second close is a no-op
  t.same(await one.exit, { code: 0, signal: null });
});
