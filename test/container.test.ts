// What the image does, without Docker (issue 5): the Dockerfile's last stage
// gets package.json, package-lock.json and the built dist/, installs the
// production dependencies with `npm ci --omit=dev`, and runs its CMD; Docker
// then runs the HEALTHCHECK command, and `docker stop` sends SIGTERM (tini
// passes it on). Here the same happens in a clean temp dir: the CMD and the
// HEALTHCHECK are read from the Dockerfile itself, so that breaking either
// breaks this test.
import { execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { freePort } from '../harness/ports.js';
import { livingDescendants, livingInGroup } from '../harness/proc-table.js';
import { within } from '../harness/wait.js';
import { tempDir } from './support/app.js';

const run = promisify(execFile);
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const DOCKERFILE = path.join(REPO, 'Dockerfile');
/** The start-up line, on stderr (stdout is the JSON log's). */
const LISTENING = /^acpd listening on http:\/\/127\.0\.0\.1:(\d+) /m;
/** A generous bound, so that a daemon that never comes up fails the test instead of hanging it. */
const WAIT_LIMIT_MS = 30_000;

interface Image {
  /** The final stage's CMD, as exec-form argv. */
  cmd: string[];
  /** The HEALTHCHECK's CMD, as exec-form argv. */
  healthcheck: string[];
  /** The final stage's COPY lines. */
  copies: string[];
  /** Every other instruction of the final stage, as written. */
  stage: string[];
}

/** The Dockerfile's final stage, read the way Docker reads it (line continuations joined). */
function readDockerfile(): Image {
  const lines = readFileSync(DOCKERFILE, 'utf8')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  const lastFrom = lines.findLastIndex((line) => /^FROM\s/i.test(line));
  const stage = lines.slice(lastFrom);
  const execForm = (text: string, what: string): string[] => {
    const parsed: unknown = JSON.parse(text);
    if (
      !Array.isArray(parsed) ||
      !parsed.every((word): word is string => typeof word === 'string') ||
      parsed.length === 0
    ) {
      throw new Error(`${what} is not in exec form: ${text}`);
    }
    return parsed;
  };
  const cmdLine = stage.findLast((line) => /^CMD\s/i.test(line));
  const healthLine = stage.find((line) => /^HEALTHCHECK\s/i.test(line));
  const healthCmd = healthLine === undefined ? undefined : /\sCMD\s+(\[.*\])\s*$/i.exec(healthLine)?.[1];
  if (cmdLine === undefined || healthCmd === undefined)
    throw new Error('the Dockerfile has no CMD or no HEALTHCHECK ... CMD [...]');
  return {
    cmd: execForm(cmdLine.replace(/^CMD\s+/i, ''), 'CMD'),
    healthcheck: execForm(healthCmd, 'HEALTHCHECK CMD'),
    copies: stage.filter((line) => /^COPY\s/i.test(line)),
    stage,
  };
}

/** Our environment without tap's instrumentation or the npm script context we may run in. */
function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (
      value === undefined ||
      key === 'NODE_OPTIONS' ||
      key.startsWith('npm_') ||
      key.startsWith('ACPD_') ||
      key.startsWith('TAP')
    )
      continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

/** `node` in an exec-form argv is the image's node: ours. */
function resolveNode(argv: string[]): [string, string[]] {
  const [command = '', ...args] = argv;
  return [command === 'node' ? process.execPath : command, args];
}

/** Runs the HEALTHCHECK command with the container's environment; resolves with its exit code. */
async function healthcheck(image: Image, env: Record<string, string>): Promise<number> {
  const [command, args] = resolveNode(image.healthcheck);
  try {
    await run(command, args, { env: cleanEnv(env), timeout: 5_000 });
    return 0;
  } catch (err) {
    const code = typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined;
    return typeof code === 'number' ? code : -1;
  }
}

interface Started {
  pid: number;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** The image's CMD in `appDir`, with `env` as `docker run -e` would give it; waits for the listening line. */
async function startCmd(t: Test, image: Image, appDir: string, env: Record<string, string>): Promise<Started> {
  const [command, args] = resolveNode(image.cmd);
  const child = spawn(command, args, { cwd: appDir, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error('spawn failed');
  let stdout = '';
  let stderr = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  const listening = new Promise<boolean>((resolve) => {
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      if (LISTENING.test(stderr)) resolve(true);
    });
    void exited.then(() => resolve(false));
  });
  const up = await within(listening, 'the listening line', WAIT_LIMIT_MS).catch(() => false);
  if (!up) throw new Error(`the CMD did not start:\nstdout: ${stdout}\nstderr: ${stderr}`);
  return { pid: child.pid, stdout: () => stdout, stderr: () => stderr, exited };
}

t.test('the image, reproduced: production install, CMD, HEALTHCHECK, SIGTERM', async (t) => {
  const image = readDockerfile();
  t.strictSame(image.cmd, ['node', 'dist/server.js'], 'CMD runs the built server');
  t.same(
    image.copies,
    ['COPY package.json package-lock.json ./', 'COPY --from=build /app/dist ./dist'],
    'the final stage gets exactly the manifest, the lockfile and dist/: what this test copies',
  );
  t.ok(image.stage.includes('USER node'), 'it runs as the unprivileged node user');
  t.ok(
    image.stage.includes('ENTRYPOINT ["/usr/bin/tini", "--"]'),
    'tini is PID 1: signals reach node, orphans are reaped',
  );
  t.ok(existsSync(path.join(REPO, 'dist', 'server.js')), 'dist/ is built (npm test builds it first)');

  // The final stage, in a clean directory.
  const appDir = tempDir(t, 'acpd-image-');
  for (const file of ['package.json', 'package-lock.json']) cpSync(path.join(REPO, file), path.join(appDir, file));
  cpSync(path.join(REPO, 'dist'), path.join(appDir, 'dist'), { recursive: true });
  const installStart = performance.now();
  await run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'], {
    cwd: appDir,
    env: cleanEnv(),
    timeout: 90_000,
  });
  const installMs = performance.now() - installStart;
  t.ok(existsSync(path.join(appDir, 'node_modules', 'fastify')), 'the runtime dependencies are installed');
  for (const dev of ['typescript', 'tap', 'eventsource', 'pino-pretty']) {
    t.notOk(existsSync(path.join(appDir, 'node_modules', dev)), `no dev dependency: ${dev}`);
  }

  const workspace = tempDir(t, 'acpd-image-ws-');
  const port = await freePort();
  const healthEnv = { ACPD_PORT: String(port) };
  t.not(await healthcheck(image, healthEnv), 0, 'the healthcheck fails while nothing listens');

  const startedAt = performance.now();
  const daemon = await startCmd(t, image, appDir, { ACPD_WORKSPACE: workspace, ACPD_PORT: String(port) });
  const startMs = performance.now() - startedAt;
  t.match(
    daemon.stderr(),
    `acpd listening on http://127.0.0.1:${port} (mode=http-bridge, auth=off, workspace=${JSON.stringify(workspace)}, agent=embedded)\n`,
  );
  t.equal(await healthcheck(image, healthEnv), 0, 'the HEALTHCHECK command passes');

  // An agent child to reap: a session makes the daemon spawn its embedded agent.
  const created = await fetch(`http://127.0.0.1:${port}/session`, { method: 'POST' });
  t.equal(created.status, 200);
  const agents = livingDescendants(daemon.pid);
  t.ok(agents.length >= 1, 'the embedded agent runs under the daemon');

  const stopAt = performance.now();
  process.kill(daemon.pid, 'SIGTERM');
  const exit = await daemon.exited;
  const stopMs = performance.now() - stopAt;
  t.strictSame(exit, { code: 0, signal: null }, 'SIGTERM: a clean exit 0');
  for (const pid of agents) t.strictSame(livingInGroup(pid), [], `agent ${pid} and its process group are gone`);
  t.match(daemon.stderr(), /received SIGTERM, draining/);
  // No pino-pretty in the image: what a log collector reads on stdout is JSON lines, and only that.
  const records = daemon
    .stdout()
    .split('\n')
    .filter((line) => line !== '')
    .map((line): unknown => JSON.parse(line));
  t.ok(
    records.some((r) => typeof r === 'object' && r !== null && 'msg' in r && r.msg === 'listening'),
    'every stdout line is JSON, the listening record among them',
  );
  t.comment(
    `npm ci --omit=dev ${(installMs / 1000).toFixed(1)} s, start ${startMs.toFixed(0)} ms, SIGTERM → exit ${stopMs.toFixed(0)} ms`,
  );
});

t.test('the HEALTHCHECK sends the token when the container has one', async (t) => {
  // With a token and --require-auth, /health answers only with the token, as on the non-loopback bind a
  // container uses (ACPD_HOSTNAME=0.0.0.0): the healthcheck must read ACPD_TOKEN.
  const image = readDockerfile();
  const workspace = tempDir(t, 'acpd-image-ws-');
  const port = await freePort();
  const env = {
    ACPD_WORKSPACE: workspace,
    ACPD_PORT: String(port),
    ACPD_TOKEN: 'container-secret',
    ACPD_REQUIRE_AUTH: 'true',
  };
  // The repository's own dist/ and node_modules stand in for the image here: the install is the first test's subject.
  const daemon = await startCmd(t, image, REPO, env);
  t.equal(await healthcheck(image, { ACPD_PORT: String(port), ACPD_TOKEN: 'container-secret' }), 0, 'with the token');
  t.not(await healthcheck(image, { ACPD_PORT: String(port) }), 0, 'without it, /health is refused and the check fails');
  t.not(await healthcheck(image, { ACPD_PORT: String(port), ACPD_TOKEN: 'wrong' }), 0, 'a wrong token fails too');
  process.kill(daemon.pid, 'SIGTERM');
  t.strictSame(await daemon.exited, { code: 0, signal: null });
});
