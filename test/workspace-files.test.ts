/**
 * The workspace's files over HTTP, driven by the published client
 * (`DaemonClient`) against a real acpd on a real git repository: reads,
 * windows and cursors, every confinement case refused, writes guarded by
 * `expectedHash` and by --allow-file-writes, and the `fs.access` frame a
 * write sends to the workspace's sessions.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { DaemonClient, DaemonHttpError } from '@qwen-code/sdk/daemon';
import { startDaemon, tempDir, type Teardown } from './support/app.js';
import { rejection } from './support/rejections.js';

/** A repository with a commit, a dirty file, a symlink that escapes, a symlinked parent that escapes, a FIFO. */
function makeRepo(t: Teardown): { ws: string; outside: string } {
  const ws = tempDir(t, 'acpd-files-');
  const outside = tempDir(t, 'acpd-outside-');
  writeFileSync(path.join(outside, 'secret.txt'), 'secret\n');
  const run = (...args: string[]) => execFileSync('git', args, { cwd: ws, stdio: 'ignore' });
  run('init', '-q', '-b', 'main');
  run('config', 'user.email', 'test@example.com');
  run('config', 'user.name', 'Test');
  writeFileSync(path.join(ws, 'README.md'), 'one\ntwo\nthree\nfour\nfive\n');
  mkdirSync(path.join(ws, 'src'));
  writeFileSync(path.join(ws, 'src', 'a.ts'), 'export const a = 1;\n');
  writeFileSync(path.join(ws, 'bin.dat'), Buffer.from([0, 1, 2, 3, 4, 5]));
  run('add', '.');
  run('commit', '-qm', 'first');
  writeFileSync(path.join(ws, 'README.md'), 'one\ntwo\nthree\nfour\nfive\nsix\n');
  symlinkSync(path.join(outside, 'secret.txt'), path.join(ws, 'escape.txt'));
  symlinkSync(outside, path.join(ws, 'outdir'));
  symlinkSync('src/a.ts', path.join(ws, 'inside-link.ts'));
  execFileSync('mkfifo', [path.join(ws, 'pipe')]);
  return { ws, outside };
}

async function kindOf(p: Promise<unknown>): Promise<{ status: number; errorKind: unknown }> {
  const err = await rejection(p);
  if (!(err instanceof DaemonHttpError)) throw err;
  return { status: err.status, errorKind: (err.body as Record<string, unknown>).errorKind };
}

t.test('reads: text, windows, cursors, bytes, stat, list, glob', async (t) => {
  const { ws } = makeRepo(t);
  const d = await startDaemon(t, { workspace: ws, checkAnswers: true });
  const client = new DaemonClient({ baseUrl: d.baseUrl });

  const whole = await client.readWorkspaceFile('README.md');
  t.equal(whole.kind, 'file');
  t.equal(whole.content, 'one\ntwo\nthree\nfour\nfive\nsix\n');
  t.equal(
    whole.hash,
    `sha256:${execFileSync('sha256sum', [path.join(ws, 'README.md')])
      .toString()
      .slice(0, 64)}`,
  );
  t.equal(whole.hasMore, false);
  t.equal(whole.nextCursor, null);

  const page1 = await client.readWorkspaceFile('README.md', { limit: 2 });
  t.equal(page1.content, 'one\ntwo');
  t.equal(page1.hasMore, true);
  t.type(page1.nextCursor, 'string');
  const page2 = await client.readWorkspaceFile('README.md', { limit: 2, cursor: page1.nextCursor ?? '' });
  t.equal(page2.content, 'three\nfour');
  // As the qwen daemon answers a cursor page: a window, without the whole file's hash or line count.
  t.equal(page2.truncated, true);
  t.equal(page2.hash, undefined);
  t.equal(page2.originalLineCount, null);
  t.equal(page1.originalLineCount, 7);
  const fromLine = await client.readWorkspaceFile('README.md', { line: 5, limit: 1 });
  t.equal(fromLine.content, 'five');
  const capped = await client.readWorkspaceFile('README.md', { maxBytes: 5 });
  t.equal(capped.content, 'one\nt');
  t.equal(capped.truncated, true);
  t.equal(capped.hasMore, true);
  t.equal(capped.nextCursor, null, 'a read cut by maxBytes names no cursor: pages follow lines');

  const bytes = await client.readWorkspaceFileBytes('bin.dat', { offset: 2, maxBytes: 2 });
  t.same(Buffer.from(bytes.contentBase64, 'base64'), Buffer.from([2, 3]));
  t.equal(bytes.sizeBytes, 6);
  t.same(await kindOf(client.readWorkspaceFile('bin.dat')), { status: 422, errorKind: 'binary_file' });

  // A symlink that stays inside is followed; the answer names the real file.
  const viaLink = await client.readWorkspaceFile('inside-link.ts');
  t.equal(viaLink.path, 'src/a.ts');

  const st = (await client.fileStat('src')) as { type: string; path: string };
  t.equal(st.type, 'directory');
  const list = (await client.dirList('.')) as { entries: { name: string; kind: string }[] };
  t.ok(list.entries.some((e) => e.name === 'README.md' && e.kind === 'file'));
  t.notOk(
    list.entries.some((e) => e.name === '.git'),
    'git internals are not listed',
  );
  const glob = (await client.glob('**/*.ts')) as { matches: string[] };
  t.same(glob.matches.sort(), ['src/a.ts'], 'the symlink to a.ts resolves to it once; nothing outside');
  const globOut = (await client.glob('outdir/*')) as { matches: string[] };
  t.same(globOut.matches, [], 'hits through a symlinked directory outside are dropped');
  t.same(await kindOf(client.readWorkspaceFile('nope.md')), { status: 404, errorKind: 'path_not_found' });
});

t.test('ignore rules: root .gitignore, .qwenignore and .git/ hide entries unless asked for', async (t) => {
  const { ws } = makeRepo(t);
  writeFileSync(path.join(ws, '.gitignore'), '# build output\ndist/\n*.log\nbuild\n!keep.log\n');
  writeFileSync(path.join(ws, '.qwenignore'), 'notes.md\n');
  mkdirSync(path.join(ws, 'dist'));
  writeFileSync(path.join(ws, 'dist', 'out.js'), 'x\n');
  writeFileSync(path.join(ws, 'app.log'), 'log\n');
  writeFileSync(path.join(ws, 'keep.log'), 'kept\n');
  writeFileSync(path.join(ws, 'src', 'deep.log'), 'deep\n');
  writeFileSync(path.join(ws, 'build'), 'a file named like a directory rule\n');
  writeFileSync(path.join(ws, 'notes.md'), 'private\n');
  const d = await startDaemon(t, { workspace: ws, args: ['--allow-file-writes'], checkAnswers: true });
  const client = new DaemonClient({ baseUrl: d.baseUrl });
  const get = async (route: string): Promise<Record<string, unknown>> => {
    const res = await fetch(`${d.baseUrl}${route}`);
    t.equal(res.status, 200, route);
    return (await res.json()) as Record<string, unknown>;
  };
  const names = (list: unknown) =>
    ((list as { entries: { name: string; ignored: boolean }[] }).entries ?? [])
      .map((e) => `${e.name}${e.ignored ? ' (ignored)' : ''}`)
      .sort();

  t.same(
    names(await client.dirList('.')),
    [
      '.acpd',
      '.gitignore',
      '.qwenignore',
      'README.md',
      'bin.dat',
      'escape.txt',
      'inside-link.ts',
      'keep.log',
      'outdir',
      'pipe',
      'src',
    ],
    'ignored entries are left out by default',
  );
  t.same(
    names(await get('/list?path=.&includeIgnored=1')),
    [
      '.acpd',
      '.git (ignored)',
      '.gitignore',
      '.qwenignore',
      'README.md',
      'app.log (ignored)',
      'bin.dat',
      'build (ignored)',
      'dist (ignored)',
      'escape.txt',
      'inside-link.ts',
      'keep.log',
      'notes.md (ignored)',
      'outdir',
      'pipe',
      'src',
    ],
    'includeIgnored lists them, each marked',
  );
  t.same(((await client.glob('**/*.log')) as { matches: string[] }).matches, ['keep.log']);
  t.same(
    (
      (await get('/glob?pattern=' + encodeURIComponent('**/*.log') + '&includeIgnored=true')).matches as string[]
    ).sort(),
    ['app.log', 'keep.log', 'src/deep.log'],
  );

  t.equal((await client.readWorkspaceFile('app.log')).matchedIgnore, 'file', 'an ignored file can still be read');
  t.equal((await client.readWorkspaceFile('dist/out.js')).matchedIgnore, 'directory');
  t.equal((await client.readWorkspaceFile('notes.md')).matchedIgnore, 'file', '.qwenignore applies too');
  t.equal((await client.readWorkspaceFile('README.md')).matchedIgnore, null);
  const wrote = await client.writeWorkspaceFile({ path: 'dist/new.js', content: 'y\n', mode: 'create' });
  t.equal(wrote.matchedIgnore, 'directory', 'a write says so too');

  // An edit of .gitignore shows in the next request.
  writeFileSync(path.join(ws, '.gitignore'), 'dist/\n');
  t.ok(names(await client.dirList('.')).includes('app.log'), 'rules re-read after .gitignore changed');
  t.equal((await client.readWorkspaceFile('app.log')).matchedIgnore, null);
});

t.test('confinement: every way out is refused with a 4xx', async (t) => {
  const { ws, outside } = makeRepo(t);
  const d = await startDaemon(t, { workspace: ws, args: ['--allow-file-writes'], checkAnswers: true });
  const client = new DaemonClient({ baseUrl: d.baseUrl });
  const cases: [string, () => Promise<unknown>, number, string][] = [
    ['..', () => client.readWorkspaceFile('../x'), 400, 'path_outside_workspace'],
    [
      'absolute outside',
      () => client.readWorkspaceFile(path.join(outside, 'secret.txt')),
      400,
      'path_outside_workspace',
    ],
    ['symlink out', () => client.readWorkspaceFile('escape.txt'), 400, 'symlink_escape'],
    ['symlinked parent out', () => client.readWorkspaceFile('outdir/secret.txt'), 400, 'symlink_escape'],
    ['bytes via symlink', () => client.readWorkspaceFileBytes('escape.txt'), 400, 'symlink_escape'],
    ['stat via parent', () => client.fileStat('outdir/secret.txt'), 400, 'symlink_escape'],
    ['list via parent', () => client.dirList('outdir'), 400, 'symlink_escape'],
    ['glob ..', () => client.glob('../*'), 400, 'parse_error'],
    ['FIFO', () => client.readWorkspaceFile('pipe'), 400, 'parse_error'],
    ['FIFO bytes', () => client.readWorkspaceFileBytes('pipe'), 400, 'parse_error'],
    ['device', () => client.readWorkspaceFile('/dev/zero'), 400, 'path_outside_workspace'],
    [
      'write through symlink',
      () => client.writeWorkspaceFile({ path: 'escape.txt', content: 'x', mode: 'create' }),
      400,
      'symlink_escape',
    ],
    [
      'write through symlinked parent',
      () => client.writeWorkspaceFile({ path: 'outdir/new.txt', content: 'x', mode: 'create' }),
      400,
      'symlink_escape',
    ],
    [
      'write into .git',
      () => client.writeWorkspaceFile({ path: '.git/hooks/pre-commit', content: 'x', mode: 'create' }),
      403,
      'permission_denied',
    ],
    [
      'write into the data dir',
      () => client.writeWorkspaceFile({ path: '.acpd/x.sqlite', content: 'x', mode: 'create' }),
      403,
      'permission_denied',
    ],
    [
      'upload through a symlinked parent',
      () => client.uploadWorkspaceFile({ path: 'outdir/up.bin', data: new Uint8Array([1]) }),
      400,
      'symlink_escape',
    ],
  ];
  for (const [name, call, status, errorKind] of cases) t.same(await kindOf(call()), { status, errorKind }, name);
  t.equal(readFileSync(path.join(outside, 'secret.txt'), 'utf8'), 'secret\n', 'nothing outside changed');
  t.notOk(
    (() => {
      try {
        readFileSync(path.join(outside, 'new.txt'));
        return true;
      } catch {
        return false;
      }
    })(),
    'nothing created outside',
  );
});

t.test('writes are refused without --allow-file-writes', async (t) => {
  const { ws } = makeRepo(t);
  const d = await startDaemon(t, { workspace: ws, checkAnswers: true });
  const client = new DaemonClient({ baseUrl: d.baseUrl });
  const { hash } = await client.readWorkspaceFile('README.md');
  t.same(await kindOf(client.writeWorkspaceFile({ path: 'n.txt', content: 'x', mode: 'create' })), {
    status: 403,
    errorKind: 'file_writes_disabled',
  });
  t.same(
    await kindOf(client.editWorkspaceFile({ path: 'README.md', oldText: 'one', newText: '1', expectedHash: hash! })),
    { status: 403, errorKind: 'file_writes_disabled' },
  );
  t.same(await kindOf(client.uploadWorkspaceFile({ path: 'u.bin', data: new Uint8Array([1]) })), {
    status: 403,
    errorKind: 'file_writes_disabled',
  });
  t.equal(readFileSync(path.join(ws, 'README.md'), 'utf8'), 'one\ntwo\nthree\nfour\nfive\nsix\n');
  const caps = await client.capabilities();
  t.notOk(caps.features.includes('workspace_file_write'));
});

t.test(
  'writes: create, replace and edit guarded by expectedHash; upload never overwrites; fs.access frames',
  async (t) => {
    const { ws } = makeRepo(t);
    const d = await startDaemon(t, { workspace: ws, args: ['--allow-file-writes'], checkAnswers: true });
    const client = new DaemonClient({ baseUrl: d.baseUrl });
    t.ok((await client.capabilities()).features.includes('workspace_file_write'));
    const session = await client.createOrAttachSession({ workspaceCwd: ws });
    const frames: { type: string; data: unknown }[] = [];
    const ac = new AbortController();
    t.teardown(() => ac.abort());
    let opened!: () => void;
    const open = new Promise<void>((resolve) => (opened = resolve));
    const seen = (async () => {
      for await (const ev of client.subscribeEvents(session.sessionId, { signal: ac.signal })) {
        // The stream is live once its opening replay is over: writes after this reach it.
        if (ev.type === 'replay_complete') opened();
        if (ev.type === 'fs.access') {
          frames.push({ type: ev.type, data: ev.data });
          if (frames.length === 3) return;
        }
      }
    })().catch(() => {});
    await open;

    const created = await client.writeWorkspaceFile({ path: 'notes/new.txt', content: 'hello\n', mode: 'create' });
    t.equal(created.created, true);
    t.equal(readFileSync(path.join(ws, 'notes/new.txt'), 'utf8'), 'hello\n');
    t.same(await kindOf(client.writeWorkspaceFile({ path: 'notes/new.txt', content: 'again', mode: 'create' })), {
      status: 409,
      errorKind: 'file_already_exists',
    });

    const stale = (await client.readWorkspaceFile('README.md')).hash!;
    writeFileSync(path.join(ws, 'README.md'), 'changed behind the client\n');
    const conflict = await rejection(
      client.writeWorkspaceFile({ path: 'README.md', content: 'mine', mode: 'replace', expectedHash: stale }),
    );
    t.ok(conflict instanceof DaemonHttpError);
    const body = (conflict as DaemonHttpError).body as Record<string, unknown>;
    t.equal((conflict as DaemonHttpError).status, 409);
    t.equal(body.errorKind, 'hash_mismatch');
    const current = (await client.readWorkspaceFile('README.md')).hash!;
    t.equal(body.currentHash, current, 'the 409 carries the current hash');
    t.equal(readFileSync(path.join(ws, 'README.md'), 'utf8'), 'changed behind the client\n', 'nothing written');

    const replaced = await client.writeWorkspaceFile({
      path: 'README.md',
      content: 'mine\n',
      mode: 'replace',
      expectedHash: current,
    });
    t.equal(replaced.created, false);
    t.same(
      await kindOf(
        client.editWorkspaceFile({ path: 'README.md', oldText: 'mine', newText: 'x', expectedHash: current }),
      ),
      { status: 409, errorKind: 'hash_mismatch' },
      'an edit with a stale hash',
    );
    const edited = await client.editWorkspaceFile({
      path: 'README.md',
      oldText: 'mine',
      newText: 'ours',
      expectedHash: replaced.hash,
    });
    t.equal(readFileSync(path.join(ws, 'README.md'), 'utf8'), 'ours\n');
    t.equal(edited.hash, (await client.readWorkspaceFile('README.md')).hash);

    const up1 = await client.uploadWorkspaceFile({ path: 'notes/new.txt', data: new Uint8Array([7, 8]) });
    t.equal(up1.path, 'notes/new (1).txt', 'an occupied name is numbered');
    t.same(readFileSync(path.join(ws, 'notes/new.txt'), 'utf8'), 'hello\n');

    await seen;
    t.same(
      frames.map((f) => (f.data as { intent: string; relPath: string }).relPath),
      ['notes/new.txt', 'README.md', 'README.md'],
      'each write reached the session (create, replace, edit)',
    );
  },
);
