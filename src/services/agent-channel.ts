/**
 * One agent child process and the ACP connection over its stdio.
 *
 * The process belongs to the channel, never to a request: it is spawned from an
 * argv array (no shell) in its own process group, its stderr goes to a child
 * logger line by line, and stopping it means closing stdin, SIGTERM to the
 * group, SIGKILL after a grace period, and waiting for the exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Writable } from 'node:stream';
import { client, ndJsonStream, RequestError, PROTOCOL_VERSION } from '@agentclientprotocol/sdk';
import type {
  ClientConnection,
  InitializeResponse,
  ReadTextFileRequest,
  ReadTextFileResponse,
  RequestPermissionRequest,
  RequestPermissionResponse,
  SessionNotification,
  WriteTextFileRequest,
  WriteTextFileResponse,
} from '@agentclientprotocol/sdk';
import type { FastifyBaseLogger } from 'fastify';
import { AgentTimeoutError, ChannelClosedError } from '../errors.js';
import { VERSION } from '../version.js';
import { knowRequestError } from './acp-sdk.js';
import { AgentLines } from './agent-lines.js';

knowRequestError(RequestError);

export interface ExitInfo {
  exitCode: number | null;
  signalCode: NodeJS.Signals | null;
}

/** The client-side ACP methods the daemon serves to its agent. */
export interface ClientHandlers {
  /** True when the event waits for its bus's group commit: it reached no subscriber yet (see agent-lines). */
  /** `json`, when given, is exactly `JSON.stringify(params)` (the agent's line held it). */
  sessionUpdate(params: SessionNotification, json?: string): boolean | void;
  requestPermission(params: RequestPermissionRequest): Promise<RequestPermissionResponse>;
  readTextFile(params: ReadTextFileRequest): Promise<ReadTextFileResponse>;
  writeTextFile(params: WriteTextFileRequest): Promise<WriteTextFileResponse>;
}

interface ChannelOptions {
  argv: readonly string[];
  cwd: string;
  env: Record<string, string>;
  killGraceMs: number;
  log: FastifyBaseLogger;
  handlers: ClientHandlers;
}

const STDERR_LINE_CAP = 64 * 1024;
/** How many of the agent's last stderr lines are kept, to explain a failed start. */
const STDERR_TAIL_LINES = 20;
/** How much of each of those lines is kept. */
const STDERR_TAIL_LINE_CAP = 1000;
/** How long a process whose connection closed may take to exit by itself before it is stopped. */
const LINK_LOSS_GRACE_MS = 250;
/** How long a stop waits for the agent's process group to vanish after SIGKILL. */
const GROUP_EXIT_WAIT_MS = 500;

/** Resolves with `p`, or rejects once `ms` have passed; the timer never outlives the race. */
function withTimeout<T>(p: Promise<T>, ms: number, label: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new AgentTimeoutError(label, ms)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export class AgentChannel {
  readonly pid: number | undefined;
  /** Settles once, when the child has exited (or failed to start). Never rejects. */
  readonly exited: Promise<ExitInfo | undefined>;
  /** Set synchronously by every teardown path before it awaits the kill (see `retire`). */
  private dying = false;
  /** The ACP connection closed while the process lived on, so acpd stopped the process. */
  linkLost = false;
  initializeResponse: InitializeResponse | undefined;

  private readonly child: ChildProcess;
  private readonly connection: ClientConnection;
  private readonly log: FastifyBaseLogger;
  private readonly killGraceMs: number;
  private exitInfo: ExitInfo | undefined;
  private hasExited = false;
  private killing: Promise<void> | undefined;
  private closedError: Promise<never> | undefined;
  /** Why the process could not be started (ENOENT, EACCES…), when it could not. */
  private startError: NodeJS.ErrnoException | undefined;
  /** The agent's last stderr lines, oldest first. */
  private readonly stderrTail: string[] = [];
  /** Settles when the agent's stderr has ended (or there is none). */
  private readonly stderrEnded: Promise<void>;

  constructor(opts: ChannelOptions) {
    const [command, ...args] = opts.argv;
    if (!command) throw new Error('agent command is empty');
    this.log = opts.log;
    this.killGraceMs = opts.killGraceMs;
    this.child = spawn(command, args, {
      cwd: opts.cwd,
      env: opts.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    this.pid = this.child.pid;
    this.exited = new Promise<ExitInfo | undefined>((resolve) => {
      this.child.once('exit', (exitCode, signalCode) => {
        this.hasExited = true;
        this.exitInfo = { exitCode, signalCode };
        // However the agent went (crash, SIGKILL, its own exit), helpers it
        // started share its process group and must not outlive it.
        this.signalGroup('SIGKILL');
        resolve(this.exitInfo);
      });
      this.child.once('error', (err) => {
        this.log.warn({ err }, 'agent process error');
        if (this.child.pid === undefined) {
          this.startError = err;
          this.hasExited = true;
          resolve(undefined);
        }
      });
    });
    // Pipe errors (EPIPE after the child died) must not crash the daemon.
    this.child.stdin?.on('error', () => {});
    this.child.stdout?.on('error', () => {});
    this.stderrEnded = this.forwardStderr();

    const { stdin, stdout } = this.child;
    if (!stdin || !stdout) {
      this.child.kill('SIGKILL');
      throw new Error('agent process has no stdio pipes');
    }
    const h = opts.handlers;
    // Text chunks skip the SDK's inbound path (see agent-lines); the rest goes through it.
    const lines = new AgentLines(
      stdout,
      (params, json) => h.sessionUpdate(params, json),
      (err) => this.log.error({ err }, 'session/update handler failed'),
    );
    const stream = ndJsonStream(Writable.toWeb(stdin) as WritableStream<Uint8Array>, lines.rest);
    this.connection = client({ name: 'acpd' })
      .onNotification('session/update', ({ params }) => {
        h.sessionUpdate(params);
      })
      .onRequest('session/request_permission', ({ params }) => h.requestPermission(params))
      .onRequest('fs/read_text_file', ({ params }) => h.readTextFile(params))
      .onRequest('fs/write_text_file', ({ params }) => h.writeTextFile(params))
      .onRequest('*', ({ method }) => {
        throw RequestError.methodNotFound(method);
      })
      .onNotification('*', ({ method }) => {
        this.log.trace({ method }, 'ignored agent notification');
      })
      .connect(stream);
    this.superviseLink();
  }

  /**
   * A connection that dies while the process lives (its stdout closed, a
   * message that could not be written) leaves an agent nobody can talk to:
   * stop the process, so that its sessions die and the next create spawns
   * afresh, exactly as after a crash. A process that is exiting anyway gets
   * a moment to do so, so that its own exit status is what gets reported.
   */
  private superviseLink(): void {
    this.connection.signal.addEventListener(
      'abort',
      () => {
        if (!this.usable) return;
        const grace = setTimeout(() => {
          if (!this.usable) return;
          this.linkLost = true;
          this.log.warn({ agentPid: this.pid }, 'agent connection closed while its process lives; stopping it');
          void this.kill();
        }, LINK_LOSS_GRACE_MS);
        void this.exited.then(() => clearTimeout(grace));
      },
      { once: true },
    );
  }

  get alive(): boolean {
    return !this.hasExited;
  }

  /** Being stopped, or marked to be: nothing new may go to it. */
  get isDying(): boolean {
    return this.dying;
  }

  /** Marks the channel as going away, without stopping it yet: nothing new goes to it. */
  retire(): void {
    this.dying = true;
  }

  /** Running and not being stopped: new work may go to it. */
  get usable(): boolean {
    return !this.hasExited && !this.dying;
  }

  get exitStatus(): ExitInfo | undefined {
    return this.exitInfo;
  }

  /** Why spawn() failed (the child's 'error' before it had a pid), if it did. */
  get spawnError(): NodeJS.ErrnoException | undefined {
    return this.startError;
  }

  /**
   * The agent's last stderr lines, oldest first, once its stderr has ended
   * or `maxWaitMs` have passed: the exit can be reported before the last
   * lines have been read.
   */
  async lastStderrLines(maxWaitMs: number): Promise<string[]> {
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, maxWaitMs);
    });
    await Promise.race([this.stderrEnded, waited]).finally(() => clearTimeout(timer));
    return [...this.stderrTail];
  }

  /** The ACP handshake. */
  async initialize(timeoutMs: number): Promise<InitializeResponse> {
    this.initializeResponse = await this.call<InitializeResponse>(
      'initialize',
      {
        protocolVersion: PROTOCOL_VERSION,
        clientCapabilities: { fs: { readTextFile: true, writeTextFile: true } },
        clientInfo: { name: 'acpd', version: VERSION },
      },
      { timeoutMs, closedMessage: 'agent channel closed during initialize' },
    );
    return this.initializeResponse;
  }

  /**
   * Sends a request, racing the child's exit (and a deadline when given). The
   * losing promises never surface as unhandled rejections.
   */
  call<T>(method: string, params: unknown, opts: { timeoutMs?: number; closedMessage: string }): Promise<T> {
    // When the child dies, EOF on its stdout usually closes the connection (rejecting this request with
    // the SDK's generic "ACP connection closed") before the exit event: report it as the closed channel.
    const request = this.connection.agent.request<T>(method, params).catch((err: unknown): never => {
      if (!(err instanceof RequestError) && this.connection.signal.aborted)
        throw new ChannelClosedError(opts.closedMessage);
      throw err;
    });
    const racers: Promise<T>[] = [request, this.closedRejection(opts.closedMessage)];
    const raced = Promise.race(racers);
    // Whichever loses must not become an unhandled rejection.
    request.catch(() => {});
    return opts.timeoutMs !== undefined ? withTimeout(raced, opts.timeoutMs, method) : raced;
  }

  /** Whether the agent advertised `session/close` in its `initialize` answer. */
  get canCloseSessions(): boolean {
    const close = this.initializeResponse?.agentCapabilities?.sessionCapabilities?.close;
    return close !== undefined && close !== null;
  }

  /**
   * Tells the agent that acpd is done with a session, when the agent takes
   * `session/close` and still runs. Never throws: a refusal or a timeout is
   * logged and the session is gone from acpd either way.
   */
  async closeSession(sessionId: string, timeoutMs: number): Promise<void> {
    if (!this.canCloseSessions || !this.usable) return;
    try {
      await this.call('session/close', { sessionId }, { timeoutMs, closedMessage: 'agent channel closed' });
    } catch (err) {
      this.log.debug({ err, sessionId }, 'session/close failed');
    }
  }

  notify(method: string, params: unknown): Promise<void> {
    if (this.hasExited) return Promise.resolve();
    return this.connection.agent.notify(method, params).catch((err: unknown) => {
      this.log.debug({ err, method }, 'notification to agent failed');
    });
  }

  private closedRejection(message: string): Promise<never> {
    // One shared listener on `exited` for the common message; others get their own.
    const make = () => {
      const p = this.exited.then((): never => {
        throw new ChannelClosedError(message);
      });
      p.catch(() => {});
      return p;
    };
    if (message !== 'agent channel closed') return make();
    this.closedError ??= make();
    return this.closedError;
  }

  /** SIGTERM the process group, SIGKILL after the grace period; resolves on exit. Idempotent. */
  kill(): Promise<void> {
    this.dying = true;
    this.killing ??= this.doKill();
    return this.killing;
  }

  private async doKill(): Promise<void> {
    if (!this.hasExited) {
      this.child.stdin?.end();
      this.signalGroup('SIGTERM');
      const grace = setTimeout(() => this.signalGroup('SIGKILL'), this.killGraceMs);
      const hardDeadline = new Promise<void>((resolve) => setTimeout(resolve, this.killGraceMs * 2).unref());
      await Promise.race([this.exited, hardDeadline]);
      clearTimeout(grace);
    }
    // Grandchildren the agent left behind share its group: make sure they go too.
    this.signalGroup('SIGKILL');
    await this.groupGone(GROUP_EXIT_WAIT_MS);
    this.connection.close();
  }

  /** Waits (bounded) until no process of the agent's group is left for signals to reach. */
  private async groupGone(maxMs: number): Promise<void> {
    if (this.pid === undefined) return;
    const deadline = Date.now() + maxMs;
    while (Date.now() < deadline) {
      try {
        process.kill(-this.pid, 0);
      } catch {
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /** SIGKILL now, without waiting. For a forced exit. */
  killSync(): void {
    this.dying = true;
    this.signalGroup('SIGKILL');
  }

  private signalGroup(signal: NodeJS.Signals): void {
    if (this.pid === undefined) return;
    try {
      process.kill(-this.pid, signal);
    } catch {
      // The group is already gone.
      if (!this.hasExited) {
        try {
          this.child.kill(signal);
        } catch {
          // nothing left to signal
        }
      }
    }
  }

  /** Logs the agent's stderr line by line and keeps its tail; settles when it ends. */
  private forwardStderr(): Promise<void> {
    const stderr = this.child.stderr;
    if (!stderr) return Promise.resolve();
    stderr.setEncoding('utf8');
    let buf = '';
    const emit = (line: string) => {
      if (line.length === 0) return;
      this.log.debug({ agentPid: this.pid, line }, 'agent stderr');
      const kept = line.endsWith('\r') ? line.slice(0, -1) : line;
      this.stderrTail.push(
        kept.length > STDERR_TAIL_LINE_CAP ? `${kept.slice(0, STDERR_TAIL_LINE_CAP)} [truncated]` : kept,
      );
      if (this.stderrTail.length > STDERR_TAIL_LINES) this.stderrTail.shift();
    };
    stderr.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        emit(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
      while (buf.length > STDERR_LINE_CAP) {
        emit(`${buf.slice(0, STDERR_LINE_CAP)} [truncated]`);
        buf = buf.slice(STDERR_LINE_CAP);
      }
    });
    stderr.on('error', () => {});
    return new Promise<void>((resolve) => {
      stderr.once('end', () => {
        emit(buf);
        buf = '';
        resolve();
      });
      // A destroyed stream may close without 'end'.
      stderr.once('close', () => resolve());
    });
  }
}
