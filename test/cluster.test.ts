// The cluster as operators run it (issue 13): Redis, three acpd nodes as real processes with the embedded
// agent on one shared data directory, nginx in front as deploy/nginx-cluster.conf ships it (round robin,
// no stickiness). Clients reach the nodes only through nginx, so they follow and drive sessions that
// other nodes run. One node is killed with SIGKILL in the middle of a flood: every client still ends with
// the whole sequence of frames (no gap, no duplicate), every session answers a prompt again within the
// lease time, and no prompt ran twice. Then Redis itself is restarted under load.
import { randomUUID } from 'node:crypto';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { startCluster, type Cluster } from '../harness/cluster.js';
import type { Endpoint } from './support/app.js';
import { call, obj, type JsonResponse } from './support/http.js';
import { SYSTEM_PACKAGES, requireSystemPackage } from './support/system-deps.js';

const LEASE_TTL_S = 2;
const SESSIONS = 6;
const FOLLOWERS_PER_SESSION = 2;
/** Each session streams this many chunks, 5 ms apart: the node dies while every session streams. */
const FLOOD_CHUNKS = 600;
const FLOOD = `/slow ${FLOOD_CHUNKS} 5`;

interface Envelope {
  id?: number;
  type: string;
  data: Record<string, unknown>;
}

/**
 * A client following one session through the proxy as a real client does: from the first event on,
 * reconnecting whenever its stream ends with its cursor (`Last-Event-ID`) and its epoch, until stopped.
 */
class Follower {
  /** Every numbered event received, in order, across reconnects. */
  readonly events: Envelope[] = [];
  /** Frames without an id (resyncs, replay_complete, session_state), for the checks. */
  readonly unnumbered: Envelope[] = [];
  /** The node that served each of its connections, in order (X-Acpd-Node). */
  readonly servedBy: string[] = [];
  private epoch: string | undefined;
  private stopped = false;
  private readonly ac = new AbortController();
  private waiters: { match: (e: Envelope) => boolean; resolve: () => void }[] = [];
  readonly done: Promise<void>;

  constructor(
    private readonly front: Endpoint,
    readonly sessionId: string,
  ) {
    this.done = this.run();
  }

  get cursor(): number {
    return this.events.at(-1)?.id ?? 0;
  }

  /** Resolves once an event that matches has arrived (already or later). */
  waitFor(match: (e: Envelope) => boolean): Promise<void> {
    if (this.events.some(match)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ match, resolve }));
  }

  stop(): void {
    this.stopped = true;
    this.ac.abort();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.once();
      } catch {
        // The node went away under the stream, or the proxy refused: reconnect.
      }
      if (!this.stopped) await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  private async once(): Promise<void> {
    const headers: Record<string, string> = {
      ...this.front.headers,
      accept: 'text/event-stream',
      'last-event-id': String(this.cursor),
    };
    if (this.epoch !== undefined) headers['x-qwen-event-epoch'] = this.epoch;
    const res = await request(`${this.front.baseUrl}/session/${this.sessionId}/events`, {
      headers,
      signal: this.ac.signal,
    });
    if (res.statusCode !== 200) {
      await res.body.text();
      return;
    }
    this.servedBy.push(String(res.headers['x-acpd-node']));
    const epoch = res.headers['x-qwen-event-epoch'];
    if (typeof epoch === 'string') this.epoch = epoch;
    let buf = '';
    res.body.setEncoding('utf8');
    for await (const chunk of res.body as AsyncIterable<string>) {
      buf += chunk;
      let sep: number;
      while ((sep = buf.indexOf('\n\n')) !== -1) {
        const raw = buf.slice(0, sep);
        buf = buf.slice(sep + 2);
        const data = raw.split('\n').find((line) => line.startsWith('data: '));
        if (data === undefined) continue;
        const envelope = JSON.parse(data.slice(6)) as Envelope;
        if (envelope.id === undefined) {
          this.unnumbered.push(envelope);
          continue;
        }
        this.events.push(envelope);
        this.waiters = this.waiters.filter((w) => {
          if (!w.match(envelope)) return true;
          w.resolve();
          return false;
        });
      }
    }
  }
}

/** The text of a prompt's echo (`user_message_chunk`), when `e` is one. */
function echoText(e: Envelope): string | undefined {
  const update = e.data.update as { sessionUpdate?: string; content?: { text?: string } } | undefined;
  return e.type === 'session_update' && update?.sessionUpdate === 'user_message_chunk'
    ? update.content?.text
    : undefined;
}

/** The promptId of the prompt whose text starts with `prefix`, once its echo has arrived. */
function promptOf(f: Follower, prefix: string): unknown {
  const echo = f.events.find((e) => echoText(e)?.startsWith(prefix) === true);
  return echo === undefined ? undefined : (echo.data._meta as { promptId?: unknown } | undefined)?.promptId;
}

/** Sends a prompt through the proxy until a node takes it (retrying with the same Idempotency-Key). */
async function promptUntilTaken(c: Cluster, front: Endpoint, sessionId: string, text: string): Promise<JsonResponse> {
  const key = randomUUID();
  return c.until(
    async () => {
      const res = await call(
        front,
        'POST',
        `/session/${sessionId}/prompt`,
        { prompt: [{ type: 'text', text }] },
        { 'idempotency-key': key },
      ).catch(() => undefined);
      // 502: nginx met the dead node (a POST is never passed on); 503: its lease has not expired yet.
      return res !== undefined && res.status < 500 ? res : undefined;
    },
    `a prompt to ${sessionId} taken`,
    { ms: LEASE_TTL_S * 1000 * 5 + 10_000, everyMs: 100 },
  );
}

/** Waits until every follower has the end of the prompt whose text starts with `prefix`, then stops them all. */
async function finishAfter(c: Cluster, followers: Follower[], prefix: string, ms: number): Promise<void> {
  await c.within(
    Promise.all(
      followers.map((f) => f.waitFor((e) => e.type === 'turn_complete' && e.data.promptId === promptOf(f, prefix))),
    ),
    `every follower saw its ${prefix} prompt end`,
    ms,
  );
  followers.forEach((f) => f.stop());
  await Promise.all(followers.map((f) => f.done));
}

function checkSequence(t: Test, f: Follower, label: string): void {
  const ids = f.events.map((e) => e.id ?? 0);
  const gaps = ids.filter((id, i) => i > 0 && id !== (ids[i - 1] ?? 0) + 1);
  t.same(gaps, [], `${label}: every id follows the one before (no gap, no duplicate)`);
  t.equal(ids[0], 1, `${label}: from the first event`);
  t.notOk(
    f.unnumbered.some((e) => e.type === 'state_resync_required'),
    `${label}: never told to resync (its cursor and epoch stayed good)`,
  );
}

t.test('three nodes behind nginx: a node killed mid-flood costs no frame and runs no prompt twice', async (t) => {
  if (!requireSystemPackage(t, SYSTEM_PACKAGES.redis) || !requireSystemPackage(t, SYSTEM_PACKAGES.nginx)) return;
  const c = await startCluster({ nodes: 3, leaseTtl: LEASE_TTL_S });
  t.teardown(() => c.stop());
  const front: Endpoint = { baseUrl: c.front, headers: c.headers };

  // Sessions made through the proxy land on the nodes in turn.
  const sessions: { id: string; node: string }[] = [];
  for (let i = 0; i < SESSIONS; i++) {
    const res = await call(front, 'POST', '/session', { sessionScope: 'thread' });
    t.equal(res.status, 200, JSON.stringify(res.body));
    sessions.push({ id: String(obj(res.body).sessionId), node: String(res.headers['x-acpd-node']) });
  }
  const owners = new Set(sessions.map((s) => s.node));
  t.equal(owners.size, 3, 'the sessions are spread over the three nodes');

  const followers = sessions.flatMap((s) =>
    Array.from({ length: FOLLOWERS_PER_SESSION }, () => new Follower(front, s.id)),
  );
  t.teardown(() => followers.forEach((f) => f.stop()));

  // A flood on every session, then SIGKILL to the node that runs the first session, mid-flood.
  for (const s of sessions) {
    const res = await call(
      front,
      'POST',
      `/session/${s.id}/prompt`,
      { prompt: [{ type: 'text', text: FLOOD }] },
      { prefer: 'respond-async', 'idempotency-key': randomUUID() },
    );
    t.equal(res.status, 202, JSON.stringify(res.body));
  }
  const victim = sessions[0]?.node ?? '';
  const victimIndex = c.nodes.findIndex((n) => n.id === victim);
  const victimSessions = sessions.filter((s) => s.node === victim).map((s) => s.id);
  await c.within(
    Promise.all(
      followers
        .filter((f) => victimSessions.includes(f.sessionId))
        .map((f) => f.waitFor((e) => e.type === 'session_update' && echoText(e) === undefined)),
    ),
    'the victim streams its flood',
  );
  await c.killNode(victimIndex);

  // Every session takes a prompt again: the victim's on a live node, once its lease expired.
  const after = await Promise.all(
    sessions.map((s, i) => c.within(promptUntilTaken(c, front, s.id, `after-${i}`), `session ${i} usable`, 60_000)),
  );
  for (const res of after) t.equal(res.status, 200, JSON.stringify(res.body));

  // Every follower ends with the whole sequence, up to that prompt's end.
  await finishAfter(c, followers, 'after-', 60_000);

  sessions.forEach((s, i) => {
    const mine = followers.filter((f) => f.sessionId === s.id);
    mine.forEach((f, j) => checkSequence(t, f, `session ${i} follower ${j}`));
    const [first, second] = mine;
    if (first && second) {
      const n = Math.min(first.events.length, second.events.length);
      t.same(
        second.events.slice(0, n).map((e) => [e.id, e.type]),
        first.events.slice(0, n).map((e) => [e.id, e.type]),
        `session ${i}: both followers saw the same events`,
      );
    }
    const echoes = (first?.events ?? []).flatMap((e) => {
      const text = echoText(e);
      return text === undefined ? [] : [text];
    });
    t.same(echoes, [FLOOD, `after-${i}`], `session ${i}: each prompt ran once`);
    const ends = (first?.events ?? []).filter((e) => e.type === 'turn_complete' || e.type === 'turn_error');
    t.equal(
      new Set(ends.map((e) => e.data.promptId)).size,
      2,
      `session ${i}: each prompt ended (${ends.map((e) => e.type).join(', ')})`,
    );
    t.equal(ends.length, 2, `session ${i}: and only once`);
    if (victimSessions.includes(s.id)) {
      t.equal(
        ends[0]?.type,
        'turn_error',
        `session ${i}: the turn lost with its node is ended by the node that took over`,
      );
    }
  });
  const cut = followers.filter((f) => f.servedBy.includes(victim));
  t.ok(cut.length > 0, `${cut.length} followers were reading from the node that died`);
  t.ok(
    cut.every((f) => (f.servedBy.at(-1) ?? victim) !== victim),
    'each of them went on, through the proxy, from another node',
  );
});

t.test('Redis restarted under load: clear 503s meanwhile, no corruption, every session back', async (t) => {
  if (!requireSystemPackage(t, SYSTEM_PACKAGES.redis) || !requireSystemPackage(t, SYSTEM_PACKAGES.nginx)) return;
  const c = await startCluster({ nodes: 2, leaseTtl: LEASE_TTL_S });
  t.teardown(() => c.stop());
  const front: Endpoint = { baseUrl: c.front, headers: c.headers };
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) {
    const res = await call(front, 'POST', '/session', { sessionScope: 'thread' });
    t.equal(res.status, 200);
    ids.push(String(obj(res.body).sessionId));
  }
  const followers = ids.map((id) => new Follower(front, id));
  t.teardown(() => followers.forEach((f) => f.stop()));
  for (const id of ids) {
    const res = await call(
      front,
      'POST',
      `/session/${id}/prompt`,
      { prompt: [{ type: 'text', text: '/slow 40 20' }] },
      { prefer: 'respond-async' },
    );
    t.equal(res.status, 202);
  }
  await c.within(
    Promise.all(followers.map((f) => f.waitFor((e) => e.type === 'session_update' && echoText(e) === undefined))),
    'streams flowing',
  );
  await c.redis.kill();
  const refused = await c.until(async () => {
    const res = await call(front, 'POST', '/session', { sessionScope: 'thread' });
    return res.status === 503 ? res : undefined;
  }, 'new work refused while Redis is away');
  t.equal(obj(refused.body).code, 'redis_unavailable', 'a clear error');
  t.ok(refused.headers['retry-after'], 'with Retry-After');
  await c.redis.restart();
  await c.until(
    async () => {
      const checks = await Promise.all(
        c.nodes.map((n) => call({ baseUrl: n.url, headers: c.headers }, 'GET', '/readyz')),
      );
      return checks.every((r) => r.status === 200);
    },
    'every node ready again',
    { ms: 30_000, everyMs: 100 },
  );
  const answers = await Promise.all(ids.map((id, i) => promptUntilTaken(c, front, id, `back-${i}`)));
  for (const res of answers) t.equal(res.status, 200, JSON.stringify(res.body));
  await finishAfter(c, followers, 'back-', 30_000);
  followers.forEach((f, i) => checkSequence(t, f, `session ${i}`));
});
