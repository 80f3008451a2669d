/** Rejections as test subjects: the one a promise must end with, and the ones nobody handled. */
import type { Teardown } from './app.js';

/** Resolves with the rejection of `p`; fails if `p` resolves. */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/**
 * Collects the process's unhandled rejections until the test's teardown, which stops listening. With
 * `failAtTeardown`, that teardown also throws if any were collected; registered before the daemon, it
 * runs after the app closed, so rejections raised by the close count too.
 */
export function watchUnhandled(t: Teardown, opts: { failAtTeardown?: boolean } = {}): unknown[] {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason);
  };
  process.on('unhandledRejection', onUnhandled);
  t.teardown(() => {
    process.off('unhandledRejection', onUnhandled);
    if (opts.failAtTeardown && unhandled.length > 0) {
      throw new Error(`unhandled rejection(s): ${unhandled.map(String).join('; ')}`);
    }
  });
  return unhandled;
}
