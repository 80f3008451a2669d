// 4. Scale of sessions: acpd's RSS and create latency with 0 / 20 / 200 idle sessions (thread
// scope, --max-sessions 0, one embedded agent hosting them all), then with 64 SSE subscribers on
// one of them. Baselines in the same run: the agent's own session/new (bare ACP client) under
// create, and a raw node:http SSE server holding the same 64 streams under RSS.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { repoRoot } from '../../harness/peer-env.js';
import { rssKb } from '../../harness/proc-table.js';
import { BareAgent } from '../lib/acp-client.js';
import { HttpClient, stringField } from '../lib/http.js';
import { embeddedAgentPath, poolOff, startAcpd, startRawServer } from '../lib/procs.js';
import { openMany } from '../lib/sse.js';
import { summarize, type Summary } from '../lib/stats.js';
import { isRecord, log, type WorkDir } from '../lib/util.js';

interface ScaleLevel {
  sessions: number;
  /** Live sessions when measured: the lowest level keeps one for the subscribers. */
  liveSessions: number;
  /** Daemon RSS (MB) with that many idle sessions, one value per repetition. */
  rssMb: Summary;
  /** … and with 64 subscribers on one session. */
  rssMb64: Summary;
  /** POST /session latency at that level (ms). */
  createMs: Summary;
  /** The embedded agent's RSS (MB), for reference. */
  agentRssMb: Summary;
}

interface StageRss {
  stage: string;
  rssMb: Summary;
  heapUsedMb: Summary;
}

export interface ScaleResult {
  /** acpd's own RSS at each start-up stage (bench/lib/rss-probe), for where the idle footprint comes from. */
  stages: StageRss[];
  /** RSS a fresh node process gains by importing each runtime dependency alone (MB). */
  dependencies: Array<{ name: string; addedMb: number }>;
  levels: ScaleLevel[];
  /** Bare ACP client → embedded agent session/new (ms). */
  floorCreateMs: Summary;
  /** Raw node:http SSE server RSS (MB), idle and with 64 streams. */
  rawRssMb: Summary;
  rawRssMb64: Summary;
}

interface ScaleOptions {
  levels: number[];
  reps: number;
  /** Creates timed at each level. */
  creates: number;
  subscribers: number;
}

/** A settled RSS: the median of a few readings after a short pause (allocation bursts fade). */
async function settledRssMb(pid: number): Promise<number> {
  await sleep(300);
  const xs: number[] = [];
  for (let i = 0; i < 3; i++) {
    xs.push(rssKb(pid) / 1024);
    await sleep(50);
  }
  return summarize(xs).median;
}

const rssProbe = fileURLToPath(new URL('../lib/rss-probe.js', import.meta.url));

function isStageList(v: unknown): v is Array<{ stage: string; rssMb: number; heapUsedMb: number }> {
  return (
    Array.isArray(v) &&
    v.every(
      (x: unknown) =>
        isRecord(x) && typeof x.stage === 'string' && typeof x.rssMb === 'number' && typeof x.heapUsedMb === 'number',
    )
  );
}

async function startupStages(workspace: string, reps: number): Promise<StageRss[]> {
  const runs = new Map<string, { rss: number[]; heap: number[] }>();
  for (let i = 0; i < reps; i++) {
    const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', rssProbe, workspace], {
      timeout: 60_000,
    });
    const parsed: unknown = JSON.parse(stdout.trim().split('\n').at(-1) ?? '[]');
    if (!isStageList(parsed)) throw new Error(`rss-probe printed ${stdout.slice(0, 200)}`);
    for (const st of parsed) {
      const slot = runs.get(st.stage) ?? { rss: [], heap: [] };
      slot.rss.push(st.rssMb);
      slot.heap.push(st.heapUsedMb);
      runs.set(st.stage, slot);
    }
  }
  return [...runs].map(([stage, v]) => ({ stage, rssMb: summarize(v.rss), heapUsedMb: summarize(v.heap) }));
}

/**
 * Dependencies the daemon never imports: importing one alone would measure something no daemon loads.
 * swagger-ui-dist is files for the browser; /docs reads them from its directory (routes/docs.ts).
 */
const NEVER_IMPORTED = new Set(['swagger-ui-dist']);

/** Each runtime dependency of package.json imported alone in a fresh process: what it adds to RSS. */
async function dependencyCosts(): Promise<Array<{ name: string; addedMb: number }>> {
  const pkg: unknown = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
  const deps = (isRecord(pkg) && isRecord(pkg.dependencies) ? Object.keys(pkg.dependencies) : []).filter(
    (name) => !NEVER_IMPORTED.has(name),
  );
  const out: Array<{ name: string; addedMb: number }> = [];
  for (const name of deps) {
    try {
      const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', rssProbe, '--module', name], {
        timeout: 30_000,
        cwd: repoRoot,
      });
      const parsed: unknown = JSON.parse(stdout.trim().split('\n').at(-1) ?? '[]');
      if (isStageList(parsed) && parsed.length === 2)
        out.push({ name, addedMb: Math.round((parsed[1].rssMb - parsed[0].rssMb) * 10) / 10 });
    } catch {
      out.push({ name, addedMb: Number.NaN });
    }
  }
  return out.sort((a, b) => (b.addedMb || 0) - (a.addedMb || 0));
}

function agentPidOf(daemonPid: number, children: (pid: number) => number[]): number | undefined {
  return children(daemonPid)[0];
}

export async function runScale(
  dir: WorkDir,
  opts: ScaleOptions,
  childrenOf: (pid: number) => number[],
): Promise<ScaleResult> {
  const per = new Map<number, { rss: number[]; rss64: number[]; create: number[]; agent: number[] }>();
  const live0 = new Map<number, number>();
  const rawRss: number[] = [];
  const rawRss64: number[] = [];
  for (let rep = 0; rep < opts.reps; rep++) {
    const acpd = await startAcpd({
      workspace: dir.workspace,
      dataDir: join(dir.dataDir, `scale-${rep}`),
      logDir: dir.logDir,
      // Pool off: every create is a session/new of the agent, the path whose cost is compared to the floor.
      args: ['--max-sessions', '0', ...poolOff()],
    });
    const http = new HttpClient(acpd.baseUrl);
    try {
      let live = 0;
      const ids: string[] = [];
      const create = async (): Promise<number> => {
        const { body, ms } = await http.ok('/session', { sessionScope: 'thread' });
        ids.push(stringField(body, 'sessionId'));
        live++;
        return ms;
      };
      // The first create spawns the agent; it is not one of the timed ones.
      await create();
      for (const level of opts.levels) {
        while (live < Math.max(level, 1)) await create();
        const slot = per.get(level) ?? { rss: [], rss64: [], create: [], agent: [] };
        live0.set(level, live);
        slot.rss.push(await settledRssMb(acpd.pid));
        const agentPid = agentPidOf(acpd.pid, childrenOf);
        slot.agent.push(agentPid === undefined ? Number.NaN : rssKb(agentPid) / 1024);
        const subs = await openMany(`${acpd.baseUrl}/session/${ids[0]}/events`, opts.subscribers, () => ({}));
        slot.rss64.push(await settledRssMb(acpd.pid));
        for (let i = 0; i < opts.creates; i++) slot.create.push(await create());
        for (const s of subs) s.close();
        per.set(level, slot);
        log(
          `  scale rep ${rep + 1}: ${level} sessions → rss ${slot.rss.at(-1)?.toFixed(1)} MB, +${opts.subscribers} subs ${slot.rss64.at(-1)?.toFixed(1)} MB, create p50 ${summarize(slot.create.slice(-opts.creates)).median.toFixed(2)} ms`,
        );
      }
    } finally {
      http.close();
      await acpd.stop();
    }

    const raw = await startRawServer(dir.workspace, dir.logDir);
    try {
      rawRss.push(await settledRssMb(raw.pid));
      const subs = await openMany(`${raw.baseUrl}/events`, opts.subscribers, () => ({}));
      rawRss64.push(await settledRssMb(raw.pid));
      for (const s of subs) s.close();
    } finally {
      await raw.stop();
    }
  }

  const floor = new BareAgent({
    argv: [process.execPath, embeddedAgentPath, '--data-dir', join(dir.root, 'scale-floor')],
    cwd: dir.workspace,
    env: process.env,
    logFile: join(dir.logDir, 'scale-floor.log'),
  });
  const floorCreate: number[] = [];
  try {
    await floor.initialize();
    await floor.newSession(dir.workspace);
    for (let i = 0; i < opts.creates * 2; i++) floorCreate.push((await floor.newSession(dir.workspace)).ms);
  } finally {
    await floor.close();
  }

  const stages = await startupStages(dir.workspace, opts.reps);
  log(`  start-up RSS: ${stages.map((st) => `${st.stage} ${st.rssMb.median.toFixed(0)} MB`).join(', ')}`);
  const dependencies = await dependencyCosts();

  return {
    stages,
    dependencies,
    levels: opts.levels.map((sessions) => {
      const s = per.get(sessions) ?? { rss: [], rss64: [], create: [], agent: [] };
      return {
        sessions,
        liveSessions: live0.get(sessions) ?? sessions,
        rssMb: summarize(s.rss),
        rssMb64: summarize(s.rss64),
        createMs: summarize(s.create),
        agentRssMb: summarize(s.agent),
      };
    }),
    floorCreateMs: summarize(floorCreate),
    rawRssMb: summarize(rawRss),
    rawRssMb64: summarize(rawRss64),
  };
}
