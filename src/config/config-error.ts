// The one error loadConfig and parseCommandLine throw, and the helpers that
// put a caught file-system error into its messages.

/** A setting or an argument the daemon cannot start with; its message is for the operator. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** A Node system error's code (`ENOENT`, …), if there is one. */
export function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

/** What went wrong, for a message: the error's own text. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
