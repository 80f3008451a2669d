// Shared pieces of the restore tests (issue 3): restore requests, parked agent calls, and the server's
// view of a client that left. The steered daemon is in support/app.ts, the waits on conditions in
// ../harness/wait.ts.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HeldCall, Steer } from './fixtures/steer.js';
import type { TestDaemon } from './support/app.js';
import { call, type JsonResponse } from './support/http.js';

export type Action = 'load' | 'resume';

function sessionIdOf(params: unknown): unknown {
  return typeof params === 'object' && params !== null && 'sessionId' in params ? params.sessionId : undefined;
}

/** How many `method` requests the agents received (for `sessionId` only, when given). */
export function agentCalls(steer: Steer, method: string, sessionId?: string): number {
  return steer.log.filter(
    (r) =>
      r.kind === 'request' && r.method === method && (sessionId === undefined || sessionIdOf(r.params) === sessionId),
  ).length;
}

export function restore(
  d: TestDaemon,
  action: Action,
  id: string,
  body: unknown = {},
  signal?: AbortSignal,
): Promise<JsonResponse> {
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
export function abortableRestore(
  d: TestDaemon,
  action: Action,
  id: string,
): { abort: () => void; done: Promise<JsonResponse | undefined> } {
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
    if (
      res.status !== 503 ||
      typeof error !== 'string' ||
      !/^The agent cannot be used: initialize timed out after \d+ms /.test(error) ||
      attempt === 5
    )
      return res;
  }
}
