/**
 * The agent's stdout, split into ndjson lines before the ACP SDK sees them.
 *
 * Nearly every line an agent writes during a turn is a `session/update` text
 * chunk. The SDK validates each notification with its zod schemas, twice (its
 * own session router, then the handler acpd registers), and pushes every line
 * through web streams on the way: most of the daemon's CPU per event with one
 * subscriber (bench/RESULTS.md, profile). Here a text chunk whose shape is
 * exactly the schema's, with no field that zod would strip or default, goes
 * straight to the handler, built as zod would build it. Every other line (any
 * request, answer, other notification, and any update that is not such a
 * chunk, malformed ones included) goes to the SDK unchanged, which validates
 * it and answers or refuses it as before.
 *
 * The chunk line an agent writes most often, the SDK's own serialization of
 * it, is not even parsed whole: `scanChunkLine` matches its fixed text and
 * parses only the chunk's text, and hands the bus the update's JSON with it,
 * so that the bus need not serialize the object again.
 *
 * Order is kept: after a line is handed to the SDK, the next lines wait for a
 * macrotask, by which time the SDK has dispatched it (its dispatch is a chain
 * of microtasks), so a chunk never overtakes the message before it.
 */
import type { Readable } from 'node:stream';
import { DEFAULT_MAX_MESSAGE_BYTES } from '@agentclientprotocol/sdk';
import type { SessionNotification } from '@agentclientprotocol/sdk';

const NEWLINE = 0x0a;
/**
 * How many chunks go to the handler in a row before the rest of a read waits
 * for a macrotask. The SDK's path gave the SSE streams a turn between two
 * updates (its microtask hops); delivered in one synchronous run, a 64 KiB
 * read of short chunks would fill a subscriber's queue (256 events by
 * default) before its stream could write any, and evict it. A quarter of
 * that keeps well under it and still makes bursts for the group commit.
 */
const MAX_RUN = 64;
/**
 * The same for chunks whose bus sends nothing before its group commit (the
 * durable log; `deliver` returns true for those): they cannot fill a queue
 * during the run, and the commit sends them as one burst, which stretches
 * the queue's cap by its size. A whole pipe read (hundreds of short chunks)
 * is then one commit, not one per `MAX_RUN`: a commit costs per transaction
 * as well as per event. The bound only keeps a run of queued lines short.
 */
const MAX_GROUPED_RUN = 1024;

type ChunkKind = 'agent_message_chunk' | 'agent_thought_chunk' | 'user_message_chunk';

function isChunkKind(value: unknown): value is ChunkKind {
  return value === 'agent_message_chunk' || value === 'agent_thought_chunk' || value === 'user_message_chunk';
}

/** The kind named by `value`, as the constant (not a slice of the line that named it). */
function chunkKind(value: string): ChunkKind | undefined {
  switch (value) {
    case 'agent_message_chunk':
      return 'agent_message_chunk';
    case 'agent_thought_chunk':
      return 'agent_thought_chunk';
    case 'user_message_chunk':
      return 'user_message_chunk';
    default:
      return undefined;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** How many own keys `o` has, without building the array `Object.keys` would. */
function keyCount(o: Record<string, unknown>): number {
  let n = 0;
  for (const key in o) if (Object.hasOwn(o, key)) n++;
  return n;
}

/**
 * `params` as the SDK's zod schema would return it, when it is a text chunk
 * of exactly the shape `{ sessionId, update: { sessionUpdate, content: { type:
 * 'text', text } } }`; undefined for anything else (which then takes the SDK's
 * full validation). Built anew in zod's key order, so the frame clients get is
 * byte for byte what they got before.
 */
export function fastSessionUpdate(params: unknown): SessionNotification | undefined {
  if (!isRecord(params) || keyCount(params) !== 2) return undefined;
  const { sessionId, update } = params;
  if (typeof sessionId !== 'string' || !isRecord(update) || keyCount(update) !== 2) return undefined;
  const { sessionUpdate, content } = update;
  if (!isChunkKind(sessionUpdate) || !isRecord(content) || keyCount(content) !== 2) return undefined;
  if (content.type !== 'text' || typeof content.text !== 'string') return undefined;
  return { sessionId, update: { content: { text: content.text, type: 'text' }, sessionUpdate } };
}

/** A text chunk taken off the fast path, and the JSON text of `update` when the line gave it without a stringify. */
export interface FastChunk {
  update: SessionNotification;
  /** Exactly `JSON.stringify(update)`. */
  json?: string;
}

/**
 * The text of a chunk line as `JSON.stringify` writes the SDK's message
 * object (the SDK's own agents and most others), around its three values:
 * the session id, the kind, and the text as a JSON string literal.
 */
const CHUNK_HEAD = '{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"';
const CHUNK_KIND = '","update":{"sessionUpdate":"';
const CHUNK_TEXT = '","content":{"type":"text","text":';
const CHUNK_TAIL = '}}}}';
/** Whether a session id is its own JSON text between quotes: no escape, no control character. */
function plainId(id: string): boolean {
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i);
    if (c < 0x20 || c === 0x5c) return false;
  }
  return true;
}

/**
 * The last session id scanned, as a string of its own. A slice of the line
 * would keep the whole line alive for as long as the bus keeps the update
 * (thousands of events in its tail); consecutive chunks nearly always name
 * the same session, so one copy serves them all.
 */
let lastSessionId = '';

function ownSessionId(slice: string): string {
  if (slice !== lastSessionId) lastSessionId = JSON.parse(`"${slice}"`) as string;
  return lastSessionId;
}

/**
 * The chunk a line carries when the line is, byte for byte, that
 * serialization of a text chunk; undefined for any other line (which then
 * takes the general path). Everything outside the three values is matched
 * exactly, so there is no room for another key; the text must be one JSON
 * string literal, which `JSON.parse` of just that literal checks. The
 * update's JSON is then assembled from the pieces with no stringify of an
 * object: the id and the kind are copied as they are, and so is the
 * literal unless it holds an escape `JSON.stringify` would write otherwise
 * (`\u`, `\/`), in which case the parsed text is serialized again.
 */
export function scanChunkLine(text: string): FastChunk | undefined {
  if (!text.startsWith(CHUNK_HEAD) || !text.endsWith(CHUNK_TAIL)) return undefined;
  const idEnd = text.indexOf('"', CHUNK_HEAD.length);
  if (idEnd === -1 || !text.startsWith(CHUNK_KIND, idEnd)) return undefined;
  const idSlice = text.slice(CHUNK_HEAD.length, idEnd);
  const kindStart = idEnd + CHUNK_KIND.length;
  const kindEnd = text.indexOf('"', kindStart);
  if (kindEnd === -1 || !text.startsWith(CHUNK_TEXT, kindEnd)) return undefined;
  const sessionUpdate = chunkKind(text.slice(kindStart, kindEnd));
  if (sessionUpdate === undefined || !plainId(idSlice)) return undefined;
  const literal = text.slice(kindEnd + CHUNK_TEXT.length, text.length - CHUNK_TAIL.length);
  // Quotes at both ends rule out whitespace around the literal, which JSON.parse would skip.
  if (literal.length < 2 || literal.charCodeAt(0) !== 0x22 || literal.charCodeAt(literal.length - 1) !== 0x22) {
    return undefined;
  }
  let value: unknown;
  try {
    value = JSON.parse(literal);
  } catch {
    return undefined;
  }
  if (typeof value !== 'string') return undefined;
  const sessionId = ownSessionId(idSlice);
  const textJson = literal.includes('\\u') || literal.includes('\\/') ? JSON.stringify(value) : literal;
  return {
    update: { sessionId, update: { content: { text: value, type: 'text' }, sessionUpdate } },
    json: `{"sessionId":"${sessionId}","update":{"content":{"text":${textJson},"type":"text"},"sessionUpdate":"${sessionUpdate}"}}`,
  };
}

/** The chunk a line carries, when it is a `session/update` notification `fastSessionUpdate` takes. */
export function fastLine(line: Buffer): FastChunk | undefined {
  const text = line.toString('utf8');
  const scanned = scanChunkLine(text);
  if (scanned) return scanned;
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isRecord(message) || message.jsonrpc !== '2.0' || 'id' in message) return undefined;
  if (message.method !== 'session/update') return undefined;
  const update = fastSessionUpdate(message.params);
  return update && { update };
}

export class AgentLines {
  /** The lines left to the SDK, each with its newline, for `ndJsonStream`. */
  readonly rest: ReadableStream<Uint8Array>;
  private controller!: ReadableStreamDefaultController<Uint8Array>;
  /** The start of a line whose end has not arrived yet. */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  /** Complete lines waiting behind one handed to the SDK. */
  private queue: Buffer[] = [];
  private queued = 0;
  private waiting = false;
  /** Chunks delivered since the last macrotask, and how many of them went to a bus that sends at its commit. */
  private run = 0;
  private grouped = 0;
  private ended = false;
  private closed = false;
  /** A line longer than the SDK's limit came: from then on every byte goes to the SDK, which refuses it. */
  private passThrough = false;

  constructor(
    input: Readable,
    /**
     * True when the update's bus sends it only at its next group commit (so no subscriber's queue grew).
     * `json`, when given, is exactly `JSON.stringify(params)`, taken from the line.
     */
    private readonly deliver: (params: SessionNotification, json?: string) => boolean | void,
    private readonly onDeliverError: (err: unknown) => void,
  ) {
    this.rest = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.controller = controller;
      },
      cancel: () => {
        this.closed = true;
        input.destroy();
      },
    });
    input.on('data', (chunk: Buffer) => this.push(chunk));
    input.once('end', () => this.end());
    input.once('close', () => this.end());
  }

  private push(chunk: Buffer): void {
    if (this.closed) return;
    if (this.passThrough) {
      this.controller.enqueue(chunk);
      return;
    }
    let start = 0;
    let nl = chunk.indexOf(NEWLINE);
    while (nl !== -1) {
      let line = chunk.subarray(start, nl);
      if (this.partialBytes > 0) {
        this.partial.push(line);
        line = Buffer.concat(this.partial);
        this.partial = [];
        this.partialBytes = 0;
      }
      this.line(line);
      start = nl + 1;
      nl = chunk.indexOf(NEWLINE, start);
    }
    if (start < chunk.length) {
      const tail = chunk.subarray(start);
      this.partial.push(tail);
      this.partialBytes += tail.length;
      if (this.partialBytes > DEFAULT_MAX_MESSAGE_BYTES) this.startPassThrough();
    }
  }

  private line(line: Buffer): void {
    if (this.waiting) this.queue.push(line);
    else this.handle(line);
  }

  private handle(line: Buffer): void {
    if (line.length === 0) return; // the SDK skips blank lines too
    const chunk = fastLine(line);
    if (chunk === undefined) {
      this.forward(line);
      return;
    }
    let grouped = false;
    try {
      grouped = this.deliver(chunk.update, chunk.json) === true;
    } catch (err) {
      this.onDeliverError(err);
    }
    if (grouped ? ++this.grouped >= MAX_GROUPED_RUN : ++this.run >= MAX_RUN) this.pause();
  }

  /** Hands a line to the SDK, and holds the next ones until it has dispatched it. */
  private forward(line: Buffer): void {
    this.controller.enqueue(this.lineOf(line));
    this.pause();
  }

  /** The next lines wait for a macrotask: the SDK, the bus and the streams get their turn first. */
  private pause(): void {
    this.waiting = true;
    setImmediate(() => this.resume());
  }

  private resume(): void {
    this.waiting = false;
    this.run = 0;
    this.grouped = 0;
    while (!this.waiting && this.queued < this.queue.length && !this.closed) {
      this.handle(this.queue[this.queued++]);
    }
    if (this.queued === this.queue.length) {
      this.queue = [];
      this.queued = 0;
      if (this.ended) this.finish();
    }
  }

  /** Everything queued and the unfinished line go to the SDK as they are (it enforces the limit). */
  private startPassThrough(): void {
    this.passThrough = true;
    for (let i = this.queued; i < this.queue.length; i++) this.controller.enqueue(this.lineOf(this.queue[i]));
    this.queue = [];
    this.queued = 0;
    this.waiting = false;
    for (const piece of this.partial) this.controller.enqueue(piece);
    this.partial = [];
    this.partialBytes = 0;
  }

  private lineOf(line: Buffer): Buffer {
    return Buffer.concat([line, Buffer.of(NEWLINE)]);
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.waiting) this.finish();
  }

  /** The last line, if unterminated, goes to the SDK (as it would have), then the stream ends. */
  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.partialBytes > 0) this.controller.enqueue(Buffer.concat(this.partial));
    this.partial = [];
    this.partialBytes = 0;
    this.controller.close();
  }
}
