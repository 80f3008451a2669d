/**
 * The workspace's git state through the published client against a real
 * acpd on a real repository: status (branch, ahead of its upstream, changed
 * files), the diff and one file's hunks, the paged log, the log searched
 * (message, author, sha prefix), a commit's detail (plain, merge, root,
 * rename), the branches, and the answers of a workspace that is not a
 * repository.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { DaemonClient } from '@qwen-code/sdk/daemon';
import { startDaemon, tempDir } from './support/app.js';

/** The qwen daemon's cap on `search`. */
const MAX_SEARCH = 200;

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

/**
 * A history with two authors, a side branch merged back, a rename and a tag; every commit one
 * minute after the last (so the newest-first order is the order made), the committer fixed.
 */
function makeHistory(ws: string) {
  let minute = 0;
  const run = (args: string[], author = 'Alice <alice@example.com>') => {
    const date = new Date(Date.UTC(2026, 0, 1, 12, minute++)).toISOString();
    const [, name = '', email = ''] = /^(.*) <(.*)>$/.exec(author) ?? [];
    return execFileSync('git', args, {
      cwd: ws,
      encoding: 'utf8',
      env: {
        ...process.env,
        GIT_CONFIG_GLOBAL: '/dev/null',
        GIT_CONFIG_NOSYSTEM: '1',
        GIT_AUTHOR_NAME: name,
        GIT_AUTHOR_EMAIL: email,
        GIT_COMMITTER_NAME: 'Committer',
        GIT_COMMITTER_EMAIL: 'c@example.com',
        GIT_AUTHOR_DATE: date,
        GIT_COMMITTER_DATE: date,
      },
    });
  };
  const write = (name: string, body: string) => writeFileSync(path.join(ws, name), body);
  const commit = (message: string, author?: string) => {
    run(['add', '-A']);
    run(['commit', '-qm', message], author);
    return run(['rev-parse', 'HEAD']).trim();
  };
  run(['init', '-q', '-b', 'main']);
  write('a.txt', 'one\ntwo\n');
  write('b.txt', 'bee\n');
  const root = commit('Initial import');
  write('a.txt', 'one\ntwo\nthree\n');
  const fix = commit('Fix the parser\n\nThe long story.\nSecond line.', 'Bob Builder <bob@example.com>');
  run(['checkout', '-q', '-b', 'side']);
  write('side.txt', 's1\ns2\n');
  const side = commit(`side work\n\n${'z'.repeat(MAX_SEARCH)}`);
  run(['checkout', '-q', 'main']);
  write('b.txt', 'bee\nbuzz\n');
  const onMain = commit('main work', 'Bob Builder <bob@example.com>');
  run(['merge', '-q', '--no-ff', '-m', 'merge side', 'side']);
  const merge = run(['rev-parse', 'HEAD']).trim();
  run(['mv', 'b.txt', 'renamed.txt']);
  const rename = commit('rename b');
  run(['tag', 'v1', fix]);
  return { run, root, fix, side, onMain, merge, rename };
}

t.test('the log searched: message, author, sha prefix; merged, newest first, paged', async (t) => {
  const ws = tempDir(t, 'acpd-git-search-');
  const h = makeHistory(ws);
  const d = await startDaemon(t, { workspace: ws, dataDir: tempDir(t), checkAnswers: true });
  const client = new DaemonClient({ baseUrl: d.baseUrl });
  const search = async (q: string, limit = 50, skip = 0) => {
    const out = await client.workspaceGitLog(limit, skip, undefined, { search: q });
    return { subjects: out.entries.map((e) => e.subject), hasMore: out.hasMore };
  };
  t.same((await search('PARSER')).subjects, ['Fix the parser'], 'the message, case-insensitive');
  t.same((await search('long story')).subjects, ['Fix the parser'], "the message's body too");
  t.same((await search('a.b')).subjects, [], 'a fixed string: `.` is no wildcard');
  t.same((await search('bob@example')).subjects, ['main work', 'Fix the parser'], 'the author');
  t.same((await search(h.side.slice(0, 6))).subjects, ['side work'], 'a sha prefix');
  t.same((await search(h.side.slice(0, 3))).subjects, [], 'fewer than 4 hex digits is no sha');
  // "b" is in the message "rename b" and in Bob's name (whose "Fix the parser" has no "b"): one list.
  t.same(
    (await search('b')).subjects,
    ['rename b', 'main work', 'Fix the parser'],
    'hits of the message and the author, each once, newest first',
  );
  // "e": the message walk finds all but "main work" and the root, the author walk (Alice, Bob Builder) adds
  // them last; the answer is by date all the same.
  t.same(
    (await search('e')).subjects,
    ['rename b', 'merge side', 'main work', 'side work', 'Fix the parser', 'Initial import'],
    'newest commit first, whichever walk found it',
  );
  t.same(await search('e', 2, 2), { subjects: ['main work', 'side work'], hasMore: true });
  t.same(await search('b', 2, 0), { subjects: ['rename b', 'main work'], hasMore: true });
  t.same(await search('b', 2, 2), { subjects: ['Fix the parser'], hasMore: false });
  t.same((await search('  parser  ')).subjects, ['Fix the parser'], 'trimmed');
  t.same((await search(' '.repeat(300) + 'parser')).subjects, ['Fix the parser'], 'trimmed before it is cut');
  t.same((await search('z'.repeat(MAX_SEARCH) + 'y')).subjects, ['side work'], `cut to ${MAX_SEARCH} characters`);
  t.same((await search('work', 50, 0)).subjects, ['main work', 'side work']);
  const onlyMain = await client.workspaceGitLog(50, 0, 'main~2', { search: 'work' });
  t.same(
    onlyMain.entries.map((e) => e.subject),
    ['main work'],
    'a range limits the walks (main~2: before the merge)',
  );
  const bad = await client.workspaceGitLog(5, 0, '..main');
  t.same(bad.entries.length, 5, 'a range starting with `..` is ignored (HEAD is walked)');
  const unknown = await client.workspaceGitLog(5, 0, 'no-such-branch');
  t.match(unknown, { available: false, entries: [] }, 'a range git refuses: available false');
});

t.test('commit detail: plain, merge, root, rename; bad and unknown shas', async (t) => {
  const ws = tempDir(t, 'acpd-git-commit-');
  const h = makeHistory(ws);
  const d = await startDaemon(t, { workspace: ws, dataDir: tempDir(t), checkAnswers: true });
  const client = new DaemonClient({ baseUrl: d.baseUrl });

  const fix = await client.workspaceGitCommitDetail(h.fix.slice(0, 7));
  t.same(fix, {
    v: 1,
    workspaceCwd: ws,
    available: true,
    sha: h.fix,
    shortSha: h.fix.slice(0, fix.shortSha?.length ?? 7),
    authorName: 'Bob Builder',
    authorEmail: 'bob@example.com',
    authorDate: Number(h.run(['log', '-1', '--format=%at', h.fix])),
    subject: 'Fix the parser',
    body: 'The long story.\nSecond line.',
    refs: 'tag: v1',
    parents: [h.root],
    files: [{ path: 'a.txt', added: 1, removed: 0, isBinary: false }],
    filesCount: 1,
    linesAdded: 1,
    linesRemoved: 0,
    hiddenCount: 0,
  });

  const merge = await client.workspaceGitCommitDetail(h.merge);
  t.same(merge.parents, [h.onMain, h.side]);
  t.same(merge.body, '', 'no body: an empty string');
  t.same(merge.files, [{ path: 'side.txt', added: 2, removed: 0, isBinary: false }], 'against the first parent');

  const root = await client.workspaceGitCommitDetail(h.root);
  t.same(root.parents, []);
  t.same(
    root.files?.map((f) => [f.path, f.added]),
    [
      ['a.txt', 2],
      ['b.txt', 1],
    ],
    'a root commit against the empty tree',
  );
  t.same([root.filesCount, root.linesAdded, root.linesRemoved], [2, 3, 0]);

  const rename = await client.workspaceGitCommitDetail(h.rename);
  t.same(rename.files, [{ path: 'renamed.txt', added: 0, removed: 0, isBinary: false }], 'a rename is one file');
  t.equal(rename.refs, 'HEAD -> main');

  t.same(await client.workspaceGitCommitDetail('0'.repeat(40)), { v: 1, workspaceCwd: ws, available: false });
  for (const sha of ['', 'abc', 'xyz1234', '-1234567', 'HEAD']) {
    const res = await fetch(`${d.baseUrl}/workspace/git/log/commit?sha=${encodeURIComponent(sha)}`);
    t.equal(res.status, 400, `sha ${JSON.stringify(sha)}`);
    t.same(await res.json(), {
      error: 'sha query parameter is required',
      code: 'parse_error',
      errorKind: 'parse_error',
      status: 400,
    });
  }
  const missing = await fetch(`${d.baseUrl}/workspace/git/log/commit`);
  t.equal(missing.status, 400, 'no sha');
});

t.test('commit detail lists the first 50 files and counts the rest', async (t) => {
  const ws = tempDir(t, 'acpd-git-many-');
  const run = (...args: string[]) => execFileSync('git', args, { cwd: ws, stdio: 'ignore' });
  run('init', '-q', '-b', 'main');
  run('config', 'user.email', 'test@example.com');
  run('config', 'user.name', 'Test');
  for (let i = 0; i < 53; i++) writeFileSync(path.join(ws, `f${String(i).padStart(2, '0')}.txt`), 'x\n');
  run('add', '.');
  run('commit', '-qm', 'many');
  const d = await startDaemon(t, { workspace: ws, dataDir: tempDir(t), checkAnswers: true });
  const client = new DaemonClient({ baseUrl: d.baseUrl });
  const head = (await client.workspaceGitLog(1, 0)).entries[0]?.sha ?? '';
  const out = await client.workspaceGitCommitDetail(head);
  t.equal(out.files?.length, 50);
  t.match(out, { filesCount: 53, linesAdded: 53, hiddenCount: 3 });
});

t.test('branches: local with tracking, remote, tags, recent, head', async (t) => {
  const ws = tempDir(t, 'acpd-git-branches-');
  const h = makeHistory(ws);
  h.run(['remote', 'add', 'origin', ws]);
  h.run(['update-ref', 'refs/remotes/origin/main', `${h.rename}~1`]);
  h.run(['symbolic-ref', 'refs/remotes/origin/HEAD', 'refs/remotes/origin/main']);
  h.run(['branch', '--set-upstream-to=origin/main', 'main']);
  h.run(['config', 'branch.side.remote', 'origin']);
  h.run(['config', 'branch.side.merge', 'refs/heads/gone']);
  h.run(['tag', '-a', 'v2', '-m', 'release two', h.merge]);
  const d = await startDaemon(t, { workspace: ws, dataDir: tempDir(t), checkAnswers: true });
  const client = new DaemonClient({ baseUrl: d.baseUrl });
  const out = await client.workspaceGitBranches();
  t.match(out, { v: 1, workspaceCwd: ws, available: true, head: 'main', detached: false, recent: ['side'] });
  t.same(
    out.local.map((b) => [b.name, b.isHead, b.upstream, b.ahead, b.behind, b.commitSubject, b.upstreamGone]),
    [
      ['main', true, 'origin/main', 1, 0, 'rename b', undefined],
      ['side', false, 'origin/gone', 0, 0, 'side work', true],
    ],
  );
  t.equal(out.local[0]?.pushTarget, 'origin/main');
  t.same(
    out.remote.map((b) => b.name),
    ['origin/main'],
    'the symbolic origin/HEAD is left out',
  );
  t.same(
    out.tags.map((x) => [x.name, x.subject]),
    [
      ['v2', 'release two'],
      ['v1', 'Fix the parser'],
    ],
    'newest first',
  );

  h.run(['checkout', '-q', '--detach', h.fix]);
  const detached = await client.workspaceGitBranches();
  t.match(detached, { head: h.fix.slice(0, detached.head.length), detached: true, recent: ['main', 'side'] });
  t.equal(detached.local[0]?.isHead, false);
});

t.test('a workspace that is not a repository', async (t) => {
  const ws = tempDir(t, 'acpd-nogit-');
  const d = await startDaemon(t, { workspace: ws, dataDir: tempDir(t), checkAnswers: true });
  const client = new DaemonClient({ baseUrl: d.baseUrl });
  t.same(await client.workspaceGit(), { v: 2, workspaceCwd: ws, branch: null });
  t.match(await client.workspaceGitDiff(), { v: 1, available: false, files: [], filesCount: 0 });
  t.match(await client.workspaceGitDiffFile('a.txt'), { v: 1, available: false, hunks: [] });
  t.match(await client.workspaceGitLog(), { v: 1, available: false, entries: [], hasMore: false });
  t.match(await client.workspaceGitLog(5, 0, undefined, { search: 'x' }), { available: false, entries: [] });
  t.same(await client.workspaceGitCommitDetail('1234567'), { v: 1, workspaceCwd: ws, available: false });
  const err = await client.workspaceGitBranches().then(
    () => undefined,
    (e: unknown) => e as { status: number; body: Record<string, unknown> },
  );
  t.equal(err?.status, 404);
  t.match(err?.body, { error: 'not_a_git_repository', code: 'not_a_git_repository', message: /not a git repository/ });
  t.notMatch(String(err?.body.message), ws, "the workspace's path is not in the message");
});
