// Config, the resolved settings the rest of acpd receives, derived from the
// schema rather than written beside it. A setting is either plain, and then
// its validated value is copied as it stands under its camelCase name
// (`ACPD_KILL_GRACE_MS` → `killGraceMs`), with nothing to add here; or it is
// listed below as special, and loadConfig works its field out.
import { fieldFor, type FieldOf } from './names.js';
import { SETTING_NAMES, type SettingName, type Settings } from './schema.js';

/** Settings whose field is not their validated value as it stands, each with the reason. */
const SPECIAL_SETTINGS = [
  'ACPD_TOKEN', // trimmed, blank meaning none, or read from the token file
  'ACPD_TOKEN_FILE', // only a source of the token: no field of its own
  'ACPD_TOKENS_FILE', // resolved against the current directory, and checked at start-up
  'ACPD_WORKSPACE', // checked and canonicalised; the current directory when unset
  'ACPD_MAX_SESSIONS', // 0 means unlimited: Infinity
  'ACPD_MAX_CONNECTIONS', // likewise
  'ACPD_AGENT', // split into argv
  'ACPD_DATA_DIR', // resolved against the current directory; <workspace>/.acpd when unset
  'ACPD_TRUST_PROXY', // parsed into the form of Fastify's trustProxy option
  'ACPD_ALLOW_ORIGIN', // a comma-separated list, checked and normalised into origins
  'ACPD_WEBHOOK_URL', // a comma-separated list of checked URLs
  'ACPD_WEBHOOK_SECRET', // trimmed, or read from the secret file
  'ACPD_WEBHOOK_SECRET_FILE', // only a source of the webhook secret: no field of its own
] as const satisfies readonly SettingName[];

type SpecialSetting = (typeof SPECIAL_SETTINGS)[number];
type PlainSetting = Exclude<SettingName, SpecialSetting>;

/** The plain settings, each under its field name with its schema type. */
type PlainFields = { [N in PlainSetting as FieldOf<N>]: Settings[N] };

/** What loadConfig works out: the special settings' fields, and those no setting has. */
type DerivedFields = {
  /** The bearer token, from --token or --token-file; undefined when there is none. */
  token: string | undefined;
  /** The tokens file (--tokens-file), absolute; undefined when there is none. */
  tokensFile: string | undefined;
  /** Canonical (realpath) absolute workspace directory. */
  workspace: string;
  /** Infinity when unlimited. */
  maxSessions: number;
  /** Infinity when unlimited. */
  maxConnections: number;
  /** The agent's argv, or undefined for the embedded agent. */
  agent: string[] | undefined;
  /** Absolute. */
  dataDir: string;
  /** Fastify's `trustProxy`: whom to believe about X-Forwarded-*. */
  trustProxy: boolean | string[];
  /** Cross origins allowed besides the daemon's own, each as a browser serialises it (`https://app.example`). */
  allowOrigin: string[];
  /** Webhook receivers (`--webhook-url`), each an absolute http(s) URL; empty = no webhooks. */
  webhookUrl: string[];
  /** The key webhook deliveries are signed with; set whenever `webhookUrl` is not empty. */
  webhookSecret: string | undefined;
  /** `hostname` without IPv6 brackets, for `listen()`. */
  listenHost: string;
  isLoopback: boolean;
  /** The environment an agent child receives: ours, minus the token's and the webhook secret's variables. */
  agentEnv: Record<string, string>;
};

/** Merges an intersection into one object type, for readable hovers and errors. */
type Flatten<T> = { [K in keyof T]: T[K] };

/**
 * A field is copied or derived, never both: should a name turn up on both
 * sides (a setting made plain but still derived), Config becomes `never` and
 * every use of it fails to compile.
 */
type Disjoint<A, B> = [keyof A & keyof B] extends [never] ? A & B : never;

export type Config = Flatten<Disjoint<PlainFields, DerivedFields>>;

const SPECIAL: ReadonlySet<SettingName> = new Set(SPECIAL_SETTINGS);

/** The plain settings, in schema order. */
const PLAIN_SETTINGS: readonly PlainSetting[] = SETTING_NAMES.filter(
  (name): name is PlainSetting => !SPECIAL.has(name),
);

/** Copies every plain setting to its field. */
export function plainFields(settings: Settings): PlainFields {
  const fields: Record<string, Settings[PlainSetting]> = {};
  for (const name of PLAIN_SETTINGS) fields[fieldFor(name)] = settings[name];
  // The loop above writes exactly PlainFields' keys (fieldFor is FieldOf at
  // run time, over the same list of settings); the compiler cannot count them.
  return fields as PlainFields;
}
