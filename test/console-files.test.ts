// The web console's Files and Changes views (issue 17) in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core) against a real acpd on a real git repository: a committed file changed, new
// files, a binary one, a long one read page by page, and a file whose name is HTML. The Files view walks the
// directories and shows a file's text; the Changes view shows the branch, the changed files and a diff with
// its added and removed lines marked; a write over HTTP (its `fs.access` frame) and an agent's write (its
// tool call completed, its turn ended) refresh the view on screen.
// A workspace that is not a repository shows so; a refused read shows its envelope in the view.
// ACPD_SCREENSHOT=1 writes docs/console-changes.png (the README's).
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startDaemon, tempDir, type Teardown } from './support/app.js';
import { gitRepo } from './support/git-repo.js';
import { openEvents } from './support/sse.js';
import { requireSystemPackage, SYSTEM_PACKAGES } from './support/system-deps.js';

const TOKEN = 'console-files-token';
const SCREENSHOT = fileURLToPath(new URL('../../docs/console-changes.png', import.meta.url));
/** A file name that is markup: shown as text, it is harmless; parsed as HTML, it would make an <img>. */
const HTML_NAME = '<img src=x onerror=window.__pwned=1>.txt';
/** More lines than the console reads at once (1000 a page). */
const LONG = Array.from({ length: 2500 }, (_, i) => `line ${i + 1}`).join('\n') + '\n';

async function launch(t: Teardown): Promise<{ browser: Browser; page: Page; pageErrors: string[] }> {
  const browser = await chromium.launch({ executablePath: SYSTEM_PACKAGES.chromium.binary });
  t.teardown(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1180, height: 760 }, colorScheme: 'light' });
  const pageErrors: string[] = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  return { browser, page, pageErrors };
}

/** Opens the console, giving the token when asked for it. */
async function openConsole(page: Page, baseUrl: string, token?: string): Promise<void> {
  await page.goto(`${baseUrl}/console/`);
  if (token !== undefined) {
    await page.locator('#token-dialog').waitFor({ state: 'visible' });
    await page.fill('#token', token);
    await page.press('#token', 'Enter');
    await page.locator('#token-dialog').waitFor({ state: 'hidden' });
  }
  await page.locator('#sessions li').first().waitFor();
}

const entry = (page: Page, rel: string) => page.locator(`#files-entries button[data-path="${CSS.escape(rel)}"]`);
const change = (page: Page, rel: string) => page.locator(`#changes-files button[data-path="${CSS.escape(rel)}"]`);

// Node has no CSS.escape; the test needs only quotes and backslashes escaped inside "…".
const CSS = { escape: (s: string) => s.replace(/["\\]/g, '\\$&') };

t.test('in Chromium: the Files and Changes views of a repository, refreshed by a write', async (t) => {
  if (!requireSystemPackage(t, SYSTEM_PACKAGES.chromium)) return;
  const repo = gitRepo(t, [
    { message: 'first commit', files: { 'README.md': 'one\ntwo\nthree\n', 'src/app.ts': 'export const x = 1;\n' } },
    { message: 'add a logo', files: { 'logo.bin': Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0, 1, 2]) } },
  ]);
  repo.write('README.md', 'one\nTWO\nthree\nfour\n');
  repo.write('notes.txt', 'fresh <b>not bold</b>\n');
  repo.write(HTML_NAME, '<script>window.__pwned = 2</script>\n');
  repo.write('long.txt', LONG);
  const d = await startDaemon(t, {
    workspace: repo.dir,
    dataDir: tempDir(t),
    args: ['--token', TOKEN, '--allow-file-writes'],
  });
  const { page, pageErrors } = await launch(t);
  await openConsole(page, d.baseUrl, TOKEN);
  await page.click('#new-session');
  await page.locator('#session-state', { hasText: 'idle' }).waitFor();

  // Files, reached by keyboard: the tab list's arrow key.
  await page.focus('#tab-transcript');
  await page.keyboard.press('ArrowRight');
  await entry(page, 'README.md').waitFor();
  t.equal(await page.getAttribute('#tab-files', 'aria-selected'), 'true', 'the arrow key selected Files');
  t.ok(await page.locator('#transcript').isHidden(), 'the conversation is put away');
  t.same(
    await page.locator('#files-entries button').allTextContents(),
    ['src/', HTML_NAME, 'logo.bin', 'long.txt', 'notes.txt', 'README.md'],
    'directories first, then the files, names as they are',
  );

  await entry(page, 'README.md').focus();
  await page.keyboard.press('Enter');
  await page.locator('#file-body .file-text', { hasText: 'TWO' }).waitFor();
  t.equal(await page.textContent('#file-body .file-text'), 'one\nTWO\nthree\nfour\n', "the file's text");
  t.match(await page.textContent('#file-head'), /README\.md\s*19 bytes/);

  await entry(page, 'notes.txt').click();
  await page.locator('#file-body .file-text', { hasText: 'fresh' }).waitFor();
  t.equal(await page.textContent('#file-body .file-text'), 'fresh <b>not bold</b>\n', 'markup in a file is text');
  t.equal(await page.locator('#file-body b').count(), 0);

  await entry(page, HTML_NAME).click();
  await page.locator('#file-body .file-text', { hasText: '__pwned' }).waitFor();
  t.equal(await page.textContent('#file-head .path'), HTML_NAME, 'the name shown as text');
  t.equal(await page.locator('#files-view img, #files-view script').count(), 0, 'no element made from a name');
  t.equal(await page.evaluate('typeof window.__pwned'), 'undefined', 'nothing of it ran');

  await entry(page, 'logo.bin').click();
  await page.locator('#file-body', { hasText: 'A binary file' }).waitFor();

  // A long file: the first page, then the rest with "Show more"; together, the whole file.
  await entry(page, 'long.txt').click();
  await page.locator('#file-body .file-text', { hasText: 'line 1000' }).waitFor();
  t.notMatch(await page.textContent('#file-body .file-text'), /line 1001/, 'one page at first');
  await page.getByRole('button', { name: 'Show more' }).click();
  await page.locator('#file-body .file-text', { hasText: 'line 2000' }).waitFor();
  await page.getByRole('button', { name: 'Show more' }).click();
  await page.locator('#file-body .file-text', { hasText: 'line 2500' }).waitFor();
  t.equal(await page.textContent('#file-body .file-text'), LONG, 'the pages join up exactly');
  t.equal(await page.getByRole('button', { name: 'Show more' }).count(), 0, 'no more after the last page');

  // Into a directory and back by its crumbs.
  await entry(page, 'src').click();
  await entry(page, 'src/app.ts').waitFor();
  t.same(await page.locator('#files-path button').allTextContents(), ['workspace', 'src']);
  await page.locator('#files-path button', { hasText: 'workspace' }).click();
  await entry(page, 'README.md').waitFor();

  // Changes: the branch, the changed files, a diff with its lines marked.
  await page.click('#tab-changes');
  await change(page, 'README.md').waitFor();
  t.match(await page.textContent('#changes-status'), /on main.*0 staged, 1 unstaged, 3 untracked/s);
  t.same(
    (await page.locator('#changes-files button .name').allTextContents()).sort(),
    [HTML_NAME, 'long.txt', 'notes.txt', 'README.md'].sort(),
    'the changed files',
  );
  t.same(await change(page, 'README.md').locator('.tag').textContent(), 'modified');
  t.same(await change(page, 'notes.txt').locator('.tag').textContent(), 'new');
  await change(page, 'README.md').click();
  await page.locator('#diff-body .line.add').first().waitFor();
  t.same(await page.locator('#diff-body .line.add .text').allTextContents(), ['+TWO', '+four'], 'added lines');
  t.same(await page.locator('#diff-body .line.del .text').allTextContents(), ['-two'], 'removed lines');
  t.same(await page.locator('#diff-body .line.ctx .text').allTextContents(), [' one', ' three']);
  // A string: the tests are type-checked without the DOM's types.
  const background = (selector: string) =>
    page.evaluate<string>(`getComputedStyle(document.querySelector('${selector}')).backgroundColor`);
  const [added, removed, context] = await Promise.all([
    background('#diff-body .line.add'),
    background('#diff-body .line.del'),
    background('#diff-body .line.ctx'),
  ]);
  t.ok(added !== context && removed !== context && added !== removed, `coloured: ${added} / ${removed}`);
  t.same(
    await page.locator('#changes-log .subject').allTextContents(),
    ['add a logo', 'first commit'],
    'the recent log',
  );
  await change(page, HTML_NAME).click();
  await page.locator('#diff-body .line.add .text', { hasText: '__pwned' }).waitFor();
  t.equal(await page.locator('#changes-view img, #changes-view script').count(), 0, 'the diff is text too');
  if (process.env.ACPD_SCREENSHOT === '1') {
    await change(page, 'README.md').click();
    await page.locator('#diff-body .line.del').waitFor();
    await page.screenshot({ path: SCREENSHOT });
  }

  // A write over HTTP tells the session (`fs.access`): the view on screen reads the workspace again.
  const write = await fetch(`${d.baseUrl}/file/write`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ path: 'made.txt', content: 'made\n', mode: 'create' }),
  });
  t.equal(write.status, 201);
  await change(page, 'made.txt').waitFor();
  t.pass('the written file is listed without a click');

  // A change no frame tells of: the Refresh button.
  repo.write('quiet.txt', 'shh\n');
  await page.click('#workspace-refresh');
  await change(page, 'quiet.txt').waitFor();
  t.pass('the refresh button reads it again');

  // The agent writes a file in a turn another client drives: when its tool call completes and the turn ends,
  // the view on screen reads the workspace again.
  const sessionId = (await page.textContent('#session-title')) ?? '';
  const frames = await openEvents(t, d, sessionId);
  const prompt = await fetch(`${d.baseUrl}/session/${sessionId}/prompt`, {
    method: 'POST',
    headers: { ...d.headers, 'content-type': 'application/json', prefer: 'respond-async' },
    body: JSON.stringify({ prompt: [{ type: 'text', text: '/write by-agent.txt hi' }] }),
  });
  t.equal(prompt.status, 202);
  const ask = await frames.waitFor((f) => f.envelope?.type === 'permission_request', 'permission_request');
  const { requestId, options } = ask.envelope?.data as { requestId: string; options: { optionId: string }[] };
  const vote = await fetch(`${d.baseUrl}/permission/${requestId}`, {
    method: 'POST',
    headers: { ...d.headers, 'content-type': 'application/json' },
    body: JSON.stringify({ outcome: { outcome: 'selected', optionId: options[0]?.optionId } }),
  });
  t.equal(vote.status, 200);
  await change(page, 'by-agent.txt').waitFor();
  t.pass("the agent's write is listed without a click");
  t.same(pageErrors, [], 'no script errors');
});

t.test('in Chromium: a workspace that is not a repository, and a refused read shown in the view', async (t) => {
  if (!requireSystemPackage(t, SYSTEM_PACKAGES.chromium)) return;
  const ws = tempDir(t, 'acpd-plain-');
  writeFileSync(path.join(ws, 'gone.txt'), 'soon gone\n');
  const d = await startDaemon(t, { workspace: ws, dataDir: tempDir(t) });
  const { page, pageErrors } = await launch(t);
  await openConsole(page, d.baseUrl);

  await page.click('#tab-changes');
  await page.locator('#changes-status .not-repo').waitFor();
  t.equal(await page.textContent('#changes-status'), 'This workspace is not a git repository.');
  t.equal(await page.locator('#changes-files li').count(), 0, 'no changed files listed');

  await page.click('#tab-files');
  await entry(page, 'gone.txt').waitFor();
  rmSync(path.join(ws, 'gone.txt'));
  await entry(page, 'gone.txt').click();
  await page.locator('#file-body .error').waitFor();
  t.match(await page.textContent('#file-body .error'), /^404 \(path_not_found\): /, 'the 404 envelope, in the view');
  t.same(pageErrors, [], 'no script errors');
});
