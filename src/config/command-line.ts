// The flags: one per setting, named after it, plus --help and --version; and the --help
// text, written from the schema's descriptions and defaults.
import { parseArgs } from 'node:util';
import type { TSchema } from '@sinclair/typebox';
import { ConfigError } from './config-error.js';
import { flagFor } from './names.js';
import { ConfigSchema, SETTING_NAMES, isSwitch, type SettingName } from './schema.js';

export type CommandLine = {
  help: boolean;
  /** `--version`/`-v`: print the version and exit. */
  version: boolean;
  /** Raw flag values, keyed by their environment twin. */
  values: Partial<Record<SettingName, string>>;
};

/**
 * Reads the flags. Every flag takes a value (`--port 80` or `--port=80`)
 * except `--help`/`-h`, `--version`/`-v` and the switches (`--require-auth`,
 * or `--require-auth=false`); anything else is a ConfigError. When help or
 * the version is asked for, the other arguments are not checked (help wins
 * over the version).
 */
export function parseCommandLine(argv: readonly string[]): CommandLine {
  const byFlag = new Map<string, SettingName>(SETTING_NAMES.map((name) => [flagFor(name).slice(2), name]));
  const options: Record<string, { type: 'string' } | { type: 'boolean'; short?: string }> = {
    help: { type: 'boolean', short: 'h' },
    version: { type: 'boolean', short: 'v' },
  };
  for (const [flag, name] of byFlag) options[flag] = isSwitch(name) ? { type: 'boolean' } : { type: 'string' };

  // Non-strict parsing hands back every token, so the errors below can be
  // worded for acpd rather than in parseArgs' generic terms.
  const { tokens } = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });

  const asked = (name: string) => tokens.some((token) => token.kind === 'option' && token.name === name);
  if (asked('help')) return { help: true, version: false, values: {} };
  if (asked('version')) return { help: false, version: true, values: {} };

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
  return { help: false, version: false, values };
}

/** The --help text, built from the schema's descriptions and defaults. */
export function usage(): string {
  const lines = [
    'Usage: acpd [options]',
    '       acpd chat | attach <id> | sessions [options]   (the terminal client: acpd chat --help)',
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
  lines.push(
    '  -h, --help                      Show this text.',
    '  -v, --version                   Print the version.',
    '',
  );
  return lines.join('\n');
}

function defaultText(schema: TSchema): string | undefined {
  const value: unknown = schema.default;
  return typeof value === 'number' || typeof value === 'string' || typeof value === 'boolean'
    ? String(value)
    : undefined;
}
