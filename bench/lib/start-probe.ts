// Start → listening, many times over: section 5 starts each daemon once, and one start on a shared
// 2-core machine is mostly the machine's load. This starts the contenders in turn (rotating who goes
// first), the same command lines as section 5 (acpd `--warm-sessions 0` with the real `qwen --acp`;
// `qwen serve`), and reports per contender the median time from spawn to the "listening on" line, the
// process's CPU time (user + system) at that moment, and its RSS 300 ms later (the daemon alone).
//   node build/bench/lib/start-probe.js [--reps N] acpd=dist/server.js [other=path/to/server.js …] [qwen]
// A contender `name=script` runs `node script` as acpd; `qwen` is the qwen daemon from .peers/.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { agentCommand } from '../../harness/peer-daemon.js';
import { makeHome, peerEnv, qwenEntry } from '../../harness/peer-env.js';
import { rssKb, statOf } from '../../harness/proc-table.js';
import { summarize } from './stats.js';

const LISTENING = /listening on http:\/\/127\.0\.0\.1:\d+/;
const TICK_MS = 10; // USER_HZ = 100 on Linux

interface Contender {
  name: string;
  argv: (dir: string) => string[];
  env: NodeJS.ProcessEnv;
  ms: number[];
  cpuMs: number[];
  rssMb: number[];
}

async function startOnce(c: Contender, root: string): Promise<void> {
  const dir = mkdtempSync(join(root, `${c.name}-`));
  const started = performance.now();
  const child = spawn(process.execPath, c.argv(dir), { cwd: dir, env: c.env, stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    await new Promise<void>((done, reject) => {
      let seen = '';
      const onData = (chunk: Buffer): void => {
        seen += chunk.toString('utf8');
        if (LISTENING.test(seen)) done();
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.once('exit', (code) => reject(new Error(`${c.name} exited (${code}) before listening: ${seen}`)));
    });
    const ms = performance.now() - started;
    const stat = child.pid === undefined ? undefined : statOf(child.pid);
    await sleep(300);
    c.ms.push(ms);
    c.cpuMs.push(stat === undefined ? Number.NaN : (stat.utime + stat.stime) * TICK_MS);
    c.rssMb.push(child.pid === undefined ? Number.NaN : rssKb(child.pid) / 1024);
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  let reps = 7;
  const contenders: Contender[] = [];
  const root = mkdtempSync(join(os.tmpdir(), 'acpd-start-probe-'));
  const workspace = join(root, 'workspace');
  mkdirSync(workspace);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? '';
    if (arg === '--reps') {
      reps = Number(args[++i]);
    } else if (arg === 'qwen') {
      const home = join(root, 'home-qwen');
      makeHome(home);
      contenders.push({
        name: 'qwen serve',
        argv: () => [qwenEntry, 'serve', '--port', '0', '--workspace', workspace],
        // The model is never called before the first prompt.
        env: peerEnv(home, 'http://127.0.0.1:9'),
        ms: [],
        cpuMs: [],
        rssMb: [],
      });
    } else {
      const [name = '', relative = ''] = arg.split('=');
      const script = resolve(relative);
      contenders.push({
        name,
        argv: (dir) =>
          [script, '--port', '0', '--workspace', workspace, '--data-dir', dir, '--warm-sessions', '0'].concat([
            '--agent',
            agentCommand(),
          ]),
        env: process.env,
        ms: [],
        cpuMs: [],
        rssMb: [],
      });
    }
  }
  for (let rep = 0; rep < reps; rep++) {
    for (let k = 0; k < contenders.length; k++) {
      const c = contenders[(rep + k) % contenders.length];
      if (c !== undefined) await startOnce(c, root);
    }
  }
  for (const c of contenders) {
    const ms = summarize(c.ms);
    const cpu = summarize(c.cpuMs);
    const rss = summarize(c.rssMb);
    process.stdout.write(
      `${c.name}: start → listening ${ms.median.toFixed(0)} ms (${ms.min.toFixed(0)}–${ms.max.toFixed(0)}), ` +
        `CPU ${cpu.median.toFixed(0)} ms (${cpu.min.toFixed(0)}–${cpu.max.toFixed(0)}), ` +
        `RSS ${rss.median.toFixed(1)} MB (${rss.min.toFixed(1)}–${rss.max.toFixed(1)})\n`,
    );
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
