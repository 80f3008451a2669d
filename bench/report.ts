// Renders bench/RESULTS.md and bench/charts/*.svg from one results JSON. run.ts calls it at the
// end of a run; `node build/bench/report.js bench/results/<date>.json` re-renders an older one.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Summary } from './lib/stats.js';
import { barChart, fmt, hbarChart } from './lib/svg.js';
import type { Results } from './results-types.js';
import { evaluateTargets } from './targets.js';
import type { DaemonFigures } from './scenarios/qwen.js';
import type { ManyStep } from './scenarios/many.js';
import { isRecord } from './lib/util.js';

/** "12.3 (11.0–14.2)": median and the range of the repetitions. */
function med(s: Summary | undefined, digits = 1): string {
  if (!s || s.n === 0 || !Number.isFinite(s.median)) return '—';
  const f = (v: number): string => (Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en-US') : v.toFixed(digits));
  return s.n === 1 ? f(s.median) : `${f(s.median)} (${f(s.min)}–${f(s.max)})`;
}

const ratio = (v: number): string => (Number.isFinite(v) ? `**${v.toFixed(2)}×**` : '—');
const bar = (series: string, s: Summary | undefined): { series: string; value: number; lo?: number; hi?: number } =>
  s ? { series, value: s.median, lo: s.min, hi: s.max } : { series, value: Number.NaN };

/** What each profile area is, in this code base (for the reading of the profile). */
const AREA_NOTES: Record<string, string> = {
  'garbage collection':
    'short-lived objects: per event, the copies zod builds while validating each update (intersections are merged into new objects) and the envelope, its JSON and its frame; per write, the batch string and the Buffer node makes of it',
  'node http/net/stream write path':
    'one `res.write` (chunked encoding, `writev` syscall) per subscriber per batch: the frames a subscriber has queued go out together',
  'SSE route + @fastify/sse (frame formatting, send)':
    "routes/events.ts joining a subscriber's queued frames (built once per event by the bus) into one write; @fastify/sse only sends the headers and heartbeats",
  'promises / microtasks':
    'the await per batch in routes/events.ts: the bus iterator when the queue is empty, and the wait for `drain` under back-pressure',
  'envelope serialization (makeEvent: JSON.stringify)': 'one JSON.stringify per event, shared by every subscriber',
  'ring append (Ring.push)': 'one slot write per event',
  'event bus (fan-out queues, iterator)': "handing each event to each subscriber's queue or waiting iterator",
  'JSON.parse / JSON.stringify':
    'one parse of each agent line and one stringify of each envelope (shared by all subscribers)',
  'zod validation (ACP SDK schemas)':
    'the ACP SDK validating every incoming session/update against its zod schemas (`mergeValues`/`handleIntersectionResults`: intersection types rebuilt object by object) — per event, whatever the subscriber count',
  'ACP SDK (JSON-RPC, ndjson)': "the SDK splitting and dispatching the agent's ndjson lines",
};

function machineLine(r: Results): string {
  const m = r.machine;
  return `${m.cpus} × ${m.cpuModel}, ${m.memGb} GB RAM, ${m.platform}, Node ${m.node} (load average at start ${m.loadAvg.join(' / ')})`;
}

function targetsSection(r: Results): string[] {
  // A run of some scenarios only (--only) may judge none.
  if (r.targets.length === 0) return [];
  const out = ['## Targets (issues 6, 12 and 16)', '', '| Target | Measured | Met |', '|---|---|---|'];
  for (const t of r.targets) {
    const met =
      t.met === undefined
        ? t.note?.startsWith('inconclusive')
          ? '❔ inconclusive'
          : 'n/a'
        : t.met
          ? '✅ met'
          : '❌ missed';
    out.push(`| ${t.target} | ${t.measured}${t.note ? ` — ${t.note}` : ''} | ${met} |`);
  }
  return [...out, ''];
}

function fanoutSection(r: Results, charts: Map<string, string>): string[] {
  const f = r.fanout;
  if (!f) return [];
  charts.set(
    'fanout',
    barChart(
      [
        {
          title: 'Fan-out: frames/s to all subscribers',
          unit: 'frames/s',
          groups: f.rows.map((row) => ({
            label: `${row.subscribers} sub${row.subscribers > 1 ? 's' : ''}`,
            bars: [
              bar('acpd', row.acpd.fps),
              ...(row.memoryLog ? [bar('acpd, memory log', row.memoryLog.fps)] : []),
              bar('raw node:http', row.raw.fps),
              ...(row.relay ? [bar('relay floor', row.relay.fps)] : []),
              ...(row.embedded ? [bar('acpd + embedded agent', row.embedded.fps)] : []),
            ],
          })),
        },
        {
          title: 'Publish → receive latency p99',
          unit: 'ms',
          log: true,
          groups: f.rows.map((row) => ({
            label: `${row.subscribers} sub${row.subscribers > 1 ? 's' : ''}`,
            bars: [bar('acpd', row.acpd.p99), bar('raw node:http', row.raw.p99)],
          })),
        },
      ],
      'bars: median of the repetitions; whiskers: min–max',
    ),
  );
  const out = [
    '## 1. Fan-out',
    '',
    "One session, S subscribers, the agent floods N `agent_message_chunk` updates as fast as it can. Frames/s = N × S divided by the time from the first frame's publish stamp to the last subscriber receiving frame N. Latency is over every (frame, subscriber) pair.",
    '',
    '![fan-out](charts/fanout.svg)',
    '',
    '| Subscribers | N | acpd frames/s | raw frames/s | acpd / raw | acpd p50 ms | raw p50 ms | acpd p99 ms | raw p99 ms | p99 acpd / raw | acpd + embedded agent frames/s |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const row of f.rows) {
    out.push(
      `| ${row.subscribers} | ${row.frames} | ${med(row.acpd.fps, 0)} | ${med(row.raw.fps, 0)} | ${ratio(row.fpsRatio)} | ${med(row.acpd.p50)} | ${med(row.raw.p50)} | ${med(row.acpd.p99)} | ${med(row.raw.p99)} | ${ratio(row.p99Ratio)} | ${med(row.embedded?.fps, 0)} |`,
    );
  }
  out.push(
    '',
    'What the durable log costs: the same flood through acpd with `--event-log memory` (every frame kept in memory only) beside the default SQLite log (every frame committed to `events.sqlite` before anyone is sent it):',
    '',
    '| Subscribers | acpd (SQLite log) frames/s | acpd (memory log) frames/s | SQLite / memory | SQLite log / raw | memory log / raw | CPU ms per 1000 frames, SQLite / memory |',
    '|---:|---:|---:|---:|---:|---:|---:|',
    ...f.rows
      .filter((row) => row.memoryLog)
      .map((row) => {
        const mem = row.memoryLog as NonNullable<typeof row.memoryLog>;
        return `| ${row.subscribers} | ${med(row.acpd.fps, 0)} | ${med(mem.fps, 0)} | ${ratio(row.acpd.fps.median / mem.fps.median)} | ${ratio(row.fpsRatio)} | ${ratio(mem.fps.median / row.raw.fps.median)} | ${med(row.acpd.cpuPer1k, 2)} / ${med(mem.cpuPer1k, 2)} |`;
      }),
    '',
    "What relaying an agent costs before any daemon work: the relay floor (`bench/baseline/relay-sse-server`) spawns the same flood agent, parses each of its lines once and writes acpd's very frame for it to every socket — no framework, bus, log or validation. The raw writer has no agent process and no pipe: on 2 cores, the agent's own CPU competes with the server's and the client's.",
    '',
    '| Subscribers | relay floor frames/s | relay / raw | acpd / relay | acpd (memory log) / relay |',
    '|---:|---:|---:|---:|---:|',
    ...f.rows
      .filter((row) => row.relay)
      .map((row) => {
        const relay = row.relay as NonNullable<typeof row.relay>;
        return `| ${row.subscribers} | ${med(relay.fps, 0)} | ${ratio(relay.fps.median / row.raw.fps.median)} | ${ratio(row.acpd.fps.median / relay.fps.median)} | ${row.memoryLog ? ratio(row.memoryLog.fps.median / relay.fps.median) : '—'} |`;
      }),
    '',
    'Server CPU per 1000 delivered frames (user + system time of the server process from /proc, so other load on the machine hardly moves it):',
    '',
    '| Subscribers | acpd ms | raw ms | acpd / raw | acpd + embedded agent ms |',
    '|---:|---:|---:|---:|---:|',
    ...f.rows.map(
      (row) =>
        `| ${row.subscribers} | ${med(row.acpd.cpuPer1k, 2)} | ${med(row.raw.cpuPer1k, 2)} | ${ratio(row.cpuRatio)} | ${med(row.embedded?.cpuPer1k, 2)} |`,
    ),
  );
  out.push(
    '',
    `- Same bytes: the raw server's frames ${f.sameBytes ? "are byte-identical to acpd's (stamps aside) — checked in this run" : "**differ** from acpd's: the frame format changed, update bench/baseline/frames.ts"}. Evicted subscribers: ${f.evictions}.`,
    '- **acpd** hosts `bench/agents/flood-agent` (a bare ndjson agent that stamps each chunk with CLOCK_MONOTONIC when it writes it), so latency covers agent → pipe → acpd → socket → client. **raw node:http** (`bench/baseline/raw-sse-server`) holds the same frames in memory and stamps each one right before its first socket write. Neither the embedded agent nor the steerable one can carry a publish time, so the embedded agent (`/flood N`) only gets a throughput column, timed from the prompt request.',
    "- Client, daemon and agent share the machine's cores: the client (one process reading every subscriber) is part of both measurements.",
    '',
  );
  return out;
}

function replaySection(r: Results, charts: Map<string, string>): string[] {
  const p = r.replay;
  if (!p) return [];
  charts.set(
    'replay',
    barChart(
      [
        {
          title: `Replay of ${p.frames} frames (Last-Event-ID: 0)`,
          unit: 'ms to the last frame',
          groups: [
            {
              label: `${p.frames} frames, ${(p.bytes / 1024).toFixed(0)} KiB`,
              bars: [
                bar('acpd', p.acpd),
                ...(p.acpdMemory ? [bar('acpd, memory log', p.acpdMemory)] : []),
                bar('raw, one write per frame', p.raw),
                bar('raw, one single write', p.rawSingleWrite),
              ],
            },
          ],
        },
      ],
      'bars: median; whiskers: min–max',
    ),
  );
  return [
    '## 2. Replay',
    '',
    `A reconnect with \`Last-Event-ID: 0\` on a full ring (${p.frames} frames, ${(p.bytes / 1024).toFixed(0)} KiB): time from the request to the last replayed frame. The raw server writes the very bytes acpd sent (captured in this run).`,
    '',
    '![replay](charts/replay.svg)',
    '',
    '| | ms to last frame | vs raw |',
    '|---|---:|---:|',
    `| acpd (SQLite log, the default) | ${med(p.acpd, 2)} | ${ratio(p.acpd.median / p.raw.median)} |`,
    ...(p.acpdMemory
      ? [
          `| acpd with \`--event-log memory\` | ${med(p.acpdMemory, 2)} | ${ratio(p.acpdMemory.median / p.raw.median)} |`,
        ]
      : []),
    `| raw node:http, one write per frame | ${med(p.raw, 2)} | 1.00× |`,
    `| raw node:http, one single write | ${med(p.rawSingleWrite, 2)} | ${(p.rawSingleWrite.median / p.raw.median).toFixed(2)}× |`,
    '',
  ];
}

function restoreSection(r: Results, charts: Map<string, string>): string[] {
  const rows = r.restore;
  if (!rows || rows.length === 0) return [];
  const turns = [...new Set(rows.map((x) => x.turns))];
  const find = (t: number, a: 'load' | 'resume') => rows.find((x) => x.turns === t && x.action === a);
  charts.set(
    'restore',
    barChart(
      [
        {
          title: 'Restore latency (embedded agent)',
          unit: 'ms',
          log: true,
          groups: turns.map((t) => ({
            label: `${t} turns`,
            bars: [
              bar('acpd load', find(t, 'load')?.acpd),
              bar('floor load', find(t, 'load')?.floor),
              bar('acpd resume', find(t, 'resume')?.acpd),
              bar('floor resume', find(t, 'resume')?.floor),
            ],
          })),
        },
      ],
      'floor: the same agent driven by a bare ACP client over stdio',
    ),
  );
  const out = [
    '## 3. Restore',
    '',
    "Sessions with 10 / 100 / 1000 stored turns (files written in the embedded agent's format), restored through acpd (`POST /session/:id/load|resume`, agent already running) and, as the floor, by a bare ACP client over stdio to the same agent. `load` replays the history (2 updates per turn) before it answers; `resume` does not.",
    '',
    '![restore](charts/restore.svg)',
    '',
    '| Turns | Action | acpd ms | floor ms | acpd − floor | acpd / floor |',
    '|---:|---|---:|---:|---:|---:|',
  ];
  for (const x of rows) {
    out.push(
      `| ${x.turns} | ${x.action} | ${med(x.acpd, 2)} | ${med(x.floor, 2)} | ${(x.acpd.median - x.floor.median).toFixed(2)} ms | ${ratio(x.acpd.median / x.floor.median)} |`,
    );
  }
  out.push(
    '',
    "- The floor's client parses and validates every replayed update itself (so does acpd, then publishes it to the session's bus); acpd's HTTP client only receives the small answer.",
    '',
  );
  return out;
}

function scaleSection(r: Results, charts: Map<string, string>): string[] {
  const s = r.scale;
  if (!s) return [];
  const label = (n: number): string => `${n} idle`;
  const liveNote = (l: { sessions: number; liveSessions: number }): string =>
    l.liveSessions !== l.sessions ? `${l.sessions} (${l.liveSessions} live)` : String(l.sessions);
  charts.set(
    'scale',
    barChart(
      [
        {
          title: 'Daemon RSS',
          unit: 'MB',
          groups: [
            ...s.levels.map((l) => ({
              label: `acpd, ${label(l.sessions)}`,
              bars: [bar('no subscriber', l.rssMb), bar('64 subscribers', l.rssMb64)],
            })),
            { label: 'raw node:http', bars: [bar('no subscriber', s.rawRssMb), bar('64 subscribers', s.rawRssMb64)] },
          ],
        },
        {
          title: 'POST /session latency',
          unit: 'ms',
          log: true,
          groups: [
            ...s.levels.map((l) => ({ label: label(l.sessions), bars: [bar('create', l.createMs)] })),
            { label: 'floor (stdio)', bars: [bar('create', s.floorCreateMs)] },
          ],
        },
      ],
      "raw node:http: idle / with 64 SSE streams; floor: the agent's own session/new over stdio",
    ),
  );
  const out = [
    '## 4. Scale of sessions',
    '',
    "acpd with the embedded agent, `--max-sessions 0`, thread-scoped sessions created up to each level (the lowest level keeps one session for the subscribers), then 64 SSE subscribers on one session; 10 creates timed at each level. Baselines: a raw node:http SSE server's RSS (idle, and holding 64 streams) and the agent's own `session/new` over stdio.",
    '',
    '![scale](charts/scale.svg)',
    '',
    '| Idle sessions | acpd RSS MB | + 64 subscribers | vs raw node:http (+64) | create ms | create − floor | agent RSS MB |',
    '|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const l of s.levels) {
    out.push(
      `| ${liveNote(l)} | ${med(l.rssMb)} | ${med(l.rssMb64)} | ${ratio(l.rssMb64.median / s.rawRssMb64.median)} | ${med(l.createMs, 2)} | ${(l.createMs.median - s.floorCreateMs.median).toFixed(2)} ms | ${med(l.agentRssMb)} |`,
    );
  }
  out.push(
    '',
    `Raw node:http SSE server: ${med(s.rawRssMb)} MB idle, ${med(s.rawRssMb64)} MB with 64 streams. Floor create (embedded agent over stdio): ${med(s.floorCreateMs, 2)} ms.`,
    '',
  );
  if (s.stages.length > 0) {
    out.push(
      'Where the idle footprint comes from — one process measuring its own RSS after a full GC at each start-up stage (bench/lib/rss-probe, the same sources as dist/):',
      '',
      '| Stage | RSS MB | heap used MB |',
      '|---|---:|---:|',
      ...s.stages.map((st) => `| ${st.stage} | ${med(st.rssMb)} | ${med(st.heapUsedMb)} |`),
      '',
    );
  }
  if (s.dependencies.length > 0) {
    out.push(
      `Each runtime dependency imported alone into a fresh node process adds (MB of RSS; they share much, so these do not add up): ${s.dependencies.map((d) => `${d.name} ${fmt(d.addedMb)}`).join(', ')}.`,
      '',
    );
  }
  return out;
}

function qwenSection(r: Results, charts: Map<string, string>): string[] {
  const q = r.qwen;
  if (!q) return [];
  const head = ['## 5. Against the qwen daemon', ''];
  if (q.skipped || !q.qwen || !q.acpd || !q.floor) {
    return [...head, `**Skipped:** ${q.skipped ?? 'incomplete results'}.`, ''];
  }
  const qw = q.qwen;
  const ac = q.acpd;
  const warm = q.acpdWarm;
  const fl = q.floor;
  const contenders: Array<[string, DaemonFigures]> = [
    ['qwen serve', qw],
    [q.warmSessions ? 'acpd, pool off' : 'acpd', ac],
    ...(warm ? [['acpd, warm pool of 1', warm] as [string, DaemonFigures]] : []),
  ];
  charts.set(
    'qwen',
    barChart(
      [
        {
          title: 'Latency, same agent (qwen --acp)',
          unit: 'ms',
          log: true,
          groups: [
            {
              label: 'create',
              bars: [bar('floor (bare ACP client)', fl.newMs), ...contenders.map(([n, d]) => bar(n, d.createMs))],
            },
            {
              label: 'load',
              bars: [bar('floor (bare ACP client)', fl.loadMs), ...contenders.map(([n, d]) => bar(n, d.loadMs))],
            },
            { label: 'prompt→chunk', bars: contenders.map(([n, d]) => bar(n, d.firstChunkLaterMs)) },
            { label: 'reply at 10 subs', bars: contenders.map(([n, d]) => bar(n, d.fanout10Ms)) },
          ],
        },
        {
          title: 'Daemon RSS (agent excluded)',
          unit: 'MB',
          groups: [
            { label: 'idle', bars: contenders.map(([n, d]) => bar(n, d.startups.rssMb)) },
            { label: 'loaded, 10 subs', bars: contenders.map(([n, d]) => bar(n, d.rssLoadedMb)) },
          ],
          lines: [{ value: qw.rssLoadedMb.median / 3, label: 'target: 1/3 of qwen serve' }],
        },
      ],
      `@qwen-code/qwen-code ${q.version ?? '?'} against ../shared/tools/fake-openai-server.mjs; bars: median, whiskers: min–max`,
    ),
  );
  const rowsOf = (
    label: string,
    pick: (d: DaemonFigures) => Summary | number,
    floor?: Summary,
    compare = true,
  ): string => {
    const v = (d: DaemonFigures): string => {
      const x = pick(d);
      return typeof x === 'number' ? fmt(x) : med(x);
    };
    const num = (d: DaemonFigures): number => {
      const x = pick(d);
      return typeof x === 'number' ? x : x.median;
    };
    const cells = [
      label,
      floor ? med(floor) : '',
      v(qw),
      v(ac),
      ...(warm ? [v(warm)] : []),
      compare ? ratio(num(ac) / num(qw)) : 'n/a',
    ];
    return `| ${cells.join(' | ')} |`;
  };
  const out = [
    ...head,
    `Both daemons host the real \`qwen --acp\` (@qwen-code/qwen-code ${q.version ?? '?'}) against the fake model from ../shared/tools, started by the harness shared with the peer run (harness/) and driven by the same client (bench/lib/http.ts, bench/lib/sse.ts). The floor is a bare ACP client (the SDK's \`client()\`) over stdio to the same agent. All contenders run side by side and every measurement goes round them in turn, rotating who goes first, with a quiet pause before each. Each HOME turns off the agent's background model calls after a turn (follow-up suggestions, managed memory), the same for all. Loads are of sessions persisted by an earlier process of the same contender, with the agent already warm.`,
    '',
    '![qwen](charts/qwen.svg)',
    '',
    `| Metric | floor | qwen serve | ${q.warmSessions ? 'acpd `--warm-sessions 0`' : 'acpd'} | ${warm ? 'acpd `--warm-sessions 1` | ' : ''}acpd / qwen |`,
    `|---|---:|---:|---:|${warm ? '---:|' : ''}---:|`,
    rowsOf('create, warm agent (ms)', (d) => d.createMs, fl.newMs),
    rowsOf('load (ms)', (d) => d.loadMs, fl.loadMs),
    rowsOf('prompt → first frame, any (ms)', (d) => d.firstFrameMs, undefined, false),
    rowsOf('prompt → first agent chunk, first prompt of a session (ms)', (d) => d.firstChunkMs),
    rowsOf('prompt → first agent chunk, later prompt (ms)', (d) => d.firstChunkLaterMs),
    rowsOf('prompt → reply at all 10 subscribers (ms)', (d) => d.fanout10Ms),
    rowsOf('daemon RSS idle, 300 ms after listening (MB)', (d) => d.startups.rssMb),
    rowsOf('daemon RSS loaded, 10 subscribers (MB)', (d) => d.rssLoadedMb),
    rowsOf('agent child RSS (MB)', (d) => d.agentRssMb),
    rowsOf('daemon start → listening (ms)', (d) => d.startups.ms),
    rowsOf('daemon CPU time to listen (ms)', (d) => d.startups.cpuMs),
    rowsOf('first create, agent spawn included (ms)', (d) => d.coldCreateMs),
    '',
    `Overhead over the floor (medians): create — acpd${q.warmSessions ? ' (pool off)' : ''} ${(ac.createMs.median - fl.newMs.median).toFixed(1)} ms, qwen serve ${(qw.createMs.median - fl.newMs.median).toFixed(1)} ms; load — acpd ${(ac.loadMs.median - fl.loadMs.median).toFixed(1)} ms, qwen serve ${(qw.loadMs.median - fl.loadMs.median).toFixed(1)} ms. The qwen agent's own times vary by a factor of several between repetitions (see the ranges), so differences of a few ms are below what this section can resolve; the embedded-agent sections (3, 4) give the sharper reading of acpd's own overhead.`,
    '',
    '- qwen serve answers a prompt with 202 and writes its own echo of the prompt as the first frame ("any frame"); acpd answers 200 at the end of the turn and writes only what the agent sends.',
    warm
      ? '- The pool off, every create waits for the agent\'s `session/new`: that column gives acpd\'s overhead over the floor. With a pool of one, a create takes the session made ahead of time (the pool refills in the background during the quiet time between measurements). "acpd / qwen" compares the pool-off column.'
      : '- This build has no `--warm-sessions`: the pool column appears once `acpd --help` lists the flag.',
    '',
  ];
  return out;
}

function profileSection(r: Results, charts: Map<string, string>): string[] {
  const p = r.profile;
  const main = p?.windows[0];
  if (!p || !main) return [];
  charts.set(
    'profile',
    hbarChart(
      `acpd CPU profile: fan-out to ${main.subscribers} subscribers (share of busy time)`,
      main.areas.slice(0, 12).map((a) => ({ label: a.area, value: a.selfPct })),
      '%',
    ),
  );
  const label = (w: { subscribers: number }): string => `${w.subscribers} subscriber${w.subscribers > 1 ? 's' : ''}`;
  const out = [
    '## Profile of the hot path',
    '',
    `\`node --cpu-prof --cpu-prof-interval 250\` on one daemon (flood agent), in windows that count only the samples of their own fan-out runs: ${p.windows.map((w) => `${label(w)} (${w.runs} × ${w.frames} frames, ${w.sampledMs} ms sampled, ${w.busyPct}% busy)`).join('; ')}. Profile file: ${p.file}. Self time by area, as a share of busy time:`,
    '',
    '![profile](charts/profile.svg)',
    '',
    `| Area | ${p.windows.map((w) => label(w)).join(' | ')} | what it is |`,
    `|---|${p.windows.map(() => '---:|').join('')}---|`,
  ];
  const areas = [...new Set(p.windows.flatMap((w) => w.areas.map((a) => a.area)))];
  for (const area of areas) {
    const cells = p.windows.map((w) => {
      const a = w.areas.find((x) => x.area === area);
      return a ? `${a.selfPct}% (${a.selfMs} ms)` : '—';
    });
    out.push(`| ${area} | ${cells.join(' | ')} | ${AREA_NOTES[area] ?? ''} |`);
  }
  for (const w of p.windows) {
    out.push(
      '',
      `Top functions by self time, ${label(w)}:`,
      '',
      '| Function | Where | self ms | share |',
      '|---|---|---:|---:|',
    );
    for (const f of w.top.slice(0, 12)) out.push(`| \`${f.name}\` | ${f.where} | ${f.selfMs} | ${f.selfPct}% |`);
  }
  const top3 = main.areas
    .slice(0, 3)
    .map((a) => `${a.area} (${a.selfPct}%)`)
    .join(', ');
  const one = p.windows.find((w) => w.subscribers === 1);
  const oneTop = one
    ? one.areas
        .slice(0, 3)
        .map((a) => `${a.area} (${a.selfPct}%)`)
        .join(', ')
    : '';
  out.push(
    '',
    `**Reading.** With ${main.subscribers} subscribers the largest shares are ${top3}. Each event is serialized to JSON once by the bus and the ring append is negligible; what grows with the subscriber count is everything after the bus, done again for every subscriber: a message object, @fastify/sse formatting the same frame text again, an \`await\` chain of several promises, and a string written through node's chunked \`res.write\` (encoded into a fresh Buffer and flushed with one \`writev\` per frame). The garbage this makes is the GC share.${one ? ` With one subscriber the per-event path shows: ${oneTop}.` : ''} No tuning was made in this change (src/ is not the bench's), so this is the "before" profile.`,
    '',
  );
  return out;
}

function clusterSection(r: Results, charts: Map<string, string>): string[] {
  const c = r.cluster;
  if (!c) return [];
  const head = ['## 6. Cluster: several nodes behind nginx', ''];
  if ('skipped' in c) return [...head, `Skipped: ${c.skipped}.`, ''];
  const nodes = (n: number): string => `${n} node${n > 1 ? 's' : ''}`;
  charts.set(
    'cluster',
    barChart(
      [
        {
          title: `Frames/s delivered to ${c.sessions * c.followersPerSession} followers`,
          unit: 'frames/s',
          groups: c.throughput.map((row) => ({ label: nodes(row.nodes), bars: [bar('frames/s', row.fps)] })),
        },
        {
          title: 'Short prompts answered per second',
          unit: 'prompts/s',
          groups: c.throughput.map((row) => ({ label: nodes(row.nodes), bars: [bar('prompts/s', row.promptsPerSec)] })),
        },
      ],
      `same machine, ${c.cpus} cores for everything; bars: median; whiskers: min–max`,
    ),
  );
  // Results written before the per-repetition ratios existed have none.
  const base = c.throughput[0]?.nodes;
  const perRep = (nodes: number, s: Summary | undefined): string =>
    s && s.n > 1 && nodes !== base ? `(${s.min.toFixed(2)}–${s.max.toFixed(2)})` : '';
  const ttl = (row: { leaseTtlS: number; isDefault: boolean }): string =>
    `${row.leaseTtlS} s${row.isDefault ? ' (default)' : ''}`;
  const ms = (s: Summary): string =>
    s.n === 0 ? '—' : `${Math.round(s.median).toLocaleString('en-US')} / ${Math.round(s.max).toLocaleString('en-US')}`;
  const out = [
    ...head,
    `Redis, N acpd nodes with the embedded agent on one data directory, and nginx in front as \`deploy/nginx-cluster.conf\` ships it (harness/cluster.ts); every request and stream goes through nginx. **All of it runs on this one machine, ${c.cpus} cores shared by Redis, nginx, the nodes, their agents and the client**: a node added here brings no CPU of its own, so these figures show what spreading sessions over nodes costs or gains on fixed hardware, not how a cluster of machines scales. The three clusters run side by side and their repetitions are interleaved; the 1-node cluster is the baseline.`,
    '',
    `- **Frames/s**: ${c.sessions} sessions (spread over the nodes by nginx's round robin), ${c.followersPerSession} followers each (SSE through nginx, on whichever node it picks); every session floods ${c.floodChunks.toLocaleString('en-US')} chunks at once (\`Prefer: respond-async\`). Numbered frames received by all followers / time from the first prompt sent to the last follower's \`turn_complete\`.`,
    `- **Prompts/s**: ${c.prompts} short text prompts (the agent echoes them), ${c.promptConcurrency} in flight per session at a time, answered 200 through nginx; a prompt reaching a node that does not own its session is forwarded to the owner. Prompt ms: one prompt's round trip, median and range over every prompt.`,
    '- *vs 1 node*: the ratio of the medians, and in brackets the range of the ratios repetition by repetition (each against the 1-node cluster measured next to it in the same repetition), which the load of the machine moves less than the absolute figures.',
    '',
    '![cluster](charts/cluster.svg)',
    '',
    '| Nodes | sessions per node | frames/s | vs 1 node | prompts/s | vs 1 node | prompt ms |',
    '|---:|---|---:|---:|---:|---:|---:|',
    ...c.throughput.map(
      (row) =>
        `| ${row.nodes} | ${Object.entries(row.owners)
          .sort()
          .map(([, v]) => v)
          .join(
            ' / ',
          )} | ${med(row.fps, 0)} | ${ratio(row.fpsRatio)} ${perRep(row.nodes, row.fpsRatioPerRep)} | ${med(row.promptsPerSec, 0)} | ${ratio(row.promptsRatio)} ${perRep(row.nodes, row.promptsRatioPerRep)} | ${med(row.promptMs)} |`,
    ),
    '',
    `**When a node dies.** 3 nodes; the sessions owned by one of them each run a slow turn, followed through nginx by ${c.failover[0] ? Math.round(c.failover[0].followers / Math.max(c.failover[0].sessions, 1)) : '?'} clients each; that node gets SIGKILL. *Stream back*: for each follower whose stream that node was serving, from the SIGKILL to the first frame of its new stream (it reconnects at once with \`Last-Event-ID\` and its epoch, not after the stream's 3 s \`retry:\` hint; nginx passes the GET to a live node, which serves the log from Redis). *Session answers*: for each of those sessions, from the SIGKILL to a prompt answered 200, the client retrying through nginx every 100 ms (a live node takes the session over once the dead node's lease expired, and restores it through its own agent). Median / max, in ms, over every client of every repetition:`,
    '',
    '| Lease TTL | repetitions | sessions | followers (cut) | stream back, ms | session answers, ms | refused meanwhile |',
    '|---|---:|---:|---:|---:|---:|---|',
    ...c.failover.map(
      (row) =>
        `| ${ttl(row)} | ${row.reps} | ${row.sessions} | ${row.followers} (${row.cutFollowers}) | ${ms(row.streamMs)} | ${ms(row.answerMs)} | ${
          Object.entries(row.refusals)
            .map(([k, v]) => `${v} × ${k}`)
            .join(', ') || '—'
        } |`,
    ),
    '',
    `- Every follower of the run, across every reconnect: ${c.integrity.gaps} gaps, ${c.integrity.duplicates} duplicates, ${c.integrity.resyncs} resyncs.`,
    "- A node renews its leases every third of the TTL, so a dead node's lease runs out between ⅔ of the TTL and the whole TTL after its death, depending on when it last renewed; restoring the session on a live node and answering the prompt come on top.",
    "- Refusals while the session is away: 502 from nginx (it met the dead node and never passes a POST on), 503 `session_owner_unavailable` from a live node until the lease expires; a 409 `idempotency_key_interrupted` (the retry's key was claimed by a forward that lost the owner) makes the client retry under a new key.",
    '',
  ];
  return out;
}

function rssInTheWay(r: Results): string {
  const stages = r.scale?.stages ?? [];
  const at = (name: string): number => stages.find((st) => st.stage === name)?.rssMb.median ?? Number.NaN;
  const bare = at('bare node');
  const imported = at('modules imported');
  const ready = at('app ready (schemas compiled)');
  const goal = r.qwen?.qwen ? r.qwen.qwen.rssLoadedMb.median / 3 : Number.NaN;
  const parts = ["acpd's idle footprint is nearly all of it; sessions and subscribers add little (section 4)."];
  if (Number.isFinite(bare) && Number.isFinite(imported)) {
    parts.push(
      `A bare node process is ${bare.toFixed(0)} MB; importing acpd's modules (Fastify and its plugins, Swagger/OpenAPI, prom-client, the ACP SDK with its zod schemas) brings it to ${imported.toFixed(0)} MB, and compiling the route schemas at \`ready\` to ${ready.toFixed(0)} MB — mostly code, not heap.`,
    );
  }
  const heavy = (r.scale?.dependencies ?? [])
    .slice(0, 3)
    .map((d) => `${d.name} +${d.addedMb.toFixed(0)} MB`)
    .join(', ');
  if (heavy) parts.push(`Heaviest imports on their own: ${heavy}.`);
  if (Number.isFinite(goal))
    parts.push(
      `The target (${goal.toFixed(0)} MB) is ${Number.isFinite(imported) && imported > goal ? 'below what the imports alone cost' : 'close to the start-up cost'}: it needs fewer or lazily loaded dependencies, not tuning of the hot path.`,
    );
  return parts.join(' ');
}

function inTheWay(r: Results): string[] {
  const missed = r.targets.filter((t) => t.met === false);
  if (missed.length === 0) return [];
  const out = ['## What is in the way', ''];
  for (const t of missed) {
    if (t.target.startsWith('Issue 16') && !t.target.includes('at 1 subscriber')) {
      out.push(`- **${t.target}** — ${t.measured}. See the notes above ("Round two") and the profile of the hot path.`);
    } else if (t.target.startsWith('Issue 16')) {
      out.push(
        `- **${t.target}** — ${t.measured}. At one subscriber the relay floor (section 1: the same agent relayed with no daemon work) bounds what any server relaying a live agent can do on this machine, and acpd with the memory log runs at it; the gap left is the durable log's SQLite commit, written before anything is sent (notes above, "Round two", Steps 5 and 6, and the profile at 1 subscriber).`,
      );
    } else if (t.target.startsWith('Fan-out') || t.target.startsWith('Replay')) {
      out.push(
        `- **${t.target}** — the per-subscriber work after the bus (profile above): format each frame once per event (keep the \`id:/event:/data:\` bytes as a Buffer on the bus event), write that Buffer to \`reply.raw\` directly, and drain a subscriber's whole queue in one write (or cork/uncork) instead of one awaited \`send\` per frame. A replay is the same loop over 4000 queued frames. At low subscriber counts the per-event path adds to it: the ACP SDK's zod validation of every \`session/update\` is a quarter of the CPU with one subscriber.`,
      );
    } else if (t.target.startsWith('Daemon RSS')) {
      out.push(`- **${t.target}** — ${rssInTheWay(r)}`);
    } else if (t.target.startsWith('Warm-session')) {
      out.push(`- **${t.target}** — not implemented: a create waits for the agent's \`session/new\`.`);
    } else {
      out.push(`- **${t.target}** — ${t.measured}.`);
    }
  }
  return [...out, ''];
}

/** A results file written by run.ts (schema 1): checked at the top level only. */
function isResults(v: unknown): v is Results {
  return isRecord(v) && v.schema === 1 && isRecord(v.machine) && Array.isArray(v.targets) && Array.isArray(v.errors);
}

/** Load beyond the core count at either end of the run: other work shared the machine. */
function busy(r: Results): boolean {
  const cores = r.machine.cpus;
  return (r.machine.loadAvg[0] ?? 0) > cores || (r.loadAvgEnd?.[0] ?? 0) > cores;
}

function repetitions(r: Results): string {
  const parts: string[] = [];
  if (r.fanout) parts.push(`fan-out ${r.reps}`);
  if (r.replay) parts.push(`replay ${r.replay.acpd.n}`);
  const restore = r.restore?.[0];
  if (restore) parts.push(`restore ${restore.acpd.n}`);
  const level = r.scale?.levels[0];
  if (level)
    parts.push(
      `scale ${level.rssMb.n} daemons × ${Math.round(level.createMs.n / Math.max(level.rssMb.n, 1))} creates per level`,
    );
  const q = r.qwen?.acpd;
  if (q) parts.push(`qwen ${q.createMs.n}`);
  const c = r.cluster;
  if (c && !('skipped' in c)) {
    parts.push(
      `cluster ${c.throughput[0]?.fps.n ?? 0} per node count, failover ${c.failover.map((f) => f.reps).join('/')} per lease TTL`,
    );
  }
  return parts.join(', ');
}

/**
 * Hand-written notes kept beside the generated report (`bench/notes/*.md`, in name order): the reading of
 * a round of work (what changed, before and after, the floor) survives every regeneration.
 */
function notesSection(benchDir: string): string[] {
  const dir = join(benchDir, 'notes');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => name.endsWith('.md'))
    .sort()
    .flatMap((name) => [readFileSync(join(dir, name), 'utf8').trimEnd(), '']);
}

function manySection(r: Results): string[] {
  const m = r.many;
  if (!m) return [];
  const row = (name: string, s: ManyStep, best: number): string =>
    `| ${name} | ${s.rate.toLocaleString('en-US')} | ${s.perSession} | ${s.received.toLocaleString('en-US')} / ${s.frames.toLocaleString('en-US')} | ${s.p50Ms.toFixed(1)} | ${s.p99Ms.toFixed(1)} | ${s.cpuPct.toFixed(0)}% | ${s.rssMb.toFixed(0)} | ${s.rate <= best ? 'yes' : '**no**'} |`;
  const ratio =
    m.raw.best > 0 ? `**${(m.acpd.best / m.raw.best).toFixed(2)}×** the raw writer's` : 'the raw writer kept none';
  return [
    '## 7. Many sessions',
    '',
    `${m.sessions} live sessions on one daemon, one SSE subscriber each; every session streams a reply at a steady rate (${m.promptSeconds} s per prompt) with ${m.queued} more prompts queued behind it (sent together, \`Prefer: respond-async\`), so each step runs ${m.queued + 1} turns per session. The aggregate rate is stepped up until p99 passes ${m.boundMs} ms or frames go missing. Latency: the flood agent's \`rate\` mode stamps each chunk when it writes it (CLOCK_MONOTONIC) and the client reads the stamp back out of the frame: agent → acpd → socket → client, over every frame of every session. CPU is the daemon's own (not its agent's) over the step, as a share of one core; RSS is the highest sample in the step.`,
    '',
    `Baseline: the raw node:http writer (bench/baseline/raw-sse-server \`POST /rate\`) pacing the same frames per session the same way. The qwen daemon is not in this section: it can hold 200 sessions (\`qwen serve --max-sessions 0\`), but it hosts only its own agent, whose replies come from a model and can be neither paced nor stamped, so there is no like-for-like stream to measure on it.`,
    '',
    `Highest aggregate rate with p99 under ${m.boundMs} ms: **acpd ${m.acpd.best.toLocaleString('en-US')} frames/s**, raw writer ${m.raw.best.toLocaleString('en-US')} frames/s (${ratio}; each side stops at its first step over the bound). RSS with every session live and subscribed, before the first step: acpd ${m.acpd.idleRssMb} MB, raw ${m.raw.idleRssMb} MB.`,
    '',
    '| | frames/s (all sessions) | per session | received / sent | p50 ms | p99 ms | daemon CPU | RSS MB | p99 < bound |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|',
    ...m.acpd.steps.map((s) => row('acpd', s, m.acpd.best)),
    ...m.raw.steps.map((s) => row('raw', s, m.raw.best)),
    '',
    "- One client process reads all the streams and shares the 2 cores with the daemon and the agent: near the top step the client's own lag is part of the latency, on both sides alike.",
    '',
  ];
}

function renderMarkdown(r: Results, jsonRel: string, charts: Map<string, string>, notes: string[]): string {
  const lines = [
    '# acpd benchmarks',
    '',
    `Generated by \`npm run bench\` (bench/run.ts) on ${r.date}${r.quick ? ' in **quick** mode' : ''}; the run took ${Math.round(r.durationS)} s. Raw numbers: [${basename(jsonRel)}](${jsonRel}).`,
    '',
    `- Machine: ${machineLine(r)}.`,
    ...(busy(r)
      ? [
          `- **The machine was busy with other work** (1-minute load average ${r.machine.loadAvg[0]} at the start, ${r.loadAvgEnd?.[0] ?? '?'} at the end, on ${r.machine.cpus} cores): expect wide ranges; the ratios compare runs interleaved under the same conditions.`,
        ]
      : [`- 1-minute load average at the end: ${r.loadAvgEnd?.[0] ?? '?'}.`]),
    `- acpd ${r.acpd.version}, commit ${r.acpd.commit}${r.acpd.dirty ? ' with local changes' : ''}; \`dist/server.js\` as \`npm start\` runs it (default log level).`,
    `- Each figure is the median of its repetitions (${repetitions(r)}; untimed warm-up first), with the range (min–max) in brackets; ratios are of medians, each against a baseline measured in the same run.`,
    ...(r.errors.length > 0
      ? ['', '**Errors in this run:**', '', ...r.errors.map((e) => `- ${e.split('\n')[0]}`)]
      : []),
    '',
    ...targetsSection(r),
    ...notes,
    ...fanoutSection(r, charts),
    ...replaySection(r, charts),
    ...restoreSection(r, charts),
    ...scaleSection(r, charts),
    ...qwenSection(r, charts),
    ...clusterSection(r, charts),
    ...manySection(r),
    ...profileSection(r, charts),
    ...inTheWay(r),
  ];
  return `${lines
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trimEnd()}\n`;
}

export function renderAll(r: Results, benchDir: string, jsonFile: string): void {
  const charts = new Map<string, string>();
  const md = renderMarkdown(r, relative(benchDir, jsonFile), charts, notesSection(benchDir));
  const chartDir = join(benchDir, 'charts');
  mkdirSync(chartDir, { recursive: true });
  for (const [name, svg] of charts) writeFileSync(join(chartDir, `${name}.svg`), svg);
  writeFileSync(join(benchDir, 'RESULTS.md'), md);
}

// Re-render from a saved run: node build/bench/report.js bench/results/<date>.json
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const file = process.argv[2];
  if (file === undefined) {
    process.stderr.write('usage: node build/bench/report.js bench/results/<date>.json\n');
    process.exit(2);
  }
  const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
  if (!isResults(parsed)) {
    process.stderr.write(`${file} is not a bench results file (schema 1)\n`);
    process.exit(2);
  }
  // Targets are judged again, with the current rules.
  renderAll({ ...parsed, targets: evaluateTargets(parsed) }, join(file, '..', '..'), file);
  process.stderr.write(`rendered bench/RESULTS.md from ${file}\n`);
}
