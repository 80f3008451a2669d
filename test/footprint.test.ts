/**
 * What the daemon leaves out of its start-up (issue 16): the ACP SDK (its zod
 * schemas) is loaded with the first agent, undici only when webhooks are
 * configured, and nothing of Swagger UI (routes/docs.ts reads its files when
 * /docs asks). A probe process (test/fixtures/module-probe.ts) records every
 * module it imports while it starts the real app, then creates a session.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { PROTOCOL_VERSION } from '@agentclientprotocol/sdk';
import { ACP_PROTOCOL_VERSION } from '../src/services/acp-sdk.js';

const PROBE = fileURLToPath(new URL('./fixtures/module-probe.js', import.meta.url));
const SDK = '/node_modules/@agentclientprotocol/sdk/';
const UNDICI = '/node_modules/undici/';
/** Swagger UI's static build, and the file server and UI plugin /docs once came with. */
const DOCS_UI = [
  '/node_modules/swagger-ui-dist/',
  '/node_modules/@fastify/static/',
  '/node_modules/@fastify/swagger-ui/',
];

/** The module URLs the probe resolved before it listened, and between then and its first session. */
function probe(t: Test, flags: string[] = []): { start: string[]; create: string[] } {
  const dir = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'acpd-footprint-')));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'modules.txt');
  execFileSync(process.execPath, [PROBE, file, dir, ...flags], {
    stdio: ['ignore', 'ignore', 'inherit'],
    timeout: 60_000,
  });
  const lines = readFileSync(file, 'utf8').split('\n');
  const listening = lines.indexOf('-- listening');
  const created = lines.indexOf('-- created');
  t.ok(listening > 0 && created > listening, 'the probe listened, then created a session');
  return { start: lines.slice(0, listening), create: lines.slice(listening + 1, created) };
}

t.test("acpd speaks the SDK's protocol version", async (t) => {
  t.equal(ACP_PROTOCOL_VERSION, PROTOCOL_VERSION);
});

t.test('start-up loads neither the ACP SDK nor undici; the first agent brings the SDK', async (t) => {
  const { start, create } = probe(t);
  t.same(
    start.filter((url) => url.includes(SDK)),
    [],
    'no SDK module before listening',
  );
  t.same(
    start.filter((url) => url.includes(UNDICI)),
    [],
    'no undici without webhooks',
  );
  t.ok(
    create.some((url) => url.includes(SDK)),
    'the SDK is loaded when the first agent is spawned',
  );
});

t.test('start-up loads nothing of Swagger UI or a static file server', async (t) => {
  const { start } = probe(t);
  t.ok(
    start.some((url) => url.includes('/node_modules/@fastify/swagger/lib/')),
    'the probe sees the modules CommonJS require()s (the document generator loads its lib/ so)',
  );
  t.same(
    start.filter((url) => DOCS_UI.some((dir) => url.includes(dir))),
    [],
    'none of them before listening',
  );
});
