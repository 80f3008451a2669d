// Permission requests: a one-line menu at a terminal (arrows and Enter, or y/n), a typed answer from
// stdin without one, or the --approve policy with nobody asked.
import type { VoteOutcome } from '../client/index.js';
import type { Renderer } from './render.js';

export interface PermissionOption {
  optionId: string;
  name: string;
  kind: string;
}

export interface PermissionAsk {
  requestId: string;
  toolCall: { title?: unknown; toolCallId: string };
  options: PermissionOption[];
}

/** The option a y (allow) or n (reject) stands for: the one-time kind first, then any of that side. */
export function optionFor(
  options: readonly PermissionOption[],
  side: 'allow' | 'reject',
): PermissionOption | undefined {
  return options.find((o) => o.kind === `${side}_once`) ?? options.find((o) => o.kind.startsWith(side));
}

/** The vote that answers a request by policy; a request that offers no such option is cancelled. */
export function voteFor(options: readonly PermissionOption[], side: 'allow' | 'reject'): VoteOutcome {
  const option = optionFor(options, side);
  return option === undefined ? { outcome: 'cancelled' } : { outcome: 'selected', optionId: option.optionId };
}

export function describe(ask: PermissionAsk): string {
  return typeof ask.toolCall.title === 'string' ? ask.toolCall.title : ask.toolCall.toolCallId;
}

/** Reads a typed answer (no terminal): a number, an option id or name, y or n; undefined if none fits. */
export function parseAnswer(options: readonly PermissionOption[], answer: string): VoteOutcome | undefined {
  const text = answer.trim().toLowerCase();
  const byNumber = /^\d+$/.test(text) ? options[Number(text) - 1] : undefined;
  const chosen =
    byNumber ??
    options.find((o) => o.optionId.toLowerCase() === text || o.name.toLowerCase() === text) ??
    (text === 'y' || text === 'yes' ? optionFor(options, 'allow') : undefined) ??
    (text === 'n' || text === 'no' ? optionFor(options, 'reject') : undefined);
  return chosen === undefined ? undefined : { outcome: 'selected', optionId: chosen.optionId };
}

/** What a key did to the menu: nothing yet, or the answer. */
export type MenuResult = undefined | VoteOutcome;

export interface Key {
  name?: string;
  sequence?: string;
  ctrl?: boolean;
}

/** The terminal menu: one line of options, the chosen one highlighted; redrawn in place. */
export class PermissionMenu {
  #index = 0;

  constructor(
    readonly ask: PermissionAsk,
    readonly renderer: Renderer,
  ) {
    // Start on the safe side: Enter alone never grants anything.
    const reject = optionFor(ask.options, 'reject');
    this.#index = reject === undefined ? 0 : ask.options.indexOf(reject);
  }

  open(): void {
    this.renderer.endLine();
    this.renderer.out.write(`${this.renderer.paint('yellow', `? Allow ${describe(this.ask)}?`)}\n`);
    this.#draw();
  }

  #draw(): void {
    const items = this.ask.options.map((option, i) =>
      i === this.#index ? this.renderer.paint('bold', `❯ ${option.name}`) : `  ${option.name}`,
    );
    this.renderer.out.write(`\r\x1b[K${items.join('   ')}   ${this.renderer.paint('dim', '(←/→ Enter, y/n)')}`);
  }

  /** Closes the menu's line with what was chosen (or why it went away). */
  close(what: string): void {
    this.renderer.out.write(`\r\x1b[K${this.renderer.paint('dim', `→ ${what}`)}\n`);
  }

  key(key: Key): MenuResult {
    const count = this.ask.options.length;
    switch (key.name) {
      case 'left':
      case 'up':
        this.#index = (this.#index + count - 1) % count;
        this.#draw();
        return undefined;
      case 'right':
      case 'down':
      case 'tab':
        this.#index = (this.#index + 1) % count;
        this.#draw();
        return undefined;
      case 'return':
      case 'enter': {
        const option = this.ask.options[this.#index];
        return option === undefined ? { outcome: 'cancelled' } : { outcome: 'selected', optionId: option.optionId };
      }
      case 'y':
        return voteFor(this.ask.options, 'allow');
      case 'n':
        return voteFor(this.ask.options, 'reject');
      default:
        return undefined;
    }
  }

  nameOf(vote: VoteOutcome): string {
    if (vote.outcome === 'cancelled') return 'cancelled';
    return this.ask.options.find((o) => o.optionId === vote.optionId)?.name ?? vote.optionId;
  }
}
