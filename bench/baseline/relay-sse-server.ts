// The floor of relaying an agent: what any server that turns a real agent's output into SSE must do
// at the least, measured as acpd is, with the same flood agent as a child process. No framework, no
// bus, no event log, no validation: each stdout line of the agent is parsed once (a relay must at
// least know what a line is), a `session/update` becomes the very frame acpd writes (the same
// envelope, ids and key order: see frames.ts), and the frames of one read of the agent's stdout go
// to every socket in one write, waiting for 'drain' when one pushes back. Against the raw writer (frames already in memory), this shows
// what an agent process and a pipe cost on this machine before a daemon does anything of its own.
// It prints "relay-sse listening on http://127.0.0.1:<port>".
//
//   node relay-sse-server.js <agent argv…>
//   GET  /events                      SSE; the socket joins the fan-out set
//   POST /flood {count, firstId, subscribers}
//                                     prompts the agent `flood <count>`, relays its chunks numbered
//                                     from firstId; answers when the agent's turn has ended and
//                                     every frame is written
import { spawn } from 'node:child_process';
import http from 'node:http';
import { settle, writeToAll } from './sse-write.js';

const SSE_HEADERS = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache, no-transform',
  connection: 'keep-alive',
};

const [command, ...args] = process.argv.slice(2);
if (command === undefined) throw new Error('usage: relay-sse-server <agent argv…>');
const agent = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
const subscribers = new Set<http.ServerResponse>();
const answers = new Map<number, (result: unknown) => void>();
let nextRequest = 1;
let nextEventId = 1;
let sending: Promise<void> = Promise.resolve();

function request(method: string, params: unknown): Promise<unknown> {
  const id = nextRequest++;
  agent.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
  return new Promise((resolve) => answers.set(id, resolve));
}

interface Update {
  sessionId: string;
  update: { sessionUpdate: string; content: { type: string; text: string } };
}

/** acpd's frame for a text chunk: the envelope and key order of frames.ts, built from the parsed update. */
function frameOf(id: number, p: Update): string {
  const data = {
    sessionId: p.sessionId,
    update: {
      content: { text: p.update.content.text, type: p.update.content.type },
      sessionUpdate: p.update.sessionUpdate,
    },
  };
  return `id: ${id}\nevent: session_update\ndata: ${JSON.stringify({ id, v: 1, type: 'session_update', data })}\n\n`;
}

/** One line of the agent: a chunk becomes its frame; an answer settles its request. */
function take(line: string): string {
  const msg = JSON.parse(line) as { id?: number; method?: string; params?: Update; result?: unknown };
  if (msg.method === 'session/update' && msg.params !== undefined) return frameOf(nextEventId++, msg.params);
  if (msg.id !== undefined) {
    const answer = answers.get(msg.id);
    answers.delete(msg.id);
    // After the frames before it: a turn's answer must not overtake its last chunks.
    if (answer) sending = sending.then(() => answer(msg.result));
  }
  return '';
}

// Each read of the agent's stdout is split into lines (the last one may be partial), and the frames of
// all its complete lines go out together: the fewest writes a relay can make.
let partial = '';
agent.stdout.setEncoding('utf8');
agent.stdout.on('data', (chunk: string) => {
  const lines = (partial + chunk).split('\n');
  partial = lines.pop() ?? '';
  let frames = '';
  for (const line of lines) if (line !== '') frames += take(line);
  if (frames !== '') sending = sending.then(() => writeToAll(subscribers, frames));
});

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString('utf8')));
    req.on('end', () => resolve(body));
    req.on('error', reject);
  });
}

async function flood(count: number, firstId: number, want: number): Promise<void> {
  await settle(subscribers, want);
  const session = (await request('session/new', { cwd: process.cwd(), mcpServers: [] })) as { sessionId: string };
  nextEventId = firstId;
  await request('session/prompt', { sessionId: session.sessionId, prompt: [{ type: 'text', text: `flood ${count}` }] });
  await sending;
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/events') {
    res.writeHead(200, SSE_HEADERS);
    res.write('retry: 3000\n\n');
    subscribers.add(res);
    res.on('close', () => subscribers.delete(res));
    return;
  }
  if (req.method === 'POST' && req.url === '/flood') {
    void readBody(req)
      .then(async (raw) => {
        const body = JSON.parse(raw) as { count: number; firstId?: number; subscribers?: number };
        await flood(body.count, body.firstId ?? 1, body.subscribers ?? subscribers.size);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"stopReason":"end_turn"}');
      })
      .catch((err: unknown) => res.writeHead(500).end(String(err)));
    return;
  }
  res.writeHead(404).end();
});

await request('initialize', { protocolVersion: 1, clientCapabilities: {} });
server.listen(0, '127.0.0.1', () => {
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  process.stdout.write(`relay-sse listening on http://127.0.0.1:${port}\n`);
});
process.on('SIGTERM', () => {
  agent.kill('SIGTERM');
  process.exit(0);
});
