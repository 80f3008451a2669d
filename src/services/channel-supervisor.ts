/**
 * Owns the agent processes. At most one channel takes new sessions at a time;
 * it is spawned lazily (concurrent callers share one spawn), kept while it has
 * sessions or restores in flight, and killed when the last of them leaves.
 * During a kill-then-spawn overlap a dying channel and a fresh one coexist.
 */
import type { FastifyBaseLogger } from 'fastify';
import { ShuttingDownError } from '../errors.js';
import { AgentChannel, type ClientHandlers, type ExitInfo } from './agent-channel.js';

export interface SupervisorOptions {
  argv: readonly string[];
  cwd: string;
  env: Record<string, string>;
  initTimeoutMs: number;
  killGraceMs: number;
  log: FastifyBaseLogger;
}

/** What the supervisor reports to the code that owns sessions. */
export interface ChannelListener extends ClientHandlers {
  channelExited(channel: AgentChannel, info: ExitInfo | undefined): void;
}

export class ChannelSupervisor {
  /** Every channel whose process has not been reaped yet, dying ones included. */
  readonly alive = new Set<AgentChannel>();
  private current: AgentChannel | undefined;
  private spawning: Promise<AgentChannel> | undefined;
  private listener: ChannelListener | undefined;
  private shuttingDown = false;
  /** Counters for metrics and tests. */
  spawnCount = 0;
  crashCount = 0;

  constructor(private readonly opts: SupervisorOptions) {}

  /** The session registry plugs itself in here before the first spawn. */
  setListener(listener: ChannelListener): void {
    this.listener = listener;
  }

  /** The attach-available channel, spawning and initializing one if needed. */
  ensure(): Promise<AgentChannel> {
    if (this.shuttingDown) return Promise.reject(new ShuttingDownError());
    if (this.current && !this.current.isDying && this.current.alive) return Promise.resolve(this.current);
    this.spawning ??= this.spawn().finally(() => {
      this.spawning = undefined;
    });
    return this.spawning;
  }

  private async spawn(): Promise<AgentChannel> {
    const listener = this.listener;
    if (!listener) throw new Error('channel supervisor has no listener');
    const channel = new AgentChannel({
      argv: this.opts.argv,
      cwd: this.opts.cwd,
      env: this.opts.env,
      killGraceMs: this.opts.killGraceMs,
      log: this.opts.log,
      handlers: listener,
    });
    this.spawnCount++;
    this.alive.add(channel);
    if (this.alive.size > 2) this.opts.log.warn({ alive: this.alive.size }, 'more agent channels alive than expected');
    this.opts.log.info({ agentPid: channel.pid }, 'agent spawned');
    // Registered before the handshake so that a crash during it is seen too.
    void channel.exited.then((info) => {
      this.alive.delete(channel);
      if (this.current === channel) this.current = undefined;
      if (!channel.isDying || channel.linkLost) this.crashCount++;
      this.opts.log[this.shuttingDown ? 'debug' : 'info'](
        {
          agentPid: channel.pid,
          exitCode: info?.exitCode ?? null,
          signal: info?.signalCode ?? null,
          sessions: channel.sessionIds.size,
        },
        'agent exited',
      );
      listener.channelExited(channel, info);
    });
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

  /** Kills `channel` when it carries no session, no restore and no create. */
  async releaseIfIdle(channel: AgentChannel): Promise<void> {
    if (channel.sessionIds.size > 0 || channel.pendingRestoreIds.size > 0 || channel.pendingCreates > 0) return;
    if (channel.isDying) return;
    await channel.kill().catch(() => {});
  }

  /** Refuses new spawns and waits for every channel (and a spawn in flight) to be gone. */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    for (const ch of this.alive) ch.isDying = true;
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
