// The fake models of ../shared/tools on a free loopback port: fake-openai-server.mjs (OpenAI chat
// completions with the SLOW / TOOL triggers; used with qwen) and fake-model-server.mjs (also the
// Anthropic API, with "code word" replies; used with the second agent).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fakeModelServer, fakeOpenAiServer } from './peer-env.js';
import { freePort } from './ports.js';
import { Proc } from './spawn.js';

/** One line of fake-openai-server's FAKE_LOG (the fields it writes for a chat completion). */
export interface FakeLogEntry {
  t: string;
  method?: string;
  path?: string;
  n?: number;
  stream?: boolean;
  messages?: number;
  tools?: number;
  roles?: string;
  lastUser?: string;
  lastRole?: string;
  wantTool?: boolean;
  event?: string;
}

/** Requests the qwen agent makes on its own after a turn (memory extraction, next-prompt suggestion, auto-mode classifier). */
const BACKGROUND = /^(\[SUGGESTION MODE|Managed memory|## Pending tool call)/;

export function isMainTurn(e: FakeLogEntry): boolean {
  return e.path === '/v1/chat/completions' && e.stream === true && !BACKGROUND.test(e.lastUser ?? '');
}

export class FakeModel {
  private constructor(
    private readonly proc: Proc,
    readonly port: number,
    readonly logFile: string,
  ) {}

  /** fake-openai-server.mjs with FAKE_PORT=0; the port comes from its start line. */
  static async start(dir: string, env: NodeJS.ProcessEnv): Promise<FakeModel> {
    const logFile = join(dir, 'fake-model.jsonl');
    const proc = new Proc('fake-model', process.execPath, [fakeOpenAiServer], {
      cwd: dir,
      env: { ...env, FAKE_PORT: '0', FAKE_LOG: logFile },
      logFile: join(dir, 'fake-model.out.log'),
    });
    try {
      const m = await proc.waitForLine(/listening on http:\/\/127\.0\.0\.1:(\d+)/, 10_000);
      return new FakeModel(proc, Number(m[1]), logFile);
    } catch (err) {
      await proc.stop(1000);
      throw err;
    }
  }

  /** fake-model-server.mjs on a port picked for it (retried if someone else took it meanwhile). */
  static async startMulti(dir: string, env: NodeJS.ProcessEnv): Promise<FakeModel> {
    const logFile = join(dir, 'fake-model.jsonl');
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const proc = new Proc('fake-model', process.execPath, [fakeModelServer], {
        cwd: dir,
        env: { ...env, PORT: String(port), FAKE_LOG: logFile, FAKE_DELAY_MS: '5' },
        logFile: join(dir, 'fake-model.out.log'),
      });
      try {
        await proc.waitForLine(/listening on http:\/\/127\.0\.0\.1:/, 10_000);
        return new FakeModel(proc, port, logFile);
      } catch (err) {
        await proc.stop(1000);
        if (attempt >= 3) throw err;
      }
    }
  }

  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}/v1`;
  }

  lines(): string[] {
    if (!existsSync(this.logFile)) return [];
    return readFileSync(this.logFile, 'utf8')
      .split('\n')
      .filter((l) => l.trim().length > 0);
  }

  entries(): FakeLogEntry[] {
    return this.lines().map((l) => JSON.parse(l) as FakeLogEntry);
  }

  async stop(): Promise<void> {
    await this.proc.stop(2000);
  }
}
