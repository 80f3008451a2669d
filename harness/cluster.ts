// A cluster on loopback for the tests and the bench: a throwaway Redis, N acpd nodes as real processes
// (`node dist/server.js`, the embedded agent) sharing one --data-dir and one --workspace, and a real nginx
// in front configured by deploy/nginx-cluster.conf itself (only its listen port and its upstream's server
// lines are rewritten). Every process logs to a file under one temp directory; a wait that fails through
// `cluster.within`/`cluster.until` says so with the tail of every log. Every process is a Proc, so the
// Procs registry (and the exit hook installed here) can stop what a crashed run left.
//
// The nodes bind 127.0.0.2 with a token, as the compose file's nodes bind 0.0.0.0 with one: acpd checks
// Host only on a loopback bind (127.0.0.1, localhost, ::1), and behind an upstream group nginx sends the
// group's name as Host. 127.0.0.2 is still reachable from this machine only.
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { acpdServer, repoRoot } from './peer-env.js';
import { freePort } from './ports.js';
import { isAlive, livingDescendants } from './proc-table.js';
import { nginxMainConfig } from './nginx.js';
import { RedisServer } from './redis.js';
import { Proc, Procs } from './spawn.js';
import { until, within, type PollOptions } from './wait.js';

/** The file the cluster's nginx runs, as shipped. */
export const CLUSTER_NGINX_CONF = path.join(repoRoot, 'deploy', 'nginx-cluster.conf');
/** Debian's nginx (test/support/system-deps.ts names the same binary). */
const NGINX = '/usr/sbin/nginx';
/** The address the nodes bind (see the header). */
export const NODE_HOST = '127.0.0.2';
/** acpd's line on stderr once it listens. */
const LISTENING = /acpd listening on (http:\/\/[^\s]+)/;
/** The upstream's server lines in deploy/nginx-cluster.conf: the compose service names on acpd's port. */
const UPSTREAM_SERVER = /^([ \t]*)server node-\d+:4170((?:[ \t]+[^;\s]+)*);[ \t]*\n/gm;

export interface ClusterOptions {
  /** How many acpd nodes (3). */
  nodes?: number;
  /** --lease-ttl of every node, in seconds (acpd's default when absent). */
  leaseTtl?: number;
  /** The shared --data-dir (a fresh one under the cluster's directory when absent). */
  dataDir?: string;
  /** The shared --workspace (likewise). */
  workspace?: string;
  /** Extra environment for every node (besides PATH, HOME and ACPD_TOKEN). */
  env?: NodeJS.ProcessEnv;
  /** Extra flags for every node, after the harness's own (a repeated flag's last value counts). */
  args?: string[];
  /** The bearer token every node requires (random when absent). */
  token?: string;
  /** Bound on one node's start (30 s). */
  startTimeoutMs?: number;
  /** Leave the cluster's directory (logs, data) behind at stop, for a post-mortem. */
  keepDir?: boolean;
}

export interface ClusterNode {
  /** Its --node-id: node-1, node-2, … */
  readonly id: string;
  readonly port: number;
  /** Its base URL, which is also its --advertise-url; the same across restarts. */
  readonly url: string;
  readonly alive: boolean;
  /** The node's pid (throws when it is not running). */
  readonly pid: number;
  /** Where its stdout and stderr go, every start appended. */
  readonly logFile: string;
  /** How many times it was started. */
  readonly starts: number;
}

export interface Cluster {
  /** nginx's base URL: where clients go. */
  readonly front: string;
  readonly nodes: readonly ClusterNode[];
  readonly redis: RedisServer;
  readonly token: string;
  /** What every request needs (the bearer token). */
  readonly headers: Record<string, string>;
  readonly dataDir: string;
  readonly workspace: string;
  /** Where every log lives. */
  readonly dir: string;
  /** The nginx config actually running (the shipped file, ports rewritten, in its main context). */
  readonly nginxConf: string;
  /** SIGKILL to node i's process group and every descendant (its agent); resolves once all are gone. */
  killNode(i: number): Promise<void>;
  /** Starts node i again on the same port, id and URL (stopping it first if it runs). */
  restartNode(i: number): Promise<void>;
  /** The last lines of every log, each under its file name. */
  logTails(lines?: number): string;
  /** `within`, with every log's tail in the error when it times out or fails. */
  within<T>(promise: Promise<T>, label: string, ms?: number): Promise<T>;
  /** `until`, likewise. */
  until<T>(
    check: () => T | false | undefined | Promise<T | false | undefined>,
    label: string,
    opts?: PollOptions,
  ): Promise<T>;
  /** Every pid the cluster runs now: the nodes, their agents, nginx (its workers included). */
  pids(): number[];
  /** Stops everything (nginx, the nodes, Redis) and removes the directory unless `keepDir`. */
  stop(): Promise<void>;
}

/** Replaces `from`, which must occur exactly `count` times (else the shipped file changed under the harness). */
function rewrite(conf: string, from: string, to: string, count: number): string {
  const found = conf.split(from).length - 1;
  if (found !== count) {
    throw new Error(
      `${CLUSTER_NGINX_CONF} holds ${JSON.stringify(from)} ${found} times, expected ${count}: update harness/cluster.ts`,
    );
  }
  return conf.replaceAll(from, to);
}

/**
 * deploy/nginx-cluster.conf listening on `port` in front of `upstreams` (host:port each), inside a
 * minimal main context whose paths all lie in `dir`.
 */
export function clusterNginxConfig(dir: string, port: number, upstreams: string[]): string {
  let site = readFileSync(CLUSTER_NGINX_CONF, 'utf8');
  site = rewrite(site, 'listen 80;', `listen 127.0.0.1:${port};`, 1);
  // The shipped upstream lists three nodes: the first line's parameters serve for every node here, and
  // the list takes the first line's place.
  const shipped = [...site.matchAll(UPSTREAM_SERVER)];
  if (shipped.length !== 3) {
    throw new Error(
      `${CLUSTER_NGINX_CONF} has ${shipped.length} upstream server lines, expected 3: update harness/cluster.ts`,
    );
  }
  const [, indent = '', params = ''] = shipped[0] ?? [];
  const servers = upstreams.map((u) => `${indent}server ${u}${params};\n`).join('');
  let seen = 0;
  site = site.replace(UPSTREAM_SERVER, () => (seen++ === 0 ? servers : ''));
  return nginxMainConfig(dir, site, {
    workerConnections: 512,
    // Which node answered what: the first thing to read when a cluster test fails.
    httpLines: [
      "  log_format cluster '$msec $request_method $request_uri $status -> $upstream_addr $upstream_status';",
      `  access_log ${path.join(dir, 'access.log')} cluster;`,
    ],
  });
}

/** The last `lines` lines of a file (at most its last 64 kB), or a note that there is none. */
function tail(file: string, lines: number): string {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    return '(no log)';
  }
  const length = Math.min(size, 64 * 1024);
  const buf = Buffer.alloc(length);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, buf, 0, length, size - length);
  } finally {
    closeSync(fd);
  }
  return buf
    .toString('utf8')
    .split('\n')
    .slice(-lines - 1)
    .join('\n');
}

class Node implements ClusterNode {
  private proc: Proc | undefined;
  starts = 0;
  readonly url: string;
  readonly logFile: string;

  constructor(
    readonly id: string,
    readonly port: number,
    private readonly argv: string[],
    private readonly spawnEnv: NodeJS.ProcessEnv,
    private readonly cwd: string,
    logDir: string,
    private readonly startTimeoutMs: number,
  ) {
    this.url = `http://${NODE_HOST}:${port}`;
    this.logFile = path.join(logDir, `${id}.log`);
  }

  get alive(): boolean {
    return this.proc?.alive ?? false;
  }

  get pid(): number {
    if (!this.proc?.alive) throw new Error(`${this.id} is not running`);
    return this.proc.pid;
  }

  /** Starts the process and resolves once it listens; rejects (with the process stopped) otherwise. */
  async start(): Promise<void> {
    this.starts += 1;
    const proc = new Proc(this.id, process.execPath, this.argv, {
      cwd: this.cwd,
      env: this.spawnEnv,
      logFile: this.logFile,
    });
    this.proc = proc;
    try {
      const [, url] = await proc.waitForLine(LISTENING, this.startTimeoutMs);
      if (url !== this.url) throw new Error(`${this.id} listens on ${url}, expected ${this.url}`);
    } catch (err) {
      await proc.stop(2000);
      throw err;
    }
  }

  async kill(): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    // Descendants first, from one snapshot: once the node is dead its agent is reparented and no longer
    // found under it. Its group and any group a descendant leads get the signal too.
    const family = [proc.pid, ...livingDescendants(proc.pid)];
    for (const pid of family) {
      for (const target of [-pid, pid]) {
        try {
          process.kill(target, 'SIGKILL');
        } catch {
          /* not a group leader, or gone */
        }
      }
    }
    await proc.exited;
    await until(() => !family.some(isAlive), `${this.id}: every process of it gone after SIGKILL`, { everyMs: 20 });
    // Closes its log and leaves the registry; nothing is left to signal.
    await proc.stop(0);
    this.proc = undefined;
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (proc) await proc.stop(8000);
  }

  family(): number[] {
    return this.proc?.alive ? [this.proc.pid, ...livingDescendants(this.proc.pid)] : [];
  }
}

async function startNginx(dir: string, upstreams: string[]): Promise<{ proc: Proc; port: number; conf: string }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const conf = clusterNginxConfig(dir, port, upstreams);
    const confPath = path.join(dir, 'nginx.conf');
    writeFileSync(confPath, conf);
    const proc = new Proc('nginx', NGINX, ['-p', dir, '-c', confPath, '-e', 'stderr', '-g', 'daemon off;'], {
      cwd: dir,
      env: { PATH: process.env.PATH ?? '' },
      logFile: path.join(dir, 'nginx.log'),
    });
    try {
      // With the error log at notice, nginx says when its worker runs: by then it listens.
      await proc.waitForLine(/start worker process /, 10_000);
      return { proc, port, conf };
    } catch (err) {
      await proc.stop(2000);
      // Someone may have taken the port in between: try another.
      if (attempt >= 3) throw err;
    }
  }
}

/** Starts Redis, the nodes (one after the other: the first creates the shared files) and nginx. */
export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const count = opts.nodes ?? 3;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'acpd-cluster-'));
  const workspace = opts.workspace ?? path.join(dir, 'workspace');
  const dataDir = opts.dataDir ?? path.join(dir, 'data');
  mkdirSync(workspace, { recursive: true });
  const token = opts.token ?? randomBytes(18).toString('base64url');
  const nodes: Node[] = [];
  let redis: RedisServer | undefined;
  let nginx: Proc | undefined;
  const killAllSync = (): void => Procs.killAllSync();
  process.on('exit', killAllSync);

  const logFiles = (): string[] => [
    ...(redis ? [path.join(redis.dir, 'redis.log')] : []),
    ...nodes.map((n) => n.logFile),
    path.join(dir, 'nginx.log'),
    path.join(dir, 'access.log'),
  ];
  const logTails = (lines = 30): string =>
    logFiles()
      .map((file) => `--- ${path.basename(file)} (last ${lines} lines)\n${tail(file, lines)}`)
      .join('\n');
  const withTails = (err: unknown): Error => {
    const e = err instanceof Error ? err : new Error(String(err));
    e.message = `${e.message}\n${logTails()}`;
    return e;
  };

  const stop = async (): Promise<void> => {
    await nginx?.stop(2000);
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
    process.off('exit', killAllSync);
    if (!opts.keepDir) rmSync(dir, { recursive: true, force: true });
  };

  try {
    redis = await RedisServer.start();
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? '',
      ...(process.env.HOME === undefined ? {} : { HOME: process.env.HOME }),
      // In the environment, not argv: like the compose file, and kept out of ps.
      ACPD_TOKEN: token,
      ...opts.env,
    };
    for (let i = 0; i < count; i++) {
      const id = `node-${i + 1}`;
      for (let attempt = 1; ; attempt++) {
        const port = await freePort();
        const argv = [
          acpdServer,
          '--hostname',
          NODE_HOST,
          '--port',
          String(port),
          '--workspace',
          workspace,
          '--data-dir',
          dataDir,
          '--redis-url',
          redis.url,
          '--node-id',
          id,
          '--advertise-url',
          `http://${NODE_HOST}:${port}`,
          ...(opts.leaseTtl === undefined ? [] : ['--lease-ttl', String(opts.leaseTtl)]),
          // nginx connects from 127.0.0.1: its X-Forwarded-* are believed, a client's own are not.
          '--trust-proxy',
          '127.0.0.1',
          // A loaded test machine must not turn answers into 503s, nor create sessions behind a test's back.
          '--max-event-loop-delay-ms',
          '0',
          '--warm-sessions',
          '0',
          ...(opts.args ?? []),
        ];
        const node = new Node(id, port, argv, env, workspace, dir, opts.startTimeoutMs ?? 30_000);
        try {
          await node.start();
          nodes.push(node);
          break;
        } catch (err) {
          // The port may have been taken between freePort and the bind; anything else repeats and fails.
          if (attempt >= 3) throw err;
        }
      }
    }
    const started = await startNginx(
      dir,
      nodes.map((n) => `${NODE_HOST}:${n.port}`),
    );
    nginx = started.proc;
    const front = `http://127.0.0.1:${started.port}`;
    const nginxProc = nginx;
    const redisServer = redis;
    const node = (i: number): Node => {
      const n = nodes[i];
      if (!n) throw new Error(`no node ${i} (the cluster has ${nodes.length})`);
      return n;
    };

    return {
      front,
      nodes,
      redis: redisServer,
      token,
      headers: { authorization: `Bearer ${token}` },
      dataDir,
      workspace,
      dir,
      nginxConf: started.conf,
      killNode: (i) => node(i).kill(),
      restartNode: async (i) => {
        const n = node(i);
        await n.stop();
        await n.start().catch((err: unknown) => {
          throw withTails(err);
        });
      },
      logTails,
      within: (promise, label, ms) =>
        within(promise, label, ms).catch((err: unknown) => {
          throw withTails(err);
        }),
      until: (check, label, pollOpts) =>
        until(check, label, pollOpts).catch((err: unknown) => {
          throw withTails(err);
        }),
      pids: () => [
        ...nodes.flatMap((n) => n.family()),
        ...(nginxProc.alive ? [nginxProc.pid, ...livingDescendants(nginxProc.pid)] : []),
      ],
      stop,
    };
  } catch (err) {
    const failure = withTails(err);
    await stop();
    throw failure;
  }
}
