/**
 * A session's event stream as an async iterator of typed frames that
 * survives dropped connections: it reconnects with `Last-Event-ID` (the last
 * numbered frame it yielded) and `X-Qwen-Event-Epoch`, so the daemon replays
 * exactly what was missed, and it skips any numbered frame it has yielded
 * already. It ends after the session's last frame (`session_closed`,
 * `session_died`), when the caller's signal aborts, or with an error (the
 * session is gone: 404; or the retries ran out).
 */
import type { Static } from '@sinclair/typebox';
import type { FRAMES } from '../schemas/events.js';
import { AcpdError } from './errors.js';
import { backoffMs, retryDelay, sleep, type Transport } from './http.js';
import { readSse } from './sse.js';

/** Any frame of the stream, told apart by `type`. */
export type SessionEvent = Static<(typeof FRAMES)[number]>;
export type SessionEventType = SessionEvent['type'];
/** The frame of one type: `EventOf<'turn_complete'>['data'].stopReason`. */
export type EventOf<K extends SessionEventType> = Extract<SessionEvent, { type: K }>;

export interface EventsOptions {
  /** Start after this event (0: the whole log); absent: live frames only. */
  lastEventId?: number;
  /** The epoch `lastEventId` was read in; a mismatch makes the daemon send `state_resync_required`. */
  epoch?: string;
  signal?: AbortSignal;
  /** Called on every (re)connection, with the stream's epoch and the cursor it resumed from. */
  onOpen?: (info: { epoch: string | undefined; lastEventId: number | undefined; reconnect: boolean }) => void;
}

/** Frames after which the daemon ends the stream for good. */
const LAST_FRAMES: ReadonlySet<string> = new Set(['session_closed', 'session_died']);
/** Frames after which the daemon ends this stream only: reconnecting resumes it. */
const STREAM_ENDERS: ReadonlySet<string> = new Set(['client_evicted', 'stream_error']);

const EPOCH_HEADER = 'x-qwen-event-epoch';

export async function* sessionEvents(
  transport: Transport,
  sessionId: string,
  opts: EventsOptions = {},
): AsyncGenerator<SessionEvent, void, undefined> {
  let lastEventId = opts.lastEventId;
  let epoch = opts.epoch;
  const path = `/session/${encodeURIComponent(sessionId)}/events`;
  // Ours, so that a caller that stops iterating also ends the request; follows the caller's signal.
  const ac = new AbortController();
  const onAbort = () => ac.abort(opts.signal?.reason);
  if (opts.signal?.aborted) return;
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  let failures = 0;
  let connections = 0;
  try {
    while (!ac.signal.aborted) {
      let gotFrame = false;
      // Frames before `replay_complete` are history: a `session_closed` there ended an earlier life of a
      // session that was loaded again since, and does not end this stream.
      let live = false;
      try {
        const headers: Record<string, string> = { accept: 'text/event-stream' };
        if (lastEventId !== undefined) headers['last-event-id'] = String(lastEventId);
        if (epoch !== undefined) headers[EPOCH_HEADER] = epoch;
        const res = await transport.send('GET', path, { headers, signal: ac.signal });
        epoch = res.headers.get(EPOCH_HEADER) ?? epoch;
        opts.onOpen?.({ epoch, lastEventId, reconnect: connections++ > 0 });
        if (res.body === null) throw new Error('the event stream has no body');
        for await (const message of readSse(res.body)) {
          const frame = JSON.parse(message.data) as SessionEvent;
          gotFrame = true;
          if ('id' in frame) {
            if (lastEventId !== undefined && frame.id <= lastEventId) continue;
            lastEventId = frame.id;
          } else if (frame.type === 'replay_complete' && lastEventId === undefined) {
            // A live-only stream: from here on, a reconnect resumes at what was newest when it opened.
            lastEventId = frame.data.lastEventId;
          } else if (frame.type === 'state_resync_required') {
            // The replay that follows starts over at the oldest event held, maybe in a new epoch.
            lastEventId = frame.data.earliestAvailableId - 1;
          }
          if (frame.type === 'replay_complete') live = true;
          yield frame;
          if (live && LAST_FRAMES.has(frame.type)) return;
          if (STREAM_ENDERS.has(frame.type)) break;
        }
      } catch (error) {
        if (ac.signal.aborted) return;
        // 404: the session is gone; other answers that are not "later" end it too.
        if (error instanceof AcpdError && retryDelay(error, 0, transport.retry) === undefined) throw error;
        if (gotFrame) failures = 0;
        if (++failures >= transport.retry.attempts) throw error;
        await sleep(retryDelay(error, failures - 1, transport.retry) ?? 0, ac.signal).catch(() => {});
        continue;
      }
      // The daemon ended the stream without a last frame (a restart, a proxy, an eviction): resume.
      failures = gotFrame ? 0 : failures + 1;
      if (failures >= transport.retry.attempts) throw new Error(`the event stream of ${sessionId} keeps ending`);
      await sleep(backoffMs(failures, transport.retry), ac.signal).catch(() => {});
    }
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    ac.abort();
  }
}
