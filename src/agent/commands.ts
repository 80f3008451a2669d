// The command grammar of the embedded agent. Parsing is pure and deterministic: the same prompt text
// always gives the same command. docs/agent.md describes the grammar for users.
import type { AvailableCommand } from '@agentclientprotocol/sdk';

const SLOW_MAX_COUNT = 10_000;
const SLOW_MAX_INTERVAL_MS = 60_000;
const SLOW_DEFAULT_INTERVAL_MS = 100;
const FLOOD_MAX_COUNT = 1_000_000;

export type Command =
  | { kind: 'say'; text: string }
  | { kind: 'help' }
  | { kind: 'history' }
  | { kind: 'read'; path: string }
  | { kind: 'write'; path: string; content: string }
  | { kind: 'slow'; count: number; intervalMs: number }
  | { kind: 'flood'; count: number }
  | { kind: 'invalid'; message: string };

interface CommandSpec {
  name: string;
  hint: string;
  description: string;
}

const SPECS: readonly CommandSpec[] = [
  { name: 'help', hint: '', description: 'List the commands.' },
  { name: 'read', hint: '<path>', description: 'Read a file of the workspace through the client and show it.' },
  {
    name: 'write',
    hint: '<path> <text…>',
    description: 'Write text to a file, after asking permission (unless in yolo mode).',
  },
  {
    name: 'slow',
    hint: '<n> [ms]',
    description: `Stream n chunks, ms apart (default ${SLOW_DEFAULT_INTERVAL_MS}); cancellable.`,
  },
  { name: 'flood', hint: '<n>', description: 'Stream n chunks as fast as possible.' },
  { name: 'history', hint: '', description: 'Tell how many turns this session has stored.' },
];

/** The commands as ACP `available_commands_update` entries (names carry no slash). */
export function availableCommands(): AvailableCommand[] {
  return SPECS.map((spec) =>
    spec.hint === ''
      ? { name: spec.name, description: spec.description }
      : { name: spec.name, description: spec.description, input: { hint: spec.hint } },
  );
}

export function helpText(): string {
  const lines = SPECS.map((spec) => `/${spec.name}${spec.hint === '' ? '' : ' ' + spec.hint} — ${spec.description}`);
  return [
    'acpd-agent commands:',
    ...lines,
    'Anything else is answered with "echo: <text>" (upper-cased by the acpd-shout model).',
    '',
  ].join('\n');
}

// A path is one whitespace-free word, or a double-quoted string without quotes inside.
const PATH_ARGUMENT = /^(?:"([^"]+)"|(\S+))/;

function takePath(rest: string): { path: string; rest: string } | undefined {
  const match = PATH_ARGUMENT.exec(rest);
  if (match === null) return undefined;
  const path = match[1] ?? match[2] ?? '';
  return { path, rest: rest.slice(match[0].length) };
}

function parseCount(word: string | undefined, min: number, max: number): number | undefined {
  if (word === undefined || !/^\d+$/.test(word)) return undefined;
  const value = Number(word);
  return value >= min && value <= max ? value : undefined;
}

export function parseCommand(input: string): Command {
  const text = input.trim();
  const head = /^\/([A-Za-z][\w-]*)(?:\s+|$)/.exec(text);
  if (head === null) return { kind: 'say', text };

  const name = (head[1] ?? '').toLowerCase();
  const rest = text.slice(head[0].length);
  const words = rest.split(/\s+/).filter((word) => word !== '');

  switch (name) {
    case 'help':
      return { kind: 'help' };
    case 'history':
      return { kind: 'history' };
    case 'read': {
      const taken = takePath(rest);
      if (taken === undefined || taken.rest.trim() !== '') return usage('read');
      return { kind: 'read', path: taken.path };
    }
    case 'write': {
      const taken = takePath(rest);
      if (taken === undefined || !/^\s/.test(taken.rest)) return usage('write');
      // Exactly one separator is dropped; the rest (newlines included) is the file content.
      return { kind: 'write', path: taken.path, content: taken.rest.slice(1) };
    }
    case 'slow': {
      const count = parseCount(words[0], 1, SLOW_MAX_COUNT);
      const intervalMs =
        words[1] === undefined ? SLOW_DEFAULT_INTERVAL_MS : parseCount(words[1], 0, SLOW_MAX_INTERVAL_MS);
      if (count === undefined || intervalMs === undefined || words.length > 2) return usage('slow');
      return { kind: 'slow', count, intervalMs };
    }
    case 'flood': {
      const count = parseCount(words[0], 1, FLOOD_MAX_COUNT);
      if (count === undefined || words.length > 1) return usage('flood');
      return { kind: 'flood', count };
    }
    default:
      return { kind: 'invalid', message: `Unknown command /${name}. Type /help for the list.\n` };
  }
}

function usage(name: string): Command {
  const spec = SPECS.find((candidate) => candidate.name === name);
  const hint = spec === undefined ? '' : ` ${spec.hint}`;
  let limits = '';
  if (name === 'slow') limits = ` (1 ≤ n ≤ ${SLOW_MAX_COUNT}, 0 ≤ ms ≤ ${SLOW_MAX_INTERVAL_MS})`;
  if (name === 'flood') limits = ` (1 ≤ n ≤ ${FLOOD_MAX_COUNT})`;
  return { kind: 'invalid', message: `Usage: /${name}${hint}${limits}\n` };
}

/**
 * Splits a reply into pieces that concatenate back to exactly `text`: one piece per word (with the
 * whitespace after it), or, when there are more than `maxPieces` words, that many even groups of words.
 */
export function splitIntoChunks(text: string, maxPieces = 16): string[] {
  const words = text.match(/\s*\S+\s*/g) ?? (text === '' ? [] : [text]);
  if (words.length <= maxPieces) return words;
  const pieces: string[] = [];
  const size = Math.ceil(words.length / maxPieces);
  for (let i = 0; i < words.length; i += size) {
    pieces.push(words.slice(i, i + size).join(''));
  }
  return pieces;
}
