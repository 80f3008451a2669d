// A throwaway redis-server on loopback for tests and benchmarks: its own port, its own directory, an
// append-only file flushed on every write (so a restart under load loses nothing that was acknowledged).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './ports.js';
import { Proc } from './spawn.js';

export interface RedisServerOptions {
  /** The redis-server binary (Debian's package installs /usr/bin/redis-server). */
  binary?: string;
  /** Where its data and log go; a fresh temporary directory when absent (removed by `stop`). */
  dir?: string;
}

export class RedisServer {
  private proc: Proc | undefined;
  private readonly ownsDir: boolean;
  readonly dir: string;

  private constructor(
    readonly port: number,
    private readonly binary: string,
    dir: string | undefined,
  ) {
    this.ownsDir = dir === undefined;
    this.dir = dir ?? mkdtempSync(path.join(os.tmpdir(), 'acpd-redis-'));
  }

  /** Starts a server on a free port and resolves once it accepts connections. */
  static async start(opts: RedisServerOptions = {}): Promise<RedisServer> {
    for (let attempt = 0; ; attempt++) {
      const server = new RedisServer(await freePort(), opts.binary ?? 'redis-server', opts.dir);
      try {
        await server.launch();
        return server;
      } catch (err) {
        // Someone took the port between freePort and the bind: try another.
        await server.stop();
        if (attempt >= 3) throw err;
      }
    }
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get alive(): boolean {
    return this.proc?.alive ?? false;
  }

  private async launch(): Promise<void> {
    const args = [
      '--port',
      String(this.port),
      '--bind',
      '127.0.0.1',
      '--dir',
      this.dir,
      '--save',
      '',
      '--appendonly',
      'yes',
      '--appendfsync',
      'always',
      '--daemonize',
      'no',
    ];
    this.proc = new Proc(`redis:${this.port}`, this.binary, args, {
      cwd: this.dir,
      env: process.env,
      logFile: path.join(this.dir, 'redis.log'),
    });
    await this.proc.waitForLine(/Ready to accept connections/, 10_000);
  }

  /** Kills the server at once (SIGKILL): clients see the connection drop mid-command. */
  async kill(): Promise<void> {
    if (!this.proc?.alive) return;
    this.proc.child.kill('SIGKILL');
    await this.proc.exited;
  }

  /** Starts the server again on the same port and directory: it reloads its append-only file. */
  async restart(): Promise<void> {
    await this.kill();
    await this.launch();
  }

  async stop(): Promise<void> {
    await this.proc?.stop(2_000);
    if (this.ownsDir) rmSync(this.dir, { recursive: true, force: true });
  }
}
