// The web console (issue 15): /console served by a real acpd with a token on 127.0.0.1. Its files over plain
// HTTP (public, fixed, cached by ETag, the API still behind the token and the Origin guard), then the page end
// to end in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core): the token asked for
// after a 401 and kept in sessionStorage, never in a URL; a session created, a prompt and its streamed reply,
// a permission approved with its button (the file is written), a reload that shows the same history, a turn
// cancelled, the session closed and loaded again. ACPD_SCREENSHOT=1 writes docs/console.png (the README's).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { chromium, type Page, type Request } from 'playwright-core';
import { startDaemon } from './support/app.js';
import { requireSystemPackage, SYSTEM_PACKAGES } from './support/system-deps.js';

const TOKEN = 'console-test-token';
const SCREENSHOT = fileURLToPath(new URL('../../docs/console.png', import.meta.url));

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers, redirect: 'manual' });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

t.test('the console files are served without the token; the API still needs it', async (t) => {
  const d = await startDaemon(t, { args: ['--token', TOKEN] });
  const base = `${d.baseUrl}/console`;

  const redirect = await get(base);
  t.equal(redirect.status, 308, '/console goes to the page');
  t.equal(redirect.headers.get('location'), 'console/', 'by a relative Location (a proxy prefix is kept)');

  const page = await get(`${base}/`);
  t.equal(page.status, 200);
  t.match(page.headers.get('content-type'), /^text\/html/);
  t.match(page.text, /<script type="module" src="app.js"><\/script>/);
  t.match(page.headers.get('content-security-policy'), /script-src 'self'/, 'no script but its own');
  t.match(page.headers.get('content-security-policy'), /connect-src 'self'/, 'requests to this origin only');
  t.equal(page.headers.get('cache-control'), 'no-cache');
  const etag = page.headers.get('etag') ?? '';
  t.match(etag, /^"[\w-]+"$/);
  t.equal((await get(`${base}/`, { 'if-none-match': etag })).status, 304, 'unchanged: 304');

  for (const [file, type] of [
    ['app.js', /^text\/javascript/],
    ['style.css', /^text\/css/],
  ] as const) {
    const res = await get(`${base}/${file}`);
    t.equal(res.status, 200, file);
    t.match(res.headers.get('content-type'), type, `${file}: its type`);
    t.equal(res.headers.get('x-content-type-options'), 'nosniff');
  }

  // Every module the page loads, followed from app.js: all served, so the browser can run it.
  const seen = new Set<string>();
  const queue = [`${base}/app.js`];
  for (let url = queue.shift(); url !== undefined; url = queue.shift()) {
    if (seen.has(url)) continue;
    seen.add(url);
    const res = await get(url);
    t.equal(res.status, 200, `${url.slice(d.baseUrl.length)} is served`);
    for (const match of res.text.matchAll(/^(?:import|export)\b[^;]*?from '(\.[^']+)'/gm)) {
      queue.push(new URL(match[1] ?? '', url).href);
    }
  }
  t.ok(seen.has(`${base}/client/index.js`), 'the page loads acpd/client from /console/client/');
  t.ok(seen.size >= 5, `the client's modules were followed (${seen.size} files)`);

  const missing = await get(`${base}/nope.js`);
  t.equal(missing.status, 404);
  t.match(JSON.parse(missing.text), { error: /not found/ }, 'an unknown file: the JSON envelope');
  t.equal((await get(`${base}/client/index.d.ts`)).status, 404, 'type declarations are not served');
  t.equal((await get(`${base}/client/index.js.map`)).status, 404, 'nor source maps');

  t.equal((await get(`${d.baseUrl}/capabilities`)).status, 401, 'the API still needs the token');
  t.equal((await get(`${d.baseUrl}/docs/json`)).status, 401, 'and so do the docs');
  const foreign = await get(`${base}/`, { origin: 'http://evil.example' });
  t.equal(foreign.status, 403, 'a foreign Origin is refused here too');
  t.equal(foreign.headers.get('access-control-allow-origin'), null, 'and gets no CORS opening');
});

/** The transcript's text once `count` turns have ended in it. */
async function transcriptAfterTurns(page: Page, count: number): Promise<string> {
  await page
    .locator('#transcript .note.turn')
    .nth(count - 1)
    .waitFor();
  return page.locator('#transcript').innerText();
}

async function send(page: Page, text: string): Promise<void> {
  await page.fill('#prompt', text);
  await page.press('#prompt', 'Enter');
}

t.test(
  'in Chromium: token, prompt, permission by button, reload with the same history, cancel, close, load',
  async (t) => {
    if (!requireSystemPackage(t, SYSTEM_PACKAGES.chromium)) return;
    const d = await startDaemon(t, { args: ['--token', TOKEN] });
    const browser = await chromium.launch({ executablePath: SYSTEM_PACKAGES.chromium.binary });
    t.teardown(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1180, height: 760 }, colorScheme: 'light' });
    const requests: Request[] = [];
    page.on('request', (req) => requests.push(req));
    const pageErrors: string[] = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));

    await page.goto(`${d.baseUrl}/console/`);
    const dialog = page.locator('#token-dialog');
    await dialog.waitFor({ state: 'visible' });
    t.ok(await page.locator('#token-error').isHidden(), 'first ask: no complaint yet');

    // A wrong token is refused and asked for again; the right one opens the page.
    await page.fill('#token', 'not-the-token');
    await page.press('#token', 'Enter');
    await page.locator('#token-error').waitFor({ state: 'visible' });
    await page.fill('#token', TOKEN);
    await page.press('#token', 'Enter');
    await dialog.waitFor({ state: 'hidden' });
    await page.locator('#sessions li', { hasText: 'No sessions yet.' }).waitFor();

    await page.click('#new-session');
    await page.locator('#session-state', { hasText: 'idle' }).waitFor();
    const sessionId = (await page.textContent('#session-title')) ?? '';
    t.match(sessionId, /^[\w-]{8,}$/, 'the new session is open');
    t.equal(new URL(page.url()).hash, `#session=${sessionId}`, 'its id is in the fragment (for a reload)');

    await send(page, 'hello console');
    await page.locator('.block.user', { hasText: 'hello console' }).waitFor();
    await page.locator('.block.agent', { hasText: 'echo: hello console' }).waitFor();
    await transcriptAfterTurns(page, 1);

    // The embedded agent asks before writing (default mode); the button answers.
    await send(page, '/write x.txt hi');
    const ask = page.locator('.block.permission');
    await ask.getByRole('button', { name: 'Allow' }).click();
    await ask.locator('.answer', { hasText: 'Answered: Allow' }).waitFor();
    await page.locator('.block.tool .status.completed').waitFor();
    const before = await transcriptAfterTurns(page, 2);
    t.equal(readFileSync(path.join(d.config.workspace, 'x.txt'), 'utf8'), 'hi', 'the approved write happened');
    t.match(before, /Write x\.txt/, 'the tool call is shown');

    // A reload replays the session's event log from the start: the same history, no token asked again.
    await page.reload();
    const after = await transcriptAfterTurns(page, 2);
    t.equal(after, before, 'the reloaded page shows the same history');
    t.ok(await dialog.isHidden(), 'the token was kept for the tab');
    t.equal(await page.locator('.block.permission button').count(), 0, 'the answered request offers no buttons');
    if (process.env.ACPD_SCREENSHOT === '1') await page.screenshot({ path: SCREENSHOT });

    // Cancel a running turn, then close the session; a closed session can be loaded again.
    await send(page, '/slow 1000 50');
    await page.locator('#session-state', { hasText: 'working' }).waitFor();
    await page.click('#cancel');
    await page.locator('.note', { hasText: 'Cancelled.' }).waitFor();
    await page.locator('.note.turn', { hasText: 'cancelled' }).waitFor();
    await page.click('#close');
    await page.locator('#session-state', { hasText: 'closed' }).waitFor();
    const stored = page.locator(`#sessions li[data-session-id="${sessionId}"]`);
    await stored.getByRole('button', { name: 'Load' }).click();
    await page.locator('#session-state', { hasText: 'idle' }).waitFor();
    await page.locator('.block.agent', { hasText: 'echo: hello console' }).waitFor();
    t.ok(await page.locator('#prompt').isEnabled(), 'the loaded session takes prompts again');

    // The token: in this tab's sessionStorage, in the Authorization header of API calls, never in a URL.
    t.equal(await page.evaluate('sessionStorage.getItem("acpd.token")'), TOKEN);
    t.equal(await page.evaluate('localStorage.length'), 0, 'nothing in localStorage');
    t.notMatch(page.url(), TOKEN);
    t.ok(requests.length > 10, `requests were recorded (${requests.length})`);
    for (const req of requests) t.notOk(req.url().includes(TOKEN), `no token in ${req.url()}`);
    const api = requests.filter((req) => new URL(req.url()).pathname.startsWith('/session'));
    t.ok(api.length >= 6, 'session calls were made');
    for (const req of api) {
      t.equal(await req.headerValue('authorization'), `Bearer ${TOKEN}`, `${req.method()} ${req.url()} carries it`);
    }
    const files = requests.filter((req) => new URL(req.url()).pathname.startsWith('/console/'));
    for (const req of files) t.equal(await req.headerValue('authorization'), null, `${req.url()}: fetched without it`);
    t.same(pageErrors, [], 'no script errors');
  },
);
