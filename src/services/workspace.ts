/**
 * Workspace paths: canonical form, and the one comparison every route uses.
 */
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { WorkspaceMismatchError } from '../errors.js';

/**
 * Absolute, symlinks resolved, on-disk casing. A path that cannot be resolved
 * (missing, not a directory, too long, a loop, unreadable) keeps its resolved
 * form: it can then only differ from the bound workspace, which the caller
 * reports as a 400 mismatch rather than letting client input cause a 500.
 */
export function canonicalizeWorkspace(p: string): string {
  const resolved = path.resolve(p);
  try {
    return realpathSync.native(resolved);
  } catch {
    return resolved;
  }
}

/**
 * The bound workspace if `requested` names it, else a WorkspaceMismatchError.
 * An exact string match skips the filesystem.
 */
export function resolveWorkspace(bound: string, requested: string | undefined): string {
  if (requested === undefined || requested === bound) return bound;
  if (!path.isAbsolute(requested)) {
    throw new Error(`workspaceCwd must be an absolute path; got ${JSON.stringify(requested)}`);
  }
  const key = canonicalizeWorkspace(requested);
  if (key !== bound) throw new WorkspaceMismatchError(bound, key);
  return key;
}

/** True when `target` is `root` or lies beneath it. */
export function isInside(root: string, target: string): boolean {
  const rel = path.relative(root, target);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}
