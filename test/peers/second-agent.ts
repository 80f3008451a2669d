// A second real ACP agent through acpd (issue 4): @agentclientprotocol/claude-agent-acp, offline
// against fake-model-server.mjs's Anthropic API. `qwen serve` can host only qwen, so there is
// nothing to compare with; the scenario checks what acpd promises for any agent.
import { existsSync } from 'node:fs';
import { DaemonClient, DaemonSessionClient } from '@qwen-code/sdk/daemon';
import type { DaemonEvent, PromptResult } from '@qwen-code/sdk/daemon';
import type { FakeModel } from '../../harness/fake-model.js';
import { commandLine } from '../../harness/peer-daemon.js';
import { claudeAgentDir, claudeAgentEntry, claudeEnv, packageVersion } from '../../harness/peer-env.js';
import { within } from '../../harness/wait.js';
import { chunkText, FrameCollector, fullSequence, recordingFetch, updateKind } from './observe.js';
import type { Scenario, ScenarioContext } from './scenarios.js';

interface SecondAgent {
  name: string;
  installed(): boolean;
  version(): string;
  /** The `--agent` command for acpd. */
  command(): string;
  env(home: string, fake: FakeModel): NodeJS.ProcessEnv;
}

export const claudeAgent: SecondAgent = {
  name: '@agentclientprotocol/claude-agent-acp',
  installed: () => existsSync(claudeAgentEntry),
  version: () => packageVersion(claudeAgentDir),
  command: () => commandLine([process.execPath, claudeAgentEntry]),
  env: (home, fake) => claudeEnv(home, fake.port),
};

const isAgentChunk = (ev: DaemonEvent): boolean => updateKind(ev) === 'agent_message_chunk';
const replyAfter = (frames: DaemonEvent[], from: number): string =>
  frames.slice(from).filter(isAgentChunk).map(chunkText).join('');

function prompt(s: DaemonSessionClient, text: string): Promise<PromptResult> {
  return within(
    s.prompt({ prompt: [{ type: 'text', text }] }, AbortSignal.timeout(90_000)),
    `prompt "${text}"`,
    92_000,
  );
}

/** From where the create/load/resume answer says the session stands (the published client's own seed). */
function subscribe(name: string, s: DaemonSessionClient): FrameCollector {
  const ac = new AbortController();
  return new FrameCollector(name, s.events({ lastEventId: s.lastEventId ?? 0, signal: ac.signal }), ac);
}

/** Turn, restart, load (history over SSE, the agent remembers), restart, resume (no history, remembers). */
export const secondAgentScenario: Scenario = {
  id: 8,
  title: 'second agent: prompt, restart + load replays history, restart + resume, the agent remembers',
  timeoutMs: 240_000,
  async run(ctx: ScenarioContext) {
    const { obs } = ctx;
    const d = await ctx.startDaemon();
    const client = (): DaemonClient =>
      new DaemonClient({ baseUrl: d.baseUrl, fetch: recordingFetch(obs.http), fetchTimeoutMs: 30_000 });
    const s = await DaemonSessionClient.createOrAttach(client(), {});
    const sub = subscribe('turn1', s);
    const r1 = await prompt(s, 'remember: the code word is ZEBRA');
    await sub.settle(800, 5000);
    const reply1 = replyAfter(sub.frames, 0);
    obs.require(
      'a.turn1',
      'prompt → stopReason; reply streamed as agent_message_chunk',
      `${r1.stopReason}; ${reply1.length > 0 ? 'streamed' : 'no reply'}`,
      r1.stopReason === 'end_turn' && reply1.length > 0,
    );
    obs.sequences['turn 1 (all frames)'] = fullSequence(sub.frames);
    await sub.close();

    await d.restart();
    const loaded = await DaemonSessionClient.load(client(), s.sessionId);
    obs.require(
      'a.load',
      'POST /session/:id/load after restart → attached',
      loaded.attached,
      loaded.attached === false,
    );
    const subL = subscribe('load', loaded);
    await subL.settle(1000, 8000);
    const isZebra = (ev: DaemonEvent): boolean =>
      updateKind(ev) === 'user_message_chunk' && chunkText(ev).includes('ZEBRA');
    // Over SSE (an empty event log: v1), or in the answer (compactedReplay) when the log kept the frames.
    const history = subL.frames.some(isZebra) || (loaded.replaySnapshot?.compactedReplay ?? []).some(isZebra);
    obs.require('a.loadHistory', 'load → the earlier user message reaches the client', history, history);
    const before = subL.frames.length;
    const r2 = await prompt(loaded, 'What is the code word?');
    await subL.settle(800, 5000);
    const reply2 = replyAfter(subL.frames, before);
    obs.require(
      'a.loadSaw',
      'prompt after load: the agent answers from the restored history',
      `${r2.stopReason}; ${reply2.includes('ZEBRA') ? 'knows ZEBRA' : JSON.stringify(reply2.slice(0, 60))}`,
      r2.stopReason === 'end_turn' && reply2.includes('ZEBRA'),
    );
    obs.sequences['load, then a prompt (all frames)'] = fullSequence(subL.frames);
    await subL.close();

    await d.restart();
    const resumed = await DaemonSessionClient.resume(client(), s.sessionId).then(
      (x) => x,
      (err: unknown) => (err instanceof Error ? err.message : String(err)),
    );
    if (typeof resumed === 'string') {
      obs.require('a.resume', 'POST /session/:id/resume after restart', resumed, false);
      return;
    }
    obs.require(
      'a.resume',
      'POST /session/:id/resume after restart → attached',
      resumed.attached,
      resumed.attached === false,
    );
    const subR = subscribe('resume', resumed);
    await subR.settle(1000, 5000);
    const replayed = subR.frames.filter((ev) =>
      ['user_message_chunk', 'agent_message_chunk'].includes(updateKind(ev) ?? ''),
    ).length;
    obs.require(
      'a.resumeQuiet',
      'resume → no history frames',
      replayed === 0 ? 'none' : `${replayed} message frames`,
      replayed === 0,
    );
    const beforeR = subR.frames.length;
    const r3 = await prompt(resumed, 'What is the code word?');
    await subR.settle(800, 5000);
    const reply3 = replyAfter(subR.frames, beforeR);
    obs.require(
      'a.resumeSaw',
      'prompt after resume: the agent still knows the conversation',
      `${r3.stopReason}; ${reply3.includes('ZEBRA') ? 'knows ZEBRA' : JSON.stringify(reply3.slice(0, 60))}`,
      r3.stopReason === 'end_turn' && reply3.includes('ZEBRA'),
    );
    obs.sequences['resume, then a prompt (all frames)'] = fullSequence(subR.frames);
    await subR.close();
  },
};
