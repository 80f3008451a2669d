// The daemon's settings: one TypeBox schema, read once at start-up.
//
// Every setting has an environment variable (`ACPD_PORT`, …) and a flag twin
// derived from its name (`--port`, …); a flag wins over its variable. This
// module is the only place in acpd that looks at the environment: the rest of
// the program receives the resolved `Config`.
//
// Validation follows the boot order of `qwen serve` (reference §1.2), with its
// messages: token, host:port typo, non-loopback refusal, workspace, session
// and timeout limits, bracketed IPv6, connection cap (the numbered comments in
// loadConfig are the reference's step numbers). A value that fails its
// schema type or range is reported at the step where the reference would
// have looked at it, so the first error an operator sees is the same one.
import { readFileSync, realpathSync, statSync, type Stats } from 'node:fs';
import { isIP } from 'node:net';
import { isAbsolute, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { KindGuard, Type, type Static, type TSchema } from '@sinclair/typebox';
import envSchema from 'env-schema';
import { DEFAULT_MAX_QUEUED_BYTES, DEFAULT_RING_BYTES } from './services/event-bus.js';

const DEFAULT_PORT = 4170;
const DEFAULT_HOSTNAME = '127.0.0.1';
const DEFAULT_MAX_SESSIONS = 20;
const DEFAULT_MAX_CONNECTIONS = 256;
const DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024;
const DEFAULT_MAX_BODY_DEPTH = 64;
// setTimeout silently turns longer delays into 1 ms, so no timer setting may
// go beyond this.
const MAX_TIMER_MS = 2_147_483_647;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export const ConfigSchema = Type.Object({
  ACPD_PORT: Type.Integer({
    minimum: 0,
    maximum: 65535,
    default: DEFAULT_PORT,
    description: 'TCP port to listen on; 0 lets the OS pick a free one.',
  }),
  ACPD_HOSTNAME: Type.String({
    minLength: 1,
    default: DEFAULT_HOSTNAME,
    description: 'Interface to bind. Any value other than 127.0.0.1, localhost, ::1 or [::1] requires a token.',
  }),
  ACPD_TOKEN: Type.Optional(
    Type.String({
      description:
        'Bearer token clients must send. Prefer --token-file; a flag shows up in ps. Not together with --token-file.',
    }),
  ),
  ACPD_WORKSPACE: Type.Optional(
    Type.String({
      description: 'Absolute path of the directory this daemon serves (default: the current directory).',
    }),
  ),
  ACPD_MAX_SESSIONS: Type.Integer({
    minimum: 0,
    default: DEFAULT_MAX_SESSIONS,
    description: 'Cap on live sessions (spawned or restored; attaches are free). 0 = unlimited.',
  }),
  ACPD_MAX_CONNECTIONS: Type.Integer({
    minimum: 0,
    default: DEFAULT_MAX_CONNECTIONS,
    description: 'Cap on open TCP connections to the listener. 0 = unlimited.',
  }),
  ACPD_AGENT: Type.Optional(
    Type.String({
      description:
        'ACP agent command, e.g. "qwen --acp". Split into argv with shell-like quotes but never run through a shell (default: the embedded agent).',
    }),
  ),
  ACPD_DATA_DIR: Type.Optional(
    Type.String({
      minLength: 1,
      description: 'Where the embedded agent keeps its sessions (default: <workspace>/.acpd).',
    }),
  ),
  ACPD_INIT_TIMEOUT_MS: Type.Integer({
    minimum: 1,
    maximum: MAX_TIMER_MS,
    default: 10_000,
    description: 'Deadline for the agent to answer initialize, session/new, load, resume and set_model.',
  }),
  ACPD_PERMISSION_TIMEOUT_MS: Type.Integer({
    minimum: 0,
    maximum: MAX_TIMER_MS,
    default: 300_000,
    description: 'How long a permission request waits for a vote before it is cancelled. 0 = wait forever.',
  }),
  ACPD_KILL_GRACE_MS: Type.Integer({
    minimum: 0,
    maximum: MAX_TIMER_MS,
    default: 5_000,
    description: 'Time between SIGTERM and SIGKILL when an agent process is stopped.',
  }),
  ACPD_WARM_SESSIONS: Type.Integer({
    minimum: 0,
    maximum: 1000,
    default: 1,
    description:
      'Agent sessions kept created ahead of demand once the agent runs, so a create need not wait for it. 0 = off.',
  }),
  ACPD_DRAIN_TIMEOUT_MS: Type.Integer({
    minimum: 0,
    maximum: MAX_TIMER_MS,
    default: 10_000,
    description: 'On SIGTERM, how long running prompts may go on before they are cancelled. 0 = cancel at once.',
  }),
  ACPD_LOG_LEVEL: Type.Union(
    LOG_LEVELS.map((level) => Type.Literal(level)),
    { default: 'info', description: `Log level: ${LOG_LEVELS.join(', ')}.` },
  ),
  ACPD_RATE_LIMIT_PROMPTS: Type.Integer({
    minimum: 0,
    default: 0,
    description: 'Prompts (POST /session/:id/prompt) a client may send per minute. 0 = no limit.',
  }),
  ACPD_RATE_LIMIT_MUTATIONS: Type.Integer({
    minimum: 0,
    default: 0,
    description: 'Other POST requests a client may send per minute. 0 = no limit.',
  }),
  ACPD_RATE_LIMIT_READS: Type.Integer({
    minimum: 0,
    default: 0,
    description: 'GET requests a client may send per minute (probes and /metrics excepted). 0 = no limit.',
  }),
  ACPD_MAX_EVENT_LOOP_DELAY_MS: Type.Integer({
    minimum: 0,
    maximum: MAX_TIMER_MS,
    default: 1_000,
    description:
      'Event-loop delay past which acpd sheds load (503 + Retry-After) and reports not ready. 0 = not checked.',
  }),
  ACPD_MAX_HEAP_USED_BYTES: Type.Integer({
    minimum: 0,
    default: 0,
    description: 'Heap size past which acpd sheds load and reports not ready. 0 = not checked.',
  }),
  ACPD_MAX_RSS_BYTES: Type.Integer({
    minimum: 0,
    default: 0,
    description: 'Resident set size past which acpd sheds load and reports not ready. 0 = not checked.',
  }),
  ACPD_REQUIRE_AUTH: Type.Boolean({
    default: false,
    description:
      'Require the bearer token on every request, the probes included, whatever the bind; refuse to start without a token.',
  }),
  ACPD_TRUST_PROXY: Type.String({
    default: 'false',
    description:
      'Reverse proxies whose X-Forwarded-For/-Proto/-Host are believed: "false", "true" (any peer), or a comma-separated list of addresses and CIDR ranges (e.g. 127.0.0.1,10.0.0.0/8; also loopback, linklocal, uniquelocal).',
  }),
  ACPD_SSE_HEARTBEAT_MS: Type.Integer({
    minimum: 1,
    maximum: MAX_TIMER_MS,
    default: 15_000,
    description: 'Interval of the `: heartbeat` comment on idle event streams; keep it below every proxy idle timeout.',
  }),
  ACPD_TOKEN_FILE: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'File holding the bearer token (one line, surrounding blanks trimmed; relative to the current directory). Safer than ACPD_TOKEN: the token lands in neither the environment nor the command line. Not together with --token.',
    }),
  ),
  ACPD_MAX_BODY_BYTES: Type.Integer({
    minimum: 1,
    maximum: 1024 * 1024 * 1024,
    default: DEFAULT_MAX_BODY_BYTES,
    description: 'Largest request body read, whatever its content type (413 beyond it).',
  }),
  ACPD_MAX_BODY_DEPTH: Type.Integer({
    minimum: 1,
    maximum: 1000,
    default: DEFAULT_MAX_BODY_DEPTH,
    description: 'Deepest nesting of objects and arrays accepted in a JSON body (400 beyond it).',
  }),
  ACPD_RING_BYTES: Type.Integer({
    minimum: 0,
    default: DEFAULT_RING_BYTES,
    description:
      "Byte budget of each session's replay ring (Last-Event-ID); the oldest events leave first, the newest always stays. 0 = count only.",
  }),
  ACPD_SUBSCRIBER_BACKLOG_BYTES: Type.Integer({
    minimum: 0,
    default: DEFAULT_MAX_QUEUED_BYTES,
    description:
      'Bytes of live events one SSE subscriber may have waiting before it is evicted (client_evicted). 0 = count only.',
  }),
  ACPD_HEADER_TIMEOUT_MS: Type.Integer({
    minimum: 1,
    maximum: MAX_TIMER_MS,
    default: 10_000,
    description: 'How long a connection may take to send a complete request head; idle or slow ones are closed.',
  }),
});

type Settings = Static<typeof ConfigSchema>;
export type SettingName = keyof Settings;

export type Config = {
  /** TCP port; 0 means an ephemeral port chosen at listen time. */
  port: number;
  /** The bind address exactly as the operator typed it (brackets kept). */
  hostname: string;
  /** `hostname` without IPv6 brackets, for `listen()`. */
  listenHost: string;
  isLoopback: boolean;
  token: string | undefined;
  /** Canonical (realpath) absolute workspace directory. */
  workspace: string;
  /** Infinity when unlimited. */
  maxSessions: number;
  /** Infinity when unlimited. */
  maxConnections: number;
  /** The agent's argv, or undefined for the embedded agent. */
  agent: string[] | undefined;
  dataDir: string;
  initTimeoutMs: number;
  /** 0 disables the timeout. */
  permissionTimeoutMs: number;
  killGraceMs: number;
  /** Agent sessions created ahead of demand. */
  warmSessions: number;
  /** How long a drain lets running prompts finish before cancelling them. */
  drainTimeoutMs: number;
  logLevel: string;
  /** Requests per minute per client for each budget; 0 = no limit. */
  rateLimitPrompts: number;
  rateLimitMutations: number;
  rateLimitReads: number;
  /** Load-shedding thresholds (@fastify/under-pressure); 0 = not checked. */
  maxEventLoopDelayMs: number;
  maxHeapUsedBytes: number;
  maxRssBytes: number;
  /** The token is required everywhere: no loopback exemption for the probes. */
  requireAuth: boolean;
  /** Fastify's `trustProxy`: whom to believe about X-Forwarded-*. */
  trustProxy: boolean | string[];
  sseHeartbeatMs: number;
  /** Largest body read (any content type), and the deepest JSON nesting accepted. */
  maxBodyBytes: number;
  maxBodyDepth: number;
  /** Byte budgets of a session's replay ring and of one subscriber's live backlog; 0 = unbounded by bytes. */
  ringBytes: number;
  subscriberBacklogBytes: number;
  /** Deadline for a connection to send a complete request head. */
  headerTimeoutMs: number;
  /** The environment an agent child receives: ours, minus ACPD_TOKEN and ACPD_TOKEN_FILE. */
  agentEnv: Record<string, string>;
};

export class ConfigError extends Error {
  override name = 'ConfigError';
}

// In schema order, which is also the order of --help.
const SETTING_NAMES: readonly SettingName[] = Object.keys(ConfigSchema.properties).filter(
  (key): key is SettingName => key in ConfigSchema.properties,
);

/** Settings that are switches: a bare flag means true. */
function isSwitch(name: SettingName): boolean {
  return KindGuard.IsBoolean(ConfigSchema.properties[name]);
}

/** `ACPD_MAX_SESSIONS` → `--max-sessions`. */
export function flagFor(name: SettingName): string {
  return `--${name.slice('ACPD_'.length).toLowerCase().replaceAll('_', '-')}`;
}

export type CommandLine = {
  help: boolean;
  /** Raw flag values, keyed by their environment twin. */
  values: Partial<Record<SettingName, string>>;
};

/**
 * Reads the flags. Every flag takes a value (`--port 80` or `--port=80`)
 * except `--help`/`-h` and the switches (`--require-auth`, or
 * `--require-auth=false`); anything else is a ConfigError. When help is asked
 * for, the other arguments are not checked.
 */
export function parseCommandLine(argv: readonly string[]): CommandLine {
  const byFlag = new Map<string, SettingName>(SETTING_NAMES.map((name) => [flagFor(name).slice(2), name]));
  const options: Record<string, { type: 'string' } | { type: 'boolean'; short?: string }> = {
    help: { type: 'boolean', short: 'h' },
  };
  for (const [flag, name] of byFlag) options[flag] = isSwitch(name) ? { type: 'boolean' } : { type: 'string' };

  // Non-strict parsing hands back every token, so the errors below can be
  // worded for acpd rather than in parseArgs' generic terms.
  const { tokens } = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });

  if (tokens.some((token) => token.kind === 'option' && token.name === 'help')) {
    return { help: true, values: {} };
  }

  const values: Partial<Record<SettingName, string>> = {};
  for (const [index, token] of tokens.entries()) {
    if (token.kind === 'positional') {
      const before = tokens[index - 1];
      const name = before?.kind === 'option' ? byFlag.get(before.name) : undefined;
      if (before?.kind === 'option' && name !== undefined && isSwitch(name) && before.value === undefined) {
        throw new ConfigError(
          `Unexpected argument "${token.value}" after ${before.rawName}, which takes no value: write "${before.rawName}=${token.value}".`,
        );
      }
      throw new ConfigError(
        `Unexpected argument "${token.value}": acpd takes only options. Run "acpd --help" for the list.`,
      );
    }
    if (token.kind === 'option-terminator') {
      throw new ConfigError('Unexpected "--": acpd takes no positional arguments.');
    }
    const name = byFlag.get(token.name);
    if (name === undefined) {
      throw new ConfigError(`Unknown option "${token.rawName}". Run "acpd --help" for the list of options.`);
    }
    if (token.value === undefined && isSwitch(name)) {
      values[name] = 'true';
      continue;
    }
    if (token.value === undefined) {
      throw new ConfigError(`Option "${token.rawName}" needs a value, e.g. "${token.rawName} <value>".`);
    }
    if (!token.inlineValue && /^-(-|[a-zA-Z])/.test(token.value)) {
      // `--port --hostname x` is almost surely a forgotten value. Negative
      // numbers pass, so that their range check can name the problem.
      throw new ConfigError(
        `Option "${token.rawName}" is followed by "${token.value}", which looks like another option. ` +
          `If that is really the value, write "${token.rawName}=${token.value}".`,
      );
    }
    values[name] = token.value;
  }
  return { help: false, values };
}

/** 127.0.0.1, localhost, ::1 and [::1], in any letter case. */
export function isLoopbackHost(hostname: string): boolean {
  const lower = hostname.toLowerCase();
  return lower === '127.0.0.1' || lower === 'localhost' || lower === '::1' || lower === '[::1]';
}

/**
 * The URL printed once listening. The hostname stays as typed; a raw IPv6
 * literal gets brackets and its zone `%` escaped (RFC 6874). Bracketed input
 * is left alone.
 */
export function formatListenUrl(hostname: string, port: number): string {
  let host = hostname;
  if (!hostname.startsWith('[') && hostname.includes(':')) {
    host = `[${hostname.replaceAll('%', '%25')}]`;
  }
  return `http://${host}:${port}`;
}

/**
 * Splits a command line into argv the way a POSIX shell would quote it, and
 * nothing more: whitespace separates words, '…' keeps everything literally,
 * "…" groups and lets a backslash escape " \ $ and `, and an unquoted
 * backslash escapes any character. No variables, globs, pipes or
 * redirections: those characters stay literal. Throws SyntaxError.
 */
export function splitCommand(command: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: '"' | "'" | undefined;

  for (let i = 0; i < command.length; i++) {
    const c = command[i];
    if (quote === "'") {
      if (c === "'") quote = undefined;
      else word += c;
      continue;
    }
    if (quote === '"') {
      if (c === '"') {
        quote = undefined;
      } else if (c === '\\' && i + 1 < command.length && '"\\$`\n'.includes(command[i + 1])) {
        i++;
        if (command[i] !== '\n') word += command[i];
      } else {
        word += c;
      }
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
      continue;
    }
    if (c === '\\') {
      if (i + 1 >= command.length) throw new SyntaxError('it ends with a lone backslash');
      i++;
      // Backslash-newline continues the line, as in a shell.
      if (command[i] === '\n') continue;
      word += command[i];
      inWord = true;
      continue;
    }
    inWord = true;
    if (c === "'" || c === '"') quote = c;
    else word += c;
  }
  if (quote !== undefined) {
    throw new SyntaxError(`a ${quote === '"' ? 'double' : 'single'} quote is not closed`);
  }
  if (inWord) words.push(word);
  return words;
}

/** The --help text, built from the schema's descriptions and defaults. */
export function usage(): string {
  const lines = [
    'Usage: acpd [options]',
    '',
    'Hosts an ACP agent and serves its sessions over HTTP + SSE (qwen serve v1 protocol).',
    '',
    'Options (each has an environment variable twin; the flag wins):',
  ];
  for (const name of SETTING_NAMES) {
    const schema: TSchema = ConfigSchema.properties[name];
    const fallback = defaultText(schema);
    lines.push(`  ${flagFor(name)}${isSwitch(name) ? '' : ' <value>'}`.padEnd(34) + name);
    lines.push(`      ${schema.description ?? ''}${fallback === undefined ? '' : ` Default: ${fallback}.`}`);
  }
  lines.push('  -h, --help                      Show this text.', '');
  return lines.join('\n');
}

function defaultText(schema: TSchema): string | undefined {
  const value: unknown = schema.default;
  return typeof value === 'number' || typeof value === 'string' || typeof value === 'boolean'
    ? String(value)
    : undefined;
}

/** What a schema accepts, in words, for error messages. */
function expectation(schema: TSchema): string {
  if (KindGuard.IsInteger(schema)) {
    const { minimum, maximum } = schema;
    if (minimum !== undefined && maximum !== undefined) return `an integer from ${minimum} to ${maximum}`;
    if (minimum !== undefined) return `an integer >= ${minimum}`;
    return 'an integer';
  }
  if (KindGuard.IsBoolean(schema)) return 'true or false';
  if (KindGuard.IsUnion(schema)) {
    const choices = schema.anyOf.filter(KindGuard.IsLiteral).map((literal) => String(literal.const));
    return `one of ${choices.join(', ')}`;
  }
  return 'a non-empty string';
}

function invalidSetting(
  name: SettingName,
  raw: Partial<Record<SettingName, string>>,
  fromFlag: ReadonlySet<SettingName>,
): ConfigError {
  const unlimited = name === 'ACPD_MAX_SESSIONS' || name === 'ACPD_MAX_CONNECTIONS' ? ' (0 = unlimited)' : '';
  const source = fromFlag.has(name) ? '' : ` (from ${name})`;
  return new ConfigError(
    `Invalid ${flagFor(name)} "${raw[name] ?? ''}"${source}: must be ${expectation(ConfigSchema.properties[name])}${unlimited}.`,
  );
}

/** Turns env-schema's Ajv failure into one ConfigError per offending setting. */
function schemaErrors(
  err: unknown,
  raw: Partial<Record<SettingName, string>>,
  fromFlag: ReadonlySet<SettingName>,
): Map<SettingName | '', ConfigError> {
  const found = new Map<SettingName | '', ConfigError>();
  const details: unknown = err instanceof Error && 'errors' in err ? err.errors : undefined;
  for (const detail of Array.isArray(details) ? details : []) {
    const path: unknown =
      typeof detail === 'object' && detail !== null && 'instancePath' in detail ? detail.instancePath : '';
    const key = typeof path === 'string' ? path.split('/')[1] : undefined;
    const name = SETTING_NAMES.find((candidate) => candidate === key);
    if (name !== undefined && !found.has(name)) found.set(name, invalidSetting(name, raw, fromFlag));
  }
  if (found.size === 0) {
    found.set('', new ConfigError(`Invalid configuration: ${err instanceof Error ? err.message : String(err)}`));
  }
  return found;
}

/**
 * Ajv's coercion lets "Infinity", "-Infinity" and "1e400" through an integer
 * schema with its range unchecked; catch them here.
 */
function nonFiniteSettings(
  settings: Settings,
  raw: Partial<Record<SettingName, string>>,
  fromFlag: ReadonlySet<SettingName>,
): Map<SettingName | '', ConfigError> {
  const found = new Map<SettingName | '', ConfigError>();
  for (const name of SETTING_NAMES) {
    const value: unknown = settings[name];
    if (typeof value === 'number' && !Number.isSafeInteger(value)) found.set(name, invalidSetting(name, raw, fromFlag));
  }
  return found;
}

function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

function resolveWorkspace(rawWorkspace: string): string {
  if (!isAbsolute(rawWorkspace)) {
    throw new ConfigError(`Invalid --workspace "${rawWorkspace}": must be an absolute path.`);
  }
  let stats: Stats;
  try {
    stats = statSync(rawWorkspace);
  } catch (err) {
    const code = errorCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new ConfigError(`Invalid --workspace "${rawWorkspace}": directory does not exist.`);
    }
    if (code === 'EACCES' || code === 'EPERM') {
      throw new ConfigError(
        `Invalid --workspace "${rawWorkspace}": permission denied (${code}). The path exists but cannot be stat'd by the current user.`,
      );
    }
    throw new ConfigError(
      `Invalid --workspace "${rawWorkspace}": cannot be read (${err instanceof Error ? err.message : String(err)}).`,
    );
  }
  if (!stats.isDirectory()) {
    throw new ConfigError(`Invalid --workspace "${rawWorkspace}": exists but is not a directory.`);
  }
  // One canonical spelling (symlinks resolved, on-disk letter case) so that
  // /capabilities, the cwd fallback and the mismatch check all agree.
  try {
    return realpathSync.native(resolve(rawWorkspace));
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return resolve(rawWorkspace);
    throw new ConfigError(
      `Invalid --workspace "${rawWorkspace}": cannot be resolved (${err instanceof Error ? err.message : String(err)}).`,
    );
  }
}

function agentArgv(command: string, fromFlag: boolean): string[] {
  const label = fromFlag ? '--agent' : 'ACPD_AGENT';
  let argv: string[];
  try {
    argv = splitCommand(command);
  } catch (err) {
    throw new ConfigError(`Invalid ${label} "${command}": ${err instanceof Error ? err.message : String(err)}.`);
  }
  if (argv.length === 0 || argv[0] === '') {
    throw new ConfigError(`Invalid ${label} "${command}": the command is empty.`);
  }
  return argv;
}

/** The address ranges proxy-addr (Fastify's trustProxy) knows by name. */
const NAMED_RANGES = new Set(['loopback', 'linklocal', 'uniquelocal']);

/** An address, an address/prefix (CIDR), or a named range. */
function isProxyRange(entry: string): boolean {
  if (NAMED_RANGES.has(entry)) return true;
  const [address = '', prefix, ...rest] = entry.split('/');
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128);
}

/**
 * --trust-proxy: "true"/"1" believes any peer, "false"/"0" none (the
 * default), anything else is a list of the proxies' addresses or ranges.
 * Checked here so that a typo is a start-up error in our words rather than
 * proxy-addr's when the app is built.
 */
function trustedProxies(value: string | undefined, fromFlag: boolean): boolean | string[] {
  const text = value?.trim() ?? '';
  const lower = text.toLowerCase();
  if (lower === 'true' || lower === '1') return true;
  if (lower === 'false' || lower === '0' || lower === '') return false;
  const entries = text.split(',').map((entry) => entry.trim().toLowerCase());
  const bad = entries.find((entry) => !isProxyRange(entry));
  if (bad !== undefined) {
    throw new ConfigError(
      `Invalid --trust-proxy "${value ?? ''}"${fromFlag ? '' : ' (from ACPD_TRUST_PROXY)'}: "${bad}" is not an IP address, ` +
        'a CIDR range or one of loopback, linklocal, uniquelocal. Use true, false, or a comma-separated list such as "127.0.0.1,10.0.0.0/8".',
    );
  }
  return entries;
}

/**
 * The token comes from --token/ACPD_TOKEN or from --token-file/ACPD_TOKEN_FILE,
 * never both: with two sources there is no telling which one the operator
 * meant, so that is a start-up error rather than a silent precedence. The
 * file's content is trimmed like the variable, but an empty file is an error
 * (a file given and empty is a mistake, not a wish to disable auth).
 */
function resolveToken(
  raw: Partial<Record<SettingName, string>>,
  fromFlag: ReadonlySet<SettingName>,
  cwd: string,
): string | undefined {
  const file = raw.ACPD_TOKEN_FILE;
  if (file === undefined) return raw.ACPD_TOKEN?.trim() || undefined;
  if (raw.ACPD_TOKEN !== undefined) {
    const tokenSource = fromFlag.has('ACPD_TOKEN') ? '--token' : 'ACPD_TOKEN';
    const fileSource = fromFlag.has('ACPD_TOKEN_FILE') ? '--token-file' : 'ACPD_TOKEN_FILE';
    throw new ConfigError(
      `Both ${tokenSource} and ${fileSource} are set: give one of --token (ACPD_TOKEN) and --token-file (ACPD_TOKEN_FILE).`,
    );
  }
  const label = `Invalid --token-file "${file}"${fromFlag.has('ACPD_TOKEN_FILE') ? '' : ' (from ACPD_TOKEN_FILE)'}`;
  let text: string;
  try {
    text = readFileSync(resolve(cwd, file), 'utf8');
  } catch (err) {
    const code = errorCode(err);
    const reason =
      code === 'ENOENT' ? 'no such file' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : '';
    throw new ConfigError(
      `${label}: cannot be read (${reason || (err instanceof Error ? err.message : String(err))}).`,
    );
  }
  const token = text.trim();
  if (token === '') throw new ConfigError(`${label}: the file is empty.`);
  if (/[\r\n]/.test(token)) throw new ConfigError(`${label}: the token must be a single line.`);
  return token;
}

/** Our environment minus the token's variables, for the agent. */
function childEnvironment(env: NodeJS.ProcessEnv): Record<string, string> {
  const copy: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) {
    if (value !== undefined && key !== 'ACPD_TOKEN' && key !== 'ACPD_TOKEN_FILE') copy[key] = value;
  }
  return copy;
}

export function loadConfig(opts: { argv: string[]; env: NodeJS.ProcessEnv; cwd: string }): Config {
  const { values: flags } = parseCommandLine(opts.argv);

  // Flags win. An empty or blank variable counts as unset, which is what
  // `ACPD_TOKEN=` in a compose file means; an empty flag is taken as given.
  const raw: Partial<Record<SettingName, string>> = {};
  const fromFlag = new Set<SettingName>();
  for (const name of SETTING_NAMES) {
    const flag = flags[name];
    const variable = opts.env[name];
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

  let settings: Settings | undefined;
  let invalid = new Map<SettingName | '', ConfigError>();
  try {
    // A shallow copy: env-schema sets additionalProperties on what it is given.
    settings = envSchema<Settings>({ schema: { ...ConfigSchema }, data: { ...raw }, env: false, dotenv: false });
    invalid = nonFiniteSettings(settings, raw, fromFlag);
  } catch (err) {
    invalid = schemaErrors(err, raw, fromFlag);
  }
  const check = (name: SettingName): void => {
    const err = invalid.get(name);
    if (err !== undefined) throw err;
  };

  // 1. The token, from --token/ACPD_TOKEN or --token-file/ACPD_TOKEN_FILE
  // (one of them): trimmed, blank means none. A blank flag still wins.
  check('ACPD_TOKEN_FILE');
  const token = resolveToken(raw, fromFlag, opts.cwd);

  // 2. `host:port` typed into --hostname. Raw IPv6 has two colons or more.
  check('ACPD_HOSTNAME');
  const hostname = raw.ACPD_HOSTNAME ?? DEFAULT_HOSTNAME;
  if (!hostname.startsWith('[') && hostname.split(':').length === 2) {
    throw new ConfigError(
      `Invalid --hostname "${hostname}": looks like a "host:port" combination. Use --port for the port, e.g. "--hostname <host> --port <port>".`,
    );
  }

  // 3. Never listen beyond loopback without a token.
  check('ACPD_PORT');
  const isLoopback = isLoopbackHost(hostname);
  if (!isLoopback && token === undefined) {
    throw new ConfigError(
      `Refusing to bind ${hostname}:${raw.ACPD_PORT ?? DEFAULT_PORT} without a bearer token. ` +
        'Set ACPD_TOKEN or pass --token, or rebind to loopback (127.0.0.1, localhost, ::1, or [::1]).',
    );
  }

  // 3b. --require-auth without a token would be a daemon that nobody may use:
  // refuse it as loudly as the unguarded bind above.
  check('ACPD_REQUIRE_AUTH');
  const requireAuth = raw.ACPD_REQUIRE_AUTH === 'true';
  if (requireAuth && token === undefined) {
    throw new ConfigError('Refusing to start with --require-auth but no bearer token. Set ACPD_TOKEN or pass --token.');
  }

  // 4. The workspace.
  const workspace = resolveWorkspace(raw.ACPD_WORKSPACE ?? opts.cwd);

  // 5. What the session layer validates: its limits, timeouts and agent.
  check('ACPD_MAX_SESSIONS');
  check('ACPD_INIT_TIMEOUT_MS');
  check('ACPD_PERMISSION_TIMEOUT_MS');
  check('ACPD_KILL_GRACE_MS');
  check('ACPD_DRAIN_TIMEOUT_MS');
  check('ACPD_WARM_SESSIONS');
  const agent = raw.ACPD_AGENT === undefined ? undefined : agentArgv(raw.ACPD_AGENT, fromFlag.has('ACPD_AGENT'));
  check('ACPD_DATA_DIR');
  const dataDir = raw.ACPD_DATA_DIR === undefined ? join(workspace, '.acpd') : resolve(opts.cwd, raw.ACPD_DATA_DIR);

  // 7. Brackets mean exactly `[addr]`: no port after them, nothing empty
  // inside (an empty host would bind every interface).
  let listenHost = hostname;
  if (hostname.startsWith('[')) {
    const inner = hostname.slice(1, -1);
    if (!hostname.endsWith(']') || inner.length === 0 || inner.includes(']') || inner.includes('[')) {
      throw new ConfigError(
        `Invalid --hostname "${hostname}": brackets indicate an IPv6 literal but the value isn't a clean [addr] form. ` +
          'Pass the address without a trailing :port (use --port for that), e.g. "--hostname [::1] --port 4170".',
      );
    }
    listenHost = inner;
  }

  // 8. The connection cap, then anything left.
  check('ACPD_MAX_CONNECTIONS');
  check('ACPD_TRUST_PROXY');
  const trustProxy = trustedProxies(raw.ACPD_TRUST_PROXY, fromFlag.has('ACPD_TRUST_PROXY'));
  const [leftover] = invalid.values();
  if (leftover !== undefined) throw leftover;
  if (settings === undefined) throw new ConfigError('Invalid configuration.');

  return {
    port: settings.ACPD_PORT,
    hostname,
    listenHost,
    isLoopback,
    token,
    workspace,
    maxSessions: settings.ACPD_MAX_SESSIONS === 0 ? Infinity : settings.ACPD_MAX_SESSIONS,
    maxConnections: settings.ACPD_MAX_CONNECTIONS === 0 ? Infinity : settings.ACPD_MAX_CONNECTIONS,
    agent,
    dataDir,
    initTimeoutMs: settings.ACPD_INIT_TIMEOUT_MS,
    permissionTimeoutMs: settings.ACPD_PERMISSION_TIMEOUT_MS,
    killGraceMs: settings.ACPD_KILL_GRACE_MS,
    drainTimeoutMs: settings.ACPD_DRAIN_TIMEOUT_MS,
    warmSessions: settings.ACPD_WARM_SESSIONS,
    logLevel: settings.ACPD_LOG_LEVEL,
    rateLimitPrompts: settings.ACPD_RATE_LIMIT_PROMPTS,
    rateLimitMutations: settings.ACPD_RATE_LIMIT_MUTATIONS,
    rateLimitReads: settings.ACPD_RATE_LIMIT_READS,
    maxEventLoopDelayMs: settings.ACPD_MAX_EVENT_LOOP_DELAY_MS,
    maxHeapUsedBytes: settings.ACPD_MAX_HEAP_USED_BYTES,
    maxRssBytes: settings.ACPD_MAX_RSS_BYTES,
    requireAuth,
    trustProxy,
    sseHeartbeatMs: settings.ACPD_SSE_HEARTBEAT_MS,
    maxBodyBytes: settings.ACPD_MAX_BODY_BYTES,
    maxBodyDepth: settings.ACPD_MAX_BODY_DEPTH,
    ringBytes: settings.ACPD_RING_BYTES,
    subscriberBacklogBytes: settings.ACPD_SUBSCRIBER_BACKLOG_BYTES,
    headerTimeoutMs: settings.ACPD_HEADER_TIMEOUT_MS,
    agentEnv: childEnvironment(opts.env),
  };
}
