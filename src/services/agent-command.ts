/**
 * The agent command: the argv every agent process is spawned with (built
 * here only, for the channel supervisor and the readiness probe alike), and
 * whether it can be started: argv[0] must name an executable regular file,
 * either as a path (relative ones against the agent's cwd) or as a bare name
 * found on the agent's PATH — the same lookup spawn() does.
 */
import { constants } from 'node:fs';
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

interface CommandLookup {
  /** The agent's working directory. */
  cwd: string;
  /** The PATH the agent is spawned with. */
  pathVariable: string | undefined;
}

async function isExecutableFile(file: string): Promise<boolean> {
  try {
    if (!(await stat(file)).isFile()) return false;
    await access(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The file that `command` resolves to, or undefined when there is none. */
export async function resolveCommand(command: string, lookup: CommandLookup): Promise<string | undefined> {
  if (command === '') return undefined;
  if (command.includes('/')) {
    const file = path.resolve(lookup.cwd, command);
    return (await isExecutableFile(file)) ? file : undefined;
  }
  // Without PATH, libuv searches the system default.
  for (const dir of (lookup.pathVariable ?? '/usr/bin:/bin').split(path.delimiter)) {
    // An empty PATH entry means the current directory, as in a shell.
    const file = path.resolve(lookup.cwd, dir, command);
    if (await isExecutableFile(file)) return file;
  }
  return undefined;
}
