// A minimal ACP agent for the fan-out and replay benchmarks. It speaks newline-delimited JSON-RPC
// by hand (no SDK) so that it costs as little as possible and the daemon, not the agent, sets the
// pace. `flood <n>` answers with n agent_message_chunk updates written as fast as stdout takes
// them; each chunk's text carries its sequence number and a CLOCK_MONOTONIC stamp in nanoseconds
// (process.hrtime, the same clock in every process of this machine), taken when the line is built
// right before it is written. The client reads the stamp back out of the SSE frame: that is how the
// benchmark measures publish → receive latency through the daemon.
//
//   flood <n>    n chunks "flood <i>/<n> @<20-digit ns stamp>\n", then {stopReason: 'end_turn'}
//   rate <n> <r> the same n chunks, one every 1/r s (a steady stream; the many-sessions scenario)
//   anything     one chunk "ok", then end_turn
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { stampNow } from './flood-agent-stamp.js';

/** Chunks serialized per stdout write. */
const BATCH = 64;

interface RpcMessage {
  jsonrpc?: string;
  id?: number | string;
  method?: string;
  params?: Record<string, unknown>;
}

let cancelled = false;

/** Chunk i of a steady stream is due at start + i/r; late ones go out at once (no catching up in bursts beyond that). */
async function rate(sessionId: string, count: number, perSec: number): Promise<void> {
  const start = performance.now();
  for (let i = 1; i <= count && !cancelled; i++) {
    const wait = start + ((i - 1) * 1000) / perSec - performance.now();
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
    if (!process.stdout.write(`${chunkLine(sessionId, `flood ${i}/${count} @${stampNow()}\n`)}\n`)) await drained();
  }
}

function send(message: unknown): boolean {
  return process.stdout.write(`${JSON.stringify(message)}\n`);
}

function drained(): Promise<void> {
  return new Promise((resolve) => process.stdout.once('drain', () => resolve()));
}

function chunkLine(sessionId: string, text: string): string {
  return JSON.stringify({
    jsonrpc: '2.0',
    method: 'session/update',
    params: { sessionId, update: { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text } } },
  });
}

async function flood(sessionId: string, count: number): Promise<void> {
  for (let start = 1; start <= count && !cancelled; start += BATCH) {
    const end = Math.min(count, start + BATCH - 1);
    let out = '';
    for (let i = start; i <= end; i++) out += `${chunkLine(sessionId, `flood ${i}/${count} @${stampNow()}\n`)}\n`;
    if (!process.stdout.write(out)) await drained();
  }
}

function promptText(params: Record<string, unknown> | undefined): string {
  const prompt = params?.prompt;
  if (!Array.isArray(prompt)) return '';
  return prompt
    .map((block: unknown) =>
      typeof block === 'object' && block !== null && 'text' in block && typeof block.text === 'string'
        ? block.text
        : '',
    )
    .join('\n')
    .trim();
}

async function handle(msg: RpcMessage): Promise<void> {
  const { id, method, params } = msg;
  if (method === undefined) return; // a response to something we never asked
  if (id === undefined) {
    if (method === 'session/cancel') cancelled = true;
    return;
  }
  switch (method) {
    case 'initialize':
      send({
        jsonrpc: '2.0',
        id,
        result: {
          protocolVersion: 1,
          agentCapabilities: { loadSession: true, sessionCapabilities: { resume: {} } },
          authMethods: [],
          agentInfo: { name: 'acpd-bench-flood', version: '1' },
        },
      });
      return;
    case 'session/new':
      send({ jsonrpc: '2.0', id, result: { sessionId: randomUUID() } });
      return;
    case 'session/load':
    case 'session/resume':
      send({ jsonrpc: '2.0', id, result: {} });
      return;
    case 'session/prompt': {
      cancelled = false;
      const sessionId = typeof params?.sessionId === 'string' ? params.sessionId : '';
      const text = promptText(params);
      const m = /^flood\s+(\d+)$/.exec(text);
      const r = /^rate\s+(\d+)\s+(\d+(?:\.\d+)?)$/.exec(text);
      if (m) await flood(sessionId, Number(m[1]));
      else if (r) await rate(sessionId, Number(r[1]), Number(r[2]));
      else
        send({
          jsonrpc: '2.0',
          method: 'session/update',
          params: {
            sessionId,
            update: { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 'ok' } },
          },
        });
      send({ jsonrpc: '2.0', id, result: { stopReason: cancelled ? 'cancelled' : 'end_turn' } });
      return;
    }
    default:
      send({ jsonrpc: '2.0', id, error: { code: -32601, message: `Method not found: ${method}` } });
  }
}

// A session's prompts run one after another, in arrival order, as a real agent's turn queue would;
// sessions run side by side (acpd hosts many on one agent process).
const tails = new Map<string, Promise<void>>();
const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (line.trim() === '') return;
  let msg: RpcMessage;
  try {
    msg = JSON.parse(line) as RpcMessage;
  } catch {
    return;
  }
  // Notifications (cancel) act at once; requests queue.
  if (msg.id === undefined) {
    void handle(msg);
    return;
  }
  const key = typeof msg.params?.sessionId === 'string' ? msg.params.sessionId : '';
  const next = (tails.get(key) ?? Promise.resolve())
    .then(() => handle(msg))
    .catch((err: unknown) => {
      process.stderr.write(`flood-agent: ${err instanceof Error ? err.message : String(err)}\n`);
    });
  tails.set(key, next);
});
lines.on('close', () => process.exit(0));
process.stdout.on('error', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
