// `npm start` runs this first (prestart). It runs `npm run build` only when something tsc reads has
// changed since the last successful build. A full tsc run costs several seconds even when nothing
// changed. This check is a walk over src/.
//
// The last successful build is dist/.build-stamp. The build script's postbuild step writes it, and
// npm skips postbuild when tsc fails, so a failed build leaves the stamp old and the next start
// builds again. The inputs are every file and directory under src/ (a directory's mtime changes when
// a file is added or removed) and tsconfig.json. When this script builds, it moves the stamp back to
// the moment the build began, so that a file saved during the build still counts as newer.
//
//   node scripts/build-if-stale.mjs [project-dir]    (default: this repository)
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync, utimesSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { URL, fileURLToPath } from 'node:url';

const root = path.resolve(process.argv[2] ?? fileURLToPath(new URL('..', import.meta.url)));
const stamp = path.join(root, 'dist', '.build-stamp');
const inputs = [path.join(root, 'src'), path.join(root, 'tsconfig.json')];

/** The newest mtime (ms) of `entry` and, for a directory, of everything under it. */
function newest(entry) {
  const stat = statSync(entry);
  let latest = stat.mtimeMs;
  if (stat.isDirectory()) {
    for (const name of readdirSync(entry)) latest = Math.max(latest, newest(path.join(entry, name)));
  }
  return latest;
}

/** Why a build is needed, or undefined when dist/ is up to date. */
function staleness() {
  if (!existsSync(stamp)) return 'no successful build recorded';
  const builtAt = statSync(stamp).mtimeMs;
  const changed = inputs.filter((input) => existsSync(input) && newest(input) >= builtAt);
  if (changed.length > 0) return `${changed.map((input) => path.relative(root, input)).join(', ')} changed`;
  return undefined;
}

const reason = staleness();
if (reason !== undefined) {
  process.stderr.write(`acpd: building (${reason} since the last build)\n`);
  const startedAt = new Date();
  const build = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
  if (build.status !== 0) process.exit(build.status ?? 1);
  utimesSync(stamp, startedAt, startedAt);
}
