// The acpd web console: one page over `acpd/client` (served beside it as ./client/index.js).
//
// The token is asked for only when the daemon answers 401, and kept in this tab's sessionStorage: never in
// the URL, never in localStorage. The open session's id is in the URL's fragment, so a reload opens it
// again and replays its whole event log (Last-Event-ID 0): the page shows the same history.
import { AcpdClient, SessionNotFoundError, UnauthorizedError } from './client/index.js';
import { workspaceViews } from './workspace.js';

const TOKEN_KEY = 'acpd.token';

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const ui = {
  daemon: $('daemon'),
  sessions: $('sessions'),
  title: $('session-title'),
  state: $('session-state'),
  transcript: $('transcript'),
  prompt: /** @type {HTMLTextAreaElement} */ ($('prompt')),
  send: /** @type {HTMLButtonElement} */ ($('send')),
  cancel: /** @type {HTMLButtonElement} */ ($('cancel')),
  close: /** @type {HTMLButtonElement} */ ($('close')),
  notice: $('notice'),
  dialog: /** @type {HTMLDialogElement} */ ($('token-dialog')),
  token: /** @type {HTMLInputElement} */ ($('token')),
  tokenError: $('token-error'),
};

let client = newClient();
/** The open session: its id, what stops its stream, and what its frames built. */
let current;

function newClient() {
  const token = sessionStorage.getItem(TOKEN_KEY) ?? undefined;
  // The page's own directory, so that a proxy's path prefix is kept (/prefix/console/ → /prefix/).
  const baseUrl = new URL('..', location.href).href.replace(/\/$/, '');
  return new AcpdClient({ baseUrl, token });
}

// ---- the token -------------------------------------------------------------------------------------------

let tokenWait;

/** Shows the token dialog (once, however many requests were refused) and resolves when a token is given. */
function askToken(refused) {
  tokenWait ??= new Promise((resolve) => {
    ui.tokenError.hidden = !refused;
    ui.token.value = '';
    ui.dialog.showModal();
    ui.token.focus();
    $('token-form').addEventListener(
      'submit',
      (event) => {
        event.preventDefault();
        sessionStorage.setItem(TOKEN_KEY, ui.token.value.trim());
        ui.token.value = '';
        client = newClient();
        ui.dialog.close();
        tokenWait = undefined;
        resolve();
      },
      { once: true },
    );
  });
  return tokenWait;
}
// The page is useless without a token: Escape does not dismiss the dialog.
ui.dialog.addEventListener('cancel', (event) => event.preventDefault());

/** Runs `fn` with the client; a 401 asks for the token and runs it again. */
async function api(fn) {
  for (;;) {
    try {
      return await fn(client);
    } catch (error) {
      if (!(error instanceof UnauthorizedError)) throw error;
      await askToken(sessionStorage.getItem(TOKEN_KEY) !== null);
    }
  }
}

$('forget-token').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  client = newClient();
  stopStream();
  void start();
});

// ---- notices ---------------------------------------------------------------------------------------------

let noticeTimer;
function notify(text, isError = false) {
  ui.notice.textContent = text;
  ui.notice.classList.toggle('error', isError);
  ui.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (ui.notice.hidden = true), 6000);
}

/** Runs an action of a button or form, telling the user when it fails. */
function action(fn) {
  return (event) => {
    event?.preventDefault();
    fn(event).catch((error) => notify(error instanceof Error ? error.message : String(error), true));
  };
}

// ---- the session list ------------------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(text, onClick, className) {
  const b = el('button', className, text);
  b.type = 'button';
  b.addEventListener('click', action(onClick));
  return b;
}

async function refreshSessions() {
  const page = await api((c) => c.listSessions({ size: 50 }));
  ui.sessions.replaceChildren(
    ...page.sessions.map((s) => {
      const item = el('li', s.sessionId === current?.id ? 'selected' : '');
      item.dataset.sessionId = s.sessionId;
      const name = el('div', 'name', s.displayName ?? 'New session');
      const meta = el('div', 'meta');
      meta.append(
        el('span', s.isLive ? 'dot live' : 'dot', s.isLive ? (s.hasActivePrompt ? 'working' : 'live') : 'stored'),
        el('span', '', new Date(s.updatedAt).toLocaleString()),
      );
      const id = el('code', 'id', s.sessionId);
      item.append(name, meta, id);
      if (s.isLive) {
        item.classList.add('openable');
        item.tabIndex = 0;
        item.addEventListener(
          'click',
          action(() => openSession(s.sessionId)),
        );
      } else {
        const row = el('div', 'row');
        row.append(
          button('Load', () => restore(s.sessionId, 'load')),
          button('Resume', () => restore(s.sessionId, 'resume')),
        );
        item.append(row);
      }
      return item;
    }),
  );
  if (page.sessions.length === 0) ui.sessions.replaceChildren(el('li', 'muted', 'No sessions yet.'));
}

$('refresh').addEventListener('click', action(refreshSessions));

$('new-session').addEventListener(
  'click',
  action(async () => {
    const { sessionId } = await api((c) => c.createSession());
    await openSession(sessionId);
    await refreshSessions();
  }),
);

async function restore(sessionId, how) {
  notify(`${how === 'load' ? 'Loading' : 'Resuming'} ${sessionId}…`);
  await api((c) => (how === 'load' ? c.load(sessionId) : c.resume(sessionId)));
  await openSession(sessionId);
  await refreshSessions();
}

$('restore-form').addEventListener(
  'submit',
  action(async (event) => {
    const id = /** @type {HTMLInputElement} */ ($('restore-id')).value.trim();
    if (id !== '') await restore(id, event.submitter?.value === 'resume' ? 'resume' : 'load');
  }),
);

// ---- one session -----------------------------------------------------------------------------------------

function stopStream() {
  current?.stop.abort();
  current = undefined;
  setOpen(false);
}

function setOpen(open) {
  ui.prompt.disabled = !open;
  ui.send.disabled = !open;
  ui.cancel.disabled = !open;
  ui.close.disabled = !open;
}

function setState(text, kind) {
  ui.state.hidden = text === '';
  ui.state.textContent = text;
  ui.state.className = `badge ${kind ?? ''}`;
}

/** Opens a live session: its whole event log first (the history), then its frames as they come. */
async function openSession(sessionId) {
  stopStream();
  const stop = new AbortController();
  current = { id: sessionId, stop, blocks: new Map(), last: undefined, lastId: undefined, live: false };
  const session = current;
  history.replaceState(null, '', `#session=${encodeURIComponent(sessionId)}`);
  ui.title.textContent = sessionId;
  ui.transcript.replaceChildren();
  setState('connecting', 'muted');
  setOpen(true);
  for (const item of ui.sessions.children) item.classList.toggle('selected', item.dataset.sessionId === sessionId);
  void follow(session);
}

async function follow(session) {
  for (;;) {
    try {
      const frames = client.events(session.id, {
        lastEventId: session.lastId ?? 0,
        signal: session.stop.signal,
        onOpen: ({ reconnect }) => reconnect && setState('reconnected', 'muted'),
      });
      for await (const frame of frames) {
        if ('id' in frame) session.lastId = frame.id;
        render(session, frame);
      }
      // The library stops after `session_closed`; one replayed from an earlier life of a session that was
      // loaded again is history: read on after it.
      if (session.live || session.stop.signal.aborted) return;
      continue;
    } catch (error) {
      if (session.stop.signal.aborted) return;
      if (error instanceof UnauthorizedError) {
        await askToken(true);
        continue;
      }
      if (error instanceof SessionNotFoundError) {
        setState('not live', 'muted');
        setOpen(false);
        note(session, 'This session is not live. Load or resume it from the list.');
        return;
      }
      setState('disconnected', 'error');
      notify(`The event stream failed: ${error instanceof Error ? error.message : String(error)}`, true);
      return;
    }
  }
}

function setRunning(session, running) {
  setState(running ? 'working…' : 'idle', running ? 'busy' : '');
}

/** The transcript block a frame adds to: the last one when it is of the same kind (and turn), else a new one. */
function block(session, kind, key) {
  const last = session.last;
  if (last && last.kind === kind && last.key === key) return last.node;
  const node = el('div', `block ${kind}`);
  ui.transcript.append(node);
  session.last = { kind, key, node };
  return node;
}

function note(session, text, className = '') {
  ui.transcript.append(el('div', `note ${className}`, text));
  session.last = undefined;
  scrollDown();
}

function scrollDown() {
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function textOf(content) {
  if (content?.type === 'text') return content.text;
  if (content?.type === 'resource_link') return `[${content.name ?? content.uri}]`;
  return content ? `[${content.type}]` : '';
}

function render(session, frame) {
  if (session !== current) return;
  // Frames of the replay are history: the views were read after them.
  if (session.live && touchesWorkspace(frame)) void views.changed();
  switch (frame.type) {
    case 'session_update':
      renderUpdate(session, frame.data.update);
      break;
    case 'permission_request':
      renderPermission(session, frame.data);
      break;
    case 'permission_resolved':
    case 'permission_already_resolved':
      resolvePermission(session, frame.data.requestId, frame.data.outcome);
      break;
    case 'prompt_cancelled':
      note(session, 'Cancelled.');
      break;
    case 'turn_complete':
      setRunning(session, false);
      note(session, `Turn ended (${frame.data.stopReason}).`, 'turn');
      break;
    case 'turn_error':
      setRunning(session, false);
      note(session, `Turn failed: ${frame.data.message}`, 'error');
      break;
    case 'model_switched':
      note(session, `Model: ${frame.data.modelId}`);
      break;
    case 'model_switch_failed':
      note(session, `Model switch failed: ${frame.data.error}`, 'error');
      break;
    case 'session_closed':
      note(session, 'The session was closed. It can be loaded again.');
      if (!session.live) break;
      setState('closed', 'muted');
      setOpen(false);
      void refreshSessions();
      break;
    case 'session_died':
      note(session, `The session ended (${frame.data.reason}).`, 'error');
      if (!session.live) break;
      setState('ended', 'error');
      setOpen(false);
      break;
    case 'state_resync_required':
      // What was shown may have a gap: the daemon replays everything it holds next, so start over.
      ui.transcript.replaceChildren();
      session.blocks.clear();
      session.last = undefined;
      break;
    case 'replay_complete':
      session.live = true;
      break;
    case 'session_state':
      setRunning(session, frame.data.turn.state === 'running');
      break;
    default:
      break;
  }
}

function renderUpdate(session, update) {
  switch (update.sessionUpdate) {
    case 'user_message_chunk': {
      const promptId = update._meta?.promptId;
      block(session, 'user', promptId).append(textOf(update.content));
      // A prompt echoed live starts a turn; those of the replay are history (session_state said how it is).
      if (session.live) setRunning(session, true);
      break;
    }
    case 'agent_message_chunk':
      block(session, 'agent').append(textOf(update.content));
      break;
    case 'agent_thought_chunk':
      block(session, 'thought').append(textOf(update.content));
      break;
    case 'tool_call':
    case 'tool_call_update':
      renderToolCall(session, update);
      break;
    case 'plan': {
      const list = el('ol', 'block plan');
      for (const entry of update.entries) list.append(el('li', entry.status, entry.content));
      ui.transcript.append(list);
      session.last = undefined;
      break;
    }
    default:
      return;
  }
  scrollDown();
}

function renderToolCall(session, update) {
  const key = `tool:${update.toolCallId}`;
  let card = session.blocks.get(key);
  if (!card) {
    card = { node: el('div', 'block tool'), title: el('span', 'title'), status: el('span', 'status') };
    const head = el('div', 'head');
    head.append(el('span', 'kind', update.kind ?? 'tool'), card.title, card.status);
    card.node.append(head);
    session.blocks.set(key, card);
    ui.transcript.append(card.node);
    session.last = undefined;
  }
  if (update.title) card.title.textContent = update.title;
  if (update.status) {
    card.status.textContent = update.status;
    card.status.className = `status ${update.status}`;
  }
}

function renderPermission(session, request) {
  const key = `permission:${request.requestId}`;
  if (session.blocks.has(key)) return;
  const node = el('div', 'block permission');
  node.append(el('div', 'ask', `The agent asks: ${request.toolCall.title ?? 'permission to go on'}`));
  const row = el('div', 'row options');
  for (const option of request.options) {
    const kind = option.kind.startsWith('allow') ? 'primary' : option.kind.startsWith('reject') ? 'danger' : '';
    row.append(
      button(
        option.name,
        () => api((c) => c.vote(request.requestId, { outcome: 'selected', optionId: option.optionId })),
        kind,
      ),
    );
  }
  node.append(row);
  session.blocks.set(key, { node, options: request.options });
  ui.transcript.append(node);
  session.last = undefined;
  scrollDown();
}

function resolvePermission(session, requestId, outcome) {
  const card = session.blocks.get(`permission:${requestId}`);
  if (!card || card.resolved) return;
  card.resolved = true;
  const chosen = outcome.outcome === 'selected' ? card.options.find((o) => o.optionId === outcome.optionId) : undefined;
  card.node
    .querySelector('.options')
    ?.replaceWith(el('div', 'answer', chosen ? `Answered: ${chosen.name}` : 'Cancelled'));
  card.node.classList.add('resolved');
}

ui.prompt.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $('prompt-form').requestSubmit();
  }
});

$('prompt-form').addEventListener(
  'submit',
  action(async () => {
    const text = ui.prompt.value;
    if (!current || text.trim() === '') return;
    const id = current.id;
    ui.prompt.value = '';
    // Not blocking: the reply arrives as frames on the open stream.
    await api((c) => c.submitPrompt(id, text));
  }),
);

ui.cancel.addEventListener(
  'click',
  action(async () => {
    if (current) await api((c) => c.cancel(current.id));
  }),
);

ui.close.addEventListener(
  'click',
  action(async () => {
    if (current) await api((c) => c.close(current.id));
  }),
);

// ---- the views: the conversation, the workspace's files, its changes -------------------------------------

// Every session of a daemon runs in its one workspace (a `cwd` elsewhere is refused), so the files and changes
// shown are those of the open session's workspace.
const views = workspaceViews({ api, el });
const tabs = /** @type {HTMLButtonElement[]} */ ([$('tab-transcript'), $('tab-files'), $('tab-changes')]);
const TAB_VIEWS = { 'tab-transcript': undefined, 'tab-files': 'files', 'tab-changes': 'changes' };

function selectTab(tab) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute('aria-selected', String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute('aria-controls') ?? '').hidden = !selected;
  }
  const view = TAB_VIEWS[tab.id];
  $('workspace-refresh').hidden = view === undefined;
  return views.show(view);
}

for (const tab of tabs) {
  tab.addEventListener(
    'click',
    action(() => selectTab(tab)),
  );
  // The tab list's keys: arrows move between the tabs (one tab stop for the list, as ARIA's tabs pattern has it).
  tab.addEventListener('keydown', (event) => {
    const step = event.key === 'ArrowRight' ? 1 : event.key === 'ArrowLeft' ? -1 : 0;
    if (step === 0) return;
    event.preventDefault();
    const next = tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length];
    next.focus();
    action(() => selectTab(next))();
  });
}
tabs.forEach((tab, i) => (tab.tabIndex = i === 0 ? 0 : -1));
$('workspace-refresh').addEventListener('click', action(views.changed));

/** Frames after which the workspace may look different: a write over HTTP, a finished tool call, a turn's end. */
function touchesWorkspace(frame) {
  if (frame.type === 'fs.access' || frame.type === 'turn_complete' || frame.type === 'turn_error') return true;
  const update = frame.type === 'session_update' ? frame.data.update : undefined;
  return update?.sessionUpdate === 'tool_call_update' && update.status === 'completed';
}

// ---- start -----------------------------------------------------------------------------------------------

async function start() {
  const caps = await api((c) => c.capabilities());
  ui.daemon.textContent = `${caps.agent?.agentInfo?.name ?? 'agent'} · ${caps.workspaceCwd}`;
  await refreshSessions();
  const fromUrl = /^#session=(.+)$/.exec(location.hash);
  if (fromUrl && !current) await openSession(decodeURIComponent(fromUrl[1]));
}

action(start)();
