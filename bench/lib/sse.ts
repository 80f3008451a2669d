// A lean SSE client for measuring: one socket per subscriber (no pooling), frames split on the
// blank line, the receive time of every chunk taken once with process.hrtime (CLOCK_MONOTONIC,
// comparable with the stamps the flood agent and the raw server write). It does no JSON parsing of
// its own: a scenario that needs more than ids looks at the frame text in `onFrame`, so that 64
// subscribers in one process cost as little client CPU as possible (the same client reads acpd,
// `qwen serve` and the raw baseline).
import http from 'node:http';
import { StringDecoder } from 'node:string_decoder';

interface SseOptions {
  lastEventId?: number;
  /** Called for every complete frame (comments and the retry frame included). */
  onFrame?: (frame: string, id: number, recvNs: number) => void;
  /** Keep the raw bytes received (for replaying them elsewhere). */
  keepBytes?: boolean;
}

/** Monotonic clock in milliseconds (float), the clock of the stamps. */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export class SseStream {
  status = 0;
  headers: http.IncomingHttpHeaders = {};
  /** Frames carrying an `id:` line. */
  idFrames = 0;
  frames = 0;
  lastId = 0;
  bytes = 0;
  evicted = false;
  readonly chunks: Buffer[] = [];
  readonly ended: Promise<void>;
  private endResolve: () => void = () => {};
  private readonly idWaiters = new Map<number, (recvMs: number) => void>();
  private carry = '';
  private readonly decoder = new StringDecoder('utf8');
  private req: http.ClientRequest | undefined;

  constructor(private readonly opts: SseOptions) {
    this.ended = new Promise((resolve) => {
      this.endResolve = resolve;
    });
  }

  /** Resolves with the receive time (ms, monotonic) of the frame with this id, or at the end of the stream. */
  waitForId(id: number): Promise<number> {
    if (this.lastId >= id) return Promise.resolve(nowMs());
    return new Promise((resolve) => {
      this.idWaiters.set(id, resolve);
      void this.ended.then(() => resolve(Number.NaN));
    });
  }

  attach(req: http.ClientRequest): void {
    this.req = req;
  }

  feed(chunk: Buffer): void {
    const recvNs = Number(process.hrtime.bigint());
    this.bytes += chunk.length;
    if (this.opts.keepBytes) this.chunks.push(chunk);
    this.carry += this.decoder.write(chunk);
    let start = 0;
    let end: number;
    while ((end = this.carry.indexOf('\n\n', start)) !== -1) {
      const frame = this.carry.slice(start, end);
      start = end + 2;
      this.frames++;
      let id = 0;
      if (frame.startsWith('id: ')) {
        const nl = frame.indexOf('\n');
        id = Number(frame.slice(4, nl === -1 ? undefined : nl));
        this.idFrames++;
        this.lastId = id;
      } else if (frame.includes('event: client_evicted')) {
        this.evicted = true;
      }
      this.opts.onFrame?.(frame, id, recvNs);
      if (id !== 0 && this.idWaiters.size > 0) {
        const w = this.idWaiters.get(id);
        if (w) {
          this.idWaiters.delete(id);
          w(recvNs / 1e6);
        }
      }
    }
    this.carry = start === 0 ? this.carry : this.carry.slice(start);
  }

  finish(): void {
    this.endResolve();
  }

  close(): void {
    this.req?.destroy();
    this.finish();
  }
}

/** Opens a stream; resolves once the response head arrived (the server has subscribed us by then). */
export function openSse(url: string, opts: SseOptions = {}, headers: Record<string, string> = {}): Promise<SseStream> {
  const stream = new SseStream(opts);
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method: 'GET',
      agent: false,
      headers: {
        accept: 'text/event-stream',
        ...(opts.lastEventId !== undefined ? { 'last-event-id': String(opts.lastEventId) } : {}),
        ...headers,
      },
    });
    stream.attach(req);
    req.on('response', (res) => {
      stream.status = res.statusCode ?? 0;
      stream.headers = res.headers;
      res.on('data', (c: Buffer) => stream.feed(c));
      res.on('end', () => stream.finish());
      res.on('error', () => stream.finish());
      res.on('close', () => stream.finish());
      resolve(stream);
    });
    req.on('error', (err) => {
      stream.finish();
      reject(err);
    });
    req.end();
  });
}

/** Opens `count` streams on the same URL, one after another (each subscribed before the next). */
export async function openMany(url: string, count: number, make: (i: number) => SseOptions): Promise<SseStream[]> {
  const out: SseStream[] = [];
  for (let i = 0; i < count; i++) {
    const s = await openSse(url, make(i));
    if (s.status !== 200) {
      for (const o of out) o.close();
      s.close();
      throw new Error(`GET ${url} → ${s.status} (subscriber ${i + 1} of ${count})`);
    }
    out.push(s);
  }
  return out;
}
