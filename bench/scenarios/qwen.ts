// 5. Against the qwen daemon: `qwen serve` and acpd, both hosting the real `qwen --acp` against
// the fake model of ../shared/tools (harness/ starts the daemons and the model, as for the
// peer run), driven by the same client. And the floor: a bare ACP client over stdio to the same
// agent. All contenders run side by side and every measurement goes round them in turn (rotating
// who goes first), so that whatever else the machine is doing hits them alike.
//
// Per daemon: RSS; create latency with a warm agent; prompt → first frame; `load` of a session
// persisted by an earlier process (the agent already warm); the reply of a prompt fanned out to 10
// subscribers. qwen serve answers a prompt with 202 and ends the turn with a turn_complete frame;
// acpd answers 200 at the end of the turn: the client waits for whichever applies.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FakeModel } from '../../harness/fake-model.js';
import { agentCommand, startDaemon } from '../../harness/peer-daemon.js';
import { checkPrerequisites, makeHome, packageVersion, peerEnv, qwenCli, qwenPkgDir } from '../../harness/peer-env.js';
import { childrenOf, cmdline, rssKb, statOf } from '../../harness/proc-table.js';
import { within } from '../../harness/wait.js';
import { BareAgent } from '../lib/acp-client.js';
import { HttpClient, stringField, textPrompt } from '../lib/http.js';
import { hasWarmSessions, poolOff, startAcpd } from '../lib/procs.js';
import { nowMs, openMany, type SseStream } from '../lib/sse.js';
import { summarize, type Summary } from '../lib/stats.js';
import { isRecord, log, type WorkDir } from '../lib/util.js';

/**
 * qwen serve; acpd with every create going to the agent (`--warm-sessions 0` where the build has
 * the pool); acpd with a pool of one warm session (only where it has).
 */
type Contender = 'qwen' | 'acpd' | 'acpd-warm';

export interface DaemonFigures {
  kind: Contender;
  /**
   * The start-up rounds: spawn → the "listening on" line, the process's CPU time then, and its RSS
   * 300 ms later (the daemon process only, not an agent: neither spawns one before its first session).
   */
  startups: { ms: Summary; cpuMs: Summary; rssMb: Summary };
  coldCreateMs: number;
  createMs: Summary;
  /** POST prompt → first frame of any kind (qwen serve echoes the prompt itself). */
  firstFrameMs: Summary;
  /** POST prompt → first agent_message_chunk, first prompt of a session. */
  firstChunkMs: Summary;
  /** The same for a later prompt of the session. */
  firstChunkLaterMs: Summary;
  /** POST prompt → the reply chunk at all 10 subscribers. */
  fanout10Ms: Summary;
  loadMs: Summary;
  rssLoadedMb: Summary;
  agentRssMb: number;
}

interface FloorFigures {
  coldNewMs: number;
  newMs: Summary;
  loadMs: Summary;
}

export interface QwenResult {
  skipped?: string;
  version?: string;
  qwen?: DaemonFigures;
  acpd?: DaemonFigures;
  acpdWarm?: DaemonFigures;
  /** Whether this acpd build has --warm-sessions (issue 6's pool). */
  warmSessions: boolean;
  floor?: FloorFigures;
}

/** What the measurements need of a running daemon. */
interface Running {
  readonly baseUrl: string;
  readonly pid: number;
  stop(): Promise<void>;
  agentPids(): number[];
}

interface QwenOptions {
  reps: number;
  subscribers: number;
  /** Start-up rounds: each starts every daemon once, in turn, and stops it. */
  startReps: number;
}

const STEP_MS = 60_000;
/** Quiet time before each timed create/load/prompt, the same for every contender: the qwen agent
 * keeps working after a turn (memory and suggestion calls), and two cores are easily shared. */
const SETTLE_MS = 400;
/**
 * The peer run's HOME (harness/peer-env.ts), minus the agent's background model calls after each turn (follow-up
 * suggestions, managed memory extraction and consolidation): they keep the agent busy for a second
 * or more after a turn and blur every timing that follows. Same settings for every contender.
 */
function makeQuietHome(home: string): void {
  makeHome(home);
  const file = join(home, '.qwen', 'settings.json');
  const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
  const settings = isRecord(parsed) ? parsed : {};
  const ui = isRecord(settings.ui) ? settings.ui : {};
  const memory = isRecord(settings.memory) ? settings.memory : {};
  settings.ui = { ...ui, enableFollowupSuggestions: false };
  settings.memory = { ...memory, enableManagedAutoMemory: false, enableManagedAutoDream: false };
  writeFileSync(file, JSON.stringify(settings, null, 2));
}

const isPong = (frame: string): boolean =>
  frame.includes('"sessionUpdate":"agent_message_chunk"') && frame.includes('pong');
const isTurnEnd = (frame: string): boolean => frame.startsWith('id: ') && frame.includes('\nevent: turn_complete');

function step<T>(p: Promise<T>, label: string): Promise<T> {
  return within(p, label, STEP_MS);
}

// USER_HZ: the unit of utime and stime in /proc/<pid>/stat (100 on Linux).
const TICK_MS = 10;

/** Daemon RSS in MB, settled a moment (the agent's background model calls end meanwhile). */
async function rssMb(pid: number): Promise<number> {
  await sleep(300);
  return rssKb(pid) / 1024;
}

interface Turn {
  firstFrame: number;
  firstChunk: number;
  /** Reply chunk at the last of the subscribers. */
  allPong: number;
}

/** Subscribes `n` clients, prompts, and waits for the end of the turn. */
async function turn(
  d: Running & { kind: Contender },
  http: HttpClient,
  sid: string,
  n: number,
  text: string,
): Promise<Turn> {
  let firstFrame = Number.NaN;
  let firstChunk = Number.NaN;
  const pongs: Array<Promise<number>> = [];
  const pongResolvers: Array<(ms: number) => void> = [];
  let turnEnded: () => void = () => {};
  const ended = new Promise<void>((resolve) => {
    turnEnded = resolve;
  });
  const subs: SseStream[] = await openMany(`${d.baseUrl}/session/${sid}/events`, n, (k) => {
    pongs.push(new Promise((resolve) => pongResolvers.push(resolve)));
    let seen = false;
    return {
      onFrame: (frame, id, recvNs) => {
        if (id === 0) return;
        const ms = recvNs / 1e6;
        if (k === 0 && Number.isNaN(firstFrame)) firstFrame = ms;
        if (!seen && isPong(frame)) {
          seen = true;
          if (k === 0) firstChunk = ms;
          pongResolvers[k](ms);
        }
        if (k === 0 && isTurnEnd(frame)) turnEnded();
      },
    };
  });
  try {
    const started = nowMs();
    const res = await step(http.post(`/session/${sid}/prompt`, textPrompt(text)), `${d.kind} prompt`);
    if (res.status === 202) await step(ended, `${d.kind} turn_complete`);
    else if (res.status !== 200)
      throw new Error(`${d.kind} prompt → ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
    const allPong = Math.max(...(await step(Promise.all(pongs), `${d.kind} reply at ${n} subscribers`)));
    return { firstFrame: firstFrame - started, firstChunk: firstChunk - started, allPong: allPong - started };
  } finally {
    for (const s of subs) s.close();
  }
}

function starter(kind: Contender, dir: WorkDir, env: NodeJS.ProcessEnv): () => Promise<Running & { kind: Contender }> {
  const dataDir = join(dir.dataDir, kind);
  if (kind === 'qwen') {
    return async () => {
      const d = await startDaemon('qwen', { logDir: dir.logDir, workspace: dir.workspace, dataDir, env });
      return { kind, baseUrl: d.baseUrl, pid: d.pid, stop: () => d.stop(), agentPids: () => d.agentPids() };
    };
  }
  // The peer run's command line for acpd (harness/peer-daemon.ts, the same agent command), plus
  // the pool setting, which that harness does not pass.
  const args = kind === 'acpd' ? poolOff() : ['--warm-sessions', '1'];
  return async () => {
    const d = await startAcpd({
      workspace: dir.workspace,
      dataDir,
      logDir: dir.logDir,
      env,
      agent: agentCommand(),
      args,
    });
    return {
      kind,
      baseUrl: d.baseUrl,
      pid: d.pid,
      stop: () => d.stop(),
      agentPids: () => childrenOf(d.pid).filter((p) => cmdline(p).includes('--acp')),
    };
  };
}

/** One daemon under measurement, with what has been measured so far. */
class Contestant {
  d: (Running & { kind: Contender }) | undefined;
  http: HttpClient | undefined;
  readonly sids: string[] = [];
  coldCreateMs = Number.NaN;
  agentRssMb = Number.NaN;
  readonly startMs: number[] = [];
  readonly startCpuMs: number[] = [];
  readonly idleRssMb: number[] = [];
  readonly create: number[] = [];
  readonly firstFrame: number[] = [];
  readonly firstChunk: number[] = [];
  readonly firstChunkLater: number[] = [];
  readonly fanout: number[] = [];
  readonly load: number[] = [];
  readonly rssLoaded: number[] = [];

  constructor(
    readonly kind: Contender,
    private readonly start: () => Promise<Running & { kind: Contender }>,
  ) {}

  /**
   * One start-up round: spawn → listening, the CPU the process had used by then, its RSS once idle a
   * moment (no agent yet: neither daemon spawns one before its first session); then stopped.
   */
  async startOnce(): Promise<void> {
    const t0 = nowMs();
    const d = await this.start();
    try {
      this.startMs.push(nowMs() - t0);
      const stat = statOf(d.pid);
      this.startCpuMs.push(stat === undefined ? Number.NaN : (stat.utime + stat.stime) * TICK_MS);
      this.idleRssMb.push(await rssMb(d.pid));
    } finally {
      await d.stop();
    }
  }

  /** Starts the daemon and warms its agent up with one create (timed as the cold create on the first start). */
  async up(first: boolean): Promise<void> {
    this.d = await this.start();
    this.http = new HttpClient(this.d.baseUrl);
    const cold = await this.newSession();
    if (first) this.coldCreateMs = cold.ms;
  }

  async newSession(): Promise<{ sid: string; ms: number }> {
    const { body, ms } = await step(this.client().ok('/session', { sessionScope: 'thread' }), `${this.kind} create`);
    return { sid: stringField(body, 'sessionId'), ms };
  }

  client(): HttpClient {
    if (!this.http) throw new Error(`${this.kind} is not running`);
    return this.http;
  }

  running(): Running & { kind: Contender } {
    if (!this.d) throw new Error(`${this.kind} is not running`);
    return this.d;
  }

  async down(): Promise<void> {
    this.http?.close();
    this.http = undefined;
    await this.d?.stop();
    this.d = undefined;
  }

  figures(): DaemonFigures {
    return {
      kind: this.kind,
      startups: { ms: summarize(this.startMs), cpuMs: summarize(this.startCpuMs), rssMb: summarize(this.idleRssMb) },
      coldCreateMs: this.coldCreateMs,
      createMs: summarize(this.create),
      firstFrameMs: summarize(this.firstFrame),
      firstChunkMs: summarize(this.firstChunk),
      firstChunkLaterMs: summarize(this.firstChunkLater),
      fanout10Ms: summarize(this.fanout),
      loadMs: summarize(this.load),
      rssLoadedMb: summarize(this.rssLoaded),
      agentRssMb: this.agentRssMb,
    };
  }
}

/** The floor: the same agent behind a bare ACP client, no daemon. */
class Floor {
  agent: BareAgent | undefined;
  readonly sids: string[] = [];
  coldNewMs = Number.NaN;
  readonly create: number[] = [];
  readonly load: number[] = [];

  constructor(
    private readonly spawnAgent: () => BareAgent,
    private readonly cwd: string,
  ) {}

  async up(first: boolean): Promise<void> {
    this.agent = this.spawnAgent();
    await step(this.agent.initialize(), 'floor initialize');
    const cold = await step(this.agent.newSession(this.cwd), 'floor cold new');
    if (first) this.coldNewMs = cold.ms;
  }

  bare(): BareAgent {
    if (!this.agent) throw new Error('floor agent is not running');
    return this.agent;
  }

  async down(): Promise<void> {
    await this.agent?.close();
    this.agent = undefined;
  }
}

/** Runs `fns` in a rotated order: round i starts with the (i mod n)-th. */
async function rotate(round: number, fns: Array<() => Promise<void>>): Promise<void> {
  for (let k = 0; k < fns.length; k++) {
    await sleep(SETTLE_MS);
    await fns[(round + k) % fns.length]();
  }
}

async function measureAll(
  dir: WorkDir,
  fake: FakeModel,
  opts: QwenOptions,
  kinds: Contender[],
): Promise<{ daemons: DaemonFigures[]; floor: FloorFigures }> {
  const contestants = kinds.map((kind) => {
    const home = join(dir.root, `home-${kind}`);
    makeQuietHome(home);
    return new Contestant(kind, starter(kind, dir, peerEnv(home, fake.baseUrl)));
  });
  const floorHome = join(dir.root, 'home-floor');
  makeQuietHome(floorHome);
  const floorEnv = peerEnv(floorHome, fake.baseUrl);
  const floor = new Floor(
    () =>
      new BareAgent({
        argv: [process.execPath, qwenCli, '--acp'],
        cwd: dir.workspace,
        env: floorEnv,
        logFile: join(dir.logDir, 'floor-qwen.log'),
      }),
    dir.workspace,
  );
  const all = async (fn: (c: Contestant) => Promise<void>): Promise<void> => {
    for (const c of contestants) await fn(c);
  };
  try {
    // Phase 0: start-up, many times over: a single start on a 2-core machine is mostly the machine's load.
    for (let i = 0; i < opts.startReps; i++)
      await rotate(
        i,
        contestants.map((c) => () => c.startOnce()),
      );
    // Phase 1: creates, first prompts, prompts fanned out to 10 subscribers; every session gets
    // the same two turns (also what makes qwen persist it).
    await floor.up(true);
    await all((c) => c.up(true));
    for (let i = 0; i < opts.reps; i++) {
      await rotate(i, [
        async () => {
          const s = await step(floor.bare().newSession(dir.workspace), 'floor new');
          floor.sids.push(s.sessionId);
          floor.create.push(s.ms);
        },
        ...contestants.map((c) => async () => {
          const s = await c.newSession();
          c.sids.push(s.sid);
          c.create.push(s.ms);
        }),
      ]);
    }
    for (let i = 0; i < opts.reps; i++) {
      await rotate(i, [
        async () => {
          const sid = floor.sids[i] ?? '';
          await step(
            floor.bare().timed('session/prompt', { sessionId: sid, prompt: textPrompt('hello').prompt }),
            'floor prompt',
          );
          await step(
            floor.bare().timed('session/prompt', { sessionId: sid, prompt: textPrompt('hello again').prompt }),
            'floor prompt',
          );
        },
        ...contestants.map((c) => async () => {
          const t = await turn(c.running(), c.client(), c.sids[i] ?? '', 1, 'hello');
          c.firstFrame.push(t.firstFrame);
          c.firstChunk.push(t.firstChunk);
        }),
      ]);
    }
    for (let i = 0; i < opts.reps; i++) {
      await rotate(
        i,
        contestants.map((c) => async () => {
          const t = await turn(c.running(), c.client(), c.sids[i] ?? '', opts.subscribers, 'hello again');
          c.fanout.push(t.allPong);
          c.firstChunkLater.push(t.firstChunk);
          c.rssLoaded.push(await rssMb(c.running().pid));
        }),
      );
    }
    await all(async (c) => {
      const agentPid = c.running().agentPids()[0];
      c.agentRssMb = agentPid === undefined ? Number.NaN : rssKb(agentPid) / 1024;
      log(
        `  ${c.kind}: startup p50 ${summarize(c.startMs).median.toFixed(0)} ms (CPU ${summarize(c.startCpuMs).median.toFixed(0)} ms, idle RSS ${summarize(c.idleRssMb).median.toFixed(1)} MB), cold create ${c.coldCreateMs.toFixed(0)} ms, warm create p50 ${summarize(c.create).median.toFixed(1)} ms, first chunk p50 ${summarize(c.firstChunk).median.toFixed(1)} ms, fan-out to ${opts.subscribers} p50 ${summarize(c.fanout).median.toFixed(1)} ms, rss ${summarize(c.rssLoaded).median.toFixed(1)} MB`,
      );
    });

    // Phase 2: new processes over the same HOMEs, so the sessions are on disk only; one create
    // warms each agent up, then the sessions are loaded, round by round.
    await floor.down();
    await all((c) => c.down());
    await floor.up(false);
    await all((c) => c.up(false));
    for (let i = 0; i < opts.reps; i++) {
      await rotate(i, [
        async () => {
          const r = await step(
            floor.bare().timed('session/load', { sessionId: floor.sids[i] ?? '', cwd: dir.workspace, mcpServers: [] }),
            'floor load',
          );
          floor.load.push(r.ms);
        },
        ...contestants.map((c) => async () => {
          c.load.push((await step(c.client().ok(`/session/${c.sids[i] ?? ''}/load`, {}), `${c.kind} load`)).ms);
        }),
      ]);
    }
  } finally {
    await floor.down();
    await all((c) => c.down());
  }
  const floorFigures = { coldNewMs: floor.coldNewMs, newMs: summarize(floor.create), loadMs: summarize(floor.load) };
  log(
    `  floor (bare ACP client → qwen --acp): new p50 ${floorFigures.newMs.median.toFixed(1)} ms, load p50 ${floorFigures.loadMs.median.toFixed(1)} ms`,
  );
  for (const c of contestants) log(`  ${c.kind}: load p50 ${summarize(c.load).median.toFixed(1)} ms`);
  return { daemons: contestants.map((c) => c.figures()), floor: floorFigures };
}

export async function runQwen(dir: WorkDir, opts: QwenOptions): Promise<QwenResult> {
  const warmSessions = hasWarmSessions();
  const missing = checkPrerequisites();
  if (missing.length > 0) return { warmSessions, skipped: `qwen peers not installed: ${missing.join('; ')}` };
  const fake = await FakeModel.start(dir.logDir, process.env);
  try {
    const kinds: Contender[] = warmSessions ? ['qwen', 'acpd', 'acpd-warm'] : ['qwen', 'acpd'];
    const { daemons, floor } = await measureAll(dir, fake, opts, kinds);
    const of = (k: Contender): DaemonFigures | undefined => daemons.find((d) => d.kind === k);
    return {
      version: packageVersion(qwenPkgDir),
      warmSessions,
      floor,
      qwen: of('qwen'),
      acpd: of('acpd'),
      acpdWarm: of('acpd-warm'),
    };
  } finally {
    await fake.stop();
  }
}
