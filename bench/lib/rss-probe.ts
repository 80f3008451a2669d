// Where acpd's idle memory comes from: one process that measures its own RSS (after a full GC)
// at each stage of start-up — bare node, the modules imported, the app built, ready, listening,
// one request served. Prints one JSON line. Run with --expose-gc:
//   node --expose-gc build/bench/lib/rss-probe.js <workspace>
//   node --expose-gc build/bench/lib/rss-probe.js --module <package>   (bare node, then that one import)
import { setTimeout as sleep } from 'node:timers/promises';

interface RssStage {
  stage: string;
  rssMb: number;
  heapUsedMb: number;
}

const stages: RssStage[] = [];

async function mark(stage: string): Promise<void> {
  // @types/node declares the global `gc` that --expose-gc installs.
  const gc = globalThis.gc;
  for (let i = 0; i < 2; i++) {
    if (gc !== undefined) gc();
    await sleep(100);
  }
  const u = process.memoryUsage();
  stages.push({
    stage,
    rssMb: Math.round((u.rss / 2 ** 20) * 10) / 10,
    heapUsedMb: Math.round((u.heapUsed / 2 ** 20) * 10) / 10,
  });
}

async function onlyModule(name: string): Promise<void> {
  await mark('bare node');
  const loaded: unknown = await import(name);
  await mark(name);
  if (loaded === undefined) throw new Error(`${name}: nothing imported`);
  process.stdout.write(`${JSON.stringify(stages)}\n`);
}

async function main(): Promise<void> {
  if (process.argv[2] === '--module') return onlyModule(process.argv[3] ?? '');
  const workspace = process.argv[2];
  if (workspace === undefined) throw new Error('usage: rss-probe.js <workspace>');
  await mark('bare node');
  // The same sources dist/ is built from, compiled by tsconfig.test.json.
  const { buildApp } = await import('../../src/app.js');
  const { loadConfig } = await import('../../src/config.js');
  await mark('modules imported');
  const config = loadConfig({
    argv: ['--workspace', workspace, '--port', '0', '--log-level', 'warn'],
    env: {},
    cwd: workspace,
  });
  const app = await buildApp(config);
  await mark('app built');
  await app.ready();
  await mark('app ready (schemas compiled)');
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  await mark('listening');
  await (await fetch(`${address}/health`)).arrayBuffer();
  await mark('one request served');
  await app.close();
  process.stdout.write(`${JSON.stringify(stages)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
