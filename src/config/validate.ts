// The raw strings through env-schema (coercion, ranges, defaults). Nothing is
// thrown here: each setting that fails gets its ConfigError, worded for the
// operator, and loadConfig raises it at the step of the boot order where
// that setting is looked at.
import { KindGuard, type TSchema } from '@sinclair/typebox';
import envSchema from 'env-schema';
import { ConfigError, messageOf } from './config-error.js';
import { flagFor } from './names.js';
import { ConfigSchema, SETTING_NAMES, type SettingName, type Settings } from './schema.js';

/** The raw value of each setting that was given, flag or variable. */
export type RawSettings = Partial<Record<SettingName, string>>;

/** One error per failing setting; the key '' holds a failure no setting could be blamed for. */
type Invalid = Map<SettingName | '', ConfigError>;

type Validated = {
  /** Undefined when the schema rejected something. */
  settings: Settings | undefined;
  invalid: Invalid;
};

export function validateSettings(raw: RawSettings, fromFlag: ReadonlySet<SettingName>): Validated {
  try {
    // A shallow copy: env-schema sets additionalProperties on what it is given.
    const settings = envSchema<Settings>({ schema: { ...ConfigSchema }, data: { ...raw }, env: false, dotenv: false });
    return { settings, invalid: nonFiniteSettings(settings, raw, fromFlag) };
  } catch (err) {
    return { settings: undefined, invalid: schemaErrors(err, raw, fromFlag) };
  }
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
  if (KindGuard.IsString(schema) && schema.pattern !== undefined) {
    return `a string matching ${schema.pattern}${schema.maxLength !== undefined ? ` (at most ${schema.maxLength} characters)` : ''}`;
  }
  return 'a non-empty string';
}

function invalidSetting(name: SettingName, raw: RawSettings, fromFlag: ReadonlySet<SettingName>): ConfigError {
  const unlimited = name === 'ACPD_MAX_SESSIONS' || name === 'ACPD_MAX_CONNECTIONS' ? ' (0 = unlimited)' : '';
  const source = fromFlag.has(name) ? '' : ` (from ${name})`;
  return new ConfigError(
    `Invalid ${flagFor(name)} "${raw[name] ?? ''}"${source}: must be ${expectation(ConfigSchema.properties[name])}${unlimited}.`,
  );
}

/** Turns env-schema's Ajv failure into one ConfigError per offending setting. */
function schemaErrors(err: unknown, raw: RawSettings, fromFlag: ReadonlySet<SettingName>): Invalid {
  const found: Invalid = new Map();
  const details: unknown = err instanceof Error && 'errors' in err ? err.errors : undefined;
  const list: readonly unknown[] = Array.isArray(details) ? details : [];
  for (const detail of list) {
    const path: unknown =
      typeof detail === 'object' && detail !== null && 'instancePath' in detail ? detail.instancePath : '';
    const key = typeof path === 'string' ? path.split('/')[1] : undefined;
    const name = SETTING_NAMES.find((candidate) => candidate === key);
    if (name !== undefined && !found.has(name)) found.set(name, invalidSetting(name, raw, fromFlag));
  }
  if (found.size === 0) {
    found.set('', new ConfigError(`Invalid configuration: ${messageOf(err)}`));
  }
  return found;
}

/**
 * Ajv's coercion lets "Infinity", "-Infinity" and "1e400" through an integer
 * schema with its range unchecked; catch them here.
 */
function nonFiniteSettings(settings: Settings, raw: RawSettings, fromFlag: ReadonlySet<SettingName>): Invalid {
  const found: Invalid = new Map();
  for (const name of SETTING_NAMES) {
    const value: unknown = settings[name];
    if (typeof value === 'number' && !Number.isSafeInteger(value)) found.set(name, invalidSetting(name, raw, fromFlag));
  }
  return found;
}
