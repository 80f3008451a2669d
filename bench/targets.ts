// The targets of issues 6, 12 and 16 (part 1), checked against one run's results.
import type { Summary } from './lib/stats.js';
import type { Results, Target } from './results-types.js';

const x = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(2)}×` : '—');
const ms = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(1)} ms` : '—');
const mb = (s: Summary): string =>
  Number.isFinite(s.median) ? `${s.median.toFixed(1)} MB [${s.min.toFixed(1)}–${s.max.toFixed(1)}]` : '—';

/** Interquartile range of the repetitions. */
const iqr = (s: Summary): number => s.p75 - s.p25;

/**
 * A verdict on a difference of two medians, unless the repetitions scatter so much more than the
 * margin being judged that the difference says nothing: then no verdict, and why.
 */
function verdict(met: boolean, noiseMs: number, marginMs: number): { met: boolean | undefined; note?: string } {
  if (noiseMs > 4 * marginMs) {
    return {
      met: undefined,
      note: `inconclusive: the agent's own timings scatter by ${ms(noiseMs)} (interquartile range), far more than the ${ms(marginMs)} margin; see the embedded-agent cross-check`,
    };
  }
  return { met };
}

export function evaluateTargets(r: Results): Target[] {
  const out: Target[] = [];
  const row64 = r.fanout?.rows.find((row) => row.subscribers === 64);
  if (row64) {
    out.push({
      target: 'Fan-out throughput at 64 subscribers ≥ 0.75× raw',
      measured: `${x(row64.fpsRatio)} (${Math.round(row64.acpd.fps.median)} vs ${Math.round(row64.raw.fps.median)} frames/s; CPU per frame ${x(row64.cpuRatio)} the raw server's)`,
      met: row64.fpsRatio >= 0.75,
    });
  }
  // Issue 12: the durable log (the default since) keeps fan-out and replay within the performance goals.
  if (row64) {
    out.push({
      target: 'With the durable log: fan-out at 64 subscribers ≥ 1.3× raw',
      measured: `${x(row64.fpsRatio)}${row64.memoryLog ? ` (memory log: ${x(row64.memoryLog.fps.median / row64.raw.fps.median)})` : ''}`,
      met: row64.fpsRatio >= 1.3,
    });
  }
  // Issue 16, part 1: the per-event path, with the durable log (the default). Part 2's rows (RSS, start-up,
  // many sessions) are judged with the scenarios that measure them.
  const fanoutGoals: [subscribers: number, atLeast: number][] = [
    [1, 0.4],
    [10, 0.9],
    [64, 1.3],
  ];
  for (const [subscribers, atLeast] of fanoutGoals) {
    const row = r.fanout?.rows.find((candidate) => candidate.subscribers === subscribers);
    if (!row) continue;
    out.push({
      target: `Issue 16: fan-out at ${subscribers} subscriber${subscribers === 1 ? '' : 's'} ≥ ${atLeast}× raw`,
      measured: `${x(row.fpsRatio)} (${Math.round(row.acpd.fps.median)} vs ${Math.round(row.raw.fps.median)} frames/s${row.memoryLog ? `; memory log: ${x(row.memoryLog.fps.median / row.raw.fps.median)}` : ''}${row.relay ? `; relay floor: ${x(row.relay.fps.median / row.raw.fps.median)}` : ''})`,
      met: row.fpsRatio >= atLeast,
    });
  }
  const row1 = r.fanout?.rows.find((row) => row.subscribers === 1);
  if (row1) {
    out.push({
      target: 'Issue 16: server CPU per delivered frame at 1 subscriber ≤ 2.5× raw',
      measured: `${x(row1.cpuRatio)} (${row1.acpd.cpuPer1k.median.toFixed(2)} vs ${row1.raw.cpuPer1k.median.toFixed(2)} ms per 1000 frames${row1.memoryLog ? `; memory log: ${x(row1.memoryLog.cpuPer1k.median / row1.raw.cpuPer1k.median)}` : ''})`,
      met: row1.cpuRatio <= 2.5,
    });
  }
  if (r.replay) {
    const ratio = r.replay.acpd.median / r.replay.raw.median;
    out.push({
      target: 'Replay of 4000 frames ≤ 1.5× raw',
      measured: `${x(ratio)} (${ms(r.replay.acpd.median)} vs ${ms(r.replay.raw.median)})`,
      met: ratio <= 1.5,
    });
    out.push({
      target: 'With the durable log: replay of 4000 frames ≤ 1.2× raw',
      measured: `${x(ratio)}${r.replay.acpdMemory ? ` (memory log: ${x(r.replay.acpdMemory.median / r.replay.raw.median)})` : ''}`,
      met: ratio <= 1.2,
    });
  }
  const q = r.qwen;
  if (q?.skipped) {
    out.push({
      target: 'Daemon RSS ≤ 1/3 of qwen serve; create/load overhead over the floor',
      measured: 'not measured',
      met: undefined,
      note: q.skipped,
    });
  } else if (q?.acpd && q.qwen && q.floor) {
    // acpd as shipped: with its default pool where it has one.
    const shipped = q.acpdWarm ?? q.acpd;
    const rss = shipped.rssLoadedMb.median / q.qwen.rssLoadedMb.median;
    out.push({
      target: 'Daemon RSS ≤ 1/3 of qwen serve (same agent)',
      measured: `${x(rss)} (${shipped.rssLoadedMb.median.toFixed(0)} vs ${q.qwen.rssLoadedMb.median.toFixed(0)} MB, daemon process only, 10 subscribers)`,
      met: rss <= 1 / 3,
    });
    const a = q.acpd.startups;
    const b = q.qwen.startups;
    const rounds = `medians of ${a.ms.n} starts each`;
    const idle = a.rssMb.median / b.rssMb.median;
    out.push({
      target: 'Daemon RSS idle with a real agent ≤ 0.4× qwen serve (issue 16)',
      measured: `${x(idle)} (${mb(a.rssMb)} vs ${mb(b.rssMb)}, 300 ms after listening; ${rounds})`,
      met: idle <= 0.4,
    });
    const start = a.ms.median / b.ms.median;
    out.push({
      target: 'Daemon start → listening ≤ 0.5× qwen serve (issue 16)',
      measured: `${x(start)} (${ms(a.ms.median)} [${ms(a.ms.min)}–${ms(a.ms.max)}] vs ${ms(b.ms.median)} [${ms(b.ms.min)}–${ms(b.ms.max)}]; CPU to listen ${x(a.cpuMs.median / b.cpuMs.median)}; ${rounds})`,
      met: start <= 0.5,
    });
    const createOver = q.acpd.createMs.median - q.floor.newMs.median;
    const loadOver = q.acpd.loadMs.median - q.floor.loadMs.median;
    const createNoise = Math.max(iqr(q.acpd.createMs), iqr(q.floor.newMs));
    const loadNoise = Math.max(iqr(q.acpd.loadMs), iqr(q.floor.loadMs));
    out.push({
      target: 'Create overhead over the floor ≤ 5 ms (qwen agent)',
      measured: `${ms(createOver)} (acpd${q.warmSessions ? ' pool off' : ''} ${ms(q.acpd.createMs.median)}, floor ${ms(q.floor.newMs.median)}; qwen serve ${ms(q.qwen.createMs.median - q.floor.newMs.median)})`,
      ...verdict(createOver <= 5, createNoise, 5),
    });
    out.push({
      target: 'Load overhead over the floor ≤ 10 ms (qwen agent)',
      measured: `${ms(loadOver)} (acpd ${ms(q.acpd.loadMs.median)}, floor ${ms(q.floor.loadMs.median)}; qwen serve ${ms(q.qwen.loadMs.median - q.floor.loadMs.median)})`,
      ...verdict(loadOver <= 10, loadNoise, 10),
    });
  }
  // The same two overheads with the embedded agent, whose timings barely vary: a sharper reading.
  if (r.scale) {
    const lowest = r.scale.levels[0];
    if (lowest) {
      const over = lowest.createMs.median - r.scale.floorCreateMs.median;
      out.push({
        target: 'Create overhead over the floor ≤ 5 ms (embedded agent, cross-check)',
        measured: `${ms(over)} (acpd ${ms(lowest.createMs.median)}, floor ${ms(r.scale.floorCreateMs.median)})`,
        met: over <= 5,
      });
    }
  }
  const load10 = r.restore?.find((row) => row.action === 'load' && row.turns === 10);
  if (load10) {
    const over = load10.acpd.median - load10.floor.median;
    out.push({
      target: 'Load overhead over the floor ≤ 10 ms (embedded agent, 10 turns, cross-check)',
      measured: `${ms(over)} (acpd ${ms(load10.acpd.median)}, floor ${ms(load10.floor.median)})`,
      met: over <= 10,
    });
  }
  if (q && !q.skipped) {
    if (q.acpdWarm) {
      out.push({
        target: 'Warm-session pool: create ≤ 10 ms with the qwen agent',
        measured: `${ms(q.acpdWarm.createMs.median)} (range ${ms(q.acpdWarm.createMs.min)}–${ms(q.acpdWarm.createMs.max)}; pool off: ${ms(q.acpd?.createMs.median ?? Number.NaN)})`,
        met: q.acpdWarm.createMs.median <= 10,
      });
    } else {
      out.push({
        target: 'Warm-session pool: create ≤ 10 ms with the qwen agent',
        measured: 'no --warm-sessions in this build',
        met: false,
        note: 'not implemented yet; the bench measures it as soon as `acpd --help` lists --warm-sessions',
      });
    }
  }
  const many = r.many;
  if (many) {
    const { acpd, raw } = many;
    out.push({
      target: `${many.sessions} sessions streaming, 1 subscriber each: highest rate with p99 < ${many.boundMs} ms (vs raw writer)`,
      measured:
        raw.best > 0
          ? `${x(acpd.best / raw.best)} (${acpd.best} vs ${raw.best} frames/s)`
          : `${acpd.best} frames/s (raw writer kept none of the steps)`,
      // Issue 16 asks for the figure, not a bound on it: reported, never a pass/fail.
      met: undefined,
      note: 'a measurement (issue 16), not a bound',
    });
  }
  return out;
}
