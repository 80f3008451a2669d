// The README's "A tour with curl", run as written (issue 11). The blocks marked `<!-- tour -->` run in
// order, in one bash with `-euo pipefail`, so variables and helpers carry over as they do in the reader's
// terminal. ACPD points at a real daemon (dist/server.js, embedded agent, scratch workspace) that this
// test owns. Where the README says `<!-- tour: restart the daemon -->`, the script stops and asks the
// test to restart the daemon on the same workspace and port. Unmarked blocks are the first terminal's
// (starting the daemon), which is what the test does itself.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { freePort } from '../harness/ports.js';
import { within } from '../harness/wait.js';
import { tempDir } from './support/app.js';
import { SYSTEM_PACKAGES, requireSystemPackage } from './support/system-deps.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const README = path.join(REPO, 'README.md');
const SERVER = path.join(REPO, 'dist', 'server.js');
const RUN_MARK = '<!-- tour -->';
const RESTART_MARK = '<!-- tour: restart the daemon -->';
/** The whole tour waits on a few 2 s event windows and a 1 s pause: a minute is plenty. */
const TOUR_LIMIT_MS = 60_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/m;

type Step = { kind: 'run'; code: string; line: number } | { kind: 'restart'; line: number };

interface Tour {
  steps: Step[];
  /** The sh blocks of the section that carry no mark. */
  unmarked: string[];
}

/** The steps of the README's tour section, in order. */
function readTour(markdown: string): Tour {
  const lines = markdown.split('\n');
  const start = lines.indexOf('## A tour with curl');
  if (start < 0) throw new Error('README.md has no "## A tour with curl" section');
  const end = lines.findIndex((line, i) => i > start && line.startsWith('## '));
  const steps: Step[] = [];
  const unmarked: string[] = [];
  let marked = false;
  for (let i = start + 1; i < (end < 0 ? lines.length : end); i++) {
    const line = lines[i] ?? '';
    if (line === RUN_MARK) {
      if (lines[i + 1] !== '```sh')
        throw new Error(`README.md:${i + 1}: ${RUN_MARK} must come right before a sh block`);
      marked = true;
    } else if (line === RESTART_MARK) {
      steps.push({ kind: 'restart', line: i + 1 });
    } else if (line === '```sh') {
      const close = lines.indexOf('```', i + 1);
      if (close < 0) throw new Error(`README.md:${i + 1}: unclosed sh block`);
      const code = lines.slice(i + 1, close).join('\n');
      if (marked) steps.push({ kind: 'run', code, line: i + 2 });
      else unmarked.push(code);
      marked = false;
      i = close;
    }
  }
  return { steps, unmarked };
}

/** PATH and HOME only: none of tap's settings (NODE_OPTIONS) or this run's ACPD_* reach the children. */
function baseEnv(): NodeJS.ProcessEnv {
  const { PATH = '', HOME } = process.env;
  return { PATH, ...(HOME === undefined ? {} : { HOME }) };
}

interface Daemon {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

/** `node dist/server.js` on `port`, serving `workspace`, as `npm start -- --workspace` runs it. */
async function startDaemon(t: Test, workspace: string, port: number): Promise<Daemon> {
  const child = spawn(process.execPath, [SERVER, '--workspace', workspace, '--port', String(port)], {
    env: baseEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  });
  const listening = new Promise<boolean>((resolve) => {
    const collect = (chunk: string) => {
      output += chunk;
      if (output.includes(`acpd listening on http://127.0.0.1:${port} `)) resolve(true);
    };
    child.stdout.setEncoding('utf8').on('data', collect);
    child.stderr.setEncoding('utf8').on('data', collect);
    void exited.then(() => resolve(false));
  });
  if (!(await within(listening, 'the daemon to listen', TOUR_LIMIT_MS))) {
    throw new Error(`the daemon did not start:\n${output}`);
  }
  return { child, output: () => output, exited };
}

/**
 * The bash script: the tour's blocks, each announced on stdout by a marker line, and at a restart a
 * request on fd 3 answered on fd 4.
 */
function script(steps: Step[]): string {
  const parts = [
    'tour_block() { printf \'\\n@@tour-block %s@@\\n\' "$1"; }',
    'tour_restart() { echo restart >&3; read -r answer <&4; [ "$answer" = restarted ]; }',
  ];
  steps.forEach((step, i) => {
    parts.push(step.kind === 'run' ? `tour_block ${i}\n${step.code}` : 'tour_restart');
  });
  parts.push('tour_block end', '');
  return parts.join('\n');
}

/** The stdout of each run step, by step index. */
function splitOutput(stdout: string): Map<number, string> {
  const blocks = new Map<number, string>();
  const pieces = stdout.split(/\n@@tour-block (\d+|end)@@\n/);
  for (let i = 1; i + 1 < pieces.length; i += 2) {
    const index = pieces[i];
    if (index !== undefined && index !== 'end') blocks.set(Number(index), pieces[i + 1] ?? '');
  }
  return blocks;
}

const tour = readTour(readFileSync(README, 'utf8'));

t.test('the tour is marked up so that the right blocks run', async (t) => {
  t.ok(tour.steps.filter((s) => s.kind === 'run').length >= 5, 'several runnable blocks');
  t.equal(tour.steps.filter((s) => s.kind === 'restart').length, 1, 'one restart');
  t.same(
    tour.unmarked.filter((code) => !code.includes('npm start')),
    [],
    'every unmarked sh block is the daemon terminal (npm start); the others are all marked',
  );
});

if (requireSystemPackage(t, SYSTEM_PACKAGES.curl) && requireSystemPackage(t, SYSTEM_PACKAGES.bash)) {
  t.test("README's tour, top to bottom, against a real daemon", async (t) => {
    const workspace = tempDir(t, 'acpd-tour-');
    const port = await freePort();
    let daemon = await startDaemon(t, workspace, port);
    const restarts: number[] = [];

    // Its own process group, so that the teardown also stops a background curl of a failed block.
    const bash = spawn('bash', ['-euo', 'pipefail', '-c', script(tour.steps)], {
      cwd: workspace,
      env: {
        ...baseEnv(),
        // The tour's helpers run `node`: the one running this test, whatever else PATH holds.
        PATH: [path.dirname(process.execPath), process.env.PATH ?? ''].join(path.delimiter),
        ACPD: `http://127.0.0.1:${port}`,
      },
      stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'],
      detached: true,
    });
    const exited = new Promise<number | null>((resolve) => bash.once('close', (code) => resolve(code)));
    t.teardown(async () => {
      if (bash.pid !== undefined && bash.exitCode === null && bash.signalCode === null) {
        process.kill(-bash.pid, 'SIGKILL');
      }
      await exited;
    });
    let stdout = '';
    let stderr = '';
    bash.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    bash.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const [, , , requests, answers] = bash.stdio;
    if (!(requests instanceof Readable) || !(answers instanceof Writable)) throw new Error('no fds 3 and 4 to bash');
    requests.setEncoding('utf8').on('data', (chunk: string) => {
      void (async () => {
        for (const request of chunk.split('\n').filter((line) => line !== '')) {
          t.equal(request, 'restart');
          daemon.child.kill('SIGTERM');
          t.equal(await daemon.exited, 0, 'the daemon stops cleanly');
          restarts.push(stdout.length);
          daemon = await startDaemon(t, workspace, port);
          answers.write('restarted\n');
        }
      })().catch((err: unknown) => {
        t.fail(`restart failed: ${String(err)}`);
        answers.write('failed\n');
      });
    });

    const code = await within(exited, 'the tour to finish', TOUR_LIMIT_MS);
    const blocks = splitOutput(stdout);
    const lastBlock = Math.max(-1, ...blocks.keys());
    const failing = tour.steps[lastBlock];
    t.equal(
      code,
      0,
      code === 0 || failing === undefined
        ? 'every block exits 0'
        : `the block at README.md:${failing.line} failed (${code}):\n${blocks.get(lastBlock) ?? ''}\n${stderr}`,
    );
    t.equal(stderr, '', 'nothing on stderr');
    t.equal(restarts.length, 1, 'the daemon was restarted once, where the README says so');

    /** The output of the one run step whose code contains `needle`. */
    const outputOf = (needle: string): string => {
      const found = tour.steps.flatMap((step, i) => (step.kind === 'run' && step.code.includes(needle) ? [i] : []));
      t.equal(found.length, 1, `one tour block contains ${JSON.stringify(needle)}`);
      return blocks.get(found[0] ?? -1) ?? '';
    };

    const first = outputOf('/capabilities');
    t.match(first, `"workspaceCwd":${JSON.stringify(workspace)}`, 'the capabilities name the scratch workspace');
    const sid = UUID.exec(first)?.[0];
    t.ok(sid, 'a session id was printed');

    const hello = outputOf('"text":"hello there"');
    t.match(hello, /^\{"stopReason":"end_turn"\}$/m);
    t.match(hello, /^event: session_update$/m, 'the event stream shows the answer');
    t.match(hello, '"text":"echo: "');

    const write = outputOf('/write notes.txt');
    t.match(write, /^\{\}$/m, 'the permission vote was accepted');
    t.match(write, /^\{"stopReason":"end_turn"\}$/m);
    t.match(write, /^remember the milk$/m);
    t.equal(readFileSync(path.join(workspace, 'notes.txt'), 'utf8'), 'remember the milk', 'in the scratch workspace');

    const cancel = outputOf('/cancel');
    t.match(cancel, /^204$/m);
    t.match(cancel, /^\{"stopReason":"cancelled"\}$/m);

    const load = outputOf('/load');
    t.match(load, /^false$/m, 'the session came back from disk');
    t.match(load, 'echo: hello there', 'with its history replayed');
    t.match(load, 'wrote 17 bytes to notes.txt');
    t.match(load, /^This session has 3 earlier turns stored\.$/m, 'and its context');
    const loadStep = tour.steps.findIndex((step) => step.kind === 'run' && step.code.includes('/load'));
    const restartStep = tour.steps.findIndex((step) => step.kind === 'restart');
    t.ok(restartStep >= 0 && restartStep < loadStep, 'the restart comes before the load');

    const sessions = path.join(workspace, '.acpd', 'sessions');
    t.same(
      existsSync(sessions) ? readdirSync(sessions) : [],
      [`${sid}.json`],
      "the tour's session is stored; the warm sessions left nothing",
    );
    t.notOk(existsSync(path.join(REPO, 'notes.txt')), 'nothing was written into the checkout');
  });
}
