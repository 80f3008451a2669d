// Waiting with a bound, for the tests, the peer run and the benchmarks: `within` is the one timeout
// (a promise against a timer), `until` polls a condition under it, `spinUntil` watches one turn of the
// event loop at a time.
import { setTimeout as sleep } from 'node:timers/promises';

/** A generous default bound, so that a broken rule fails its test quickly instead of hanging it. */
export const WAIT_LIMIT_MS = 10_000;

export class TimeoutError extends Error {
  constructor(label: string, ms: number) {
    super(`timed out after ${ms} ms: ${label}`);
    this.name = 'TimeoutError';
  }
}

/**
 * `promise`, or a TimeoutError naming `label` if it has not settled within `ms`. The timer never keeps
 * the process alive on its own: what is waited for (a socket, a child) does that.
 */
export async function within<T>(promise: Promise<T>, label: string, ms = WAIT_LIMIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(label, ms)), ms);
    timer.unref();
  });
  try {
    return await Promise.race([promise, limit]);
  } finally {
    clearTimeout(timer);
  }
}

export interface PollOptions {
  /** The bound (WAIT_LIMIT_MS by default). */
  ms?: number;
  /** The pause between two looks (2 ms by default). */
  everyMs?: number;
}

type Found<T> = T | false | undefined;

/**
 * Waits until `check` gives something other than false or undefined, and resolves with it; looks again
 * every `everyMs`, and fails through `within` after `ms`.
 */
export async function until<T>(
  check: () => Found<T> | Promise<Found<T>>,
  label: string,
  opts: PollOptions = {},
): Promise<T> {
  const { ms = WAIT_LIMIT_MS, everyMs = 2 } = opts;
  let over = false;
  const poll = async (result: Found<T> | Promise<Found<T>>): Promise<T> => {
    for (;;) {
      const value = result instanceof Promise ? await result : result;
      if (value !== false && value !== undefined) return value;
      await sleep(everyMs);
      // Past the bound the race is lost already and nobody reads this: just stop looking.
      if (over) throw new TimeoutError(label, ms);
      result = check();
    }
  };
  // A synchronous check that already holds is answered without yielding, as `while (!check())` would.
  const first = check();
  if (!(first instanceof Promise) && first !== false && first !== undefined) return first;
  try {
    return await within(poll(first), label, ms);
  } finally {
    over = true;
  }
}

/**
 * Yields to the event loop, one turn at a time, until `cond` holds: for conditions the server reaches
 * through I/O callbacks, looked at after every turn rather than every few milliseconds.
 */
export async function spinUntil(cond: () => boolean, label: string): Promise<void> {
  for (let turns = 0; !cond(); turns++) {
    if (turns > 2_000_000) throw new Error(`gave up waiting for ${label}`);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
