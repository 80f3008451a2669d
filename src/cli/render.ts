// What the terminal shows of a session's frames. Two faces: at a terminal, colours and a spinner on
// the line under the cursor; otherwise plain lines with a bracketed tag, no escape sequence at all,
// for scripts and logs. Frames are rendered by id: one whose id was rendered already is dropped, so a
// reconnect can never print text twice.
import type { SessionUpdate } from '@agentclientprotocol/sdk';
import type { SessionEvent } from '../client/index.js';

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const SPIN_MS = 80;

export interface Output {
  write(text: string): unknown;
}

type Colour = 'dim' | 'bold' | 'red' | 'green' | 'yellow' | 'cyan';
const SGR: Record<Colour, [string, string]> = {
  dim: ['\x1b[2m', '\x1b[22m'],
  bold: ['\x1b[1m', '\x1b[22m'],
  red: ['\x1b[31m', '\x1b[39m'],
  green: ['\x1b[32m', '\x1b[39m'],
  yellow: ['\x1b[33m', '\x1b[39m'],
  cyan: ['\x1b[36m', '\x1b[39m'],
};

type UpdateFrame = Extract<SessionEvent, { type: 'session_update' }>;

/**
 * The ACP update a `session_update` frame carries. The frame's schema types only `sessionUpdate` (the
 * rest passes through as the agent sent it); ACP's own types describe the rest.
 */
export function acpUpdate(frame: UpdateFrame): SessionUpdate {
  return frame.data.update as unknown as SessionUpdate;
}

export class Renderer {
  /** The newest numbered frame rendered; older ones are repeats. */
  lastId = 0;
  #atLineStart = true;
  #spinner: NodeJS.Timeout | undefined;
  #spinFrame = 0;
  #spinning = false;
  readonly #tools = new Map<string, string>();

  constructor(
    readonly out: Output,
    /** A terminal: colours, the spinner, cursor movement. */
    readonly tty: boolean,
    readonly colours = tty,
  ) {}

  paint(colour: Colour, text: string): string {
    if (!this.colours) return text;
    const [on, off] = SGR[colour];
    return `${on}${text}${off}`;
  }

  /** Writes text as it comes (the agent's reply), remembering whether the cursor is at a line start. */
  text(text: string): void {
    if (text === '') return;
    this.#clearSpinner();
    this.out.write(text);
    this.#atLineStart = text.endsWith('\n');
  }

  /** A whole line of its own (after ending the line the agent's text left open). */
  line(text: string): void {
    this.#clearSpinner();
    if (!this.#atLineStart) this.out.write('\n');
    this.out.write(`${text}\n`);
    this.#atLineStart = true;
  }

  /** A line tagged for scripts (`[tag] text`) or, at a terminal, in a colour. */
  note(tag: string, text: string, colour: Colour = 'dim'): void {
    this.line(this.tty ? this.paint(colour, text) : `[${tag}] ${text}`);
  }

  /**
   * Renders one frame; false when it was a repeat (its id rendered already). Frames that only the
   * client's state needs (queue, state, permission requests, which the asker shows) render nothing.
   */
  frame(frame: SessionEvent, opts: { ownEcho: boolean }): boolean {
    if ('id' in frame) {
      if (frame.id <= this.lastId) return false;
      this.lastId = frame.id;
    }
    switch (frame.type) {
      case 'session_update':
        this.#update(acpUpdate(frame), opts.ownEcho);
        break;
      case 'prompt_cancelled':
        // At a terminal the turn's end says "(cancelled)"; a log gets the moment it was asked.
        if (!this.tty) this.note('cancel', 'the running prompt was cancelled');
        break;
      case 'turn_complete':
        if (this.tty) {
          if (frame.data.stopReason !== 'end_turn') this.note('done', `(${frame.data.stopReason})`, 'yellow');
          else this.endLine();
        } else {
          this.note('done', frame.data.stopReason);
        }
        break;
      case 'turn_error':
        this.note('error', `the turn failed: ${frame.data.message}`, 'red');
        break;
      case 'model_switched':
        this.note('model', `model: ${frame.data.modelId}`);
        break;
      case 'model_switch_failed':
        this.note('model', `model switch to ${frame.data.requestedModelId} failed: ${frame.data.error}`, 'red');
        break;
      case 'session_closed':
        this.note('closed', 'the session was closed');
        break;
      case 'session_died':
        this.note('died', `the session ended (${frame.data.reason})`, 'red');
        break;
      case 'state_resync_required':
        this.note('resync', 'the daemon no longer holds part of this history; showing what it has', 'yellow');
        break;
      default:
        break;
    }
    return true;
  }

  #update(update: SessionUpdate, ownEcho: boolean): void {
    switch (update.sessionUpdate) {
      case 'agent_message_chunk':
        if (update.content.type === 'text') this.text(update.content.text);
        else this.note('content', `[${update.content.type}]`);
        break;
      case 'agent_thought_chunk':
        // Thoughts are for the person watching; a script wants the reply.
        if (this.tty && update.content.type === 'text') this.text(this.paint('dim', update.content.text));
        break;
      case 'user_message_chunk':
        if (!ownEcho) {
          const text = update.content.type === 'text' ? update.content.text : `[${update.content.type}]`;
          this.line(this.tty ? this.paint('cyan', `› ${text}`) : `> ${text}`);
        }
        break;
      case 'tool_call': {
        this.#tools.set(update.toolCallId, update.title);
        const kind = update.kind === undefined ? '' : ` (${update.kind})`;
        const status = update.status ?? 'pending';
        this.note('tool', `${update.title}${kind}: ${status}`, 'cyan');
        break;
      }
      case 'tool_call_update': {
        const title = update.title ?? this.#tools.get(update.toolCallId) ?? update.toolCallId;
        if (update.title != null) this.#tools.set(update.toolCallId, update.title);
        if (update.status != null) {
          const colour = update.status === 'failed' ? 'red' : update.status === 'completed' ? 'green' : 'cyan';
          this.note('tool', `${title}: ${update.status}`, colour);
        }
        break;
      }
      case 'plan':
        this.note(
          'plan',
          update.entries.map((entry) => `${entry.status === 'completed' ? '✓' : '·'} ${entry.content}`).join('\n'),
        );
        break;
      default:
        break;
    }
  }

  /** The spinner, at a terminal, on its own line while the agent works and writes nothing. */
  busy(on: boolean): void {
    if (!this.tty) return;
    if (on && this.#spinner === undefined) {
      this.#spinner = setInterval(() => this.#spin(), SPIN_MS);
      this.#spinner.unref();
    } else if (!on && this.#spinner !== undefined) {
      clearInterval(this.#spinner);
      this.#spinner = undefined;
      this.#clearSpinner();
    }
  }

  #spin(): void {
    // Only on an empty line: drawn after the agent's text, it would sit inside the reply.
    if (!this.#atLineStart) return;
    this.#spinFrame = (this.#spinFrame + 1) % SPINNER.length;
    this.out.write(`\r${this.paint('dim', `${SPINNER[this.#spinFrame]} working`)}\x1b[K`);
    this.#spinning = true;
  }

  #clearSpinner(): void {
    if (!this.#spinning) return;
    this.out.write('\r\x1b[K');
    this.#spinning = false;
  }

  /** Ends the agent's open line, so that what comes next (a prompt, a menu) starts at the left. */
  endLine(): void {
    this.#clearSpinner();
    if (!this.#atLineStart) this.out.write('\n');
    this.#atLineStart = true;
  }
}
