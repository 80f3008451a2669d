// The stamp the flood agent (and the raw baseline) put in each chunk: CLOCK_MONOTONIC nanoseconds,
// zero-padded to a fixed width so that a stamped frame always has the same length.
export const STAMP_DIGITS = 20;

export function stampNow(): string {
  return process.hrtime.bigint().toString().padStart(STAMP_DIGITS, '0');
}
