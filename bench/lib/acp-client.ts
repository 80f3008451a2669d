// The floor under create and load: a bare ACP client over stdio (the SDK's client(), wired the
// way acpd wires its own channel), talking straight to the agent with no daemon in between.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Readable, Writable } from 'node:stream';
import { client, ndJsonStream, PROTOCOL_VERSION, RequestError } from '@agentclientprotocol/sdk';
import type { ClientConnection } from '@agentclientprotocol/sdk';
import { terminate } from '../../harness/spawn.js';

interface BareAgentOptions {
  argv: string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
  logFile: string;
}

export class BareAgent {
  updates = 0;
  private readonly child: ChildProcess;
  private readonly connection: ClientConnection;

  constructor(opts: BareAgentOptions) {
    const [cmd, ...args] = opts.argv;
    if (cmd === undefined) throw new Error('empty agent argv');
    this.child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    const log = createWriteStream(opts.logFile, { flags: 'a' });
    this.child.stderr?.pipe(log);
    this.child.stdin?.on('error', () => {});
    const { stdin, stdout } = this.child;
    if (!stdin || !stdout) throw new Error('agent has no stdio pipes');
    const stream = ndJsonStream(
      Writable.toWeb(stdin) as WritableStream<Uint8Array>,
      Readable.toWeb(stdout) as ReadableStream<Uint8Array>,
    );
    this.connection = client({ name: 'acpd-bench-floor' })
      .onNotification('session/update', () => {
        this.updates++;
      })
      .onRequest('session/request_permission', () => ({ outcome: { outcome: 'cancelled' as const } }))
      .onRequest('*', ({ method }) => {
        throw RequestError.methodNotFound(method);
      })
      .onNotification('*', () => {})
      .connect(stream);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  async initialize(): Promise<void> {
    await this.connection.agent.request('initialize', {
      protocolVersion: PROTOCOL_VERSION,
      clientCapabilities: { fs: { readTextFile: false, writeTextFile: false } },
      clientInfo: { name: 'acpd-bench-floor', version: '0' },
    });
  }

  /** One request, timed from the call to its answer (any replay before the answer included). */
  async timed<T>(method: string, params: unknown): Promise<{ result: T; ms: number }> {
    const started = performance.now();
    const result = await this.connection.agent.request<T>(method, params);
    return { result, ms: performance.now() - started };
  }

  async newSession(cwd: string): Promise<{ sessionId: string; ms: number }> {
    const { result, ms } = await this.timed<{ sessionId: string }>('session/new', { cwd, mcpServers: [] });
    return { sessionId: result.sessionId, ms };
  }

  async close(): Promise<void> {
    this.child.stdin?.end();
    if (this.child.pid !== undefined) await terminate([this.child.pid], 3000);
    this.connection.close();
  }
}
