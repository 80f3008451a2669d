/**
 * Tests that need a program npm does not install (nginx, Redis, Chromium) ask for it
 * here. On a developer's machine a missing program turns those tests into one skip that names the
 * Debian package and the command installing it, so `npm ci && npm test` passes anywhere. In CI,
 * `.ci/run` sets ACPD_REQUIRE_SYSTEM_DEPS=1 and installs the packages first: there, a missing program
 * is a failure, so a test can never be skipped without anyone noticing.
 */
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

/** The variable that turns a missing system package from a skip into a failure. */
export const REQUIRE_SYSTEM_DEPS = 'ACPD_REQUIRE_SYSTEM_DEPS';

export interface SystemPackage {
  /** The program the tests run: an absolute path, or a command name looked up in PATH. */
  binary: string;
  /** The Debian package that provides it. */
  debianPackage: string;
}

/**
 * Every system package some test needs. `.ci/run` installs the same list (a test checks that it
 * names each of them).
 */
export const SYSTEM_PACKAGES = {
  /** test/nginx.test.ts runs deploy/nginx.conf in a real nginx. */
  nginx: { binary: '/usr/sbin/nginx', debianPackage: 'nginx' },
  /** test/readme-tour.test.ts runs the README's curl commands. */
  curl: { binary: 'curl', debianPackage: 'curl' },
  /** The cluster tests and the bench run real Redis servers (harness/redis.ts). */
  redis: { binary: 'redis-server', debianPackage: 'redis-server' },
  /** The README's shell blocks are run by bash (Debian's default shell for users, not for sh). */
  bash: { binary: 'bash', debianPackage: 'bash' },
  /** test/console.test.ts drives the web console in headless Chromium (playwright-core launches this one). */
  chromium: { binary: '/usr/bin/chromium', debianPackage: 'chromium' },
  /** test/terminal.test.ts drives `acpd chat` in a real pseudo-terminal. */
  tmux: { binary: 'tmux', debianPackage: 'tmux' },
} as const satisfies Record<string, SystemPackage>;

/** What a test object must offer: tap's `Test` does. */
export interface SkipOrFail {
  /** A skipped subtest: tap reports `ok N - <name> # SKIP` and never calls `body`. */
  skip(name: string, body: () => void): unknown;
  fail(message: string): unknown;
}

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The executable `binary` names, or undefined when there is none. */
export function findBinary(binary: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (binary.includes('/')) return isExecutable(binary) ? binary : undefined;
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, binary);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/** Why the package counts as absent, and how to install it. */
export function missingMessage(pkg: SystemPackage): string {
  const where = pkg.binary.includes('/') ? `no executable ${pkg.binary}` : `no ${pkg.binary} in PATH`;
  return `${pkg.debianPackage} not installed (${where}): sudo apt-get install ${pkg.debianPackage}`;
}

/**
 * Whether the tests that need `pkg` can run. When it is absent, `t` gets one skip naming the package
 * and its install command, or, with ACPD_REQUIRE_SYSTEM_DEPS=1 in `env`, a failure saying the same.
 */
export function requireSystemPackage(t: SkipOrFail, pkg: SystemPackage, env: NodeJS.ProcessEnv = process.env): boolean {
  if (findBinary(pkg.binary, env) !== undefined) return true;
  if (env[REQUIRE_SYSTEM_DEPS] === '1') {
    t.fail(`${missingMessage(pkg)}; ${REQUIRE_SYSTEM_DEPS}=1 requires it`);
  } else {
    t.skip(missingMessage(pkg), () => undefined);
  }
  return false;
}
