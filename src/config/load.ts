// loadConfig: flags and variables into one Config, checked in boot order.
//
// Validation follows the boot order of `qwen serve` (reference §1.2), with its
// messages: token, host:port typo, non-loopback refusal, workspace, session
// and timeout limits, bracketed IPv6, connection cap (the numbered comments
// below are the reference's step numbers). A value that fails its schema type
// or range is reported at the step where the reference would have looked at
// it, so the first error an operator sees is the same one.
import { join, resolve } from 'node:path';
import { agentArgv, childEnvironment } from './agent.js';
import { parseCommandLine } from './command-line.js';
import { ConfigError } from './config-error.js';
import { allowedOrigins, assertNoPortInHostname, isLoopbackHost, listenHostFor, trustedProxies } from './network.js';
import { DEFAULT_HOSTNAME, DEFAULT_PORT, SETTING_NAMES, isSwitch, type SettingName } from './schema.js';
import { plainFields, type Config } from './shape.js';
import { resolveToken, resolveTokensFile } from './token.js';
import { validateSettings, type RawSettings } from './validate.js';
import { resolveWebhookSecret, webhookUrls } from './webhooks.js';
import { resolveWorkspace } from './workspace.js';

export function loadConfig(opts: { argv: string[]; env: NodeJS.ProcessEnv; cwd: string }): Config {
  const { values: flags } = parseCommandLine(opts.argv);
  const { raw, fromFlag } = rawSettings(flags, opts.env);
  const { settings, invalid } = validateSettings(raw, fromFlag);
  const check = (name: SettingName): void => {
    const err = invalid.get(name);
    if (err !== undefined) throw err;
  };

  // 1. The token, from --token/ACPD_TOKEN or --token-file/ACPD_TOKEN_FILE
  // (one of them): trimmed, blank means none. A blank flag still wins.
  check('ACPD_TOKEN_FILE');
  const token = resolveToken(raw, fromFlag, opts.cwd);
  check('ACPD_TOKENS_FILE');
  const tokensFile = resolveTokensFile(raw, fromFlag, opts.cwd, token);
  // Either one guards the daemon: the checks below ask whether any token is known.
  const guarded = token !== undefined || tokensFile !== undefined;

  // 2. `host:port` typed into --hostname.
  check('ACPD_HOSTNAME');
  const hostname = raw.ACPD_HOSTNAME ?? DEFAULT_HOSTNAME;
  assertNoPortInHostname(hostname);

  // 3. Never listen beyond loopback without a token.
  check('ACPD_PORT');
  const isLoopback = isLoopbackHost(hostname);
  if (!isLoopback && !guarded) {
    throw new ConfigError(
      `Refusing to bind ${hostname}:${raw.ACPD_PORT ?? DEFAULT_PORT} without a bearer token. ` +
        'Set ACPD_TOKEN or pass --token, or rebind to loopback (127.0.0.1, localhost, ::1, or [::1]).',
    );
  }

  // 3b. --require-auth without a token would be a daemon that nobody may use:
  // refuse it as loudly as the unguarded bind above.
  check('ACPD_REQUIRE_AUTH');
  if (raw.ACPD_REQUIRE_AUTH === 'true' && !guarded) {
    throw new ConfigError('Refusing to start with --require-auth but no bearer token. Set ACPD_TOKEN or pass --token.');
  }

  // 4. The workspace.
  const workspace = resolveWorkspace(raw.ACPD_WORKSPACE ?? opts.cwd);

  // 5. What the session layer validates: its limits, timeouts and agent.
  check('ACPD_MAX_SESSIONS');
  check('ACPD_MAX_PENDING_PROMPTS');
  check('ACPD_INIT_TIMEOUT_MS');
  check('ACPD_PERMISSION_TIMEOUT_MS');
  check('ACPD_KILL_GRACE_MS');
  check('ACPD_DRAIN_TIMEOUT_MS');
  check('ACPD_WARM_SESSIONS');
  const agent = raw.ACPD_AGENT === undefined ? undefined : agentArgv(raw.ACPD_AGENT, fromFlag.has('ACPD_AGENT'));
  check('ACPD_DATA_DIR');
  const dataDir = raw.ACPD_DATA_DIR === undefined ? join(workspace, '.acpd') : resolve(opts.cwd, raw.ACPD_DATA_DIR);

  // 7. Brackets mean exactly `[addr]`.
  const listenHost = listenHostFor(hostname);

  // 8. The connection cap, then anything left.
  check('ACPD_MAX_CONNECTIONS');
  check('ACPD_TRUST_PROXY');
  const trustProxy = trustedProxies(raw.ACPD_TRUST_PROXY, fromFlag.has('ACPD_TRUST_PROXY'));
  check('ACPD_ALLOW_ORIGIN');
  const allowOrigin = allowedOrigins(raw.ACPD_ALLOW_ORIGIN, fromFlag.has('ACPD_ALLOW_ORIGIN'));
  check('ACPD_WEBHOOK_SECRET_FILE');
  const webhookUrl = webhookUrls(raw.ACPD_WEBHOOK_URL, fromFlag.has('ACPD_WEBHOOK_URL'));
  const webhookSecret = resolveWebhookSecret(raw, fromFlag, opts.cwd, webhookUrl.length);
  const [leftover] = invalid.values();
  if (leftover !== undefined) throw leftover;
  if (settings === undefined) throw new ConfigError('Invalid configuration.');

  return {
    ...plainFields(settings),
    token,
    tokensFile,
    workspace,
    maxSessions: settings.ACPD_MAX_SESSIONS === 0 ? Infinity : settings.ACPD_MAX_SESSIONS,
    maxConnections: settings.ACPD_MAX_CONNECTIONS === 0 ? Infinity : settings.ACPD_MAX_CONNECTIONS,
    agent,
    dataDir,
    trustProxy,
    allowOrigin,
    webhookUrl,
    webhookSecret,
    listenHost,
    isLoopback,
    agentEnv: childEnvironment(opts.env),
  };
}

/**
 * Each setting's raw string, and which of them came from a flag. Flags win.
 * An empty or blank variable counts as unset, which is what `ACPD_TOKEN=` in
 * a compose file means; an empty flag is taken as given. A few spellings are
 * normalised before the schema sees them.
 */
function rawSettings(
  flags: RawSettings,
  env: NodeJS.ProcessEnv,
): { raw: RawSettings; fromFlag: ReadonlySet<SettingName> } {
  const raw: RawSettings = {};
  const fromFlag = new Set<SettingName>();
  for (const name of SETTING_NAMES) {
    const flag = flags[name];
    const variable = env[name];
    if (flag !== undefined) {
      raw[name] = flag;
      fromFlag.add(name);
    } else if (variable !== undefined && variable.trim() !== '') {
      raw[name] = variable;
    }
  }
  // The reference also accepts "Infinity" for the unlimited caps.
  for (const name of ['ACPD_MAX_SESSIONS', 'ACPD_MAX_CONNECTIONS'] as const) {
    const value = raw[name];
    if (value !== undefined && /^\s*\+?infinity\s*$/i.test(value)) raw[name] = '0';
  }
  if (raw.ACPD_LOG_LEVEL !== undefined) raw.ACPD_LOG_LEVEL = raw.ACPD_LOG_LEVEL.trim().toLowerCase();
  // Switches take true/false in any letter case, and 1/0 as compose files often write them.
  for (const name of SETTING_NAMES.filter(isSwitch)) {
    const value = raw[name]?.trim().toLowerCase();
    if (value !== undefined) raw[name] = value === '1' ? 'true' : value === '0' ? 'false' : value;
  }
  return { raw, fromFlag };
}
