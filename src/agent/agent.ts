// The ACP request and notification handlers of the embedded agent, over an instance that owns the
// live sessions of one connection.
import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { PROTOCOL_VERSION, RequestError, agent } from '@agentclientprotocol/sdk';
import type {
  AgentApp,
  AgentContext,
  ContentBlock,
  InitializeResponse,
  ListSessionsResponse,
  PromptRequest,
  PromptResponse,
  SessionUpdate,
  StopReason,
} from '@agentclientprotocol/sdk';
import {
  AGENT_NAME,
  AGENT_TITLE,
  AGENT_VERSION,
  DEFAULT_MODE,
  DEFAULT_MODEL,
  isKnownMode,
  isKnownModel,
  modeState,
  modelState,
} from './catalog.js';
import type { LoadSessionResult, NewSessionResult, ResumeSessionResult, SetSessionModelRequest } from './catalog.js';
import { availableCommands, parseCommand } from './commands.js';
import type { Logger } from './logger.js';
import { CorruptSessionError } from './store.js';
import type { SessionRecord, SessionStore } from './store.js';
import { countTurns, runCommand } from './turn.js';
import type { TurnIO } from './turn.js';

interface LiveSession {
  record: SessionRecord;
  /**
   * Whether the session has a file. A new session gets one with its first turn: until then it lives only
   * in this process, so the warm sessions a daemon creates ahead of demand leave nothing behind.
   */
  stored: boolean;
  /** Tail of the prompt queue: one turn at a time per session. */
  queue: Promise<unknown>;
  /** Cancels the turn that is running now, if any. */
  active: AbortController | undefined;
}

interface AgentOptions {
  store: SessionStore;
  log: Logger;
}

function notFound(sessionId: string): RequestError {
  return RequestError.resourceNotFound(`session:${sessionId}`);
}

function isRecordObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseSetModelParams(params: unknown): SetSessionModelRequest {
  if (!isRecordObject(params)) throw RequestError.invalidParams(undefined, 'params must be an object');
  const { sessionId, modelId } = params;
  if (typeof sessionId !== 'string' || sessionId === '') {
    throw RequestError.invalidParams({ field: 'sessionId' }, '`sessionId` must be a non-empty string');
  }
  if (typeof modelId !== 'string' || modelId === '') {
    throw RequestError.invalidParams({ field: 'modelId' }, '`modelId` must be a non-empty string');
  }
  return { sessionId, modelId };
}

function promptText(prompt: readonly ContentBlock[]): string {
  return prompt.flatMap((block) => (block.type === 'text' ? [block.text] : [])).join('\n');
}

/** Appends to a history, merging a text chunk of the agent into the previous one when both are text. */
function appendToHistory(history: SessionUpdate[], update: SessionUpdate): void {
  const last = history[history.length - 1];
  if (
    last !== undefined &&
    last.sessionUpdate === 'agent_message_chunk' &&
    last.content.type === 'text' &&
    update.sessionUpdate === 'agent_message_chunk' &&
    update.content.type === 'text'
  ) {
    // A new object: the previous one may still be waiting in the connection's write queue.
    history[history.length - 1] = {
      sessionUpdate: 'agent_message_chunk',
      content: { type: 'text', text: last.content.text + update.content.text },
    };
    return;
  }
  history.push(update);
}

export class AcpdAgent {
  readonly #store: SessionStore;
  readonly #log: Logger;
  readonly #sessions = new Map<string, LiveSession>();
  // Set by cancelAll(): the agent is stopping, so a turn that starts from now on is cancelled at once.
  #stopping = false;

  constructor(options: AgentOptions) {
    this.#store = options.store;
    this.#log = options.log;
  }

  /** Cancels every running turn, and every turn still waiting in a queue (used on shutdown). */
  cancelAll(): void {
    this.#stopping = true;
    for (const session of this.#sessions.values()) session.active?.abort();
  }

  /**
   * Saves, as it stands, every session whose turn has not finished yet: its history already holds the
   * prompt and what was streamed so far. For a stop whose deadline passed while a turn was stuck (on a
   * peer that stopped reading, say); a turn that does finish saves itself.
   */
  async saveUnfinished(): Promise<void> {
    const unfinished = [...this.#sessions.values()].filter((session) => session.active !== undefined);
    await Promise.all(unfinished.map((session) => this.#persist(session).catch(() => undefined)));
  }

  /** Settles when every queued or running turn has finished and persisted. */
  async drain(): Promise<void> {
    await Promise.all([...this.#sessions.values()].map((session) => session.queue));
  }

  /** Builds the ACP app; connect it to a stream to serve a client. */
  app(): AgentApp {
    return agent({ name: AGENT_NAME })
      .onRequest('initialize', ({ params }): InitializeResponse => ({
        protocolVersion: params.protocolVersion <= PROTOCOL_VERSION ? params.protocolVersion : PROTOCOL_VERSION,
        agentCapabilities: {
          loadSession: true,
          sessionCapabilities: { resume: {}, list: {}, close: {} },
        },
        agentInfo: { name: AGENT_NAME, title: AGENT_TITLE, version: AGENT_VERSION },
        authMethods: [],
      }))
      .onRequest('session/new', ({ params, client }) => this.#newSession(resolve(params.cwd), client))
      .onRequest('session/load', ({ params, client }) =>
        this.#loadSession(params.sessionId, resolve(params.cwd), client),
      )
      .onRequest('session/resume', ({ params, client }) =>
        this.#resumeSession(params.sessionId, resolve(params.cwd), client),
      )
      .onRequest('session/list', ({ params }) => this.#listSessions(params.cwd ?? undefined))
      .onRequest('session/close', ({ params }) => this.#closeSession(params.sessionId))
      .onRequest('session/set_mode', ({ params }) => this.#setMode(params.sessionId, params.modeId))
      .onRequest('session/set_model', parseSetModelParams, ({ params }) =>
        this.#setModel(params.sessionId, params.modelId),
      )
      .onRequest('session/prompt', ({ params, client, signal }) => this.#prompt(params, client, signal))
      .onNotification('session/cancel', ({ params }) => {
        this.#sessions.get(params.sessionId)?.active?.abort();
      })
      .onRequest('*', ({ method }) => {
        throw RequestError.methodNotFound(method);
      })
      .onNotification('*', ({ method }) => {
        this.#log.debug('ignoring notification', { method });
      });
  }

  /** Writes the session's file (creating it on the first call) and marks the session as stored. */
  async #persist(session: LiveSession): Promise<void> {
    const { record } = session;
    record.updatedAt = new Date().toISOString();
    session.stored = true;
    try {
      await this.#store.write(record);
    } catch (error) {
      this.#log.error('could not persist session', { sessionId: record.sessionId, error: String(error) });
      throw RequestError.internalError({ sessionId: record.sessionId }, 'could not persist the session');
    }
  }

  /**
   * Saves a setting of a session that already has a file. A session never prompted keeps the change in
   * memory, and its first turn writes it with the rest.
   */
  async #persistIfStored(session: LiveSession): Promise<void> {
    if (session.stored) await this.#persist(session);
  }

  /** The live session, or the persisted one brought to life; resource-not-found otherwise. */
  async #open(sessionId: string): Promise<LiveSession> {
    const live = this.#sessions.get(sessionId);
    if (live !== undefined) return live;
    let record: SessionRecord | undefined;
    try {
      record = await this.#store.read(sessionId);
    } catch (error) {
      if (error instanceof CorruptSessionError) {
        this.#log.error('corrupt session file', { sessionId, error: error.message });
        throw RequestError.internalError({ sessionId }, error.message);
      }
      throw error;
    }
    if (record === undefined) throw notFound(sessionId);
    // Another request may have opened it while this one was reading the disk.
    const raced = this.#sessions.get(sessionId);
    if (raced !== undefined) return raced;
    const session: LiveSession = { record, stored: true, queue: Promise.resolve(), active: undefined };
    this.#sessions.set(sessionId, session);
    return session;
  }

  async #announceCommands(sessionId: string, client: AgentContext): Promise<void> {
    await client.notify('session/update', {
      sessionId,
      update: { sessionUpdate: 'available_commands_update', availableCommands: availableCommands() },
    });
  }

  async #newSession(cwd: string, client: AgentContext): Promise<NewSessionResult> {
    const now = new Date().toISOString();
    const record: SessionRecord = {
      sessionId: randomUUID(),
      cwd,
      createdAt: now,
      updatedAt: now,
      currentModelId: DEFAULT_MODEL,
      currentModeId: DEFAULT_MODE,
      history: [],
    };
    // Not written yet: the first turn creates the file (see docs/agent.md, Persistence).
    this.#sessions.set(record.sessionId, { record, stored: false, queue: Promise.resolve(), active: undefined });
    this.#log.info('session created', { sessionId: record.sessionId, cwd });
    await this.#announceCommands(record.sessionId, client);
    return {
      sessionId: record.sessionId,
      models: modelState(record.currentModelId),
      modes: modeState(record.currentModeId),
    };
  }

  async #loadSession(sessionId: string, cwd: string, client: AgentContext): Promise<LoadSessionResult> {
    const session = await this.#open(sessionId);
    const { record } = session;
    if (record.cwd !== cwd) {
      record.cwd = cwd;
      await this.#persistIfStored(session);
    }
    // The whole replay is written before the response: a client sees the history, then the answer.
    for (const update of [...record.history]) {
      await client.notify('session/update', { sessionId, update });
    }
    await this.#announceCommands(sessionId, client);
    this.#log.info('session loaded', { sessionId, replayed: record.history.length });
    return { models: modelState(record.currentModelId), modes: modeState(record.currentModeId) };
  }

  async #resumeSession(sessionId: string, cwd: string, client: AgentContext): Promise<ResumeSessionResult> {
    const session = await this.#open(sessionId);
    const { record } = session;
    if (record.cwd !== cwd) {
      record.cwd = cwd;
      await this.#persistIfStored(session);
    }
    await this.#announceCommands(sessionId, client);
    this.#log.info('session resumed', { sessionId });
    return { models: modelState(record.currentModelId), modes: modeState(record.currentModeId) };
  }

  async #listSessions(cwd: string | undefined): Promise<ListSessionsResponse> {
    const records = await this.#store.list();
    return {
      sessions: records
        .filter((record) => cwd === undefined || record.cwd === cwd)
        .map((record) => {
          const first = record.history.find((update) => update.sessionUpdate === 'user_message_chunk');
          const title = first !== undefined && first.content.type === 'text' ? first.content.text.slice(0, 80) : null;
          return { sessionId: record.sessionId, cwd: record.cwd, title, updatedAt: record.updatedAt };
        }),
    };
  }

  async #closeSession(sessionId: string): Promise<Record<string, never>> {
    const live = this.#sessions.get(sessionId);
    if (live === undefined) {
      // Closing a persisted session that is not open here is a no-op; an unknown one is not found.
      await this.#open(sessionId);
    }
    const session = this.#sessions.get(sessionId);
    session?.active?.abort();
    this.#sessions.delete(sessionId);
    return {};
  }

  async #setMode(sessionId: string, modeId: string): Promise<Record<string, never>> {
    const session = await this.#open(sessionId);
    if (!isKnownMode(modeId)) {
      throw RequestError.invalidParams({ modeId }, `unknown mode ${JSON.stringify(modeId)}`);
    }
    session.record.currentModeId = modeId;
    await this.#persistIfStored(session);
    return {};
  }

  async #setModel(sessionId: string, modelId: string): Promise<Record<string, never>> {
    const session = await this.#open(sessionId);
    if (!isKnownModel(modelId)) {
      throw RequestError.invalidParams({ modelId }, `unknown model ${JSON.stringify(modelId)}`);
    }
    session.record.currentModelId = modelId;
    await this.#persistIfStored(session);
    return {};
  }

  async #prompt(params: PromptRequest, client: AgentContext, requestSignal: AbortSignal): Promise<PromptResponse> {
    const session = await this.#open(params.sessionId);
    const turn = session.queue.then(() => this.#runTurn(session, params, client, requestSignal));
    session.queue = turn.catch(() => undefined);
    return { stopReason: await turn };
  }

  async #runTurn(
    session: LiveSession,
    params: PromptRequest,
    client: AgentContext,
    requestSignal: AbortSignal,
  ): Promise<StopReason> {
    const { record } = session;
    const { sessionId } = record;
    // One signal for the turn: session/cancel aborts it directly, and so does a cancelled request
    // ($/cancel_request) or a closed connection.
    const controller = new AbortController();
    const { signal } = controller;
    const forward = (): void => {
      controller.abort();
    };
    if (requestSignal.aborted || this.#stopping) controller.abort();
    else requestSignal.addEventListener('abort', forward, { once: true });
    session.active = controller;
    const turnNumber = countTurns(record.history) + 1;
    const history = [...record.history];
    let toolCalls = 0;

    for (const block of params.prompt) {
      appendToHistory(record.history, { sessionUpdate: 'user_message_chunk', content: block });
    }
    // The prompt is on disk before the answer starts: if this process dies mid-turn (or the acpd node
    // running it does), the session can still be resumed, by this agent or another on the same data.
    await this.#persist(session);

    const io: TurnIO = {
      cwd: record.cwd,
      modelId: record.currentModelId,
      modeId: record.currentModeId,
      history,
      signal,
      emit: (update) => {
        appendToHistory(record.history, update);
        return client.notify('session/update', { sessionId, update });
      },
      readTextFile: async (path, limit) => {
        const response = await client.request(
          'fs/read_text_file',
          { sessionId, path, limit },
          {
            cancellationSignal: signal,
            stopWaitingOnCancel: true,
          },
        );
        return response.content;
      },
      writeTextFile: async (path, content) => {
        await client.request(
          'fs/write_text_file',
          { sessionId, path, content },
          {
            cancellationSignal: signal,
            stopWaitingOnCancel: true,
          },
        );
      },
      requestPermission: async (toolCall, options) => {
        const response = await client.request(
          'session/request_permission',
          { sessionId, toolCall, options },
          {
            cancellationSignal: signal,
            stopWaitingOnCancel: true,
          },
        );
        return response.outcome;
      },
      nextToolCallId: () => `call-${turnNumber}-${++toolCalls}`,
    };

    let stopReason: StopReason;
    try {
      stopReason = await runCommand(parseCommand(promptText(params.prompt)), io);
    } catch (error) {
      // A turn that fails half-way still keeps what it streamed; a cancelled one ends as cancelled.
      if (!signal.aborted) throw error;
      stopReason = 'cancelled';
    } finally {
      requestSignal.removeEventListener('abort', forward);
      if (session.active === controller) session.active = undefined;
      await this.#persist(session);
    }
    this.#log.debug('turn finished', { sessionId, turn: turnNumber, stopReason });
    return stopReason;
  }
}
