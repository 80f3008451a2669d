// The request guards of reference §2.1, over real sockets: the CORS deny
// (any Origin), the Host allowlist of loopback binds, the bearer token with
// its exact parsing, the order of all three against each other and against
// body parsing, the non-loopback variant, and the token never reaching the
// agent's environment. Then issue 5's additions: the token is never read
// from the query string, and --require-auth closes the probes' loopback
// exemption and refuses to start without a token.
import { spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { request } from 'undici';
import { environOf } from '../harness/proc-table.js';
import { buildTestApp, startDaemon, tempDir, testConfig, type TestDaemon } from './support/app.js';
import { call, obj } from './support/http.js';
import { VERSION } from '../src/version.js';

const CORS = '{"error":"Request denied by CORS policy"}';
const BAD_HOST = '{"error":"Invalid Host header"}';
const UNAUTHORIZED = '{"error":"Unauthorized"}';

type Method = 'GET' | 'POST' | 'OPTIONS' | 'HEAD' | 'DELETE';

interface Raw {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** One request with exactly these headers (nothing from the daemon's defaults). */
async function send(
  d: TestDaemon,
  method: Method,
  url: string,
  headers: Record<string, string>,
  body?: string,
): Promise<Raw> {
  const res = await request(`${d.baseUrl}${url}`, { method, headers, body });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text };
}

/** A request with no Host header at all: HTTP/1.0 over a bare socket, where Host is optional. */
function withoutHost(d: TestDaemon, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(d.port, '127.0.0.1');
    let data = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      data += chunk;
    });
    socket.on('error', reject);
    socket.on('end', () => resolve(data));
    socket.write(`GET ${path} HTTP/1.0\r\n\r\n`);
  });
}

const EVERY_ROUTE: [Method, string][] = [
  ['GET', '/health'],
  ['GET', '/health?deep'],
  ['GET', '/capabilities'],
  ['POST', '/session'],
  ['POST', '/session/s-1/load'],
  ['POST', '/session/s-1/resume'],
  ['GET', '/workspace/%2Ftmp/sessions'],
  ['POST', '/session/s-1/prompt'],
  ['POST', '/session/s-1/cancel'],
  ['POST', '/session/s-1/model'],
  ['GET', '/session/s-1/events'],
  ['POST', '/permission/r-1'],
  ['GET', '/no-such-route'],
  ['OPTIONS', '/session'],
  ['OPTIONS', '/health'],
];

t.test('a foreign Origin → 403 CORS on every route, before the Host check and before auth', async (t) => {
  const d = await startDaemon(t, { args: ['--token', 's3cret'] });
  const host = `127.0.0.1:${d.port}`;
  for (const [method, url] of EVERY_ROUTE) {
    // Another port, `null`, another scheme, a longer host: none is the daemon's own origin.
    for (const origin of ['http://localhost:3000', 'null', `https://${host}`, `http://${host}.evil.com`]) {
      const res = await send(d, method, url, { host, origin, 'access-control-request-method': 'POST' });
      t.equal(res.status, 403, `${method} ${url} Origin: ${origin}`);
      t.equal(res.text, CORS, `${method} ${url} Origin: ${origin}`);
      t.equal(res.headers['access-control-allow-origin'], undefined, 'no CORS grant');
    }
  }
  const authorized = await send(
    d,
    'POST',
    '/session',
    { host, origin: 'https://app.example', authorization: 'Bearer s3cret' },
    '{}',
  );
  t.equal(authorized.text, CORS, 'a valid token does not help');
  const badHost = await send(d, 'GET', '/health', { host: 'evil.com', origin: 'https://evil.com' });
  t.equal(badHost.text, CORS, 'the Origin check comes before the Host check');
  t.equal(d.app.channels.spawnCount, 0, 'no agent was started');
});

t.test("the daemon's own origin passes (Swagger UI's Try it out); the other guards still apply", async (t) => {
  const d = await startDaemon(t, { args: ['--token', 's3cret'] });
  const auth = { authorization: 'Bearer s3cret' };
  for (const name of ['127.0.0.1', 'localhost']) {
    const host = `${name}:${d.port}`;
    const origin = `http://${host}`;
    const caps = await send(d, 'GET', '/capabilities', { host, origin, ...auth });
    t.equal(caps.status, 200, `${origin}: GET`);
    t.equal(caps.headers['access-control-allow-origin'], undefined, 'same origin needs no CORS header');
    const created = await send(
      d,
      'POST',
      '/session',
      { host, origin, 'content-type': 'application/json', ...auth },
      '{}',
    );
    t.equal(created.status, 200, `${origin}: POST /session`);
    t.equal((await send(d, 'GET', '/capabilities', { host, origin })).text, UNAUTHORIZED, 'the token still counts');
  }
  const crossed = await send(d, 'GET', '/capabilities', {
    host: `127.0.0.1:${d.port}`,
    origin: `http://localhost:${d.port}`,
    ...auth,
  });
  t.equal(crossed.text, CORS, 'an origin naming the daemon by another name is another origin');
  const foreignHost = await send(d, 'GET', '/capabilities', { host: 'evil.com', origin: 'http://evil.com', ...auth });
  t.equal(foreignHost.text, BAD_HOST, 'a rebound name is its own origin, and the Host check refuses it');
});

t.test('--trust-proxy: the own origin is the one the proxy was asked for', async (t) => {
  const forwarded = {
    'x-forwarded-proto': 'https',
    'x-forwarded-host': 'acpd.example',
    origin: 'https://acpd.example',
  };
  const trusting = await startDaemon(t, { args: ['--trust-proxy', '127.0.0.1'] });
  const res = await send(trusting, 'GET', '/capabilities', { host: `127.0.0.1:${trusting.port}`, ...forwarded });
  t.equal(res.status, 200, 'behind a trusted proxy');
  const plain = await startDaemon(t);
  const refused = await send(plain, 'GET', '/capabilities', { host: `127.0.0.1:${plain.port}`, ...forwarded });
  t.equal(refused.text, CORS, 'X-Forwarded-* from a peer that is not trusted are not believed');
});

t.test('--allow-origin: listed origins get CORS answers and preflights; the rest stay refused', async (t) => {
  const d = await startDaemon(t, {
    args: ['--token', 's3cret', '--allow-origin', 'https://app.example,http://localhost:3000'],
  });
  const host = `127.0.0.1:${d.port}`;
  const origin = 'https://app.example';
  const preflight = await send(d, 'OPTIONS', '/session/s-1/prompt', {
    host,
    origin,
    'access-control-request-method': 'POST',
    'access-control-request-headers': 'authorization, content-type',
  });
  t.equal(preflight.status, 204, 'a preflight needs no token');
  t.equal(preflight.headers['access-control-allow-origin'], origin);
  t.equal(preflight.headers['access-control-allow-methods'], 'GET, HEAD, POST');
  t.equal(preflight.headers['access-control-allow-headers'], 'authorization, content-type, last-event-id');
  t.equal(preflight.headers.vary, 'Origin');
  t.equal(preflight.text, '');

  const caps = await send(d, 'GET', '/capabilities', { host, origin, authorization: 'Bearer s3cret' });
  t.equal(caps.status, 200);
  t.equal(caps.headers['access-control-allow-origin'], origin);
  t.equal(caps.headers['access-control-expose-headers'], 'retry-after');
  const anonymous = await send(d, 'GET', '/capabilities', { host, origin });
  t.equal(anonymous.text, UNAUTHORIZED, 'a listed origin still needs the token');
  t.equal(anonymous.headers['access-control-allow-origin'], origin, 'and can read why it was refused');
  const second = await send(d, 'GET', '/health', { host, origin: 'http://localhost:3000' });
  t.equal(second.status, 200, 'every listed origin counts');

  for (const other of ['https://app.example.evil', 'http://app.example', 'https://APP.example', 'null']) {
    const res = await send(d, 'OPTIONS', '/session', { host, origin: other, 'access-control-request-method': 'POST' });
    t.equal(res.text, CORS, `${other}: refused, preflight included`);
    t.equal(res.headers['access-control-allow-origin'], undefined);
  }
  const badHost = await send(d, 'OPTIONS', '/session', {
    host: 'evil.com',
    origin,
    'access-control-request-method': 'POST',
  });
  t.equal(badHost.text, BAD_HOST, 'the Host check comes before a preflight answer');
  t.equal(d.app.channels.spawnCount, 0, 'no agent was started');
});

t.test('loopback Host allowlist: the four names with the actual port, any letter case', async (t) => {
  const d = await startDaemon(t);
  const port = d.port;
  const allowed = [
    `localhost:${port}`,
    `127.0.0.1:${port}`,
    `[::1]:${port}`,
    `host.docker.internal:${port}`,
    `LocalHost:${port}`,
    `HOST.DOCKER.INTERNAL:${port}`,
  ];
  for (const host of allowed) {
    for (const url of ['/health', '/capabilities']) {
      const res = await send(d, 'GET', url, { host });
      t.equal(res.status, 200, `${host} ${url}`);
    }
  }
  const otherPort = port === 65535 ? port - 1 : port + 1;
  const denied = [
    'evil.com',
    `evil.com:${port}`,
    'localhost',
    '127.0.0.1',
    `localhost:${otherPort}`,
    `127.0.0.1:80`,
    `0.0.0.0:${port}`,
    `[::ffff:127.0.0.1]:${port}`,
    `localhost.:${port}`,
    `sub.localhost:${port}`,
    `localhost:${port}.evil.com`,
  ];
  for (const host of denied) {
    for (const [method, url] of [
      ['GET', '/health'],
      ['GET', '/capabilities'],
      ['POST', '/session'],
    ] as const) {
      const res = await send(d, method, url, { host });
      t.equal(res.status, 403, `${host} ${method} ${url}`);
      t.equal(res.text, BAD_HOST, `${host} ${method} ${url}`);
    }
  }
  const missing = await withoutHost(d, '/health');
  t.match(missing, /^HTTP\/1\.[01] 403 /, 'no Host header at all is refused');
  t.ok(missing.endsWith(BAD_HOST), 'with the Host envelope');
  t.equal(d.app.channels.spawnCount, 0, 'no agent was started');
});

t.test('bearer token: exact parsing, case-sensitive token, the same 401 for every failure', async (t) => {
  const d = await startDaemon(t, { args: ['--token', 's3cret'] });
  const host = `127.0.0.1:${d.port}`;
  const refused = [
    undefined,
    '',
    's3cret',
    'Bearer',
    'Bearer ',
    'Bearer wrong',
    'Bearer s3cre',
    'Bearer s3cret2',
    'Bearer S3CRET',
    'Basic s3cret',
    'Token s3cret',
    'Bearers3cret',
    'Bearer\ts3cret',
    'Bearer\t s3cret',
    'Bearer s3cret s3cret',
  ];
  for (const authorization of refused) {
    for (const [method, url] of [
      ['GET', '/capabilities'],
      ['POST', '/session/s-1/cancel'],
      ['GET', '/session/s-1/events'],
    ] as const) {
      const headers: Record<string, string> = { host };
      if (authorization !== undefined) headers.authorization = authorization;
      const res = await send(d, method, url, headers);
      t.equal(res.status, 401, `${JSON.stringify(authorization)} ${method} ${url}`);
      t.equal(res.text, UNAUTHORIZED, `${JSON.stringify(authorization)} ${method} ${url}`);
      t.match(res.headers['content-type'], /^application\/json/);
    }
  }
  const accepted = [
    'Bearer s3cret',
    'bearer   s3cret',
    'BEARER s3cret',
    'bEaReR s3cret',
    'Bearer \t s3cret',
    'Bearer \ts3cret',
  ];
  for (const authorization of accepted) {
    const res = await send(d, 'GET', '/capabilities', { host, authorization });
    t.equal(res.status, 200, JSON.stringify(authorization));
  }
});

t.test('bearer token: loopback /health is exempt; everything else, unknown routes included, is not', async (t) => {
  const d = await startDaemon(t, { args: ['--token', 's3cret'] });
  const host = `localhost:${d.port}`;
  t.equal((await send(d, 'GET', '/health', { host })).text, '{"status":"ok"}');
  const deep = await send(d, 'GET', '/health?deep=1', { host });
  t.equal(deep.status, 200);
  t.strictSame(JSON.parse(deep.text), { status: 'ok', sessions: 0, pendingPermissions: 0, version: VERSION });
  t.equal((await send(d, 'HEAD', '/health', { host })).status, 200, 'HEAD rides on the GET route');
  t.equal(
    (await send(d, 'GET', '/health', { host, authorization: 'Bearer wrong' })).status,
    200,
    'a wrong token does not matter there',
  );

  const guarded = [
    ['POST', '/health'],
    ['GET', '/healthz'],
    ['GET', '/no-such-route'],
    ['OPTIONS', '/session'],
    ['DELETE', '/session/s-1'],
  ] as const;
  for (const [method, url] of guarded) {
    const res = await send(d, method, url, { host });
    t.equal(res.status, 401, `${method} ${url}`);
    t.equal(res.text, UNAUTHORIZED, `${method} ${url}`);
  }
  const withToken = await send(d, 'GET', '/no-such-route', { host, authorization: 'Bearer s3cret' });
  t.equal(withToken.status, 404, 'past auth an unknown route is a 404');
  t.equal(
    (await send(d, 'GET', '/health', { host: 'evil.com' })).text,
    BAD_HOST,
    'the Host check still applies to /health',
  );
  t.equal(
    (await send(d, 'GET', '/capabilities', { host: 'evil.com' })).text,
    BAD_HOST,
    'the Host check comes before auth',
  );
});

t.test('bearer token: auth runs before the body is read', async (t) => {
  const d = await startDaemon(t, { args: ['--token', 's3cret'] });
  const host = `127.0.0.1:${d.port}`;
  const json = { host, 'content-type': 'application/json' };

  const badJson = await send(d, 'POST', '/session', json, '{not json');
  t.equal(badJson.status, 401, 'an unauthenticated bad body is a 401, not a 400');
  t.equal(badJson.text, UNAUTHORIZED);
  const badJsonAuthed = await send(d, 'POST', '/session', { ...json, authorization: 'Bearer s3cret' }, '{not json');
  t.equal(badJsonAuthed.status, 400);
  t.equal(badJsonAuthed.text, '{"error":"Invalid JSON in request body"}');

  const big = JSON.stringify({ prompt: [{ type: 'text', text: 'x'.repeat(10 * 1024 * 1024 + 1) }] });
  const tooLarge = await send(d, 'POST', '/session/s-1/prompt', { ...json, authorization: 'Bearer s3cret' }, big);
  t.equal(tooLarge.status, 413, 'an authenticated oversized body reaches the parser');
  t.equal(tooLarge.text, '{"error":"Request body too large (max 10 MB)"}');
  const tooLargeAnonymous = await send(d, 'POST', '/session/s-1/prompt', json, big);
  t.equal(tooLargeAnonymous.status, 401, 'an unauthenticated oversized body is refused before it is read');
  t.equal(tooLargeAnonymous.text, UNAUTHORIZED);
  t.equal(d.app.channels.spawnCount, 0);
});

t.test('non-loopback bind: /health needs the token, and the Host check is skipped', async (t) => {
  // Listening on 127.0.0.1 with the config of a public bind is enough: the
  // guards read the config, not the socket.
  const d = await startDaemon(t, { args: ['--token', 's3cret'], config: { isLoopback: false } });
  const auth = { authorization: 'Bearer s3cret' };
  for (const url of ['/health', '/health?deep']) {
    const anonymous = await send(d, 'GET', url, { host: `127.0.0.1:${d.port}` });
    t.equal(anonymous.status, 401, `${url} without a token`);
    t.equal(anonymous.text, UNAUTHORIZED);
  }
  t.equal((await send(d, 'HEAD', '/health', { host: `127.0.0.1:${d.port}` })).status, 401, 'HEAD too');
  for (const host of ['acpd.example.com', 'evil.com', `10.0.0.7:${d.port}`, `localhost:${d.port}`]) {
    const health = await send(d, 'GET', '/health', { host, ...auth });
    t.equal(health.status, 200, `${host} /health with the token`);
    t.equal(health.text, '{"status":"ok"}');
    t.equal(
      (await send(d, 'GET', '/capabilities', { host, ...auth })).status,
      200,
      `${host} /capabilities with the token`,
    );
    t.equal((await send(d, 'GET', '/capabilities', { host })).text, UNAUTHORIZED, `${host} /capabilities without`);
  }
  const deep = await send(d, 'GET', '/health?deep=true', { host: 'acpd.example.com', ...auth });
  t.strictSame(JSON.parse(deep.text), { status: 'ok', sessions: 0, pendingPermissions: 0, version: VERSION });
  const origin = await send(d, 'GET', '/health', {
    host: 'acpd.example.com',
    origin: 'https://acpd.example.com',
    ...auth,
  });
  t.equal(origin.text, CORS, 'Origin is still denied');
});

t.test('the agent never sees ACPD_TOKEN, and sees the rest of the environment', async (t) => {
  const env = { ACPD_TOKEN: 's3cret', PATH: process.env.PATH ?? '', AGENT_SEES_ME: 'yes' };

  // The config loader: the token is read, and left out of the agent's environment.
  const config = testConfig(t, { env });
  t.equal(config.token, 's3cret');
  t.equal(Object.hasOwn(config.agentEnv, 'ACPD_TOKEN'), false);
  t.strictSame(config.agentEnv, { PATH: env.PATH, AGENT_SEES_ME: 'yes' });

  // End to end: the embedded agent process's real environment, read from /proc.
  const d = await startDaemon(t, { env });
  const anonymous = await call(d, 'GET', '/capabilities', undefined, { authorization: '' });
  t.equal(anonymous.status, 401, 'the token from the environment is in force');
  const created = await call(d, 'POST', '/session', {});
  t.equal(created.status, 200);
  t.type(obj(created.body).sessionId, 'string');
  const [channel] = [...d.app.channels.alive];
  const pid = channel?.pid;
  if (pid === undefined) throw new Error('no agent process');
  const agentEnv = environOf(pid);
  t.ok(agentEnv.includes('AGENT_SEES_ME=yes'), 'the rest of the environment is passed on');
  t.ok(agentEnv.includes(`PATH=${env.PATH}`));
  t.notOk(
    agentEnv.some((entry) => entry.startsWith('ACPD_TOKEN=')),
    'no ACPD_TOKEN in the agent',
  );
  t.notOk(
    agentEnv.some((entry) => entry.includes('s3cret')),
    'the token value appears nowhere',
  );
});

/** Writes `head` byte for byte on a bare socket (HTTP/1.0: the server closes when done) and returns the reply. */
function rawExchange(d: TestDaemon, head: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(d.port, '127.0.0.1');
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      data += chunk;
    });
    socket.on('error', reject);
    socket.on('end', () => resolve(data));
    socket.write(head);
  });
}

t.test('bearer token: white space the contract keeps in the credentials is not trimmed away', async (t) => {
  // @fastify/bearer-auth trims the credentials; the contract only skips SP/HTAB before them. A latin-1 NBSP
  // (byte 0xA0) survives Node's header parser, so these credentials are not the token.
  const d = await startDaemon(t, { args: ['--token', 's3cret'] });
  const ask = (authorization: string) =>
    rawExchange(
      d,
      Buffer.from(
        `GET /capabilities HTTP/1.0\r\nHost: 127.0.0.1:${d.port}\r\nAuthorization: ${authorization}\r\n\r\n`,
        'latin1',
      ),
    );
  for (const authorization of [
    'Bearer s3cret\u00a0',
    'Bearer \u00a0s3cret',
    'Bearer\u00a0s3cret',
    'Bearer \t\u00a0 s3cret',
  ]) {
    const reply = await ask(authorization);
    t.match(reply, /^HTTP\/1\.[01] 401 /, JSON.stringify(authorization));
    t.ok(reply.endsWith(UNAUTHORIZED), `${JSON.stringify(authorization)}: the 401 envelope`);
  }
  t.match(await ask('Bearer s3cret'), /^HTTP\/1\.[01] 200 /, 'the same path with the plain token works');
  t.match(
    await ask('Bearer \t s3cret \t '),
    /^HTTP\/1\.[01] 200 /,
    'trailing SP/HTAB never reach the app: Node strips them',
  );

  // app.inject skips Node's parser, so a trailing blank does reach the guard there, and is refused as the
  // contract's byte-exact comparison would refuse it.
  const app = await buildTestApp(t, { args: ['--token', 's3cret'] });
  for (const [authorization, status] of [
    ['Bearer s3cret', 200],
    ['Bearer s3cret ', 401],
    ['Bearer s3cret\t', 401],
    ['bearer \ts3cret', 200],
  ] as const) {
    const res = await app.inject({ method: 'GET', url: '/capabilities', headers: { authorization } });
    t.equal(res.statusCode, status, `inject ${JSON.stringify(authorization)}`);
    if (status === 401) t.equal(res.body, UNAUTHORIZED);
  }
});

t.test('the token is never taken from the query string', async (t) => {
  const d = await startDaemon(t, { args: ['--token', 's3cret'] });
  const host = `127.0.0.1:${d.port}`;
  const queries = [
    'token=s3cret',
    'access_token=s3cret',
    'authorization=Bearer%20s3cret',
    'bearer=s3cret',
    'token=s3cret&access_token=s3cret',
  ];
  const routes = [
    ['GET', '/capabilities'],
    ['GET', '/session/s-1/events'],
    ['POST', '/session'],
    ['POST', '/session/s-1/cancel'],
    ['GET', '/metrics'],
  ] as const;
  for (const query of queries) {
    for (const [method, url] of routes) {
      const res = await send(d, method, `${url}?${query}`, { host });
      t.equal(res.status, 401, `${method} ${url}?${query}`);
      t.equal(res.text, UNAUTHORIZED, `${method} ${url}?${query}`);
    }
  }
  const withHeader = await send(d, 'GET', '/capabilities?token=wrong', { host, authorization: 'Bearer s3cret' });
  t.equal(withHeader.status, 200, 'the header decides; the query string is ignored either way');
  t.equal(d.app.channels.spawnCount, 0, 'no agent was started');
});

t.test('--require-auth: the probes need the token on loopback too; the other guards still come first', async (t) => {
  const open = await startDaemon(t, { args: ['--token', 's3cret'] });
  const locked = await startDaemon(t, { args: ['--token', 's3cret', '--require-auth'] });
  t.equal(locked.config.requireAuth, true);
  for (const url of ['/health', '/health?deep', '/livez', '/readyz']) {
    for (const method of ['GET', 'HEAD'] as const) {
      const exempt = await send(open, method, url, { host: `127.0.0.1:${open.port}` });
      t.equal(exempt.status, 200, `without --require-auth: ${method} ${url} is public on loopback`);

      const host = `127.0.0.1:${locked.port}`;
      for (const authorization of [undefined, 'Bearer wrong', 'Basic s3cret']) {
        const headers: Record<string, string> = { host };
        if (authorization !== undefined) headers.authorization = authorization;
        const res = await send(locked, method, url, headers);
        t.equal(res.status, 401, `--require-auth: ${method} ${url} with ${JSON.stringify(authorization)}`);
        if (method === 'GET') t.equal(res.text, UNAUTHORIZED);
      }
      const authed = await send(locked, method, url, { host, authorization: 'Bearer s3cret' });
      t.equal(authed.status, 200, `--require-auth: ${method} ${url} with the token`);
    }
  }
  t.equal(
    (await send(locked, 'GET', '/health', { host: 'evil.com' })).text,
    BAD_HOST,
    'the Host check still runs first',
  );
  t.equal(
    (await send(locked, 'GET', '/livez', { host: `127.0.0.1:${locked.port}`, origin: 'http://x' })).text,
    CORS,
    'and the Origin check before it',
  );
});

t.test('--require-auth: the real process refuses to start without a token', async (t) => {
  const server = fileURLToPath(new URL('../src/server.js', import.meta.url));
  const workspace = tempDir(t);
  const env: Record<string, string> = { PATH: process.env.PATH ?? '' };
  const refusal = 'acpd: Refusing to start with --require-auth but no bearer token. Set ACPD_TOKEN or pass --token.\n';
  const runs: Array<[string, string[], Record<string, string>]> = [
    ['the flag', ['--require-auth'], env],
    ['the variable', [], { ...env, ACPD_REQUIRE_AUTH: 'true' }],
    ['a blank token', ['--require-auth'], { ...env, ACPD_TOKEN: '   ' }],
  ];
  for (const [label, args, runEnv] of runs) {
    const run = spawnSync(process.execPath, [server, '--port', '0', '--workspace', workspace, ...args], {
      env: runEnv,
      encoding: 'utf8',
      timeout: 30_000,
    });
    t.equal(run.status, 1, `${label}: exit 1`);
    t.equal(run.stderr, refusal, `${label}: the reason on stderr`);
    t.equal(run.stdout, '', `${label}: never listened`);
  }
});
