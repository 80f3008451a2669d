// The raw strings against ConfigSchema: coercion, ranges, defaults. Nothing
// is thrown here: each setting that fails gets its ConfigError, worded for
// the operator, and loadConfig raises it at the step of the boot order where
// that setting is looked at.
//
// This was env-schema (Ajv with coerceTypes and useDefaults). The schema
// only uses four kinds of setting (integers with a range, switches, choices
// among literals, strings with a length and a pattern), which a few lines
// check the way Ajv did; Ajv built and compiled a validator of its own for
// one use at start-up, a tenth of the CPU from start to listening.
import { KindGuard, type TSchema } from '@sinclair/typebox';
import { ConfigError } from './config-error.js';
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

/** Marks a raw string its setting's schema refuses. */
const REFUSED = Symbol('refused');

/** Code points, as JSON Schema counts a string's length. */
function lengthOf(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/**
 * One raw string as its setting's schema takes it. Numbers are read as Ajv's
 * type coercion read them (any string `Number()` accepts but the empty one:
 * " 8 ", "0x10" and "1e3" included), and must then be safe integers within
 * the range ("Infinity" and "1e400" are not); switches are "true" or "false".
 */
function coerce(schema: TSchema, text: string): unknown {
  if (KindGuard.IsInteger(schema)) {
    const n = text === '' ? Number.NaN : Number(text);
    if (!Number.isSafeInteger(n)) return REFUSED;
    if (schema.minimum !== undefined && n < schema.minimum) return REFUSED;
    if (schema.maximum !== undefined && n > schema.maximum) return REFUSED;
    return n;
  }
  if (KindGuard.IsBoolean(schema)) return text === 'true' ? true : text === 'false' ? false : REFUSED;
  if (KindGuard.IsUnion(schema)) {
    return schema.anyOf.some((choice) => KindGuard.IsLiteral(choice) && choice.const === text) ? text : REFUSED;
  }
  if (KindGuard.IsString(schema)) {
    if (schema.minLength !== undefined && lengthOf(text) < schema.minLength) return REFUSED;
    if (schema.maxLength !== undefined && lengthOf(text) > schema.maxLength) return REFUSED;
    if (schema.pattern !== undefined && !new RegExp(schema.pattern, 'u').test(text)) return REFUSED;
    return text;
  }
  throw new Error(`config schema: no reader for the kind of ${JSON.stringify(schema)}`);
}

export function validateSettings(raw: RawSettings, fromFlag: ReadonlySet<SettingName>): Validated {
  const invalid: Invalid = new Map();
  const settings: Record<string, unknown> = {};
  const required = new Set<string>(ConfigSchema.required ?? []);
  for (const name of SETTING_NAMES) {
    const schema = ConfigSchema.properties[name];
    const text = raw[name];
    if (text === undefined) {
      const fallback: unknown = (schema as { default?: unknown }).default;
      if (fallback !== undefined) settings[name] = fallback;
      else if (required.has(name)) invalid.set('', new ConfigError(`Invalid configuration: ${name} is required.`));
      continue;
    }
    const value = coerce(schema, text);
    if (value === REFUSED) invalid.set(name, invalidSetting(name, raw, fromFlag));
    else settings[name] = value;
  }
  // Every property was checked against its schema above; the object has no others.
  return { settings: invalid.size === 0 ? (settings as Settings) : undefined, invalid };
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
