// One prompt turn: runs a parsed command against a small I/O surface and tells how the turn stopped.
// Nothing here knows about JSON-RPC; agent.ts provides the I/O over the ACP connection.
import { isAbsolute, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type {
  PermissionOption,
  RequestPermissionOutcome,
  SessionUpdate,
  StopReason,
  ToolCallUpdate,
} from '@agentclientprotocol/sdk';
import { SHOUT_MODEL, YOLO_MODE } from './catalog.js';
import { helpText, splitIntoChunks } from './commands.js';
import type { Command } from './commands.js';

const READ_MAX_LINES = 200;
const READ_MAX_CHARS = 64 * 1024;
const FLOOD_BATCH = 256;

const PERMISSION_OPTIONS: readonly PermissionOption[] = [
  { optionId: 'allow', name: 'Allow', kind: 'allow_once' },
  { optionId: 'reject', name: 'Reject', kind: 'reject_once' },
];

export interface TurnIO {
  readonly cwd: string;
  readonly modelId: string;
  readonly modeId: string;
  /** The session's history before this turn. */
  readonly history: readonly SessionUpdate[];
  /** Aborted when the turn is cancelled (`session/cancel`, request cancellation, shutdown). */
  readonly signal: AbortSignal;
  /** Sends one `session/update` and records it in the history. */
  emit: (update: SessionUpdate) => Promise<void>;
  readTextFile: (path: string, limit: number) => Promise<string>;
  writeTextFile: (path: string, content: string) => Promise<void>;
  requestPermission: (toolCall: ToolCallUpdate, options: PermissionOption[]) => Promise<RequestPermissionOutcome>;
  nextToolCallId: () => string;
}

/** Counts the turns in a history: each run of consecutive user message chunks starts one. */
export function countTurns(history: readonly SessionUpdate[]): number {
  let turns = 0;
  let previous: string | undefined;
  for (const update of history) {
    if (update.sessionUpdate === 'user_message_chunk' && previous !== 'user_message_chunk') turns++;
    previous = update.sessionUpdate;
  }
  return turns;
}

/** The text of each turn's user message, oldest first. */
function userPrompts(history: readonly SessionUpdate[]): string[] {
  const prompts: string[] = [];
  let previous: string | undefined;
  for (const update of history) {
    if (update.sessionUpdate === 'user_message_chunk') {
      const text = update.content.type === 'text' ? update.content.text : `[${update.content.type}]`;
      if (previous === 'user_message_chunk' && prompts.length > 0) {
        prompts[prompts.length - 1] += `\n${text}`;
      } else {
        prompts.push(text);
      }
    }
    previous = update.sessionUpdate;
  }
  return prompts;
}

export async function runCommand(command: Command, io: TurnIO): Promise<StopReason> {
  if (io.signal.aborted) return 'cancelled';
  switch (command.kind) {
    case 'say':
      return say(io, echo(command.text, io.modelId));
    case 'help':
      return say(io, helpText());
    case 'invalid':
      return say(io, command.message);
    case 'history':
      return say(io, describeHistory(io.history));
    case 'read':
      return read(io, command.path);
    case 'write':
      return write(io, command.path, command.content);
    case 'slow':
      return slow(io, command.count, command.intervalMs);
    case 'flood':
      return flood(io, command.count);
  }
}

function echo(text: string, modelId: string): string {
  const reply = text === '' ? 'echo: (nothing to echo; type /help for the commands)' : `echo: ${text}`;
  return modelId === SHOUT_MODEL ? reply.toUpperCase() : reply;
}

function describeHistory(history: readonly SessionUpdate[]): string {
  const prompts = userPrompts(history);
  const turns = prompts.length;
  const lines = [`This session has ${turns} earlier turn${turns === 1 ? '' : 's'} stored.`];
  if (turns > 0) {
    const first = Math.max(0, turns - 5);
    lines.push('Most recent prompts:');
    for (let i = first; i < turns; i++) {
      lines.push(`  ${i + 1}. ${oneLine(prompts[i] ?? '')}`);
    }
  }
  return lines.join('\n') + '\n';
}

function oneLine(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > 80 ? `${flat.slice(0, 79)}…` : flat;
}

function textChunk(text: string): SessionUpdate {
  return { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text } };
}

/** Streams `text` as several agent message chunks; stops early when the turn is cancelled. */
async function say(io: TurnIO, text: string): Promise<StopReason> {
  for (const piece of splitIntoChunks(text)) {
    if (io.signal.aborted) return 'cancelled';
    await io.emit(textChunk(piece));
  }
  return io.signal.aborted ? 'cancelled' : 'end_turn';
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function absolutePath(io: TurnIO, path: string): string {
  return isAbsolute(path) ? path : resolve(io.cwd, path);
}

async function read(io: TurnIO, path: string): Promise<StopReason> {
  const target = absolutePath(io, path);
  const toolCallId = io.nextToolCallId();
  await io.emit({
    sessionUpdate: 'tool_call',
    toolCallId,
    title: `Read ${path}`,
    kind: 'read',
    status: 'in_progress',
    locations: [{ path: target }],
    rawInput: { path: target },
  });

  let content: string;
  try {
    content = await io.readTextFile(target, READ_MAX_LINES + 1);
  } catch (error) {
    await io.emit({
      sessionUpdate: 'tool_call_update',
      toolCallId,
      status: 'failed',
      rawOutput: { error: errorMessage(error) },
    });
    if (io.signal.aborted) return 'cancelled';
    return say(io, `Could not read ${path}: ${errorMessage(error)}\n`);
  }

  // Clients may ignore `limit`, so the cut is made here as well.
  const lines = content.split('\n');
  let shown = lines.length > READ_MAX_LINES ? lines.slice(0, READ_MAX_LINES).join('\n') + '\n' : content;
  let truncated = shown.length < content.length;
  if (shown.length > READ_MAX_CHARS) {
    shown = shown.slice(0, READ_MAX_CHARS);
    truncated = true;
  }
  await io.emit({
    sessionUpdate: 'tool_call_update',
    toolCallId,
    status: 'completed',
    rawOutput: { chars: shown.length, truncated },
  });
  if (content === '') return say(io, `${path} is empty.\n`);
  const stop = await say(io, shown);
  if (stop !== 'end_turn' || !truncated) return stop;
  return say(
    io,
    `${shown.endsWith('\n') ? '' : '\n'}[… ${path} was truncated to ${READ_MAX_LINES} lines / ${READ_MAX_CHARS} characters]\n`,
  );
}

async function write(io: TurnIO, path: string, content: string): Promise<StopReason> {
  const target = absolutePath(io, path);
  const toolCallId = io.nextToolCallId();
  const toolCall = {
    toolCallId,
    title: `Write ${path}`,
    kind: 'edit',
    status: 'pending',
    locations: [{ path: target }],
    content: [{ type: 'diff', path: target, newText: content }],
    rawInput: { path: target, content },
  } satisfies ToolCallUpdate;
  await io.emit({ sessionUpdate: 'tool_call', ...toolCall });

  const fail = async (reason: string, stop: StopReason): Promise<StopReason> => {
    await io.emit({ sessionUpdate: 'tool_call_update', toolCallId, status: 'failed', rawOutput: { error: reason } });
    if (stop !== 'cancelled') return say(io, `${reason}\n`);
    // Sent even though the turn is being cancelled, so the transcript says why nothing was written
    // whichever of the cancelled outcome and session/cancel came first.
    await io.emit(textChunk(`${reason}\n`));
    return 'cancelled';
  };

  if (io.modeId !== YOLO_MODE) {
    let outcome: RequestPermissionOutcome;
    try {
      outcome = await io.requestPermission(toolCall, [...PERMISSION_OPTIONS]);
    } catch (error) {
      if (io.signal.aborted) return fail(`Write to ${path} cancelled.`, 'cancelled');
      return fail(`Could not ask permission to write ${path}: ${errorMessage(error)}`, 'end_turn');
    }
    // A `cancelled` outcome means the client cancelled the turn (ACP requires it to answer pending
    // permission requests that way when it sends session/cancel).
    if (outcome.outcome === 'cancelled' || io.signal.aborted) return fail(`Write to ${path} cancelled.`, 'cancelled');
    if (outcome.optionId !== 'allow') return fail(`Permission denied: ${path} was not written.`, 'end_turn');
  }

  try {
    await io.writeTextFile(target, content);
  } catch (error) {
    if (io.signal.aborted) return fail(`Write to ${path} cancelled.`, 'cancelled');
    return fail(`Could not write ${path}: ${errorMessage(error)}`, 'end_turn');
  }
  const bytes = Buffer.byteLength(content, 'utf8');
  await io.emit({ sessionUpdate: 'tool_call_update', toolCallId, status: 'completed', rawOutput: { bytes } });
  return say(io, `wrote ${bytes} bytes to ${path}\n`);
}

async function slow(io: TurnIO, count: number, intervalMs: number): Promise<StopReason> {
  for (let i = 1; i <= count; i++) {
    if (io.signal.aborted) return 'cancelled';
    await io.emit(textChunk(`slow ${i}/${count}\n`));
    if (i === count) break;
    try {
      await delay(intervalMs, undefined, { signal: io.signal });
    } catch {
      return 'cancelled';
    }
  }
  return io.signal.aborted ? 'cancelled' : 'end_turn';
}

async function flood(io: TurnIO, count: number): Promise<StopReason> {
  // Notifications are queued a batch at a time without waiting for each write; waiting once per
  // batch keeps stdout back-pressure in effect and lets a cancel stop the flood between batches.
  for (let start = 1; start <= count; start += FLOOD_BATCH) {
    if (io.signal.aborted) return 'cancelled';
    const end = Math.min(count, start + FLOOD_BATCH - 1);
    const sends: Array<Promise<void>> = [];
    for (let i = start; i <= end; i++) sends.push(io.emit(textChunk(`flood ${i}/${count}\n`)));
    await Promise.all(sends);
  }
  return io.signal.aborted ? 'cancelled' : 'end_turn';
}
