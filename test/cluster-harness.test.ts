// The cluster harness (harness/cluster.ts) and deploy/nginx-cluster.conf, on what works without the cluster
// code itself: Redis, two real acpd nodes on one data directory, nginx in front as shipped. Every node
// answers through nginx, requests go round robin (X-Acpd-Node says which node answered), event streams pass
// frame by frame, a GET that meets a dead node is passed to a live one while a POST never is, and killing a
// node leaves none of its processes behind.
//
// Following and driving a session from another node, and a node dying, are the cluster's own test
// (cluster.test.ts).
import { readFileSync } from 'node:fs';
import t from 'tap';
import { CLUSTER_NGINX_CONF, startCluster, type Cluster } from '../harness/cluster.js';
import { STREAMING_DIRECTIVES } from '../harness/nginx.js';
import { isAlive, livingDescendants } from '../harness/proc-table.js';
import { Procs } from '../harness/spawn.js';
import { buildTestApp, type Endpoint } from './support/app.js';
import { call, createSession, obj } from './support/http.js';
import { openEvents } from './support/sse.js';
import { SYSTEM_PACKAGES, requireSystemPackage } from './support/system-deps.js';
import { textPrompt } from './support/values.js';

/** The config's lines without comments or blanks. */
function directives(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.replace(/#.*$/, '').trim())
    .filter((line) => line !== '');
}

/** The directives of the block that `opening` opens, nested blocks left out. */
function block(lines: string[], opening: string): string[] {
  const found: string[] = [];
  let depth = 0;
  for (const line of lines.slice(lines.indexOf(opening) + 1)) {
    if (line === '}') {
      if (depth === 0) break;
      depth -= 1;
    } else {
      if (depth === 0) found.push(line);
      if (line.endsWith('{')) depth += 1;
    }
  }
  return lines.includes(opening) ? found : [];
}

t.test('X-Acpd-Node names the node on every answer, only when it has a --node-id', async (t) => {
  const named = await buildTestApp(t, { args: ['--node-id', 'node-7'] });
  for (const url of ['/livez', '/capabilities', '/session/nope/events']) {
    const res = await named.inject({ method: 'GET', url });
    t.equal(res.headers['x-acpd-node'], 'node-7', `${url} (${res.statusCode})`);
  }
  const single = await buildTestApp(t);
  t.notOk('x-acpd-node' in (await single.inject({ method: 'GET', url: '/livez' })).headers, 'a single daemon: none');
});

t.test('deploy/nginx-cluster.conf: no affinity, unbuffered streams, retries for GET only', async (t) => {
  const lines = directives(readFileSync(CLUSTER_NGINX_CONF, 'utf8'));
  for (const directive of STREAMING_DIRECTIVES) {
    t.ok(lines.includes(directive), directive);
  }
  const upstream = block(lines, 'upstream acpd_nodes {');
  const servers = upstream.filter((line) => line.startsWith('server '));
  t.equal(servers.length, 3, 'three nodes, as in deploy/compose.yaml');
  t.ok(
    servers.every((line) => /\smax_fails=\d+\s/.test(line)),
    'every node has passive health (max_fails)',
  );
  t.notOk(
    upstream.some((line) => /^(ip_hash|hash|sticky|least_conn|random)\b/.test(line)),
    'round robin, and no affinity of any kind',
  );
  t.same(
    block(lines, 'location / {').filter((line) => line.startsWith('proxy_next_upstream')),
    ['proxy_next_upstream error timeout;'],
    'GET and HEAD are passed to another node on an error or a timeout',
  );
  t.same(
    block(lines, 'location @mutating {').filter((line) => line.startsWith('proxy_next_upstream')),
    ['proxy_next_upstream off;'],
    'every other method never is',
  );
  t.ok(block(lines, 'location ~ ^/session/[^/]+/prompt$ {').includes('proxy_next_upstream off;'), 'nor is a prompt');
  t.notOk(
    lines.some((line) => line.includes('non_idempotent')),
    'nginx is never told to resend a POST it already sent',
  );
});

if (requireSystemPackage(t, SYSTEM_PACKAGES.redis) && requireSystemPackage(t, SYSTEM_PACKAGES.nginx)) {
  const cluster: Cluster = await startCluster({ nodes: 2, leaseTtl: 3 });
  t.teardown(() => cluster.stop());
  const front: Endpoint = { baseUrl: cluster.front, headers: cluster.headers };
  const direct = (i: number): Endpoint => ({ baseUrl: cluster.nodes[i]?.url ?? '', headers: cluster.headers });
  const ids = cluster.nodes.map((n) => n.id);
  const nodeOf = (headers: Record<string, string | string[] | undefined>): string => String(headers['x-acpd-node']);
  /** Which node answered a GET /livez through nginx. */
  const livez = async (): Promise<{ status: number; node: string }> => {
    const res = await call(front, 'GET', '/livez');
    return { status: res.status, node: nodeOf(res.headers) };
  };

  t.test('every node answers /livez, directly and through nginx, and names itself', async (t) => {
    for (const [i, id] of ids.entries()) {
      const res = await call(direct(i), 'GET', '/livez');
      t.equal(res.status, 200, `${id} directly`);
      t.equal(nodeOf(res.headers), id, `${id} says X-Acpd-Node: ${id}`);
    }
    const seen = [await livez(), await livez()];
    t.same(
      seen.map((s) => s.status),
      [200, 200],
    );
    t.same([...new Set(seen.map((s) => s.node))].sort(), ids, 'two GETs through nginx reach both nodes');
  });

  t.test('requests go round robin: consecutive ones through nginx alternate between the nodes', async (t) => {
    const nodes: string[] = [];
    for (let i = 0; i < 6; i++) nodes.push((await livez()).node);
    t.ok(
      nodes.every((node, i) => i === 0 || node !== nodes[i - 1]),
      `no node twice in a row: ${nodes.join(' ')}`,
    );
  });

  t.test('SSE frames pass through nginx-cluster.conf as they come, the stream staying open', async (t) => {
    const created = await call(front, 'POST', '/session', {});
    t.equal(created.status, 200, 'a session created through nginx');
    const sid = String(obj(created.body).sessionId);
    const owner = ids.indexOf(nodeOf(created.headers));
    t.ok(owner >= 0, `created on ${nodeOf(created.headers)}`);

    // Every node serves every session's stream (from the shared log): the first answer is the stream.
    const stream = await cluster.within(openEvents(t, front, sid), 'the stream head through nginx');
    t.equal(stream.status, 200, 'served by whichever node nginx chose');
    t.equal(stream.headers['content-type'], 'text/event-stream');
    t.ok(ids.includes(nodeOf(stream.headers)), 'X-Acpd-Node on the stream too');
    let ended = false;
    void stream.ended.then(() => {
      ended = true;
    });
    await cluster.within(
      stream.waitFor((f) => f.envelope?.type === 'replay_complete', 'replay_complete'),
      'the opening frames through nginx',
    );
    t.notOk(ended, 'the opening frames came while the response stays open');

    const answered = await call(direct(owner), 'POST', `/session/${sid}/prompt`, textPrompt('hello cluster'));
    t.same(answered.body, { stopReason: 'end_turn' });
    await cluster.within(
      stream.waitFor((f) => f.envelope?.type === 'turn_complete', 'turn_complete'),
      'the turn through nginx',
    );
    const numbered = stream.events().flatMap((e) => (e.id === undefined ? [] : [e.id]));
    t.ok(numbered.length >= 3, `the echo, the answer and turn_complete: ${numbered.length} numbered frames`);
    t.same(
      numbered,
      numbered.map((_, i) => (numbered[0] ?? 0) + i),
      'in order, none missing',
    );
    t.notOk(ended, 'and the stream is still open');
    stream.close();
  });

  t.test('killNode: SIGKILL to the node and its agent, nothing left; a GET is passed on, a POST is not', async (t) => {
    // A session on node-1 directly, so that it runs an agent child the kill must take along.
    await createSession(direct(0));
    const pid = cluster.nodes[0]?.pid ?? 0;
    const family = [pid, ...livingDescendants(pid)];
    t.ok(family.length >= 2, `node-1 runs its agent (${family.length} processes)`);
    await cluster.killNode(0);
    t.same(family.filter(isAlive), [], "none of node-1's processes is left");
    t.notOk(cluster.nodes[0]?.alive, 'node-1 is down');
    t.notOk(
      [...Procs.live].some((p) => p.pid === pid),
      'and out of the process registry',
    );

    // nginx has not noticed yet: whichever of these meets the dead node is passed to the live one.
    const after = [await livez(), await livez()];
    t.same(after, [
      { status: 200, node: ids[1] },
      { status: 200, node: ids[1] },
    ]);

    // Back in the rotation once nginx tries it again (fail_timeout): then kill it once more, unnoticed.
    await cluster.restartNode(0);
    await cluster.until(async () => (await livez()).node === ids[0], 'nginx sending to node-1 again', {
      ms: 20_000,
      everyMs: 250,
    });
    await cluster.killNode(0);
    const posts = [await call(front, 'POST', '/session', {}), await call(front, 'POST', '/session', {})];
    t.same(
      posts.map((p) => p.status).sort(),
      [200, 502],
      'the POST that met the dead node is answered 502, not passed on; the other one is served',
    );
    t.equal(nodeOf(posts.find((p) => p.status === 200)?.headers ?? {}), ids[1]);
  });

  t.test('stop leaves no process behind', async (t) => {
    const pids = cluster.pids();
    t.ok(pids.length >= 3, `the live node with its agent, and nginx (${pids.length} processes)`);
    await cluster.stop();
    t.same(pids.filter(isAlive), [], 'all gone');
    t.notOk(cluster.redis.alive, 'Redis too');
    t.same([...Procs.live], [], 'the process registry is empty');
  });
}
