// The web console's page, styles and scripts (src/console/, served as they are: no compile step) copied
// next to the compiled JavaScript, where routes/console.ts reads them: `dist/console/` for `npm run build`,
// `build/src/console/` for the tests' build.
//
//   node scripts/copy-console.mjs <out-dir>
import { cpSync, rmSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { URL, fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const outDir = process.argv[2];
if (outDir === undefined) {
  process.stderr.write('usage: node scripts/copy-console.mjs <out-dir>\n');
  process.exit(2);
}
const target = path.resolve(root, outDir, 'console');
// A file removed from src/console/ must not linger in the build.
rmSync(target, { recursive: true, force: true });
cpSync(path.join(root, 'src', 'console'), target, { recursive: true });
