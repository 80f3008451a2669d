/**
 * The executable runs its start-up in V8's start-up mode (src/start-up-mode.ts):
 * the young generation does not grow and neither TurboFan nor the baseline
 * compiler compiles until the daemon listens; then both are as V8 would have them. Read from inside the
 * real daemon's process (dist/server.js, as `npm start` runs it) by a probe
 * loaded before it (test/fixtures/start-up-probe.ts).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { enterStartUpMode, leaveStartUpMode } from '../src/start-up-mode.js';

const DIST_SERVER = fileURLToPath(new URL('../../dist/server.js', import.meta.url));
const PROBE = fileURLToPath(new URL('./fixtures/start-up-probe.js', import.meta.url));

interface Findings {
  youngAtImportMb: number;
  youngAtListeningMb: number;
  youngAfterWorkMb: number;
  optimizedDuringStartUp?: boolean;
  optimizedAfterListening: boolean;
  baselineDuringStartUp?: boolean;
  baselineAfterListening: boolean;
}

async function probeDaemon(): Promise<Findings> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'acpd-start-up-'));
  const child = spawn(
    process.execPath,
    ['--allow-natives-syntax', '--import', PROBE, DIST_SERVER, '--port', '0', '--workspace', dir, '--data-dir', dir],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  try {
    return await new Promise<Findings>((resolve, reject) => {
      let out = '';
      let err = '';
      child.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString('utf8');
        const line = out.split('\n').find((l) => l.startsWith('start-up-probe '));
        if (line !== undefined) resolve(JSON.parse(line.slice('start-up-probe '.length)) as Findings);
      });
      child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString('utf8')));
      child.once('exit', (code) => reject(new Error(`the daemon exited (${code}) before the probe reported: ${err}`)));
    });
  } finally {
    const exited = new Promise((done) => child.once('exit', done));
    child.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

t.test('V8 runs the start-up lean and the daemon as usual', async (t) => {
  const f = await probeDaemon();
  // V8 starts with two 1 MB semi-spaces; an unheld start-up grows them to 16 MB in all.
  t.ok(
    f.youngAtListeningMb <= f.youngAtImportMb,
    `young generation not grown by start-up (${f.youngAtListeningMb} MB)`,
  );
  t.equal(f.optimizedDuringStartUp, false, 'no TurboFan while the daemon starts');
  t.equal(f.optimizedAfterListening, true, 'TurboFan once it listens');
  t.equal(f.baselineDuringStartUp, false, 'no baseline compiler while the daemon starts');
  t.equal(f.baselineAfterListening, true, 'the baseline compiler once it listens');
  t.ok(
    f.youngAfterWorkMb > f.youngAtListeningMb,
    `the young generation grows under work again (${f.youngAfterWorkMb} MB)`,
  );
});

t.test('a process started with V8 flags of its own about compilers or the young generation is left as it is', (t) => {
  for (const flags of [['--jitless'], ['--no-opt'], ['--max-semi-space-size=4'], ['--no_turbofan']]) {
    t.equal(enterStartUpMode(flags, ''), false, flags.join(' '));
  }
  t.equal(enterStartUpMode([], '--max-semi-space-size=2 --enable-source-maps'), false, 'NODE_OPTIONS too');
  t.equal(enterStartUpMode(['--enable-source-maps', '--import=x.js'], ''), true, 'other flags do not count');
  leaveStartUpMode();
  t.end();
});
