// test/support/system-deps.ts: a missing system package is a skip that says how to install it, or a
// failure under ACPD_REQUIRE_SYSTEM_DEPS=1, which .ci/run sets. Checked on fake binaries, both through a
// recording test object and through a real tap process, whose exit code is what npm test and CI see.
import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { tempDir } from './support/app.js';
import {
  REQUIRE_SYSTEM_DEPS,
  SYSTEM_PACKAGES,
  findBinary,
  requireSystemPackage,
  type SkipOrFail,
} from './support/system-deps.js';

const PROBE = fileURLToPath(new URL('./fixtures/system-deps-probe.js', import.meta.url));
const CI_RUN = fileURLToPath(new URL('../../.ci/run', import.meta.url));
const FAKE = 'acpd-fake-package';

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A directory holding an executable `acpd-fake-tool` and a file without the run bit. */
function fakeBinaries(t: Parameters<typeof tempDir>[0]): { dir: string; tool: string; plain: string } {
  const dir = tempDir(t, 'acpd-sysdeps-');
  const tool = path.join(dir, 'acpd-fake-tool');
  writeFileSync(tool, '#!/bin/sh\nexit 0\n');
  chmodSync(tool, 0o755);
  const plain = path.join(dir, 'acpd-not-executable');
  writeFileSync(plain, 'data\n');
  chmodSync(plain, 0o644);
  return { dir, tool, plain };
}

/** A test object that records what the helper told it. */
function recorder(): SkipOrFail & { skips: string[]; failures: string[] } {
  const skips: string[] = [];
  const failures: string[] = [];
  return { skips, failures, skip: (name) => skips.push(name), fail: (message) => failures.push(message) };
}

t.test('findBinary: absolute paths and names looked up in PATH, executables only', async (t) => {
  const { dir, tool, plain } = fakeBinaries(t);
  t.equal(findBinary(tool), tool);
  t.equal(findBinary(path.join(dir, 'absent')), undefined);
  // As root, X_OK still needs one execute bit, so this holds for every user.
  t.equal(findBinary(plain), undefined, 'a file without the run bit does not count');
  t.equal(findBinary('acpd-fake-tool', { PATH: `/nonexistent${path.delimiter}${dir}` }), tool);
  t.equal(findBinary('acpd-fake-tool', { PATH: '/nonexistent' }), undefined);
  t.equal(findBinary('acpd-fake-tool', {}), undefined, 'no PATH, nothing found by name');
});

t.test('requireSystemPackage: run, skip with the install command, or fail when required', async (t) => {
  const { dir, tool } = fakeBinaries(t);
  const present = { binary: tool, debianPackage: FAKE };
  const absent = { binary: path.join(dir, 'absent'), debianPackage: FAKE };

  const run = recorder();
  t.equal(requireSystemPackage(run, present, { [REQUIRE_SYSTEM_DEPS]: '1' }), true);
  t.same([run.skips, run.failures], [[], []], 'nothing reported when the package is there');

  const skipped = recorder();
  t.equal(requireSystemPackage(skipped, absent, {}), false);
  t.same(skipped.failures, []);
  t.same(skipped.skips, [`${FAKE} not installed (no executable ${absent.binary}): sudo apt-get install ${FAKE}`]);

  const byName = recorder();
  t.equal(requireSystemPackage(byName, { binary: 'acpd-no-such-tool', debianPackage: FAKE }, { PATH: dir }), false);
  t.same(byName.skips, [`${FAKE} not installed (no acpd-no-such-tool in PATH): sudo apt-get install ${FAKE}`]);

  const notOne = recorder();
  requireSystemPackage(notOne, absent, { [REQUIRE_SYSTEM_DEPS]: 'yes' });
  t.equal(notOne.skips.length, 1, 'only "1" requires');

  const required = recorder();
  t.equal(requireSystemPackage(required, absent, { [REQUIRE_SYSTEM_DEPS]: '1' }), false);
  t.same(required.skips, []);
  t.same(required.failures, [
    `${FAKE} not installed (no executable ${absent.binary}): sudo apt-get install ${FAKE}; ` +
      `${REQUIRE_SYSTEM_DEPS}=1 requires it`,
  ]);
});

t.test('in a real tap process: a skip keeps the file green, a required package fails it', async (t) => {
  const { dir, tool } = fakeBinaries(t);
  const absent = path.join(dir, 'absent');
  // A clean environment: neither this tap run's own settings nor a CI's variable leak into the probe.
  const probe = (binary: string, extra: NodeJS.ProcessEnv = {}) =>
    spawnSync(process.execPath, [PROBE, binary], {
      env: { PATH: process.env.PATH ?? '', ...extra },
      encoding: 'utf8',
    });

  const ran = probe(tool, { [REQUIRE_SYSTEM_DEPS]: '1' });
  t.equal(ran.status, 0, `present: the test runs\n${ran.stderr}`);
  t.match(ran.stdout, /^ok 1 - the test that needs it ran$/m);

  const skipped = probe(absent);
  t.equal(skipped.status, 0, 'a skip does not fail npm test');
  t.match(
    skipped.stdout,
    new RegExp(
      `^ok 1 - ${escapeRegExp(`${FAKE} not installed (no executable ${absent}): sudo apt-get install ${FAKE}`)} # SKIP$`,
      'm',
    ),
  );
  t.notMatch(skipped.stdout, /the test that needs it ran/);

  const failed = probe(absent, { [REQUIRE_SYSTEM_DEPS]: '1' });
  t.equal(failed.status, 1, 'under ACPD_REQUIRE_SYSTEM_DEPS=1 the file fails');
  t.match(failed.stdout, new RegExp(`^not ok 1 - ${FAKE} not installed .*: sudo apt-get install ${FAKE}; `, 'm'));
});

t.test('.ci/run requires every system package the tests ask for', async (t) => {
  const script = readFileSync(CI_RUN, 'utf8');
  t.match(script, new RegExp(`^export ${REQUIRE_SYSTEM_DEPS}=1$`, 'm'), 'it turns skips into failures');
  const listed = /^system_packages="([^"]*)"$/m.exec(script)?.[1]?.split(/\s+/) ?? [];
  t.same(
    [...listed].sort(),
    Object.values(SYSTEM_PACKAGES)
      .map((pkg) => `${pkg.debianPackage}:${pkg.binary}`)
      .sort(),
    'the packages (and binaries) .ci/run checks are the ones test/support/system-deps.ts names',
  );
});
