/**
 * A small Server-Sent Events reader over a fetch body (EventSource cannot
 * send `Authorization` or `Last-Event-ID` of our choosing). It follows the
 * WHATWG parsing rules that matter here: lines end with LF, CRLF or CR;
 * `data:` lines join with LF; one space after the colon is dropped; comment
 * lines (`: heartbeat`) and unknown fields are ignored; a blank line ends a
 * message, and a message with no `data` is not one.
 */

export interface SseMessage {
  /** The `id:` field of this message, when it had one. */
  id?: string;
  event: string;
  data: string;
}

export class SseParser {
  #buffer = '';
  #data: string[] = [];
  #event = '';
  #id: string | undefined;
  /** A CR ended the last chunk: an LF at the start of the next belongs to it. */
  #pendingCr = false;

  /** The messages that `chunk` completes, in order. */
  push(chunk: string): SseMessage[] {
    let text = chunk;
    if (this.#pendingCr && text.startsWith('\n')) text = text.slice(1);
    this.#pendingCr = false;
    this.#buffer += text;
    const messages: SseMessage[] = [];
    for (;;) {
      const end = this.#buffer.search(/[\r\n]/);
      if (end === -1) break;
      const line = this.#buffer.slice(0, end);
      let next = end + 1;
      if (this.#buffer[end] === '\r') {
        if (end + 1 === this.#buffer.length) this.#pendingCr = true;
        else if (this.#buffer[end + 1] === '\n') next = end + 2;
      }
      this.#buffer = this.#buffer.slice(next);
      const message = this.#line(line);
      if (message) messages.push(message);
    }
    return messages;
  }

  #line(line: string): SseMessage | undefined {
    if (line === '') return this.#dispatch();
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.#data.push(value);
    else if (field === 'event') this.#event = value;
    else if (field === 'id' && !value.includes('\0')) this.#id = value;
    return undefined;
  }

  #dispatch(): SseMessage | undefined {
    const message =
      this.#data.length === 0
        ? undefined
        : {
            event: this.#event || 'message',
            data: this.#data.join('\n'),
            ...(this.#id !== undefined ? { id: this.#id } : {}),
          };
    this.#data = [];
    this.#event = '';
    this.#id = undefined;
    return message;
  }
}

/** The messages of an SSE body as they arrive; ends with the body. Reading stops when the caller stops. */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
  } finally {
    // Cancelling ends the connection when the caller stops early; after the end it does nothing.
    await reader.cancel().catch(() => {});
  }
}
