// Where the daemon's output goes (issue 11). Without a terminal, stdout is the log's alone: JSON lines,
// one of them saying where the daemon listens, and nothing else; the start-up line people and scripts read
// is on stderr, once. In a terminal, pino-pretty gets PRETTY_OPTIONS, and a request is one line there: its
// method, URL, status and time, then its id; an error keeps its stack on the lines below.
import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import pinoPretty from 'pino-pretty';
import t, { type Test } from 'tap';
import { PRETTY_OPTIONS } from '../src/plugins/request-log.js';
import { until, within } from '../harness/wait.js';
import { startDaemon, tempDir } from './support/app.js';
import { call, createSession, obj } from './support/http.js';

const SERVER = fileURLToPath(new URL('../../dist/server.js', import.meta.url));

/** Everything written to it, as text. */
class Capture extends Writable {
  text = '';

  override _write(chunk: Buffer | string, _encoding: BufferEncoding, callback: () => void): void {
    this.text += chunk.toString();
    callback();
  }

  lines(): string[] {
    return this.text.split('\n').filter((line) => line !== '');
  }
}

/** pino-pretty as the production transport runs it, colours off, writing into `out`. */
function prettyStream(out: Capture): ReturnType<typeof pinoPretty> {
  return pinoPretty({ ...PRETTY_OPTIONS, colorize: false, destination: out, sync: true });
}

function cleanEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !key.startsWith('ACPD_')) env[key] = value;
  }
  return env;
}

interface Run {
  stdout: string;
  stderr: string;
}

/** dist/server.js with stdout and stderr as pipes, at debug; `visit` runs once it listens, then SIGTERM. */
async function runDaemon(t: Test, visit: (baseUrl: string) => Promise<void>): Promise<Run> {
  const workspace = tempDir(t, 'acpd-logout-ws-');
  const args = ['--port', '0', '--workspace', workspace, '--log-level', 'debug'];
  const child = spawn(process.execPath, [SERVER, ...args], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    out.stdout += text;
  });
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    out.stderr += text;
  });
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let url: string | undefined;
  await until(() => {
    url = /^acpd listening on (http:\/\/\S+) /m.exec(out.stderr)?.[1];
    if (child.exitCode !== null) throw new Error(`the daemon exited early:\n${out.stderr}`);
    return url !== undefined;
  }, 'the listening line');
  if (url === undefined) throw new Error('unreachable');
  await visit(url);
  child.kill('SIGTERM');
  t.equal(await within(exited, 'the daemon to exit'), 0, 'a clean exit');
  return out;
}

t.test('without a terminal, stdout carries JSON lines only; the start-up line is on stderr, once', async (t) => {
  const run = await runDaemon(t, async (baseUrl) => {
    for (const path of ['/health', '/livez', '/readyz', '/metrics', '/capabilities', '/nowhere']) {
      await (await fetch(`${baseUrl}${path}`)).body?.cancel();
    }
    // An agent starts, and its stderr comes through the log at debug.
    await (await fetch(`${baseUrl}/session`, { method: 'POST' })).body?.cancel();
  });

  const lines = run.stdout.split('\n').filter((line) => line !== '');
  t.ok(lines.length > 8, `stdout has the log (${lines.length} lines)`);
  const notJson = lines.filter((line) => {
    try {
      obj(JSON.parse(line));
      return false;
    } catch {
      return true;
    }
  });
  t.same(notJson, [], 'every stdout line is a JSON object');
  const records = lines.map((line) => obj(JSON.parse(line)));

  const listening = records.filter((record) => record.msg === 'listening');
  t.equal(listening.length, 1, 'one listening record');
  t.match(listening[0], { level: 30, url: /^http:\/\/127\.0\.0\.1:\d+$/, auth: 'off', agent: 'embedded' });
  t.notOk(
    records.some((record) => /Server listening/.test(String(record.msg))),
    "Fastify's own listening line is not there",
  );
  const requests = records.filter((record) => 'req' in record);
  t.same(
    requests.map((record) => String(record.msg).replace(/ [\d.]+m?s$/, '')),
    [
      'GET /health 200',
      'GET /livez 200',
      'GET /readyz 200',
      'GET /metrics 200',
      'GET /capabilities 200',
      'GET /nowhere 404',
      'POST /session 200',
    ],
    'one record per request',
  );

  const stderr = run.stderr.split('\n').filter((line) => line !== '');
  t.equal(stderr.filter((line) => line.startsWith('acpd listening on ')).length, 1, 'one start-up line');
  t.match(stderr[0], /^acpd listening on http:\/\/127\.0\.0\.1:\d+ \(mode=http-bridge, auth=off, workspace="/);
  t.notOk(
    stderr.some((line) => line.startsWith('{')),
    'no log record on stderr',
  );
});

t.test('in a terminal a request is one line: method, URL, status, time and id', async (t) => {
  const out = new Capture();
  const d = await startDaemon(t, { args: ['--log-level', 'info'], logStream: prettyStream(out) });
  t.equal((await call(d, 'GET', '/capabilities', undefined, { 'x-request-id': 'pretty-1' })).status, 200);
  t.equal((await call(d, 'GET', '/health', undefined, { 'x-request-id': 'pretty-probe' })).status, 200);
  const id = await createSession(d);
  const missing = await call(d, 'POST', `/session/${id}x/prompt`, { prompt: [] }, { 'x-request-id': 'pretty-2' });
  t.not(missing.status, 200);
  await until(() => out.text.includes('pretty-2'), 'the last request line');

  const mine = (reqId: string): string[] => out.lines().filter((line) => line.includes(`(${reqId})`));
  t.same(mine('pretty-probe'), [], 'the probe is at debug, below the level');
  t.equal(mine('pretty-1').length, 1);
  t.match(mine('pretty-1')[0], /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: GET \/capabilities 200 \d+\.\dms \(pretty-1\)$/);
  t.equal(mine('pretty-2').length, 1);
  t.match(
    mine('pretty-2')[0],
    new RegExp(`^\\[[\\d:.]+\\] INFO: POST /session/${id}x/prompt ${missing.status} \\d+\\.\\dms \\(pretty-2\\)$`),
  );
  t.notOk(
    out.lines().some((line) => /^\s+(req|res|responseTime|route):/.test(line)),
    'no field dumped on lines of its own',
  );
});

t.test('in a terminal an error keeps its stack, and other fields stay on the line', async (t) => {
  const out = new Capture();
  const d = await startDaemon(t, { args: ['--log-level', 'info'], logStream: prettyStream(out) });
  // The app's own logger, as a request's would be.
  const log = d.app.log.child({ reqId: 'err-1' });
  log.error({ err: new Error('the agent went away'), sessionId: 's-1' }, 'request failed');
  log.info({ sessionId: 's-2' }, 'session created');
  await until(() => out.text.includes('s-2'), 'both records');

  const lines = out.lines().filter((line) => !line.includes('Server listening'));
  t.match(lines[0], /^\[[\d:.]+\] ERROR: request failed \(err-1\) \{"sessionId":"s-1"\}$/);
  t.match(out.text, /Error: the agent went away\n\s+at /, 'the stack follows');
  t.match(lines.at(-1), /^\[[\d:.]+\] INFO: session created \(err-1\) \{"sessionId":"s-2"\}$/);
});
