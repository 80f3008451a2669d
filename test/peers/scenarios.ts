// The six scenarios of issue 4 and the workspace read routes of issue 17, each driven only by the
// published @qwen-code/sdk client and each recording what it saw (facts and frame sequences) so that
// the daemons can be compared.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DaemonClient, DaemonHttpError, DaemonSessionClient } from '@qwen-code/sdk/daemon';
import { negotiateTransport } from '@qwen-code/sdk/daemon/transports';
import type { DaemonEvent, DaemonSessionSubscribeOptions, PromptResult } from '@qwen-code/sdk/daemon';
import { type FakeLogEntry, type FakeModel, isMainTurn } from '../../harness/fake-model.js';
import type { DaemonHandle, DaemonKind } from '../../harness/peer-daemon.js';
import { isAlive, livingDescendants } from '../../harness/proc-table.js';
import { type PollOptions, until, within } from '../../harness/wait.js';
import {
  chunkText,
  coreSequence,
  dataOf,
  distinctHttp,
  FrameCollector,
  fullSequence,
  isBridgeEcho,
  type Observation,
  recordingFetch,
  restShaped,
  updateKind,
  updateOf,
  V1_TYPES,
} from './observe.js';

export interface ScenarioContext {
  readonly kind: DaemonKind;
  /**
   * How the clients reach the daemon: 'rest' (DaemonClient's default REST+SSE transport), or 'acp-http': the
   * transport the published client negotiates from `/capabilities.transports`, which must come out as acp-http.
   */
  readonly transport: 'rest' | 'acp-http';
  readonly workspace: string;
  readonly fake: FakeModel;
  readonly obs: Observation;
  /** Starts the daemon under test (stopped by the runner afterwards, whatever happens). */
  startDaemon(): Promise<DaemonHandle>;
}

export interface Scenario {
  id: number;
  title: string;
  timeoutMs: number;
  run(ctx: ScenarioContext): Promise<void>;
}

const PROMPT_MS = 60_000;
const FRAME_MS = 20_000;

/** Polling for `ms` at most, every 50 ms: some checks read the fake model's whole log each time. */
function slowly(ms: number): PollOptions {
  return { ms, everyMs: 50 };
}

/** A DaemonClient whose HTTP exchanges land in the observation (over the negotiated transport for `/acp`). */
async function clientFor(ctx: ScenarioContext, d: DaemonHandle): Promise<DaemonClient> {
  const fetch = recordingFetch(ctx.obs.http);
  if (ctx.transport === 'rest') return new DaemonClient({ baseUrl: d.baseUrl, fetch, fetchTimeoutMs: 30_000 });
  const transport = await negotiateTransport(d.baseUrl, undefined, { fetchFn: fetch });
  if (!ctx.obs.facts.some((f) => f.key === 'transport'))
    ctx.obs.require('transport', 'the transport the client negotiated', transport.type, transport.type === 'acp-http');
  // Any other transport would silently test REST again: stop the scenario here.
  if (transport.type !== 'acp-http') {
    transport.dispose();
    throw new Error(`negotiated ${transport.type}, not acp-http`);
  }
  return new DaemonClient({ baseUrl: d.baseUrl, fetch, transport, fetchTimeoutMs: 30_000 });
}

/** The client's events, in the REST shapes the checks read (see restShaped). */
function events(ctx: ScenarioContext, gen: AsyncGenerator<DaemonEvent>): AsyncGenerator<DaemonEvent> {
  return ctx.transport === 'rest' ? gen : restShaped(gen);
}

function subscribe(
  ctx: ScenarioContext,
  name: string,
  s: DaemonSessionClient,
  opts: DaemonSessionSubscribeOptions = {},
): FrameCollector {
  const ac = new AbortController();
  return new FrameCollector(name, events(ctx, s.events({ ...opts, signal: ac.signal })), ac);
}

function subscribeRaw(
  ctx: ScenarioContext,
  name: string,
  c: DaemonClient,
  sessionId: string,
  lastEventId?: number,
): FrameCollector {
  const ac = new AbortController();
  return new FrameCollector(name, events(ctx, c.subscribeEvents(sessionId, { signal: ac.signal, lastEventId })), ac);
}

function text(t: string): { prompt: Array<{ type: 'text'; text: string }> } {
  return { prompt: [{ type: 'text', text: t }] };
}

/** A prompt that cannot hang the run: aborted (which cancels it daemon-side) after PROMPT_MS. */
function prompt(s: DaemonSessionClient, t: string): Promise<PromptResult> {
  return within(s.prompt(text(t), AbortSignal.timeout(PROMPT_MS)), `prompt "${t}"`, PROMPT_MS + 2000);
}

/** `status code` of an SDK error, for the table. */
function errorShape(err: unknown): string {
  if (err instanceof DaemonHttpError) {
    // Over ACP the client wraps the daemon's envelope as the JSON-RPC error's data: `{error, data: {code, …}}`.
    const body = err.body as { code?: unknown; data?: { code?: unknown } } | null | undefined;
    const code = body?.code ?? body?.data?.code;
    return `${err.status}${typeof code === 'string' || typeof code === 'number' ? ` ${code}` : ''}`;
  }
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

const isAgentChunk = (ev: DaemonEvent): boolean => updateKind(ev) === 'agent_message_chunk';
const isPong = (ev: DaemonEvent): boolean => isAgentChunk(ev) && chunkText(ev).includes('pong');
const replyOf = (frames: DaemonEvent[]): string => frames.filter(isAgentChunk).map(chunkText).join('');

/** Roles of a chat request, counted: "system, user×3, assistant×2". */
function roleCounts(e: FakeLogEntry | undefined): string {
  if (!e?.roles) return 'no request';
  const counts = new Map<string, number>();
  for (const r of e.roles.split(',')) counts.set(r, (counts.get(r) ?? 0) + 1);
  return [...counts].map(([r, n]) => (n > 1 ? `${r}×${n}` : r)).join(', ');
}

/** The first main-turn model request logged after `mark` entries. */
function mainTurnAfter(fake: FakeModel, mark: number): FakeLogEntry | undefined {
  return fake.entries().slice(mark).find(isMainTurn);
}

/** The request carried an earlier exchange: an assistant message before its last user message. */
function carriesHistory(e: FakeLogEntry | undefined): boolean {
  if (!e?.roles) return false;
  const roles = e.roles.split(',');
  const lastUser = roles.lastIndexOf('user');
  return roles.slice(0, lastUser).includes('assistant') && roles.filter((r) => r === 'user').length >= 2;
}

/** Where the client sends a REST call over `/acp`: the JSON-RPC method its transport maps the route to. */
const ACP_METHOD: Record<string, string> = {
  'POST /session/:id/prompt': 'POST /acp session/prompt',
  'POST /session/:id/cancel': 'POST /acp session/cancel',
};

/** The distinct statuses the daemon answered a route with (over `/acp`: the POSTs of its method). */
function statuses(obs: Observation, route: string): string {
  const routes = [route, ACP_METHOD[route]].filter((r): r is string => r !== undefined);
  return distinctHttp(obs.http)
    .filter((h) => routes.some((r) => h.startsWith(`${r} → `)))
    .map((h) => h.split(' → ')[1])
    .join(',');
}

function recordSequences(obs: Observation, name: string, frames: DaemonEvent[]): void {
  obs.sequences[`${name} (all frames)`] = fullSequence(frames);
  obs.sequences[`${name} (v1 core)`] = coreSequence(frames);
}

// ─── 1 ────────────────────────────────────────────────────────────────────────────────────────────
const s1: Scenario = {
  id: 1,
  title: 'create → subscribe → prompt: "pong" streams as session_update, prompt ends with end_turn',
  timeoutMs: 90_000,
  async run(ctx) {
    const { obs } = ctx;
    const d = await ctx.startDaemon();
    const c = await clientFor(ctx, d);
    const caps = await c.capabilities();
    const missing = [
      'health',
      'capabilities',
      'session_create',
      'session_scope_override',
      'session_load',
      'unstable_session_resume',
      'session_list',
      'session_prompt',
      'session_cancel',
      'session_events',
      'session_set_model',
      'permission_vote',
    ].filter((f) => !caps.features.includes(f));
    obs.require(
      'caps.v1',
      'GET /capabilities advertises every v1 feature',
      missing.length ? `missing ${missing.join(',')}` : 'all 12',
      missing.length === 0,
    );
    obs.info('caps.extra', 'GET /capabilities: features beyond v1', caps.features.length - 12 + missing.length);
    obs.info('caps.mode', 'GET /capabilities: mode', caps.mode);

    const s = await DaemonSessionClient.createOrAttach(c, {});
    obs.require('s1.attached', 'POST /session on a fresh daemon → attached', s.attached, s.attached === false);
    const sub = subscribe(ctx, 'A', s, { lastEventId: 0 });
    const res = await prompt(s, 'ping');
    obs.require('s1.stop', 'prompt → stopReason', res.stopReason, res.stopReason === 'end_turn');
    await sub.waitFor(isPong, FRAME_MS, 'agent_message_chunk "pong"').catch(() => undefined);
    await sub.settle(500, 3000);
    const reply = replyOf(sub.frames);
    obs.require('s1.reply', 'agent_message_chunk text over SSE', reply, reply.includes('pong'));
    obs.info('s1.promptHttp', 'POST /session/:id/prompt status', statuses(obs, 'POST /session/:id/prompt'));
    obs.info(
      's1.idless',
      'frames without id',
      [...new Set(sub.frames.filter((f) => f.id === undefined).map((f) => f.type))].join(',') || 'none',
    );
    const extra = [...new Set(sub.frames.filter((f) => !V1_TYPES.has(f.type)).map((f) => f.type))];
    obs.info('s1.nonV1', 'frame types outside v1', extra.join(',') || 'none');
    obs.info('s1.echo', 'daemon echoes the prompt as user_message_chunk', sub.frames.some(isBridgeEcho));
    recordSequences(obs, 'prompt', sub.frames);
    await sub.close();
  },
};

// ─── 2 ────────────────────────────────────────────────────────────────────────────────────────────
const s2: Scenario = {
  id: 2,
  title: 'tool call needing permission: permission_request → vote → permission_resolved → tool runs → end_turn',
  timeoutMs: 90_000,
  async run(ctx) {
    const { obs } = ctx;
    const d = await ctx.startDaemon();
    const c = await clientFor(ctx, d);
    const s = await DaemonSessionClient.createOrAttach(c, {});
    const sub = subscribe(ctx, 'A', s, { lastEventId: 0 });
    const file = 'peers-s2-touched';
    const running = prompt(s, `TOOL:touch ${file}`);
    running.catch(() => undefined);

    const req = await sub.waitFor((ev) => ev.type === 'permission_request', FRAME_MS, 'permission_request');
    const data = dataOf(req);
    const requestId = String(data.requestId);
    const options = Array.isArray(data.options)
      ? data.options.filter((o): o is Record<string, unknown> => typeof o === 'object' && o !== null)
      : [];
    obs.require('s2.request', 'permission_request frame over SSE', 'yes', true);
    obs.info('s2.options', 'offered option kinds', options.map((o) => String(o.kind)).join(','));
    const toolCall =
      typeof data.toolCall === 'object' && data.toolCall !== null ? (data.toolCall as Record<string, unknown>) : {};
    obs.info('s2.toolKind', 'permission_request toolCall.kind', toolCall.kind);

    const bad = await s
      .respondToPermission(requestId, { outcome: { outcome: 'selected', optionId: 'no-such-option' } })
      .then((ok) => `accepted (${ok})`, errorShape);
    obs.info('s2.badOption', 'vote with an optionId not offered', bad);

    const allow = options.find((o) => o.kind === 'allow_once') ?? options[0];
    const ok = await s.respondToPermission(requestId, {
      outcome: { outcome: 'selected', optionId: String(allow?.optionId) },
    });
    obs.require('s2.vote', 'first vote → accepted (200)', ok, ok === true);
    const again = await s
      .respondToPermission(requestId, { outcome: { outcome: 'selected', optionId: String(allow?.optionId) } })
      .then((v) => String(v), errorShape);
    obs.info('s2.voteAgain', 'second vote on the same request → (false = 404)', again);

    const resolved = await sub.waitFor(
      (ev) => ev.type === 'permission_resolved' && dataOf(ev).requestId === requestId,
      FRAME_MS,
      'permission_resolved',
    );
    const outcome = dataOf(resolved).outcome;
    obs.require(
      's2.resolved',
      'permission_resolved carries the vote',
      outcome,
      JSON.stringify(outcome) === JSON.stringify({ outcome: 'selected', optionId: allow?.optionId }),
    );

    const res = await running;
    obs.require('s2.stop', 'prompt → stopReason', res.stopReason, res.stopReason === 'end_turn');
    const done = await sub
      .waitFor(
        (ev) => updateKind(ev) === 'tool_call_update' && updateOf(ev)?.status === 'completed',
        FRAME_MS,
        'tool_call_update completed',
      )
      .catch(() => undefined);
    obs.require('s2.toolDone', 'tool_call_update status completed', done ? 'yes' : 'no', done !== undefined);
    const ran = existsSync(join(ctx.workspace, file));
    obs.require('s2.ran', 'the tool ran (file created in the workspace)', ran, ran);
    const order = [req.id ?? 0, resolved.id ?? 0, done?.id ?? 0];
    const inOrder = order[0] < order[1] && order[1] < order[2];
    obs.require(
      's2.order',
      'frame order: permission_request < permission_resolved < tool completed',
      inOrder ? 'in order' : `ids ${order.join(', ')}`,
      inOrder,
    );
    obs.note(
      `permission_request id ${order[0]}, permission_resolved id ${order[1]}, tool_call_update completed id ${order[2]}`,
    );
    await sub.settle(500, 3000);
    recordSequences(obs, 'permission turn', sub.frames);
    await sub.close();
  },
};

// ─── 3 ────────────────────────────────────────────────────────────────────────────────────────────
const s3: Scenario = {
  id: 3,
  title: 'cancel during a slow reply → stopReason cancelled',
  timeoutMs: 90_000,
  async run(ctx) {
    const { obs, fake } = ctx;
    const d = await ctx.startDaemon();
    const c = await clientFor(ctx, d);
    const s = await DaemonSessionClient.createOrAttach(c, {});
    const sub = subscribe(ctx, 'A', s, { lastEventId: 0 });
    const running = prompt(s, 'SLOW please');
    running.catch(() => undefined);
    await sub.waitFor((ev) => isAgentChunk(ev) && chunkText(ev).includes('slow'), FRAME_MS, 'first slow chunk');
    obs.require('s3.streaming', 'slow reply is streaming before the cancel', 'yes', true);
    const t0 = Date.now();
    const cancelled = await s.cancel().then(() => 'ok', errorShape);
    obs.require('s3.cancel', 'POST /session/:id/cancel', cancelled, cancelled === 'ok');
    const res = await within(running, 'prompt after cancel', 20_000);
    const ms = Date.now() - t0;
    obs.require('s3.stop', 'prompt → stopReason', res.stopReason, res.stopReason === 'cancelled');
    // Timing is a note, not a compared fact: on a loaded CI machine it would flap.
    obs.note(`cancel → prompt returned in ${ms} ms`);
    await sub.settle(700, 4000);
    const slowChunks = sub.frames.filter((ev) => isAgentChunk(ev) && /^(slow |\.)$/.test(chunkText(ev))).length;
    obs.info('s3.partial', 'slow reply cut short (fewer than 20 chunks)', slowChunks < 20);
    obs.note(`${slowChunks} of 20 slow chunks reached the client`);
    const aborted = fake.entries().some((e) => e.event === 'client_aborted_stream');
    obs.info('s3.modelAbort', 'the agent aborted its model stream', aborted);
    obs.info('s3.cancelHttp', 'POST /session/:id/cancel status', statuses(obs, 'POST /session/:id/cancel'));
    recordSequences(obs, 'cancelled turn', sub.frames);
    await sub.close();
  },
};

// ─── 4 ────────────────────────────────────────────────────────────────────────────────────────────
const s4: Scenario = {
  id: 4,
  title: 'two clients on one single-scope session see every frame; a third reconnects with Last-Event-ID',
  timeoutMs: 120_000,
  async run(ctx) {
    const { obs } = ctx;
    const d = await ctx.startDaemon();
    const cA = await clientFor(ctx, d);
    const cB = await clientFor(ctx, d);
    const cC = await clientFor(ctx, d);
    const a = await DaemonSessionClient.createOrAttach(cA, { sessionScope: 'single' });
    const b = await DaemonSessionClient.createOrAttach(cB, { sessionScope: 'single' });
    obs.require(
      's4.attach',
      'A: attached=false, B: attached=true, same session',
      `${a.attached},${b.attached},${a.sessionId === b.sessionId ? 'same' : 'different'}`,
      !a.attached && b.attached && a.sessionId === b.sessionId,
    );
    const subA = subscribe(ctx, 'A', a, { lastEventId: 0 });
    const subB = subscribe(ctx, 'B', b, { lastEventId: 0 });
    const subC = subscribeRaw(ctx, 'C', cC, a.sessionId, 0);

    const r1 = await prompt(a, 'ping one');
    await Promise.all([subA, subB, subC].map((x) => x.waitFor(isPong, FRAME_MS, 'pong of turn 1')));
    await subA.settle(500, 3000);
    await until(() => subC.maxId() >= subA.maxId(), 'C caught up with A', slowly(5000));
    const n = subC.maxId();
    const cClosed = await subC.close();
    obs.note(`C disconnected (${cClosed}) after id ${n}`);

    const firstOfTurn2 = subA.frames.length;
    const r2 = await prompt(b, 'ping two');
    obs.require(
      's4.stop',
      'turn 1 (by A) and turn 2 (by B) → stopReason',
      `${r1.stopReason},${r2.stopReason}`,
      r1.stopReason === 'end_turn' && r2.stopReason === 'end_turn',
    );
    await subA.waitFor((ev) => isPong(ev) && subA.frames.indexOf(ev) >= firstOfTurn2, FRAME_MS, 'pong of turn 2');
    await subA.settle(700, 4000);
    const maxA = subA.maxId();
    await until(() => subB.maxId() >= maxA, 'B caught up with A', slowly(5000)).catch(() => undefined);

    const upTo = (c: FrameCollector, lo: number): string[] =>
      c.frames.filter((f) => f.id !== undefined && f.id > lo && f.id <= maxA).map((f) => `${f.id}:${f.type}`);
    const same = JSON.stringify(upTo(subA, 0)) === JSON.stringify(upTo(subB, 0));
    obs.require('s4.fanout', 'A and B receive the same frames (ids and types)', same ? 'same' : 'different', same);
    obs.note(`A and B each got ${upTo(subA, 0).length} id-bearing frames over both turns`);

    const subC2 = subscribeRaw(ctx, 'C2', cC, a.sessionId, n);
    await until(() => subC2.maxId() >= maxA, 'C2 replayed up to A', slowly(10_000)).catch(() => undefined);
    await subC2.settle(500, 3000);
    const want = upTo(subA, n);
    const got = upTo(subC2, n);
    const below = subC2.frames.filter((f) => f.id !== undefined && f.id <= n).length;
    const ids = subC2.frames.filter((f) => f.id !== undefined).map((f) => f.id ?? 0);
    const dupes = ids.length - new Set(ids).size;
    const exact = JSON.stringify(want) === JSON.stringify(got) && below === 0 && dupes === 0;
    obs.require(
      's4.replay',
      'reconnect with Last-Event-ID gets exactly the missed frames, in order',
      exact ? 'exactly' : `want ${want.length}, got ${got.length}, ${below} old, ${dupes} dupes`,
      exact,
    );
    obs.note(`C missed ${want.length} frames (ids ${n + 1}–${maxA}) and got them back on reconnect`);
    obs.info('s4.replayFirst', 'first replayed id = Last-Event-ID + 1', ids[0] === n + 1);
    obs.info(
      's4.replayIdless',
      'id-less frames on reconnect',
      [...new Set(subC2.frames.filter((f) => f.id === undefined).map((f) => f.type))].join(',') || 'none',
    );
    recordSequences(obs, 'A, both turns', subA.frames);
    obs.sequences['C after reconnect (all frames)'] = fullSequence(subC2.frames);
    await Promise.all([subA.close(), subB.close(), subC2.close()]);
  },
};

// ─── 5 ────────────────────────────────────────────────────────────────────────────────────────────
const s5: Scenario = {
  id: 5,
  title: 'restart the daemon: load replays history over SSE, resume does not, the agent keeps the conversation',
  timeoutMs: 180_000,
  async run(ctx) {
    const { obs, fake } = ctx;
    const d = await ctx.startDaemon();
    const c1 = await clientFor(ctx, d);
    const s = await DaemonSessionClient.createOrAttach(c1, {});
    const id = s.sessionId;
    const sub = subscribe(ctx, 'turn1', s, { lastEventId: 0 });
    const mark1 = fake.entries().length;
    const r1 = await prompt(s, 'remember: the code word is ZEBRA');
    obs.require('s5.turn1', 'turn 1 → stopReason', r1.stopReason, r1.stopReason === 'end_turn');
    await sub.waitFor(isPong, FRAME_MS, 'pong of turn 1').catch(() => undefined);
    await sub.settle(800, 5000);
    await sub.close();
    obs.info('s5.turn1Roles', 'model request of turn 1 (roles)', roleCounts(mainTurnAfter(fake, mark1)));

    // Restart #1 → load.
    const pid1 = d.pid;
    await d.restart();
    obs.require('s5.restart', 'daemon restarted (new pid)', d.pid !== pid1, d.pid !== pid1);
    const c2 = await clientFor(ctx, d);
    const listed = await c2
      .listWorkspaceSessions(ctx.workspace)
      .then((l) => (l.some((x) => x.sessionId === id) ? 'listed' : 'not listed'), errorShape);
    obs.info('s5.listAfterRestart', 'GET /workspace/:id/sessions after restart (before restore)', listed);
    const loaded = await DaemonSessionClient.load(c2, id).then(
      (x) => x,
      (err: unknown) => errorShape(err),
    );
    if (typeof loaded === 'string') {
      obs.require('s5.load', 'POST /session/:id/load after restart', loaded, false);
      return;
    }
    obs.require(
      's5.load',
      'POST /session/:id/load after restart → attached',
      loaded.attached,
      loaded.attached === false,
    );
    // From where the load answer says the session stands, as the published client seeds its cursor (0 when a
    // daemon's answer names no lastEventId): a durable log keeps the earlier frames under their old ids.
    const subL = subscribe(ctx, 'load', loaded, { lastEventId: loaded.lastEventId ?? 0 });
    await subL.settle(1000, 8000);
    const body = loaded.replaySnapshot?.compactedReplay ?? [];
    const hasHistory = (frames: DaemonEvent[]): boolean =>
      frames.some((ev) => updateKind(ev) === 'user_message_chunk' && chunkText(ev).includes('ZEBRA')) &&
      frames.some(isPong);
    const viaSse = hasHistory(subL.frames);
    const viaBody = hasHistory(body);
    const via = [viaSse ? 'SSE' : '', viaBody ? 'load response body' : ''].filter(Boolean).join(' + ') || 'nowhere';
    // v1 replays the history as SSE frames; qwen 0.24 and acpd's durable log answer it in the load
    // response (compactedReplay), which the SDK hydrates into replaySnapshot.
    obs.require(
      's5.loadHistory',
      'load → the history (user + agent messages) reaches the client via',
      via,
      viaSse || viaBody,
    );
    obs.info(
      's5.loadIdless',
      'id-less frames after load',
      [...new Set(subL.frames.filter((f) => f.id === undefined).map((f) => f.type))].join(',') || 'none',
    );
    if (body.length > 0) obs.sequences['load response body (compactedReplay)'] = fullSequence(body);
    recordSequences(obs, 'after load', subL.frames);
    const mark2 = fake.entries().length;
    const r2 = await prompt(loaded, 'what did I ask before?');
    const req2 = await until(() => mainTurnAfter(fake, mark2), 'model request after load', slowly(5000)).catch(
      () => undefined,
    );
    obs.require(
      's5.loadSaw',
      'prompt after load: the model request carries turn 1',
      `${r2.stopReason}; ${roleCounts(req2)}`,
      r2.stopReason === 'end_turn' && carriesHistory(req2),
    );
    await subL.close();

    // Restart #2 → resume.
    await d.restart();
    const c3 = await clientFor(ctx, d);
    const resumed = await DaemonSessionClient.resume(c3, id).then(
      (x) => x,
      (err: unknown) => errorShape(err),
    );
    if (typeof resumed === 'string') {
      obs.require('s5.resume', 'POST /session/:id/resume after restart', resumed, false);
      return;
    }
    obs.require(
      's5.resume',
      'POST /session/:id/resume after restart → attached',
      resumed.attached,
      resumed.attached === false,
    );
    const subR = subscribe(ctx, 'resume', resumed, { lastEventId: resumed.lastEventId ?? 0 });
    await subR.settle(1000, 5000);
    const history = subR.frames.filter(
      (ev) => !isBridgeEcho(ev) && ['user_message_chunk', 'agent_message_chunk'].includes(updateKind(ev) ?? ''),
    );
    obs.require(
      's5.resumeQuiet',
      'resume → no history frames',
      history.length === 0 ? 'none' : `${history.length} message frames`,
      history.length === 0,
    );
    recordSequences(obs, 'after resume', subR.frames);
    const mark3 = fake.entries().length;
    const r3 = await prompt(resumed, 'and what was the code word?');
    const req3 = await until(() => mainTurnAfter(fake, mark3), 'model request after resume', slowly(5000)).catch(
      () => undefined,
    );
    obs.require(
      's5.resumeSaw',
      'prompt after resume: the model request carries turns 1–2',
      `${r3.stopReason}; ${roleCounts(req3)}`,
      r3.stopReason === 'end_turn' && carriesHistory(req3),
    );
    await subR.close();
  },
};

// ─── 6 ────────────────────────────────────────────────────────────────────────────────────────────
const s6: Scenario = {
  id: 6,
  title: 'kill the agent child → session_died → resume brings the session back',
  timeoutMs: 120_000,
  async run(ctx) {
    const { obs, fake } = ctx;
    const d = await ctx.startDaemon();
    const c = await clientFor(ctx, d);
    const s = await DaemonSessionClient.createOrAttach(c, {});
    const sub = subscribe(ctx, 'A', s, { lastEventId: 0 });
    const r1 = await prompt(s, 'ping');
    obs.require('s6.turn1', 'turn 1 → stopReason', r1.stopReason, r1.stopReason === 'end_turn');
    await sub.settle(800, 5000);

    const agents = d.agentPids();
    obs.require('s6.agent', 'the daemon has an agent child (--acp)', agents.length, agents.length >= 1);
    const victims = agents.flatMap((p) => [p, ...livingDescendants(p)]);
    for (const p of victims) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await until(() => victims.every((p) => !isAlive(p)), 'agent gone', slowly(5000));
    const died = await sub.waitFor((ev) => ev.type === 'session_died', FRAME_MS, 'session_died').catch(() => undefined);
    const dd = died ? dataOf(died) : {};
    obs.require('s6.died', 'session_died frame', died ? String(dd.reason) : 'none', died !== undefined);
    obs.info(
      's6.diedData',
      'session_died data',
      died ? { reason: dd.reason, exitCode: dd.exitCode, signalCode: dd.signalCode } : undefined,
    );
    const end = await within(sub.ended, 'stream end', 10_000).catch(() => 'still open');
    obs.info('s6.streamEnds', 'SSE stream ends after session_died', end);
    recordSequences(obs, 'turn 1 + crash', sub.frames);
    await sub.close();

    const resumed = await DaemonSessionClient.resume(c, s.sessionId).then(
      (x) => x,
      (err: unknown) => errorShape(err),
    );
    if (typeof resumed === 'string') {
      obs.require('s6.resume', 'POST /session/:id/resume after the crash', resumed, false);
      return;
    }
    obs.require(
      's6.resume',
      'POST /session/:id/resume after the crash → attached',
      resumed.attached,
      resumed.attached === false,
    );
    const subR = subscribe(ctx, 'R', resumed, { lastEventId: resumed.lastEventId ?? 0 });
    const mark = fake.entries().length;
    const r2 = await prompt(resumed, 'ping again');
    obs.require('s6.turn2', 'prompt on the resumed session → stopReason', r2.stopReason, r2.stopReason === 'end_turn');
    const req = await until(() => mainTurnAfter(fake, mark), 'model request after resume', slowly(5000)).catch(
      () => undefined,
    );
    obs.info('s6.history', 'the model request after resume carries turn 1', carriesHistory(req));
    const newAgents = d.agentPids();
    obs.info(
      's6.newAgent',
      'a new agent child serves the resumed session',
      newAgents.length > 0 && newAgents.every((p) => !agents.includes(p)),
    );
    await subR.settle(500, 3000);
    recordSequences(obs, 'after resume', subR.frames);
    await subR.close();
  },
};

// ─── 7 ────────────────────────────────────────────────────────────────────────────────────────────

/** The same commits in every column: fixed author, committer and dates give the same hashes. */
const GIT_ENV = {
  GIT_AUTHOR_NAME: 'Peer',
  GIT_AUTHOR_EMAIL: 'peer@example.com',
  GIT_COMMITTER_NAME: 'Peer',
  GIT_COMMITTER_EMAIL: 'peer@example.com',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_CONFIG_NOSYSTEM: '1',
};

/** A repository of three commits, one file changed since, one untracked, and three its .gitignore hides, in `ws`. */
function makeRepository(ws: string): void {
  let n = 0;
  const git = (...args: string[]): void => {
    const date = `2026-01-0${Math.min(n, 9)}T12:00:00Z`;
    execFileSync('git', args, {
      cwd: ws,
      stdio: 'ignore',
      env: { ...process.env, ...GIT_ENV, GIT_AUTHOR_DATE: date, GIT_COMMITTER_DATE: date },
    });
  };
  const write = (rel: string, body: string | Buffer): void => {
    mkdirSync(join(ws, rel, '..'), { recursive: true });
    writeFileSync(join(ws, rel), body);
  };
  const lines = (from: number, to: number): string =>
    Array.from({ length: to - from + 1 }, (_, i) => `line ${from + i}\n`).join('');
  git('init', '-q', '-b', 'main');
  write('README.md', '# peers\n');
  write('.gitignore', 'build/\n*.log\n');
  write('src/lib.ts', lines(1, 30));
  write('data.bin', Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 37) % 256)));
  n = 1;
  git('add', '.');
  git('commit', '-qm', 'first: readme, lib, data');
  write('src/util.ts', 'export const u = 1;\n');
  n = 2;
  git('add', '.');
  git('commit', '-qm', 'second: util');
  write('README.md', '# peers\n\nside by side\n');
  n = 3;
  git('add', '.');
  git('commit', '-qm', 'third: readme');
  // A branch, a tag, and a checkout there and back, for the branch listing (its `recent` reads the reflog).
  git('branch', 'topic', 'HEAD~1');
  git('tag', 'v0.1', 'HEAD~2');
  git('checkout', '-q', 'topic');
  git('checkout', '-q', 'main');
  // The dirty file and the untracked one.
  write('src/lib.ts', lines(1, 10) + 'line 11 changed\n' + lines(12, 30) + 'line 31\n');
  write('notes.txt', 'untracked\n');
  write('build/out.ts', 'export {};\n');
  write('debug.log', 'ignored\n');
  write('src/trace.log', 'ignored too\n');
}

const TIME_KEY = /^(mtime|ctime|atime|birthtime|modified|computedAt)(Ms)?$/i;

/** A text cursor (base64url JSON naming offset, size, device and inode) with its device and inode masked. */
function maskCursor(cursor: string): string {
  try {
    const c = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as Record<string, unknown>;
    return `cursor ${JSON.stringify({ ...c, ...('dev' in c ? { dev: '<dev>' } : {}), ...('ino' in c ? { ino: '<ino>' } : {}) })}`;
  } catch {
    return cursor;
  }
}

/**
 * An answer as the columns can share it, keys sorted: the workspace's absolute path as `<ws>` (each column has
 * its own tmp dir); file and status times as `<time>` and durations as `<ms>` (taken at different moments); a
 * text cursor decoded, its device and inode masked (each column's files are other inodes); glob matches sorted
 * (both daemons list them in their walk's order, which no client may rely on).
 */
function normalize(v: unknown, ws: string[], key = ''): unknown {
  if (typeof v === 'string') {
    if (key === 'nextCursor') return maskCursor(v);
    return ws.reduce((s, w) => s.split(w).join('<ws>'), v);
  }
  if (typeof v === 'number' && TIME_KEY.test(key)) return '<time>';
  if (typeof v === 'number' && key === 'durationMs') return '<ms>';
  if (Array.isArray(v)) {
    const items = v.map((x) => normalize(x, ws));
    return key === 'matches' ? items.map(String).sort() : items;
  }
  if (typeof v === 'object' && v !== null) {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) out[k] = normalize((v as Record<string, unknown>)[k], ws, k);
    return out;
  }
  return v;
}

/** `status errorKind` of a refused call (qwen's envelope names the kind in `errorKind`; over `/acp`, in `data`). */
function refusal(err: unknown): string {
  if (!(err instanceof DaemonHttpError)) return errorShape(err);
  const body = (err.body ?? {}) as Record<string, unknown>;
  const inner = (typeof body.data === 'object' && body.data !== null ? body.data : {}) as Record<string, unknown>;
  const kind = body.errorKind ?? inner.errorKind ?? body.code ?? inner.code;
  return `${err.status}${typeof kind === 'string' ? ` ${kind}` : ''}`;
}

const s7: Scenario = {
  id: 7,
  title:
    'workspace read routes: read (paged), bytes, stat, list, glob, git status, diff, diff of a file, log, log search, commit detail, branches',
  // Over `/acp` the client's initialize waits for the real agent to start: on a loaded machine, seconds.
  timeoutMs: 120_000,
  async run(ctx) {
    const { obs } = ctx;
    makeRepository(ctx.workspace);
    const ws = [...new Set([realpathSync(ctx.workspace), ctx.workspace])];
    const d = await ctx.startDaemon();
    const c = await clientFor(ctx, d);
    /** One call, its normalized answer (or error) as the compared value. */
    const fact = async (key: string, behaviour: string, call: () => Promise<unknown>): Promise<unknown> => {
      try {
        const out = await call();
        obs.info(key, behaviour, normalize(out, ws));
        return out;
      } catch (err) {
        obs.info(key, behaviour, `error ${refusal(err)}`);
        return undefined;
      }
    };
    const caps = await c.capabilities();
    obs.info(
      's7.features',
      'GET /capabilities: workspace file and git features',
      caps.features.filter((f) => /^workspace_(file|git)/.test(f)).join(',') || 'none',
    );

    const whole = await fact('s7.read', 'GET /file src/lib.ts', () => c.readWorkspaceFile('src/lib.ts'));
    const page = (await fact('s7.readPage', 'GET /file line=5 limit=10', () =>
      c.readWorkspaceFile('src/lib.ts', { line: 5, limit: 10 }),
    )) as { nextCursor?: unknown } | undefined;
    const cursor = typeof page?.nextCursor === 'string' ? page.nextCursor : undefined;
    obs.info('s7.cursor', 'the page names a cursor for the next one', cursor !== undefined);
    if (cursor)
      await fact('s7.readNext', 'GET /file cursor=<the page’s> limit=10', () =>
        c.readWorkspaceFile('src/lib.ts', { cursor, limit: 10 }),
      );
    await fact('s7.readCap', 'GET /file maxBytes=40', () => c.readWorkspaceFile('src/lib.ts', { maxBytes: 40 }));
    await fact('s7.bytes', 'GET /file/bytes data.bin offset=8 maxBytes=16', () =>
      c.readWorkspaceFileBytes('data.bin', { offset: 8, maxBytes: 16 }),
    );
    await fact('s7.statFile', 'GET /stat src/lib.ts', () => c.fileStat('src/lib.ts'));
    await fact('s7.statDir', 'GET /stat src', () => c.fileStat('src'));
    await fact('s7.list', 'GET /list .', () => c.dirList('.'));
    await fact('s7.glob', 'GET /glob **/*.ts', () => c.glob('**/*.ts'));
    await fact('s7.globIgnored', 'GET /glob **/*.log (every hit .gitignored)', () => c.glob('**/*.log'));
    await fact('s7.readIgnored', 'GET /file debug.log (matched by a file rule)', () =>
      c.readWorkspaceFile('debug.log'),
    );
    await fact('s7.readIgnoredDir', 'GET /file build/out.ts (under a directory rule)', () =>
      c.readWorkspaceFile('build/out.ts'),
    );
    await fact('s7.outside', 'GET /file ../outside (refused)', () => c.readWorkspaceFile('../outside'));
    await fact('s7.missing', 'GET /file nope.txt (missing)', () => c.readWorkspaceFile('nope.txt'));
    await fact('s7.gitStatus', 'GET /workspace/git?wait=1', () => c.workspaceGit({ wait: true }));
    await fact('s7.gitDiff', 'GET /workspace/git/diff', () => c.workspaceGitDiff());
    await fact('s7.gitDiffFile', 'GET /workspace/git/diff/file src/lib.ts', () => c.workspaceGitDiffFile('src/lib.ts'));
    await fact('s7.gitDiffUntracked', 'GET /workspace/git/diff/file notes.txt', () =>
      c.workspaceGitDiffFile('notes.txt'),
    );
    await fact('s7.gitLog', 'GET /workspace/git/log limit=2', () => c.workspaceGitLog(2, 0));
    await fact('s7.gitLog2', 'GET /workspace/git/log limit=2 skip=2', () => c.workspaceGitLog(2, 2));
    await fact('s7.gitSearch', 'GET /workspace/git/log search=README (messages, case-insensitive)', () =>
      c.workspaceGitLog(10, 0, undefined, { search: 'README' }),
    );
    await fact('s7.gitSearchAuthor', 'GET /workspace/git/log search=peer limit=2 skip=1 (the author)', () =>
      c.workspaceGitLog(2, 1, undefined, { search: 'peer' }),
    );
    const log = (await c.workspaceGitLog(3, 0).catch(() => undefined))?.entries ?? [];
    const [third, second, first] = log.map((e) => e.sha);
    if (second)
      await fact('s7.gitSearchSha', 'GET /workspace/git/log search=<6 hex of the second commit>', () =>
        c.workspaceGitLog(10, 0, undefined, { search: second.slice(0, 6) }),
      );
    if (third)
      await fact('s7.gitCommit', 'GET /workspace/git/log/commit sha=<HEAD, 7 hex>', () =>
        c.workspaceGitCommitDetail(third.slice(0, 7)),
      );
    if (first)
      await fact('s7.gitCommitRoot', 'GET /workspace/git/log/commit sha=<the root commit>', () =>
        c.workspaceGitCommitDetail(first),
      );
    await fact('s7.gitCommitUnknown', 'GET /workspace/git/log/commit sha=<40 zeros>', () =>
      c.workspaceGitCommitDetail('0'.repeat(40)),
    );
    await fact('s7.gitCommitBad', 'GET /workspace/git/log/commit sha=HEAD (not hex: refused)', () =>
      c.workspaceGitCommitDetail('HEAD'),
    );
    await fact('s7.gitBranches', 'GET /workspace/git/branches', () => c.workspaceGitBranches());
    const ok = whole !== undefined;
    obs.require('s7.reads', 'the client reads a workspace file', ok ? 'yes' : 'no', ok);
    obs.note(`HTTP: ${distinctHttp(obs.http).join('; ')}`);
  },
};

export const scenarios: Scenario[] = [s1, s2, s3, s4, s5, s6, s7];
