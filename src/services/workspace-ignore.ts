// Which workspace paths the file routes treat as ignored, by the rules the
// qwen daemon applies: the workspace's root `.gitignore` and `.qwenignore`,
// plus git's own directory. An ignored entry is left out of `/list` and
// `/glob` unless the client asks for it (`includeIgnored`), and a read or a
// write of one says which rule kind matched it (`matchedIgnore`).
//
// A pattern ending in `/` only ever matches directories; any other pattern
// matches files, and directories too when it has no extension-like last
// segment (`build` names a directory as readily as a file; `*.log` does not).
// The two files are read again whenever their size or mtime changes, so an
// edit to `.gitignore` shows in the next request.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import ignore, { type Ignore } from 'ignore';
import picomatch from 'picomatch';

export type IgnoreCategory = 'file' | 'directory';

const RULE_FILES = ['.gitignore', '.qwenignore'] as const;
const extensionLike = picomatch('**/*[*.]*');

/** One rule file's patterns, split as above. */
class RuleSet {
  private readonly files: Ignore = ignore();
  private readonly dirs: Ignore = ignore();

  add(lines: readonly string[]): this {
    for (const raw of lines) {
      const pattern = raw.trim();
      if (pattern === '' || pattern.startsWith('#')) continue;
      if (pattern.endsWith('/') && !pattern.startsWith('!')) {
        this.dirs.add(pattern);
        continue;
      }
      this.files.add(pattern);
      if (!extensionLike(pattern)) this.dirs.add(pattern);
    }
    return this;
  }

  fileIgnored(rel: string): boolean {
    return this.files.ignores(rel);
  }

  dirIgnored(rel: string): boolean {
    return this.dirs.ignores(rel);
  }
}

/** The rules in force for one workspace root; `verdict` is synchronous once `refresh` has run. */
export class WorkspaceIgnore {
  private sets: RuleSet[] = [new RuleSet().add(['.git/'])];
  private stamp = '';

  constructor(private readonly root: string) {}

  /** Re-read the rule files when they changed since the last look. */
  async refresh(): Promise<this> {
    const stats = await Promise.all(
      RULE_FILES.map((name) => fs.stat(path.join(this.root, name)).catch(() => undefined)),
    );
    const stamp = stats.map((st) => (st?.isFile() ? `${st.size}:${st.mtimeMs}` : '-')).join('|');
    if (stamp === this.stamp) return this;
    const texts = await Promise.all(
      RULE_FILES.map(async (name, i) =>
        stats[i]?.isFile() ? fs.readFile(path.join(this.root, name), 'utf8').catch(() => '') : '',
      ),
    );
    // `.gitignore` and git's directory share one set (a later `!` can undo an earlier line of
    // either); `.qwenignore` is a set of its own that can only add to them, as the qwen daemon has it.
    const git = new RuleSet().add(texts[0].split(/\r?\n/)).add(['.git/']);
    const sets = [git];
    if (texts[1] !== '') sets.push(new RuleSet().add(texts[1].split(/\r?\n/)));
    this.sets = sets;
    this.stamp = stamp;
    return this;
  }

  /** Which kind of rule ignores `abs` (an absolute path inside the root), or null. */
  verdict(abs: string, kind: 'file' | 'directory'): IgnoreCategory | null {
    const rel = path.relative(this.root, abs).split(path.sep).join('/');
    if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) return null;
    const file = (): boolean => this.sets.some((s) => s.fileIgnored(rel));
    if (kind === 'directory') {
      if (this.sets.some((s) => s.dirIgnored(`${rel}/`))) return 'directory';
      return file() ? 'file' : null;
    }
    if (file()) return 'file';
    return this.sets.some((s) => s.dirIgnored(rel)) ? 'directory' : null;
  }
}
