// A tiny structured logger for the agent. stdout carries the ACP stream, so every line goes to
// stderr, as one JSON object per line (the daemon forwards agent stderr to its own log).
//
// The reader of stderr may go away at any time (the daemon killed with SIGKILL leaves a pipe with no
// reader behind). A log line must never be the reason the agent dies: the logger owns the error
// handler of its stream, and once the stream has failed or closed, lines are dropped.
import type { Writable } from 'node:stream';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  debug: (msg: string, fields?: Record<string, unknown>) => void;
  info: (msg: string, fields?: Record<string, unknown>) => void;
  warn: (msg: string, fields?: Record<string, unknown>) => void;
  error: (msg: string, fields?: Record<string, unknown>) => void;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function isLogLevel(value: string): value is LogLevel {
  return value in RANK;
}

export function createLogger(stream: Writable, minimum: LogLevel = 'info'): Logger {
  // Set once the stream reports an error (EPIPE, EBADF…); from then on nothing is written.
  let failed = false;
  stream.on('error', () => {
    failed = true;
  });
  const write = (level: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (RANK[level] < RANK[minimum]) return;
    if (failed || stream.destroyed || !stream.writable) return;
    let line: string;
    try {
      line = JSON.stringify({ ...fields, level, time: Date.now(), name: 'acpd-agent', pid: process.pid, msg });
    } catch {
      // A field that cannot be serialised (a cycle, a bigint) costs its line, not the caller.
      return;
    }
    try {
      stream.write(line + '\n');
    } catch {
      // Streams report failures through 'error', but a write must not throw into its caller either.
      failed = true;
    }
  };
  return {
    debug: (msg, fields) => {
      write('debug', msg, fields);
    },
    info: (msg, fields) => {
      write('info', msg, fields);
    },
    warn: (msg, fields) => {
      write('warn', msg, fields);
    },
    error: (msg, fields) => {
      write('error', msg, fields);
    },
  };
}
