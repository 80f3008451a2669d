// deploy/compose.yaml, read as Docker Compose reads it (YAML with merge keys), since no Docker engine runs
// here: every acpd node shares the one volume holding the workspace and the data directory, each has its
// own node id and an advertised URL naming its own service, they all reach the same Redis, and nginx runs
// deploy/nginx-cluster.conf, the file test/cluster-harness.test.ts runs, whose upstream lists these nodes.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parse } from 'yaml';
import { CLUSTER_NGINX_CONF } from '../harness/cluster.js';
import { obj } from './support/http.js';

const DEPLOY = fileURLToPath(new URL('../../deploy/', import.meta.url));
const compose = obj(parse(readFileSync(path.join(DEPLOY, 'compose.yaml'), 'utf8'), { merge: true }));
const services = obj(compose.services);
const nodeNames = Object.keys(services).filter((name) => /^node-\d+$/.test(name));

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.map(String) : [];
}

/** A service's environment as a map (compose also allows a list of NAME=value). */
function environment(service: Record<string, unknown>): Record<string, string> {
  const env = service.environment;
  if (Array.isArray(env)) {
    return Object.fromEntries(
      env.map(String).map((entry) => [entry.split('=')[0] ?? '', entry.slice(entry.indexOf('=') + 1)]),
    );
  }
  return Object.fromEntries(Object.entries(obj(env ?? {})).map(([k, v]) => [k, String(v)]));
}

/** The named volumes a service mounts, by their mount point. */
function namedVolumes(service: Record<string, unknown>): Map<string, string> {
  const named = new Set(Object.keys(obj(compose.volumes ?? {})));
  const mounts = new Map<string, string>();
  for (const spec of strings(service.volumes)) {
    const [source = '', target = ''] = spec.split(':');
    if (named.has(source)) mounts.set(target, source);
  }
  return mounts;
}

t.test('three acpd nodes from one image, each with its own id and advertised URL', async (t) => {
  t.same(nodeNames, ['node-1', 'node-2', 'node-3']);
  const nodes = nodeNames.map((name) => ({ name, service: obj(services[name]) }));
  const ids = nodes.map(({ service }) => environment(service).ACPD_NODE_ID);
  t.same(ids, nodeNames, 'ACPD_NODE_ID is the service name');
  t.equal(new Set(ids).size, ids.length, 'no two nodes share an id');
  for (const { name, service } of nodes) {
    const env = environment(service);
    t.equal(env.ACPD_ADVERTISE_URL, `http://${name}:${env.ACPD_PORT}`, `${name} advertises its own service`);
    t.equal(env.ACPD_HOSTNAME, '0.0.0.0', `${name} binds beyond loopback`);
    t.match(env.ACPD_REDIS_URL, /^redis:\/\/redis:6379$/, `${name} uses the redis service`);
    t.ok(env.ACPD_TOKEN_FILE?.startsWith('/run/secrets/'), `${name} reads its token from a secret`);
    t.ok(strings(service.secrets).includes(path.basename(env.ACPD_TOKEN_FILE ?? '')), `${name} gets that secret`);
    const probe = JSON.stringify(obj(service.healthcheck).test);
    t.ok(probe.includes('/livez') && probe.includes('/readyz'), `${name} is checked on /livez and /readyz`);
  }
  const images = nodes.map(({ service }) => JSON.stringify([service.image, service.build]));
  t.equal(new Set(images).size, 1, 'one image for all');
  const build = obj(nodes[0]?.service.build);
  t.ok(
    existsSync(path.join(DEPLOY, String(build.context), String(build.dockerfile))),
    "the image is built from the repository's Dockerfile",
  );
});

t.test('every node mounts the same volume, which holds the workspace and the data directory', async (t) => {
  const mounts = nodeNames.map((name) => {
    const service = obj(services[name]);
    const env = environment(service);
    const volumes = namedVolumes(service);
    // The volume mounted at (or above) the data directory, and the one at the workspace.
    const holding = (dir: string | undefined): string | undefined =>
      [...volumes].find(([target]) => dir !== undefined && (dir === target || dir.startsWith(`${target}/`)))?.[1];
    return { data: holding(env.ACPD_DATA_DIR), workspace: holding(env.ACPD_WORKSPACE), dataDir: env.ACPD_DATA_DIR };
  });
  for (const [i, m] of mounts.entries()) {
    t.ok(m.data !== undefined, `${nodeNames[i]}: its data directory lies on a named volume`);
    t.ok(m.workspace !== undefined, `${nodeNames[i]}: so does its workspace`);
  }
  t.equal(new Set(mounts.map((m) => m.data)).size, 1, 'the same data volume everywhere');
  t.equal(new Set(mounts.map((m) => m.dataDir)).size, 1, 'at the same path');
  t.equal(new Set(mounts.map((m) => m.workspace)).size, 1, 'and the same workspace volume');
});

t.test('Redis keeps an append-only file on a volume of its own', async (t) => {
  const redis = obj(services.redis);
  const command = strings(redis.command).join(' ');
  t.match(command, /--appendonly yes/);
  t.equal(namedVolumes(redis).get('/data'), 'redis-data');
});

t.test('nginx runs deploy/nginx-cluster.conf, whose upstream is these nodes', async (t) => {
  const nginx = obj(services.nginx);
  const site = strings(nginx.volumes).find((spec) => spec.includes(':/etc/nginx/conf.d/'));
  t.ok(site, 'a site mounted into conf.d');
  t.equal(path.resolve(DEPLOY, site?.split(':')[0] ?? ''), CLUSTER_NGINX_CONF, 'the file the cluster tests run');
  const servers = readFileSync(CLUSTER_NGINX_CONF, 'utf8')
    .split('\n')
    .map((line) => line.replace(/#.*$/, '').trim())
    .flatMap((line) => /^server\s+(\S+)\s/.exec(line)?.[1] ?? []);
  t.same(
    servers,
    nodeNames.map((name) => `${name}:${environment(obj(services[name])).ACPD_PORT}`),
    'one upstream server per node, on its port',
  );
  t.same(Object.keys(obj(nginx.depends_on)).sort(), nodeNames, 'started once the nodes are healthy');
});
