/**
 * A real git repository in a temporary directory, for the tests of the workspace's files and git views:
 * files committed first, then the working tree changed on top, so that status, diff and log have
 * something to say.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { tempDir, type Teardown } from './app.js';

export interface GitRepo {
  dir: string;
  /** Runs git in the repository (argv, no shell). */
  git(...args: string[]): void;
  /** Writes a file (its parent directories made), relative to the repository. */
  write(rel: string, content: string | Buffer): void;
}

/** A repository on branch `main` whose `commits` are made in order (each one's files, then its message). */
export function gitRepo(
  t: Teardown,
  commits: { message: string; files: Record<string, string | Buffer> }[] = [],
): GitRepo {
  const dir = tempDir(t, 'acpd-repo-');
  const git = (...args: string[]) => void execFileSync('git', args, { cwd: dir, stdio: 'ignore' });
  const write = (rel: string, content: string | Buffer) => {
    mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    writeFileSync(path.join(dir, rel), content);
  };
  git('init', '-q', '-b', 'main');
  git('config', 'user.email', 'test@example.com');
  git('config', 'user.name', 'Test');
  for (const { message, files } of commits) {
    for (const [rel, content] of Object.entries(files)) write(rel, content);
    git('add', '.');
    git('commit', '-qm', message);
  }
  return { dir, git, write };
}
