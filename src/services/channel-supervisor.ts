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
import type { InitializeResponse } from '@agentclientprotocol/sdk';
import type { FastifyBaseLogger } from 'fastify';
import { AgentTimeoutError, AgentUnavailableError, ChannelClosedError, ShuttingDownError } from '../errors.js';
import { isRequestError } from './acp-sdk.js';
import type { AgentChannel, ExitInfo } from './agent-channel.js';
import { checkCommand, commandLine, type CommandCheck } from './agent-command.js';
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

/** How long a channel whose link closed during the handshake may take to exit, so that its own status is reported. */
const HANDSHAKE_EXIT_WAIT_MS = 500;
/** How long the last stderr lines of a failed agent may take to arrive after its exit. */
const STDERR_WAIT_MS = 500;

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
  private lastHandshake: InitializeResponse | undefined;
  /** Counters for metrics and tests. */
  spawnCount = 0;
  crashCount = 0;

  constructor(private readonly opts: SupervisorOptions) {
    this.router = new AgentRouter(opts.permissions, opts.fs);
  }

  /** The agent's file access, which a client may serve for a session (`FsProxy.serveBy`). */
  get fs(): FsProxy {
    return this.opts.fs;
  }

  /** The agent command every channel runs. */
  get argv(): readonly string[] {
    return this.opts.argv;
  }

  /** The same, as one line for people to read. */
  get commandLine(): string {
    return commandLine(this.opts.argv);
  }

  /** The agent's answer to the latest `initialize` that succeeded (who it is, what it can do), if one has. */
  get lastInitialize(): InitializeResponse | undefined {
    return this.lastHandshake;
  }

  /** Whether the agent command can be spawned, looked up now with the agent's cwd and PATH. */
  checkCommand(): Promise<CommandCheck> {
    return checkCommand(this.opts.argv[0] ?? '', { cwd: this.opts.cwd, pathVariable: this.opts.env.PATH });
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
    // The channel brings the ACP SDK with it: loaded with the first agent, not at start-up (see acp-sdk.ts).
    const { AgentChannel } = await import('./agent-channel.js');
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
    let handshake: InitializeResponse;
    try {
      handshake = await channel.initialize(this.opts.initTimeoutMs);
    } catch (err) {
      // Its own exit status is the best explanation: give it a moment to arrive before the kill. A process
      // that outlived its closed link was stopped by the channel, and that status is not its own.
      if (err instanceof ChannelClosedError) await settledWithin(channel.exited, HANDSHAKE_EXIT_WAIT_MS);
      const exit = channel.linkLost ? undefined : channel.exitStatus;
      await channel.kill().catch(() => {});
      if (this.shuttingDown) throw new ShuttingDownError();
      throw await this.unavailable(channel, err, exit);
    }
    if (this.shuttingDown) {
      await channel.kill().catch(() => {});
      throw new ShuttingDownError();
    }
    this.lastHandshake = handshake;
    this.current = channel;
    return channel;
  }

  /**
   * Why `channel` is of no use: it could not be spawned, or its handshake
   * failed. `exit` is its status when it exited by itself (not killed by us).
   */
  private async unavailable(
    channel: AgentChannel,
    err: unknown,
    exit: ExitInfo | undefined,
  ): Promise<AgentUnavailableError> {
    const command = this.commandLine;
    const startError = channel.spawnError;
    if (startError !== undefined) {
      const check = await this.checkCommand();
      return new AgentUnavailableError({
        command,
        reason: check.ok ? startFailure(startError, check.file) : check.reason,
      });
    }
    const stderr = await channel.lastStderrLines(STDERR_WAIT_MS);
    const tail = stderr.length > 0 ? { stderr } : {};
    if (exit?.exitCode != null) {
      return new AgentUnavailableError({
        command,
        reason: `exited with code ${exit.exitCode} during initialize`,
        exitCode: exit.exitCode,
        ...tail,
      });
    }
    if (exit?.signalCode != null) {
      return new AgentUnavailableError({
        command,
        reason: `was killed by ${exit.signalCode} during initialize`,
        signal: exit.signalCode,
        ...tail,
      });
    }
    let reason: string;
    if (err instanceof AgentTimeoutError) reason = `initialize timed out after ${this.opts.initTimeoutMs}ms`;
    else if (isRequestError(err)) reason = `initialize was refused: ${err.message} (JSON-RPC ${err.code})`;
    else if (err instanceof ChannelClosedError) reason = 'closed its connection during initialize';
    else reason = `initialize failed: ${err instanceof Error ? err.message : String(err)}`;
    return new AgentUnavailableError({ command, reason, ...tail });
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

/** Why spawn() failed although the command resolves to an executable file. */
function startFailure(err: NodeJS.ErrnoException, file: string): string {
  const code = err.code ?? 'unknown error';
  if (code === 'ENOENT') {
    return `${file} could not be started (ENOENT): its #! interpreter or the working directory may be missing`;
  }
  return `${file} could not be started (${code})`;
}

/** Resolves when `p` (which never rejects) settles or `ms` have passed, whichever is first. */
async function settledWithin(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const elapsed = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  await Promise.race([p, elapsed]).finally(() => clearTimeout(timer));
}
