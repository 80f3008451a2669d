// The hot path, profiled: acpd under `node --cpu-prof` while the flood agent fans out — once to
// 64 subscribers (the per-subscriber write path dominates) and once to 1 (the per-event path:
// reading the agent's stdout, validating, serializing, the ring). One daemon, one profile; each
// window counts only the samples inside its own runs.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { summarizeProfile, type ProfileSummary } from '../lib/profile.js';
import { startAcpd, floodAgentCommand } from '../lib/procs.js';
import { nowMs } from '../lib/sse.js';
import type { WorkDir } from '../lib/util.js';
import { runAcpd } from './fanout.js';

interface ProfileWindow extends ProfileSummary {
  subscribers: number;
  frames: number;
  runs: number;
}

export interface ProfileResult {
  file: string;
  windows: ProfileWindow[];
}

interface ProfilePlan {
  subscribers: number;
  frames: number;
  runs: number;
}

export async function runProfile(dir: WorkDir, plans: ProfilePlan[]): Promise<ProfileResult> {
  const profDir = join(dir.root, 'cpuprof');
  const acpd = await startAcpd({
    workspace: dir.workspace,
    dataDir: join(dir.dataDir, 'profile'),
    logDir: dir.logDir,
    agent: floodAgentCommand(),
    args: ['--max-sessions', '0'],
    nodeArgs: ['--cpu-prof', '--cpu-prof-dir', profDir, '--cpu-prof-interval', '250'],
  });
  const spans: Array<{ plan: ProfilePlan; fromMs: number; toMs: number }> = [];
  try {
    await runAcpd(acpd, 10, 500); // warm-up, outside every window
    for (const plan of plans) {
      const fromMs = nowMs();
      for (let i = 0; i < plan.runs; i++) await runAcpd(acpd, plan.subscribers, plan.frames);
      spans.push({ plan, fromMs, toMs: nowMs() });
    }
  } finally {
    await acpd.stop(); // SIGTERM → a clean exit, which is when V8 writes the profile
  }
  const file = readdirSync(profDir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => join(profDir, f))[0];
  if (file === undefined) throw new Error(`no .cpuprofile in ${profDir}`);
  return {
    file,
    windows: spans.map(({ plan, fromMs, toMs }) => ({ ...plan, ...summarizeProfile(file, { fromMs, toMs }) })),
  };
}
