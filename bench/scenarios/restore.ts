// 3. Restore: `load` (history replayed) and `resume` (not replayed) of sessions with 10 / 100 /
// 1000 stored turns, through acpd and — the floor — straight from the embedded agent with a bare
// ACP client. The session files are written directly in the agent's format (src/agent/store.ts),
// each id used once: a restored session stays live, so every measurement needs its own.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SessionUpdate } from '@agentclientprotocol/sdk';
import type { SessionRecord } from '../../src/agent/store.js';
import { BareAgent } from '../lib/acp-client.js';
import { HttpClient } from '../lib/http.js';
import { embeddedAgentPath, type Server, startAcpd } from '../lib/procs.js';
import { summarize, type Summary } from '../lib/stats.js';
import { log, type WorkDir } from '../lib/util.js';

type RestoreAction = 'load' | 'resume';

export interface RestoreResult {
  turns: number;
  action: RestoreAction;
  acpd: Summary;
  floor: Summary;
}

function history(turns: number): SessionUpdate[] {
  const out: SessionUpdate[] = [];
  for (let i = 1; i <= turns; i++) {
    const text = `Turn ${i}: please look at item ${i} of the list and tell me what you think of it.`;
    out.push({ sessionUpdate: 'user_message_chunk', content: { type: 'text', text } });
    out.push({ sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: `echo: ${text}` } });
  }
  return out;
}

function writeSession(dir: string, sessionId: string, cwd: string, turns: number): void {
  const now = new Date().toISOString();
  const record: SessionRecord = {
    sessionId,
    cwd,
    createdAt: now,
    updatedAt: now,
    currentModelId: 'acpd-echo',
    currentModeId: 'default',
    history: history(turns),
  };
  writeFileSync(join(dir, `${sessionId}.json`), JSON.stringify(record));
}

const id = (who: string, action: RestoreAction, turns: number, rep: number): string =>
  `bench-${who}-${action}-${turns}-${rep}`;

interface RestoreOptions {
  sizes: number[];
  reps: number;
}

export async function runRestore(dir: WorkDir, opts: RestoreOptions): Promise<RestoreResult[]> {
  const acpdSessions = join(dir.dataDir, 'sessions');
  const floorSessions = join(dir.root, 'floor-sessions');
  mkdirSync(acpdSessions, { recursive: true });
  mkdirSync(floorSessions, { recursive: true });
  const actions: RestoreAction[] = ['load', 'resume'];
  // rep 0 warms up both sides and is not counted.
  for (const turns of opts.sizes) {
    for (const action of actions) {
      for (let rep = 0; rep <= opts.reps; rep++) {
        writeSession(acpdSessions, id('acpd', action, turns, rep), dir.workspace, turns);
        writeSession(floorSessions, id('floor', action, turns, rep), dir.workspace, turns);
      }
    }
  }

  const acpd: Server = await startAcpd({
    workspace: dir.workspace,
    dataDir: dir.dataDir,
    logDir: dir.logDir,
    args: ['--max-sessions', '0'],
  });
  const http = new HttpClient(acpd.baseUrl);
  const floor = new BareAgent({
    argv: [process.execPath, embeddedAgentPath, '--data-dir', floorSessions],
    cwd: dir.workspace,
    env: process.env,
    logFile: join(dir.logDir, 'floor-agent.log'),
  });
  const samples = new Map<string, { acpd: number[]; floor: number[] }>();
  try {
    // A live session keeps acpd's agent process up: every restore below finds a warm agent.
    await http.ok('/session', { sessionScope: 'thread' });
    await floor.initialize();
    await floor.newSession(dir.workspace);
    for (let rep = 0; rep <= opts.reps; rep++) {
      for (const turns of opts.sizes) {
        for (const action of actions) {
          const a = await http.ok(`/session/${id('acpd', action, turns, rep)}/${action}`, {});
          const f = await floor.timed(`session/${action}`, {
            sessionId: id('floor', action, turns, rep),
            cwd: dir.workspace,
            mcpServers: [],
          });
          if (rep === 0) continue;
          const key = `${turns}/${action}`;
          const s = samples.get(key) ?? { acpd: [], floor: [] };
          s.acpd.push(a.ms);
          s.floor.push(f.ms);
          samples.set(key, s);
        }
      }
    }
  } finally {
    http.close();
    await floor.close();
    await acpd.stop();
  }
  const out: RestoreResult[] = [];
  for (const turns of opts.sizes) {
    for (const action of actions) {
      const s = samples.get(`${turns}/${action}`);
      if (!s) continue;
      const r = { turns, action, acpd: summarize(s.acpd), floor: summarize(s.floor) };
      log(
        `  restore ${action.padEnd(6)} ${String(turns).padStart(4)} turns: acpd ${r.acpd.median.toFixed(2)} ms, floor ${r.floor.median.toFixed(2)} ms`,
      );
      out.push(r);
    }
  }
  return out;
}
