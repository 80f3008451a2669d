// Command-line and environment options of the agent, read once at start-up by main.ts.
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { isLogLevel } from './logger.js';
import type { LogLevel } from './logger.js';

export interface CliOptions {
  dataDir: string;
  logLevel: LogLevel;
}

export const USAGE = `usage: node agent/main.js [--data-dir <dir>] [--log-level debug|info|warn|error]

Speaks ACP (newline-delimited JSON-RPC) on stdin/stdout; logs go to stderr.
  --data-dir   where sessions are stored (env ACPD_AGENT_DATA_DIR; default <cwd>/.acpd/sessions)
  --log-level  stderr verbosity (env ACPD_AGENT_LOG_LEVEL; default info)
`;

/** Reads the options; throws an Error with a readable message when they are wrong. */
export function parseOptions(argv: string[], env: NodeJS.ProcessEnv, cwd: string): CliOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      'data-dir': { type: 'string' },
      'log-level': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  const dataDir =
    nonEmpty(values['data-dir']) ?? nonEmpty(env.ACPD_AGENT_DATA_DIR) ?? resolve(cwd, '.acpd', 'sessions');
  const logLevel = nonEmpty(values['log-level']) ?? nonEmpty(env.ACPD_AGENT_LOG_LEVEL) ?? 'info';
  if (!isLogLevel(logLevel)) throw new Error(`invalid log level ${JSON.stringify(logLevel)}`);
  return { dataDir: resolve(cwd, dataDir), logLevel };
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}
