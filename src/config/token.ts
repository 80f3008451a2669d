// The bearer token, from --token/ACPD_TOKEN or from --token-file/ACPD_TOKEN_FILE.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { loadTokenTable, TokensFileError } from '../services/tokens.js';
import { ConfigError, messageOf, errorCode } from './config-error.js';
import type { SettingName } from './schema.js';
import type { RawSettings } from './validate.js';

/**
 * One source or the other, never both: with two there is no telling which
 * one the operator meant, so that is a start-up error rather than a silent
 * precedence. The token is trimmed and a blank one means none; but a file
 * that is given and empty is a mistake, not a wish to turn auth off, so that
 * is an error too.
 */
export function resolveToken(raw: RawSettings, fromFlag: ReadonlySet<SettingName>, cwd: string): string | undefined {
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
  return readSecretFile(cwd, file, label, 'token');
}

/**
 * A one-line secret kept in a file (a token, a webhook secret): read, trimmed,
 * and refused with `label` when unreadable, empty or on several lines.
 */
export function readSecretFile(cwd: string, file: string, label: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(resolve(cwd, file), 'utf8');
  } catch (err) {
    const code = errorCode(err);
    const reason =
      code === 'ENOENT' ? 'no such file' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : '';
    throw new ConfigError(`${label}: cannot be read (${reason || messageOf(err)}).`);
  }
  const secret = text.trim();
  if (secret === '') throw new ConfigError(`${label}: the file is empty.`);
  if (/[\r\n]/.test(secret)) throw new ConfigError(`${label}: the ${what} must be a single line.`);
  return secret;
}

/**
 * The tokens file's absolute path, after reading it once: a file that cannot
 * be read or parsed stops the start (a later reload that fails keeps the
 * users already loaded instead). It may go with a --token (user `default`).
 */
export function resolveTokensFile(
  raw: RawSettings,
  fromFlag: ReadonlySet<SettingName>,
  cwd: string,
  token: string | undefined,
): string | undefined {
  const file = raw.ACPD_TOKENS_FILE;
  if (file === undefined) return undefined;
  const path = resolve(cwd, file);
  try {
    const table = loadTokenTable({ tokensFile: path, ...(token !== undefined ? { token } : {}) });
    if (table.size === 0) throw new TokensFileError('it lists no user');
  } catch (err) {
    if (!(err instanceof TokensFileError)) throw err;
    const label = `Invalid --tokens-file "${file}"${fromFlag.has('ACPD_TOKENS_FILE') ? '' : ' (from ACPD_TOKENS_FILE)'}`;
    throw new ConfigError(`${label}: ${err.message}.`);
  }
  return path;
}
