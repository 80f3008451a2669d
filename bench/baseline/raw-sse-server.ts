// The floor: a minimal node:http SSE server, run as its own process like a daemon would be. No
// framework, no bus, no queue: it writes frames it already holds in memory to its sockets, one
// write per frame per socket, and waits for 'drain' when a socket pushes back — what any SSE server
// has to do at the least. It prints "raw-sse listening on http://127.0.0.1:<port>".
//
//   GET  /events                        SSE; the socket joins the fan-out set
//   POST /flood {count, firstId, sessionId}
//                                       builds `count` frames identical to acpd's (see frames.ts),
//                                       then for each frame: stamp it, write it to every socket;
//                                       answers once every frame is written
//   GET  /events?session=<id>          SSE; the socket joins that session's set (many-sessions scenario)
//   POST /rate {sessionIds, count, perSec}
//                                       for every session at once: `count` frames, one every 1/perSec s,
//                                       stamped and written to that session's sockets; answers when done
//   PUT  /replay                        body: raw SSE bytes (captured from acpd) kept in memory
//   GET  /replay[?single=1]             SSE; writes the kept frames one write per frame (or all
//                                       in a single write), then stays open
import http from 'node:http';
import { stampNow, STAMP_DIGITS } from '../agents/flood-agent-stamp.js';
import { floodFrame } from './frames.js';
import { settle, writable, writeToAll } from './sse-write.js';

const SSE_HEADERS = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache, no-transform',
  connection: 'keep-alive',
};
const RETRY_FRAME = 'retry: 3000\n\n';

const subscribers = new Set<http.ServerResponse>();
const bySession = new Map<string, Set<http.ServerResponse>>();
let replayFrames: Buffer[] = [];
let replayAll: Buffer = Buffer.alloc(0);

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function openStream(res: http.ServerResponse): void {
  res.writeHead(200, SSE_HEADERS);
  res.write(RETRY_FRAME);
}

/** Splits SSE bytes into frames, each keeping its blank-line terminator. */
function splitFrames(raw: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (;;) {
    const end = raw.indexOf('\n\n', start);
    if (end === -1) break;
    out.push(raw.subarray(start, end + 2));
    start = end + 2;
  }
  return out;
}

async function flood(count: number, firstId: number, sessionId: string, want: number): Promise<void> {
  await settle(subscribers, want);
  // Everything is in memory before the first write; the stamp slot is overwritten in place.
  const frames: Buffer[] = [];
  const slots: number[] = [];
  for (let i = 1; i <= count; i++) {
    const buf = Buffer.from(floodFrame(firstId + i - 1, sessionId, i, count));
    frames.push(buf);
    slots.push(buf.indexOf('@') + 1);
  }
  const socks = [...subscribers];
  for (let i = 0; i < count; i++) {
    const buf = frames[i];
    buf.write(stampNow(), slots[i], STAMP_DIGITS, 'latin1');
    const pushedBack = writeToAll(socks, buf);
    if (pushedBack) await pushedBack;
  }
}

/** One session's steady stream, paced like the flood agent's `rate` mode. */
async function stream(sessionId: string, count: number, perSec: number): Promise<void> {
  const start = performance.now();
  for (let i = 1; i <= count; i++) {
    const wait = start + ((i - 1) * 1000) / perSec - performance.now();
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
    const buf = Buffer.from(floodFrame(i, sessionId, i, count));
    buf.write(stampNow(), buf.indexOf('@') + 1, STAMP_DIGITS, 'latin1');
    for (const res of bySession.get(sessionId) ?? []) {
      if (!res.destroyed && !res.write(buf)) await writable(res);
    }
  }
}

async function writeReplay(res: http.ServerResponse, single: boolean): Promise<void> {
  openStream(res);
  if (single) {
    res.write(replayAll);
    return;
  }
  for (const buf of replayFrames) {
    if (res.destroyed) return;
    if (!res.write(buf)) await writable(res);
  }
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  const session = url.searchParams.get('session');
  if (req.method === 'GET' && url.pathname === '/events' && session !== null) {
    openStream(res);
    const set = bySession.get(session) ?? new Set<http.ServerResponse>();
    bySession.set(session, set.add(res));
    res.on('close', () => set.delete(res));
    return;
  }
  if (req.method === 'POST' && url.pathname === '/rate') {
    void readBody(req)
      .then(async (raw) => {
        const body = JSON.parse(raw.toString('utf8')) as { sessionIds: string[]; count: number; perSec: number };
        await Promise.all(body.sessionIds.map((id) => stream(id, body.count, body.perSec)));
        json(res, 200, { stopReason: 'end_turn' });
      })
      .catch((err: unknown) => json(res, 500, { error: String(err) }));
    return;
  }
  if (req.method === 'GET' && url.pathname === '/events') {
    openStream(res);
    subscribers.add(res);
    res.on('close', () => subscribers.delete(res));
    return;
  }
  if (req.method === 'GET' && url.pathname === '/replay') {
    void writeReplay(res, url.searchParams.get('single') === '1');
    return;
  }
  if (req.method === 'POST' && url.pathname === '/flood') {
    void readBody(req)
      .then(async (raw) => {
        const body: unknown = JSON.parse(raw.toString('utf8'));
        if (typeof body !== 'object' || body === null) throw new Error('bad body');
        const count = 'count' in body && typeof body.count === 'number' ? body.count : 0;
        const firstId = 'firstId' in body && typeof body.firstId === 'number' ? body.firstId : 1;
        const sessionId = 'sessionId' in body && typeof body.sessionId === 'string' ? body.sessionId : '';
        const want =
          'subscribers' in body && typeof body.subscribers === 'number' ? body.subscribers : subscribers.size;
        await flood(count, firstId, sessionId, want);
        json(res, 200, { stopReason: 'end_turn', subscribers: subscribers.size });
      })
      .catch((err: unknown) => json(res, 500, { error: String(err) }));
    return;
  }
  if (req.method === 'PUT' && url.pathname === '/replay') {
    void readBody(req).then((raw) => {
      replayAll = raw;
      replayFrames = splitFrames(raw);
      json(res, 200, { frames: replayFrames.length, bytes: raw.length });
    });
    return;
  }
  json(res, 404, { error: 'no route' });
});

server.listen(0, '127.0.0.1', () => {
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  process.stdout.write(`raw-sse listening on http://127.0.0.1:${port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
