// Reads a V8 .cpuprofile (node --cpu-prof) and says where the time went: self time per function
// and per area of the hot path, counting only the samples inside a time window (the fan-out run;
// V8 stamps samples with the same monotonic clock as process.hrtime, in microseconds).
import { readFileSync } from 'node:fs';
import { isRecord } from './util.js';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

interface ProfileFrame {
  name: string;
  where: string;
  selfMs: number;
  selfPct: number;
}

interface ProfileArea {
  area: string;
  selfMs: number;
  selfPct: number;
}

export interface ProfileSummary {
  windowMs: number;
  sampledMs: number;
  busyPct: number;
  top: ProfileFrame[];
  areas: ProfileArea[];
}

function isProfile(v: unknown): v is CpuProfile {
  return (
    isRecord(v) &&
    Array.isArray(v.nodes) &&
    Array.isArray(v.samples) &&
    Array.isArray(v.timeDeltas) &&
    typeof v.startTime === 'number'
  );
}

/** The area of the hot path a frame belongs to (first match wins). */
const AREAS: Array<[string, (f: CallFrame) => boolean]> = [
  ['idle', (f) => f.functionName === '(idle)'],
  ['garbage collection', (f) => f.functionName === '(garbage collector)'],
  ['V8/native (program)', (f) => f.functionName === '(program)'],
  [
    'promises / microtasks',
    (f) => (f.url === '' && f.functionName === 'runMicrotasks') || f.url === 'node:internal/process/task_queues',
  ],
  [
    'node http/net/stream write path',
    (f) =>
      f.url === '' &&
      /^(writev|writeUtf8String|writeLatin1String|writeBuffer|writeAsciiString|writeUcs2String)$/.test(f.functionName),
  ],
  [
    'JSON.parse / JSON.stringify',
    (f) => f.url === '' && /^(parse|stringify|JSONParse|JSONStringify)$/.test(f.functionName),
  ],
  // JSON.stringify is a builtin V8 inlines into its caller: its time shows as makeEvent's own.
  [
    'envelope serialization (makeEvent: JSON.stringify)',
    (f) => f.url.includes('/services/event-bus.js') && f.functionName === 'makeEvent',
  ],
  ['ring append (Ring.push)', (f) => f.url.includes('/services/event-bus.js') && f.functionName === 'push'],
  ['event bus (fan-out queues, iterator)', (f) => f.url.includes('/services/event-bus.js')],
  [
    'SSE route + @fastify/sse (frame formatting, send)',
    (f) => f.url.includes('/routes/events.js') || f.url.includes('@fastify/sse'),
  ],
  ['zod validation (ACP SDK schemas)', (f) => f.url.includes('/zod/')],
  ['ACP SDK (JSON-RPC, ndjson)', (f) => f.url.includes('@agentclientprotocol/sdk')],
  ['web streams (Readable.toWeb / ndJsonStream)', (f) => f.url.startsWith('node:internal/webstreams')],
  [
    'node http/net/stream write path',
    (f) => /^node:(_http|net|internal\/streams|internal\/stream_base|stream|internal\/net)/.test(f.url),
  ],
  [
    'fastify / avvio / pino',
    (f) => /node_modules\/(fastify|avvio|pino|light-my-request|find-my-way|@fastify)/.test(f.url),
  ],
  ['acpd (other)', (f) => f.url.includes('/dist/')],
  ['node internals (other)', (f) => f.url.startsWith('node:')],
  ['other', () => true],
];

function shortUrl(url: string): string {
  const nm = url.lastIndexOf('node_modules/');
  if (nm !== -1) return url.slice(nm + 'node_modules/'.length);
  const dist = url.lastIndexOf('/dist/');
  if (dist !== -1) return url.slice(dist + 1);
  return url.replace(/^file:\/\//, '');
}

export function summarizeProfile(file: string, window?: { fromMs: number; toMs: number }, topN = 15): ProfileSummary {
  const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
  if (!isProfile(parsed)) throw new Error(`${file} is not a .cpuprofile`);
  const byId = new Map<number, ProfileNode>();
  for (const n of parsed.nodes) byId.set(n.id, n);
  const from = window ? window.fromMs * 1000 : -Infinity;
  const to = window ? window.toMs * 1000 : Infinity;
  const self = new Map<number, number>();
  let t = parsed.startTime;
  let total = 0;
  for (let i = 0; i < parsed.samples.length; i++) {
    t += parsed.timeDeltas[i] ?? 0;
    const dur = parsed.timeDeltas[i + 1] ?? 0;
    if (t < from || t > to || dur <= 0) continue;
    const id = parsed.samples[i];
    self.set(id, (self.get(id) ?? 0) + dur);
    total += dur;
  }
  const byFn = new Map<string, { name: string; where: string; us: number }>();
  const byArea = new Map<string, number>();
  let idle = 0;
  for (const [id, us] of self) {
    const node = byId.get(id);
    if (!node) continue;
    const f = node.callFrame;
    const area = AREAS.find(([, match]) => match(f))?.[0] ?? 'other';
    byArea.set(area, (byArea.get(area) ?? 0) + us);
    if (area === 'idle') {
      idle += us;
      continue;
    }
    const where = f.url === '' ? '(native)' : `${shortUrl(f.url)}:${f.lineNumber + 1}`;
    const key = `${f.functionName}@${where}`;
    const e = byFn.get(key) ?? { name: f.functionName || '(anonymous)', where, us: 0 };
    e.us += us;
    byFn.set(key, e);
  }
  const busy = total - idle;
  const pct = (us: number): number => (busy > 0 ? Math.round((us / busy) * 1000) / 10 : 0);
  return {
    windowMs: window ? Math.round(window.toMs - window.fromMs) : Math.round((parsed.endTime - parsed.startTime) / 1000),
    sampledMs: Math.round(total / 1000),
    busyPct: total > 0 ? Math.round((busy / total) * 1000) / 10 : 0,
    top: [...byFn.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, topN)
      .map((e) => ({ name: e.name, where: e.where, selfMs: Math.round(e.us / 100) / 10, selfPct: pct(e.us) })),
    areas: [...byArea.entries()]
      .filter(([area]) => area !== 'idle')
      .sort((a, b) => b[1] - a[1])
      .map(([area, us]) => ({ area, selfMs: Math.round(us / 100) / 10, selfPct: pct(us) })),
  };
}
