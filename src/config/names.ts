// How one setting is spelled in each of its three places. The environment
// variable is the schema key; the flag and the Config field are worked out
// from it, the field both at run time (fieldFor) and in the type (FieldOf),
// so that the two can never disagree.
import type { SettingName } from './schema.js';

/** `MAX_SESSIONS` → `Max` + `Sessions`: each word capitalised, the rest lower case. */
type PascalWords<S extends string> = S extends `${infer Word}_${infer Rest}`
  ? `${Capitalize<Lowercase<Word>>}${PascalWords<Rest>}`
  : Capitalize<Lowercase<S>>;

/** `MAX_SESSIONS` → `maxSessions`. */
type CamelCase<S extends string> = S extends `${infer Word}_${infer Rest}`
  ? `${Lowercase<Word>}${PascalWords<Rest>}`
  : Lowercase<S>;

/** The Config field of a setting: `ACPD_MAX_SESSIONS` → `maxSessions`. */
export type FieldOf<N extends SettingName> = N extends `ACPD_${infer Rest}` ? CamelCase<Rest> : never;

const PREFIX = 'ACPD_';

/** `ACPD_MAX_SESSIONS` → `--max-sessions`. */
export function flagFor(name: SettingName): string {
  return `--${name.slice(PREFIX.length).toLowerCase().replaceAll('_', '-')}`;
}

/** `ACPD_MAX_SESSIONS` → `maxSessions`, the run-time twin of FieldOf. */
export function fieldFor<N extends SettingName>(name: N): FieldOf<N> {
  const [first = '', ...rest] = name.slice(PREFIX.length).toLowerCase().split('_');
  const field = first + rest.map((word) => word.charAt(0).toUpperCase() + word.slice(1)).join('');
  // The string is built by the very rule FieldOf spells out in types; the
  // compiler cannot follow string operations, so it is told.
  return field as FieldOf<N>;
}
