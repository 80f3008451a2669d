// The client subcommands' flags: `acpd chat | attach <id> | sessions`. The daemon's own flags are
// parsed elsewhere (config/command-line.ts); server.ts hands argv here when its first word is one of
// these commands, so `acpd --port …` is untouched.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

export const CLIENT_COMMANDS = ['chat', 'attach', 'sessions'] as const;
export type ClientCommand = (typeof CLIENT_COMMANDS)[number];

/** How permission requests are answered: by the person (`ask`), or always the same way. */
export type ApprovePolicy = 'allow' | 'reject' | 'ask';

export interface ClientArgs {
  command: ClientCommand;
  help: boolean;
  url: string;
  token: string | undefined;
  /** `attach <id>`: the session to follow. */
  sessionId: string | undefined;
  load: string | undefined;
  resume: string | undefined;
  cwd: string | undefined;
  /** Absent: `ask` at a terminal, `reject` without one (decided once the streams are known). */
  approve: ApprovePolicy | undefined;
  json: boolean;
}

export const DEFAULT_URL = 'http://127.0.0.1:4170';

/** A mistake on the command line: the message is for the user, the exit code is 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export function isClientCommand(word: string | undefined): word is ClientCommand {
  return (CLIENT_COMMANDS as readonly string[]).includes(word ?? '');
}

/**
 * Reads `argv` (starting with the command word). Each option has an environment twin, the flag wins:
 * --url (ACPD_URL), --token (ACPD_TOKEN, the variable the daemon reads its own token from, so one
 * export serves both on one machine) and --token-file (ACPD_TOKEN_FILE).
 */
export function parseClientArgs(argv: readonly string[], env: NodeJS.ProcessEnv): ClientArgs {
  const [command, ...rest] = argv;
  if (!isClientCommand(command)) throw new UsageError(`Unknown command "${command ?? ''}".`);
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: true,
      strict: true,
      options: {
        help: { type: 'boolean', short: 'h' },
        url: { type: 'string' },
        token: { type: 'string' },
        'token-file': { type: 'string' },
        load: { type: 'string' },
        resume: { type: 'string' },
        cwd: { type: 'string' },
        approve: { type: 'string' },
        json: { type: 'boolean' },
      },
    });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  const { values, positionals } = parsed;
  const help = values.help === true;
  const wantsId = command === 'attach';
  if (!help && wantsId && positionals.length !== 1)
    throw new UsageError('attach takes one session id: acpd attach <id>');
  if (!wantsId && positionals.length > 0) throw new UsageError(`Unexpected argument "${positionals[0]}".`);
  if (values.load !== undefined && values.resume !== undefined)
    throw new UsageError('Give --load or --resume, not both.');
  if ((values.load !== undefined || values.resume !== undefined) && command !== 'chat') {
    throw new UsageError('--load and --resume are options of chat.');
  }
  const approve = values.approve;
  if (approve !== undefined && approve !== 'allow' && approve !== 'reject' && approve !== 'ask') {
    throw new UsageError(`--approve must be allow, reject or ask (got "${approve}").`);
  }
  const url = values.url ?? env.ACPD_URL ?? DEFAULT_URL;
  try {
    new URL(url);
  } catch {
    throw new UsageError(`--url "${url}" is not a URL.`);
  }
  return {
    command,
    help,
    url,
    token: readToken(values.token ?? env.ACPD_TOKEN, values['token-file'] ?? env.ACPD_TOKEN_FILE),
    sessionId: positionals[0],
    load: values.load,
    resume: values.resume,
    cwd: values.cwd,
    approve,
    json: values.json === true,
  };
}

function readToken(token: string | undefined, file: string | undefined): string | undefined {
  if (token?.trim()) return token.trim();
  if (file === undefined) return undefined;
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch (err) {
    throw new UsageError(`Cannot read the token file "${file}": ${err instanceof Error ? err.message : String(err)}`);
  }
}

export function clientUsage(): string {
  return [
    'Usage: acpd chat [--load <id> | --resume <id>] [--cwd <dir>] [options]',
    '       acpd attach <id> [options]',
    '       acpd sessions [--json] [options]',
    '',
    'A terminal client of a running acpd daemon.',
    '  chat            start a session (or restore one) and talk to its agent',
    '  attach <id>     follow a live session: its history, then what happens in it; you can prompt too',
    "  sessions        list the live and remembered sessions of the daemon's workspace",
    '',
    'Options (environment twin in brackets; the flag wins):',
    `  --url <url>         the daemon [ACPD_URL]; default ${DEFAULT_URL}`,
    '  --token <token>     its bearer token [ACPD_TOKEN]',
    '  --token-file <file> read the token from a file [ACPD_TOKEN_FILE]',
    '  --load <id>         chat: restore a stored session, replaying its history',
    '  --resume <id>       chat: restore a stored session without replaying it',
    '  --cwd <dir>         the working directory of a new or restored session',
    '  --approve <how>     permission requests: ask (default at a terminal), allow, or reject',
    '                      (default without a terminal: scripts never grant anything unasked)',
    '  --json              sessions: print the list as JSON',
    '',
    'At a terminal: Enter sends a prompt; Ctrl-C cancels the running turn, a second Ctrl-C quits;',
    'Ctrl-C or Ctrl-D at an empty prompt quits. Without one (stdin or stdout not a terminal): one prompt',
    'per line of stdin, plain output lines, exit at the end of input.',
    '',
    'Exit codes: 0 done; 1 a turn failed, the session died, or the daemon could not be reached;',
    '2 bad usage; 130 interrupted.',
    '',
  ].join('\n');
}
