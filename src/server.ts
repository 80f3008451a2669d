#!/usr/bin/env node
// The acpd executable: read the configuration, build the app, listen, and
// drain on the way out. This is the only module that listens or installs
// process-wide handlers; everything it starts is built by buildApp, exactly
// as the tests build it.
//
// stdout belongs to the log: JSON lines (pretty ones at a terminal), so that
// a collector reading it never meets anything else. The few lines for people
// and tools are plain text on stderr: the "acpd listening on" line, which
// scripts and tests parse, the agent and token warnings, the drain notices.
// `--version` prints to stdout and exits before any log exists.
import closeWithGrace from 'close-with-grace';
import type { FastifyInstance } from 'fastify';
import { buildApp } from './app.js';
import { isClientCommand } from './cli/args.js';
import { formatListenUrl, loadConfig, parseCommandLine, usage, type Config } from './config.js';
import { logsArePretty, redactArgv } from './plugins/request-log.js';
import { scrubEnvironment } from './services/scrub-env.js';
import { hashToken, newToken } from './services/tokens.js';
import { VERSION } from './version.js';
import { leaveStartUpMode } from './start-up-mode.js';

// Headroom on top of the agents' SIGTERM→SIGKILL grace for the listener to
// drain; past it, the process kills what is left and exits 1.
const DRAIN_MARGIN_MS = 10_000;

function say(stream: NodeJS.WriteStream, line: string): void {
  stream.write(`${line}\n`);
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function exitWith(message: string): never {
  say(process.stderr, `acpd: ${message}`);
  process.exit(1);
}

function readConfig(): Config {
  const argv = process.argv.slice(2);
  try {
    const commandLine = parseCommandLine(argv);
    if (commandLine.help) {
      process.stdout.write(usage());
      process.exit(0);
    }
    if (commandLine.version) {
      say(process.stdout, `acpd ${VERSION}`);
      process.exit(0);
    }
    if (commandLine.values.ACPD_TOKEN?.trim()) {
      say(
        process.stderr,
        `acpd: warning: --token is readable by other local users in /proc/${process.pid}/cmdline and ps; ` +
          'use --token-file (ACPD_TOKEN_FILE) or ACPD_TOKEN instead.',
      );
    }
    return loadConfig({ argv, env: process.env, cwd: process.cwd() });
  } catch (err) {
    // A ConfigError's message is meant for the operator as is; anything else
    // is a bug and gets the same treatment rather than a stack trace.
    exitWith(messageOf(err));
  }
}

/** An argv as one string, single-quoting the words that need it. */
function quoteArgv(argv: readonly string[]): string {
  return argv.map((word) => (/[\s"'\\]/.test(word) ? `'${word.replaceAll("'", `'\\''`)}'` : word)).join(' ');
}

function authOf(config: Config): 'off' | 'bearer' {
  return config.token === undefined && config.tokensFile === undefined ? 'off' : 'bearer';
}

/**
 * `acpd hash-token [TOKEN]`: the `sha256:` line a tokens file stores for a
 * token. Without an argument (so the token stays out of ps and the shell's
 * history) the token is read from stdin; with a blank stdin a new random
 * token is made, printed on stderr, and its hash on stdout.
 */
async function hashTokenCommand(args: readonly string[]): Promise<number> {
  let token = args[0];
  if (token === undefined) {
    const chunks: Buffer[] = [];
    if (!process.stdin.isTTY) for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    token = Buffer.concat(chunks).toString('utf8').trim();
    if (token === '') {
      token = newToken();
      say(process.stderr, `token: ${token}`);
    }
  }
  say(process.stdout, hashToken(token.trim()));
  return 0;
}

/**
 * The start-up line, one for everything a person wants to know first:
 *   acpd listening on http://127.0.0.1:4170 (mode=http-bridge, auth=off, workspace="/srv/ws", agent=embedded)
 * `auth` is `off` or `bearer`; the workspace is a JSON string; the agent is
 * `embedded` or its command line as a JSON string, with the values of
 * sensitive-looking options redacted. Tools parse it: change it with them.
 */
function listeningLine(url: string, config: Config): string {
  const agent = config.agent === undefined ? 'embedded' : JSON.stringify(quoteArgv(redactArgv(config.agent)));
  return `acpd listening on ${url} (mode=http-bridge, auth=${authOf(config)}, workspace=${JSON.stringify(config.workspace)}, agent=${agent})`;
}

const QUIET_WHILE_BINDING = new Set(['trace', 'debug', 'info']);

/**
 * app.listen, without the "Server listening at <address>" line Fastify logs
 * for every address it binds (bare text, and no option turns it off: see
 * fastify/help#641, whose answer this is); the daemon announces itself once,
 * in its own words. The plugins are loaded first, so only the bind itself, a
 * few milliseconds before any request, runs with the logger held at warn.
 */
async function listenQuietly(app: FastifyInstance, config: Config): Promise<void> {
  await app.ready();
  const level = app.log.level;
  if (QUIET_WHILE_BINDING.has(level)) app.log.level = 'warn';
  try {
    await app.listen({ port: config.port, host: config.listenHost });
  } finally {
    app.log.level = level;
  }
}

// SIGKILL every agent without waiting: the last resort of a forced exit.
function killAgentsNow(app: FastifyInstance): void {
  // app.ts decorates killAllSync; checked anyway, as this must never throw.
  if (typeof app.killAllSync !== 'function') return;
  try {
    app.killAllSync();
  } catch (err) {
    app.log.error({ err }, 'killAllSync failed');
  }
}

/**
 * The token has been read: take it out of our environment, so that nothing
 * started later (the agent runs as the same user) finds it in
 * /proc/<pid>/environ. Where that cannot be done, say so once.
 */
function forgetTokenVariable(): void {
  const outcome = scrubEnvironment('ACPD_TOKEN', process.env);
  if (!outcome.scrubbed) {
    say(
      process.stderr,
      `acpd: warning: ACPD_TOKEN may stay readable in /proc/${process.pid}/environ (${outcome.reason}); ` +
        'prefer --token-file.',
    );
  }
}

async function main(): Promise<void> {
  // `acpd chat | attach | sessions`: the terminal client, a program of its own that shares the binary.
  const argv = process.argv.slice(2);
  if (argv[0] === 'hash-token') process.exit(await hashTokenCommand(argv.slice(1)));
  if (isClientCommand(argv[0])) {
    // The terminal client is not a daemon starting: it runs as V8 would run it.
    leaveStartUpMode();
    const { runClient } = await import('./cli/main.js');
    process.exit(await runClient(argv, process.env, process));
  }
  const config = readConfig();
  forgetTokenVariable();

  let app: FastifyInstance;
  try {
    app = await buildApp(config);
  } catch (err) {
    exitWith(`failed to start: ${messageOf(err)}`);
  }

  // First SIGINT/SIGTERM (or an uncaught error): drain through app.close(),
  // which ends the streams and reaps the agents, then exit 0 (1 after an
  // error). A second signal, a second error or the deadline: SIGKILL the
  // agents and exit 1 at once.
  const graceful = closeWithGrace(
    {
      delay: config.drainTimeoutMs + config.killGraceMs + DRAIN_MARGIN_MS,
      // With a tokens file, SIGHUP means "read it again" (below), not "stop".
      ...(config.tokensFile !== undefined ? { skip: ['SIGHUP' as const] } : {}),
      logger: app.log,
      onSecondSignal(signal) {
        say(process.stderr, `acpd: received ${signal} during drain, forcing exit`);
        killAgentsNow(app);
      },
      onSecondError(err) {
        app.log.error({ err }, 'second error during drain, forcing exit');
        killAgentsNow(app);
      },
      onTimeout(delay) {
        app.log.error({ delay }, 'drain deadline reached, forcing exit');
        killAgentsNow(app);
      },
    },
    async ({ signal, err }) => {
      if (err !== undefined) app.log.error({ err }, 'uncaught error, shutting down');
      if (signal !== undefined) say(process.stderr, `acpd: received ${signal}, draining...`);
      await app.close();
    },
  );
  // SIGHUP reads the tokens file again; open connections and streams are left as they are.
  if (config.tokensFile !== undefined) {
    process.on('SIGHUP', () => {
      const outcome = app.auth.reload();
      say(
        process.stderr,
        outcome.ok
          ? `acpd: tokens reloaded (${outcome.users} users)`
          : `acpd: tokens file not reloaded, the previous users stay: ${outcome.error}`,
      );
    });
  }
  // Last line of defence against orphans: whatever path ends the process,
  // no agent outlives it. After a clean close this finds nothing to kill.
  process.once('exit', () => killAgentsNow(app));

  try {
    await listenQuietly(app, config);
  } catch (err) {
    graceful.uninstall();
    say(process.stderr, `acpd: ${messageOf(err)}`);
    await app.close().catch((closeErr: unknown) => app.log.error({ err: closeErr }, 'close after failed listen'));
    process.exit(1);
  }

  leaveStartUpMode();
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.port;
  const url = formatListenUrl(config.hostname, port);
  say(process.stderr, listeningLine(url, config));
  // The same facts as fields, for whoever collects the JSON log; a pretty log
  // is read by the person who has just read the line above.
  if (!logsArePretty(process.stdout.isTTY === true)) {
    app.log.info(
      {
        url,
        auth: authOf(config),
        workspace: config.workspace,
        agent: config.agent === undefined ? 'embedded' : redactArgv(config.agent),
      },
      'listening',
    );
  }
  warnAboutAgent(app);
}

/**
 * One line when the agent command could not run at start-up (the lookup the
 * probes made while the app was built): sessions answer 503
 * agent_unavailable until it can.
 */
function warnAboutAgent(app: FastifyInstance): void {
  const agent = app.readiness.agentAtStart;
  if (agent.ok) return;
  say(
    process.stderr,
    `acpd: warning: the agent cannot run: ${agent.reason} (command: ${app.channels.commandLine}). ` +
      'Creating or restoring a session answers 503 until it can.',
  );
}

main().catch((err: unknown) => exitWith(messageOf(err)));
