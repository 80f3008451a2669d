// One session at the terminal (`chat` and `attach`): the event stream drives what is shown and
// whether the user is at the prompt (idle) or watching a turn (busy); the keyboard sends prompts,
// answers permission requests and cancels. Without a terminal the same loop reads prompts from
// stdin line by line, each sent once the previous one's turn has ended.
import { emitKeypressEvents, createInterface, type Interface } from 'node:readline';
import {
  PermissionNotFoundError,
  SessionNotFoundError,
  type AcpdClient,
  type SessionEvent,
  type VoteOutcome,
} from '../client/index.js';
import type { ApprovePolicy } from './args.js';
import { describe, parseAnswer, PermissionMenu, voteFor, type Key, type PermissionAsk } from './ask.js';
import { LineQueue } from './lines.js';
import { acpUpdate, Renderer } from './render.js';

export interface Terminal {
  stdin: NodeJS.ReadStream;
  stdout: NodeJS.WriteStream;
}

export interface ConversationOptions {
  sessionId: string;
  /** Read the session's log from its start (history), or only what happens from now on. */
  fromStart: boolean;
  approve: ApprovePolicy | undefined;
  /** Environment: NO_COLOR turns colours off at a terminal. */
  noColour: boolean;
}

/** Exit codes: see clientUsage(). */
export const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const;

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The prompt id the daemon put on a prompt's echo (`_meta: {source: 'bridge-echo', promptId}`). */
function echoedPromptId(update: object): string | undefined {
  const meta = (update as { _meta?: { source?: unknown; promptId?: unknown } | null })._meta;
  return meta?.source === 'bridge-echo' && typeof meta.promptId === 'string' ? meta.promptId : undefined;
}

export class Conversation {
  readonly #client: AcpdClient;
  readonly #io: Terminal;
  readonly #opts: ConversationOptions;
  readonly #tty: boolean;
  readonly #policy: ApprovePolicy;
  readonly #r: Renderer;
  readonly #ac = new AbortController();

  /** Prompts of the session that have not ended (running or queued), by anyone. */
  #open = new Set<string>();
  /** Prompts whose turn has ended (a late 202 must not reopen one). */
  readonly #finished = new Set<string>();
  /** Our prompts admitted and not ended, and the ones sent but not admitted yet. */
  readonly #mine = new Set<string>();
  #submitting = 0;
  /** The texts we sent whose echo has not come yet: at a terminal, the typed line shows them already. */
  readonly #unechoed: string[] = [];
  #failedTurns = 0;

  #replaying = true;
  #ready = false;
  #becomeReady: () => void = () => undefined;
  readonly #readyOnce = new Promise<void>((resolve) => (this.#becomeReady = resolve));
  #done = false;
  #exitCode: number = EXIT.ok;
  #finish: (code: number) => void = () => undefined;
  readonly #finishedOnce = new Promise<number>((resolve) => (this.#finish = resolve));
  #interrupts = 0;

  readonly #asked = new Set<string>();
  readonly #asks: PermissionAsk[] = [];
  #menu: PermissionMenu | undefined;
  #answering = false;

  #rl: Interface | undefined;
  #closingPrompt = false;
  #savedLine = '';
  /** Lines typed and entered while a turn ran: sent one by one once the client is idle again. */
  readonly #typedAhead: string[] = [];
  readonly #history: string[] = [];
  #keysOn = false;
  #lines: LineQueue | undefined;
  #turnEnded: (() => void) | undefined;

  constructor(client: AcpdClient, io: Terminal, opts: ConversationOptions) {
    this.#client = client;
    this.#io = io;
    this.#opts = opts;
    this.#tty = io.stdin.isTTY === true && io.stdout.isTTY === true;
    this.#policy = opts.approve ?? (this.#tty ? 'ask' : 'reject');
    this.#r = new Renderer(io.stdout, this.#tty, this.#tty && !opts.noColour);
  }

  get #busy(): boolean {
    return this.#open.size > 0 || this.#mine.size > 0 || this.#submitting > 0;
  }

  /** Runs until the user quits, the input ends (no terminal) or the session ends; the exit code. */
  async run(): Promise<number> {
    const onSigint = () => this.#interrupt();
    process.on('SIGINT', onSigint);
    const sid = this.#opts.sessionId;
    if (this.#tty) {
      this.#r.line(
        this.#r.paint('dim', `session ${sid} — Enter sends, Ctrl-C cancels the turn (twice quits), Ctrl-D quits`),
      );
    } else {
      this.#r.note('session', sid);
    }
    void this.#follow();
    try {
      return await this.#finishedOnce;
    } finally {
      process.off('SIGINT', onSigint);
    }
  }

  async #follow(): Promise<void> {
    try {
      const frames = this.#client.events(this.#opts.sessionId, {
        ...(this.#opts.fromStart ? { lastEventId: 0 } : {}),
        signal: this.#ac.signal,
        onOpen: () => (this.#replaying = true),
      });
      for await (const frame of frames) this.#onFrame(frame);
      if (!this.#done) this.#quit(this.#exitCode);
    } catch (err) {
      if (this.#done) return;
      if (err instanceof SessionNotFoundError) {
        this.#r.note(
          'error',
          `session ${this.#opts.sessionId} is not live (acpd chat --load <id> restores a stored one)`,
          'red',
        );
      } else {
        this.#r.note('error', `the event stream failed: ${messageOf(err)}`, 'red');
      }
      this.#quit(EXIT.failed);
    }
  }

  #onFrame(frame: SessionEvent): void {
    let ownEcho = false;
    switch (frame.type) {
      case 'session_update': {
        const update = acpUpdate(frame);
        const promptId = echoedPromptId(update);
        if (update.sessionUpdate === 'user_message_chunk' && promptId !== undefined) {
          if (!this.#finished.has(promptId)) this.#open.add(promptId);
          const text = update.content.type === 'text' ? update.content.text : undefined;
          if (this.#tty && !this.#replaying && text !== undefined && this.#unechoed[0] === text) {
            this.#unechoed.shift();
            ownEcho = true;
          }
        }
        break;
      }
      case 'pending_prompt_added':
      case 'pending_prompt_started':
        if (!this.#finished.has(frame.data.promptId)) this.#open.add(frame.data.promptId);
        break;
      case 'pending_prompt_completed':
        this.#ended(frame.data.promptId, false);
        break;
      case 'turn_complete':
        this.#ended(frame.data.promptId, false);
        break;
      case 'turn_error':
        this.#ended(frame.data.promptId, true);
        break;
      case 'permission_request':
        if (!this.#replaying) this.#enqueue(frame.data);
        break;
      case 'permission_resolved':
        this.#resolvedElsewhere(frame.data.requestId, frame.data.outcome.outcome);
        break;
      case 'replay_complete':
        this.#replaying = false;
        break;
      case 'session_state': {
        // The state now: it replaces what the frames built, with our own prompts still on their way.
        const open = new Set(frame.data.pendingPrompts.map((p) => p.promptId));
        if (frame.data.turn.promptId !== undefined) open.add(frame.data.turn.promptId);
        for (const id of this.#mine) if (!this.#finished.has(id)) open.add(id);
        this.#open = open;
        for (const pending of frame.data.pendingPermissions) this.#enqueue(pending);
        this.#ready = true;
        this.#becomeReady();
        break;
      }
      case 'session_closed':
        this.#exitCode = EXIT.ok;
        break;
      case 'session_died':
        this.#exitCode = EXIT.failed;
        break;
      default:
        break;
    }
    this.#hidingPrompt(() => this.#r.frame(frame, { ownEcho }));
    this.#sync();
  }

  #ended(promptId: string, failed: boolean): void {
    this.#finished.add(promptId);
    this.#open.delete(promptId);
    if (this.#mine.delete(promptId)) {
      if (failed) this.#failedTurns++;
      if (this.#mine.size === 0 && this.#submitting === 0) this.#turnEnded?.();
    }
  }

  /** Brings the screen in line with the state: the prompt when idle, the keys (and spinner) when busy. */
  #sync(): void {
    if (!this.#ready || this.#done) return;
    if (this.#menu === undefined && !this.#answering) this.#nextAsk();
    const idle = !this.#busy && this.#menu === undefined;
    this.#r.busy(this.#busy && this.#menu === undefined);
    if (idle) this.#interrupts = 0;
    if (!this.#tty) {
      if (idle) this.#turnEnded?.();
      return;
    }
    if (idle && this.#rl === undefined) {
      this.#keys(false);
      this.#openPrompt();
    } else if (!idle && this.#rl !== undefined) {
      this.#closePrompt(true);
      this.#keys(true);
    } else if (!idle) {
      this.#keys(true);
    }
  }

  // ---- the terminal: the prompt line when idle, raw keys when busy ----

  #openPrompt(): void {
    if (this.#lines === undefined && !this.#tty) return;
    this.#r.endLine();
    const ahead = this.#typedAhead.shift();
    if (ahead !== undefined) {
      // Typed while the last turn ran: it goes now, as if entered at this prompt.
      this.#io.stdout.write(`${this.#r.paint('bold', '> ')}${ahead}\n`);
      this.#send(ahead);
      return;
    }
    const rl = createInterface({
      input: this.#io.stdin,
      output: this.#io.stdout,
      terminal: true,
      history: this.#history,
      historySize: 200,
      prompt: this.#r.paint('bold', '> '),
    });
    this.#rl = rl;
    rl.on('line', (line) => {
      const text = line.trim();
      if (text === '') {
        rl.prompt();
        return;
      }
      // The typed line stays on the screen as the prompt's record.
      this.#closePrompt(false);
      this.#send(text);
    });
    rl.on('SIGINT', () => this.#quit(EXIT.ok));
    rl.on('close', () => {
      if (!this.#closingPrompt) this.#quit(EXIT.ok); // Ctrl-D
    });
    rl.prompt();
    if (this.#savedLine !== '') rl.write(this.#savedLine);
    this.#savedLine = '';
  }

  #closePrompt(erase: boolean): void {
    const rl = this.#rl;
    if (rl === undefined) return;
    this.#rl = undefined;
    if (erase) {
      // A turn began elsewhere while the user was typing: keep the text for when the prompt returns.
      this.#savedLine = rl.line;
      this.#io.stdout.write('\r\x1b[K');
    }
    this.#closingPrompt = true;
    rl.close();
    this.#closingPrompt = false;
  }

  /** Text written while the prompt shows goes above it: clear the line, write, draw the prompt again. */
  #hidingPrompt(write: () => unknown): void {
    const rl = this.#rl;
    if (rl === undefined) {
      write();
      return;
    }
    this.#io.stdout.write('\r\x1b[K');
    write();
    rl.prompt(true);
  }

  readonly #onKey = (_text: string | undefined, key: Key | undefined) => {
    if (key === undefined) return;
    if (key.ctrl === true && key.name === 'c') {
      this.#interrupt();
      return;
    }
    if (key.ctrl === true && key.name === 'd' && this.#menu === undefined) {
      this.#quit(EXIT.ok);
      return;
    }
    const menu = this.#menu;
    if (menu === undefined) {
      this.#typeAhead(_text, key);
      return;
    }
    const vote = menu.key(key);
    if (vote !== undefined) {
      menu.close(menu.nameOf(vote));
      this.#menu = undefined;
      void this.#vote(menu.ask, vote);
    }
  };

  /** Keys typed while a turn runs are kept, not lost: the line shows at the next prompt, or is sent then. */
  #typeAhead(text: string | undefined, key: Key): void {
    if (key.name === 'return' || key.name === 'enter') {
      const line = this.#savedLine.trim();
      this.#savedLine = '';
      if (line !== '') this.#typedAhead.push(line);
    } else if (key.name === 'backspace') {
      this.#savedLine = this.#savedLine.slice(0, -1);
    } else if (text !== undefined && key.ctrl !== true && isPrintable(text)) {
      this.#savedLine += text;
    }
  }

  #keys(on: boolean): void {
    const stdin = this.#io.stdin;
    if (on === this.#keysOn) return;
    this.#keysOn = on;
    if (on) {
      emitKeypressEvents(stdin);
      stdin.setRawMode(true);
      stdin.on('keypress', this.#onKey);
      stdin.resume();
    } else {
      stdin.off('keypress', this.#onKey);
      stdin.setRawMode(false);
    }
  }

  // ---- prompts ----

  #send(text: string): void {
    this.#submitting++;
    this.#unechoed.push(text);
    this.#sync();
    this.#client.submitPrompt(this.#opts.sessionId, text, this.#ac.signal).then(
      ({ promptId }) => {
        this.#submitting--;
        if (!this.#finished.has(promptId)) this.#mine.add(promptId);
        else if (this.#mine.size === 0 && this.#submitting === 0) this.#turnEnded?.();
        this.#sync();
      },
      (err: unknown) => {
        this.#submitting--;
        const index = this.#unechoed.indexOf(text);
        if (index >= 0) this.#unechoed.splice(index, 1);
        if (this.#done) return;
        this.#failedTurns++;
        this.#hidingPrompt(() => this.#r.note('error', `the prompt was not sent: ${messageOf(err)}`, 'red'));
        if (this.#mine.size === 0 && this.#submitting === 0) this.#turnEnded?.();
        this.#sync();
      },
    );
  }

  /** No terminal: one prompt per line of stdin, each after the previous one's turn ended. */
  async readLines(): Promise<void> {
    const lines = (this.#lines = new LineQueue(this.#io.stdin));
    await Promise.race([this.#readyOnce, this.#finishedOnce]);
    for (;;) {
      const line = await lines.next();
      if (this.#done) return;
      if (line === undefined) break;
      const text = line.trim();
      if (text === '') continue;
      const turn = new Promise<void>((resolve) => (this.#turnEnded = resolve));
      this.#send(text);
      await turn;
      this.#turnEnded = undefined;
      if (this.#done) return;
    }
    this.#quit(this.#failedTurns > 0 ? EXIT.failed : EXIT.ok);
  }

  // ---- permissions ----

  #enqueue(ask: PermissionAsk): void {
    if (this.#asked.has(ask.requestId)) return;
    this.#asked.add(ask.requestId);
    this.#asks.push(ask);
    this.#sync();
  }

  #nextAsk(): void {
    const ask = this.#asks.shift();
    if (ask === undefined) return;
    if (this.#policy !== 'ask') {
      const vote = voteFor(ask.options, this.#policy);
      this.#r.note('permission', `${describe(ask)}: ${this.#policy} (--approve=${this.#policy})`, 'yellow');
      void this.#vote(ask, vote);
      this.#nextAsk();
      return;
    }
    if (this.#tty) {
      this.#closePrompt(true);
      this.#r.busy(false);
      this.#menu = new PermissionMenu(ask, this.#r);
      this.#menu.open();
      return;
    }
    void this.#askByLine(ask);
  }

  async #askByLine(ask: PermissionAsk): Promise<void> {
    const lines = this.#lines;
    if (lines === undefined) return;
    this.#answering = true;
    const choices = ask.options.map((o, i) => `${i + 1}) ${o.name}`).join(' ');
    this.#r.note('permission', `${describe(ask)}? ${choices} (answer with a line: a number, y or n)`);
    let vote: VoteOutcome | undefined;
    while (vote === undefined && !this.#done) {
      const line = await lines.next();
      if (line === undefined) vote = { outcome: 'cancelled' };
      else vote = parseAnswer(ask.options, line);
      if (vote === undefined) this.#r.note('permission', `not an option: ${line ?? ''}`);
    }
    this.#answering = false;
    if (vote !== undefined && this.#asked.has(ask.requestId)) await this.#vote(ask, vote);
    this.#sync();
  }

  async #vote(ask: PermissionAsk, vote: VoteOutcome): Promise<void> {
    try {
      await this.#client.vote(ask.requestId, vote, this.#ac.signal);
    } catch (err) {
      // Someone else answered first: their answer stands, and permission_resolved says so.
      if (!(err instanceof PermissionNotFoundError) && !this.#done) {
        this.#r.note('error', `the answer was not sent: ${messageOf(err)}`, 'red');
      }
    }
    this.#sync();
  }

  #resolvedElsewhere(requestId: string, outcome: string): void {
    const index = this.#asks.findIndex((a) => a.requestId === requestId);
    if (index >= 0) this.#asks.splice(index, 1);
    if (this.#menu?.ask.requestId === requestId) {
      this.#menu.close(`answered elsewhere (${outcome})`);
      this.#menu = undefined;
    }
  }

  // ---- interrupts and the end ----

  /** Ctrl-C: cancel the running turn; a second one (or one with nothing running) quits. */
  #interrupt(): void {
    if (this.#done) return;
    if (!this.#busy || ++this.#interrupts > 1) {
      this.#quit(this.#tty ? EXIT.ok : EXIT.interrupted);
      return;
    }
    this.#r.note('cancel', 'cancelling the turn (Ctrl-C again quits)', 'yellow');
    this.#client.cancel(this.#opts.sessionId, this.#ac.signal).catch((err: unknown) => {
      if (!this.#done) this.#r.note('error', `cancel failed: ${messageOf(err)}`, 'red');
    });
  }

  #quit(code: number): void {
    if (this.#done) return;
    this.#done = true;
    this.#r.busy(false);
    this.#closePrompt(false);
    this.#keys(false);
    this.#menu = undefined;
    this.#ac.abort();
    if (this.#tty) {
      this.#r.endLine();
      this.#r.line(
        this.#r.paint('dim', `left session ${this.#opts.sessionId} (acpd attach ${this.#opts.sessionId} to come back)`),
      );
    }
    this.#io.stdin.pause();
    this.#turnEnded?.();
    this.#finish(code);
  }
}

/** Text a key types (not a control character: those are keys with a meaning of their own). */
function isPrintable(text: string): boolean {
  for (const ch of text) {
    const code = ch.codePointAt(0) ?? 0;
    if (code < 0x20 || code === 0x7f) return false;
  }
  return true;
}
