// The shape of bench/results/<date>.json: everything RESULTS.md is rendered from.
import type { ClusterResult } from './scenarios/cluster.js';
import type { FanoutRun } from './scenarios/fanout.js';
import type { ManyResult } from './scenarios/many.js';
import type { ProfileResult } from './scenarios/profile.js';
import type { QwenResult } from './scenarios/qwen.js';
import type { ReplayResult } from './scenarios/replay.js';
import type { RestoreResult } from './scenarios/restore.js';
import type { ScaleResult } from './scenarios/scale.js';
import type { Summary } from './lib/stats.js';

export interface Machine {
  cpus: number;
  cpuModel: string;
  node: string;
  platform: string;
  memGb: number;
  loadAvg: number[];
}

export interface FanoutRow {
  subscribers: number;
  frames: number;
  acpd: { fps: Summary; p50: Summary; p99: Summary; cpuPer1k: Summary };
  raw: { fps: Summary; p50: Summary; p99: Summary; cpuPer1k: Summary };
  embedded?: { fps: Summary; cpuPer1k: Summary };
  /** acpd with `--event-log memory` (the rest is the durable default): what the log costs. */
  memoryLog?: { fps: Summary; cpuPer1k: Summary };
  /** The relay floor: the same flood agent relayed by a bare node:http server (baseline/relay-sse-server). */
  relay?: { fps: Summary; cpuPer1k: Summary };
  /** acpd / raw server CPU per delivered frame. */
  cpuRatio: number;
  /** acpd / raw, medians. */
  fpsRatio: number;
  p50Ratio: number;
  p99Ratio: number;
}

export interface FanoutResult {
  rows: FanoutRow[];
  runs: FanoutRun[];
  sameBytes: boolean;
  evictions: number;
}

export interface Target {
  target: string;
  measured: string;
  met: boolean | undefined;
  note?: string;
}

export interface Results {
  schema: 1;
  date: string;
  durationS: number;
  /** 1/5/15-minute load averages when the run ended (the start is in machine). */
  loadAvgEnd?: number[];
  quick: boolean;
  machine: Machine;
  acpd: { version: string; commit: string; dirty: boolean };
  reps: number;
  fanout?: FanoutResult;
  replay?: ReplayResult;
  restore?: RestoreResult[];
  scale?: ScaleResult;
  qwen?: QwenResult;
  profile?: ProfileResult;
  /** Section 6; `skipped` when redis-server or nginx is missing. */
  cluster?: ClusterResult | { skipped: string };
  /** Section 7: many sessions streaming at once. */
  many?: ManyResult;
  targets: Target[];
  errors: string[];
}
