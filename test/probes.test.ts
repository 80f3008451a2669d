// Liveness and readiness (issue 5): /livez answers while the process runs; /readyz answers 200 only when
// the listener is up, the agent command resolves, the daemon is not draining and under-pressure sees no
// pressure — otherwise 503 with Retry-After. Load shedding spares the probes and /metrics.
import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { until } from '../harness/wait.js';
import { startDaemon, tempDir } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { isType, openEvents } from './support/sse.js';

const STUBBORN_AGENT = fileURLToPath(new URL('./fixtures/stubborn-agent.js', import.meta.url));

/** An executable shell script (its content does not matter: readiness only looks it up). */
function writeExecutable(file: string): void {
  writeFileSync(file, '#!/bin/sh\nexit 0\n');
  chmodSync(file, 0o755);
}

t.test('/livez and /readyz on a healthy daemon', async (t) => {
  const d = await startDaemon(t);
  const live = await call(d, 'GET', '/livez');
  t.equal(live.status, 200);
  t.same(live.body, { status: 'ok' });
  const ready = await call(d, 'GET', '/readyz');
  t.equal(ready.status, 200);
  t.same(ready.body, {
    status: 'ok',
    checks: { config: 'ok', listener: 'ok', agent: 'ok', drain: 'ok', load: 'ok', eventLog: 'ok' },
  });
  t.equal(ready.headers['retry-after'], undefined);
});

t.test('not ready while the agent command does not exist; ready as soon as it does', async (t) => {
  const dir = tempDir(t, 'acpd-probe-agent-');
  const agent = path.join(dir, 'my-agent');
  const d = await startDaemon(t, { agent: [agent, '--acp'] });

  const missing = await call(d, 'GET', '/readyz');
  t.equal(missing.status, 503);
  t.equal(obj(missing.body).status, 'unavailable');
  t.equal(obj(obj(missing.body).checks).agent, 'missing');
  t.equal(obj(obj(missing.body).checks).listener, 'ok', 'only the agent is wrong');
  t.match(String(missing.headers['retry-after']), /^\d+$/);
  t.equal((await call(d, 'GET', '/livez')).status, 200, 'alive all the same');

  // A file that is not executable does not count.
  writeFileSync(agent, '#!/bin/sh\n');
  t.equal((await call(d, 'GET', '/readyz')).status, 503);
  writeExecutable(agent);
  const ready = await call(d, 'GET', '/readyz');
  t.equal(ready.status, 200, 'looked up again on demand');
  t.equal(obj(obj(ready.body).checks).agent, 'ok');
});

t.test("a bare agent command is looked up on the agent's PATH", async (t) => {
  const bin = tempDir(t, 'acpd-probe-bin-');
  const d = await startDaemon(t, { agent: ['acpd-probe-agent'], env: { PATH: bin } });
  t.equal((await call(d, 'GET', '/readyz')).status, 503);
  writeExecutable(path.join(bin, 'acpd-probe-agent'));
  t.equal((await call(d, 'GET', '/readyz')).status, 200);
});

t.test('/readyz is 503 while the daemon drains', async (t) => {
  // This agent ignores SIGTERM and its closed stdin, so the drain (preClose) lasts until the test
  // SIGKILLs its process group: the window is held open by the agent, not by a timer.
  const d = await startDaemon(t, { agent: [process.execPath, STUBBORN_AGENT], args: ['--kill-grace-ms', '600000'] });
  const id = await createSession(d);
  const [channel] = d.app.channels.alive;
  const pid = channel?.pid;
  if (pid === undefined) throw new Error('no agent process');
  const killAgent = () => {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  t.teardown(killAgent);
  const events = await openEvents(t, d, id);
  await events.waitFor((f) => f.retry !== undefined, 'retry frame');
  t.equal((await call(d, 'GET', '/readyz')).status, 200);

  const closing = d.app.close();
  await events.waitFor(isType('session_died'), 'session_died from the drain');
  t.equal(obj(events.events().find((e) => e.type === 'session_died')?.data).reason, 'daemon_shutdown');

  const report = await d.app.readiness.check();
  t.equal(report.checks.drain, 'draining');
  t.equal(report.ready, false);
  const res = await call(d, 'GET', '/readyz');
  t.equal(res.status, 503, 'not ready while draining');
  t.equal(d.app.channels.alive.size, 1, 'the drain was still waiting for the agent');

  killAgent();
  await closing;
});

t.test(
  'under pressure: 503 + Retry-After for work and for /readyz; /livez, /health and /metrics still answer',
  async (t) => {
    // One byte of heap is always exceeded: once the start-up warm-up is over, the daemon is under pressure.
    const d = await startDaemon(t, { args: ['--max-heap-used-bytes', '1'] });
    t.equal((await call(d, 'GET', '/capabilities')).status, 200, 'not shed right after start');
    await until(
      async () => (await d.app.readiness.check()).checks.load === 'overloaded',
      'the daemon to report pressure',
    );

    const work = await call(d, 'GET', '/capabilities');
    t.equal(work.status, 503);
    t.equal(obj(work.body).code, 'overloaded');
    t.type(obj(work.body).error, 'string');
    t.match(String(work.headers['retry-after']), /^\d+$/);
    t.equal((await call(d, 'POST', '/session', {})).status, 503, 'no new sessions either');
    t.equal(d.app.channels.spawnCount, 0, 'the shed request never reached the agent layer');

    const ready = await call(d, 'GET', '/readyz');
    t.equal(ready.status, 503);
    t.equal(obj(obj(ready.body).checks).load, 'overloaded');
    t.match(String(ready.headers['retry-after']), /^\d+$/);

    t.equal((await call(d, 'GET', '/livez')).status, 200);
    t.equal((await call(d, 'GET', '/health')).status, 200);
    t.equal((await call(d, 'GET', '/metrics')).status, 200);
  },
);

t.test('no pressure checks run when every threshold is 0', async (t) => {
  const d = await startDaemon(t, { args: ['--max-event-loop-delay-ms', '0'] });
  t.equal(d.config.maxEventLoopDelayMs, 0);
  t.equal((await call(d, 'GET', '/capabilities')).status, 200);
  t.equal(d.app.isUnderPressure(), false);
});

// Needs the one-line change in src/plugins/security.ts (owned elsewhere): the loopback exemption must
// cover /livez and /readyz as it covers /health. Until then this test fails.
t.test("/livez and /readyz follow /health's auth rule: exempt on loopback, token-protected work", async (t) => {
  const d = await startDaemon(t, { args: ['--token', 'probe-secret'] });
  const anonymous = { authorization: '' };
  t.equal((await call(d, 'GET', '/health', undefined, anonymous)).status, 200, '/health (the reference rule)');
  t.equal((await call(d, 'GET', '/livez', undefined, anonymous)).status, 200, '/livez like /health');
  t.equal((await call(d, 'GET', '/readyz', undefined, anonymous)).status, 200, '/readyz like /health');
  t.equal((await call(d, 'GET', '/capabilities', undefined, anonymous)).status, 401);
  t.equal((await call(d, 'GET', '/metrics', undefined, anonymous)).status, 401, '/metrics keeps the token');
});
