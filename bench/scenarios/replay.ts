// 2. Replay: a reconnect with `Last-Event-ID: 0` on a full ring (4000 frames). Time from the
// request to the last replayed frame, against the raw server writing the very same bytes (captured
// from acpd's first replay) one write per frame — and, as the absolute floor, in one write.
import { HttpClient, stringField, textPrompt } from '../lib/http.js';
import type { Server } from '../lib/procs.js';
import { nowMs, openSse } from '../lib/sse.js';
import { summarize, type Summary } from '../lib/stats.js';
import { log } from '../lib/util.js';

export interface ReplayResult {
  frames: number;
  bytes: number;
  acpd: Summary;
  /** The same replay from acpd with `--event-log memory`. */
  acpdMemory?: Summary;
  raw: Summary;
  rawSingleWrite: Summary;
}

const RING = 4000;

async function timeTo(
  url: string,
  lastId: number,
  lastEventId: number | undefined,
  keepBytes = false,
): Promise<{ ms: number; frames: number; raw: Buffer }> {
  const started = nowMs();
  const s = await openSse(url, { lastEventId, keepBytes });
  if (s.status !== 200) throw new Error(`GET ${url} → ${s.status}`);
  const at = await s.waitForId(lastId);
  s.close();
  if (!Number.isFinite(at)) throw new Error(`${url}: stream ended before frame ${lastId}`);
  return { ms: at - started, frames: s.idFrames, raw: Buffer.concat(s.chunks) };
}

/** Strips the leading `retry:` frame: the raw server writes its own. */
function framesOnly(raw: Buffer): Buffer {
  const first = raw.indexOf('\n\n');
  return raw.subarray(0, 6).toString() === 'retry:' && first !== -1 ? raw.subarray(first + 2) : raw;
}

/** A session whose ring is full after one flood past its size: the ring holds the last RING events. */
async function fullSession(server: Server): Promise<string> {
  const http = new HttpClient(server.baseUrl);
  try {
    const { body } = await http.ok('/session', { sessionScope: 'thread' });
    const sid = stringField(body, 'sessionId');
    await http.ok(`/session/${sid}/prompt`, textPrompt(`flood ${TOTAL}`));
    return `${server.baseUrl}/session/${sid}/events`;
  } finally {
    http.close();
  }
}

const TOTAL = RING + 100;

export async function runReplay(acpd: Server, raw: Server, reps: number, acpdMemory?: Server): Promise<ReplayResult> {
  const total = TOTAL;
  const url = await fullSession(acpd);
  const memoryUrl = acpdMemory && (await fullSession(acpdMemory));
  const first = await timeTo(url, total, 0, true);
  if (first.frames !== RING) throw new Error(`replay gave ${first.frames} frames, expected ${RING}`);
  const bytes = framesOnly(first.raw);
  await putRaw(raw.baseUrl, bytes);
  const acpdMs: number[] = [];
  const memoryMs: number[] = [];
  const rawMs: number[] = [];
  const singleMs: number[] = [];
  // One untimed round of each warms both servers up.
  for (let rep = 0; rep <= reps; rep++) {
    const a = await timeTo(url, total, 0);
    const mem = memoryUrl === undefined ? undefined : await timeTo(memoryUrl, total, 0);
    const r = await timeTo(`${raw.baseUrl}/replay`, total, undefined);
    const s = await timeTo(`${raw.baseUrl}/replay?single=1`, total, undefined);
    if (rep === 0) continue;
    acpdMs.push(a.ms);
    if (mem) memoryMs.push(mem.ms);
    rawMs.push(r.ms);
    singleMs.push(s.ms);
  }
  const result = {
    frames: RING,
    bytes: bytes.length,
    acpd: summarize(acpdMs),
    ...(memoryMs.length > 0 ? { acpdMemory: summarize(memoryMs) } : {}),
    raw: summarize(rawMs),
    rawSingleWrite: summarize(singleMs),
  };
  log(
    `  replay ${RING} frames (${(bytes.length / 1024).toFixed(0)} KiB): acpd ${result.acpd.median.toFixed(2)} ms${result.acpdMemory ? `, acpd memory log ${result.acpdMemory.median.toFixed(2)} ms` : ''}, raw ${result.raw.median.toFixed(2)} ms, raw single write ${result.rawSingleWrite.median.toFixed(2)} ms`,
  );
  return result;
}

async function putRaw(baseUrl: string, bytes: Buffer): Promise<void> {
  const res = await fetch(`${baseUrl}/replay`, { method: 'PUT', body: bytes });
  if (res.status !== 200) throw new Error(`PUT /replay → ${res.status}`);
  await res.arrayBuffer();
}
