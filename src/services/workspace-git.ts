/**
 * The workspace's git state, read-only, with the qwen daemon's answers:
 * status, the diff against HEAD (its file list, and one file's hunks), the
 * log. Through the `git` CLI: execFile with an argument list (no shell), a
 * timeout and an output cap, repository-configured programs disabled (no
 * external diff, no textconv, no fsmonitor). The CLI rather than a library
 * because it is what the repository's owner runs (the same config, the same
 * answers), and because the qwen daemon runs it too, so both agree on edge
 * cases; no JavaScript git library reads every index and pack format.
 * Also a commit's detail and the branch listing. A workspace outside any
 * repository answers `available: false` (`branch: null` for the status, a
 * 404 `not_a_git_repository` for the branches), as the qwen daemon does.
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { FsError } from './workspace-files.js';

const GIT_TIMEOUT_MS = 5000;
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;
/** Per-file caps of the qwen daemon: files listed with stats, diff lines per file, bytes per file diff. */
export const GIT_LIMITS = { maxFiles: 50, maxLinesPerFile: 400, maxDiffBytes: 1_000_000, maxLog: 200, defaultLog: 50 };

// Settings that would run a program the repository names.
const SAFE_CONFIG = ['-c', 'core.quotepath=false', '-c', 'core.fsmonitor=false', '-c', 'diff.external='];

function git(args: string[], cwd: string): Promise<string | null> {
  return gitRun(args, cwd).then((r) => (r.ok ? r.stdout : null));
}

/** A git run with its stderr kept. */
function gitRun(
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv = {},
): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      'git',
      [...SAFE_CONFIG, '--no-optional-locks', ...args],
      {
        cwd,
        timeout: GIT_TIMEOUT_MS,
        maxBuffer: MAX_OUTPUT_BYTES,
        encoding: 'utf8',
        env: { ...process.env, GIT_TERMINAL_PROMPT: '0', GIT_OPTIONAL_LOCKS: '0', ...env },
      },
      (err, stdout, stderr) => resolve({ ok: !err, stdout, stderr }),
    );
  });
}

/** The fields of one log entry (`%x00` between them), the committer date last: search hits are merged by it. */
const LOG_FORMAT = '%H%x00%h%x00%an%x00%ae%x00%at%x00%s%x00%D%x00%P%x00%ct';
const LOG_FIELDS = 9;
const LOG_ALL = ['HEAD', '--branches', '--tags', '--remotes'];
/** The longest `search` used; longer ones are cut, as the qwen daemon does. */
export const MAX_SEARCH_CHARS = 200;
/** A commit id as the detail route takes it. */
export const COMMIT_SHA = /^[0-9a-f]{7,40}$/i;
const MAX_RECENT_BRANCHES = 20;
const MAX_REFLOG_ENTRIES = 200;

interface LogEntry {
  sha: string;
  shortSha: string;
  authorName: string;
  authorEmail: string;
  authorDate: number;
  subject: string;
  refs?: string;
  parents: string[];
}

/** `git log -z --format=LOG_FORMAT` output, each entry with its committer date. */
function parseLog(out: string): { entry: LogEntry; commitDate: number }[] {
  const fields = out.split('\0');
  if (fields.at(-1) === '') fields.pop();
  const entries = [];
  for (let i = 0; i + LOG_FIELDS <= fields.length; i += LOG_FIELDS) {
    const f = fields.slice(i, i + LOG_FIELDS);
    entries.push({ entry: logEntry(f), commitDate: Number.parseInt(f[8] ?? '', 10) || 0 });
  }
  return entries;
}

/** One commit from the first eight fields of LOG_FORMAT, which the commit detail's format shares. */
function logEntry(f: readonly string[]): LogEntry {
  const [sha = '', shortSha = '', authorName = '', authorEmail = '', at = '', subject = '', refs = '', parents = ''] =
    f;
  return {
    // `-z` separates commits with a NUL too, which lands before the next sha.
    sha: sha.replace(/^\n/, ''),
    shortSha,
    authorName,
    authorEmail,
    authorDate: Number.parseInt(at, 10) || 0,
    subject,
    ...(refs ? { refs } : {}),
    parents: parents.split(' ').filter(Boolean),
  };
}

/** `--numstat -z` records: a rename is `added\tremoved\t` then its old and new paths; counted by the new one. */
function forEachNumstat(
  out: string,
  visit: (f: { path: string; oldPath?: string; added: number; removed: number; isBinary: boolean }) => void,
): void {
  const tokens = out.split('\0');
  if (tokens.at(-1) === '') tokens.pop();
  for (let i = 0; i < tokens.length; i++) {
    const [a = '', r = '', p] = (tokens[i] ?? '').split('\t');
    if (p === undefined) continue;
    const isBinary = a === '-' || r === '-';
    const stats = { added: isBinary ? 0 : Number(a) || 0, removed: isBinary ? 0 : Number(r) || 0, isBinary };
    if (p === '') {
      const oldPath = tokens[++i] ?? '';
      visit({ path: tokens[++i] ?? '', oldPath, ...stats });
    } else visit({ path: p, ...stats });
  }
}

/** `for-each-ref` lines of branches (symbolic refs such as `origin/HEAD` left out), as the qwen daemon lists them. */
const BRANCH_FORMAT =
  '--format=%(refname:short)%00%(HEAD)%00%(upstream:short)%00%(upstream:track,nobracket)%00%(committerdate:unix)%00%(subject)%00%(symref)%00%(push:short)%00%(push:track,nobracket)';

function parseBranches(raw: string) {
  return raw
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split('\0'))
    .filter((f) => !f[6])
    .map((f) => {
      const [
        name = '',
        head = '',
        upstreamRaw = '',
        track = '',
        date = '',
        subject = '',
        ,
        pushRaw = '',
        pushTrack = '',
      ] = f;
      const upstream = upstreamRaw || undefined;
      const push = pushRaw || undefined;
      const pushGone = push !== undefined && /\bgone\b/.test(pushTrack);
      const count = (re: RegExp, s: string) => Number(re.exec(s)?.[1] ?? 0);
      return {
        name,
        isHead: head === '*',
        ...(upstream !== undefined ? { upstream } : {}),
        ...(upstream !== undefined && /\bgone\b/.test(track) ? { upstreamGone: true as const } : {}),
        ahead: count(/ahead (\d+)/, track),
        behind: count(/behind (\d+)/, track),
        ...(push !== undefined ? { pushTarget: push } : {}),
        ...(push !== undefined && !pushGone
          ? { pushAhead: count(/ahead (\d+)/, pushTrack), pushBehind: count(/behind (\d+)/, pushTrack) }
          : {}),
        ...(pushGone ? { pushGone: true as const } : {}),
        commitDate: Number.parseInt(date, 10) || 0,
        commitSubject: subject,
      };
    });
}

/** The branches checked out before, newest first, from the reflog's `checkout: moving from A to B`. */
function recentBranches(reflog: string, current: string): string[] {
  const seen = new Set<string>();
  for (const line of reflog.trim().split('\n')) {
    if (!line.startsWith('checkout: moving from ')) continue;
    const at = line.indexOf(' to ');
    if (at < 0) continue;
    const branch = line.slice(at + 4);
    if (!branch || branch === current || seen.has(branch) || /^[0-9a-f]{7,40}$/.test(branch)) continue;
    seen.add(branch);
    if (seen.size >= MAX_RECENT_BRANCHES) break;
  }
  return [...seen];
}

/** A git message without the machine's paths: the workspace as `<workspace>`, any other absolute path as `<path>`. */
function redact(message: string, workspace: string): string {
  return message
    .split(workspace)
    .join('<workspace>')
    .replace(/(^|[\s'"(<])\/[^\s'"<>]*/g, '$1<path>')
    .trim()
    .slice(0, 512);
}

/** The branch listing of a workspace outside any repository: the qwen daemon's 404. */
export class NotARepository extends Error {}

interface Hunk {
  oldStart: number;
  oldLines: number;
  newStart: number;
  newLines: number;
  lines: string[];
}

export class WorkspaceGit {
  constructor(private readonly workspace: string) {}

  private async root(): Promise<string | null> {
    const out = await git(['rev-parse', '--show-toplevel'], this.workspace);
    return out === null ? null : out.trim();
  }

  async status() {
    const base = { v: 2 as const, workspaceCwd: this.workspace };
    const root = await this.root();
    if (root === null) return { ...base, branch: null };
    const out = await git(['status', '--porcelain=v1', '--branch', '-z'], root);
    if (out === null) return { ...base, branch: null };
    const tokens = out.split('\0');
    if (tokens.at(-1) === '') tokens.pop();
    const head = tokens.shift() ?? '';
    let branch: string | null = null;
    let detached = false;
    let hasUpstream = false;
    let ahead = 0;
    let behind = 0;
    if (head.startsWith('## ')) {
      let desc = head.slice(3);
      const unborn = /^(?:No commits yet|Initial commit) on (.+)$/.exec(desc);
      if (desc.startsWith('HEAD (no branch)')) detached = true;
      else if (unborn) branch = unborn[1] ?? null;
      else {
        const bracket = / \[([^\]]*)\]$/.exec(desc);
        if (bracket) {
          ahead = Number(/ahead (\d+)/.exec(bracket[1] ?? '')?.[1] ?? 0);
          behind = Number(/behind (\d+)/.exec(bracket[1] ?? '')?.[1] ?? 0);
          desc = desc.slice(0, bracket.index);
        }
        const sep = desc.lastIndexOf('...');
        hasUpstream = sep >= 0;
        branch = (sep >= 0 ? desc.slice(0, sep) : desc) || null;
      }
    }
    if (detached) branch = (await git(['rev-parse', '--short', 'HEAD'], root))?.trim() ?? null;
    let staged = 0;
    let unstaged = 0;
    let untracked = 0;
    let conflicted = 0;
    for (let i = 0; i < tokens.length; i++) {
      const tok = tokens[i] ?? '';
      if (tok.length < 3 || tok[2] !== ' ') continue;
      const x = tok[0] ?? ' ';
      const y = tok[1] ?? ' ';
      if (x === '?' && y === '?') untracked++;
      else if (x === '!' && y === '!') continue;
      else if (x === 'U' || y === 'U' || (x === 'A' && y === 'A') || (x === 'D' && y === 'D')) conflicted++;
      else {
        if (x !== ' ') staged++;
        if (y !== ' ') unstaged++;
        if (x === 'R' || x === 'C' || y === 'R' || y === 'C') i++;
      }
    }
    const stash = await git(['rev-list', '--walk-reflogs', '--count', 'refs/stash'], root);
    return {
      ...base,
      branch,
      detached,
      staged,
      unstaged,
      untracked,
      conflicted,
      hasUpstream,
      ahead,
      behind,
      stashCount: stash === null ? 0 : Number(stash.trim()) || 0,
      computedAt: Date.now(),
    };
  }

  async diff() {
    const none = {
      v: 1 as const,
      workspaceCwd: this.workspace,
      available: false,
      filesCount: 0,
      linesAdded: 0,
      linesRemoved: 0,
      files: [],
      hiddenCount: 0,
    };
    const root = await this.root();
    if (root === null) return none;
    const [numstat, nameStatus, others] = await Promise.all([
      git(['diff', '--no-ext-diff', '--no-textconv', 'HEAD', '--numstat', '-z'], root),
      git(['diff', '--no-ext-diff', '--no-textconv', 'HEAD', '--name-status', '-z'], root),
      git(['ls-files', '-z', '--others', '--exclude-standard'], root),
    ]);
    if (numstat === null) return none;
    const deleted = new Set<string>();
    if (nameStatus !== null) {
      const t = nameStatus.split('\0');
      for (let i = 0; i < t.length; i++) {
        const code = t[i] ?? '';
        if (code.startsWith('D')) deleted.add(t[i + 1] ?? '');
        if (code.startsWith('R') || code.startsWith('C')) i += 2;
        else i += 1;
      }
    }
    const files: {
      path: string;
      oldPath?: string;
      added: number;
      removed: number;
      isBinary: boolean;
      isUntracked: boolean;
      isDeleted: boolean;
      truncated: boolean;
    }[] = [];
    let filesCount = 0;
    let linesAdded = 0;
    let linesRemoved = 0;
    const tokens = numstat.split('\0');
    if (tokens.at(-1) === '') tokens.pop();
    for (let i = 0; i < tokens.length; i++) {
      const [a = '', r = '', p = ''] = (tokens[i] ?? '').split('\t');
      let filePath = p;
      let oldPath: string | undefined;
      if (p === '') {
        oldPath = tokens[++i];
        filePath = tokens[++i] ?? '';
      }
      const isBinary = a === '-' || r === '-';
      const added = isBinary ? 0 : Number(a) || 0;
      const removed = isBinary ? 0 : Number(r) || 0;
      filesCount++;
      linesAdded += added;
      linesRemoved += removed;
      if (files.length < GIT_LIMITS.maxFiles) {
        files.push({
          path: filePath,
          ...(oldPath ? { oldPath } : {}),
          added,
          removed,
          isBinary,
          isUntracked: false,
          isDeleted: deleted.has(filePath),
          truncated: false,
        });
      }
    }
    const untracked = (others ?? '').split('\0').filter(Boolean);
    for (const rel of untracked) {
      filesCount++;
      const counted = await this.countLines(path.join(root, rel));
      linesAdded += counted.added;
      if (files.length < GIT_LIMITS.maxFiles) {
        files.push({ path: rel, ...counted, removed: 0, isUntracked: true, isDeleted: false });
      }
    }
    return {
      v: 1 as const,
      workspaceCwd: this.workspace,
      available: true,
      filesCount,
      linesAdded,
      linesRemoved,
      files,
      hiddenCount: filesCount - files.length,
    };
  }

  /** An untracked file's lines, read no further than the cap; lstat first, so a FIFO is never opened. */
  private async countLines(abs: string): Promise<{ added: number; isBinary: boolean; truncated: boolean }> {
    const buf = await this.readCapped(abs);
    if (buf === null) return { added: 0, isBinary: false, truncated: false };
    if (buf.data.subarray(0, 8192).includes(0)) return { added: 0, isBinary: true, truncated: false };
    const text = buf.data.toString('utf8');
    let added = text.split('\n').length;
    if (text.endsWith('\n') || text.length === 0) added--;
    return { added, isBinary: false, truncated: buf.truncated };
  }

  private async readCapped(abs: string): Promise<{ data: Buffer; truncated: boolean } | null> {
    try {
      const st = await fs.lstat(abs);
      if (!st.isFile()) return null;
      const fh = await fs.open(abs, 'r');
      try {
        const size = Math.min(st.size, GIT_LIMITS.maxDiffBytes);
        const data = Buffer.alloc(size);
        const { bytesRead } = await fh.read(data, 0, size, 0);
        return { data: data.subarray(0, bytesRead), truncated: st.size > GIT_LIMITS.maxDiffBytes };
      } finally {
        await fh.close();
      }
    } catch {
      return null;
    }
  }

  async diffFile(filePath: string, oldPath: string | undefined) {
    const answer = (hunks: Hunk[], truncated: boolean) => ({
      v: 1 as const,
      workspaceCwd: this.workspace,
      path: filePath,
      available: hunks.length > 0,
      hunks,
      ...(truncated ? { truncated: true as const } : {}),
    });
    const root = await this.root();
    const rel = root === null ? null : repoRelative(root, filePath);
    const oldRel = root === null || oldPath === undefined ? null : repoRelative(root, oldPath);
    if (root === null || rel === null) return answer([], false);
    const args = ['diff', '--no-ext-diff', '--no-textconv', ...(oldRel !== null ? ['-M'] : []), 'HEAD', '--'];
    if (oldRel !== null) args.push(oldRel);
    args.push(rel);
    const out = await git(args, root);
    if (out === null) return answer([], false);
    if (out.trim() !== '') {
      if (Buffer.byteLength(out) > GIT_LIMITS.maxDiffBytes) return answer([], true);
      return parseHunks(out);
    }
    const others = await git(['ls-files', '--others', '--exclude-standard', '--', rel], root);
    if (!others?.trim()) return answer([], false);
    const buf = await this.readCapped(path.join(root, rel));
    if (buf === null || buf.data.subarray(0, 8192).includes(0)) return answer([], false);
    const lines = buf.data.toString('utf8').split('\n');
    if (lines.at(-1) === '') lines.pop();
    const kept = lines.slice(0, GIT_LIMITS.maxLinesPerFile);
    const truncated = buf.truncated || kept.length < lines.length;
    if (kept.length === 0) return answer([], truncated);
    return answer(
      [{ oldStart: 0, oldLines: 0, newStart: 1, newLines: kept.length, lines: kept.map((l) => `+${l}`) }],
      truncated,
    );

    function parseHunks(diff: string) {
      const hunks: Hunk[] = [];
      let current: Hunk | undefined;
      let count = 0;
      let cut = false;
      for (const line of diff.split('\n')) {
        const m = /^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@/.exec(line);
        if (m) {
          if (current) hunks.push(current);
          current = {
            oldStart: Number(m[1]),
            oldLines: Number(m[2] ?? 1),
            newStart: Number(m[3]),
            newLines: Number(m[4] ?? 1),
            lines: [],
          };
          continue;
        }
        if (!current) continue;
        if (line.startsWith('+') || line.startsWith('-') || line.startsWith(' ')) {
          if (count >= GIT_LIMITS.maxLinesPerFile) {
            cut = true;
            break;
          }
          current.lines.push(line);
          count++;
        } else if (line.startsWith('\\')) current.lines.push(line);
      }
      if (current) hunks.push(current);
      return answer(hunks, cut);
    }
  }

  async log(opts: { limit: number; skip: number; range?: string; all: boolean; search?: string }) {
    const answer = (available: boolean, entries: LogEntry[] = [], hasMore = false) => ({
      v: 1 as const,
      workspaceCwd: this.workspace,
      available,
      entries,
      hasMore,
    });
    const root = await this.root();
    if (root === null) return answer(false);
    const revisions = opts.all
      ? LOG_ALL
      : opts.range !== undefined && /^[A-Za-z0-9_./~^-]+$/.test(opts.range) && !/^(-|\.\.)/.test(opts.range)
        ? [opts.range]
        : [];
    if (opts.search !== undefined) {
      const found = await this.search(root, revisions, opts.search, opts.skip + opts.limit + 1);
      return answer(true, found.slice(opts.skip, opts.skip + opts.limit), found.length > opts.skip + opts.limit);
    }
    const out = await git(
      [
        'log',
        '-z',
        `--format=${LOG_FORMAT}`,
        '--date-order',
        '-n',
        String(opts.limit + 1),
        ...(opts.skip > 0 ? ['--skip', String(opts.skip)] : []),
        ...revisions,
        '--',
      ],
      root,
    );
    if (out === null) {
      // An unborn branch has an empty log; a range git refuses has none (the qwen daemon's answers for both).
      return (await git(['rev-parse', '--verify', 'HEAD'], root)) === null ? answer(true) : answer(false);
    }
    const entries = parseLog(out).map((e) => e.entry);
    return answer(true, entries.slice(0, opts.limit), entries.length > opts.limit);
  }

  /**
   * Commits whose message (case-insensitive, a fixed string) or author matches, and the commit a hex
   * prefix of 4 to 40 names: one list, without duplicates, newest commit first (ties in the order found).
   * Each walk stops at `window`, as far as the page asked for reaches.
   */
  private async search(root: string, revisions: string[], query: string, window: number): Promise<LogEntry[]> {
    const walk = (filter: string) =>
      git(
        [
          'log',
          '-z',
          `--format=${LOG_FORMAT}`,
          '--date-order',
          '-i',
          '--fixed-strings',
          filter,
          '-n',
          String(window),
          ...revisions,
          '--',
        ],
        root,
      );
    const runs = [walk(`--grep=${query}`), walk(`--author=${query}`)];
    if (/^[0-9a-f]{4,40}$/i.test(query)) {
      runs.push(
        git(['rev-parse', '--verify', '--quiet', '--end-of-options', `${query}^{commit}`], root).then((sha) =>
          sha ? git(['log', '-z', `--format=${LOG_FORMAT}`, '--no-walk', sha.trim(), '--'], root) : null,
        ),
      );
    }
    const bySha = new Map<string, { entry: LogEntry; commitDate: number; rank: number }>();
    for (const out of await Promise.all(runs)) {
      for (const hit of parseLog(out ?? '')) {
        if (!bySha.has(hit.entry.sha)) bySha.set(hit.entry.sha, { ...hit, rank: bySha.size });
      }
    }
    return [...bySha.values()].sort((a, b) => b.commitDate - a.commitDate || a.rank - b.rank).map((h) => h.entry);
  }

  /**
   * One commit: its message and the files it changed with their line counts (the first `maxFiles`), against
   * its first parent (a merge), or the empty tree (a root commit); renames count once, by the new path.
   * `available: false` for a commit git does not know, or outside a repository.
   */
  async commit(sha: string) {
    const none = { v: 1 as const, workspaceCwd: this.workspace, available: false };
    if (!COMMIT_SHA.test(sha)) return none;
    const root = await this.root();
    if (root === null) return none;
    const meta = await git(
      ['log', '-1', '-z', '--format=%H%x00%h%x00%an%x00%ae%x00%at%x00%s%x00%D%x00%P%x00%b', sha],
      root,
    );
    if (meta === null) return none;
    const parts = meta.split('\0');
    if (parts.at(-1) === '') parts.pop();
    if (parts.length !== 9) return none;
    const entry = logEntry(parts);
    const body = parts[8] ?? '';
    // diff-tree does not read diff.renames: -M asks for renames, --root diffs a root commit against the empty tree.
    const against = entry.parents.length > 1 ? [`${entry.sha}^1`, entry.sha] : ['--root', entry.sha];
    const numstat = await git(['diff-tree', '--no-commit-id', '--numstat', '-M', '-r', '-z', ...against], root);
    const files: { path: string; added: number; removed: number; isBinary: boolean }[] = [];
    let filesCount = 0;
    let linesAdded = 0;
    let linesRemoved = 0;
    forEachNumstat(numstat ?? '', (f) => {
      filesCount++;
      linesAdded += f.added;
      linesRemoved += f.removed;
      if (files.length < GIT_LIMITS.maxFiles)
        files.push({ path: f.path, added: f.added, removed: f.removed, isBinary: f.isBinary });
    });
    return {
      v: 1 as const,
      workspaceCwd: this.workspace,
      available: true,
      ...entry,
      body: body.replace(/\n$/, ''),
      files,
      filesCount,
      linesAdded,
      linesRemoved,
      hiddenCount: filesCount - files.length,
    };
  }

  /**
   * The local and remote-tracking branches (tracking state, tip commit), the tags newest first, the branches
   * checked out recently, and HEAD (a branch name, or the short sha when detached). Outside a repository
   * it throws NotARepository, with git's message, for the qwen daemon's 404.
   */
  async branches() {
    // git's messages in English, which is how the "not a repository" case is told apart.
    const C = { LC_ALL: 'C', LANG: 'C' };
    const probe = await gitRun(['rev-parse', '--git-dir'], this.workspace, C);
    if (!probe.ok) {
      const message = redact(probe.stderr || probe.stdout, this.workspace);
      if (/not a git repository/i.test(message)) throw new NotARepository(message);
      // Anything else (a timeout, a broken repository) is the daemon's trouble, not the request's: 503.
      throw new FsError('io_error', `git rev-parse failed: ${message}`);
    }
    const run = (args: string[]) => gitRun(args, this.workspace, C).then((r) => (r.ok ? r.stdout : ''));
    const [local, remote, tags, head, reflog] = await Promise.all([
      run(['for-each-ref', BRANCH_FORMAT, 'refs/heads/']),
      run(['for-each-ref', BRANCH_FORMAT, 'refs/remotes/']),
      run([
        'for-each-ref',
        '--format=%(refname:short)%00%(creatordate:unix)%00%(subject)',
        '--sort=-creatordate',
        'refs/tags/',
      ]),
      run(['symbolic-ref', '--short', 'HEAD']),
      run(['reflog', 'show', '--format=%gs', `-${MAX_REFLOG_ENTRIES}`]),
    ]);
    const branch = head.trim();
    return {
      v: 1 as const,
      workspaceCwd: this.workspace,
      available: true as const,
      local: parseBranches(local),
      remote: parseBranches(remote),
      tags: tags
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((line) => {
          const [name = '', date = '', subject = ''] = line.split('\0');
          return { name, date: Number.parseInt(date, 10) || 0, subject };
        }),
      recent: recentBranches(reflog, branch),
      head: branch || (await run(['rev-parse', '--short', 'HEAD'])).trim(),
      detached: branch === '',
    };
  }
}

/** A path inside the repository, relative to its root; null for anything that climbs out. */
function repoRelative(root: string, p: string): string | null {
  if (path.isAbsolute(p)) {
    const rel = path.relative(root, p);
    return rel === '' || rel.startsWith('..') || path.isAbsolute(rel) ? null : rel;
  }
  if (p.length === 0 || p.split(/[\\/]/).includes('..')) return null;
  return p;
}
