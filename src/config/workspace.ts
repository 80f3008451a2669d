// --workspace: an existing directory, spelled one canonical way.
import { realpathSync, statSync, type Stats } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { ConfigError, messageOf, errorCode } from './config-error.js';

/** The workspace's canonical absolute path, or a ConfigError saying why there is none. */
export function resolveWorkspace(rawWorkspace: string): string {
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
    throw new ConfigError(`Invalid --workspace "${rawWorkspace}": cannot be read (${messageOf(err)}).`);
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
    throw new ConfigError(`Invalid --workspace "${rawWorkspace}": cannot be resolved (${messageOf(err)}).`);
  }
}
