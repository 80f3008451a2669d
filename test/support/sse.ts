/**
 * GET /session/:id/events read the way a client reads it: frames parsed as they arrive, kept in order,
 * and waited for by predicate. The stream is aborted at teardown.
 */
import { request } from 'undici';
import type { Endpoint, Teardown, TestDaemon } from './app.js';

export interface SseFrame {
  /** The frame's lines as sent. */
  raw: string;
  id?: string;
  event?: string;
  data?: string;
  comment?: string;
  retry?: string;
  /** The parsed `data:` envelope, when there is one. */
  envelope?: { id?: number; v: number; type: string; data: Record<string, unknown> };
}

export interface SseStream {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Every frame received so far. */
  frames: SseFrame[];
  /** Frames with an envelope, in order. */
  events(): NonNullable<SseFrame['envelope']>[];
  /** Resolves with the first frame (already received or future) that matches. */
  waitFor(match: (f: SseFrame) => boolean, label?: string): Promise<SseFrame>;
  /** Resolves when the server ends the stream. */
  ended: Promise<void>;
  close(): void;
}

/** One frame (the text between two blank lines), its fields by name, its JSON envelope parsed. */
function parseFrame(raw: string): SseFrame {
  const frame: SseFrame = { raw };
  for (const line of raw.split('\n')) {
    if (line.startsWith(':')) frame.comment = line.slice(1).trim();
    else if (line.startsWith('id: ')) frame.id = line.slice(4);
    else if (line.startsWith('event: ')) frame.event = line.slice(7);
    else if (line.startsWith('data: ')) frame.data = line.slice(6);
    else if (line.startsWith('retry: ')) frame.retry = line.slice(7);
  }
  if (frame.data !== undefined) frame.envelope = JSON.parse(frame.data) as SseFrame['envelope'];
  return frame;
}

/** Opens GET /session/:id/events and parses frames as they arrive. */
export async function openEvents(
  t: Teardown,
  d: Endpoint,
  sessionId: string,
  opts: { lastEventId?: string | number; headers?: Record<string, string> } = {},
): Promise<SseStream> {
  const ac = new AbortController();
  const headers: Record<string, string> = { ...d.headers, accept: 'text/event-stream', ...opts.headers };
  if (opts.lastEventId !== undefined) headers['last-event-id'] = String(opts.lastEventId);
  const res = await request(`${d.baseUrl}/session/${encodeURIComponent(sessionId)}/events`, {
    headers,
    signal: ac.signal,
  });
  const frames: SseFrame[] = [];
  const waiters: { match: (f: SseFrame) => boolean; resolve: (f: SseFrame) => void }[] = [];
  const stream: SseStream = {
    status: res.statusCode,
    headers: res.headers,
    frames,
    events: () => frames.flatMap((f) => (f.envelope ? [f.envelope] : [])),
    waitFor(match, label = 'frame') {
      const found = frames.find(match);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        waiters.push({ match, resolve });
        void stream.ended.then(() => {
          const late = frames.find(match);
          if (late) resolve(late);
          else
            reject(
              new Error(
                `stream ended before ${label}; got ${frames.map((f) => f.event ?? f.comment ?? 'retry').join(',')}`,
              ),
            );
        });
      });
    },
    // However the body stops (ended by the server, aborted, failed), the stream has ended.
    ended: new Promise<void>((resolve) => {
      res.body.on('end', () => resolve());
      res.body.on('close', () => resolve());
      res.body.on('error', () => resolve());
    }),
    close: () => ac.abort(),
  };
  t.teardown(() => ac.abort());
  if (res.statusCode !== 200) {
    const text = await res.body.text();
    frames.push({ raw: text });
    return stream;
  }
  let buf = '';
  res.body.setEncoding('utf8');
  res.body.on('data', (chunk: string) => {
    buf += chunk;
    let sep: number;
    while ((sep = buf.indexOf('\n\n')) !== -1) {
      const f = parseFrame(buf.slice(0, sep));
      buf = buf.slice(sep + 2);
      frames.push(f);
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i];
        if (w && w.match(f)) {
          waiters.splice(i, 1);
          w.resolve(f);
        }
      }
    }
  });
  return stream;
}

/** Matches frames whose envelope has this `type`. */
export function isType(type: string): (f: SseFrame) => boolean {
  return (f) => f.envelope?.type === type;
}

/** The id of the newest event on a live session's bus. */
export function lastEventId(d: TestDaemon, sessionId: string): number {
  const entry = d.app.sessions.get(sessionId);
  if (!entry) throw new Error(`no live session ${sessionId}`);
  return entry.events.lastEventId;
}
