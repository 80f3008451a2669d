/**
 * The agent command: the argv every agent process is spawned with (built
 * here only, for the channel supervisor and the readiness probe alike), and
 * whether it can be started: argv[0] must name an executable regular file,
 * either as a path (relative ones against the agent's cwd) or as a bare name
 * found on the agent's PATH — the same lookup spawn() does. When it cannot,
 * the check says why, in words an operator can act on.
 */
import { constants, type Stats } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface AgentSetting {
  /** The configured argv (--agent), or undefined for the embedded agent. */
  agent: readonly string[] | undefined;
  /** Where the embedded agent keeps its sessions, under `sessions/`. */
  dataDir: string;
}

/** The argv of the agent: the configured one, else the embedded agent shipped with acpd, run with this Node. */
export function agentSpawnArgv(setting: AgentSetting): string[] {
  if (setting.agent !== undefined) return [...setting.agent];
  const entry = fileURLToPath(new URL('../agent/main.js', import.meta.url));
  return [process.execPath, entry, '--data-dir', path.join(setting.dataDir, 'sessions')];
}

/** The argv as one line for people to read: words that a shell would not take as they are are quoted. */
export function commandLine(argv: readonly string[]): string {
  return argv.map((word) => (/^[\w@%+=:,./-]+$/.test(word) ? word : JSON.stringify(word))).join(' ');
}

interface CommandLookup {
  /** The agent's working directory. */
  cwd: string;
  /** The PATH the agent is spawned with. */
  pathVariable: string | undefined;
}

/** What looking the command up found: the file spawn() would run, or why there is none. */
export type CommandCheck =
  | { ok: true; file: string }
  | {
      ok: false;
      /** The errno spawn() fails with for this: ENOENT (nothing there) or EACCES (something, not runnable). */
      errno: 'ENOENT' | 'EACCES';
      /** Why, naming the file and ending with the errno: `"agent" is not on PATH (ENOENT)`, … */
      reason: string;
    };

/** Why `file` cannot be run, or undefined when it can. */
async function problemWith(file: string): Promise<Exclude<CommandCheck, { ok: true }> | undefined> {
  let info: Stats;
  try {
    info = await stat(file);
  } catch {
    return { ok: false, errno: 'ENOENT', reason: `${file} does not exist (ENOENT)` };
  }
  if (!info.isFile()) {
    const kind = info.isDirectory() ? 'a directory' : 'not a regular file';
    return { ok: false, errno: 'EACCES', reason: `${file} is ${kind} (EACCES)` };
  }
  try {
    await access(file, constants.X_OK);
  } catch {
    return { ok: false, errno: 'EACCES', reason: `${file} is not executable (EACCES)` };
  }
  return undefined;
}

/** Looks `command` up as spawn() would, and says why it cannot run when it cannot. */
export async function checkCommand(command: string, lookup: CommandLookup): Promise<CommandCheck> {
  if (command === '') return { ok: false, errno: 'ENOENT', reason: 'the agent command is empty (ENOENT)' };
  if (command.includes('/')) {
    const file = path.resolve(lookup.cwd, command);
    return (await problemWith(file)) ?? { ok: true, file };
  }
  let unusable: Exclude<CommandCheck, { ok: true }> | undefined;
  // Without PATH, libuv searches the system default.
  for (const dir of (lookup.pathVariable ?? '/usr/bin:/bin').split(path.delimiter)) {
    // An empty PATH entry means the current directory, as in a shell.
    const file = path.resolve(lookup.cwd, dir, command);
    const problem = await problemWith(file);
    if (problem === undefined) return { ok: true, file };
    // A file of that name that cannot run is worth naming, rather than "not found".
    if (problem.errno === 'EACCES') unusable ??= problem;
  }
  return unusable ?? { ok: false, errno: 'ENOENT', reason: `${JSON.stringify(command)} is not on PATH (ENOENT)` };
}
