/**
 * The app under test, built through the same buildApp(config) and config loader as production: for
 * `app.inject`, or listening on 127.0.0.1, with the steerable agent when a test needs to hold it.
 * Everything a helper starts is cleaned up through the test's teardown.
 */
import { mkdtempSync, realpathSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApp, type BuildOptions } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { Steer } from '../fixtures/steer.js';
import { watchAnswers, type Verdict } from './openapi.js';

/** What a tap test object offers that the helpers use. */
export interface Teardown {
  teardown(fn: () => unknown): void;
}

/** A fresh directory (its real path), removed at teardown. */
export function tempDir(t: Teardown, prefix = 'acpd-test-'): string {
  const dir = realpathSync(mkdtempSync(path.join(os.tmpdir(), prefix)));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface TestOptions {
  /** Agent argv; the embedded agent when absent. */
  agent?: string[];
  workspace?: string;
  dataDir?: string;
  /** Extra CLI flags, parsed by the real config loader. */
  args?: string[];
  env?: NodeJS.ProcessEnv;
  config?: Partial<Config>;
  /** Where the app writes its log lines (JSON). testConfig passes `--log-level silent`: raise it in `args`. */
  logStream?: BuildOptions['logStream'];
  /** The clock idempotency receipts expire by (BuildOptions.now). */
  now?: BuildOptions['now'];
  /** The idempotency receipts' store (BuildOptions.receipts). */
  receipts?: BuildOptions['receipts'];
  /**
   * Check every answer against the API document (support/openapi.ts); a mismatch fails the test at
   * teardown. On for every app when the run sets ACPD_TEST_CHECK_ANSWERS=1.
   */
  checkAnswers?: boolean;
}

function checksAnswers(opts: TestOptions): boolean {
  return opts.checkAnswers ?? process.env.ACPD_TEST_CHECK_ANSWERS === '1';
}

export function testConfig(t: Teardown, opts: TestOptions = {}): Config {
  const workspace = opts.workspace ?? tempDir(t, 'acpd-ws-');
  const dataDir = opts.dataDir ?? path.join(workspace, '.acpd');
  const config = loadConfig({
    // Load shedding is off unless a test turns it on: a busy CI machine must not turn answers into 503s.
    argv: [
      '--port',
      '0',
      '--workspace',
      workspace,
      '--data-dir',
      dataDir,
      '--log-level',
      'silent',
      '--max-event-loop-delay-ms',
      '0',
      // app.close() in a test cancels running prompts at once unless a test asks for a drain.
      '--drain-timeout-ms',
      '0',
      // No sessions created behind a test's back (the steer agent counts session/new calls).
      '--warm-sessions',
      '0',
      ...(opts.args ?? []),
    ],
    env: opts.env ?? { PATH: process.env.PATH ?? '' },
    cwd: workspace,
  });
  return { ...config, ...(opts.agent ? { agent: opts.agent } : {}), ...opts.config };
}

/** The app, built but not listening: for `app.inject`. */
export async function buildTestApp(t: Teardown, opts: TestOptions = {}): Promise<FastifyInstance> {
  const app = await buildApp(testConfig(t, opts), {
    logStream: opts.logStream,
    now: opts.now,
    receipts: opts.receipts,
  });
  t.teardown(() => app.close());
  if (checksAnswers(opts)) watchAnswers(t, app);
  return app;
}

export interface TestDaemon {
  app: FastifyInstance;
  config: Config;
  baseUrl: string;
  port: number;
  /** Default headers every request needs (Host is right by construction; a token when set). */
  headers: Record<string, string>;
  /** Every documented answer and its verdict, when answers are checked (`checkAnswers`). */
  answers: Verdict[] | undefined;
}

/** Where a client sends its requests: a test daemon, or a daemon a test runs as a process. */
export type Endpoint = Pick<TestDaemon, 'baseUrl' | 'headers'>;

/** The app listening on 127.0.0.1 with an ephemeral port. */
export async function startDaemon(t: Teardown, opts: TestOptions = {}): Promise<TestDaemon> {
  const config = testConfig(t, opts);
  const app = await buildApp(config, { logStream: opts.logStream, now: opts.now, receipts: opts.receipts });
  t.teardown(() => app.close());
  const answers = checksAnswers(opts) ? watchAnswers(t, app) : undefined;
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as AddressInfo).port;
  const headers: Record<string, string> = config.token ? { authorization: `Bearer ${config.token}` } : {};
  return { app, config, baseUrl: `http://127.0.0.1:${port}`, port, headers, answers };
}

export interface SteeredDaemon {
  d: TestDaemon;
  steer: Steer;
}

/**
 * A daemon whose agent is the steerable one, holding `hold` from the first request on. The controller's
 * teardown is registered first: tap runs teardowns last-in first-out, so the app closes before it.
 */
export async function steerDaemon(
  t: Teardown,
  opts: Omit<TestOptions, 'agent'> & { hold?: string[] } = {},
): Promise<SteeredDaemon> {
  const { hold, ...rest } = opts;
  const steer = await Steer.create({ hold });
  t.teardown(() => steer.close());
  const d = await startDaemon(t, { ...rest, agent: steer.argv });
  return { d, steer };
}
