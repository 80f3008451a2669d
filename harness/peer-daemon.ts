// A daemon under test: the real `qwen serve`, or acpd hosting the real `qwen --acp`.
// Both get the same environment, workspace and HOME; both print a line matching LISTENING.
import { join } from 'node:path';
import { acpdServer, qwenCli, qwenEntry } from './peer-env.js';
import { childrenOf, cmdline } from './proc-table.js';
import { Proc } from './spawn.js';

export type DaemonKind = 'qwen' | 'acpd';

/**
 * `qwen serve listening on http://127.0.0.1:N (mode=…)` (stdout) and `acpd listening on http://127.0.0.1:N (mode=…)`
 * (stderr: acpd's stdout is its JSON log); Proc reads both streams.
 */
const LISTENING = /listening on (http:\/\/127\.0\.0\.1:(\d+))/;

interface DaemonOptions {
  /** Directory for logs of this daemon (one file per start). */
  logDir: string;
  workspace: string;
  /** acpd only: its --data-dir. */
  dataDir: string;
  env: NodeJS.ProcessEnv;
  startTimeoutMs?: number;
  /** acpd only: the agent command (default: the real `qwen --acp`, see agentCommand()). */
  agent?: string;
  /** Once aborted, (re)starts are refused: a timed-out scenario cannot leave a daemon behind. */
  signal?: AbortSignal;
}

export interface DaemonHandle {
  readonly kind: DaemonKind;
  /** Changes on restart (port 0 each time). */
  readonly baseUrl: string;
  readonly pid: number;
  /** How many times it was started (1 after startDaemon). */
  readonly starts: number;
  stop(): Promise<void>;
  restart(): Promise<void>;
  /** The agent child(ren) the daemon spawned: its direct children whose argv has `--acp`. */
  agentPids(): number[];
}

/** An argv as one `--agent` string (acpd splits it with shell-like quotes, never through a shell). */
export function commandLine(argv: string[]): string {
  return argv.map((p) => (/[\s"'\\]/.test(p) ? `'${p.replace(/'/g, `'\\''`)}'` : p)).join(' ');
}

/** The agent acpd hosts by default here: the same `qwen --acp` that `qwen serve` spawns. */
export function agentCommand(): string {
  return commandLine([process.execPath, qwenCli, '--acp']);
}

function argvFor(kind: DaemonKind, opts: DaemonOptions): string[] {
  if (kind === 'qwen') {
    // The `qwen` bin; `serve` runs in-process there (no launcher child), so the pid is the daemon.
    return [qwenEntry, 'serve', '--port', '0', '--workspace', opts.workspace];
  }
  return [
    acpdServer,
    '--port',
    '0',
    '--workspace',
    opts.workspace,
    '--data-dir',
    opts.dataDir,
    '--agent',
    opts.agent ?? agentCommand(),
  ];
}

class Daemon implements DaemonHandle {
  private proc: Proc | undefined;
  private url = '';
  starts = 0;

  constructor(
    readonly kind: DaemonKind,
    private readonly opts: DaemonOptions,
  ) {}

  get baseUrl(): string {
    return this.url;
  }

  get pid(): number {
    if (!this.proc) throw new Error(`${this.kind} daemon is not running`);
    return this.proc.pid;
  }

  async start(): Promise<void> {
    if (this.opts.signal?.aborted) throw new Error(`${this.kind} daemon: scenario is over, not starting`);
    this.starts += 1;
    const proc = new Proc(`${this.kind}-daemon`, process.execPath, argvFor(this.kind, this.opts), {
      cwd: this.opts.workspace,
      env: this.opts.env,
      logFile: join(this.opts.logDir, `${this.kind}-daemon.${this.starts}.log`),
    });
    this.proc = proc;
    try {
      const m = await proc.waitForLine(LISTENING, this.opts.startTimeoutMs ?? 30_000);
      this.url = m[1] ?? '';
      if (this.opts.signal?.aborted) throw new Error(`${this.kind} daemon: scenario ended while it started`);
    } catch (err) {
      await proc.stop(2000);
      throw err;
    }
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (proc) await proc.stop(8000);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  agentPids(): number[] {
    if (!this.proc) return [];
    return childrenOf(this.proc.pid).filter((pid) => cmdline(pid).includes('--acp'));
  }
}

export async function startDaemon(kind: DaemonKind, opts: DaemonOptions): Promise<DaemonHandle> {
  const d = new Daemon(kind, opts);
  await d.start();
  return d;
}
