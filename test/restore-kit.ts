// Shared pieces of the restore tests (issue 3): a daemon on the steerable agent, restore requests,
// waits on conditions, and the server's view of a client that left.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Test } from 'tap';
import { Steer, type HeldCall } from './fixtures/steer.js';
import { call, startDaemon, type JsonResponse, type TestDaemon, type TestOptions } from './helper.js';

export type Action = 'load' | 'resume';

/** A generous bound so that a broken rule fails its test quickly instead of hanging it. */
const WAIT_LIMIT_MS = 10_000;

/** Waits until `check()` holds, looking again every few milliseconds. */
export async function until(check: () => boolean, label: string): Promise<void> {
  const deadline = Date.now() + WAIT_LIMIT_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for: ${label}`);
    await new Promise<void>((resolve) => setTimeout(resolve, 2));
  }
}

/** `promise`, or a failure naming `label` if it has not settled within the wait limit. */
export async function within<T>(promise: Promise<T>, label: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up waiting for: ${label}`)), WAIT_LIMIT_MS);
  });
  try {
    return await Promise.race([promise, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** A steer controller and a daemon running its agent; tap tears down in reverse, so the daemon goes first. */
export async function steered(t: Test, hold: string[], opts: TestOptions = {}): Promise<{ steer: Steer; d: TestDaemon }> {
  const steer = await Steer.create({ hold });
  t.teardown(() => steer.close());
  const d = await startDaemon(t, { ...opts, agent: steer.argv });
  return { steer, d };
}

function sessionIdOf(params: unknown): unknown {
  return typeof params === 'object' && params !== null && 'sessionId' in params ? params.sessionId : undefined;
}

/** How many `method` requests the agents received (for `sessionId` only, when given). */
export function agentCalls(steer: Steer, method: string, sessionId?: string): number {
  return steer.log.filter(
    (r) => r.kind === 'request' && r.method === method && (sessionId === undefined || sessionIdOf(r.params) === sessionId),
  ).length;
}

export function restore(d: TestDaemon, action: Action, id: string, body: unknown = {}, signal?: AbortSignal): Promise<JsonResponse> {
  return call(d, 'POST', `/session/${encodeURIComponent(id)}/${action}`, body, {}, signal);
}

/**
 * The next parked call of `method`, which `pending` (the request that should cause it) is waiting on.
 * If `pending` is answered first, the call never came: fail with that answer instead of waiting forever.
 */
export async function parked(steer: Steer, method: string, pending: Promise<unknown>): Promise<HeldCall> {
  const answered = pending.then((res): never => {
    throw new Error(`answered before ${method} reached the agent: ${JSON.stringify(res)}`);
  });
  answered.catch(() => {});
  return Promise.race([steer.nextCall(method), answered]);
}

/** A restore request the test can abort; `done` never rejects (undefined once aborted). */
export function abortableRestore(d: TestDaemon, action: Action, id: string): { abort: () => void; done: Promise<JsonResponse | undefined> } {
  const ac = new AbortController();
  const done = restore(d, action, id, {}, ac.signal).catch(() => undefined);
  return { abort: () => ac.abort(), done };
}

/**
 * The server's end of the next request to `url` (call before sending it): `gone` resolves when the server
 * saw that connection close before any response was written.
 */
export function serverEnd(d: TestDaemon, url: string): Promise<{ gone: Promise<void> }> {
  return new Promise((resolve) => {
    const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
      if (req.url !== url) return;
      d.app.server.off('request', onRequest);
      const gone = new Promise<void>((resolveGone, rejectGone) => {
        res.once('close', () => {
          if (res.writableFinished) rejectGone(new Error(`${url} was answered before its client left`));
          else resolveGone();
        });
      });
      gone.catch(() => {});
      resolve({ gone });
    };
    d.app.server.on('request', onRequest);
  });
}

/** The pid of the (single) agent process the daemon runs, if any. */
export function agentPid(d: TestDaemon): number | undefined {
  const [channel] = [...d.app.channels.alive];
  return channel?.pid;
}

/**
 * Runs `request` again while it fails only because the agent's start-up missed the (deliberately short)
 * deadline: start-up shares the deadline under test, and a loaded machine can be slow to start node.
 */
export async function despiteSlowStart(request: () => Promise<JsonResponse>): Promise<JsonResponse> {
  for (let attempt = 1; ; attempt++) {
    const res = await request();
    const error = typeof res.body === 'object' && res.body !== null && 'error' in res.body ? res.body.error : undefined;
    if (res.status !== 500 || typeof error !== 'string' || !error.startsWith('acpd initialize timed out') || attempt === 5) return res;
  }
}
