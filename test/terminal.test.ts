// The terminal client (`acpd chat | attach <id> | sessions`, src/cli) against a real daemon: driven in a
// real pseudo-terminal by tmux (keys in with send-keys, the screen read back with capture-pane, polled
// under a bound), and without a terminal through pipes, the way scripts and CI use it.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { Renderer } from '../src/cli/render.js';
import type { SessionEvent } from '../src/client/index.js';
import { startDaemon, tempDir, type Teardown, type TestDaemon } from './support/app.js';
import { call, createSession } from './support/http.js';
import { SYSTEM_PACKAGES, requireSystemPackage } from './support/system-deps.js';
import { until, within } from '../harness/wait.js';

const BIN = fileURLToPath(new URL('../../dist/server.js', import.meta.url));
const TOKEN = 'terminal-test-token';
/** Each wait's bound: a client process starts in about a second, much more on a loaded CI machine. */
const BOUND_MS = 30_000;

function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** One tmux server of our own (its socket in a temp dir), one 120×40 pane running `argv`. */
class Pane {
  readonly #socket: string;

  constructor(t: Teardown) {
    this.#socket = path.join(tempDir(t, 'acpd-tmux-'), 'sock');
    t.teardown(() => {
      try {
        this.#tmux('kill-server');
      } catch {
        // already gone
      }
    });
  }

  #tmux(...args: string[]): string {
    return execFileSync('tmux', ['-S', this.#socket, ...args], { encoding: 'utf8' });
  }

  /** Starts `acpd <args>`; when it exits, the pane says `[exited <code>]` and stays. */
  start(args: string[]): void {
    const command = [process.execPath, BIN, ...args].map(shellQuote).join(' ');
    this.#tmux('new-session', '-d', '-x', '120', '-y', '40', `${command}; echo "[exited $?]"; sleep 600`);
  }

  keys(...keys: string[]): void {
    this.#tmux('send-keys', ...keys);
  }

  /** Literal text, then Enter. */
  type(text: string): void {
    this.#tmux('send-keys', '-l', text);
    this.#tmux('send-keys', 'Enter');
  }

  screen(): string {
    // -J joins wrapped lines; -S -2000 includes what scrolled off.
    return this.#tmux('capture-pane', '-p', '-J', '-S', '-2000');
  }

  /** The screen once `pattern` shows on it (bounded; the failure shows the screen). */
  async waitFor(pattern: RegExp, label = String(pattern)): Promise<string> {
    try {
      return await until(
        () => {
          const screen = this.screen();
          return pattern.test(screen) ? screen : undefined;
        },
        label,
        { everyMs: 50, ms: BOUND_MS },
      );
    } catch (err) {
      throw new Error(`${String(err)}\n--- screen ---\n${this.screen()}`, { cause: err });
    }
  }
}

function clientArgs(d: TestDaemon): string[] {
  return ['--url', d.baseUrl, '--token', TOKEN];
}

async function daemon(t: Teardown): Promise<TestDaemon> {
  return startDaemon(t, { args: ['--token', TOKEN] });
}

/** Runs `acpd <args>` with pipes (no terminal): stdin written then closed; its output and exit code. */
async function runPiped(
  args: string[],
  input: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  child.stdin.end(input);
  const code = await within(
    new Promise<number | null>((resolve) => child.on('close', resolve)),
    `acpd ${args[0] ?? ''} exits`,
    BOUND_MS,
  ).finally(() => child.kill());
  return { code, stdout, stderr };
}

if (requireSystemPackage(t, SYSTEM_PACKAGES.tmux)) {
  t.test('chat in a terminal: streamed reply, permissions by keystroke, Ctrl-C cancels, Ctrl-D quits', async (t) => {
    const d = await daemon(t);
    const ws = d.config.workspace;
    const pane = new Pane(t);
    pane.start(['chat', ...clientArgs(d)]);
    await pane.waitFor(/^> $/m, 'the prompt');

    pane.type('hello acpd');
    await pane.waitFor(/^echo: hello acpd$/m, 'the streamed reply');

    // y answers the menu: the embedded agent asks before writing (default mode).
    pane.type('/write yes.txt hi');
    await pane.waitFor(/\? Allow Write yes\.txt\?/, 'the permission menu');
    pane.keys('y');
    await pane.waitFor(/wrote 2 bytes to yes\.txt/, 'the write done');
    t.equal(readFileSync(path.join(ws, 'yes.txt'), 'utf8'), 'hi', 'the file was written');
    t.match(pane.screen(), /→ Allow/);

    // Enter alone takes the highlighted option, which starts on Reject.
    pane.type('/write no.txt nope');
    await pane.waitFor(/\? Allow Write no\.txt\?/, 'the second menu');
    pane.keys('Enter');
    await pane.waitFor(/no\.txt was not written/, 'the write refused');
    t.notOk(existsSync(path.join(ws, 'no.txt')), 'a rejected write leaves no file');

    // Arrow keys move the choice: Left from Reject is Allow.
    pane.type('/write arrow.txt ok');
    await pane.waitFor(/\? Allow Write arrow\.txt\?/, 'the third menu');
    pane.keys('Left');
    pane.keys('Enter');
    await pane.waitFor(/wrote 2 bytes to arrow\.txt/, 'the write by arrow key');

    pane.type('/slow 50 200');
    await pane.waitFor(/^slow 2\/50$/m, 'the slow turn streaming');
    pane.keys('C-c');
    const cancelled = await pane.waitFor(/^\(cancelled\)$/m, 'the stop reason');
    t.notMatch(cancelled, /slow 50\/50/, 'the turn stopped early');
    t.notMatch(cancelled, /\[exited/, 'one Ctrl-C does not quit');

    pane.type('still here');
    await pane.waitFor(/^echo: still here$/m, 'the client stays usable after a cancel');

    // Typed while a turn runs: kept, and sent once it ends.
    pane.type('/slow 5 200');
    await pane.waitFor(/^slow 1\/5$/m, 'another slow turn');
    pane.type('typed ahead');
    await pane.waitFor(/^echo: typed ahead$/m, 'the line typed during the turn, sent after it');
    t.match(pane.screen(), /slow 5\/5[\s\S]*echo: typed ahead/, 'after the running turn');
    await pane.waitFor(/^echo: typed ahead$[\s\S]*^> $/m, 'the prompt again, the turn over');

    pane.keys('C-d');
    await pane.waitFor(/\[exited 0\]/, 'Ctrl-D at the prompt quits with 0');
  });

  t.test('attach follows a session created over REST, shows its prompts, and can prompt too', async (t) => {
    const d = await daemon(t);
    const sessionId = await createSession(d);
    const pane = new Pane(t);
    pane.start(['attach', sessionId, ...clientArgs(d)]);
    await pane.waitFor(/^> $/m, 'the prompt');

    const res = await call(d, 'POST', `/session/${sessionId}/prompt`, {
      prompt: [{ type: 'text', text: 'from rest' }],
    });
    t.equal(res.status, 200);
    await pane.waitFor(/^› from rest$/m, "the other client's prompt");
    await pane.waitFor(/^echo: from rest$/m, 'its reply');

    pane.type('from tmux');
    const screen = await pane.waitFor(/^echo: from tmux$/m, 'a prompt of its own');
    t.equal(screen.match(/^echo: from rest$/gm)?.length, 1, 'each reply once');
    // The reply's text arrives before its turn ends: only the prompt after it says the client is idle.
    await pane.waitFor(/^echo: from tmux$[\s\S]*^> $/m, 'the prompt again, the turn over');
    pane.keys('C-c');
    await pane.waitFor(/\[exited 0\]/, 'Ctrl-C at an idle prompt quits');
  });

  t.test('a second Ctrl-C during a turn quits', async (t) => {
    const d = await daemon(t);
    const pane = new Pane(t);
    pane.start(['chat', ...clientArgs(d)]);
    await pane.waitFor(/^> $/m, 'the prompt');
    pane.type('/slow 500 200');
    await pane.waitFor(/^slow 1\/500$/m, 'the turn running');
    pane.keys('C-c');
    await pane.waitFor(/Ctrl-C again quits/, 'the first Ctrl-C');
    pane.keys('C-c');
    const screen = await pane.waitFor(/\[exited 0\]/, 'the second one quits');
    t.notMatch(screen, /slow 500\/500/, 'it quit during the turn');
  });
}

t.test('no terminal: one prompt per line, plain lines, permissions by --approve', async (t) => {
  const d = await daemon(t);
  const ws = d.config.workspace;
  const { code, stdout, stderr } = await runPiped(['chat', ...clientArgs(d)], 'one\n\n/write x.txt hi\ntwo\n');
  t.equal(code, 0, stderr);
  t.notOk(stdout.includes('\x1b'), 'no escape sequence');
  const lines = stdout.trimEnd().split('\n');
  t.match(lines[0], /^\[session\] [\w-]+$/);
  t.same(lines.slice(1), [
    '> one',
    'echo: one',
    '[done] end_turn',
    '> /write x.txt hi',
    '[tool] Write x.txt (edit): pending',
    '[permission] Write x.txt: reject (--approve=reject)',
    '[tool] Write x.txt: failed',
    'Permission denied: x.txt was not written.',
    '[done] end_turn',
    '> two',
    'echo: two',
    '[done] end_turn',
  ]);
  t.notOk(existsSync(path.join(ws, 'x.txt')), 'without a terminal, nothing is granted unless asked');

  const allowed = await runPiped(['chat', '--approve=allow', ...clientArgs(d)], '/write y.txt yes\n');
  t.equal(allowed.code, 0, allowed.stderr);
  t.match(allowed.stdout, /^\[permission\] Write y\.txt: allow \(--approve=allow\)$/m);
  t.equal(readFileSync(path.join(ws, 'y.txt'), 'utf8'), 'yes');

  const asked = await runPiped(['chat', '--approve=ask', ...clientArgs(d)], '/write z.txt typed\n1\n');
  t.equal(asked.code, 0, asked.stderr);
  t.match(asked.stdout, /^\[permission\] Write z\.txt\? 1\) Allow 2\) Reject/m);
  t.equal(readFileSync(path.join(ws, 'z.txt'), 'utf8'), 'typed', 'the answer was the next line of stdin');

  const list = await runPiped(['sessions', '--json', ...clientArgs(d)], '');
  t.equal(list.code, 0, list.stderr);
  const sessions = JSON.parse(list.stdout) as { sessionId: string; displayName?: string }[];
  t.equal(sessions.length, 3, 'each chat made a session of its own');
  t.ok(sessions.some((s) => s.displayName === 'one'));
  const table = await runPiped(['sessions', ...clientArgs(d)], '');
  t.match(table.stdout, /^SESSION\s+STATE\s+CLIENTS\s+UPDATED\s+NAME$/m);
});

t.test('exit codes: bad usage 2, a wrong token or an unknown session 1', async (t) => {
  const d = await daemon(t);
  const usage = await runPiped(['chat', '--nope'], '');
  t.equal(usage.code, 2);
  t.match(usage.stderr, /Usage: acpd chat/);
  const denied = await runPiped(['sessions', '--url', d.baseUrl, '--token', 'wrong'], '');
  t.equal(denied.code, 1);
  t.match(denied.stderr, /wants a token/);
  const gone = await runPiped(['attach', 'no-such-session', ...clientArgs(d)], '');
  t.equal(gone.code, 1);
  t.match(gone.stdout, /not live/);
});

t.test('frames are rendered once by id: a replay after a reconnect prints nothing twice', async (t) => {
  let out = '';
  const r = new Renderer({ write: (text: string) => (out += text) }, false);
  const chunk = (id: number, text: string) =>
    ({
      v: 1,
      id,
      type: 'session_update',
      data: { sessionId: 's', update: { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text } } },
    }) as SessionEvent;
  t.equal(r.frame(chunk(1, 'a'), { ownEcho: false }), true);
  t.equal(r.frame(chunk(2, 'b'), { ownEcho: false }), true);
  t.equal(r.frame(chunk(2, 'b'), { ownEcho: false }), false, 'a repeated id is dropped');
  t.equal(r.frame(chunk(1, 'a'), { ownEcho: false }), false);
  t.equal(r.frame(chunk(3, 'c'), { ownEcho: false }), true);
  t.equal(out, 'abc');
});
