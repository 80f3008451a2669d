// An agent that cannot be used (issue 11): a command that is not there or cannot run, a process that exits,
// refuses or stalls during `initialize`. Creates and restores answer 503 `agent_unavailable` with the command,
// the reason, Retry-After and (for an exit) the exit code and the last stderr lines; no process is left behind,
// and once the agent works the next create succeeds. Real processes throughout: small node scripts written
// into a temporary directory play the broken agents.
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { livingInGroup } from '../harness/proc-table.js';
import { startDaemon, tempDir, type TestDaemon } from './support/app.js';
import { call, obj, type JsonResponse } from './support/http.js';
import { textPrompt } from './support/values.js';

const EMBEDDED_AGENT = fileURLToPath(new URL('../src/agent/main.js', import.meta.url));

/** A node script in a fresh directory that records its pid, then runs `body`. */
function agentScript(t: Test, body: string): { file: string; pidFile: string } {
  const dir = tempDir(t, 'acpd-broken-agent-');
  const file = path.join(dir, 'agent.mjs');
  const pidFile = path.join(dir, 'pid');
  writeFileSync(
    file,
    `import { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(pidFile)}, String(process.pid));\n${body}\n`,
  );
  return { file, pidFile };
}

function recordedPid(pidFile: string): number {
  return Number(readFileSync(pidFile, 'utf8'));
}

/** The 503 every failure answers: its envelope, with Retry-After, and nothing spawned left over. */
function assertUnavailable(t: Test, d: TestDaemon, res: JsonResponse, command: string): Record<string, unknown> {
  t.equal(res.status, 503, JSON.stringify(res.body));
  t.equal(res.headers['retry-after'], '5');
  const body = obj(res.body);
  t.equal(body.code, 'agent_unavailable');
  t.equal(body.command, command);
  t.type(body.reason, 'string');
  t.equal(body.error, `The agent cannot be used: ${String(body.reason)} (command: ${command})`);
  t.equal(d.app.channels.alive.size, 0, 'no channel is kept for a failed agent');
  return body;
}

t.test('a command not on PATH: 503 for create and for restore, with the reason', async (t) => {
  const d = await startDaemon(t, { agent: ['nonexistent-binary-xyz', '--acp'] });
  const created = assertUnavailable(t, d, await call(d, 'POST', '/session', {}), 'nonexistent-binary-xyz --acp');
  t.equal(created.reason, '"nonexistent-binary-xyz" is not on PATH (ENOENT)');
  t.notOk('exitCode' in created || 'stderr' in created, 'nothing ran, so no exit code and no stderr');
  for (const action of ['load', 'resume']) {
    const restored = assertUnavailable(
      t,
      d,
      await call(d, 'POST', `/session/s-1/${action}`, {}),
      'nonexistent-binary-xyz --acp',
    );
    t.equal(restored.reason, '"nonexistent-binary-xyz" is not on PATH (ENOENT)', action);
  }
  t.equal(d.app.sessions.sessionCount, 0);
  t.equal((await call(d, 'GET', '/readyz')).status, 503, '/readyz agrees');
});

t.test('a path that does not exist, a directory, a file without execute permission', async (t) => {
  const dir = tempDir(t, 'acpd-agent-files-');
  const missing = path.join(dir, 'nope', 'agent');
  const plain = path.join(dir, 'agent.sh');
  writeFileSync(plain, '#!/bin/sh\nexit 0\n');
  chmodSync(plain, 0o644);
  const cases: [string, string][] = [
    [missing, `${missing} does not exist (ENOENT)`],
    [dir, `${dir} is a directory (EACCES)`],
    [plain, `${plain} is not executable (EACCES)`],
  ];
  for (const [command, reason] of cases) {
    const d = await startDaemon(t, { agent: [command] });
    const body = assertUnavailable(t, d, await call(d, 'POST', '/session', {}), command);
    t.equal(body.reason, reason);
  }
});

t.test('a bare name found on PATH only as a file that cannot run says where it is', async (t) => {
  const bin = tempDir(t, 'acpd-agent-bin-');
  const file = path.join(bin, 'acpd-test-agent');
  writeFileSync(file, '#!/bin/sh\nexit 0\n');
  chmodSync(file, 0o644);
  const d = await startDaemon(t, { agent: ['acpd-test-agent'], env: { PATH: bin } });
  const body = assertUnavailable(t, d, await call(d, 'POST', '/session', {}), 'acpd-test-agent');
  t.equal(body.reason, `${file} is not executable (EACCES)`);
});

t.test('an executable whose #! interpreter is missing: spawn fails with ENOENT, and the reason says why', async (t) => {
  const dir = tempDir(t, 'acpd-agent-shebang-');
  const file = path.join(dir, 'agent');
  writeFileSync(file, '#!/nonexistent/interpreter\n');
  chmodSync(file, 0o755);
  const d = await startDaemon(t, { agent: [file] });
  const body = assertUnavailable(t, d, await call(d, 'POST', '/session', {}), file);
  t.match(String(body.reason), /could not be started \(ENOENT\): its #! interpreter/);
});

t.test(
  'an agent that exits 3 during initialize: its exit code and last stderr lines; then a working agent is used',
  async (t) => {
    const lines = Array.from({ length: 25 }, (_, i) => `oops ${i + 1}`);
    const { file, pidFile } = agentScript(
      t,
      `for (const line of ${JSON.stringify(lines)}) process.stderr.write(line + '\\n');\nprocess.exit(3);`,
    );
    const d = await startDaemon(t, { agent: [process.execPath, file] });

    const res = await call(d, 'POST', '/session', {});
    const body = assertUnavailable(t, d, res, `${process.execPath} ${file}`);
    t.equal(body.reason, 'exited with code 3 during initialize');
    t.equal(body.exitCode, 3);
    t.strictSame(body.stderr, lines.slice(-20), 'the last 20 lines, oldest first');
    t.same(livingInGroup(recordedPid(pidFile)), [], 'nothing of the agent runs');

    // Restores go through the same spawn.
    const restored = assertUnavailable(
      t,
      d,
      await call(d, 'POST', '/session/s-1/load', {}),
      `${process.execPath} ${file}`,
    );
    t.equal(restored.exitCode, 3);
    const spawns = d.app.channels.spawnCount;
    t.equal(spawns, 2, 'every attempt spawns afresh');

    // The agent is fixed: the next create spawns it and works, nothing is stuck.
    writeFileSync(file, `await import(${JSON.stringify(EMBEDDED_AGENT)});\n`);
    const created = await call(d, 'POST', '/session', {});
    t.equal(created.status, 200, JSON.stringify(created.body));
    const id = String(obj(created.body).sessionId);
    t.same((await call(d, 'POST', `/session/${id}/prompt`, textPrompt('hello'))).body, { stopReason: 'end_turn' });
    t.equal(d.app.channels.spawnCount, spawns + 1);
    t.equal(d.app.channels.alive.size, 1);
  },
);

t.test('an agent killed by a signal during initialize reports the signal', async (t) => {
  const { file } = agentScript(t, "process.stderr.write('about to die\\n');\nprocess.kill(process.pid, 'SIGKILL');");
  const d = await startDaemon(t, { agent: [process.execPath, file] });
  const body = assertUnavailable(t, d, await call(d, 'POST', '/session', {}), `${process.execPath} ${file}`);
  t.equal(body.reason, 'was killed by SIGKILL during initialize');
  t.equal(body.signal, 'SIGKILL');
  t.notOk('exitCode' in body);
  t.strictSame(body.stderr, ['about to die']);
});

t.test('an agent that answers initialize with a JSON-RPC error: 503 with its message, and it is stopped', async (t) => {
  // It keeps running after its refusal: acpd must stop it.
  const { file, pidFile } = agentScript(
    t,
    [
      "import { createInterface } from 'node:readline';",
      "process.stderr.write('no licence found\\n');",
      "createInterface({ input: process.stdin }).on('line', (line) => {",
      '  const { id } = JSON.parse(line);',
      "  process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id, error: { code: -32000, message: 'not licensed' } }) + '\\n');",
      '});',
      'setInterval(() => {}, 1000);',
    ].join('\n'),
  );
  const d = await startDaemon(t, { agent: [process.execPath, file] });
  const body = assertUnavailable(t, d, await call(d, 'POST', '/session', {}), `${process.execPath} ${file}`);
  t.equal(body.reason, 'initialize was refused: not licensed (JSON-RPC -32000)');
  t.notOk('exitCode' in body, 'it did not exit by itself');
  t.strictSame(body.stderr, ['no licence found']);
  t.same(livingInGroup(recordedPid(pidFile)), [], 'the refusing agent was stopped before the answer');
});

t.test('an agent that never answers initialize: 503 after the deadline, and it is stopped', async (t) => {
  const { file, pidFile } = agentScript(t, 'setInterval(() => {}, 1000);');
  const d = await startDaemon(t, { agent: [process.execPath, file], config: { initTimeoutMs: 1000 } });
  const body = assertUnavailable(t, d, await call(d, 'POST', '/session', {}), `${process.execPath} ${file}`);
  t.equal(body.reason, 'initialize timed out after 1000ms');
  t.notOk('stderr' in body, 'it wrote nothing to stderr');
  t.same(livingInGroup(recordedPid(pidFile)), [], 'the stalled agent was killed');
});

t.test('an agent that closes its stdout during initialize but lives on: reported as such, and stopped', async (t) => {
  const { file, pidFile } = agentScript(
    t,
    "import { closeSync } from 'node:fs';\ncloseSync(1);\nsetInterval(() => {}, 1000);",
  );
  const d = await startDaemon(t, { agent: [process.execPath, file] });
  const body = assertUnavailable(t, d, await call(d, 'POST', '/session', {}), `${process.execPath} ${file}`);
  t.equal(body.reason, 'closed its connection during initialize');
  t.notOk('exitCode' in body || 'signal' in body, "acpd's own SIGTERM is not reported as the agent's exit");
  t.same(livingInGroup(recordedPid(pidFile)), [], 'the agent was stopped');
});
