/**
 * The workspace's git state through the published client against a real
 * acpd on a real repository: status (branch, ahead of its upstream, changed
 * files), the diff and one file's hunks, the paged log, and the answers of a
 * workspace that is not a repository.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { DaemonClient } from '@qwen-code/sdk/daemon';
import { startDaemon, tempDir } from './support/app.js';

t.test('status, diff, diff of a file, log', async (t) => {
  const ws = tempDir(t, 'acpd-git-');
  const run = (...args: string[]) => execFileSync('git', args, { cwd: ws, stdio: 'ignore' });
  run('init', '-q', '-b', 'main');
  run('config', 'user.email', 'test@example.com');
  run('config', 'user.name', 'Test');
  for (let i = 1; i <= 3; i++) {
    writeFileSync(path.join(ws, 'a.txt'), `line ${i}\n`);
    run('add', '.');
    run('commit', '-qm', `commit ${i}`);
  }
  // An upstream one commit behind: main is 1 ahead.
  run('remote', 'add', 'origin', ws);
  run('update-ref', 'refs/remotes/origin/main', 'HEAD~1');
  run('config', 'branch.main.remote', 'origin');
  run('config', 'branch.main.merge', 'refs/heads/main');
  writeFileSync(path.join(ws, 'a.txt'), 'line 3\nline 4\n');
  writeFileSync(path.join(ws, 'new.txt'), 'x\ny\n');
  const d = await startDaemon(t, { workspace: ws, dataDir: tempDir(t), checkAnswers: true });
  const client = new DaemonClient({ baseUrl: d.baseUrl });

  const status = await client.workspaceGit();
  t.match(status, {
    v: 2,
    branch: 'main',
    hasUpstream: true,
    ahead: 1,
    behind: 0,
    unstaged: 1,
    untracked: 1,
    staged: 0,
  });

  const diff = await client.workspaceGitDiff();
  t.equal(diff.available, true);
  t.equal(diff.filesCount, 2);
  t.same(
    diff.files.map((f) => [f.path, f.added, f.removed, f.isUntracked]),
    [
      ['a.txt', 1, 0, false],
      ['new.txt', 2, 0, true],
    ],
  );
  const hunks = await client.workspaceGitDiffFile('a.txt');
  t.same(hunks.hunks[0]?.lines, [' line 3', '+line 4']);
  const untracked = await client.workspaceGitDiffFile('new.txt');
  t.same(untracked.hunks[0]?.lines, ['+x', '+y']);
  const outside = await client.workspaceGitDiffFile('../etc/passwd');
  t.equal(outside.available, false, 'a path out of the repository has no diff');

  const page1 = await client.workspaceGitLog(2, 0);
  t.same(
    page1.entries.map((e) => e.subject),
    ['commit 3', 'commit 2'],
  );
  t.equal(page1.hasMore, true);
  const page2 = await client.workspaceGitLog(2, 2);
  t.same(
    page2.entries.map((e) => e.subject),
    ['commit 1'],
  );
  t.equal(page2.hasMore, false);
  t.equal(page2.entries[0]?.parents.length, 0);
  t.equal(page1.entries[0]?.parents[0], page1.entries[1]?.sha);
});

t.test('a workspace that is not a repository', async (t) => {
  const ws = tempDir(t, 'acpd-nogit-');
  const d = await startDaemon(t, { workspace: ws, dataDir: tempDir(t), checkAnswers: true });
  const client = new DaemonClient({ baseUrl: d.baseUrl });
  t.same(await client.workspaceGit(), { v: 2, workspaceCwd: ws, branch: null });
  t.match(await client.workspaceGitDiff(), { v: 1, available: false, files: [], filesCount: 0 });
  t.match(await client.workspaceGitDiffFile('a.txt'), { v: 1, available: false, hunks: [] });
  t.match(await client.workspaceGitLog(), { v: 1, available: false, entries: [], hasMore: false });
});
