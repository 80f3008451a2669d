// The console's views of the workspace the sessions run in: Files (walk the directories, read a file) and
// Changes (git status, the changed files, one file's diff, the recent log). Read-only, through acpd/client.
//
// Everything from the workspace (names, paths, text, diffs, commit subjects) goes into the page as text
// (textContent), never as markup: a file may be called `<img onerror=…>.txt`. A refused request (404, 403,
// a binary or too large file) is shown in the view it was for, not thrown.
import { AcpdError } from './client/index.js';

/** Lines of a file read per page ("Show more" reads the next). */
const PAGE_LINES = 1000;
/** Commits shown under the changes. */
const LOG_SIZE = 10;

/**
 * The two views, wired to their elements in index.html.
 * `api(fn)` runs `fn(client)` with the token handled (app.js); `el(tag, className, text)` makes an element.
 */
export function workspaceViews({ api, el }) {
  const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
  const files = {
    crumbs: $('files-path'),
    entries: $('files-entries'),
    head: $('file-head'),
    body: $('file-body'),
  };
  const changes = {
    status: $('changes-status'),
    list: $('changes-files'),
    head: $('diff-head'),
    body: $('diff-body'),
    log: $('changes-log'),
  };
  /** Where the user is: the directory listed, the file open, the changed file whose diff is shown. */
  const at = { dir: '.', file: undefined, diff: undefined };
  /** Which view is on screen (only it is fetched; the other is fetched when shown). */
  let shown;

  function button(text, onClick, className) {
    const b = el('button', className, text);
    b.type = 'button';
    b.addEventListener('click', () => void onClick());
    return b;
  }

  /** A refusal as the user should read it: the daemon's message and its kind, or what went wrong. */
  function problem(error) {
    if (error instanceof AcpdError) {
      const kind = typeof error.code === 'string' ? ` (${error.code})` : '';
      return `${error.status}${kind}: ${error.message}`;
    }
    return error instanceof Error ? error.message : String(error);
  }

  function say(node, text, className = 'muted') {
    node.replaceChildren(el('p', `view-note ${className}`, text));
  }

  // ---- files ---------------------------------------------------------------------------------------------

  const join = (dir, name) => (dir === '.' ? name : `${dir}/${name}`);
  const parentOf = (p) => (p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '.');

  function renderCrumbs() {
    const parts = at.dir === '.' ? [] : at.dir.split('/');
    const nodes = [button('workspace', () => openDir('.'), 'crumb')];
    parts.forEach((part, i) => {
      nodes.push(
        el('span', 'sep', '/'),
        button(part, () => openDir(parts.slice(0, i + 1).join('/')), 'crumb'),
      );
    });
    files.crumbs.replaceChildren(...nodes);
  }

  async function openDir(dir) {
    at.dir = dir;
    renderCrumbs();
    let listing;
    try {
      listing = await api((c) => c.listDir(dir));
    } catch (error) {
      say(files.entries, problem(error), 'error');
      return;
    }
    if (at.dir !== dir) return;
    // Directories first, then by name, as file managers do.
    const sorted = [...listing.entries].sort(
      (a, b) => Number(b.kind === 'directory') - Number(a.kind === 'directory') || a.name.localeCompare(b.name),
    );
    const items = sorted.map((entry) => {
      const rel = join(dir, entry.name);
      const item = el('li', `entry ${entry.kind}`);
      const open = entry.kind === 'directory' ? () => openDir(rel) : () => openFile(rel);
      const b = button(entry.kind === 'directory' ? `${entry.name}/` : entry.name, open);
      b.dataset.path = rel;
      b.title = rel;
      if (rel === at.file) item.classList.add('selected');
      item.append(b);
      return item;
    });
    if (dir !== '.') {
      const up = el('li', 'entry directory');
      up.append(button('../', () => openDir(parentOf(dir))));
      items.unshift(up);
    }
    files.entries.replaceChildren(...items);
    if (listing.entries.length === 0) files.entries.append(el('li', 'muted', 'Empty directory.'));
    if (listing.truncated) files.entries.append(el('li', 'muted', 'More entries than are listed.'));
  }

  async function openFile(rel) {
    at.file = rel;
    for (const b of files.entries.querySelectorAll('li')) {
      b.classList.toggle('selected', b.querySelector('button')?.dataset.path === rel);
    }
    files.head.replaceChildren(el('code', 'path', rel));
    say(files.body, 'Reading…');
    await readPage(rel, undefined);
  }

  /** Reads one page of `rel` (from `cursor`, or the top) and shows it, below the pages already shown. */
  async function readPage(rel, cursor) {
    let page;
    try {
      page = await api((c) => c.readFile(rel, cursor ? { cursor, limit: PAGE_LINES } : { limit: PAGE_LINES }));
    } catch (error) {
      if (at.file !== rel) return;
      const code = error instanceof AcpdError ? error.code : undefined;
      if (code === 'binary_file') say(files.body, 'A binary file: not shown as text.');
      else if (code === 'file_too_large') say(files.body, `Too large to show here. ${error.message}`);
      else say(files.body, problem(error), 'error');
      return;
    }
    if (at.file !== rel) return;
    if (cursor === undefined) {
      files.head.replaceChildren(el('code', 'path', rel), el('span', 'muted', `${page.sizeBytes} bytes`));
      files.body.replaceChildren(el('pre', 'file-text'));
    }
    files.body.querySelector('.more')?.remove();
    const pre = /** @type {HTMLElement} */ (files.body.querySelector('.file-text'));
    // Pages of lines come without the last line's ending: put it back between pages.
    pre.append(cursor === undefined ? page.content : `\n${page.content}`);
    if (page.hasMore && page.nextCursor) {
      const next = page.nextCursor;
      const more = el('div', 'more');
      more.append(button('Show more', () => readPage(rel, next)));
      files.body.append(more);
    } else if (page.truncated) {
      files.body.append(el('p', 'view-note muted', 'Truncated: the rest of the file is not shown.'));
    }
  }

  async function refreshFiles() {
    await openDir(at.dir);
    if (at.file !== undefined) await openFile(at.file);
  }

  // ---- changes -------------------------------------------------------------------------------------------

  function notRepository(node) {
    node.replaceChildren(el('p', 'view-note not-repo', 'This workspace is not a git repository.'));
  }

  async function refreshChanges() {
    let status, diff;
    try {
      [status, diff] = await Promise.all([api((c) => c.gitStatus()), api((c) => c.gitDiff())]);
    } catch (error) {
      say(changes.status, problem(error), 'error');
      changes.list.replaceChildren();
      return;
    }
    if (status.branch === null || !diff.available) {
      notRepository(changes.status);
      changes.list.replaceChildren();
      changes.head.replaceChildren();
      changes.body.replaceChildren();
      changes.log.replaceChildren();
      return;
    }
    const facts = [status.detached ? `detached at ${status.branch}` : `on ${status.branch}`];
    if (status.hasUpstream) facts.push(`↑${status.ahead ?? 0} ↓${status.behind ?? 0}`);
    else facts.push('no upstream');
    facts.push(`${status.staged ?? 0} staged, ${status.unstaged ?? 0} unstaged, ${status.untracked ?? 0} untracked`);
    if (status.conflicted) facts.push(`${status.conflicted} conflicted`);
    changes.status.replaceChildren(
      el('strong', 'branch', facts[0]),
      ...facts.slice(1).map((f) => el('span', 'muted', f)),
      el('span', 'totals', `+${diff.linesAdded} −${diff.linesRemoved} in ${diff.filesCount} files`),
    );

    const items = diff.files.map((f) => {
      const item = el('li', f.path === at.diff?.path ? 'change selected' : 'change');
      const b = el('button');
      b.type = 'button';
      b.dataset.path = f.path;
      b.addEventListener('click', () => void openDiff(f));
      const tag = f.isUntracked ? 'new' : f.isDeleted ? 'deleted' : f.oldPath ? 'renamed' : 'modified';
      b.append(
        el('span', `tag ${tag}`, tag),
        el('span', 'name', f.oldPath ? `${f.oldPath} → ${f.path}` : f.path),
        el('span', 'counts', f.isBinary ? 'binary' : `+${f.added} −${f.removed}`),
      );
      item.append(b);
      return item;
    });
    changes.list.replaceChildren(...items);
    if (diff.files.length === 0) changes.list.append(el('li', 'muted', 'No changes against HEAD.'));
    if (diff.hiddenCount > 0) changes.list.append(el('li', 'muted', `${diff.hiddenCount} more files not listed.`));
    const still = at.diff && diff.files.find((f) => f.path === at.diff.path);
    if (still) await openDiff(still);
    else {
      at.diff = undefined;
      changes.head.replaceChildren();
      say(changes.body, diff.files.length > 0 ? 'Pick a changed file to see its diff.' : '');
    }
    await refreshLog();
  }

  async function openDiff(file) {
    at.diff = file;
    for (const li of changes.list.querySelectorAll('li')) {
      li.classList.toggle('selected', li.querySelector('button')?.dataset.path === file.path);
    }
    changes.head.replaceChildren(el('code', 'path', file.path));
    let answer;
    try {
      answer = await api((c) => c.gitDiffFile(file.path, file.oldPath ? { oldPath: file.oldPath } : {}));
    } catch (error) {
      say(changes.body, problem(error), 'error');
      return;
    }
    if (at.diff !== file) return;
    if (!answer.available) return notRepository(changes.body);
    if (file.isBinary) return say(changes.body, 'A binary file: no text diff.');
    if (answer.hunks.length === 0) return say(changes.body, 'No textual change.');
    const out = el('div', 'diff');
    for (const hunk of answer.hunks) {
      out.append(el('div', 'line hunk', `@@ -${hunk.oldStart},${hunk.oldLines} +${hunk.newStart},${hunk.newLines} @@`));
      let oldNo = hunk.oldStart;
      let newNo = hunk.newStart;
      for (const line of hunk.lines) {
        const sign = line[0];
        const kind = sign === '+' ? 'add' : sign === '-' ? 'del' : sign === '\\' ? 'meta' : 'ctx';
        const row = el('div', `line ${kind}`);
        const left = kind === 'add' || kind === 'meta' ? '' : String(oldNo++);
        const right = kind === 'del' || kind === 'meta' ? '' : String(newNo++);
        row.append(el('span', 'no', left), el('span', 'no', right), el('span', 'text', line));
        out.append(row);
      }
    }
    changes.body.replaceChildren(out);
    if (answer.truncated) changes.body.append(el('p', 'view-note muted', 'The diff is cut short here.'));
  }

  async function refreshLog() {
    let log;
    try {
      log = await api((c) => c.gitLog({ limit: LOG_SIZE }));
    } catch (error) {
      say(changes.log, problem(error), 'error');
      return;
    }
    if (!log.available) return changes.log.replaceChildren();
    const items = log.entries.map((e) => {
      const item = el('li', 'commit');
      item.append(
        el('code', 'sha', e.shortSha),
        el('span', 'subject', e.subject),
        el('span', 'muted', `${e.authorName} · ${new Date(e.authorDate * 1000).toLocaleString()}`),
      );
      return item;
    });
    changes.log.replaceChildren(el('h3', '', 'Recent commits'), el('ol', 'commits'));
    changes.log.querySelector('ol')?.append(...items);
    if (log.entries.length === 0) changes.log.append(el('p', 'view-note muted', 'No commits yet.'));
  }

  // ---- refreshing ----------------------------------------------------------------------------------------

  /** One refresh at a time; a change that comes during one asks for one more after it (not one per frame). */
  let running;
  let again = false;
  function refresh() {
    if (shown === undefined) return Promise.resolve();
    if (running) {
      again = true;
      return running;
    }
    running = (shown === 'files' ? refreshFiles() : refreshChanges()).finally(() => {
      running = undefined;
      if (again) {
        again = false;
        void refresh();
      }
    });
    return running;
  }

  return {
    /** Puts `view` ('files', 'changes', or undefined for neither) on screen, fetched afresh. */
    show(view) {
      shown = view;
      return refresh();
    },
    /** Something in the workspace may have changed (a write, a turn ended): the view on screen is fetched again. */
    changed: refresh,
  };
}
