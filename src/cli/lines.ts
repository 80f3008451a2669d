// Lines of stdin, one at a time, for the no-terminal mode: prompts and typed permission answers are
// read from the same queue, in the order they come.
import { createInterface } from 'node:readline';

export class LineQueue {
  readonly #lines: string[] = [];
  readonly #waiters: ((line: string | undefined) => void)[] = [];
  #ended = false;

  constructor(input: NodeJS.ReadableStream) {
    const rl = createInterface({ input, terminal: false, crlfDelay: Infinity });
    rl.on('line', (line) => {
      const waiter = this.#waiters.shift();
      if (waiter === undefined) this.#lines.push(line);
      else waiter(line);
    });
    rl.on('close', () => {
      this.#ended = true;
      for (const waiter of this.#waiters.splice(0)) waiter(undefined);
    });
  }

  /** The next line, or undefined at the end of the input. */
  next(): Promise<string | undefined> {
    const line = this.#lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    if (this.#ended) return Promise.resolve(undefined);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}
