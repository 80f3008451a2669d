/**
 * Owns the agent processes and the table of who speaks about which session.
 *
 * At most one channel takes new work at a time; it is spawned lazily
 * (concurrent callers share one spawn) and handed out as leases: a live
 * session holds one for its life, a create or a restore for its call to the
 * agent. When the last lease on a channel is returned, the channel is
 * stopped. During a kill-then-spawn overlap a dying channel and a fresh one
 * coexist.
 */
import type { FastifyBaseLogger } from 'fastify';
import { ShuttingDownError } from '../errors.js';
import { AgentChannel, type ExitInfo } from './agent-channel.js';
import { AgentRouter } from './agent-router.js';
import type { FsProxy } from './fs-proxy.js';
import type { PermissionBroker } from './permissions.js';

interface SupervisorOptions {
  argv: readonly string[];
  cwd: string;
  env: Record<string, string>;
  initTimeoutMs: number;
  killGraceMs: number;
  log: FastifyBaseLogger;
  permissions: PermissionBroker;
  fs: FsProxy;
}

/** Told when a channel's process is gone, with the live sessions it carried. */
type ExitListener = (channel: AgentChannel, info: ExitInfo | undefined, sessionIds: string[]) => void;

/** A hold on a channel: while any is out, the channel is kept running. */
export class ChannelLease {
  private returned = false;

  constructor(
    readonly channel: AgentChannel,
    private readonly onReturn: (lease: ChannelLease) => Promise<void>,
  ) {}

  /** Gives the hold back; the last one stops the channel (resolved when it is gone). Idempotent. */
  release(): Promise<void> {
    if (this.returned) return Promise.resolve();
    this.returned = true;
    return this.onReturn(this);
  }
}

export class ChannelSupervisor {
  /** Every channel whose process has not been reaped yet, dying ones included. */
  readonly alive = new Set<AgentChannel>();
  /** Where the agents' calls land, and which bus each session id's events go to. */
  readonly router: AgentRouter;
  private readonly leases = new Map<AgentChannel, number>();
  private current: AgentChannel | undefined;
  private spawning: Promise<AgentChannel> | undefined;
  private readonly exitListeners: ExitListener[] = [];
  private shuttingDown = false;
  /** Counters for metrics and tests. */
  spawnCount = 0;
  crashCount = 0;

  constructor(private readonly opts: SupervisorOptions) {
    this.router = new AgentRouter(opts.permissions, opts.fs);
  }

  /** The agent command every channel runs. */
  get argv(): readonly string[] {
    return this.opts.argv;
  }

  onExit(listener: ExitListener): void {
    this.exitListeners.push(listener);
  }

  /** A lease on the channel that takes new work, spawning and initializing one if needed. */
  async acquire(): Promise<ChannelLease> {
    const channel = await this.ensure();
    // A channel that died since it was handed out has no count left to keep.
    const held = this.leases.get(channel);
    if (held !== undefined) this.leases.set(channel, held + 1);
    return new ChannelLease(channel, (lease) => this.returnLease(lease));
  }

  /** Whether nothing holds `channel`. */
  isIdle(channel: AgentChannel): boolean {
    return (this.leases.get(channel) ?? 0) === 0;
  }

  /** The channel that takes new work, without a lease (the warm pool fills it, never keeps it). */
  private ensure(): Promise<AgentChannel> {
    if (this.shuttingDown) return Promise.reject(new ShuttingDownError());
    if (this.current?.usable) return Promise.resolve(this.current);
    this.spawning ??= this.spawn().finally(() => {
      this.spawning = undefined;
    });
    return this.spawning;
  }

  private async returnLease(lease: ChannelLease): Promise<void> {
    const channel = lease.channel;
    const held = this.leases.get(channel);
    if (held === undefined) return;
    if (held > 1) {
      this.leases.set(channel, held - 1);
      return;
    }
    this.leases.set(channel, 0);
    if (channel.usable) await channel.kill().catch(() => {});
  }

  private async spawn(): Promise<AgentChannel> {
    const channel = new AgentChannel({
      argv: this.opts.argv,
      cwd: this.opts.cwd,
      env: this.opts.env,
      killGraceMs: this.opts.killGraceMs,
      log: this.opts.log,
      handlers: this.router,
    });
    this.spawnCount++;
    this.alive.add(channel);
    this.leases.set(channel, 0);
    if (this.alive.size > 2) this.opts.log.warn({ alive: this.alive.size }, 'more agent channels alive than expected');
    this.opts.log.info({ agentPid: channel.pid }, 'agent spawned');
    // Registered before the handshake so that a crash during it is seen too.
    void channel.exited.then((info) => this.exited(channel, info));
    try {
      await channel.initialize(this.opts.initTimeoutMs);
    } catch (err) {
      await channel.kill().catch(() => {});
      throw err;
    }
    if (this.shuttingDown) {
      await channel.kill().catch(() => {});
      throw new ShuttingDownError();
    }
    this.current = channel;
    return channel;
  }

  private exited(channel: AgentChannel, info: ExitInfo | undefined): void {
    const sessionIds = this.router.liveOn(channel);
    this.router.dropChannel(channel);
    this.alive.delete(channel);
    this.leases.delete(channel);
    if (this.current === channel) this.current = undefined;
    if (!channel.isDying || channel.linkLost) this.crashCount++;
    this.opts.log[this.shuttingDown ? 'debug' : 'info'](
      {
        agentPid: channel.pid,
        exitCode: info?.exitCode ?? null,
        signal: info?.signalCode ?? null,
        sessions: sessionIds.length,
      },
      'agent exited',
    );
    for (const listener of this.exitListeners) listener(channel, info, sessionIds);
  }

  /** Marks every channel as going away, so that nothing new goes to any of them. */
  retireAll(): void {
    for (const channel of this.alive) channel.retire();
  }

  /** Refuses new spawns and waits for every channel (and a spawn in flight) to be gone. */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    this.retireAll();
    const spawning = this.spawning?.catch(() => undefined);
    await Promise.all([...this.alive].map((ch) => ch.kill().catch(() => {})));
    await spawning;
    // A channel that finished its handshake meanwhile has killed itself; wait for it too.
    await Promise.all([...this.alive].map((ch) => ch.kill().catch(() => {})));
  }

  /** SIGKILL everything now. For a forced exit. */
  killAllSync(): void {
    this.shuttingDown = true;
    for (const ch of this.alive) ch.killSync();
  }
}
