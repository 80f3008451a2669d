// 7. Many sessions: 200 live sessions on one daemon, each streaming a reply at a steady rate to one
// subscriber, with two more prompts queued behind the running one (sent together with
// `Prefer: respond-async`). The aggregate rate is stepped up until p99 frame latency passes 50 ms;
// each step reports p50/p99 (publish stamp → client receive, over every frame of every session),
// the daemon's CPU (share of one core over the step) and its RSS (highest sample in the step).
//
// acpd hosts bench/agents/flood-agent (`rate <n> <perSec>`: chunks spaced 1/perSec apart, each
// stamped when written, sessions side by side on one agent process). The baseline is the raw
// node:http writer (bench/baseline/raw-sse-server `POST /rate`), pacing the same frames per session
// the same way. The qwen daemon is not run here: it hosts only its own agent, whose replies come
// from a model and cannot be paced or stamped, so no like-for-like stream exists for it.
import { cpuMs, rssKb } from '../../harness/proc-table.js';
import { stampOf } from '../baseline/frames.js';
import { HttpClient, stringField, textPrompt } from '../lib/http.js';
import { floodAgentCommand, startAcpd, startRawServer, type Server } from '../lib/procs.js';
import { nowMs, openSse, type SseStream } from '../lib/sse.js';
import { latencyPercentiles, round } from '../lib/stats.js';
import { log, type WorkDir } from '../lib/util.js';

/** The latency bound a step must keep to count. */
export const MANY_P99_BOUND_MS = 50;

export interface ManyPlan {
  sessions: number;
  /** Aggregate frames/s over all sessions, stepped up in this order. */
  rates: number[];
  /** Seconds each prompt streams; a session runs 1 + queued prompts of it per step. */
  promptSeconds: number;
  queued: number;
}

export interface ManyStep {
  rate: number;
  perSession: number;
  frames: number;
  received: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** The daemon's CPU over the step, % of one core. */
  cpuPct: number;
  rssMb: number;
  elapsedS: number;
}

export interface ManySide {
  /** RSS with every session live and subscribed, before the first step. */
  idleRssMb: number;
  steps: ManyStep[];
  /** The highest stepped rate whose p99 stayed under the bound (0 when none did). */
  best: number;
}

export interface ManyResult {
  sessions: number;
  queued: number;
  promptSeconds: number;
  boundMs: number;
  acpd: ManySide;
  raw: ManySide;
}

/**
 * Every chunk frame received, and the latencies of those after the settling time: the step's
 * first moments (600 prompt requests, 200 replies starting in the same millisecond) are a burst,
 * not the steady rate the step is about.
 */
class Collector {
  received = 0;
  lat: number[] = [];
  settledAtMs = 0;
  onFrame = (frame: string, _id: number, recvNs: number): void => {
    if (!frame.includes('agent_message_chunk')) return;
    this.received++;
    const stamp = stampOf(frame);
    if (Number.isFinite(stamp) && recvNs / 1e6 >= this.settledAtMs) this.lat.push(recvNs / 1e6 - stamp);
  };
}

/** Latencies count from this long after a step starts. */
const SETTLE_MS = 500;

interface Target {
  pid: number;
  /** Starts every session's reply for one step; resolves when the daemon has taken them. */
  start(count: number, perSec: number, prompts: number): Promise<void>;
}

async function runStep(
  target: Target,
  collector: Collector,
  plan: ManyPlan,
  rate: number,
  streams: number,
): Promise<ManyStep> {
  const perSession = rate / plan.sessions;
  const count = Math.max(1, Math.round(perSession * plan.promptSeconds));
  const prompts = 1 + plan.queued;
  const frames = count * prompts * streams;
  collector.lat = [];
  collector.received = 0;
  collector.settledAtMs = nowMs() + SETTLE_MS;
  let rss = rssKb(target.pid);
  const sampler = setInterval(() => (rss = Math.max(rss, rssKb(target.pid))), 250);
  const cpu0 = cpuMs(target.pid);
  const t0 = performance.now();
  await target.start(count, perSession, prompts);
  const deadline = t0 + (prompts * plan.promptSeconds + 15) * 1000;
  while (collector.received < frames && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const elapsedMs = performance.now() - t0;
  clearInterval(sampler);
  const cpu = cpuMs(target.pid) - cpu0;
  const { p50, p99, max } = latencyPercentiles(Float64Array.from(collector.lat));
  return {
    rate,
    perSession: round(perSession, 2),
    frames,
    received: collector.received,
    p50Ms: round(p50),
    p99Ms: round(p99),
    maxMs: round(max),
    cpuPct: round((cpu / elapsedMs) * 100, 1),
    rssMb: round(Math.max(rss, rssKb(target.pid)) / 1024, 1),
    elapsedS: round(elapsedMs / 1000, 1),
  };
}

async function stepUp(name: string, target: Target, collector: Collector, plan: ManyPlan): Promise<ManySide> {
  const idleRssMb = round(rssKb(target.pid) / 1024, 1);
  // Untimed warm-up at the lowest rate, short: JIT and connection pools, on both sides alike.
  await runStep(target, collector, { ...plan, promptSeconds: 1, queued: 0 }, plan.rates[0] ?? 1000, plan.sessions);
  const steps: ManyStep[] = [];
  let best = 0;
  for (const rate of plan.rates) {
    const step = await runStep(target, collector, plan, rate, plan.sessions);
    steps.push(step);
    log(
      `  many ${name.padEnd(4)} ${String(rate).padStart(6)} frames/s: p50 ${step.p50Ms.toFixed(1)} ms  p99 ${step.p99Ms.toFixed(1)} ms  cpu ${step.cpuPct}%  rss ${step.rssMb} MB  (${step.received}/${step.frames} frames)`,
    );
    const kept = step.received === step.frames && step.p99Ms < MANY_P99_BOUND_MS;
    if (!kept) break;
    best = rate;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return { idleRssMb, steps, best };
}

async function acpdSide(dir: WorkDir, plan: ManyPlan): Promise<ManySide> {
  const server: Server = await startAcpd({
    workspace: dir.workspace,
    dataDir: `${dir.dataDir}-many`,
    logDir: dir.logDir,
    agent: floodAgentCommand(),
    // The default queue (5 waiting) holds the queued prompts.
    args: ['--max-sessions', '0'],
  });
  const client = new HttpClient(server.baseUrl);
  const collector = new Collector();
  const streams: SseStream[] = [];
  try {
    const ids: string[] = [];
    for (let i = 0; i < plan.sessions; i++) {
      const { body } = await client.ok('/session', { sessionScope: 'thread' });
      ids.push(stringField(body, 'sessionId'));
    }
    for (const id of ids) streams.push(await openSse(`${server.baseUrl}/session/${id}/events`, collector));
    const target: Target = {
      pid: server.pid,
      async start(count, perSec, prompts) {
        const sends: Array<Promise<unknown>> = [];
        for (let p = 0; p < prompts; p++) {
          // In order per session: the first runs, the others wait in its queue.
          for (const id of ids) {
            sends.push(
              client
                .request('POST', `/session/${id}/prompt`, textPrompt(`rate ${count} ${perSec}`), {
                  prefer: 'respond-async',
                })
                .then((res) => {
                  if (res.status !== 202) throw new Error(`prompt → ${res.status} ${JSON.stringify(res.body)}`);
                }),
            );
          }
          await Promise.all(sends);
        }
      },
    };
    return await stepUp('acpd', target, collector, plan);
  } finally {
    for (const s of streams) s.close();
    client.close();
    await server.stop();
  }
}

async function rawSide(dir: WorkDir, plan: ManyPlan): Promise<ManySide> {
  const server = await startRawServer(dir.workspace, dir.logDir);
  const client = new HttpClient(server.baseUrl);
  const collector = new Collector();
  const streams: SseStream[] = [];
  try {
    const ids = Array.from({ length: plan.sessions }, (_, i) => `raw-${i}`);
    for (const id of ids) streams.push(await openSse(`${server.baseUrl}/events?session=${id}`, collector));
    const target: Target = {
      pid: server.pid,
      async start(count, perSec, prompts) {
        // The raw writer has no queue: it streams the prompts one after another per session itself.
        void (async () => {
          for (let p = 0; p < prompts; p++) await client.ok('/rate', { sessionIds: ids, count, perSec });
        })();
        await Promise.resolve();
      },
    };
    return await stepUp('raw', target, collector, plan);
  } finally {
    for (const s of streams) s.close();
    client.close();
    await server.stop();
  }
}

export async function runMany(dir: WorkDir, plan: ManyPlan): Promise<ManyResult> {
  // One after the other: two writers stepping up side by side would take each other's cores.
  const acpd = await acpdSide(dir, plan);
  const raw = await rawSide(dir, plan);
  return {
    sessions: plan.sessions,
    queued: plan.queued,
    promptSeconds: plan.promptSeconds,
    boundMs: MANY_P99_BOUND_MS,
    acpd,
    raw,
  };
}
