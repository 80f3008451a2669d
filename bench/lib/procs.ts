// The processes a benchmark starts: acpd (dist/server.js), the raw baseline server, and the
// flood agent. Spawning, draining output into logs, waiting for the "listening" line and stopping
// whole process groups are harness/spawn.ts's Proc (shared with the peer run); this file adds what
// a benchmark needs on top: node flags (--cpu-prof) and extra daemon flags. Memory and CPU
// readings come from harness/proc-table.ts.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { commandLine } from '../../harness/peer-daemon.js';
import { acpdServer } from '../../harness/peer-env.js';
import { Proc } from '../../harness/spawn.js';

const LISTENING = /listening on (http:\/\/127\.0\.0\.1:(\d+))/;

const floodAgentPath = fileURLToPath(new URL('../agents/flood-agent.js', import.meta.url));
const rawServerPath = fileURLToPath(new URL('../baseline/raw-sse-server.js', import.meta.url));
const relayServerPath = fileURLToPath(new URL('../baseline/relay-sse-server.js', import.meta.url));
export const embeddedAgentPath = join(acpdServer, '..', 'agent', 'main.js');

/** The flood agent as acpd's --agent value. */
export function floodAgentCommand(): string {
  return commandLine([process.execPath, floodAgentPath]);
}

let warmSessionsFlag: boolean | undefined;

/** Does this acpd build know `--warm-sessions` (issue 6's pool)? Asked once, through `--help`. */
export function hasWarmSessions(): boolean {
  if (warmSessionsFlag === undefined) {
    try {
      warmSessionsFlag = execFileSync(process.execPath, [acpdServer, '--help'], {
        encoding: 'utf8',
        timeout: 20_000,
      }).includes('--warm-sessions');
    } catch {
      warmSessionsFlag = false;
    }
  }
  return warmSessionsFlag;
}

/** Flags that turn the warm-session pool off, where there is one: creates then go to the agent. */
export function poolOff(): string[] {
  return hasWarmSessions() ? ['--warm-sessions', '0'] : [];
}

export interface Server {
  readonly name: string;
  readonly baseUrl: string;
  readonly pid: number;
  readonly proc: Proc;
  stop(): Promise<void>;
}

interface StartOptions {
  name: string;
  script: string;
  args?: string[];
  nodeArgs?: string[];
  env?: NodeJS.ProcessEnv;
  cwd: string;
  logDir: string;
  timeoutMs?: number;
}

let starts = 0;

/** Starts a node script that prints "… listening on http://127.0.0.1:<port>". */
async function startServer(opts: StartOptions): Promise<Server> {
  starts++;
  const proc = new Proc(opts.name, process.execPath, [...(opts.nodeArgs ?? []), opts.script, ...(opts.args ?? [])], {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    logFile: join(opts.logDir, `${opts.name}.${starts}.log`),
  });
  try {
    const m = await proc.waitForLine(LISTENING, opts.timeoutMs ?? 30_000);
    const baseUrl = m[1] ?? '';
    return {
      name: opts.name,
      baseUrl,
      pid: proc.pid,
      proc,
      async stop() {
        await proc.stop(8000);
      },
    };
  } catch (err) {
    await proc.stop(2000);
    throw err;
  }
}

interface AcpdOptions {
  workspace: string;
  dataDir: string;
  logDir: string;
  /** The agent command line (default: the embedded agent). */
  agent?: string;
  args?: string[];
  nodeArgs?: string[];
  env?: NodeJS.ProcessEnv;
}

export function startAcpd(opts: AcpdOptions): Promise<Server> {
  const args = ['--port', '0', '--workspace', opts.workspace, '--data-dir', opts.dataDir, ...(opts.args ?? [])];
  if (opts.agent !== undefined) args.push('--agent', opts.agent);
  return startServer({
    name: 'acpd',
    script: acpdServer,
    args,
    nodeArgs: opts.nodeArgs,
    env: opts.env,
    cwd: opts.workspace,
    logDir: opts.logDir,
  });
}

export function startRawServer(cwd: string, logDir: string): Promise<Server> {
  return startServer({ name: 'raw-sse', script: rawServerPath, cwd, logDir });
}

/** The relay floor (baseline/relay-sse-server): the flood agent's chunks as acpd's frames, nothing else. */
export function startRelayServer(cwd: string, logDir: string): Promise<Server> {
  return startServer({
    name: 'relay-sse',
    script: relayServerPath,
    args: [process.execPath, floodAgentPath],
    cwd,
    logDir,
  });
}
