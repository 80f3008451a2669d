// Where things are, and the environment every peer process gets.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      const parsed: unknown = JSON.parse(readFileSync(pkg, 'utf8'));
      if (typeof parsed === 'object' && parsed !== null && 'name' in parsed && parsed.name === 'acpd') return dir;
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('harness: cannot find the acpd repository root (package.json name "acpd")');
    dir = up;
  }
}

export const repoRoot = findRepoRoot();
/** CI keeps a copy of shared/ beside the clone; PEERS_SHARED_DIR overrides. */
const sharedDir = resolve(process.env.PEERS_SHARED_DIR ?? join(repoRoot, '..', 'shared'));
export const peersDir = join(repoRoot, '.peers');
export const qwenPkgDir = join(peersDir, 'node_modules', '@qwen-code', 'qwen-code');
/** The bundled CLI itself (what `qwen serve` spawns for its agent child); cli-entry.js is only a launcher. */
export const qwenCli = join(qwenPkgDir, 'cli.js');
export const qwenEntry = join(qwenPkgDir, 'cli-entry.js');
/** The second real agent (acpd only: `qwen serve` can host nothing but qwen). */
export const claudeAgentDir = join(peersDir, 'node_modules', '@agentclientprotocol', 'claude-agent-acp');
export const claudeAgentEntry = join(claudeAgentDir, 'dist', 'index.js');
export const acpdServer = join(repoRoot, 'dist', 'server.js');
export const fakeOpenAiServer = join(sharedDir, 'tools', 'fake-openai-server.mjs');
/** OpenAI, Anthropic, Gemini and Responses wire formats; stateless "code word" replies. */
export const fakeModelServer = join(sharedDir, 'tools', 'fake-model-server.mjs');
export const conformanceDoc = join(repoRoot, 'docs', 'conformance.md');

export function packageVersion(dir: string): string {
  try {
    const parsed: unknown = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    if (typeof parsed === 'object' && parsed !== null && 'version' in parsed && typeof parsed.version === 'string') {
      return parsed.version;
    }
  } catch {
    /* fall through */
  }
  return 'unknown';
}

export const sdkDir = join(repoRoot, 'node_modules', '@qwen-code', 'sdk');

export function checkPrerequisites(): string[] {
  const missing: string[] = [];
  if (!existsSync(qwenCli)) missing.push(`${qwenCli} (run scripts/peers-install.sh)`);
  if (!existsSync(fakeOpenAiServer)) missing.push(`${fakeOpenAiServer} (set PEERS_SHARED_DIR)`);
  if (!existsSync(sdkDir)) missing.push(`${sdkDir} (npm install)`);
  return missing;
}

/**
 * A throw-away HOME for the qwen CLI (settings as ../shared/tools/README.md says), plus
 * `tools.approvalMode: "default"`: shell commands then always ask permission. Without it qwen
 * 0.24 starts sessions in "auto" mode, whose classifier asks the (fake) model and only falls back
 * to asking the user because the fake model's answer cannot be classified.
 */
export function makeHome(home: string): void {
  mkdirSync(join(home, '.qwen'), { recursive: true });
  const settings = {
    security: { auth: { selectedType: 'openai' } },
    model: { name: 'fake-model' },
    privacy: { usageStatisticsEnabled: false },
    telemetry: { enabled: false },
    general: { enableAutoUpdate: false },
    tools: { approvalMode: 'default' },
  };
  writeFileSync(join(home, '.qwen', 'settings.json'), JSON.stringify(settings, null, 2));
}

/** Variables that must not leak from the caller into the peers (real credentials, tokens). */
const SCRUB = /^(OPENAI_|ANTHROPIC_|CLAUDE_|GEMINI_|GOOGLE_|DASHSCOPE|QWEN_|ACPD_|NODE_OPTIONS$|NODE_COMPILE_CACHE$)/;

/** Our own environment without anything that could reach a real model or a daemon's token. */
function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!SCRUB.test(k)) env[k] = v;
  return env;
}

/**
 * The second agent, @agentclientprotocol/claude-agent-acp, against fake-model-server.mjs's
 * Anthropic Messages API (../shared/tools/README.md). IS_SANDBOX=1 lets it run as root (CI is root).
 */
export function claudeEnv(home: string, fakePort: number): NodeJS.ProcessEnv {
  return {
    ...baseEnv(),
    HOME: home,
    ANTHROPIC_API_KEY: 'sk-fake',
    ANTHROPIC_BASE_URL: `http://127.0.0.1:${fakePort}`,
    IS_SANDBOX: '1',
    DISABLE_TELEMETRY: '1',
    DISABLE_AUTOUPDATER: '1',
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    CI: '1',
  };
}

/** The environment both daemons get (and pass on to their agent child). */
export function peerEnv(home: string, modelBaseUrl: string): NodeJS.ProcessEnv {
  return {
    ...baseEnv(),
    HOME: home,
    OPENAI_API_KEY: 'sk-fake',
    OPENAI_BASE_URL: modelBaseUrl,
    OPENAI_MODEL: 'fake-model',
    QWEN_USAGE_STATISTICS_ENABLED: '0',
    QWEN_CODE_DISABLE_PRECONNECT: '1',
    // One agent process instead of cli.js re-spawning itself with a bigger heap (qwen serve sets
    // this for its own child too); makes "the agent child" a single pid under either daemon.
    QWEN_CODE_NO_RELAUNCH: 'true',
    NO_BROWSER: '1',
    CI: '1',
  };
}
