// acpd behind a real nginx (issue 5), configured by deploy/nginx.conf itself:
// only the listen port, the upstream port and, for the idle test, the read
// timeout are rewritten. Shows that SSE frames pass through one by one as they
// are published, that a reconnect with Last-Event-ID through the proxy
// replays without a gap, that heartbeats keep a quiet stream open past the
// proxy's read timeout, and that X-Forwarded-* counts only with --trust-proxy.
//
// nginx comes from Debian's package. Without it the tests that run it are
// skipped, with the install command in the skip; .ci/run installs it and makes
// its absence a failure (see test/support/system-deps.ts).
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { Agent, request } from 'undici';
import { createRequire } from 'node:module';
import { client, type SessionNotification } from '@agentclientprotocol/sdk';
import { createHttpStream } from '@agentclientprotocol/sdk/experimental/http-client';
import { createWebSocketStream, type WebSocketConstructor } from '@agentclientprotocol/sdk/experimental/ws-client';
import { STREAMING_DIRECTIVES, nginxMainConfig } from '../harness/nginx.js';
import { freePort } from '../harness/ports.js';
import { within } from '../harness/wait.js';
import { startDaemon, steerDaemon, tempDir, type TestDaemon } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { openEvents, type SseFrame, type SseStream } from './support/sse.js';
import { SYSTEM_PACKAGES, requireSystemPackage } from './support/system-deps.js';
import { chunk } from './support/values.js';

const NGINX = SYSTEM_PACKAGES.nginx.binary;
const { WebSocket } = createRequire(import.meta.url)('ws') as { WebSocket: WebSocketConstructor };
const DEPLOY_CONF = fileURLToPath(new URL('../../deploy/nginx.conf', import.meta.url));
/** acpd's default heartbeat: the bound within which every frame must pass the proxy. */
const DEFAULT_HEARTBEAT_MS = 15_000;

interface Proxy {
  port: number;
  /** The daemon as seen through nginx: the helpers' requests go to the proxy. */
  front(d: TestDaemon): TestDaemon;
  /** What nginx wrote to its error log (stderr). */
  log(): string;
}

/** Replaces `from` in deploy/nginx.conf, which must hold it exactly `count` times (else the template is stale). */
function rewrite(conf: string, from: string, to: string, count: number): string {
  const found = conf.split(from).length - 1;
  if (found !== count) {
    throw new Error(
      `deploy/nginx.conf holds ${JSON.stringify(from)} ${found} times, expected ${count}: update test/nginx.test.ts`,
    );
  }
  return conf.replaceAll(from, to);
}

/**
 * nginx in the foreground on a loopback port, in front of `upstreamPort`, as
 * the current user; stopped (SIGTERM, exit awaited) by teardown.
 */
async function startNginx(t: Test, upstreamPort: number, opts: { readTimeout?: string } = {}): Promise<Proxy> {
  const dir = tempDir(t, 'acpd-nginx-');
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    let site = readFileSync(DEPLOY_CONF, 'utf8');
    site = rewrite(site, 'listen 80;', `listen 127.0.0.1:${port};`, 1);
    site = rewrite(site, 'proxy_pass http://127.0.0.1:4170;', `proxy_pass http://127.0.0.1:${upstreamPort};`, 3);
    if (opts.readTimeout !== undefined) {
      site = rewrite(site, 'proxy_read_timeout 60s;', `proxy_read_timeout ${opts.readTimeout};`, 1);
    }
    const confPath = path.join(dir, 'nginx.conf');
    writeFileSync(confPath, nginxMainConfig(dir, site));

    const child = spawn(NGINX, ['-p', dir, '-c', confPath, '-e', 'stderr', '-g', 'daemon off;'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    t.teardown(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    });
    // With the error log at notice, nginx says when its worker runs: by then it listens.
    const started = await new Promise<boolean>((resolve) => {
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        stderr += chunk;
        if (stderr.includes('start worker process ')) resolve(true);
      });
      void exited.then(() => resolve(false));
    });
    if (started) {
      return {
        port,
        front: (d) => ({ ...d, baseUrl: `http://127.0.0.1:${port}` }),
        log: () => stderr,
      };
    }
    // Another test may have taken the port in between; anything else is fatal.
    if (!stderr.includes('Address already in use') || attempt >= 3) throw new Error(`nginx did not start:\n${stderr}`);
  }
}

/** The text of an agent chunk frame. */
function chunkText(f: SseFrame): string | undefined {
  const update: unknown = f.envelope?.data.update;
  if (typeof update !== 'object' || update === null || !('content' in update)) return undefined;
  const content: unknown = update.content;
  if (typeof content !== 'object' || content === null || !('text' in content)) return undefined;
  return typeof content.text === 'string' ? content.text : undefined;
}

/** The frame carrying the agent chunk `text`. */
function saying(text: string): (f: SseFrame) => boolean {
  return (f) => chunkText(f) === text;
}

const isHeartbeat = (f: SseFrame): boolean => f.comment === 'heartbeat';

/** The numbered events of a stream (every stream also opens with replay_complete and session_state, id-less). */
function numbered(stream: SseStream): NonNullable<SseFrame['envelope']>[] {
  return stream.events().filter((e) => e.id !== undefined);
}

function texts(stream: SseStream): (string | undefined)[] {
  return stream.frames.filter((f) => f.envelope?.id !== undefined).map(chunkText);
}

function ms(value: number): string {
  return `${value.toFixed(1)} ms`;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

/** A daemon on the steerable agent, behind nginx, with one session created through the proxy. */
async function proxied(t: Test, opts: { args?: string[]; readTimeout?: string } = {}) {
  // Teardowns run last-in first-out: nginx stops, then the daemon, then the controller.
  const { d, steer } = await steerDaemon(t, { args: opts.args });
  const proxy = await startNginx(t, d.port, { readTimeout: opts.readTimeout });
  const viaProxy = proxy.front(d);
  // The agent is started by a session made directly, which keeps it running: a create through the
  // proxy then waits only for session/new, well inside a short read timeout on a loaded machine.
  await createSession(d, { sessionScope: 'thread' });
  const sid = await createSession(viaProxy);
  const agent = await steer.agent();
  return { d, proxy, viaProxy, sid, agent };
}

/** An nginx time (`60s`, `5m`, `1h`, `30`) in milliseconds. */
function duration(value: string): number {
  const match = /^(\d+)(ms|s|m|h)?$/.exec(value);
  if (!match) throw new Error(`not an nginx time: ${value}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] ?? 's'] ?? NaN;
  return Number(match[1]) * unit;
}

t.test("deploy/nginx.conf spells out what acpd's streams need", async (t) => {
  // acpd's streams also send X-Accel-Buffering: no, which nginx obeys; the
  // config must not rely on that alone (another proxy in the path may not).
  const lines = readFileSync(DEPLOY_CONF, 'utf8')
    .split('\n')
    .map((line) => line.replace(/#.*$/, '').trim())
    .filter((line) => line !== '');
  for (const directive of STREAMING_DIRECTIVES) {
    t.ok(lines.includes(directive), directive);
  }
  t.notOk(
    lines.some((line) => /^proxy_set_header\s+Host\b/i.test(line)),
    "Host stays the upstream address, which acpd's loopback guard accepts",
  );
  t.notOk(
    lines.some((line) => /^proxy_set_header\s+Origin\b/i.test(line)),
    'Origin passes through: acpd keeps refusing browser pages',
  );

  const timeouts = lines.flatMap((line) => /^proxy_read_timeout\s+(\S+);$/.exec(line)?.[1] ?? []).map(duration);
  t.equal(timeouts.length, 2, 'one read timeout for everything, one for prompts');
  const [general = 0, prompts = 0] = timeouts;
  t.ok(
    general >= 2 * DEFAULT_HEARTBEAT_MS,
    `the general read timeout (${general} ms) leaves room for a missed heartbeat`,
  );
  t.ok(prompts >= 30 * 60_000, `prompts get a long read timeout (${prompts} ms): a turn sends nothing until it ends`);
  const start = lines.indexOf('location ~ ^/session/[^/]+/prompt$ {');
  const block = start < 0 ? [] : lines.slice(start, lines.indexOf('}', start));
  t.ok(
    block.some(
      (line) =>
        /^proxy_read_timeout\s/.test(line) && duration(line.split(/\s+/)[1]?.replace(';', '') ?? '') === prompts,
    ),
    "the long timeout is the prompt location's",
  );
});

if (requireSystemPackage(t, SYSTEM_PACKAGES.nginx)) {
  t.test('SSE frames pass through nginx as they are published, none held back for a later one', async (t) => {
    const { d, viaProxy, sid, agent } = await proxied(t);

    const opened = performance.now();
    const stream = await within(openEvents(t, viaProxy, sid), 'the response head through nginx');
    t.equal(stream.status, 200);
    t.equal(stream.headers['content-type'], 'text/event-stream');
    t.equal(stream.headers['cache-control'], 'no-cache, no-transform');
    await within(
      stream.waitFor((f) => f.retry === '3000', 'the retry frame'),
      'the retry frame',
    );
    const firstByte = performance.now() - opened;
    const direct = await openEvents(t, d, sid);
    await direct.waitFor((f) => f.retry === '3000', 'the retry frame, directly');

    // One frame at a time: the next is published only once the previous one
    // came out of the proxy, so a proxy that holds frames back until more
    // arrive (or until a heartbeat pushes them out) never gets past frame 1.
    const throughProxy: number[] = [];
    const straight: number[] = [];
    const count = 20;
    for (let i = 1; i <= count; i++) {
      const text = `frame ${i}`;
      const sent = performance.now();
      await agent.notify(sid, chunk(text));
      const viaDirect = direct.waitFor(saying(text), text).then(() => straight.push(performance.now() - sent));
      await within(stream.waitFor(saying(text), text), `${text} through nginx`, DEFAULT_HEARTBEAT_MS);
      throughProxy.push(performance.now() - sent);
      await viaDirect;
      if (numbered(stream).length !== i) t.fail(`after ${text}: ${numbered(stream).length} events through nginx`);
    }
    t.strictSame(
      texts(stream),
      Array.from({ length: count }, (_, i) => `frame ${i + 1}`),
      'every frame, in order',
    );
    t.strictSame(
      numbered(stream).map((e) => e.id),
      Array.from({ length: count }, (_, i) => i + 1),
    );
    t.notOk(stream.frames.some(isHeartbeat), 'no heartbeat was needed to push anything out');
    t.ok(Math.max(...throughProxy) < DEFAULT_HEARTBEAT_MS, 'each frame arrived well before the next heartbeat');
    const browser = await call(viaProxy, 'GET', '/capabilities', undefined, { origin: 'https://ui.example' });
    t.equal(browser.status, 403, 'an Origin still reaches acpd through nginx, and is refused');
    t.same(browser.body, { error: 'Request denied by CORS policy' });
    t.comment(
      `through nginx: headers + retry frame ${ms(firstByte)} after the request; publish → receipt median ` +
        `${ms(median(throughProxy))}, max ${ms(Math.max(...throughProxy))} (direct: median ${ms(median(straight))}, ` +
        `max ${ms(Math.max(...straight))}) over ${count} frames`,
    );
  });

  t.test('a reconnect through nginx with Last-Event-ID replays what was missed, without a gap', async (t) => {
    const { d, viaProxy, sid, agent } = await proxied(t);
    const witness = await openEvents(t, d, sid);

    const first = await within(openEvents(t, viaProxy, sid), 'the response head through nginx');
    for (const text of ['a1', 'a2', 'a3']) await agent.notify(sid, chunk(text));
    await within(first.waitFor(saying('a3'), 'a3'), 'a3 through nginx');
    const lastSeen = numbered(first).at(-1)?.id;
    t.equal(lastSeen, 3);
    first.close();
    await first.ended;

    // Published while the client is away; the direct witness shows they are on the bus.
    for (const text of ['b1', 'b2', 'b3']) await agent.notify(sid, chunk(text));
    await witness.waitFor(saying('b3'), 'b3 on the witness');

    const second = await within(
      openEvents(t, viaProxy, sid, { lastEventId: String(lastSeen) }),
      'the response head through nginx',
    );
    t.equal(second.status, 200);
    await agent.notify(sid, chunk('c1'));
    await within(second.waitFor(saying('c1'), 'c1'), 'c1 through nginx');

    t.strictSame(texts(second), ['b1', 'b2', 'b3', 'c1'], 'the missed frames first, then the live one');
    const ids = [...numbered(first), ...numbered(second)].map((e) => e.id);
    t.strictSame(ids, [1, 2, 3, 4, 5, 6, 7], 'both connections together: every id once, in order');
    t.ok(
      second.frames.filter((f) => f.envelope?.id !== undefined).every((f) => f.id === String(f.envelope?.id)),
      'replayed frames carry their id: lines, so a further reconnect resumes from them',
    );
  });

  t.test("heartbeats keep a quiet stream open past nginx's read timeout", async (t) => {
    // nginx gives up on an upstream silent for 1 s; acpd's heartbeat comes every 300 ms.
    const { viaProxy, sid, agent } = await proxied(t, { args: ['--sse-heartbeat-ms', '300'], readTimeout: '1s' });
    const stream = await within(openEvents(t, viaProxy, sid), 'the response head through nginx');
    let ended = false;
    void stream.ended.then(() => {
      ended = true;
    });
    await within(
      stream.waitFor((f) => f.retry === '3000', 'the retry frame'),
      'the retry frame',
    );

    // Nothing is published for three read timeouts. This wait is the
    // behaviour under test (time passing), not a synchronization.
    const quietMs = 3000;
    const quietStart = performance.now();
    const arrivals: number[] = [];
    const counted = new Set<SseFrame>();
    while (performance.now() - quietStart < quietMs) {
      const beat = await stream.waitFor((f) => isHeartbeat(f) && !counted.has(f), 'a heartbeat');
      counted.add(beat);
      arrivals.push(performance.now());
    }
    const gaps = arrivals.map((at, i) => at - (arrivals[i - 1] ?? quietStart));
    t.notOk(ended, 'the stream is still open after three read timeouts');
    t.ok(
      arrivals.length >= 5,
      `${arrivals.length} heartbeats came through nginx in ${ms(performance.now() - quietStart)}`,
    );
    t.ok(Math.max(...gaps) < 1000, `the longest silence (${ms(Math.max(...gaps))}) stayed under nginx's 1 s`);
    t.equal(numbered(stream).length, 0, 'nothing but heartbeats meanwhile');

    await agent.notify(sid, chunk('after the quiet'));
    await within(stream.waitFor(saying('after the quiet'), 'the late frame'), 'the late frame');
    t.notOk(ended, 'and it still delivers');
    t.comment(`heartbeats through nginx every ${ms(median(gaps))} (median), longest gap ${ms(Math.max(...gaps))}`);
  });

  t.test('control: with heartbeats slower than the read timeout, nginx does cut the stream', async (t) => {
    // Shows the timeout above is really in force, so that test proves something.
    const { proxy, viaProxy, sid } = await proxied(t, { args: ['--sse-heartbeat-ms', '5000'], readTimeout: '1s' });
    const stream = await within(openEvents(t, viaProxy, sid), 'the response head through nginx');
    await within(
      stream.waitFor((f) => f.retry === '3000', 'the retry frame'),
      'the retry frame',
    );
    const start = performance.now();
    await within(stream.ended, 'nginx ending the quiet stream');
    t.ok(performance.now() - start < 5000, `cut after ${ms(performance.now() - start)}, before the first heartbeat`);
    t.notOk(stream.frames.some(isHeartbeat));
    t.match(proxy.log(), /upstream timed out/, 'nginx says why');
  });

  interface LoggedDaemon {
    d: TestDaemon;
    /** The request log lines carrying this request id. */
    requestLine(reqId: string): Record<string, unknown> | undefined;
  }

  /** The real app with its log captured (JSON lines), as test/logging.test.ts does it. */
  async function loggedDaemon(t: Test, args: string[]): Promise<LoggedDaemon> {
    const chunks: string[] = [];
    const d = await startDaemon(t, {
      args: [...args, '--log-level', 'info'],
      logStream: { write: (line) => void chunks.push(line) },
    });
    const requestLine = (reqId: string) =>
      chunks
        .join('')
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => obj(JSON.parse(line)))
        .find((line) => line.reqId === reqId && typeof line.req === 'object');
    return { d, requestLine };
  }

  t.test('X-Forwarded-* from nginx counts only with --trust-proxy', async (t) => {
    // Two clients on different loopback addresses (Linux routes all of 127/8 to lo).
    const alice = new Agent({ localAddress: '127.0.0.2' });
    const bob = new Agent({ localAddress: '127.0.0.3' });
    t.teardown(() => alice.close());
    t.teardown(() => bob.close());

    const ask = async (base: string, client: Agent, reqId: string): Promise<number> => {
      const res = await request(`${base}/capabilities`, {
        dispatcher: client,
        // A client's own X-Forwarded-For must not survive the proxy: nginx is the first hop.
        headers: { host: 'acpd.example.com', 'x-forwarded-for': '203.0.113.66', 'x-request-id': reqId },
      });
      await res.body.dump();
      return res.statusCode;
    };

    for (const trusted of [true, false]) {
      const label = trusted ? '--trust-proxy 127.0.0.1' : 'no --trust-proxy';
      // One read a minute per client address: the budget shows whom acpd takes the request to come from.
      const logged = await loggedDaemon(t, [
        '--rate-limit-reads',
        '1',
        ...(trusted ? ['--trust-proxy', '127.0.0.1'] : []),
      ]);
      const proxy = await startNginx(t, logged.d.port);
      const base = `http://127.0.0.1:${proxy.port}`;

      t.equal(await ask(base, alice, `${trusted}-alice-1`), 200, `${label}: alice's first read`);
      t.equal(await ask(base, alice, `${trusted}-alice-2`), 429, `${label}: alice's second read is over her budget`);
      t.equal(
        await ask(base, bob, `${trusted}-bob-1`),
        trusted ? 200 : 429,
        trusted ? `${label}: bob has a budget of his own` : `${label}: bob shares nginx's budget, already spent`,
      );

      const aliceLine = obj(logged.requestLine(`${trusted}-alice-1`)?.req);
      const bobLine = obj(logged.requestLine(`${trusted}-bob-1`)?.req);
      t.equal(aliceLine.remoteAddress, trusted ? '127.0.0.2' : '127.0.0.1', `${label}: the logged address for alice`);
      t.equal(bobLine.remoteAddress, trusted ? '127.0.0.3' : '127.0.0.1', `${label}: the logged address for bob`);
      t.equal(
        aliceLine.host,
        trusted ? 'acpd.example.com' : `127.0.0.1:${logged.d.port}`,
        `${label}: the logged host is ${trusted ? 'X-Forwarded-Host' : 'the Host nginx sent'}`,
      );

      if (trusted) {
        // Trust goes to the proxy's address only: a client connecting directly cannot claim another address.
        const direct = await request(`${logged.d.baseUrl}/capabilities`, {
          dispatcher: bob,
          headers: { 'x-forwarded-for': '203.0.113.77', 'x-request-id': 'direct-bob' },
        });
        await direct.body.dump();
        t.equal(direct.statusCode, 429, 'bob, directly and whatever he claims, is still bob (budget spent)');
        t.equal(obj(logged.requestLine('direct-bob')?.req).remoteAddress, '127.0.0.3');
      }
    }
  });

  for (const transport of ['http', 'ws'] as const) {
    t.test(
      `/acp through nginx over ${transport}: a prompt streams, a permission is answered, an idle socket stays`,
      async (t) => {
        const workspace = tempDir(t, 'acpd-ws-');
        const d = await startDaemon(t, { workspace, args: ['--sse-heartbeat-ms', '300'] });
        const proxy = await startNginx(t, d.port, { readTimeout: '1s' });
        // The agent is started directly (as in proxied()): initialize, through the proxy, then waits for no
        // agent spawn, which could outlast the short read timeout on a loaded machine.
        await createSession(d, { sessionScope: 'thread' });
        const base = `http://127.0.0.1:${proxy.port}/acp`;
        const updates: SessionNotification[] = [];
        let asked = 0;
        const app = client({ name: 'acp-through-nginx' })
          .onNotification('session/update', ({ params }) => {
            updates.push(params);
          })
          .onRequest('session/request_permission', () => {
            asked++;
            return { outcome: { outcome: 'selected', optionId: 'allow' } };
          });
        const stream =
          transport === 'ws'
            ? createWebSocketStream(base.replace(/^http/, 'ws'), { headers: d.headers, WebSocket })
            : createHttpStream(base, { headers: d.headers });
        await app.connectWith(stream, async (agent) => {
          await agent.request('initialize', { protocolVersion: 1, clientCapabilities: {} });
          const { sessionId } = await agent.request('session/new', { cwd: workspace, mcpServers: [] });
          const answer = await agent.request('session/prompt', {
            sessionId,
            prompt: [{ type: 'text', text: '/write through.txt proxied' }],
          });
          t.equal(answer.stopReason, 'end_turn');
          t.equal(asked, 1, 'the permission request came through');
          t.equal(readFileSync(path.join(workspace, 'through.txt'), 'utf8'), 'proxied', 'and its answer went back');
          // Longer than nginx's read timeout with nothing to say: the streams' heartbeats (SSE comments,
          // WebSocket pings) keep the connection, so the next prompt is served on it.
          await new Promise((resolve) => setTimeout(resolve, 2500));
          const again = await agent.request('session/prompt', {
            sessionId,
            prompt: [{ type: 'text', text: 'still here' }],
          });
          t.equal(again.stopReason, 'end_turn');
          t.ok(
            updates.some((n) => n.update.sessionUpdate === 'agent_message_chunk'),
            "the agent's reply streamed through",
          );
        });
      },
    );
  }
}
