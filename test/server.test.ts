// The acpd executable as a real process: the start-up lines tools parse, --version, the agent warning,
// /health over a real socket, the connection cap, the token kept out of
// /proc/<pid>/environ, the token file, the refusal to listen
// beyond loopback without a token, and shutdown on SIGTERM/SIGINT leaving
// no process behind (checked against /proc, by pid, start time and group).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, realpathSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { freePort } from '../harness/ports.js';
import { descendantsOf, environOf, isRunning, processTable, statOf, type ProcStat } from '../harness/proc-table.js';
import { until } from '../harness/wait.js';

const SERVER = fileURLToPath(new URL('../src/server.js', import.meta.url));
const DIST_SERVER = fileURLToPath(new URL('../../dist/server.js', import.meta.url));
/** The start-up line on stderr: `acpd listening on <url> (mode=http-bridge, auth=off|bearer, workspace="…", agent=…)`. */
const LISTENING =
  /^acpd listening on (http:\/\/(\S+):(\d+)) \(mode=http-bridge, auth=(off|bearer), workspace=("(?:[^"\\]|\\.)*"), agent=(embedded|"(?:[^"\\]|\\.)*")\)$/m;
const STARTUP_TIMEOUT_MS = 30_000;

type Exit = { code: number | null; signal: NodeJS.Signals | null };

type Daemon = {
  child: ChildProcess;
  pid: number;
  stdout: () => string;
  stderr: () => string;
  /** Resolves once the process has exited and its pipes are drained. */
  exited: Promise<Exit>;
};

// The daemon gets a clean environment: nothing of ours that starts with ACPD_.
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !key.startsWith('ACPD_')) env[key] = value;
  }
  return env;
}

function startDaemon(t: Test, args: string[], env: Record<string, string> = {}): Daemon {
  const child = spawn(process.execPath, [SERVER, ...args], {
    env: { ...baseEnv(), ACPD_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<Exit>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  if (child.pid === undefined) throw new Error('spawn failed');
  return { child, pid: child.pid, stdout: () => stdout, stderr: () => stderr, exited };
}

interface Listening {
  url: string;
  host: string;
  port: number;
  auth: string;
  workspace: string;
  /** `embedded`, or the command line. */
  agent: string;
}

/** Waits for the start line; fails with the daemon's output if it exits first. */
async function listening(daemon: Daemon): Promise<Listening> {
  let exit: Exit | undefined;
  void daemon.exited.then((value) => {
    exit = value;
  });
  // The line, or null once the process has exited without it: either ends the wait.
  const line = (): RegExpExecArray | null | undefined =>
    LISTENING.exec(daemon.stderr()) ?? (exit === undefined ? undefined : null);
  const match = await until(line, 'the listening line', { ms: STARTUP_TIMEOUT_MS, everyMs: 10 }).catch(() => null);
  if (!match) {
    throw new Error(
      `acpd did not start (exit ${JSON.stringify(exit)}):\nstdout: ${daemon.stdout()}\nstderr: ${daemon.stderr()}`,
    );
  }
  const agent = match[6] === 'embedded' ? match[6] : String(JSON.parse(match[6]));
  return {
    url: match[1],
    host: match[2],
    port: Number(match[3]),
    auth: match[4],
    workspace: String(JSON.parse(match[5])),
    agent,
  };
}

/**
 * Which of `procs` (same pid and start time, so not a recycled pid) still
 * run, plus anything left in their own process groups. Zombies are dead.
 */
function survivors(procs: ProcStat[], sharedGroup: number): ProcStat[] {
  const groups = new Set(procs.map((proc) => proc.pgid).filter((pgid) => pgid !== sharedGroup));
  return processTable().filter(
    (proc) =>
      isRunning(proc) &&
      (procs.some((old) => old.pid === proc.pid && old.start === proc.start) || groups.has(proc.pgid)),
  );
}

function ownGroup(): number {
  const self = statOf(process.pid);
  if (self === undefined) throw new Error('cannot find this process in /proc');
  return self.pgid;
}

/** SIGKILL whatever is left of `procs` if a test fails half-way. */
function reapOnTeardown(t: Test, procs: () => ProcStat[]): void {
  t.teardown(() => {
    for (const proc of survivors(procs(), ownGroup())) {
      try {
        process.kill(proc.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

async function connectOutcome(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** A workspace and a data directory (t.testdir gives one directory per test). */
function dirs(t: Test): { workspace: string; dataDir: string } {
  const root = realpathSync(t.testdir({ ws: { 'README.md': '# fixture workspace\n' }, data: {} }));
  return { workspace: join(root, 'ws'), dataDir: join(root, 'data') };
}

t.test('starts on an ephemeral port, answers /health, drains on SIGTERM and leaves no process behind', async (t) => {
  const { workspace, dataDir } = dirs(t);
  const daemon = startDaemon(t, ['--port', '0', '--workspace', workspace, '--data-dir', dataDir]);
  let seen: ProcStat[] = [];
  reapOnTeardown(t, () => seen);

  const started = await listening(daemon);
  t.equal(started.host, '127.0.0.1');
  t.not(started.port, 0, 'the real port is printed, not 0');
  t.equal(started.workspace, workspace);
  t.equal(started.auth, 'off', 'no token: auth is off');
  t.equal(started.agent, 'embedded');

  const health = await fetch(`${started.url}/health`);
  t.equal(health.status, 200);
  await health.body?.cancel();

  // A session makes the daemon start its agent, so there is something to reap.
  const created = await fetch(`${started.url}/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ cwd: workspace }),
  });
  t.equal(created.status, 200, 'session created');
  await created.body?.cancel();
  seen = descendantsOf(daemon.pid);
  t.ok(seen.length > 0, 'the agent runs as a descendant of the daemon');

  daemon.child.kill('SIGTERM');
  const exit = await daemon.exited;
  t.same(exit, { code: 0, signal: null }, 'exit code 0');
  // stderr is complete once the process has closed its pipes.
  t.equal(daemon.stderr().match(/listening/g)?.length, 1, 'one listening line, and no separate notices');
  t.match(daemon.stderr(), 'acpd: received SIGTERM, draining...');
  t.notMatch(daemon.stderr(), 'the agent cannot run', 'the agent runs: no warning about it');
  t.same(survivors(seen, ownGroup()), [], 'no agent process or process group outlives the daemon');
  t.equal(await connectOutcome(started.port), 'ECONNREFUSED', 'the port is closed');
});

t.test('SIGINT drains the same way', async (t) => {
  const { workspace, dataDir } = dirs(t);
  const daemon = startDaemon(t, ['--port', '0', '--workspace', workspace, '--data-dir', dataDir]);
  const started = await listening(daemon);
  const health = await fetch(`${started.url}/health`);
  t.equal(health.status, 200);
  await health.body?.cancel();
  const seen = descendantsOf(daemon.pid);
  reapOnTeardown(t, () => seen);
  daemon.child.kill('SIGINT');
  t.same(await daemon.exited, { code: 0, signal: null });
  t.match(daemon.stderr(), 'acpd: received SIGINT, draining...');
  t.same(survivors(seen, ownGroup()), []);
});

t.test('refuses a non-loopback bind without a token, and listens on nothing', async (t) => {
  const { workspace } = dirs(t);
  const port = await freePort();
  const daemon = startDaemon(t, ['--hostname', '0.0.0.0', '--port', String(port), '--workspace', workspace]);
  t.same(await daemon.exited, { code: 1, signal: null });
  t.equal(
    daemon.stderr(),
    `acpd: Refusing to bind 0.0.0.0:${port} without a bearer token. ` +
      'Set ACPD_TOKEN or pass --token, or rebind to loopback (127.0.0.1, localhost, ::1, or [::1]).\n',
  );
  t.notMatch(daemon.stdout() + daemon.stderr(), 'listening');
  t.equal(await connectOutcome(port), 'ECONNREFUSED');
});

t.test('a token from ACPD_TOKEN enables auth quietly; --token warns about /proc/<pid>/cmdline', async (t) => {
  const { workspace } = dirs(t);

  const fromEnv = startDaemon(t, ['--port', '0', '--workspace', workspace], { ACPD_TOKEN: 'secret' });
  t.equal((await listening(fromEnv)).auth, 'bearer');
  fromEnv.child.kill('SIGTERM');
  t.same(await fromEnv.exited, { code: 0, signal: null });
  t.notMatch(fromEnv.stderr(), '/cmdline');

  const fromFlag = startDaemon(t, ['--port', '0', '--workspace', workspace, '--token', 'secret']);
  t.equal((await listening(fromFlag)).auth, 'bearer');
  fromFlag.child.kill('SIGTERM');
  t.same(await fromFlag.exited, { code: 0, signal: null });
  t.match(fromFlag.stderr(), `/proc/${fromFlag.pid}/cmdline`);
  t.match(fromFlag.stderr(), '--token-file');
});

t.test('ACPD_TOKEN is gone from /proc/<pid>/environ once read, and still guards the daemon', async (t) => {
  const { workspace } = dirs(t);
  const secret = 'env-secret-9b2f0c41';
  const daemon = startDaemon(t, ['--port', '0', '--workspace', workspace], { ACPD_TOKEN: secret, ACPD_MARKER: 'kept' });
  const started = await listening(daemon);

  const entries = environOf(daemon.pid);
  t.notOk(
    entries.some((entry) => entry.includes(secret)),
    'the value is not in the environment block',
  );
  t.ok(entries.includes('ACPD_MARKER=kept'), 'the rest of the block is intact');
  t.ok(
    entries.includes(`ACPD_TOKEN=${'*'.repeat(secret.length)}`),
    'the entry is overwritten in place, still a NAME=VALUE line',
  );
  t.notMatch(daemon.stderr(), 'may stay readable', 'no fallback warning on Linux');

  const anonymous = await fetch(`${started.url}/capabilities`);
  t.equal(anonymous.status, 401);
  await anonymous.body?.cancel();
  const authorized = await fetch(`${started.url}/capabilities`, { headers: { authorization: `Bearer ${secret}` } });
  t.equal(authorized.status, 200, 'the token read before the scrub still works');
  await authorized.body?.cancel();
  daemon.child.kill('SIGTERM');
  t.same(await daemon.exited, { code: 0, signal: null });
});

t.test('--token-file: the token comes from the file; a bad file stops the start-up', async (t) => {
  const root = realpathSync(t.testdir({ ws: {}, 'token.txt': 'file-secret-77a1\n', 'empty.txt': '' }));
  const workspace = join(root, 'ws');

  const daemon = startDaemon(t, ['--port', '0', '--workspace', workspace, '--token-file', join(root, 'token.txt')]);
  const started = await listening(daemon);
  t.equal(started.auth, 'bearer');
  t.notMatch(daemon.stderr(), 'warning');
  const anonymous = await fetch(`${started.url}/capabilities`);
  t.equal(anonymous.status, 401);
  await anonymous.body?.cancel();
  const authorized = await fetch(`${started.url}/capabilities`, {
    headers: { authorization: 'Bearer file-secret-77a1' },
  });
  t.equal(authorized.status, 200);
  await authorized.body?.cancel();
  daemon.child.kill('SIGTERM');
  t.same(await daemon.exited, { code: 0, signal: null });

  const missing = startDaemon(t, ['--port', '0', '--workspace', workspace], {
    ACPD_TOKEN_FILE: join(root, 'nope.txt'),
  });
  t.same(await missing.exited, { code: 1, signal: null });
  t.equal(
    missing.stderr(),
    `acpd: Invalid --token-file "${join(root, 'nope.txt')}" (from ACPD_TOKEN_FILE): cannot be read (no such file).\n`,
  );
  t.equal(missing.stdout(), '');

  const empty = startDaemon(t, ['--port', '0', '--workspace', workspace, '--token-file', join(root, 'empty.txt')]);
  t.same(await empty.exited, { code: 1, signal: null });
  t.equal(empty.stderr(), `acpd: Invalid --token-file "${join(root, 'empty.txt')}": the file is empty.\n`);

  const both = startDaemon(t, ['--port', '0', '--workspace', workspace, '--token-file', join(root, 'token.txt')], {
    ACPD_TOKEN: 'x',
  });
  t.same(await both.exited, { code: 1, signal: null });
  t.match(both.stderr(), /^acpd: Both ACPD_TOKEN and --token-file are set/);
});

t.test('--max-connections: past the cap the probes answer and other requests get a 503, not a reset', async (t) => {
  const { workspace } = dirs(t);
  const daemon = startDaemon(t, ['--port', '0', '--workspace', workspace, '--max-connections', '1']);
  const started = await listening(daemon);

  // Hold the one allowed connection with a request in progress (a head not yet finished): it is neither
  // idle, so it cannot be reclaimed, nor past the 10 s header timeout during this test. Once the server
  // has answered a request on it, it has certainly been accepted.
  const held: Socket = connect(started.port, '127.0.0.1');
  t.teardown(() => {
    held.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    held.once('error', reject);
    held.once('data', () => resolve());
    held.write(`GET /livez HTTP/1.1\r\nHost: 127.0.0.1:${started.port}\r\n\r\nGET /livez HTTP/1.1\r\n`);
  });

  const health = await fetch(`${started.url}/health`);
  t.equal(health.status, 200, 'the probe answers over the cap');
  await health.body?.cancel();
  const refused = await fetch(`${started.url}/capabilities`);
  t.equal(refused.status, 503);
  t.equal(refused.headers.get('retry-after'), '5');
  t.match(await refused.json(), { code: 'connection_limit', limit: 1 });
  held.destroy();
  daemon.child.kill('SIGTERM');
  t.same(await daemon.exited, { code: 0, signal: null });
});

t.test('bad configuration: "acpd: <message>" on stderr, exit 1', async (t) => {
  const { workspace } = dirs(t);
  const unknown = startDaemon(t, ['--nope']);
  t.same(await unknown.exited, { code: 1, signal: null });
  t.equal(unknown.stderr(), 'acpd: Unknown option "--nope". Run "acpd --help" for the list of options.\n');

  const typo = startDaemon(t, ['--hostname', 'localhost:4170', '--workspace', workspace]);
  t.same(await typo.exited, { code: 1, signal: null });
  t.match(typo.stderr(), /^acpd: Invalid --hostname "localhost:4170": looks like a "host:port" combination\./);

  const relative = startDaemon(t, ['--port', '0'], { ACPD_WORKSPACE: 'not/absolute' });
  t.same(await relative.exited, { code: 1, signal: null });
  t.equal(relative.stderr(), 'acpd: Invalid --workspace "not/absolute": must be an absolute path.\n');
  t.equal(relative.stdout(), '');
});

t.test('--help prints the options and exits 0', async (t) => {
  const help = startDaemon(t, ['--help', '--nope']);
  t.same(await help.exited, { code: 0, signal: null });
  t.match(help.stdout(), /^Usage: acpd \[options\]/);
  for (const flag of ['--port', '--hostname', '--token', '--workspace', '--agent', '--data-dir'])
    t.match(help.stdout(), flag);
  t.equal(help.stderr(), '');
});

t.test('--version and -v print "acpd <version>" from package.json and exit 0', async (t) => {
  const manifest: unknown = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  const version = typeof manifest === 'object' && manifest !== null && 'version' in manifest ? manifest.version : '';
  for (const args of [['--version'], ['-v'], ['--version', '--nope']]) {
    const daemon = startDaemon(t, args);
    t.same(await daemon.exited, { code: 0, signal: null }, args.join(' '));
    t.equal(daemon.stdout(), `acpd ${String(version)}\n`);
    t.equal(daemon.stderr(), '');
  }
  // The published layout: dist/server.js with package.json one level up (built by `npm run build`).
  const published = spawnSync(process.execPath, [DIST_SERVER, '--version'], { encoding: 'utf8' });
  t.equal(published.status, 0, published.stderr);
  t.equal(published.stdout, `acpd ${String(version)}\n`);
});

t.test('an agent command that cannot run: a plain line at start-up, then 503 agent_unavailable', async (t) => {
  const { workspace, dataDir } = dirs(t);
  const daemon = startDaemon(t, [
    '--port',
    '0',
    '--workspace',
    workspace,
    '--data-dir',
    dataDir,
    '--agent',
    'nonexistent-binary-xyz --acp',
  ]);
  const started = await listening(daemon);
  const line =
    'acpd: warning: the agent cannot run: "nonexistent-binary-xyz" is not on PATH (ENOENT) ' +
    '(command: nonexistent-binary-xyz --acp). Creating or restoring a session answers 503 until it can.\n';
  await until(() => daemon.stderr().includes(line), 'the agent warning on stderr').catch(() => undefined);
  t.match(daemon.stderr(), line);

  const created = await fetch(`${started.url}/session`, { method: 'POST' });
  t.equal(created.status, 503);
  t.equal(created.headers.get('retry-after'), '5');
  t.same(await created.json(), {
    error:
      'The agent cannot be used: "nonexistent-binary-xyz" is not on PATH (ENOENT) (command: nonexistent-binary-xyz --acp)',
    code: 'agent_unavailable',
    command: 'nonexistent-binary-xyz --acp',
    reason: '"nonexistent-binary-xyz" is not on PATH (ENOENT)',
  });
  t.same(descendantsOf(daemon.pid).filter(isRunning), [], 'no agent process was left behind');

  daemon.child.kill('SIGTERM');
  t.same(await daemon.exited, { code: 0, signal: null });
});

t.test('a second signal during the drain forces the exit: agents SIGKILLed, exit 1', async (t) => {
  const { workspace, dataDir } = dirs(t);
  const stubborn = fileURLToPath(new URL('./fixtures/stubborn-agent.js', import.meta.url));
  // The agent ignores SIGTERM and the kill grace is a minute: the drain cannot end by itself.
  const daemon = startDaemon(t, [
    '--port',
    '0',
    '--workspace',
    workspace,
    '--data-dir',
    dataDir,
    '--agent',
    `${JSON.stringify(process.execPath)} ${JSON.stringify(stubborn)}`,
    '--kill-grace-ms',
    '60000',
  ]);
  let seen: ProcStat[] = [];
  reapOnTeardown(t, () => seen);
  const started = await listening(daemon);
  t.match(started.agent, stubborn, 'the start-up line names the agent command');
  const created = await fetch(`${started.url}/session`, { method: 'POST' });
  t.equal(created.status, 200, 'session created on the stubborn agent');
  await created.body?.cancel();
  seen = descendantsOf(daemon.pid);
  t.ok(seen.length >= 2, 'the agent and its grandchild run');

  daemon.child.kill('SIGTERM');
  // The first signal has been taken once the daemon says so; only then is the next one a second signal.
  while (!daemon.stderr().includes('acpd: received SIGTERM, draining...')) {
    await new Promise((resolve) => daemon.child.stderr?.once('data', resolve));
  }
  t.equal(daemon.child.exitCode, null, 'still draining: the agent ignores SIGTERM');
  daemon.child.kill('SIGTERM');
  const exit = await daemon.exited;
  t.same(exit, { code: 1, signal: null }, 'forced exit, code 1');
  t.same(survivors(seen, ownGroup()), [], 'the agent and its grandchild were SIGKILLed');
});
