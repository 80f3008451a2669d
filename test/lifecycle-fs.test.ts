// The daemon's fs proxy as the embedded agent uses it (`/read`, `/write`): reads and writes inside the
// workspace work, writes are atomic and keep an existing file's mode, and anything whose real location
// is outside the workspace (a path, or a symlink inside pointing out) is refused.
import { chmodSync, existsSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { startDaemon, tempDir, type TestDaemon } from './support/app.js';
import { call, createSession } from './support/http.js';
import { isType, openEvents, type SseFrame, type SseStream } from './support/sse.js';
import { textPrompt } from './support/values.js';
import { chunkText, updateOf } from './lifecycle-kit.js';

/** The tool call the agent opened with `title`, and the status of its final update. */
async function toolOutcome(sse: SseStream, title: string): Promise<{ status: unknown; rawOutput: unknown }> {
  const opened = await sse.waitFor((f) => updateOf(f, 'tool_call')?.title === title, `tool_call ${title}`);
  const toolCallId = updateOf(opened, 'tool_call')?.toolCallId;
  const done = await sse.waitFor((f) => {
    const u = updateOf(f, 'tool_call_update');
    return u !== undefined && u.toolCallId === toolCallId && (u.status === 'completed' || u.status === 'failed');
  }, `tool_call_update ${title}`);
  const u = updateOf(done, 'tool_call_update');
  return { status: u?.status, rawOutput: u?.rawOutput };
}

/** All agent text of the session so far, concatenated. */
function transcript(sse: SseStream): string {
  return sse.frames.map((f: SseFrame) => chunkText(f) ?? '').join('');
}

/** Permission requests already answered, per stream. */
const answered = new WeakMap<SseStream, Set<unknown>>();

/** Sends `/write`, answers its (new) permission request with `optionId`, and returns the prompt's answer. */
async function writeWithVote(
  d: TestDaemon,
  sse: SseStream,
  id: string,
  target: string,
  text: string,
  optionId: string,
) {
  const seen = answered.get(sse) ?? new Set<unknown>();
  answered.set(sse, seen);
  const prompt = call(d, 'POST', `/session/${id}/prompt`, textPrompt(`/write ${target} ${text}`));
  const request = await sse.waitFor(
    (f) =>
      isType('permission_request')(f) &&
      !seen.has(f.envelope?.data.requestId) &&
      JSON.stringify(f.envelope?.data.toolCall).includes(`Write ${target}`),
    `permission for ${target}`,
  );
  seen.add(request.envelope?.data.requestId);
  const vote = await call(d, 'POST', `/permission/${String(request.envelope?.data.requestId)}`, {
    outcome: { outcome: 'selected', optionId },
  });
  if (vote.status !== 200) throw new Error(`vote → ${vote.status}`);
  return prompt;
}

t.test('fs proxy: reads inside the workspace, refuses /etc/passwd', async (t) => {
  const d = await startDaemon(t);
  const ws = d.config.workspace;
  const id = await createSession(d);
  const sse = await openEvents(t, d, id);
  const notes = path.join(ws, 'notes.txt');
  writeFileSync(notes, 'alpha line\nbeta line\n');

  const read = await call(d, 'POST', `/session/${id}/prompt`, textPrompt(`/read ${notes}`));
  t.same(read.body, { stopReason: 'end_turn' });
  t.match(await toolOutcome(sse, `Read ${notes}`), { status: 'completed' });
  await sse.waitFor(() => transcript(sse).includes('beta line'), 'the file content');
  t.match(transcript(sse), /alpha line\nbeta line/, 'the content reached the client');

  const outside = await call(d, 'POST', `/session/${id}/prompt`, textPrompt('/read /etc/passwd'));
  t.same(outside.body, { stopReason: 'end_turn' });
  t.match(await toolOutcome(sse, 'Read /etc/passwd'), { status: 'failed' }, 'the read is refused');
  await sse.waitFor(() => transcript(sse).includes('Could not read /etc/passwd'), 'the refusal');
  t.notMatch(transcript(sse), /root:/, 'nothing of the file leaked');
});

t.test('fs proxy: /write inside after allow replaces the file atomically and keeps its mode', async (t) => {
  const d = await startDaemon(t);
  const ws = d.config.workspace;
  const id = await createSession(d);
  const sse = await openEvents(t, d, id);
  const target = path.join(ws, 'data.txt');
  writeFileSync(target, 'old content\n');
  chmodSync(target, 0o640);
  const before = statSync(target);

  const answer = await writeWithVote(d, sse, id, target, 'new content', 'allow');
  t.same(answer.body, { stopReason: 'end_turn' });
  t.match(await toolOutcome(sse, `Write ${target}`), { status: 'completed' });
  t.equal(readFileSync(target, 'utf8'), 'new content');
  const after = statSync(target);
  t.equal(after.mode & 0o7777, 0o640, 'the mode is kept');
  t.not(after.ino, before.ino, 'replaced by a rename, not rewritten in place');
  t.same(
    readdirSync(ws).filter((n) => n.endsWith('.tmp')),
    [],
    'no temp file left behind',
  );

  const fresh = path.join(ws, 'fresh.txt');
  const created = await writeWithVote(d, sse, id, fresh, 'hello', 'allow');
  t.same(created.body, { stopReason: 'end_turn' });
  t.equal(readFileSync(fresh, 'utf8'), 'hello');
  t.equal(statSync(fresh).mode & 0o777, 0o600, 'a new file is private');

  const rejected = await writeWithVote(d, sse, id, target, 'not this', 'reject');
  t.same(rejected.body, { stopReason: 'end_turn' });
  await sse.waitFor(() => transcript(sse).includes(`Permission denied: ${target} was not written.`), 'the denial');
  t.equal(readFileSync(target, 'utf8'), 'new content', 'a rejected write changes nothing');
});

t.test('fs proxy: a symlink inside the workspace that points outside is refused', async (t) => {
  const outsideDir = tempDir(t, 'acpd-outside-');
  const secret = path.join(outsideDir, 'secret.txt');
  writeFileSync(secret, 'top secret\n');
  const d = await startDaemon(t);
  const ws = d.config.workspace;
  const link = path.join(ws, 'escape.txt');
  symlinkSync(secret, link);
  const dangling = path.join(ws, 'dangling.txt');
  const danglingTarget = path.join(outsideDir, 'created.txt');
  symlinkSync(danglingTarget, dangling);
  const id = await createSession(d);
  const sse = await openEvents(t, d, id);

  const read = await call(d, 'POST', `/session/${id}/prompt`, textPrompt(`/read ${link}`));
  t.same(read.body, { stopReason: 'end_turn' });
  t.match(await toolOutcome(sse, `Read ${link}`), { status: 'failed' }, 'reading through the link is refused');
  t.notMatch(transcript(sse), /top secret/);

  const write = await writeWithVote(d, sse, id, link, 'overwritten', 'allow');
  t.same(write.body, { stopReason: 'end_turn' });
  t.match(
    await toolOutcome(sse, `Write ${link}`),
    { status: 'failed', rawOutput: { error: `Could not write ${link}: Internal error` } },
    'writing through the link is refused (the agent sees a JSON-RPC error)',
  );
  t.equal(readFileSync(secret, 'utf8'), 'top secret\n', 'the outside file is untouched');

  const writeDangling = await writeWithVote(d, sse, id, dangling, 'planted', 'allow');
  t.same(writeDangling.body, { stopReason: 'end_turn' });
  t.match(await toolOutcome(sse, `Write ${dangling}`), { status: 'failed' }, 'a dangling link out is refused too');
  t.notOk(existsSync(danglingTarget), 'nothing was created outside');
  t.same(readdirSync(outsideDir).sort(), ['secret.txt']);
});
