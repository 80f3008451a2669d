// 6. The cluster (issue 13): Redis, N acpd nodes with the embedded agent and nginx in front
// (harness/cluster.ts), every client going through nginx as deploy/nginx-cluster.conf balances it.
//
// Throughput with 1, 2 and 3 nodes, the three clusters up side by side and their repetitions
// interleaved, the 1-node cluster being the baseline: S sessions (spread over the nodes by nginx's
// round robin) each followed by F clients, every session flooding N chunks at once (frames/s
// delivered to all followers), then many short prompts sent concurrently across the sessions
// (prompts/s answered).
//
// Failover: 3 nodes; followers of the sessions owned by one node read through nginx while those
// sessions stream; that node gets SIGKILL. Per client: the time until its stream delivers frames
// again (cut streams reconnect through nginx to a live node, which serves the log from Redis), and
// per session the time until it answers a prompt again (retried through nginx until 200: a live node
// may take the session over only once the dead node's lease has expired). With the default lease TTL
// and a short one.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCluster, type Cluster } from '../../harness/cluster.js';
import { ConfigSchema } from '../../src/config/schema.js';
import { HttpClient, stringField, textPrompt } from '../lib/http.js';
import { nowMs, openSse, type SseStream } from '../lib/sse.js';
import { summarize, type Summary } from '../lib/stats.js';
import { log } from '../lib/util.js';

/** acpd's lease TTL when --lease-ttl is not given (seconds). */
export const DEFAULT_LEASE_TTL_S = Number(ConfigSchema.properties.ACPD_LEASE_TTL.default);

export interface ClusterThroughputRow {
  nodes: number;
  /** Numbered frames received by all followers / wall time of the flood turn. */
  fps: Summary;
  /** Short prompts answered (200) per second through nginx. */
  promptsPerSec: Summary;
  /** One prompt's round trip through nginx (and a forward, when another node owns the session), ms. */
  promptMs: Summary;
  /** How the S sessions were spread: owner node → sessions. */
  owners: Record<string, number>;
  /** Medians against the 1-node cluster's. */
  fpsRatio: number;
  promptsRatio: number;
  /**
   * The same ratios repetition by repetition (each against the 1-node figure of its own repetition,
   * measured next to it): how far the load of the machine moved them.
   */
  fpsRatioPerRep: Summary;
  promptsRatioPerRep: Summary;
}

export interface ClusterFailoverRow {
  leaseTtlS: number;
  /** Whether that TTL is acpd's default. */
  isDefault: boolean;
  reps: number;
  /** Sessions owned by the killed node (all repetitions). */
  sessions: number;
  followers: number;
  /** Followers whose stream the killed node was serving. */
  cutFollowers: number;
  /** SIGKILL → first frame on a cut follower's new stream (ms), one sample per cut follower. */
  streamMs: Summary;
  /** SIGKILL → a prompt to one of the dead node's sessions answers 200 (ms), one sample per session. */
  answerMs: Summary;
  /** Refusals met while retrying that prompt, by status (502 from nginx, 503 from a node). */
  refusals: Record<string, number>;
}

export interface ClusterResult {
  cpus: number;
  sessions: number;
  followersPerSession: number;
  floodChunks: number;
  prompts: number;
  promptConcurrency: number;
  throughput: ClusterThroughputRow[];
  failover: ClusterFailoverRow[];
  /** Over every follower of the run: ids that skipped ahead, repeated, and resync frames. Should all be 0. */
  integrity: { gaps: number; duplicates: number; resyncs: number };
}

export interface ClusterOptions {
  nodeCounts: number[];
  reps: number;
  sessions: number;
  followersPerSession: number;
  floodChunks: number;
  /** Short prompts per repetition, in all. */
  prompts: number;
  /** Prompts in flight at once per session (the rest wait their turn in the client). */
  promptsPerSession: number;
  failover: {
    ttls: Array<number | undefined>;
    reps: number;
    victimSessions: number;
    followersPerSession: number;
  };
}

interface Connection {
  /** The node serving it (X-Acpd-Node). */
  node: string;
  openedMs: number;
  /** When its first event frame (not the `retry:` line) arrived; NaN until then. */
  firstEventMs: number;
}

interface Waiter {
  afterId: number;
  resolve: (recvMs: number) => void;
}

/**
 * A client following one session through nginx: from its first event on, reconnecting as soon as a
 * stream ends, with its cursor (`Last-Event-ID`) and its epoch (`X-Qwen-Event-Epoch`). It reconnects
 * at once rather than after the stream's `retry:` hint (3 s), so what it measures is the cluster's
 * part of a failover, not the client's back-off.
 */
class Follower {
  cursor = 0;
  numbered = 0;
  gaps = 0;
  duplicates = 0;
  resyncs = 0;
  /** Each connection: the node serving it, when it opened, when its first event frame came. */
  readonly connections: Connection[] = [];
  private epoch: string | undefined;
  private stream: SseStream | undefined;
  private stopped = false;
  private waiters: Waiter[] = [];
  private readyResolve: () => void = () => {};
  /** Resolves once the first stream delivered its opening frames. */
  readonly ready = new Promise<void>((resolve) => {
    this.readyResolve = resolve;
  });
  readonly done: Promise<void>;

  constructor(
    private readonly url: string,
    private readonly headers: Record<string, string>,
  ) {
    this.done = this.run();
  }

  /** The receive time of the first `turn_complete` or `turn_error` with an id above `afterId`. */
  turnEnd(afterId: number): Promise<number> {
    return new Promise((resolve) => this.waiters.push({ afterId, resolve }));
  }

  /** The node serving the current stream. */
  get node(): string | undefined {
    return this.connections.at(-1)?.node;
  }

  stop(): void {
    this.stopped = true;
    this.stream?.close();
  }

  private onFrame(conn: Connection, frame: string, id: number, recvNs: number): void {
    const isEvent = frame.startsWith('id: ') || frame.startsWith('event: ');
    if (isEvent && Number.isNaN(conn.firstEventMs)) {
      conn.firstEventMs = recvNs / 1e6;
      this.readyResolve();
    }
    if (frame.includes('event: state_resync_required\n')) this.resyncs++;
    if (id === 0) return;
    if (id <= this.cursor) {
      this.duplicates++;
      return;
    }
    if (id !== this.cursor + 1) this.gaps++;
    this.cursor = id;
    this.numbered++;
    if (
      this.waiters.length > 0 &&
      (frame.includes('event: turn_complete\n') || frame.includes('event: turn_error\n'))
    ) {
      this.waiters = this.waiters.filter((w) => {
        if (id <= w.afterId) return true;
        w.resolve(recvNs / 1e6);
        return false;
      });
    }
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const headers: Record<string, string> = { ...this.headers };
      if (this.epoch !== undefined) headers['x-qwen-event-epoch'] = this.epoch;
      // The first frames may be read with the response head, before `openSse` resolves.
      const conn: Connection = { node: '', openedMs: nowMs(), firstEventMs: Number.NaN };
      try {
        const s = await openSse(
          this.url,
          { lastEventId: this.cursor, onFrame: (f, id, ns) => this.onFrame(conn, f, id, ns) },
          headers,
        );
        this.stream = s;
        if (this.stopped) s.close();
        if (s.status === 200) {
          const epoch = s.headers['x-qwen-event-epoch'];
          if (typeof epoch === 'string') this.epoch = epoch;
          conn.node = String(s.headers['x-acpd-node']);
          this.connections.push(conn);
          await s.ended;
          continue;
        }
        s.close();
      } catch {
        // Refused or reset on the way: try again.
      }
      // Something refused the stream: do not spin on it.
      if (!this.stopped) await sleep(20);
    }
  }
}

interface Bed {
  nodes: number;
  cluster: Cluster;
  http: HttpClient;
  sessions: string[];
  owners: Record<string, number>;
  followers: Follower[];
}

const FLOOD_TIMEOUT_MS = 120_000;

async function createSession(http: HttpClient): Promise<{ id: string; node: string }> {
  const res = await http.request('POST', '/session', { sessionScope: 'thread' }, {}, 30_000);
  if (res.status !== 200 || typeof res.body !== 'object' || res.body === null) {
    throw new Error(`POST /session → ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
  }
  return {
    id: stringField(res.body as Record<string, unknown>, 'sessionId'),
    node: String(res.headers['x-acpd-node']),
  };
}

async function promptAsync(http: HttpClient, sessionId: string, text: string): Promise<void> {
  const res = await http.request(
    'POST',
    `/session/${sessionId}/prompt`,
    textPrompt(text),
    { prefer: 'respond-async', 'idempotency-key': randomUUID() },
    30_000,
  );
  if (res.status !== 202) throw new Error(`async prompt → ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
}

/** Opens `perSession` followers on each session, into `followers` (so that a failure leaves them for stopping). */
async function followAll(
  cluster: Cluster,
  sessions: string[],
  perSession: number,
  followers: Follower[],
): Promise<void> {
  // One after the other, so that nginx's round robin spreads them over the nodes.
  for (const id of sessions) {
    for (let j = 0; j < perSession; j++) {
      const f = new Follower(`${cluster.front}/session/${id}/events`, cluster.headers);
      followers.push(f);
      await cluster.within(f.ready, 'a follower connected');
    }
  }
}

async function startBed(nodes: number, opts: ClusterOptions): Promise<Bed> {
  // No cap on sessions or queued prompts: the bench measures throughput, not admission.
  const cluster = await startCluster({ nodes, args: ['--max-sessions', '0', '--max-pending-prompts', '0'] });
  const http = new HttpClient(cluster.front, cluster.headers);
  const sessions: string[] = [];
  const owners: Record<string, number> = {};
  for (let i = 0; i < opts.sessions; i++) {
    const s = await createSession(http);
    sessions.push(s.id);
    owners[s.node] = (owners[s.node] ?? 0) + 1;
  }
  const followers: Follower[] = [];
  try {
    await followAll(cluster, sessions, opts.followersPerSession, followers);
  } catch (err) {
    await stopBed({ nodes, cluster, http, sessions, owners, followers });
    throw err;
  }
  return { nodes, cluster, http, sessions, owners, followers };
}

/** One flood on every session at once: frames/s delivered to all followers. */
async function floodOnce(bed: Bed, chunks: number): Promise<number> {
  const before = bed.followers.map((f) => ({ cursor: f.cursor, numbered: f.numbered }));
  const ends = bed.followers.map((f, i) => f.turnEnd(before[i]?.cursor ?? 0));
  const t0 = nowMs();
  await Promise.all(bed.sessions.map((id) => promptAsync(bed.http, id, `/flood ${chunks}`)));
  const last = Math.max(
    ...(await bed.cluster.within(Promise.all(ends), 'every follower saw its flood end', FLOOD_TIMEOUT_MS)),
  );
  const frames = bed.followers.reduce((n, f, i) => n + f.numbered - (before[i]?.numbered ?? 0), 0);
  return (frames / (last - t0)) * 1000;
}

/** `count` short prompts, `perSession` in flight on each session: answered per second, and each one's time. */
async function promptsOnce(
  bed: Bed,
  count: number,
  perSession: number,
  tag: string,
): Promise<{ perSec: number; ms: number[] }> {
  let next = 0;
  const ms: number[] = [];
  const worker = async (sessionId: string): Promise<void> => {
    while (next < count) {
      const n = next++;
      const res = await bed.http.request('POST', `/session/${sessionId}/prompt`, textPrompt(`${tag}-${n}`), {}, 30_000);
      if (res.status !== 200) throw new Error(`prompt → ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
      ms.push(res.ms);
    }
  };
  const t0 = nowMs();
  await bed.cluster.within(
    Promise.all(bed.sessions.flatMap((id) => Array.from({ length: perSession }, () => worker(id)))),
    'the prompts answered',
    FLOOD_TIMEOUT_MS,
  );
  return { perSec: (count / (nowMs() - t0)) * 1000, ms };
}

async function stopBed(bed: Bed): Promise<void> {
  bed.followers.forEach((f) => f.stop());
  await Promise.all(bed.followers.map((f) => f.done));
  bed.http.close();
  await bed.cluster.stop();
}

interface Integrity {
  gaps: number;
  duplicates: number;
  resyncs: number;
}

function tally(into: Integrity, followers: Follower[]): void {
  for (const f of followers) {
    into.gaps += f.gaps;
    into.duplicates += f.duplicates;
    into.resyncs += f.resyncs;
  }
}

/** xs[i] / base[i] for every repetition i. */
function paired(xs: number[], base: number[]): Summary {
  return summarize(xs.map((x, i) => x / (base[i] ?? Number.NaN)));
}

async function throughput(opts: ClusterOptions, integrity: Integrity): Promise<ClusterThroughputRow[]> {
  const beds: Bed[] = [];
  const fps = new Map<number, number[]>();
  const pps = new Map<number, number[]>();
  const pms = new Map<number, number[]>();
  try {
    for (const n of opts.nodeCounts) {
      const bed = await startBed(n, opts);
      beds.push(bed);
      log(`  cluster of ${n}: sessions by owner ${JSON.stringify(bed.owners)}`);
      // Untimed warm-up: every node's agent, Redis streams and forwards in use once.
      await floodOnce(bed, Math.ceil(opts.floodChunks / 10));
      await promptsOnce(bed, opts.sessions * 2, 1, 'warm');
    }
    for (let rep = 0; rep < opts.reps; rep++) {
      // Alternate the order, so that no cluster always runs on a warmer (or busier) machine.
      const order = rep % 2 === 0 ? beds : [...beds].reverse();
      for (const bed of order) {
        const f = await floodOnce(bed, opts.floodChunks);
        const p = await promptsOnce(bed, opts.prompts, opts.promptsPerSession, `r${rep}`);
        fps.set(bed.nodes, [...(fps.get(bed.nodes) ?? []), f]);
        pps.set(bed.nodes, [...(pps.get(bed.nodes) ?? []), p.perSec]);
        pms.set(bed.nodes, [...(pms.get(bed.nodes) ?? []), ...p.ms]);
        log(
          `  cluster rep ${rep + 1}, ${bed.nodes} node${bed.nodes > 1 ? 's' : ''}: ${Math.round(f)} frames/s, ${p.perSec.toFixed(0)} prompts/s`,
        );
      }
    }
  } finally {
    for (const bed of beds) {
      tally(integrity, bed.followers);
      await stopBed(bed);
    }
  }
  const base = opts.nodeCounts[0] ?? 1;
  const baseFps = summarize(fps.get(base) ?? []).median;
  const basePps = summarize(pps.get(base) ?? []).median;
  return beds.map((bed) => {
    const f = summarize(fps.get(bed.nodes) ?? []);
    const p = summarize(pps.get(bed.nodes) ?? []);
    const ms = summarize(pms.get(bed.nodes) ?? []);
    // Every prompt's time is a sample here: keep the summary, not thousands of numbers.
    ms.samples = [];
    return {
      nodes: bed.nodes,
      fps: f,
      promptsPerSec: p,
      promptMs: ms,
      owners: bed.owners,
      fpsRatio: f.median / baseFps,
      promptsRatio: p.median / basePps,
      fpsRatioPerRep: paired(fps.get(bed.nodes) ?? [], fps.get(base) ?? []),
      promptsRatioPerRep: paired(pps.get(bed.nodes) ?? [], pps.get(base) ?? []),
    };
  });
}

interface FailoverSample {
  sessions: number;
  followers: number;
  streamMs: number[];
  answerMs: number[];
  refusals: Record<string, number>;
}

/** Retries one prompt (same Idempotency-Key) through nginx until it is answered 200; resolves with that time. */
async function promptUntilAnswered(
  http: HttpClient,
  sessionId: string,
  refusals: Record<string, number>,
  deadlineMs: number,
): Promise<number> {
  let key = randomUUID();
  for (;;) {
    if (nowMs() > deadlineMs) {
      throw new Error(
        `session ${sessionId} did not answer a prompt again in time (refusals so far: ${JSON.stringify(refusals)})`,
      );
    }
    let status = 'error';
    try {
      const res = await http.request(
        'POST',
        `/session/${sessionId}/prompt`,
        textPrompt('are you back?'),
        { 'idempotency-key': key },
        10_000,
      );
      if (res.status === 200) return nowMs();
      const code =
        typeof res.body === 'object' && res.body !== null ? (res.body as { code?: unknown }).code : undefined;
      status = typeof code === 'string' ? `${res.status} ${code}` : String(res.status);
      // A claim under that key was cut off with its node: the prompt may not have run; ask anew.
      if (res.status === 409) key = randomUUID();
    } catch {
      // A reset or a timeout: counted, then retried like a refusal.
    }
    refusals[status] = (refusals[status] ?? 0) + 1;
    await sleep(100);
  }
}

async function failoverOnce(
  ttl: number | undefined,
  opts: ClusterOptions,
  integrity: Integrity,
): Promise<FailoverSample> {
  const fo = opts.failover;
  const cluster = await startCluster({
    nodes: 3,
    ...(ttl === undefined ? {} : { leaseTtl: ttl }),
    args: ['--max-sessions', '0'],
  });
  const http = new HttpClient(cluster.front, cluster.headers);
  const followers: Follower[] = [];
  try {
    // Sessions made through nginx land on the nodes in turn: make them until the first one's owner has enough.
    const made = [await createSession(http)];
    const victim = made[0]?.node ?? '';
    while (made.filter((s) => s.node === victim).length < fo.victimSessions) made.push(await createSession(http));
    const victimIndex = cluster.nodes.findIndex((n) => n.id === victim);
    const mine = made.filter((s) => s.node === victim).map((s) => s.id);
    await followAll(cluster, mine, fo.followersPerSession, followers);
    // One finished turn first: the embedded agent writes a session's file only when a turn ends, and a
    // live node can restore only a session that has one (one cut off in its first turn is gone).
    for (const id of mine) {
      const res = await http.request('POST', `/session/${id}/prompt`, textPrompt('hello'), {}, 30_000);
      if (res.status !== 200) throw new Error(`first prompt → ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
    }
    // The victim's sessions stream when it dies: a slow turn each, seen arriving by every follower.
    const cursors = followers.map((f) => f.cursor);
    for (const id of mine) await promptAsync(http, id, '/slow 5000 10');
    await cluster.until(
      () => followers.every((f, i) => f.cursor > (cursors[i] ?? 0) + 2),
      'every follower receives the slow turn',
      { ms: 30_000, everyMs: 20 },
    );
    const cut = followers.filter((f) => f.node === victim);
    const cutConnections = cut.map((f) => f.connections.length);
    const tKill = nowMs();
    const refusals: Record<string, number> = {};
    const deadline = tKill + (ttl ?? DEFAULT_LEASE_TTL_S) * 1000 * 5 + 30_000;
    // SIGKILL is sent before killNode first waits (for every process of the node to be gone); the
    // clients start retrying only then, so that no prompt of theirs reaches the node before it dies.
    const killed = cluster.killNode(victimIndex);
    const answers = Promise.all(mine.map((id) => promptUntilAnswered(http, id, refusals, deadline)));
    await killed;
    const answered = await answers;
    // Every cut follower is on a new stream by now (or never will be: then the wait fails).
    await cluster.until(
      () => cut.every((f, i) => f.connections.slice(cutConnections[i]).some((c) => Number.isFinite(c.firstEventMs))),
      'every cut follower streaming again',
      { ms: 30_000, everyMs: 20 },
    );
    const streamMs = cut.map((f, i) => {
      const c = f.connections.slice(cutConnections[i]).find((x) => Number.isFinite(x.firstEventMs));
      return (c?.firstEventMs ?? Number.NaN) - tKill;
    });
    const moved = cut.filter((f) => f.node === victim).length;
    if (moved > 0) throw new Error(`${moved} cut follower(s) reconnected to the dead node`);
    return {
      sessions: mine.length,
      followers: followers.length,
      streamMs,
      answerMs: answered.map((t) => t - tKill),
      refusals,
    };
  } finally {
    followers.forEach((f) => f.stop());
    await Promise.all(followers.map((f) => f.done));
    tally(integrity, followers);
    http.close();
    await cluster.stop();
  }
}

async function failover(opts: ClusterOptions, integrity: Integrity): Promise<ClusterFailoverRow[]> {
  const rows: ClusterFailoverRow[] = [];
  for (const ttl of opts.failover.ttls) {
    const samples: FailoverSample[] = [];
    for (let rep = 0; rep < opts.failover.reps; rep++) {
      const s = await failoverOnce(ttl, opts, integrity);
      samples.push(s);
      log(
        `  failover rep ${rep + 1}, lease TTL ${ttl ?? `${DEFAULT_LEASE_TTL_S} (default)`} s: ${s.streamMs.length} cut stream(s) back in ${s.streamMs.map((x) => x.toFixed(0)).join('/')} ms, ${s.sessions} session(s) answering in ${s.answerMs.map((x) => x.toFixed(0)).join('/')} ms`,
      );
    }
    const refusals: Record<string, number> = {};
    for (const s of samples) for (const [k, v] of Object.entries(s.refusals)) refusals[k] = (refusals[k] ?? 0) + v;
    rows.push({
      leaseTtlS: ttl ?? DEFAULT_LEASE_TTL_S,
      isDefault: ttl === undefined,
      reps: samples.length,
      sessions: samples.reduce((n, s) => n + s.sessions, 0),
      followers: samples.reduce((n, s) => n + s.followers, 0),
      cutFollowers: samples.reduce((n, s) => n + s.streamMs.length, 0),
      streamMs: summarize(samples.flatMap((s) => s.streamMs)),
      answerMs: summarize(samples.flatMap((s) => s.answerMs)),
      refusals,
    });
  }
  return rows;
}

export async function runCluster(opts: ClusterOptions, cpus: number): Promise<ClusterResult> {
  const integrity: Integrity = { gaps: 0, duplicates: 0, resyncs: 0 };
  const rows = await throughput(opts, integrity);
  const fail = await failover(opts, integrity);
  return {
    cpus,
    sessions: opts.sessions,
    followersPerSession: opts.followersPerSession,
    floodChunks: opts.floodChunks,
    prompts: opts.prompts,
    promptConcurrency: opts.promptsPerSession,
    throughput: rows,
    failover: fail,
    integrity,
  };
}
