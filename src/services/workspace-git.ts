/**
 * The workspace's git state, read-only, with the qwen daemon's answers:
 * status, the diff against HEAD (its file list, and one file's hunks), the
 * log. Through the `git` CLI: execFile with an argument list (no shell), a
 * timeout and an output cap, repository-configured programs disabled (no
 * external diff, no textconv, no fsmonitor). The CLI rather than a library
 * because it is what the repository's owner runs (the same config, the same
 * answers), and because the qwen daemon runs it too, so both agree on edge
 * cases; no JavaScript git library reads every index and pack format.
 * A workspace outside any repository answers `available: false`
 * (`branch: null` for the status), as the qwen daemon does.
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';

const GIT_TIMEOUT_MS = 5000;
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;
/** Per-file caps of the qwen daemon: files listed with stats, diff lines per file, bytes per file diff. */
export const GIT_LIMITS = { maxFiles: 50, maxLinesPerFile: 400, maxDiffBytes: 1_000_000, maxLog: 200, defaultLog: 50 };

// Settings that would run a program the repository names.
const SAFE_CONFIG = ['-c', 'core.quotepath=false', '-c', 'core.fsmonitor=false', '-c', 'diff.external='];

function git(args: string[], cwd: string): Promise<string | null> {
  return new Promise((resolve) => {
    execFile(
      'git',
      [...SAFE_CONFIG, '--no-optional-locks', ...args],
      {
        cwd,
        timeout: GIT_TIMEOUT_MS,
        maxBuffer: MAX_OUTPUT_BYTES,
        encoding: 'utf8',
        env: { ...process.env, GIT_TERMINAL_PROMPT: '0', GIT_OPTIONAL_LOCKS: '0' },
      },
      (err, stdout) => resolve(err ? null : stdout),
    );
  });
}

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
    const root = await this.root();
    if (root === null)
      return { v: 1 as const, workspaceCwd: this.workspace, available: false, entries: [], hasMore: false };
    const revisions = opts.all
      ? ['HEAD', '--branches', '--tags', '--remotes']
      : opts.range !== undefined && /^[A-Za-z0-9_./~^-]+$/.test(opts.range) && !opts.range.startsWith('-')
        ? [opts.range]
        : [];
    const search = opts.search === undefined ? [] : ['-i', '--fixed-strings', `--grep=${opts.search}`];
    const out = await git(
      [
        'log',
        '-z',
        '--format=%H%x00%h%x00%an%x00%ae%x00%at%x00%s%x00%D%x00%P',
        '--date-order',
        ...search,
        '-n',
        String(opts.limit + 1),
        ...(opts.skip > 0 ? ['--skip', String(opts.skip)] : []),
        ...revisions,
        '--',
      ],
      root,
    );
    // An unborn branch has no log: an empty one, as the qwen daemon answers.
    if (out === null)
      return { v: 1 as const, workspaceCwd: this.workspace, available: true, entries: [], hasMore: false };
    const fields = out.split('\0');
    if (fields.at(-1) === '') fields.pop();
    const entries = [];
    for (let i = 0; i + 8 <= fields.length; i += 8) {
      const [
        sha = '',
        shortSha = '',
        authorName = '',
        authorEmail = '',
        at = '',
        subject = '',
        refs = '',
        parents = '',
      ] = fields.slice(i, i + 8);
      entries.push({
        // `-z` separates commits with a NUL too, which lands before the next sha.
        sha: sha.replace(/^\n/, ''),
        shortSha,
        authorName,
        authorEmail,
        authorDate: Number(at) || 0,
        subject,
        ...(refs ? { refs } : {}),
        parents: parents.split(' ').filter(Boolean),
      });
    }
    return {
      v: 1 as const,
      workspaceCwd: this.workspace,
      available: true,
      entries: entries.slice(0, opts.limit),
      hasMore: entries.length > opts.limit,
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
