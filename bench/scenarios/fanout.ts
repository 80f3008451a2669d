// 1. Fan-out: one session, S SSE subscribers, the agent floods N updates as fast as it can.
// Frames/s delivered to all subscribers, and publish → receive latency of every (frame, subscriber).
//
// Publish time: acpd cannot be asked when it published an event, so the flood agent stamps each
// chunk with CLOCK_MONOTONIC when it writes the line to its stdout; the latency therefore covers
// agent → pipe → acpd (parse, validate, bus, serialize) → socket → client. The raw baseline stamps
// each frame right before its first socket write. Throughput counts from frame 1's stamp to the
// moment the last subscriber has frame N.
import { randomUUID } from 'node:crypto';
import { HttpClient, stringField, textPrompt } from '../lib/http.js';
import { cpuMs, childrenOf } from '../../harness/proc-table.js';
import {
  embeddedAgentPath,
  floodAgentCommand,
  type Server,
  startAcpd,
  startRawServer,
  startRelayServer,
} from '../lib/procs.js';
import { nowMs, openMany, type SseStream } from '../lib/sse.js';
import { latencyPercentiles, round } from '../lib/stats.js';
import { log, type WorkDir } from '../lib/util.js';
import { floodFrame, stampOf, unstamped } from '../baseline/frames.js';
import { commandLine } from '../../harness/peer-daemon.js';

/**
 * The id of a flood's first chunk in a fresh acpd session: the daemon numbers the prompt's echo (a
 * `user_message_chunk`) 1 before the agent's first chunk. The raw server numbers its frames from here
 * too, so that both write the same bytes (`sameBytes` checks it).
 */
export const FLOOD_FIRST_ID = 2;

/**
 * `acpd` runs with its default (durable SQLite) event log, `acpd-memory` with `--event-log memory`;
 * `relay` is the floor of relaying the same flood agent (baseline/relay-sse-server).
 */
type FanoutSystem = 'acpd' | 'acpd-memory' | 'raw' | 'relay' | 'acpd-embedded';

export interface FanoutRun {
  system: FanoutSystem;
  subscribers: number;
  frames: number;
  elapsedMs: number;
  framesPerSec: number;
  /** NaN where publish time is not observable (embedded agent). */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  evicted: number;
  bytesPerSubscriber: number;
  /** CPU the server process used during the run (ms), and per 1000 delivered frames. */
  serverCpuMs: number;
  serverCpuMsPer1k: number;
  /** The agent process's CPU (acpd with the flood agent only). */
  agentCpuMs: number;
}

interface Collect {
  recv: Float64Array[];
  stamps: Float64Array;
}

function collector(subscribers: number, frames: number): Collect {
  return {
    recv: Array.from({ length: subscribers }, () => new Float64Array(frames).fill(Number.NaN)),
    stamps: new Float64Array(frames).fill(Number.NaN),
  };
}

/** Whose CPU time a run charges: the server, and the agent when there is one. */
interface CpuOf {
  server: number;
  agent?: number;
}

async function measure(
  cpu: CpuOf,
  system: FanoutSystem,
  url: string,
  subscribers: number,
  frames: number,
  trigger: () => Promise<void>,
  stamped: boolean,
  sample?: (frame: string) => void,
): Promise<FanoutRun> {
  const c = collector(subscribers, frames);
  const done: Array<Promise<number>> = [];
  const finished: Array<(ms: number) => void> = [];
  const endMarker = ` ${frames}/${frames} `;
  const embeddedEnd = `flood ${frames}/${frames}\\n`;
  const subs: SseStream[] = await openMany(url, subscribers, (k) => {
    done.push(new Promise((resolve) => finished.push(resolve)));
    let idx = 0;
    return {
      onFrame: (frame, id, recvNs) => {
        // The flood's chunks only: not the id-less opening frames, the prompt's echo or turn_complete.
        if (id === 0 || !frame.includes('agent_message_chunk')) return;
        const recvMs = recvNs / 1e6;
        if (idx < frames) c.recv[k][idx] = recvMs;
        if (k === 0) {
          if (stamped && idx < frames) c.stamps[idx] = stampOf(frame);
          if (idx === 0 && sample) sample(frame);
        }
        idx++;
        if (frame.includes(endMarker) || frame.includes(embeddedEnd)) finished[k](recvMs);
      },
    };
  });
  const cpu0 = cpuMs(cpu.server);
  const agent0 = cpu.agent === undefined ? Number.NaN : cpuMs(cpu.agent);
  const started = nowMs();
  await trigger();
  const ends = await Promise.all(done.map((p, k) => Promise.race([p, subs[k].ended.then(() => Number.NaN)])));
  const serverCpuMs = cpuMs(cpu.server) - cpu0;
  const agentCpuMs = cpu.agent === undefined ? Number.NaN : cpuMs(cpu.agent) - agent0;
  for (const s of subs) s.close();
  const last = Math.max(...ends);
  // The embedded agent carries no stamp: count from the prompt request instead.
  const first = stamped ? c.stamps[0] : started;
  const elapsedMs = last - first;
  let p50Ms = Number.NaN;
  let p99Ms = Number.NaN;
  let maxMs = Number.NaN;
  if (stamped) {
    const lat = new Float64Array(frames * subscribers);
    let n = 0;
    for (const r of c.recv) for (let j = 0; j < frames; j++) lat[n++] = r[j] - c.stamps[j];
    ({ p50: p50Ms, p99: p99Ms, max: maxMs } = latencyPercentiles(lat));
  }
  return {
    system,
    subscribers,
    frames,
    elapsedMs: round(elapsedMs),
    framesPerSec: round((frames * subscribers) / (elapsedMs / 1000), 0),
    p50Ms: round(p50Ms),
    p99Ms: round(p99Ms),
    maxMs: round(maxMs),
    // Evicted, or the stream ended before frame N.
    evicted: subs.filter((s, k) => s.evicted || !Number.isFinite(ends[k] ?? Number.NaN)).length,
    bytesPerSubscriber: subs[0]?.bytes ?? 0,
    serverCpuMs: round(serverCpuMs, 1),
    serverCpuMsPer1k: round((serverCpuMs * 1000) / (frames * subscribers), 3),
    agentCpuMs: round(agentCpuMs, 1),
  };
}

interface FanoutContext {
  acpd: Server;
  /** The same daemon and agent with the in-memory event log: what the durable log costs. */
  acpdMemory: Server;
  raw: Server;
  relay: Server;
  embedded: Server | undefined;
}

export async function startFanoutServers(
  dir: WorkDir,
  nodeArgs: string[] = [],
  embedded = true,
): Promise<FanoutContext> {
  const acpd = await startAcpd({
    workspace: dir.workspace,
    dataDir: dir.dataDir,
    logDir: dir.logDir,
    agent: floodAgentCommand(),
    args: ['--max-sessions', '0'],
    nodeArgs,
  });
  const acpdMemory = await startAcpd({
    workspace: dir.workspace,
    dataDir: `${dir.dataDir}-memory`,
    logDir: dir.logDir,
    agent: floodAgentCommand(),
    args: ['--max-sessions', '0', '--event-log', 'memory'],
    nodeArgs,
  });
  const raw = await startRawServer(dir.workspace, dir.logDir);
  const relay = await startRelayServer(dir.workspace, dir.logDir);
  const emb = embedded
    ? await startAcpd({
        workspace: dir.workspace,
        dataDir: `${dir.dataDir}-embedded`,
        logDir: dir.logDir,
        agent: commandLine([process.execPath, embeddedAgentPath, '--data-dir', `${dir.dataDir}-embedded/sessions`]),
        args: ['--max-sessions', '0'],
      })
    : undefined;
  return { acpd, acpdMemory, raw, relay, embedded: emb };
}

/** One acpd run: a fresh session (ids from 1, an empty subscriber set), S subscribers, `flood N`. */
export async function runAcpd(
  server: Server,
  subscribers: number,
  frames: number,
  system: FanoutSystem = 'acpd',
  sample?: (f: string) => void,
): Promise<FanoutRun> {
  const client = new HttpClient(server.baseUrl);
  try {
    const { body } = await client.ok('/session', { sessionScope: 'thread' });
    const sid = stringField(body, 'sessionId');
    const text = system === 'acpd-embedded' ? `/flood ${frames}` : `flood ${frames}`;
    const agent = childrenOf(server.pid)[0];
    return await measure(
      { server: server.pid, agent },
      system,
      `${server.baseUrl}/session/${sid}/events`,
      subscribers,
      frames,
      async () => {
        await client.ok(`/session/${sid}/prompt`, textPrompt(text));
      },
      system !== 'acpd-embedded',
      sample,
    );
  } finally {
    client.close();
  }
}

/** One run of the relay floor: the flood agent's `flood N`, relayed to S subscribers. */
export async function runRelay(server: Server, subscribers: number, frames: number): Promise<FanoutRun> {
  const client = new HttpClient(server.baseUrl);
  try {
    return await measure(
      { server: server.pid, agent: childrenOf(server.pid)[0] },
      'relay',
      `${server.baseUrl}/events`,
      subscribers,
      frames,
      async () => {
        await client.ok('/flood', { count: frames, firstId: FLOOD_FIRST_ID, subscribers });
      },
      true,
    );
  } finally {
    client.close();
  }
}

export async function runRaw(
  server: Server,
  subscribers: number,
  frames: number,
  sample?: (f: string) => void,
): Promise<FanoutRun> {
  const client = new HttpClient(server.baseUrl);
  try {
    const sessionId = randomUUID();
    return await measure(
      { server: server.pid },
      'raw',
      `${server.baseUrl}/events`,
      subscribers,
      frames,
      async () => {
        await client.ok('/flood', { count: frames, firstId: FLOOD_FIRST_ID, sessionId, subscribers });
      },
      true,
      sample,
    );
  } finally {
    client.close();
  }
}

/**
 * Do acpd's frames and the raw server's frames have the same bytes (stamps aside)? Each first frame
 * must be exactly `floodFrame` of its own session (a random UUID each, of the same length), with the
 * same id and count.
 */
export function sameBytes(acpdFrame: string, rawFrame: string): boolean {
  const expected = (frame: string): string => {
    const sid = /"sessionId":"([^"]+)"/.exec(frame)?.[1] ?? '';
    const count = /flood 1\/(\d+) /.exec(frame)?.[1] ?? '0';
    return floodFrame(FLOOD_FIRST_ID, sid, 1, Number(count));
  };
  const a = unstamped(`${acpdFrame}\n\n`);
  const r = unstamped(`${rawFrame}\n\n`);
  return a === expected(acpdFrame) && r === expected(rawFrame) && a.length === r.length;
}

export function logRun(r: FanoutRun): void {
  log(
    `  fanout ${r.system.padEnd(13)} S=${String(r.subscribers).padStart(2)} N=${r.frames}: ${r.framesPerSec.toFixed(0).padStart(8)} frames/s  p50 ${r.p50Ms.toFixed(2)} ms  p99 ${r.p99Ms.toFixed(2)} ms  cpu ${r.serverCpuMsPer1k.toFixed(2)} ms/1k frames${r.evicted ? `  EVICTED ${r.evicted}` : ''}`,
  );
}
