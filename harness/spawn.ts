// Processes the peer run and the benchmarks start: spawned in an own process group, stdout/stderr
// always drained into a log (qwen dies with EPIPE when nobody reads its stdout), a line waited for
// with a bound, and everything stopped at the end (SIGTERM to the group, then SIGKILL, descendants
// that moved to groups of their own included).
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { isAlive, livingDescendants, statOf } from './proc-table.js';
import { until, within } from './wait.js';

/** Signals the whole group when `pid` leads one (detached children, setsid'd agents), else `pid` alone. */
function signalGroupOrPid(pid: number, sig: NodeJS.Signals): void {
  const stat = statOf(pid);
  try {
    if (stat && stat.pgid === pid) process.kill(-pid, sig);
    else process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

/** SIGTERM, wait up to `graceMs`, SIGKILL; applied to `pids` (and the groups they lead). */
export async function terminate(pids: number[], graceMs: number): Promise<void> {
  const live = pids.filter(isAlive);
  if (live.length === 0) return;
  const gone = (): boolean => !live.some(isAlive);
  for (const pid of live) signalGroupOrPid(pid, 'SIGTERM');
  await until(gone, 'SIGTERM obeyed', { ms: graceMs, everyMs: 50 }).catch(() => undefined);
  for (const pid of live.filter(isAlive)) signalGroupOrPid(pid, 'SIGKILL');
  await until(gone, 'SIGKILL obeyed', { ms: 3000, everyMs: 50 }).catch(() => undefined);
}

interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface SpawnOptions {
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** stdout+stderr of the process are appended here (prefixed per stream). */
  logFile: string;
  /** Keep stdin open as a pipe (default: ignore). */
  stdinPipe?: boolean;
}

/** A spawned process in its own process group, with its output drained into a log. */
export class Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<ExitInfo>;
  private exitInfo: ExitInfo | undefined;
  private readonly lines: string[] = [];
  private readonly lineWaiters = new Set<(line: string) => void>();
  private readonly log: WriteStream;

  constructor(
    readonly name: string,
    cmd: string,
    args: string[],
    opts: SpawnOptions,
  ) {
    this.log = createWriteStream(opts.logFile, { flags: 'a' });
    this.log.write(`# ${new Date().toISOString()} spawn ${cmd} ${args.join(' ')}\n`);
    this.child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env,
      detached: true, // own process group: we stop it with kill(-pgid)
      stdio: [opts.stdinPipe ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    if (this.child.pid === undefined) throw new Error(`${name}: spawn failed (${cmd})`);
    this.pid = this.child.pid;
    Procs.register(this);
    this.exited = new Promise<ExitInfo>((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        this.log.write(`# exit code=${code} signal=${signal}\n`);
        resolve(this.exitInfo);
      });
      this.child.once('error', (err) => {
        this.log.write(`# spawn error ${err.message}\n`);
        this.exitInfo = { code: null, signal: null };
        resolve(this.exitInfo);
      });
    });
    this.pipeLines(this.child.stdout, 'out');
    this.pipeLines(this.child.stderr, 'err');
  }

  private pipeLines(stream: NodeJS.ReadableStream | null, tag: string): void {
    if (!stream) return;
    let buf = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      this.log.write(chunk.replace(/^(?=.)/gm, `${tag}| `));
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.lines.push(line);
        for (const w of this.lineWaiters) w(line);
      }
    });
    stream.on('error', () => {
      /* the process is going away */
    });
  }

  get alive(): boolean {
    return this.exitInfo === undefined;
  }

  /** Resolves with the first line (already seen or future) that matches; rejects on exit or timeout. */
  waitForLine(re: RegExp, ms: number): Promise<RegExpMatchArray> {
    for (const line of this.lines) {
      const m = re.exec(line);
      if (m) return Promise.resolve(m);
    }
    let waiter: ((line: string) => void) | undefined;
    const found = new Promise<RegExpMatchArray>((resolve, reject) => {
      waiter = (line) => {
        const m = re.exec(line);
        if (m) resolve(m);
      };
      this.lineWaiters.add(waiter);
      void this.exited.then((e) =>
        reject(new Error(`${this.name} exited (code=${e.code} signal=${e.signal}) before printing ${re}`)),
      );
    });
    return within(found, `${this.name}: line ${re}`, ms).finally(() => {
      if (waiter) this.lineWaiters.delete(waiter);
    });
  }

  /** Stop the process, its group, and every descendant that escaped into another group. */
  async stop(graceMs = 5000): Promise<ExitInfo | undefined> {
    const family = [this.pid, ...livingDescendants(this.pid)];
    if (this.alive) {
      // The direct process first (it may want to shut its children down itself) …
      await terminate([this.pid], graceMs);
    }
    // … then whatever is still around from the snapshot (agents in their own sessions).
    await terminate(
      family.filter((p) => p !== this.pid),
      2000,
    );
    await within(this.exited, `${this.name}: exit`, 5000).catch(() => undefined);
    await new Promise<void>((resolve) => this.log.end(resolve));
    Procs.unregister(this);
    return this.exitInfo;
  }
}

/** Every live Proc, so that the runner can stop all of them on exit, error or signal. */
export const Procs = {
  live: new Set<Proc>(),
  register(p: Proc): void {
    this.live.add(p);
  },
  unregister(p: Proc): void {
    this.live.delete(p);
  },
  async stopAll(): Promise<void> {
    await Promise.all([...this.live].map((p) => p.stop(2000).catch(() => undefined)));
  },
  /** Synchronous last resort for process 'exit': SIGKILL every group we started. */
  killAllSync(): void {
    for (const p of this.live) {
      for (const pid of [p.pid, ...livingDescendants(p.pid)]) signalGroupOrPid(pid, 'SIGKILL');
    }
  },
};
