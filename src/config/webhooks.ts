// The webhook settings: the receivers from --webhook-url, and the secret from
// --webhook-secret or --webhook-secret-file (one of them, as for the token).
import { ConfigError } from './config-error.js';
import { readSecretFile } from './token.js';
import type { SettingName } from './schema.js';
import type { RawSettings } from './validate.js';

/**
 * --webhook-url: a comma-separated list (a flag takes one value, and a list
 * in one variable is what a compose file can hold). Each entry is an
 * absolute http(s) URL without a fragment; blank entries are skipped and a
 * repeated one counts once, so one event is never sent twice to one place.
 */
export function webhookUrls(value: string | undefined, fromFlag: boolean): string[] {
  const urls = new Set<string>();
  for (const entry of (value ?? '').split(',').map((part) => part.trim())) {
    if (entry === '') continue;
    let url: URL | undefined;
    try {
      url = new URL(entry);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.hash !== '') {
      throw new ConfigError(
        `Invalid --webhook-url "${value ?? ''}"${fromFlag ? '' : ' (from ACPD_WEBHOOK_URL)'}: "${entry}" is not an http(s) URL. ` +
          'Give absolute URLs, comma-separated, e.g. "https://hooks.example/acpd,http://127.0.0.1:9000/in".',
      );
    }
    urls.add(url.href);
  }
  return [...urls];
}

/**
 * The webhook secret. Required once there is a receiver: an unsigned
 * approval request could be forged by anybody who can reach the receiver.
 * A given file that is empty is an error, as with --token-file.
 */
export function resolveWebhookSecret(
  raw: RawSettings,
  fromFlag: ReadonlySet<SettingName>,
  cwd: string,
  receivers: number,
): string | undefined {
  const name = (setting: SettingName, flag: string) => (fromFlag.has(setting) ? flag : setting);
  const file = raw.ACPD_WEBHOOK_SECRET_FILE;
  let secret: string | undefined;
  if (file === undefined) secret = raw.ACPD_WEBHOOK_SECRET?.trim() || undefined;
  else if (raw.ACPD_WEBHOOK_SECRET !== undefined) {
    throw new ConfigError(
      `Both ${name('ACPD_WEBHOOK_SECRET', '--webhook-secret')} and ${name('ACPD_WEBHOOK_SECRET_FILE', '--webhook-secret-file')} are set: give one of them.`,
    );
  } else {
    const label = `Invalid --webhook-secret-file "${file}"${fromFlag.has('ACPD_WEBHOOK_SECRET_FILE') ? '' : ' (from ACPD_WEBHOOK_SECRET_FILE)'}`;
    secret = readSecretFile(cwd, file, label, 'secret');
  }
  if (receivers > 0 && secret === undefined) {
    throw new ConfigError(
      'Refusing to send webhooks unsigned: --webhook-url needs --webhook-secret or --webhook-secret-file (ACPD_WEBHOOK_SECRET, ACPD_WEBHOOK_SECRET_FILE).',
    );
  }
  return secret;
}
