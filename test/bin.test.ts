// `acpd` as a command (issue 11): package.json's bin is an executable file with a shebang, so it runs
// as a program, through `npx acpd` in the checkout, and from a global install. And `npm start` builds
// only when a source changed (scripts/build-if-stale.mjs), which is checked here on a throw-away
// project that uses the real postbuild step.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t from 'tap';
import { tempDir } from './support/app.js';
import { obj } from './support/http.js';

const run = promisify(execFile);
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const BUILD_IF_STALE = path.join(REPO, 'scripts', 'build-if-stale.mjs');
const USAGE = /^Usage: acpd \[options\]$/m;

interface PackageJson {
  bin: Record<string, string>;
  scripts: Record<string, string>;
}

function readPackage(dir: string): PackageJson {
  const pkg = obj(JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')));
  const strings = (value: unknown): Record<string, string> =>
    Object.fromEntries(Object.entries(obj(value)).filter((e): e is [string, string] => typeof e[1] === 'string'));
  return { bin: strings(pkg.bin), scripts: strings(pkg.scripts) };
}

/** The environment of a child npm: no tap instrumentation, nothing of this run's npm scripts. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const { PATH = '', HOME } = process.env;
  return { PATH, ...(HOME === undefined ? {} : { HOME }), ...extra };
}

const pkg = readPackage(REPO);
const binFile = path.join(REPO, pkg.bin.acpd ?? '');

t.test('the acpd bin is dist/server.js, with a shebang and the run bit', async (t) => {
  t.same(pkg.bin, { acpd: 'dist/server.js' });
  t.match(readFileSync(path.join(REPO, 'src', 'server.ts'), 'utf8'), /^#!\/usr\/bin\/env node\n/, 'in the source');
  t.match(readFileSync(binFile, 'utf8'), /^#!\/usr\/bin\/env node\n/, 'kept by tsc');
  t.equal(statSync(binFile).mode & 0o111, 0o111, 'executable by everyone (the postbuild step)');
  t.equal(pkg.scripts.prestart, 'node scripts/build-if-stale.mjs', 'npm start builds only when needed');
});

t.test('dist/server.js runs as a program, not only through node', async (t) => {
  const { stdout } = await run(binFile, ['--help'], { env: cleanEnv() });
  t.match(stdout, USAGE);
});

t.test('npx acpd runs the bin from the checkout', async (t) => {
  const { stdout } = await run('npx', ['--no-install', 'acpd', '--help'], { cwd: REPO, env: cleanEnv() });
  t.match(stdout, USAGE);
});

t.test('a global install puts acpd on PATH', async (t) => {
  // A global install of a folder links it, so nothing is downloaded; --prefix keeps it in a temp dir.
  const prefix = tempDir(t, 'acpd-global-');
  await run('npm', ['install', '--global', '--prefix', prefix, '--offline', '--no-audit', '--no-fund', REPO], {
    env: cleanEnv(),
  });
  const { stdout } = await run('acpd', ['--help'], {
    cwd: prefix,
    env: cleanEnv({ PATH: `${path.join(prefix, 'bin')}${path.delimiter}${process.env.PATH ?? ''}` }),
  });
  t.match(stdout, USAGE);
});

t.test('build-if-stale builds only when src/ or tsconfig.json changed since the last good build', async (t) => {
  // A project shaped like acpd: its build counts its runs, fails while src/FAIL exists, and writes a
  // bin; its postbuild is acpd's own.
  const dir = tempDir(t, 'acpd-stale-');
  const log = path.join(dir, 'builds.log');
  writeFileSync(
    path.join(dir, 'package.json'),
    JSON.stringify({
      name: 'stale-check',
      version: '0.0.0',
      private: true,
      bin: { 'stale-check': 'dist/server.js' },
      scripts: { build: 'node build.mjs', postbuild: pkg.scripts.postbuild },
    }),
  );
  writeFileSync(
    path.join(dir, 'build.mjs'),
    [
      "import { appendFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';",
      "appendFileSync('builds.log', 'build\\n');",
      "if (existsSync('src/FAIL')) process.exit(2);",
      "mkdirSync('dist', { recursive: true });",
      "writeFileSync('dist/server.js', '#!/usr/bin/env node\\n');",
      '',
    ].join('\n'),
  );
  writeFileSync(path.join(dir, 'tsconfig.json'), '{}\n');
  mkdirSync(path.join(dir, 'src', 'sub'), { recursive: true });
  writeFileSync(path.join(dir, 'src', 'a.ts'), 'export {};\n');
  writeFileSync(path.join(dir, 'src', 'sub', 'b.ts'), 'export {};\n');

  const builds = () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').length - 1 : 0);
  /** Runs the script; resolves to whether it built, rejects when it failed. */
  const start = async (): Promise<boolean> => {
    const before = builds();
    const { stderr } = await run(process.execPath, [BUILD_IF_STALE, dir], { env: cleanEnv() });
    const built = builds() > before;
    t.equal(/^acpd: building \(/m.test(stderr), built, built ? 'says it builds' : 'says nothing');
    return built;
  };

  t.equal(await start(), true, 'first start: no build recorded yet');
  t.ok(existsSync(path.join(dir, 'dist', '.build-stamp')), 'the postbuild step recorded the build');
  t.equal(statSync(path.join(dir, 'dist', 'server.js')).mode & 0o111, 0o111, 'and made the bin executable');
  t.equal(await start(), false, 'nothing changed: no build');
  t.equal(await start(), false, 'still nothing');

  writeFileSync(path.join(dir, 'src', 'sub', 'b.ts'), 'export const b = 1;\n');
  t.equal(await start(), true, 'a source edited deep in src/');
  t.equal(await start(), false);
  writeFileSync(path.join(dir, 'tsconfig.json'), '{ "compilerOptions": {} }\n');
  t.equal(await start(), true, 'tsconfig.json edited');
  writeFileSync(path.join(dir, 'src', 'sub', 'c.ts'), 'export {};\n');
  t.equal(await start(), true, 'a source added');
  rmSync(path.join(dir, 'src', 'a.ts'));
  t.equal(await start(), true, 'a source removed');
  t.equal(await start(), false);

  writeFileSync(path.join(dir, 'src', 'FAIL'), '');
  await t.rejects(start(), 'a failed build fails the start');
  await t.rejects(start(), 'and is tried again next time: the stamp was not renewed');
  rmSync(path.join(dir, 'src', 'FAIL'));
  t.equal(await start(), true);
  t.equal(await start(), false);
  t.equal(builds(), 8);
});
