// The one place that reads /proc, for the tests, the peer run and the benchmarks: which processes run,
// who their parents and groups are, their command lines and environments, their memory and CPU time.
// Linux only, like everything that asks these questions here.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** One process as /proc/<pid>/stat describes it (the fields we use). */
export interface ProcStat {
  pid: number;
  ppid: number;
  pgid: number;
  /** R, S, D, … ; Z for a zombie waiting for its reaper, X for a dead one. */
  state: string;
  /** Start time in clock ticks since boot, as written: with the pid, it tells a recycled pid apart. */
  start: string;
  /** User and system CPU time, in clock ticks. */
  utime: number;
  stime: number;
}

/** The stat of `pid`, or undefined when there is no such process (any more). */
export function statOf(pid: number): ProcStat | undefined {
  let raw: string;
  try {
    raw = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses, so the fields start after the last ')'.
  const fields = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
  return {
    pid,
    state: fields[0] ?? '?',
    ppid: Number(fields[1]),
    pgid: Number(fields[2]),
    // utime, stime and starttime are fields 14, 15 and 22 of stat: 11, 12 and 19 counted from the state.
    utime: Number(fields[11]),
    stime: Number(fields[12]),
    start: fields[19] ?? '',
  };
}

/** Every process on the machine (those that exit while we look are left out). */
export function processTable(): ProcStat[] {
  const table: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = statOf(Number(name));
    if (stat) table.push(stat);
  }
  return table;
}

/** A process runs unless it is a zombie or dead. */
export function isRunning(stat: ProcStat): boolean {
  return stat.state !== 'Z' && stat.state !== 'X';
}

/** Whether `pid` exists and runs. */
export function isAlive(pid: number): boolean {
  const stat = statOf(pid);
  return stat !== undefined && isRunning(stat);
}

/** Every descendant of `pid`, zombies included, breadth first, from one reading of the table. */
export function descendantsOf(pid: number): ProcStat[] {
  const table = processTable();
  const found: ProcStat[] = [];
  const queue = [pid];
  for (let parent = queue.shift(); parent !== undefined; parent = queue.shift()) {
    for (const stat of table) {
      if (stat.ppid === parent) {
        found.push(stat);
        queue.push(stat.pid);
      }
    }
  }
  return found;
}

/** The running descendants of `pid`. */
export function livingDescendants(pid: number): number[] {
  return descendantsOf(pid)
    .filter(isRunning)
    .map((stat) => stat.pid);
}

/** The running direct children of `pid`. */
export function childrenOf(pid: number): number[] {
  return processTable()
    .filter((stat) => stat.ppid === pid && isRunning(stat))
    .map((stat) => stat.pid);
}

/** The running processes that are `pid` itself or belong to the process group it leads. */
export function livingInGroup(pid: number): number[] {
  return processTable()
    .filter((stat) => (stat.pid === pid || stat.pgid === pid) && isRunning(stat))
    .map((stat) => stat.pid);
}

/** A NUL-separated /proc file as its non-empty entries; none when the process is gone. */
function entries(pid: number, file: 'cmdline' | 'environ'): string[] {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8')
      .split('\0')
      .filter((entry) => entry.length > 0);
  } catch {
    return [];
  }
}

/** The argv of `pid`. */
export function cmdline(pid: number): string[] {
  return entries(pid, 'cmdline');
}

/** The environment block of `pid`, as NAME=VALUE entries (readable for our own processes only). */
export function environOf(pid: number): string[] {
  return entries(pid, 'environ');
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

/** Kernel clock ticks per second (CLK_TCK), the unit of stat's CPU times; asked once. */
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
  const stat = statOf(pid);
  if (!stat) return Number.NaN;
  return ((stat.utime + stat.stime) * 1000) / ticksPerSecond();
}
