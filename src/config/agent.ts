// What the agent child is started with: its argv from --agent, and the
// environment it inherits.
import { ConfigError, messageOf } from './config-error.js';
import { splitCommand } from './split-command.js';

/** The --agent command as argv; a command that cannot be split, or splits to nothing, is a ConfigError. */
export function agentArgv(command: string, fromFlag: boolean): string[] {
  const label = fromFlag ? '--agent' : 'ACPD_AGENT';
  let argv: string[];
  try {
    argv = splitCommand(command);
  } catch (err) {
    throw new ConfigError(`Invalid ${label} "${command}": ${messageOf(err)}.`);
  }
  if (argv.length === 0 || argv[0] === '') {
    throw new ConfigError(`Invalid ${label} "${command}": the command is empty.`);
  }
  return argv;
}

/** Variables that hold or point at a secret of the daemon's: the agent has no business with them. */
const SECRET_VARIABLES: ReadonlySet<string> = new Set([
  'ACPD_TOKEN',
  'ACPD_TOKEN_FILE',
  'ACPD_WEBHOOK_SECRET',
  'ACPD_WEBHOOK_SECRET_FILE',
]);

/** Our environment minus the secrets' variables, for the agent. */
export function childEnvironment(env: NodeJS.ProcessEnv): Record<string, string> {
  const copy: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) {
    if (value !== undefined && !SECRET_VARIABLES.has(key)) copy[key] = value;
  }
  return copy;
}
