// The one schema behind every setting. A setting is declared here once: its
// environment variable is the key, its flag (`--max-sessions`) and its Config
// field (`maxSessions`) follow from that name (see names.ts), and its
// description and default make up its --help entry.
import { KindGuard, Type, type Static } from '@sinclair/typebox';
import { DEFAULT_MAX_QUEUED_BYTES, DEFAULT_RING_BYTES } from '../services/event-bus.js';
import { PERMISSION_POLICIES } from '../services/permission-policy.js';

export const DEFAULT_PORT = 4170;
export const DEFAULT_HOSTNAME = '127.0.0.1';
const DEFAULT_MAX_SESSIONS = 20;
const DEFAULT_MAX_CONNECTIONS = 256;
const DEFAULT_MAX_PENDING_PROMPTS = 5;
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
  ACPD_MAX_PENDING_PROMPTS: Type.Integer({
    minimum: 0,
    default: DEFAULT_MAX_PENDING_PROMPTS,
    description:
      'Prompts that may wait per session behind the running one; past it a prompt gets 503 prompt_queue_full. 0 = unlimited.',
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
      description:
        'Where the embedded agent keeps its sessions and acpd its event log, receipts and session catalog (default: <workspace>/.acpd).',
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
  ACPD_PERMISSION_POLICY: Type.Union(
    PERMISSION_POLICIES.map((name) => Type.Literal(name)),
    {
      default: 'first-responder',
      description:
        "Whose vote settles a permission request: first-responder (any client with the approve scope, first answer wins), designated (only the user who sent the turn's prompt), consensus (--consensus-quorum distinct users choosing the same option), local-only (only clients on a loopback address).",
    },
  ),
  ACPD_CONSENSUS_QUORUM: Type.Integer({
    minimum: 0,
    maximum: 1000,
    default: 0,
    description:
      'Under --permission-policy consensus: how many distinct users must choose the same option. 0 = a majority of the users attached to the session when the agent asks.',
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
  ACPD_ALLOW_FILE_WRITES: Type.Boolean({
    default: false,
    description:
      'Serve the workspace file writes over HTTP (POST /file/write, /file/edit, /file/upload); off, they answer 403 file_writes_disabled. Reads are always served.',
  }),
  ACPD_TRUST_PROXY: Type.String({
    default: 'false',
    description:
      'Reverse proxies whose X-Forwarded-For/-Proto/-Host are believed: "false", "true" (any peer), or a comma-separated list of addresses and CIDR ranges (e.g. 127.0.0.1,10.0.0.0/8; also loopback, linklocal, uniquelocal).',
  }),
  ACPD_ALLOW_ORIGIN: Type.Optional(
    Type.String({
      description:
        "Browser origins allowed to call the API besides the daemon's own, comma-separated and exact (e.g. https://app.example,http://localhost:3000). Requests with any other Origin are refused (403).",
    }),
  ),
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
  ACPD_TOKENS_FILE: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'YAML or JSON file of named users, each with token hashes (sha256:<hex>, see `acpd hash-token`), scopes (read, prompt, approve, admin), an optional expiry and prompt rate. Reloaded on SIGHUP. May go with --token, which is then user "default" with every scope.',
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
  ACPD_EVENT_LOG: Type.Union([Type.Literal('memory'), Type.Literal('sqlite')], {
    default: 'sqlite',
    description:
      "Where each session's replay events are kept: sqlite (<data-dir>/events.sqlite; survives restarts and kill -9, and ids and the epoch go on where they stopped) or memory (a ring, lost on restart).",
  }),
  ACPD_IDEMPOTENCY_TTL: Type.Integer({
    minimum: 1,
    default: 86_400,
    description:
      'Seconds the answer to a request sent with an Idempotency-Key is kept, so that a retry with that key is answered again instead of run again.',
  }),
  ACPD_WEBHOOK_URL: Type.Optional(
    Type.String({
      description:
        'Receivers of webhooks (permission_request, turn_complete, session_died), comma-separated http(s) URLs. Each delivery is signed with --webhook-secret, which is then required.',
    }),
  ),
  ACPD_WEBHOOK_SECRET: Type.Optional(
    Type.String({
      description:
        'Key of the HMAC-SHA256 signature of every webhook delivery (Acpd-Signature). Prefer --webhook-secret-file. Not together with --webhook-secret-file.',
    }),
  ),
  ACPD_WEBHOOK_SECRET_FILE: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'File holding the webhook secret (one line, surrounding blanks trimmed; relative to the current directory). Not together with --webhook-secret.',
    }),
  ),
  ACPD_WEBHOOK_MAX_ATTEMPTS: Type.Integer({
    minimum: 1,
    maximum: 100,
    default: 10,
    description:
      'Attempts at one webhook delivery (network errors, 5xx and 429 are retried) before it is dropped and logged.',
  }),
  ACPD_WEBHOOK_RETRY_MS: Type.Integer({
    minimum: 1,
    maximum: MAX_TIMER_MS,
    default: 1_000,
    description:
      'Wait before the first retry of a webhook delivery; each next wait doubles, up to five minutes, with random jitter.',
  }),
  ACPD_REDIS_URL: Type.Optional(
    Type.String({
      minLength: 1,
      pattern: '^rediss?://',
      description:
        'Redis to share state with other acpd nodes (redis://[user:password@]host:port[/db]). Set, event logs, receipts, the session catalog and the session cap live there, and sessions are owned by leases; unset, acpd is a single node.',
    }),
  ),
  ACPD_REDIS_PREFIX: Type.String({
    minLength: 1,
    maxLength: 64,
    pattern: '^[A-Za-z0-9._:-]+$',
    default: 'acpd:',
    description: 'Prefix of every Redis key this cluster uses; clusters sharing one Redis need different prefixes.',
  }),
  ACPD_NODE_ID: Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 128,
      pattern: '^[A-Za-z0-9._-]+$',
      description: "This node's name in the cluster (default: the host name and process id).",
    }),
  ),
  ACPD_ADVERTISE_URL: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'Base URL at which the other nodes reach this one to forward requests for sessions it owns (default: http://<hostname>:<port>, with 127.0.0.1 for a wildcard bind).',
    }),
  ),
  ACPD_LEASE_TTL: Type.Integer({
    minimum: 1,
    maximum: 3600,
    default: 10,
    description:
      "Seconds a node's lease on a session lasts unless renewed (every third of it). A dead node's sessions move to a live node once its leases expire.",
  }),
  ACPD_HEADER_TIMEOUT_MS: Type.Integer({
    minimum: 1,
    maximum: MAX_TIMER_MS,
    default: 10_000,
    description: 'How long a connection may take to send a complete request head; idle or slow ones are closed.',
  }),
});

/** The settings as validate.ts hands them back: coerced, defaults filled in. */
export type Settings = Static<typeof ConfigSchema>;
export type SettingName = keyof Settings;

/** Every setting name, in schema order (which is also the order of --help). */
export const SETTING_NAMES: readonly SettingName[] = Object.keys(ConfigSchema.properties).filter(
  (key): key is SettingName => key in ConfigSchema.properties,
);

/** Settings that are switches: a bare flag means true. */
export function isSwitch(name: SettingName): boolean {
  return KindGuard.IsBoolean(ConfigSchema.properties[name]);
}
