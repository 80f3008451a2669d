/**
 * acpd's own version, from its package.json. The file is found by walking
 * up from this module, so the same code works from dist/ (package.json one
 * level up, as in the image), from the test build (two levels up) and from an
 * npm install. Read once, when the module loads: the version of a running
 * daemon does not change.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE_NAME = 'acpd';

/** What a build whose package.json went missing reports, rather than refusing to start. */
const UNKNOWN = 'unknown';

function readVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const found = versionIn(path.join(dir, 'package.json'));
    if (found !== undefined) return found;
    const parent = path.dirname(dir);
    if (parent === dir) return UNKNOWN;
    dir = parent;
  }
}

/** The version in `file` when it is acpd's package.json; undefined for a missing or foreign one. */
function versionIn(file: string): string | undefined {
  let manifest: unknown;
  try {
    manifest = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
  if (typeof manifest !== 'object' || manifest === null) return undefined;
  const { name, version } = manifest as { name?: unknown; version?: unknown };
  return name === PACKAGE_NAME && typeof version === 'string' ? version : undefined;
}

export const VERSION: string = readVersion();
