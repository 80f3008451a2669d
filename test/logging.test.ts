// Request logs (issues 5 and 11): one JSON line per request, carrying the request id (the client's
// X-Request-Id when sane, echoed back) and saying the request in words; the probes' and the scrape's
// successes at debug; the bearer token never reaches a log line; pretty output only for a terminal, one
// line per request there too.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify, stripVTControlCharacters } from 'node:util';
import t, { type Test } from 'tap';
import { request } from 'undici';
import {
  PRETTY_OPTIONS,
  loggerOptions,
  logsArePretty,
  redactArgv,
  redactUrl,
  serializeRequest,
} from '../src/plugins/request-log.js';
import { until } from '../harness/wait.js';
import { startDaemon, tempDir, type TestDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { openEvents } from './support/sse.js';
import { textPrompt } from './support/values.js';

const run = promisify(execFile);
const TOKEN = 'tok-3f9c2a7e-never-in-logs';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Logged {
  d: TestDaemon;
  /** Everything written so far, as written. */
  text(): string;
  /** Every line, parsed (a line that is not JSON fails the test that reads it). */
  lines(): Record<string, unknown>[];
  /** The lines of one request. */
  forRequest(reqId: string): Record<string, unknown>[];
}

/** The real app on 127.0.0.1, its log lines captured through buildApp's logStream. */
async function loggedDaemon(t: Test, args: string[]): Promise<Logged> {
  const chunks: string[] = [];
  // With --token set, the daemon's default headers carry it.
  const d = await startDaemon(t, {
    args: ['--token', TOKEN, ...args],
    logStream: { write: (line) => void chunks.push(line) },
  });
  const text = () => chunks.join('');
  const lines = () =>
    text()
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => obj(JSON.parse(line)));
  return { d, text, lines, forRequest: (reqId) => lines().filter((line) => line.reqId === reqId) };
}

t.test('one JSON line per request, with the request id the client sent, echoed back', async (t) => {
  const log = await loggedDaemon(t, ['--log-level', 'info']);
  const res = await call(log.d, 'GET', '/capabilities', undefined, { 'x-request-id': 'trace-abc.1' });
  t.equal(res.status, 200);
  t.equal(res.headers['x-request-id'], 'trace-abc.1');

  const lines = log.forRequest('trace-abc.1');
  t.equal(lines.length, 1, 'exactly one line');
  const [line] = lines;
  t.match(line.msg, /^GET \/capabilities 200 \d+\.\dms$/, 'the message says the request in words');
  t.equal(line.level, 30);
  t.equal(line.route, '/capabilities');
  t.same(obj(line.res).statusCode, 200);
  t.equal(obj(line.req).method, 'GET');
  t.equal(obj(line.req).url, '/capabilities');
  t.type(line.responseTime, 'number');
  t.notOk(
    log.lines().some((l) => l.msg === 'incoming request'),
    'no separate "incoming" line',
  );
});

t.test('without a sane X-Request-Id the daemon makes one up', async (t) => {
  const log = await loggedDaemon(t, ['--log-level', 'info']);
  const none = await call(log.d, 'GET', '/capabilities');
  const fresh = String(none.headers['x-request-id']);
  t.match(fresh, UUID);
  t.equal(log.forRequest(fresh).length, 1);

  for (const bad of ['has spaces in it', 'x'.repeat(129), 'quote"s']) {
    const res = await call(log.d, 'GET', '/capabilities', undefined, { 'x-request-id': bad });
    const id = String(res.headers['x-request-id']);
    t.match(id, UUID, `${JSON.stringify(bad.slice(0, 20))} is replaced`);
    t.equal(log.forRequest(id).length, 1);
  }
  const requests = log.lines().filter((l) => 'res' in l);
  t.equal(requests.length, 4);
  t.equal(new Set(requests.map((l) => l.reqId)).size, 4, 'every request got its own id');
});

t.test('refused and failed requests are logged once each too', async (t) => {
  const log = await loggedDaemon(t, ['--log-level', 'info']);
  const denied = await call(log.d, 'GET', '/capabilities', undefined, {
    authorization: 'Bearer wrong',
    'x-request-id': 'denied-1',
  });
  t.equal(denied.status, 401);
  t.equal(denied.headers['x-request-id'], 'denied-1', 'echoed even when the guards refuse');
  t.same(
    log.forRequest('denied-1').map((l) => obj(l.res).statusCode),
    [401],
  );

  const missing = await call(log.d, 'POST', '/session/nope/prompt', textPrompt('x'), { 'x-request-id': 'missing-1' });
  t.equal(missing.status, 404);
  t.same(
    log.forRequest('missing-1').map((l) => obj(l.res).statusCode),
    [404],
  );
  t.equal(log.forRequest('missing-1')[0]?.route, '/session/:id/prompt');
});

t.test('a client that leaves mid-stream or mid-prompt still gets its one line', async (t) => {
  const log = await loggedDaemon(t, ['--log-level', 'info']);
  const id = await createSession(log.d);

  const stream = await openEvents(t, log.d, id, { headers: { 'x-request-id': 'stream-1' } });
  t.equal(stream.headers['x-request-id'], 'stream-1', 'echoed on the event stream too');
  await stream.waitFor((f) => f.retry !== undefined, 'retry frame');

  // A slow prompt the client walks away from once it is under way.
  const watcher = await openEvents(t, log.d, id);
  const ac = new AbortController();
  const prompt = call(
    log.d,
    'POST',
    `/session/${id}/prompt`,
    textPrompt('/slow 50 100'),
    { 'x-request-id': 'left-1' },
    ac.signal,
  ).catch((err: unknown) => err);
  await watcher.waitFor(
    (f) => JSON.stringify(f.envelope?.data ?? '').includes('agent_message_chunk'),
    'the prompt is running',
  );
  ac.abort();
  await prompt;
  stream.close();

  await until(() => log.forRequest('left-1').length > 0 && log.forRequest('stream-1').length > 0, 'both lines');
  for (const reqId of ['left-1', 'stream-1']) {
    const lines = log.forRequest(reqId);
    t.equal(lines.length, 1, `${reqId}: one line`);
    t.match(lines[0]?.msg, / aborted \d+(\.\d+)?m?s$/, `${reqId}: marked as aborted`);
    t.equal(lines[0]?.aborted, true);
    t.type(lines[0]?.responseTime, 'number');
    t.notOk(lines[0] !== undefined && 'res' in lines[0], `${reqId}: no status, none was sent`);
  }
});

t.test('the bearer token never reaches the logs, even with headers logged at debug', async (t) => {
  const log = await loggedDaemon(t, ['--log-level', 'debug']);
  const id = await createSession(log.d);
  t.equal(
    (await call(log.d, 'POST', `/session/${id}/prompt`, textPrompt('hello'), { 'x-request-id': 'prompt-1' })).status,
    200,
  );
  t.equal((await call(log.d, 'GET', '/capabilities', undefined, { authorization: `Bearer ${TOKEN}x` })).status, 401);
  t.equal((await call(log.d, 'GET', '/metrics')).status, 200);

  const [prompt] = log.forRequest('prompt-1');
  t.ok(prompt, 'the prompt was logged');
  const headers = obj(prompt?.headers);
  t.equal(headers.authorization, '[redacted]', 'the header is there, censored');
  t.equal(headers['x-request-id'], 'prompt-1');
  t.ok(log.lines().length >= 4);
  t.notOk(log.text().includes(TOKEN), 'the token appears nowhere in the log output');
});

t.test('redactUrl hides the values of sensitive query keys and keeps everything else', async (t) => {
  t.equal(redactUrl('/health'), '/health');
  t.equal(redactUrl('/health?deep'), '/health?deep');
  t.equal(redactUrl('/health?deep=1&token=abc'), '/health?deep=1&token=[redacted]');
  t.equal(
    redactUrl('/x?access_token=a&API_KEY=b&apiKey=c&key=d&client_secret=e&Password=f&auth=g&sig=h&page=2'),
    '/x?access_token=[redacted]&API_KEY=[redacted]&apiKey=[redacted]&key=[redacted]&client_secret=[redacted]' +
      '&Password=[redacted]&auth=[redacted]&sig=[redacted]&page=2',
  );
  t.equal(redactUrl('/x?to%6Ben=abc'), '/x?to%6Ben=[redacted]', 'a percent-encoded key is matched decoded');
  t.equal(redactUrl('/x?token=a&token=b'), '/x?token=[redacted]&token=[redacted]', 'every repeat');
  t.equal(redactUrl('/x?token'), '/x?token', 'a key without a value has nothing to hide');
  t.equal(redactUrl('/x?q=token%3Dabc'), '/x?q=token%3Dabc', 'only keys are matched, not values');
});

t.test(
  'a token in the query string never reaches the logs: completed, refused, unknown and aborted requests',
  async (t) => {
    const log = await loggedDaemon(t, ['--log-level', 'debug']);
    const secret = 'query-secret-5d1e';
    const id = await createSession(log.d);

    t.equal(
      (await call(log.d, 'GET', `/capabilities?token=${secret}`, undefined, { 'x-request-id': 'q-ok' })).status,
      200,
    );
    t.equal(
      (
        await call(log.d, 'GET', `/capabilities?access_token=${secret}&x=1`, undefined, {
          authorization: 'Bearer wrong',
          'x-request-id': 'q-401',
        })
      ).status,
      401,
    );
    t.equal(
      (await call(log.d, 'GET', `/nowhere?api_key=${secret}`, undefined, { 'x-request-id': 'q-404' })).status,
      404,
    );
    // An event stream the client leaves: its line is written by the 'close' path, not the completed one.
    const ac = new AbortController();
    const events = await request(`${log.d.baseUrl}/session/${id}/events?token=${secret}`, {
      headers: { ...log.d.headers, accept: 'text/event-stream', 'x-request-id': 'q-aborted' },
      signal: ac.signal,
    });
    t.equal(events.statusCode, 200);
    await new Promise((resolve) => events.body.once('data', resolve));
    ac.abort();
    events.body.on('error', () => {});
    await until(() => log.forRequest('q-aborted').length > 0, 'the aborted line');

    // The request's own line (at debug the bearer check adds one of its own for the 401).
    const requestOf = (reqId: string): Record<string, unknown> =>
      obj(log.forRequest(reqId).find((line) => 'req' in line));
    const urlOf = (reqId: string): unknown => obj(requestOf(reqId).req).url;
    t.equal(urlOf('q-ok'), '/capabilities?token=[redacted]', 'the key stays visible');
    t.equal(urlOf('q-401'), '/capabilities?access_token=[redacted]&x=1');
    t.equal(urlOf('q-404'), '/nowhere?api_key=[redacted]');
    t.equal(urlOf('q-aborted'), `/session/${id}/events?token=[redacted]`);
    t.equal(requestOf('q-aborted').aborted, true);
    t.match(requestOf('q-ok').msg, /^GET \/capabilities\?token=\[redacted\] 200 /, 'the message is redacted too');
    t.notOk(log.text().includes(secret), 'the secret appears nowhere in the log output');
  },
);

t.test('logger options: a capture stream, pretty only for a terminal with pino-pretty', async (t) => {
  const stream = { write: () => {} };
  t.same(loggerOptions({ logLevel: 'info' }, { stream, isTTY: true }), {
    level: 'info',
    redact: { paths: ['req.headers.authorization', 'headers.authorization'], censor: '[redacted]' },
    serializers: { req: serializeRequest },
    stream,
  });
  t.notOk('transport' in loggerOptions({ logLevel: 'info' }, { isTTY: false }), 'JSON when not a terminal');
  const pretty = loggerOptions({ logLevel: 'info' }, { isTTY: true });
  t.match(pretty, { transport: { target: /pino-pretty/ } }, 'pino-pretty for a terminal (a dev dependency here)');
  t.match(pretty, { transport: { options: PRETTY_OPTIONS } }, 'with our options');
  t.equal(logsArePretty(true), true);
  t.equal(logsArePretty(false), false);
});

t.test('the probes and the metrics scrape log their successes at debug, their failures at info', async (t) => {
  const quiet = await loggedDaemon(t, ['--log-level', 'info']);
  for (const url of ['/health', '/livez', '/readyz', '/metrics']) {
    t.equal((await call(quiet.d, 'GET', url, undefined, { 'x-request-id': `quiet${url}` })).status, 200, url);
  }
  const denied = await call(quiet.d, 'GET', '/metrics', undefined, {
    authorization: 'Bearer wrong',
    'x-request-id': 'scrape-401',
  });
  t.equal(denied.status, 401);
  t.equal((await call(quiet.d, 'GET', '/capabilities', undefined, { 'x-request-id': 'loud-1' })).status, 200);
  await until(() => quiet.forRequest('loud-1').length > 0, 'the last line');
  t.same(
    quiet
      .lines()
      .filter((line) => 'req' in line)
      .map((line) => line.reqId),
    ['scrape-401', 'loud-1'],
    'at info: only the refused scrape and the ordinary request',
  );
  t.equal(quiet.forRequest('scrape-401')[0]?.level, 30);

  const verbose = await loggedDaemon(t, ['--log-level', 'debug']);
  for (const url of ['/health', '/livez', '/readyz', '/metrics']) {
    await call(verbose.d, 'GET', url, undefined, { 'x-request-id': `verbose${url}` });
    const lines = verbose.forRequest(`verbose${url}`);
    t.equal(lines.length, 1, `${url}: one line at debug`);
    t.equal(lines[0]?.level, 20, `${url}: level debug`);
    t.match(lines[0]?.msg, new RegExp(`^GET ${url} 200 `));
  }
});

t.test('redactArgv hides the values of sensitive-looking options of a command line', async (t) => {
  t.same(redactArgv(['qwen', '--acp']), ['qwen', '--acp']);
  t.same(
    redactArgv(['node', 'a.js', '--api-key', 'sk-1', '--token=abc', '-p', 'x', '--secret', '--verbose', 'ok']),
    ['node', 'a.js', '--api-key', '[redacted]', '--token=[redacted]', '-p', 'x', '--secret', '[redacted]', 'ok'],
    'the word after a sensitive option is its value, whatever it looks like',
  );
  t.same(redactArgv(['--model=qwen3', '--data-dir', '/d']), ['--model=qwen3', '--data-dir', '/d']);
});

t.test('a real process logs JSON to a pipe and pretty lines to a terminal', async (t) => {
  const dir = tempDir(t, 'acpd-log-proc-');
  const appModule = fileURLToPath(new URL('../src/app.js', import.meta.url));
  const configModule = fileURLToPath(new URL('../src/config.js', import.meta.url));
  const script = path.join(dir, 'one-request.mjs');
  // Builds the app exactly as server.ts does (no log options), serves one request, closes.
  writeFileSync(
    script,
    [
      `import { buildApp } from ${JSON.stringify(appModule)};`,
      `import { loadConfig } from ${JSON.stringify(configModule)};`,
      `const config = loadConfig({ argv: ['--port', '0', '--workspace', ${JSON.stringify(dir)}], env: { PATH: process.env.PATH ?? '' }, cwd: ${JSON.stringify(dir)} });`,
      'const app = await buildApp(config);',
      `await app.inject({ method: 'GET', url: '/capabilities', headers: { 'x-request-id': 'proc-check-1' } });`,
      'await app.close();',
      '',
    ].join('\n'),
  );

  const piped = await run(process.execPath, [script], { cwd: dir });
  const jsonLines = piped.stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => obj(JSON.parse(line)));
  t.ok(
    jsonLines.some((line) => line.reqId === 'proc-check-1' && 'res' in line),
    'stdout is a pipe: JSON lines',
  );

  // util-linux `script` gives the child a pseudo-terminal for stdout.
  const command = [process.execPath, script].map((word) => `'${word}'`).join(' ');
  const tty = await run('script', ['-qec', command, '/dev/null'], { cwd: dir });
  // Colours off or on, the request is one line: its words, then its id in brackets.
  const plain = stripVTControlCharacters(tty.stdout);
  const requestLines = plain.split(/\r?\n/).filter((line) => line.includes('proc-check-1'));
  t.equal(requestLines.length, 1, 'one line for the request');
  t.match(requestLines[0], /INFO: GET \/capabilities 200 \d+\.\dms \(proc-check-1\)$/);
  t.notOk(
    tty.stdout.split(/\r?\n/).some((line) => line.trim().startsWith('{"level"')),
    'stdout is a terminal: no raw JSON lines',
  );
  t.match(tty.stdout, /INFO/, "pino-pretty's level label");
});
