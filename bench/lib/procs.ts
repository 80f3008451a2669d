// The processes a benchmark starts: acpd (dist/server.js), the raw baseline server, and the
// flood agent. Spawning, draining output into logs, waiting for the "listening" line and stopping
// whole process groups are test/peers' Proc (reused as is); this file adds what a benchmark needs
// on top: node flags (--cpu-prof), extra daemon flags, and memory readings from /proc.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { commandLine } from '../../test/peers/daemon.js';
import { acpdServer } from '../../test/peers/env.js';
import { Proc } from '../../test/peers/procs.js';

const LISTENING = /listening on (http:\/\/127\.0\.0\.1:(\d+))/;

export const floodAgentPath = fileURLToPath(new URL('../agents/flood-agent.js', import.meta.url));
export const rawServerPath = fileURLToPath(new URL('../baseline/raw-sse-server.js', import.meta.url));
export const embeddedAgentPath = join(acpdServer, '..', 'agent', 'main.js');

/** The flood agent as acpd's --agent value. */
export function floodAgentCommand(): string {
  return commandLine([process.execPath, floodAgentPath]);
}

/** Resident set size of a process in kB (VmRSS), NaN when it is gone. */
export function rssKb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

let clockTicks: number | undefined;

/** Kernel clock ticks per second (CLK_TCK), for /proc/<pid>/stat CPU times. */
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** CPU time (user + system) a process has used so far, in ms; NaN when it is gone. */
export function cpuMs(pid: number): number {
  try {
    const raw = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after "state".
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond();
  } catch {
    return Number.NaN;
  }
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

export interface StartOptions {
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
export async function startServer(opts: StartOptions): Promise<Server> {
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

export interface AcpdOptions {
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
