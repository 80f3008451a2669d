// `npm run build`'s last step: dist/server.js (tsc's output) and everything it imports, dependencies
// included, bundled into dist/bundle/ by esbuild, and dist/server.js replaced by a one-line entry that
// loads the bundle. Why: loading ~900 modules file by file was half of the daemon's start-up CPU
// (bench/notes/16-footprint.md); one tree-shaken bundle starts about a third sooner and idles a few MB
// smaller. Dynamic imports (the ACP SDK with the first agent, ioredis, undici, …) stay separate chunks,
// loaded when used, as before.
//
// Left outside the bundle, loaded from node_modules as before: better-sqlite3 (a native addon), pino and
// thread-stream (pino's transports start workers by file path), and what is only ever imported on demand
// (ioredis, undici, @fastify/rate-limit): it costs nothing at start-up, and Node's own CommonJS interop
// gives their named exports exactly. swagger-ui-dist is never imported: routes/docs.ts looks up its
// directory in node_modules when /docs asks for one of its files. The bundle sits one directory below
// dist/, as every other module does, so the paths the code builds from its own location
// (../agent/main.js, ../console/, ../client/) still land in dist/. The tsc output stays beside it: the
// embedded agent runs from dist/agent/, the browser loads dist/client/.
//
//   node scripts/bundle.mjs
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { URL, fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const dist = fileURLToPath(new URL('../dist/', import.meta.url));
const entry = path.join(dist, 'server.js');
const unbundled = path.join(dist, 'server.unbundled.js');
const outdir = path.join(dist, 'bundle');

// A second run of this script (without tsc in between) must bundle tsc's output, not the one-line entry.
const current = readFileSync(entry, 'utf8');
if (current.includes('./bundle/server.js')) {
  process.stderr.write('bundle: dist/server.js is already the bundle entry; run tsc first (npm run build)\n');
  process.exit(1);
}
renameSync(entry, unbundled);
rmSync(outdir, { recursive: true, force: true });
try {
  await build({
    entryPoints: { server: unbundled },
    outdir,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    external: [
      'better-sqlite3',
      'pino',
      'thread-stream',
      'ioredis',
      'undici',
      '@fastify/rate-limit',
    ],
    // CommonJS dependencies call require(); an ES module has none of its own.
    banner: {
      js: "import { createRequire as acpdCreateRequire } from 'node:module';\nconst require = acpdCreateRequire(import.meta.url);",
    },
    legalComments: 'none',
    // V8 keeps a module's source for as long as the module lives. Comments are most of ours, and one non-ASCII
    // character in any of them makes the whole source a two-byte string: 3 MB of text held as 6.6 MB. Without
    // whitespace and comments it is 1.9 MB of one-byte text. Names are kept, so stack traces still read.
    minifyWhitespace: true,
    minifySyntax: true,
    logLevel: 'warning',
  });
} catch (err) {
  renameSync(unbundled, entry);
  throw err;
}
// The entry puts V8 in start-up mode before the bundle is loaded (src/start-up-mode.ts; the daemon leaves it once
// it listens). Its static import runs before the dynamic one.
writeFileSync(
  entry,
  [
    '#!/usr/bin/env node',
    "// The daemon, bundled by scripts/bundle.mjs; tsc's own output is server.unbundled.js.",
    "import { enterStartUpMode } from './start-up-mode.js';",
    '',
    'enterStartUpMode();',
    "await import('./bundle/server.js');",
    '',
  ].join('\n'),
  { mode: 0o755 },
);
