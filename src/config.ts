// The daemon's settings: one TypeBox schema, read once at start-up.
//
// Every setting has an environment variable (`ACPD_PORT`, …) and a flag twin
// derived from its name (`--port`, …); a flag wins over its variable. This is
// the only part of acpd that looks at the environment: the rest of the
// program receives the resolved `Config`. The work is done in src/config/:
//
//   schema.ts         the settings, their types, ranges, defaults and --help descriptions
//   names.ts          a setting's flag and Config field, from its variable's name
//   shape.ts          the Config type derived from the schema, and the copy of plain settings
//   load.ts           loadConfig: flags over variables, validation in boot order, Config
//   validate.ts       the schema's checks and defaults, failures worded per setting
//   command-line.ts   the flags and the --help text
//   split-command.ts  --agent's command into argv
//   network.ts        bind address checks, the listen URL, --trust-proxy
//   token.ts          the token, from its value or its file
//   workspace.ts      the workspace's checks and canonical path
//   agent.ts          the agent's argv and environment
//   config-error.ts   ConfigError
export { ConfigError } from './config/config-error.js';
export { parseCommandLine, usage, type CommandLine } from './config/command-line.js';
export { loadConfig } from './config/load.js';
export { fieldFor, flagFor, type FieldOf } from './config/names.js';
export { formatListenUrl, isLoopbackHost } from './config/network.js';
export { ConfigSchema, type SettingName } from './config/schema.js';
export type { Config } from './config/shape.js';
export { splitCommand } from './config/split-command.js';
