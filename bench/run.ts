// `npm run bench`: every scenario of issue 6 in one run, each against its baseline measured in the
// same run, several repetitions, median and spread. Writes bench/results/<date>.json and renders
// bench/RESULTS.md with one SVG chart per scenario (bench/charts/).
//
//   node build/bench/run.js [--quick] [--only fanout,replay,profile,restore,scale,qwen,cluster,many] [--reps N] [--keep]
//
// Needs dist/ (npm run build) and build/ (npm run build:test). Section 5 needs the qwen peers
// (scripts/peers-install.sh) and ../shared/tools (PEERS_SHARED_DIR overrides); without them it is
// skipped with a note in the results. Section 6 (cluster) needs redis-server and nginx (Debian's
// packages); without them it is skipped likewise.
import { execFileSync } from 'node:child_process';
import { accessSync, constants, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { packageVersion, repoRoot } from '../harness/peer-env.js';
import { childrenOf } from '../harness/proc-table.js';
import { Procs } from '../harness/spawn.js';
import { summarize } from './lib/stats.js';
import { log, workDir, type WorkDir } from './lib/util.js';
import { renderAll } from './report.js';
import type { FanoutResult, FanoutRow, Machine, Results } from './results-types.js';
import {
  type FanoutRun,
  logRun,
  runAcpd,
  runRaw,
  runRelay,
  sameBytes,
  startFanoutServers,
} from './scenarios/fanout.js';
import { runCluster } from './scenarios/cluster.js';
import { runMany } from './scenarios/many.js';
import { runProfile } from './scenarios/profile.js';
import { runQwen } from './scenarios/qwen.js';
import { runReplay } from './scenarios/replay.js';
import { runRestore } from './scenarios/restore.js';
import { runScale } from './scenarios/scale.js';
import { evaluateTargets } from './targets.js';

const SCENARIOS = ['fanout', 'replay', 'profile', 'restore', 'scale', 'qwen', 'cluster', 'many'] as const;
type ScenarioName = (typeof SCENARIOS)[number];

interface Args {
  quick: boolean;
  only: Set<ScenarioName>;
  reps: number;
  keep: boolean;
}

function isScenario(s: string): s is ScenarioName {
  return (SCENARIOS as readonly string[]).includes(s);
}

function parseArgs(argv: string[]): Args {
  const args: Args = { quick: false, only: new Set(SCENARIOS), reps: 0, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') args.quick = true;
    else if (a === '--keep') args.keep = true;
    else if (a === '--reps') args.reps = Number(argv[++i]);
    else if (a === '--only') {
      const names = (argv[++i] ?? '').split(',').map((s) => s.trim());
      const bad = names.filter((n) => !isScenario(n));
      if (bad.length > 0) throw new Error(`unknown scenario(s) ${bad.join(', ')}; known: ${SCENARIOS.join(', ')}`);
      args.only = new Set(names.filter(isScenario));
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!(args.reps > 0)) args.reps = args.quick ? 2 : 5;
  return args;
}

function machine(): Machine {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    memGb: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    loadAvg: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/** Read-only git: which commit was measured, and whether the tree had local changes. */
function gitState(): { commit: string; dirty: boolean } {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, encoding: 'utf8' }).trim();
    const dirty =
      execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], {
        cwd: repoRoot,
        encoding: 'utf8',
      }).trim() !== '';
    return { commit, dirty };
  } catch {
    return { commit: 'unknown', dirty: false };
  }
}

function stampName(d: Date): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** Flood sizes: about a second of work per run at each subscriber count. */
function fanoutPlan(quick: boolean): Array<{ subscribers: number; frames: number }> {
  return quick
    ? [
        { subscribers: 1, frames: 4000 },
        { subscribers: 10, frames: 2000 },
        { subscribers: 64, frames: 1000 },
      ]
    : [
        { subscribers: 1, frames: 16000 },
        { subscribers: 10, frames: 8000 },
        { subscribers: 64, frames: 4000 },
      ];
}

function fanoutRows(runs: FanoutRun[]): FanoutRow[] {
  const rows: FanoutRow[] = [];
  const counts = [...new Set(runs.map((r) => r.subscribers))];
  for (const s of counts) {
    const of = (system: FanoutRun['system']): FanoutRun[] =>
      runs.filter((r) => r.subscribers === s && r.system === system);
    const a = of('acpd');
    const r = of('raw');
    const e = of('acpd-embedded');
    const m = of('acpd-memory');
    const l = of('relay');
    const figures = (xs: FanoutRun[]) => ({
      fps: summarize(xs.map((x) => x.framesPerSec)),
      p50: summarize(xs.map((x) => x.p50Ms)),
      p99: summarize(xs.map((x) => x.p99Ms)),
      cpuPer1k: summarize(xs.map((x) => x.serverCpuMsPer1k)),
    });
    const acpd = figures(a);
    const raw = figures(r);
    rows.push({
      subscribers: s,
      frames: a[0]?.frames ?? 0,
      acpd,
      raw,
      embedded:
        e.length > 0
          ? { fps: summarize(e.map((x) => x.framesPerSec)), cpuPer1k: summarize(e.map((x) => x.serverCpuMsPer1k)) }
          : undefined,
      memoryLog:
        m.length > 0
          ? { fps: summarize(m.map((x) => x.framesPerSec)), cpuPer1k: summarize(m.map((x) => x.serverCpuMsPer1k)) }
          : undefined,
      relay:
        l.length > 0
          ? { fps: summarize(l.map((x) => x.framesPerSec)), cpuPer1k: summarize(l.map((x) => x.serverCpuMsPer1k)) }
          : undefined,
      cpuRatio: acpd.cpuPer1k.median / raw.cpuPer1k.median,
      fpsRatio: acpd.fps.median / raw.fps.median,
      p50Ratio: acpd.p50.median / raw.p50.median,
      p99Ratio: acpd.p99.median / raw.p99.median,
    });
  }
  return rows;
}

async function fanoutAndReplay(dir: WorkDir, args: Args, results: Results): Promise<void> {
  const ctx = await startFanoutServers(dir);
  try {
    if (args.only.has('fanout')) {
      log('1. fan-out');
      const plan = fanoutPlan(args.quick);
      // Untimed warm-up of every path.
      await runAcpd(ctx.acpd, 10, 1000);
      await runAcpd(ctx.acpdMemory, 10, 1000, 'acpd-memory');
      await runRaw(ctx.raw, 10, 1000);
      await runRelay(ctx.relay, 10, 1000);
      if (ctx.embedded) await runAcpd(ctx.embedded, 10, 1000, 'acpd-embedded');
      const runs: FanoutRun[] = [];
      let acpdFrame = '';
      let rawFrame = '';
      for (let rep = 0; rep < args.reps; rep++) {
        for (const { subscribers, frames } of plan) {
          // Alternate which goes first, so that neither always runs on a warmer machine.
          const pair = [
            () => runAcpd(ctx.acpd, subscribers, frames, 'acpd', (f) => (acpdFrame ||= f)),
            () => runRaw(ctx.raw, subscribers, frames, (f) => (rawFrame ||= f)),
          ];
          if (rep % 2 === 1) pair.reverse();
          for (const run of pair) {
            const r = await run();
            logRun(r);
            runs.push(r);
          }
          const m = await runAcpd(ctx.acpdMemory, subscribers, frames, 'acpd-memory');
          logRun(m);
          runs.push(m);
          const floor = await runRelay(ctx.relay, subscribers, frames);
          logRun(floor);
          runs.push(floor);
          if (ctx.embedded) {
            const r = await runAcpd(ctx.embedded, subscribers, frames, 'acpd-embedded');
            logRun(r);
            runs.push(r);
          }
        }
      }
      const fanout: FanoutResult = {
        rows: fanoutRows(runs),
        runs,
        sameBytes: sameBytes(acpdFrame, rawFrame),
        evictions: runs.reduce((n, r) => n + r.evicted, 0),
      };
      results.fanout = fanout;
    }
    if (args.only.has('replay')) {
      log('2. replay');
      // A replay takes tens of milliseconds: three times the repetitions cost little.
      results.replay = await runReplay(ctx.acpd, ctx.raw, args.reps * 3, ctx.acpdMemory);
    }
  } finally {
    await Promise.all([ctx.acpd.stop(), ctx.acpdMemory.stop(), ctx.raw.stop(), ctx.relay.stop(), ctx.embedded?.stop()]);
  }
}

/** Programs (absolute, or looked up in PATH) that are not installed. */
function missingPrograms(programs: string[]): string[] {
  const found = (p: string): boolean =>
    (p.includes('/') ? [p] : (process.env.PATH ?? '').split(':').map((d) => join(d, p))).some((f) => {
      try {
        accessSync(f, constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  return programs.filter((p) => !found(p));
}

/** Section 6: about 3 minutes in all on 2 cores (under 1 with --quick). */
function clusterPlan(args: Args): Parameters<typeof runCluster>[0] {
  return {
    nodeCounts: [1, 2, 3],
    reps: args.quick ? 2 : Math.min(args.reps, 5),
    sessions: 6,
    followersPerSession: 4,
    floodChunks: args.quick ? 1000 : 4000,
    prompts: args.quick ? 120 : 300,
    promptsPerSession: 2,
    failover: {
      // acpd's default TTL, then a short one.
      ttls: [undefined, 2],
      reps: args.quick ? 1 : 2,
      victimSessions: 3,
      followersPerSession: 3,
    },
  };
}

async function section(name: string, results: Results, fn: () => Promise<void>): Promise<void> {
  const t0 = Date.now();
  try {
    await fn();
  } catch (err) {
    const msg = `${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`;
    log(`!! ${msg}`);
    results.errors.push(msg);
  } finally {
    log(`   (${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  }
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const started = new Date();
  const t0 = Date.now();
  const git = gitState();
  const results: Results = {
    schema: 1,
    date: started.toISOString(),
    durationS: 0,
    loadAvgEnd: [],
    quick: args.quick,
    machine: machine(),
    acpd: { version: packageVersion(repoRoot), ...git },
    reps: args.reps,
    targets: [],
    errors: [],
  };
  log(
    `acpd bench: ${results.machine.cpus} × ${results.machine.cpuModel}, node ${results.machine.node}, reps ${args.reps}${args.quick ? ' (quick)' : ''}`,
  );
  const dirs: WorkDir[] = [];
  const dir = (name: string): WorkDir => {
    const d = workDir(name);
    dirs.push(d);
    return d;
  };
  try {
    if (args.only.has('fanout') || args.only.has('replay')) {
      await section('fan-out + replay', results, () => fanoutAndReplay(dir('fanout'), args, results));
    }
    if (args.only.has('profile')) {
      await section('profile', results, async () => {
        log('   profile (node --cpu-prof: 64 subscribers, then 1)');
        results.profile = await runProfile(dir('profile'), [
          { subscribers: 64, frames: args.quick ? 1000 : 4000, runs: args.quick ? 1 : 3 },
          { subscribers: 1, frames: args.quick ? 4000 : 16000, runs: args.quick ? 1 : 3 },
        ]);
      });
    }
    if (args.only.has('restore')) {
      await section('restore', results, async () => {
        log('3. restore');
        results.restore = await runRestore(dir('restore'), { sizes: [10, 100, 1000], reps: args.reps * 2 });
      });
    }
    if (args.only.has('scale')) {
      await section('scale', results, async () => {
        log('4. scale');
        results.scale = await runScale(
          dir('scale'),
          { levels: [0, 20, 200], reps: Math.min(args.reps, 3), creates: 10, subscribers: 64 },
          childrenOf,
        );
      });
    }
    if (args.only.has('qwen')) {
      await section('qwen', results, async () => {
        log('5. against qwen serve');
        results.qwen = await runQwen(dir('qwen'), {
          reps: args.quick ? 3 : 8,
          subscribers: 10,
          startReps: args.quick ? 3 : 7,
        });
        if (results.qwen.skipped) log(`   skipped: ${results.qwen.skipped}`);
      });
    }
    if (args.only.has('cluster')) {
      await section('cluster', results, async () => {
        log('6. cluster (Redis, nodes, nginx)');
        const missing = missingPrograms(['/usr/sbin/nginx', 'redis-server']);
        if (missing.length > 0) {
          results.cluster = { skipped: `not installed: ${missing.join(', ')} (Debian: nginx, redis-server)` };
          log(`   skipped: ${results.cluster.skipped}`);
          return;
        }
        results.cluster = await runCluster(clusterPlan(args), results.machine.cpus);
      });
    }
    if (args.only.has('many')) {
      await section('many', results, async () => {
        log('7. many sessions');
        // About a minute for each side on 2 cores (half with --quick); stops at the first step over 50 ms.
        results.many = await runMany(dir('many'), {
          sessions: 200,
          rates: args.quick ? [1000, 4000, 16000] : [1000, 2000, 4000, 8000, 12000, 16000, 24000],
          promptSeconds: args.quick ? 1 : 2,
          queued: 2,
        });
      });
    }
  } finally {
    await Procs.stopAll();
    if (!args.keep) for (const d of dirs) rmSync(d.root, { recursive: true, force: true });
  }
  if (results.profile && !args.keep)
    results.profile.file = "deleted with the run's temporary files (run with --keep to keep it)";
  results.durationS = Math.round((Date.now() - t0) / 100) / 10;
  results.loadAvgEnd = os.loadavg().map((x) => Math.round(x * 100) / 100);
  results.targets = evaluateTargets(results);

  const benchDir = join(repoRoot, 'bench');
  const resultsDir = join(benchDir, 'results');
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `${stampName(started)}.json`);
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  renderAll(results, benchDir, file);
  log(`wrote ${file}, bench/RESULTS.md and bench/charts/*.svg in ${results.durationS} s`);
  for (const t of results.targets) log(`  ${t.met === undefined ? '?' : t.met ? '✓' : '✗'} ${t.target}: ${t.measured}`);
  return results.errors.length > 0 ? 1 : 0;
}

process.on('exit', () => Procs.killAllSync());
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    void Procs.stopAll().finally(() => process.exit(130));
  });
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  async (err: unknown) => {
    log(err instanceof Error ? (err.stack ?? err.message) : String(err));
    await Procs.stopAll();
    process.exitCode = 1;
  },
);
