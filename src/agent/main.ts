#!/usr/bin/env node
// Entry point of the embedded ACP agent: wires stdin/stdout to the ACP connection, and stops cleanly
// on end of input, a broken stdin or stdout, SIGTERM or SIGINT (in-flight turns are cancelled and
// persisted before exit).
import { Readable, Writable } from 'node:stream';
import { ndJsonStream } from '@agentclientprotocol/sdk';
import { AcpdAgent } from './agent.js';
import { createLogger } from './logger.js';
import { USAGE, parseOptions } from './options.js';
import type { CliOptions } from './options.js';
import { SessionStore } from './store.js';

const STOP_DEADLINE_MS = 2000;

function main(): void {
  let options: CliOptions;
  try {
    options = parseOptions(process.argv.slice(2), process.env, process.cwd());
  } catch (error) {
    process.stderr.write(`acpd-agent: ${error instanceof Error ? error.message : String(error)}\n${USAGE}`);
    process.exit(2);
  }

  const log = createLogger(process.stderr, options.logLevel);
  const store = new SessionStore(options.dataDir);
  const acpd = new AcpdAgent({ store, log });
  const stream = ndJsonStream(Writable.toWeb(process.stdout), Readable.toWeb(process.stdin));
  const connection = acpd.app().connect(stream);
  log.info('agent started', { dataDir: options.dataDir, cwd: process.cwd() });

  // Stopping: running turns are cancelled and may still answer `cancelled` over the open connection,
  // then the connection closes and the sessions are saved. Deadlines keep a peer that stopped reading
  // stdout from holding the process forever; a turn still stuck after them is saved as it stands.
  // The store is closed last, so the exit never cuts a write between its temporary file and its rename.
  let stopped: Promise<void> | undefined;
  const stop = async (reason: string): Promise<void> => {
    log.info('agent stopping', { reason });
    acpd.cancelAll();
    await withDeadline(acpd.drain(), STOP_DEADLINE_MS);
    connection.close();
    await withDeadline(acpd.drain(), STOP_DEADLINE_MS);
    await acpd.saveUnfinished();
    await store.close();
  };
  const stopAndExit = (reason: string): void => {
    stopped ??= stop(reason).then(
      () => {
        process.exit(0);
      },
      (error: unknown) => {
        log.error('could not stop cleanly', { error: String(error) });
        process.exit(1);
      },
    );
  };

  // Every stream the agent uses has an error handler; none of them is left to crash the process.
  // stderr belongs to the logger, which drops lines once it fails. Losing stdin or stdout means the
  // peer is gone: the same orderly stop as a signal. The end of stdin reaches us as the connection
  // closing, once the SDK has read everything that came before it.
  process.stdin.on('error', (error: Error) => {
    stopAndExit(`stdin: ${error.message}`);
  });
  process.stdout.on('error', (error: Error) => {
    stopAndExit(`stdout: ${error.message}`);
  });
  void connection.closed.then(() => {
    stopAndExit('connection closed');
  });
  process.once('SIGTERM', () => {
    stopAndExit('SIGTERM');
  });
  process.once('SIGINT', () => {
    stopAndExit('SIGINT');
  });
}

/** Waits for `promise`, but no longer than `ms`. */
async function withDeadline(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  try {
    await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

main();
