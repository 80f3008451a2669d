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

/** Our environment minus the token's variables, for the agent. */
export function childEnvironment(env: NodeJS.ProcessEnv): Record<string, string> {
  const copy: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) {
    if (value !== undefined && key !== 'ACPD_TOKEN' && key !== 'ACPD_TOKEN_FILE') copy[key] = value;
  }
  return copy;
}
