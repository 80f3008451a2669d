// Process plumbing for the peer conformance run: spawn in an own process group, always drain
// stdout/stderr (qwen dies with EPIPE when nobody reads its stdout), wait for a line with a
// deadline, find descendants through /proc, and stop everything we started (SIGTERM to the group,
// then SIGKILL, descendants in their own groups included).
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readdirSync, readFileSync, type WriteStream } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export class TimeoutError extends Error {
  constructor(label: string, ms: number) {
    super(`timed out after ${ms} ms: ${label}`);
    this.name = 'TimeoutError';
  }
}

/** Races `p` against a timer; the timer never keeps the process alive. */
export async function withTimeout<T>(p: Promise<T>, ms: number, label: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(label, ms)), ms);
    timer.unref();
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` until it returns a value other than undefined/false. */
export async function pollUntil<T>(
  check: () => T | undefined | false,
  ms: number,
  label: string,
  everyMs = 50,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new TimeoutError(label, ms);
    await sleep(everyMs);
  }
}

interface ProcStat {
  pid: number;
  ppid: number;
  pgid: number;
  state: string;
}

function readStat(pid: number): ProcStat | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid pgrp …": comm may contain spaces and parentheses.
    const rest = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
    return { pid, state: rest[0] ?? '?', ppid: Number(rest[1]), pgid: Number(rest[2]) };
  } catch {
    return undefined;
  }
}

/** Alive = exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  const st = readStat(pid);
  return st !== undefined && st.state !== 'Z' && st.state !== 'X';
}

export function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      .split('\0')
      .filter((s) => s.length > 0);
  } catch {
    return [];
  }
}

function allStats(): ProcStat[] {
  const out: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (st) out.push(st);
  }
  return out;
}

/** Direct children of `pid` (live ones). */
export function childrenOf(pid: number): number[] {
  return allStats()
    .filter((s) => s.ppid === pid && s.state !== 'Z')
    .map((s) => s.pid);
}

/** Every live descendant of `pid`, breadth first. */
export function descendantsOf(pid: number): number[] {
  const stats = allStats();
  const out: number[] = [];
  let frontier = [pid];
  while (frontier.length > 0) {
    const next = stats.filter((s) => frontier.includes(s.ppid) && s.state !== 'Z').map((s) => s.pid);
    out.push(...next);
    frontier = next;
  }
  return out;
}

function signalGroupOrPid(pid: number, sig: NodeJS.Signals): void {
  const st = readStat(pid);
  try {
    // Signal the whole group when `pid` leads one (detached children, setsid'd agents).
    if (st && st.pgid === pid) process.kill(-pid, sig);
    else process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

/** SIGTERM, wait up to `graceMs`, SIGKILL; applied to `pids` (and the groups they lead). */
export async function terminate(pids: number[], graceMs: number): Promise<void> {
  const live = pids.filter(isAlive);
  if (live.length === 0) return;
  for (const pid of live) signalGroupOrPid(pid, 'SIGTERM');
  const end = Date.now() + graceMs;
  while (Date.now() < end && live.some(isAlive)) await sleep(50);
  for (const pid of live.filter(isAlive)) signalGroupOrPid(pid, 'SIGKILL');
  const hardEnd = Date.now() + 3000;
  while (Date.now() < hardEnd && live.some(isAlive)) await sleep(50);
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
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
    return withTimeout(found, ms, `${this.name}: line ${re}`).finally(() => {
      if (waiter) this.lineWaiters.delete(waiter);
    });
  }

  /** Stop the process, its group, and every descendant that escaped into another group. */
  async stop(graceMs = 5000): Promise<ExitInfo | undefined> {
    const family = [this.pid, ...descendantsOf(this.pid)];
    if (this.alive) {
      // The direct process first (it may want to shut its children down itself) …
      await terminate([this.pid], graceMs);
    }
    // … then whatever is still around from the snapshot (agents in their own sessions).
    await terminate(
      family.filter((p) => p !== this.pid),
      2000,
    );
    await withTimeout(this.exited, 5000, `${this.name}: exit`).catch(() => undefined);
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
      for (const pid of [p.pid, ...descendantsOf(p.pid)]) signalGroupOrPid(pid, 'SIGKILL');
    }
  },
};
