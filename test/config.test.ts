// loadConfig: defaults, flag/env precedence, every validation rule with its
// exact message, the boot order of those rules, argv splitting and the
// agent's environment. Pure function tests: no app, no sockets.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import {
  ConfigError,
  ConfigSchema,
  fieldFor,
  flagFor,
  formatListenUrl,
  isLoopbackHost,
  loadConfig,
  parseCommandLine,
  splitCommand,
  usage,
  type Config,
  type FieldOf,
  type SettingName,
} from '../src/config.js';

const REFUSAL_TAIL =
  'without a bearer token. Set ACPD_TOKEN or pass --token, or rebind to loopback (127.0.0.1, localhost, ::1, or [::1]).';
const BRACKET_TAIL =
  `brackets indicate an IPv6 literal but the value isn't a clean [addr] form. ` +
  'Pass the address without a trailing :port (use --port for that), e.g. "--hostname [::1] --port 4170".';

// A workspace that exists for every test of this file.
const root = realpathSync(t.testdir({ ws: { 'file.txt': 'x' }, other: {} }));
const ws = join(root, 'ws');

function load(argv: string[] = [], env: NodeJS.ProcessEnv = {}, cwd = ws): Config {
  return loadConfig({ argv, env, cwd });
}

/** The ConfigError message thrown by `fn`, or a failure when there is none. */
function failure(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

t.test('defaults', async (t) => {
  const config = load();
  t.same(config, {
    port: 4170,
    hostname: '127.0.0.1',
    listenHost: '127.0.0.1',
    isLoopback: true,
    token: undefined,
    workspace: ws,
    maxSessions: 20,
    maxPendingPrompts: 5,
    maxConnections: 256,
    agent: undefined,
    dataDir: join(ws, '.acpd'),
    initTimeoutMs: 10_000,
    permissionTimeoutMs: 300_000,
    permissionPolicy: 'first-responder',
    consensusQuorum: 0,
    killGraceMs: 5_000,
    drainTimeoutMs: 10_000,
    warmSessions: 1,
    logLevel: 'info',
    rateLimitPrompts: 0,
    rateLimitMutations: 0,
    rateLimitReads: 0,
    maxEventLoopDelayMs: 1_000,
    maxHeapUsedBytes: 0,
    maxRssBytes: 0,
    requireAuth: false,
    allowFileWrites: false,
    trustProxy: false,
    allowOrigin: [],
    sseHeartbeatMs: 15_000,
    maxBodyBytes: 10 * 1024 * 1024,
    maxBodyDepth: 64,
    ringBytes: 16 * 1024 * 1024,
    subscriberBacklogBytes: 8 * 1024 * 1024,
    eventLog: 'sqlite',
    idempotencyTtl: 86_400,
    headerTimeoutMs: 10_000,
    redisPrefix: 'acpd:',
    leaseTtl: 10,
    webhookUrl: [],
    webhookSecret: undefined,
    webhookMaxAttempts: 10,
    webhookRetryMs: 1_000,
    agentEnv: {},
  });
  t.equal(config.token, undefined);
  t.equal(config.agent, undefined);
});

// Adding a setting takes one edit, its schema entry: its Config field follows
// from its name. Checked in types (the line below fails to compile if Config
// and the schema drift apart) and at run time.
type ExpectedField =
  Exclude<FieldOf<SettingName>, 'tokenFile' | 'webhookSecretFile'> | 'listenHost' | 'isLoopback' | 'agentEnv';
const configMatchesSchema: [keyof Config] extends [ExpectedField]
  ? [ExpectedField] extends [keyof Config]
    ? true
    : false
  : false = true;

t.test('every setting of the schema reaches Config under its derived name, with its default', async (t) => {
  t.ok(configMatchesSchema);
  t.equal(fieldFor('ACPD_PORT'), 'port');
  t.equal(fieldFor('ACPD_MAX_EVENT_LOOP_DELAY_MS'), 'maxEventLoopDelayMs');
  t.equal(fieldFor('ACPD_SSE_HEARTBEAT_MS'), 'sseHeartbeatMs');

  const config: Record<string, unknown> = { ...load() };
  const names = Object.keys(ConfigSchema.properties).filter(
    (key): key is SettingName => key in ConfigSchema.properties,
  );
  // The settings whose default is converted on its way into Config.
  const converted: Partial<Record<SettingName, unknown>> = { ACPD_TRUST_PROXY: false, ACPD_WEBHOOK_URL: [] };
  const expectedKeys = ['listenHost', 'isLoopback', 'agentEnv'];
  for (const name of names) {
    const field = fieldFor(name);
    // The token file is only a source of the token, the secret file of the webhook secret.
    if (name === 'ACPD_TOKEN_FILE' || name === 'ACPD_WEBHOOK_SECRET_FILE') {
      t.notOk(field in config, name);
      continue;
    }
    expectedKeys.push(field);
    t.ok(field in config, `${name} → ${field}`);
    const fallback: unknown = ConfigSchema.properties[name].default;
    if (fallback !== undefined) {
      t.equal(
        config[field],
        name in converted ? converted[name] : fallback,
        `${field} defaults to the schema's default`,
      );
    }
  }
  t.same(Object.keys(config).sort(), expectedKeys.sort(), 'and Config has no field beyond them');
});

t.test('every setting has an environment twin', async (t) => {
  const config = load(
    [],
    {
      ACPD_PORT: '8080',
      ACPD_HOSTNAME: 'localhost',
      ACPD_TOKEN: 'secret',
      ACPD_WORKSPACE: ws,
      ACPD_MAX_SESSIONS: '3',
      ACPD_MAX_CONNECTIONS: '7',
      ACPD_AGENT: 'qwen --acp',
      ACPD_DATA_DIR: '/var/lib/acpd',
      ACPD_INIT_TIMEOUT_MS: '500',
      ACPD_PERMISSION_TIMEOUT_MS: '0',
      ACPD_KILL_GRACE_MS: '100',
      ACPD_DRAIN_TIMEOUT_MS: '150',
      ACPD_WARM_SESSIONS: '2',
      ACPD_LOG_LEVEL: 'debug',
      ACPD_RATE_LIMIT_PROMPTS: '11',
      ACPD_RATE_LIMIT_MUTATIONS: '12',
      ACPD_RATE_LIMIT_READS: '13',
      ACPD_MAX_EVENT_LOOP_DELAY_MS: '14',
      ACPD_MAX_HEAP_USED_BYTES: '15',
      ACPD_MAX_RSS_BYTES: '16',
      ACPD_REQUIRE_AUTH: 'true',
      ACPD_TRUST_PROXY: '10.0.0.1',
      ACPD_ALLOW_ORIGIN: 'https://app.example',
      ACPD_SSE_HEARTBEAT_MS: '17',
      ACPD_MAX_BODY_BYTES: '18',
      ACPD_MAX_BODY_DEPTH: '19',
      ACPD_RING_BYTES: '20',
      ACPD_SUBSCRIBER_BACKLOG_BYTES: '21',
      ACPD_EVENT_LOG: 'memory',
      ACPD_IDEMPOTENCY_TTL: '23',
      ACPD_HEADER_TIMEOUT_MS: '22',
    },
    '/',
  );
  t.match(config, {
    port: 8080,
    hostname: 'localhost',
    token: 'secret',
    workspace: ws,
    maxSessions: 3,
    maxConnections: 7,
    agent: ['qwen', '--acp'],
    dataDir: '/var/lib/acpd',
    initTimeoutMs: 500,
    permissionTimeoutMs: 0,
    killGraceMs: 100,
    drainTimeoutMs: 150,
    warmSessions: 2,
    logLevel: 'debug',
    rateLimitPrompts: 11,
    rateLimitMutations: 12,
    rateLimitReads: 13,
    maxEventLoopDelayMs: 14,
    maxHeapUsedBytes: 15,
    maxRssBytes: 16,
    requireAuth: true,
    trustProxy: ['10.0.0.1'],
    allowOrigin: ['https://app.example'],
    sseHeartbeatMs: 17,
    maxBodyBytes: 18,
    maxBodyDepth: 19,
    ringBytes: 20,
    subscriberBacklogBytes: 21,
    eventLog: 'memory',
    idempotencyTtl: 23,
    headerTimeoutMs: 22,
  });
});

t.test('flags win over their environment twins', async (t) => {
  const other = join(root, 'other');
  const env = {
    ACPD_PORT: '8080',
    ACPD_HOSTNAME: 'localhost',
    ACPD_TOKEN: 'from-env',
    ACPD_WORKSPACE: ws,
    ACPD_MAX_SESSIONS: '3',
    ACPD_MAX_CONNECTIONS: '7',
    ACPD_AGENT: 'qwen --acp',
    ACPD_DATA_DIR: '/env/data',
    ACPD_INIT_TIMEOUT_MS: '500',
    ACPD_PERMISSION_TIMEOUT_MS: '600',
    ACPD_KILL_GRACE_MS: '700',
    ACPD_DRAIN_TIMEOUT_MS: '750',
    ACPD_WARM_SESSIONS: '3',
    ACPD_LOG_LEVEL: 'debug',
    ACPD_RATE_LIMIT_PROMPTS: '11',
    ACPD_RATE_LIMIT_MUTATIONS: '12',
    ACPD_RATE_LIMIT_READS: '13',
    ACPD_MAX_EVENT_LOOP_DELAY_MS: '14',
    ACPD_MAX_HEAP_USED_BYTES: '15',
    ACPD_MAX_RSS_BYTES: '16',
    ACPD_REQUIRE_AUTH: 'true',
    ACPD_TRUST_PROXY: '10.0.0.1',
    ACPD_SSE_HEARTBEAT_MS: '17',
  };
  const config = load(
    [
      '--port',
      '9090',
      '--hostname',
      '::1',
      '--token',
      'from-flag',
      '--workspace',
      other,
      '--max-sessions',
      '4',
      '--max-connections',
      '8',
      '--agent',
      'gemini --experimental-acp',
      '--data-dir',
      '/flag/data',
      '--init-timeout-ms',
      '501',
      '--permission-timeout-ms',
      '601',
      '--kill-grace-ms',
      '701',
      '--drain-timeout-ms',
      '751',
      '--warm-sessions',
      '4',
      '--log-level',
      'warn',
      '--rate-limit-prompts',
      '21',
      '--rate-limit-mutations',
      '22',
      '--rate-limit-reads',
      '23',
      '--max-event-loop-delay-ms',
      '24',
      '--max-heap-used-bytes',
      '25',
      '--max-rss-bytes',
      '26',
      '--require-auth=false',
      '--trust-proxy',
      'false',
      '--sse-heartbeat-ms',
      '27',
    ],
    env,
  );
  t.match(config, {
    port: 9090,
    hostname: '::1',
    listenHost: '::1',
    token: 'from-flag',
    workspace: other,
    maxSessions: 4,
    maxConnections: 8,
    agent: ['gemini', '--experimental-acp'],
    dataDir: '/flag/data',
    initTimeoutMs: 501,
    permissionTimeoutMs: 601,
    killGraceMs: 701,
    drainTimeoutMs: 751,
    warmSessions: 4,
    logLevel: 'warn',
    rateLimitPrompts: 21,
    rateLimitMutations: 22,
    rateLimitReads: 23,
    maxEventLoopDelayMs: 24,
    maxHeapUsedBytes: 25,
    maxRssBytes: 26,
    requireAuth: false,
    trustProxy: false,
    sseHeartbeatMs: 27,
  });
  // Only the flag it was given overrides; the rest still come from env.
  t.equal(load(['--port', '1'], env).maxSessions, 3);
});

t.test('--flag=value works like --flag value; the last repeat wins', async (t) => {
  t.equal(load(['--port=1234']).port, 1234);
  t.equal(load(['--port', '1', '--port', '2']).port, 2);
  t.equal(load(['--token=--weird']).token, '--weird');
});

t.test('blank environment values count as unset', async (t) => {
  const config = load([], {
    ACPD_PORT: '',
    ACPD_HOSTNAME: '  ',
    ACPD_WORKSPACE: '',
    ACPD_AGENT: ' ',
    ACPD_LOG_LEVEL: '',
  });
  t.equal(config.port, 4170);
  t.equal(config.hostname, '127.0.0.1');
  t.equal(config.workspace, ws);
  t.equal(config.agent, undefined);
  t.equal(config.logLevel, 'info');
});

t.test('loadConfig reads only the env it is given', async (t) => {
  process.env.ACPD_PORT = '1';
  t.teardown(() => {
    delete process.env.ACPD_PORT;
  });
  t.equal(load().port, 4170);
});

t.test('port', async (t) => {
  t.equal(load(['--port', '0']).port, 0);
  t.equal(load(['--port', '65535']).port, 65535);
  t.equal(
    failure(() => load(['--port', '65536'])),
    'Invalid --port "65536": must be an integer from 0 to 65535.',
  );
  t.equal(
    failure(() => load(['--port', '-1'])),
    'Invalid --port "-1": must be an integer from 0 to 65535.',
  );
  t.equal(
    failure(() => load(['--port', 'http'])),
    'Invalid --port "http": must be an integer from 0 to 65535.',
  );
  t.equal(
    failure(() => load(['--port', '80.5'])),
    'Invalid --port "80.5": must be an integer from 0 to 65535.',
  );
  t.equal(
    failure(() => load(['--port', '1e400'])),
    'Invalid --port "1e400": must be an integer from 0 to 65535.',
  );
  t.equal(
    failure(() => load(['--port', 'Infinity'])),
    'Invalid --port "Infinity": must be an integer from 0 to 65535.',
  );
  t.equal(
    failure(() => load([], { ACPD_PORT: 'abc' })),
    'Invalid --port "abc" (from ACPD_PORT): must be an integer from 0 to 65535.',
  );
});

t.test('token is trimmed; blank means none; a blank flag still wins', async (t) => {
  t.equal(load([], { ACPD_TOKEN: '  abc\n' }).token, 'abc');
  t.equal(load(['--token', ' xyz ']).token, 'xyz');
  t.equal(load([], { ACPD_TOKEN: '   ' }).token, undefined);
  t.equal(load(['--token', ''], { ACPD_TOKEN: 'env' }).token, undefined);
  t.equal(load(['--token', '  '], { ACPD_TOKEN: 'env' }).token, undefined);
});

t.test('--token-file / ACPD_TOKEN_FILE: read, trimmed, relative to the current directory', async (t) => {
  const dir = realpathSync(t.testdir({ 'token.txt': '  from-file\n', 'empty.txt': ' \n\t', 'two.txt': 'a\nb\n' }));
  t.equal(load(['--token-file', join(dir, 'token.txt')]).token, 'from-file');
  t.equal(load([], { ACPD_TOKEN_FILE: join(dir, 'token.txt') }).token, 'from-file');
  t.equal(load(['--token-file', 'token.txt'], {}, dir).token, 'from-file', 'relative to cwd');
  t.equal(load([], { ACPD_TOKEN_FILE: '  ' }).token, undefined, 'a blank variable is unset');
  // A token from a file counts like any other: it allows a non-loopback bind.
  t.equal(load(['--hostname', '0.0.0.0', '--token-file', join(dir, 'token.txt')]).isLoopback, false);

  t.equal(
    failure(() => load(['--token-file', join(dir, 'empty.txt')])),
    `Invalid --token-file "${join(dir, 'empty.txt')}": the file is empty.`,
  );
  t.equal(
    failure(() => load([], { ACPD_TOKEN_FILE: join(dir, 'two.txt') })),
    `Invalid --token-file "${join(dir, 'two.txt')}" (from ACPD_TOKEN_FILE): the token must be a single line.`,
  );
  t.equal(
    failure(() => load(['--token-file', join(dir, 'missing.txt')])),
    `Invalid --token-file "${join(dir, 'missing.txt')}": cannot be read (no such file).`,
  );
  t.match(
    failure(() => load(['--token-file', dir])),
    new RegExp(`^Invalid --token-file "${dir}": cannot be read \\(EISDIR`),
    'a directory names the reason',
  );
  t.equal(
    failure(() => load(['--token-file', '='])),
    `Invalid --token-file "=": cannot be read (no such file).`,
  );
  t.equal(
    failure(() => load(['--token-file', ''])),
    'Invalid --token-file "": must be a non-empty string.',
  );
});

t.test('a token and a token file together are refused, whatever their sources', async (t) => {
  const dir = realpathSync(t.testdir({ 'token.txt': 'from-file' }));
  const file = join(dir, 'token.txt');
  t.equal(
    failure(() => load(['--token', 'x', '--token-file', file])),
    'Both --token and --token-file are set: give one of --token (ACPD_TOKEN) and --token-file (ACPD_TOKEN_FILE).',
  );
  t.equal(
    failure(() => load([], { ACPD_TOKEN: 'x', ACPD_TOKEN_FILE: file })),
    'Both ACPD_TOKEN and ACPD_TOKEN_FILE are set: give one of --token (ACPD_TOKEN) and --token-file (ACPD_TOKEN_FILE).',
  );
  t.match(
    failure(() => load(['--token-file', file], { ACPD_TOKEN: 'x' })),
    /^Both ACPD_TOKEN and --token-file are set/,
  );
  t.match(
    failure(() => load(['--token', ''], { ACPD_TOKEN_FILE: file })),
    /^Both --token and ACPD_TOKEN_FILE/,
  );
  t.equal(load([], { ACPD_TOKEN: '', ACPD_TOKEN_FILE: file }).token, 'from-file', 'a blank variable is no token');
});

t.test('the token file is checked first, as the token is (boot order step 1)', async (t) => {
  t.match(
    failure(() => load(['--token-file', '/nonexistent/acpd-token', '--hostname', 'a:1', '--port', 'x'])),
    /^Invalid --token-file/,
  );
});

t.test('agentEnv is the environment minus ACPD_TOKEN and undefined values', async (t) => {
  const config = load([], { ACPD_TOKEN: 'secret', OPENAI_API_KEY: 'k', PATH: '/bin', ACPD_PORT: '1', GONE: undefined });
  t.same(config.agentEnv, { OPENAI_API_KEY: 'k', PATH: '/bin', ACPD_PORT: '1' });
  t.notOk('ACPD_TOKEN' in config.agentEnv);
  const dir = realpathSync(t.testdir({ 'token.txt': 'from-file' }));
  const fromFile = load([], { ACPD_TOKEN_FILE: join(dir, 'token.txt'), PATH: '/bin' });
  t.same(fromFile.agentEnv, { PATH: '/bin' }, 'nor the token file path');
  t.notOk('GONE' in config.agentEnv);
  t.equal(config.token, 'secret');
});

t.test('hostname: loopback forms need no token', async (t) => {
  for (const host of ['127.0.0.1', 'localhost', 'LocalHost', '::1', '[::1]']) {
    const config = load(['--hostname', host]);
    t.equal(config.isLoopback, true, host);
    t.equal(config.hostname, host, `${host} kept as typed`);
  }
  t.equal(load(['--hostname', '[::1]']).listenHost, '::1');
  t.equal(load(['--hostname', '::1']).listenHost, '::1');
});

t.test('hostname: host:port typo', async (t) => {
  t.equal(
    failure(() => load(['--hostname', 'h:1'])),
    'Invalid --hostname "h:1": looks like a "host:port" combination. Use --port for the port, e.g. "--hostname <host> --port <port>".',
  );
  t.equal(
    failure(() => load([], { ACPD_HOSTNAME: 'localhost:4170', ACPD_TOKEN: 't' })),
    'Invalid --hostname "localhost:4170": looks like a "host:port" combination. Use --port for the port, e.g. "--hostname <host> --port <port>".',
  );
  // Raw IPv6 has at least two colons and is not a typo.
  t.equal(load(['--hostname', 'fe80::1', '--token', 't']).listenHost, 'fe80::1');
});

t.test('hostname: non-loopback needs a token', async (t) => {
  t.equal(
    failure(() => load(['--hostname', '0.0.0.0'])),
    `Refusing to bind 0.0.0.0:4170 ${REFUSAL_TAIL}`,
  );
  t.equal(
    failure(() => load(['--hostname', '192.168.1.10', '--port', '9000'])),
    `Refusing to bind 192.168.1.10:9000 ${REFUSAL_TAIL}`,
  );
  t.equal(
    failure(() => load(['--hostname', '0.0.0.0', '--token', '  '])),
    `Refusing to bind 0.0.0.0:4170 ${REFUSAL_TAIL}`,
  );
  const config = load(['--hostname', '0.0.0.0'], { ACPD_TOKEN: 'secret' });
  t.equal(config.isLoopback, false);
  t.equal(config.listenHost, '0.0.0.0');
  t.equal(config.token, 'secret');
});

t.test('hostname: bracketed IPv6 must be a clean [addr]', async (t) => {
  const withToken = (host: string): Config => load(['--hostname', host, '--token', 't']);
  for (const host of ['[]', '[::1]:80', '[::1', '[a]b]', '[2001:db8::1]:8080']) {
    t.equal(
      failure(() => withToken(host)),
      `Invalid --hostname "${host}": ${BRACKET_TAIL}`,
      host,
    );
  }
  const config = withToken('[2001:db8::1]');
  t.equal(config.hostname, '[2001:db8::1]');
  t.equal(config.listenHost, '2001:db8::1');
  t.equal(config.isLoopback, false);
  // Without a token a non-loopback bracket form is refused first (step 3
  // comes before step 7), as in the reference.
  t.equal(
    failure(() => load(['--hostname', '[]'])),
    `Refusing to bind []:4170 ${REFUSAL_TAIL}`,
  );
  t.equal(
    failure(() => load(['--hostname', '[::1]:80'])),
    `Refusing to bind [::1]:80:4170 ${REFUSAL_TAIL}`,
  );
});

t.test('hostname: empty is rejected', async (t) => {
  t.equal(
    failure(() => load(['--hostname', ''])),
    'Invalid --hostname "": must be a non-empty string.',
  );
});

t.test('workspace', async (t) => {
  t.equal(
    failure(() => load(['--workspace', 'rel/dir'])),
    'Invalid --workspace "rel/dir": must be an absolute path.',
  );
  t.equal(
    failure(() => load(['--workspace', ''])),
    'Invalid --workspace "": must be an absolute path.',
  );
  const missing = join(root, 'missing');
  t.equal(
    failure(() => load(['--workspace', missing])),
    `Invalid --workspace "${missing}": directory does not exist.`,
  );
  const file = join(ws, 'file.txt');
  t.equal(
    failure(() => load(['--workspace', file])),
    `Invalid --workspace "${file}": exists but is not a directory.`,
  );
  const underFile = join(file, 'sub');
  t.equal(
    failure(() => load(['--workspace', underFile])),
    `Invalid --workspace "${underFile}": directory does not exist.`,
  );
  // The default is the cwd, and it is checked the same way.
  t.equal(
    failure(() => load([], {}, 'relative')),
    'Invalid --workspace "relative": must be an absolute path.',
  );
  t.equal(
    failure(() => load([], {}, missing)),
    `Invalid --workspace "${missing}": directory does not exist.`,
  );
});

t.test('workspace is canonical: symlinks resolved, trailing slash and dots gone', async (t) => {
  const dir = realpathSync(t.testdir({ real: {}, link: t.fixture('symlink', 'real') }));
  t.equal(load(['--workspace', join(dir, 'link')]).workspace, join(dir, 'real'));
  t.equal(load(['--workspace', `${dir}/real/`]).workspace, join(dir, 'real'));
  t.equal(load(['--workspace', `${dir}/real/../real/.`]).workspace, join(dir, 'real'));
  t.equal(load([], {}, join(dir, 'link')).workspace, join(dir, 'real'));
});

t.test('workspace: permission denied', async (t) => {
  const dir = t.testdir({ locked: { ws: {} } });
  const target = join(dir, 'locked', 'ws');
  const expected = `Invalid --workspace "${target}": permission denied (EACCES). The path exists but cannot be stat'd by the current user.`;
  if (process.getuid?.() !== 0) {
    chmodSync(join(dir, 'locked'), 0o000);
    try {
      t.equal(
        failure(() => load(['--workspace', target])),
        expected,
      );
    } finally {
      // Before tap removes the fixture, which it could not do through 000.
      chmodSync(join(dir, 'locked'), 0o755);
    }
    return;
  }
  // root is never denied, so the check runs in a child as "nobody".
  chmodSync(join(dir, 'locked'), 0o000);
  const configModule = fileURLToPath(new URL('../src/config.js', import.meta.url));
  const script = `
    const { loadConfig } = await import(${JSON.stringify(configModule)});
    try { loadConfig({ argv: ['--workspace', process.argv[1]], env: {}, cwd: '/' }); console.log('no error'); }
    catch (err) { console.log(err.name + ': ' + err.message); }`;
  // tap adds its instrumentation to every child through NODE_OPTIONS, and
  // "nobody" may not write its records; `env -u` drops it for this one.
  const run = spawnSync(
    '/usr/bin/env',
    ['-u', 'NODE_OPTIONS', process.execPath, '--input-type=module', '-e', script, target],
    {
      uid: 65534,
      gid: 65534,
      cwd: '/',
      encoding: 'utf8',
    },
  );
  t.equal(run.stderr, '');
  t.equal(run.stdout.trim(), `ConfigError: ${expected}`);
});

t.test('max pending prompts: flag and variable; 0 (no limit) kept as 0, negatives refused', async (t) => {
  t.equal(load(['--max-pending-prompts', '2']).maxPendingPrompts, 2);
  t.equal(load([], { ACPD_MAX_PENDING_PROMPTS: '0' }).maxPendingPrompts, 0);
  t.throws(() => load(['--max-pending-prompts', '-1']));
});

t.test('max sessions and max connections: 0 or Infinity mean unlimited', async (t) => {
  t.equal(load(['--max-sessions', '0']).maxSessions, Infinity);
  t.equal(load(['--max-sessions', 'Infinity']).maxSessions, Infinity);
  t.equal(load([], { ACPD_MAX_SESSIONS: 'infinity' }).maxSessions, Infinity);
  t.equal(load(['--max-connections', '0']).maxConnections, Infinity);
  t.equal(load(['--max-connections', 'Infinity']).maxConnections, Infinity);
  t.equal(load(['--max-connections', '1']).maxConnections, 1);
  t.equal(
    failure(() => load(['--max-sessions', '-1'])),
    'Invalid --max-sessions "-1": must be an integer >= 0 (0 = unlimited).',
  );
  t.equal(
    failure(() => load(['--max-sessions', 'NaN'])),
    'Invalid --max-sessions "NaN": must be an integer >= 0 (0 = unlimited).',
  );
  t.equal(
    failure(() => load(['--max-sessions=-Infinity'])),
    'Invalid --max-sessions "-Infinity": must be an integer >= 0 (0 = unlimited).',
  );
  t.equal(
    failure(() => load(['--max-connections', '1e400'])),
    'Invalid --max-connections "1e400": must be an integer >= 0 (0 = unlimited).',
  );
  t.equal(
    failure(() => load([], { ACPD_MAX_CONNECTIONS: '-5' })),
    'Invalid --max-connections "-5" (from ACPD_MAX_CONNECTIONS): must be an integer >= 0 (0 = unlimited).',
  );
  t.equal(
    failure(() => load(['--max-connections', 'lots'])),
    'Invalid --max-connections "lots": must be an integer >= 0 (0 = unlimited).',
  );
});

t.test('timeouts', async (t) => {
  t.equal(
    failure(() => load(['--init-timeout-ms', '0'])),
    'Invalid --init-timeout-ms "0": must be an integer from 1 to 2147483647.',
  );
  t.equal(load(['--permission-timeout-ms', '0']).permissionTimeoutMs, 0);
  t.equal(load(['--kill-grace-ms', '0']).killGraceMs, 0);
  t.equal(
    failure(() => load(['--kill-grace-ms', '2147483648'])),
    'Invalid --kill-grace-ms "2147483648": must be an integer from 0 to 2147483647.',
  );
  t.equal(
    failure(() => load(['--permission-timeout-ms', '-1'])),
    'Invalid --permission-timeout-ms "-1": must be an integer from 0 to 2147483647.',
  );
  t.equal(
    failure(() => load([], { ACPD_INIT_TIMEOUT_MS: '1.5' })),
    'Invalid --init-timeout-ms "1.5" (from ACPD_INIT_TIMEOUT_MS): must be an integer from 1 to 2147483647.',
  );
});

t.test('log level', async (t) => {
  t.equal(load(['--log-level', 'trace']).logLevel, 'trace');
  t.equal(load([], { ACPD_LOG_LEVEL: 'DEBUG' }).logLevel, 'debug');
  t.equal(load(['--log-level', 'silent']).logLevel, 'silent');
  t.equal(
    failure(() => load(['--log-level', 'loud'])),
    'Invalid --log-level "loud": must be one of fatal, error, warn, info, debug, trace, silent.',
  );
});

t.test('event log: sqlite by default, memory on request, nothing else', async (t) => {
  t.equal(load().eventLog, 'sqlite');
  t.equal(load(['--event-log', 'memory']).eventLog, 'memory');
  t.equal(load([], { ACPD_EVENT_LOG: 'memory' }).eventLog, 'memory');
  t.equal(
    failure(() => load(['--event-log', 'redis'])),
    'Invalid --event-log "redis": must be one of memory, sqlite.',
  );
});

t.test('permission policy: first-responder by default, one of four names; a quorum from 0', async (t) => {
  t.equal(load(['--permission-policy', 'consensus']).permissionPolicy, 'consensus');
  t.equal(load([], { ACPD_PERMISSION_POLICY: 'local-only' }).permissionPolicy, 'local-only');
  t.equal(load(['--consensus-quorum', '3']).consensusQuorum, 3);
  t.equal(
    failure(() => load(['--permission-policy', 'anyone'])),
    'Invalid --permission-policy "anyone": must be one of first-responder, designated, consensus, local-only.',
  );
  t.match(
    failure(() => load(['--consensus-quorum', '-1'])),
    /^Invalid --consensus-quorum "-1"/,
  );
});

t.test('idempotency ttl: a day by default, whole seconds from 1', async (t) => {
  t.equal(load().idempotencyTtl, 86_400);
  t.equal(load(['--idempotency-ttl', '60']).idempotencyTtl, 60);
  t.equal(load([], { ACPD_IDEMPOTENCY_TTL: '1' }).idempotencyTtl, 1);
  t.match(
    failure(() => load(['--idempotency-ttl', '0'])),
    /^Invalid --idempotency-ttl "0": /,
  );
  t.match(
    failure(() => load([], { ACPD_IDEMPOTENCY_TTL: '1.5' })),
    /^Invalid --idempotency-ttl "1.5" \(from ACPD_IDEMPOTENCY_TTL\): /,
  );
});

t.test('data dir: default under the workspace, relative resolved against cwd', async (t) => {
  t.equal(load().dataDir, join(ws, '.acpd'));
  t.equal(load(['--workspace', join(root, 'other')]).dataDir, join(root, 'other', '.acpd'));
  t.equal(load(['--data-dir', 'state'], {}, ws).dataDir, join(ws, 'state'));
  t.equal(load([], { ACPD_DATA_DIR: '/srv/acpd/' }).dataDir, '/srv/acpd');
  t.equal(
    failure(() => load(['--data-dir', ''])),
    'Invalid --data-dir "": must be a non-empty string.',
  );
});

t.test('agent command is split into argv without a shell', async (t) => {
  t.same(load(['--agent', 'qwen --acp']).agent, ['qwen', '--acp']);
  t.same(load(['--agent', '  node   /opt/agent.js\t--acp\n']).agent, ['node', '/opt/agent.js', '--acp']);
  t.same(load([], { ACPD_AGENT: `"/opt/my agent/bin" --name 'a b'` }).agent, ['/opt/my agent/bin', '--name', 'a b']);
  t.same(load(['--agent', 'echo $HOME | rm -rf / ; `x` *']).agent, [
    'echo',
    '$HOME',
    '|',
    'rm',
    '-rf',
    '/',
    ';',
    '`x`',
    '*',
  ]);
  t.equal(
    failure(() => load(['--agent', ''])),
    'Invalid --agent "": the command is empty.',
  );
  t.equal(
    failure(() => load(['--agent', '""'])),
    'Invalid --agent """": the command is empty.',
  );
  t.equal(
    failure(() => load(['--agent', `qwen "--acp`])),
    'Invalid --agent "qwen "--acp": a double quote is not closed.',
  );
  t.equal(
    failure(() => load([], { ACPD_AGENT: `qwen 'x` })),
    `Invalid ACPD_AGENT "qwen 'x": a single quote is not closed.`,
  );
  t.equal(
    failure(() => load(['--agent', 'qwen \\'])),
    'Invalid --agent "qwen \\": it ends with a lone backslash.',
  );
});

t.test('splitCommand', async (t) => {
  const cases: Array<[string, string[]]> = [
    ['', []],
    ['   ', []],
    ['a', ['a']],
    ['a b\tc\nd', ['a', 'b', 'c', 'd']],
    [`'a b' "c d"`, ['a b', 'c d']],
    [`a"b c"d`, ['ab cd']],
    [`''`, ['']],
    [`a '' b`, ['a', '', 'b']],
    ['a\\ b', ['a b']],
    ['\\"a\\"', ['"a"']],
    ['\\\\', ['\\']],
    [`"say \\"hi\\""`, ['say "hi"']],
    [`"back\\\\slash"`, ['back\\slash']],
    [`"\\$HOME \\x"`, ['$HOME \\x']],
    [`"C:\\dir\\file"`, ['C:\\dir\\file']],
    [`'no \\escape "here"'`, ['no \\escape "here"']],
    [`"it's"`, [`it's`]],
    [`'say "x"'`, ['say "x"']],
    ['a \\\nb', ['a', 'b']],
    ['"a\\\nb"', ['ab']],
  ];
  for (const [input, expected] of cases) t.same(splitCommand(input), expected, JSON.stringify(input));
  t.throws(() => splitCommand('"open'), SyntaxError);
  t.throws(() => splitCommand(`'open`), SyntaxError);
  t.throws(() => splitCommand('trailing\\'), SyntaxError);
});

t.test('command line: unknown options, positionals and missing values', async (t) => {
  t.equal(
    failure(() => load(['--nope'])),
    'Unknown option "--nope". Run "acpd --help" for the list of options.',
  );
  t.equal(
    failure(() => load(['-x'])),
    'Unknown option "-x". Run "acpd --help" for the list of options.',
  );
  t.equal(
    failure(() => load(['--PORT', '1'])),
    'Unknown option "--PORT". Run "acpd --help" for the list of options.',
  );
  t.equal(
    failure(() => load(['serve'])),
    'Unexpected argument "serve": acpd takes only options. Run "acpd --help" for the list.',
  );
  t.equal(
    failure(() => load(['--', 'x'])),
    'Unexpected "--": acpd takes no positional arguments.',
  );
  t.equal(
    failure(() => load(['--port'])),
    'Option "--port" needs a value, e.g. "--port <value>".',
  );
  t.equal(
    failure(() => load(['--port', '--hostname', 'x'])),
    'Option "--port" is followed by "--hostname", which looks like another option. If that is really the value, write "--port=--hostname".',
  );
  const err = (() => {
    try {
      load(['--nope']);
    } catch (caught) {
      return caught;
    }
    return undefined;
  })();
  t.ok(err instanceof ConfigError);
  t.ok(err instanceof Error);
  t.equal(err instanceof Error ? err.name : '', 'ConfigError');
});

t.test('--require-auth: a switch, and no start without a token', async (t) => {
  const refusal = 'Refusing to start with --require-auth but no bearer token. Set ACPD_TOKEN or pass --token.';
  t.equal(load(['--require-auth', '--token', 't']).requireAuth, true, 'a bare flag means true');
  t.equal(load(['--token', 't', '--require-auth']).requireAuth, true, 'also as the last argument');
  t.equal(load(['--require-auth=true', '--token', 't']).requireAuth, true);
  t.equal(load(['--require-auth=FALSE']).requireAuth, false);
  t.equal(load(['--require-auth=false'], { ACPD_REQUIRE_AUTH: 'true' }).requireAuth, false, 'the flag wins');
  for (const value of ['true', 'TRUE', '1', ' true ']) {
    t.equal(
      load([], { ACPD_REQUIRE_AUTH: value, ACPD_TOKEN: 't' }).requireAuth,
      true,
      `ACPD_REQUIRE_AUTH=${JSON.stringify(value)}`,
    );
  }
  for (const value of ['false', 'False', '0', '']) {
    t.equal(load([], { ACPD_REQUIRE_AUTH: value }).requireAuth, false, `ACPD_REQUIRE_AUTH=${JSON.stringify(value)}`);
  }
  t.equal(
    failure(() => load(['--require-auth'])),
    refusal,
  );
  t.equal(
    failure(() => load([], { ACPD_REQUIRE_AUTH: 'true' })),
    refusal,
  );
  t.equal(
    failure(() => load(['--require-auth', '--token', '  '])),
    refusal,
    'a blank token is no token',
  );
  t.equal(
    failure(() => load(['--require-auth=yes', '--token', 't'])),
    'Invalid --require-auth "yes": must be true or false.',
  );
  t.equal(
    failure(() => load([], { ACPD_REQUIRE_AUTH: 'on' })),
    'Invalid --require-auth "on" (from ACPD_REQUIRE_AUTH): must be true or false.',
  );
  t.equal(
    failure(() => load(['--require-auth', 'false'])),
    'Unexpected argument "false" after --require-auth, which takes no value: write "--require-auth=false".',
  );
  // The non-loopback refusal comes first, as it names the bind.
  t.match(
    failure(() => load(['--hostname', '0.0.0.0', '--require-auth'])),
    /^Refusing to bind 0\.0\.0\.0:4170/,
  );
  t.match(usage(), /^ {2}--require-auth {2,}ACPD_REQUIRE_AUTH$/m, '--help shows it without <value>');
});

t.test("--trust-proxy: true, false, or the proxies' addresses and ranges", async (t) => {
  t.equal(load().trustProxy, false);
  for (const value of ['true', 'TRUE', '1']) t.equal(load(['--trust-proxy', value]).trustProxy, true, value);
  for (const value of ['false', '0', ''])
    t.equal(load(['--trust-proxy', value]).trustProxy, false, JSON.stringify(value));
  t.same(load(['--trust-proxy', '127.0.0.1']).trustProxy, ['127.0.0.1']);
  t.same(
    load([], {
      ACPD_TRUST_PROXY: ' 10.0.0.0/8, 192.168.1.7 ,::1,FE80::/10,loopback,uniquelocal,linklocal,0.0.0.0/0,::/0',
    }).trustProxy,
    ['10.0.0.0/8', '192.168.1.7', '::1', 'fe80::/10', 'loopback', 'uniquelocal', 'linklocal', '0.0.0.0/0', '::/0'],
  );
  const tail = 'Use true, false, or a comma-separated list such as "127.0.0.1,10.0.0.0/8".';
  const cases: Array<[string, string]> = [
    ['proxy.example.com', 'proxy.example.com'],
    ['10.0.0.0/33', '10.0.0.0/33'],
    ['::1/129', '::1/129'],
    ['10.0.0.1/8/8', '10.0.0.1/8/8'],
    ['10.0.0.0/x', '10.0.0.0/x'],
    ['10.0.0.0/', '10.0.0.0/'],
    ['127.0.0.1,,10.0.0.1', ''],
    ['yes', 'yes'],
    ['256.0.0.1', '256.0.0.1'],
  ];
  for (const [value, bad] of cases) {
    t.equal(
      failure(() => load(['--trust-proxy', value])),
      `Invalid --trust-proxy "${value}": "${bad}" is not an IP address, a CIDR range or one of loopback, linklocal, uniquelocal. ${tail}`,
      value,
    );
  }
  t.match(
    failure(() => load([], { ACPD_TRUST_PROXY: 'nope' })),
    /^Invalid --trust-proxy "nope" \(from ACPD_TRUST_PROXY\)/,
  );
});

t.test('--allow-origin: exact origins, as a browser writes them', async (t) => {
  t.same(load().allowOrigin, []);
  t.same(load(['--allow-origin', 'https://app.example']).allowOrigin, ['https://app.example']);
  t.same(
    load([], { ACPD_ALLOW_ORIGIN: ' https://App.Example:443 , http://localhost:3000,,http://[::1]:8080/ ' })
      .allowOrigin,
    ['https://app.example', 'http://localhost:3000', 'http://[::1]:8080'],
    'trimmed, lower-cased, default port and a bare trailing slash dropped, blank entries skipped',
  );
  t.same(load(['--allow-origin', 'http://a.example,http://a.example']).allowOrigin, ['http://a.example']);
  for (const bad of [
    'app.example',
    'ftp://app.example',
    'https://app.example/path',
    'https://u:p@app.example',
    'https://app.example?x=1',
    '*',
    'null',
  ]) {
    t.match(
      failure(() => load(['--allow-origin', bad])),
      /^Invalid --allow-origin ".*": ".*" is not an origin\. Give scheme, host and optional port only/,
      bad,
    );
  }
  t.match(
    failure(() => load([], { ACPD_ALLOW_ORIGIN: '*' })),
    /^Invalid --allow-origin "\*" \(from ACPD_ALLOW_ORIGIN\)/,
  );
});

t.test('--sse-heartbeat-ms: a positive timer', async (t) => {
  t.equal(load().sseHeartbeatMs, 15_000);
  t.equal(load(['--sse-heartbeat-ms', '1']).sseHeartbeatMs, 1);
  t.equal(load([], { ACPD_SSE_HEARTBEAT_MS: '300' }).sseHeartbeatMs, 300);
  for (const value of ['0', '-5', '1.5', 'fast', '2147483648']) {
    t.equal(
      failure(() => load(['--sse-heartbeat-ms', value])),
      `Invalid --sse-heartbeat-ms "${value}": must be an integer from 1 to 2147483647.`,
      value,
    );
  }
});

t.test('--help wins over everything else', async (t) => {
  t.same(parseCommandLine(['--help']), { help: true, version: false, values: {} });
  t.same(parseCommandLine(['-h', '--nope', 'positional']), { help: true, version: false, values: {} });
  t.same(parseCommandLine(['--port', '1']), { help: false, version: false, values: { ACPD_PORT: '1' } });
  t.same(parseCommandLine(['--version', '--nope']), { help: false, version: true, values: {} });
  t.same(parseCommandLine(['-v']), { help: false, version: true, values: {} });
  t.same(parseCommandLine(['-v', '--help']), { help: true, version: false, values: {} }, 'help wins');
  const text = usage();
  for (const name of Object.keys(ConfigSchema.properties)) t.match(text, name);
  for (const flag of [
    '--port',
    '--hostname',
    '--token',
    '--workspace',
    '--max-sessions',
    '--max-connections',
    '--agent',
    '--data-dir',
    '--init-timeout-ms',
    '--permission-timeout-ms',
    '--kill-grace-ms',
    '--log-level',
    '--help',
  ]) {
    t.match(text, flag);
  }
  t.equal(flagFor('ACPD_PERMISSION_TIMEOUT_MS'), '--permission-timeout-ms');
});

t.test('validation order follows the reference boot sequence', async (t) => {
  const missing = join(root, 'missing');
  // host:port typo (2) before the refusal (3)
  t.match(
    failure(() => load(['--hostname', 'h:1'])),
    /host:port/,
  );
  // refusal (3) before workspace (4) and the session cap (5)
  t.match(
    failure(() => load(['--hostname', '0.0.0.0', '--workspace', missing, '--max-sessions', '-1'])),
    /^Refusing to bind/,
  );
  // a bad port is reported before the refusal that would print it
  t.match(
    failure(() => load(['--hostname', '0.0.0.0', '--port', 'x'])),
    /^Invalid --port/,
  );
  // workspace (4) before the session cap (5)
  t.match(
    failure(() => load(['--workspace', missing, '--max-sessions', '-1'])),
    /^Invalid --workspace/,
  );
  // session cap (5) before the brackets (7)
  t.match(
    failure(() => load(['--hostname', '[]', '--token', 't', '--max-sessions', '-1'])),
    /^Invalid --max-sessions/,
  );
  // brackets (7) before the connection cap (8)
  t.match(
    failure(() => load(['--hostname', '[]', '--token', 't', '--max-connections', '-1'])),
    /brackets/,
  );
  // the connection cap (8) before the rest
  t.match(
    failure(() => load(['--max-connections', '-1', '--log-level', 'x'])),
    /^Invalid --max-connections/,
  );
  // unknown flags fail before any value is looked at
  t.match(
    failure(() => load(['--hostname', '0.0.0.0', '--nope'])),
    /^Unknown option/,
  );
});

t.test('isLoopbackHost', async (t) => {
  for (const host of ['127.0.0.1', 'localhost', 'LOCALHOST', '::1', '[::1]']) t.equal(isLoopbackHost(host), true, host);
  for (const host of ['0.0.0.0', '127.0.0.2', '::', '[::]', 'example.com', '', 'localhost.', '0:0:0:0:0:0:0:1']) {
    t.equal(isLoopbackHost(host), false, host);
  }
});

t.test('formatListenUrl', async (t) => {
  t.equal(formatListenUrl('127.0.0.1', 4170), 'http://127.0.0.1:4170');
  t.equal(formatListenUrl('Localhost', 1234), 'http://Localhost:1234');
  t.equal(formatListenUrl('0.0.0.0', 1), 'http://0.0.0.0:1');
  t.equal(formatListenUrl('::1', 80), 'http://[::1]:80');
  t.equal(formatListenUrl('[::1]', 80), 'http://[::1]:80');
  t.equal(formatListenUrl('fe80::1%lo0', 5), 'http://[fe80::1%25lo0]:5');
  t.equal(formatListenUrl('[fe80::1%25lo0]', 5), 'http://[fe80::1%25lo0]:5');
});

t.test('a fresh Config per call; the input env is not modified', async (t) => {
  const env = { ACPD_TOKEN: 'x', KEEP: 'y' };
  const a = load([], env);
  const b = load([], env);
  t.not(a, b);
  t.not(a.agentEnv, b.agentEnv);
  t.same(env, { ACPD_TOKEN: 'x', KEEP: 'y' });
  mkdirSync(join(root, 'made-later'));
  t.equal(load(['--workspace', join(root, 'made-later')]).workspace, join(root, 'made-later'));
});

t.test('cluster settings', async (t) => {
  const config = load(['--redis-url', 'redis://redis.internal:6379/2', '--node-id', 'node-1', '--lease-ttl', '3']);
  t.equal(config.redisUrl, 'redis://redis.internal:6379/2');
  t.equal(config.nodeId, 'node-1');
  t.equal(config.leaseTtl, 3);
  t.equal(load(['--redis-url', 'rediss://secure:6380']).redisUrl, 'rediss://secure:6380', 'TLS URLs too');
  t.equal(
    failure(() => load(['--redis-url', 'http://redis:6379'])),
    'Invalid --redis-url "http://redis:6379": must be a string matching ^rediss?://.',
  );
  t.equal(
    failure(() => load(['--node-id', 'node 1'])),
    'Invalid --node-id "node 1": must be a string matching ^[A-Za-z0-9._-]+$ (at most 128 characters).',
  );
  t.equal(
    failure(() => load(['--lease-ttl', '0'])),
    'Invalid --lease-ttl "0": must be an integer from 1 to 3600.',
  );
});
