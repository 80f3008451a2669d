/**
 * A store seam's answer: a value at once (the memory and SQLite stores) or
 * later (Redis). Callers that have nothing else to wait for keep the
 * synchronous path synchronous (`isPromise`), so a local store behaves
 * exactly as before, to the tick.
 */
export type MaybePromise<T> = T | Promise<T>;

export function isPromise<T>(value: MaybePromise<T>): value is Promise<T> {
  return value instanceof Promise;
}

/**
 * Calls `then` with the value: at once when there is one, once it settles
 * when it is a promise (whose failure goes to `failed`).
 */
export function whenReady<T>(value: MaybePromise<T>, then: (value: T) => void, failed: (err: unknown) => void): void {
  if (isPromise(value)) value.then(then, failed);
  else then(value);
}
