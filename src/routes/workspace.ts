/**
 * The workspace over HTTP, as the qwen daemon serves it: files (`/file`,
 * `/file/bytes`, `/stat`, `/list`, `/glob`; with --allow-file-writes also
 * `/file/write`, `/file/edit`, `/file/upload`) and git, read-only
 * (`/workspace/git`, `/workspace/git/diff`, `/workspace/git/diff/file`,
 * `/workspace/git/log`, `/workspace/git/log/commit`, `/workspace/git/branches`). Errors carry the qwen daemon's `errorKind` (also as
 * `code`) and `status`. A write tells every live session of the workspace
 * (`fs.access`), so attached clients see what changed.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { createHash } from 'node:crypto';
import type { Config } from '../config.js';
import { policies } from '../plugins/route-policy.js';
import {
  editFile,
  gitDiff,
  gitBranches,
  gitCommit,
  gitDiffFile,
  gitLog,
  gitStatus,
  globFiles,
  listDir,
  readFile,
  readFileBytes,
  statFile,
  uploadFile,
  writeFile,
} from '../schemas/workspace.js';
import { asFsError, FsError, LIMITS, WorkspaceFiles, type WriteEvent } from '../services/workspace-files.js';
import { COMMIT_SHA, GIT_LIMITS, MAX_SEARCH_CHARS, NotARepository, WorkspaceGit } from '../services/workspace-git.js';

const NO_STORE = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' };

/** An FsError as the qwen daemon answers it; anything else goes to the app's error handler (a 500). */
function fail(reply: FastifyReply, err: unknown): FastifyReply {
  const fsErr = asFsError(err);
  if (!(fsErr instanceof FsError)) throw err;
  return reply
    .code(fsErr.status)
    .headers(NO_STORE)
    .send({
      error: fsErr.message,
      code: fsErr.kind,
      errorKind: fsErr.kind,
      status: fsErr.status,
      ...(fsErr.extra.hint ? { hint: fsErr.extra.hint } : {}),
      ...(fsErr.extra.currentHash ? { currentHash: fsErr.extra.currentHash } : {}),
    });
}

/** A query number in [min, max], or a parse_error naming it. */
function ranged(name: string, raw: string | undefined, min: number, max: number): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new FsError('parse_error', `\`${name}\` must be an integer in [${min}, ${max}]`);
  }
  return n;
}

/** A boolean query flag as the qwen daemon reads one: `1` or `true`, anything else is off. */
function flag(raw: string | undefined): boolean {
  return raw === '1' || raw === 'true';
}

function intParam(raw: string | undefined, fallback: number): number {
  const n = raw === undefined ? NaN : Number.parseInt(raw, 10);
  return Number.isNaN(n) ? fallback : n;
}

const workspaceRoutes: FastifyPluginAsyncTypebox<{ config: Config }> = async (app, { config }) => {
  const files = new WorkspaceFiles(config.workspace, config.dataDir);
  const git = new WorkspaceGit(config.workspace);
  const read = { policy: policies.read };
  const mutation = { policy: policies.mutation };

  /** Every live session of the workspace hears of the write. */
  const announce = (ev: WriteEvent): void => {
    for (const session of app.sessions.list()) {
      session.events.publish('fs.access', {
        kind: 'fs.access',
        intent: ev.intent,
        route: ev.route,
        relPath: ev.path,
        sizeBytes: ev.sizeBytes,
        hash: ev.hash,
      });
    }
  };
  const requireWrites = (): void => {
    if (!config.allowFileWrites) {
      throw new FsError('file_writes_disabled', 'file writes are disabled on this daemon', {
        hint: 'start acpd with --allow-file-writes (ACPD_ALLOW_FILE_WRITES=true)',
      });
    }
  };

  app.get('/file', { schema: readFile, config: read }, async (req, reply) => {
    try {
      const q = req.query;
      const opts = {
        maxBytes: ranged('maxBytes', q.maxBytes, 1, LIMITS.maxReadBytes),
        line: ranged('line', q.line, 1, Number.MAX_SAFE_INTEGER),
        limit: ranged('limit', q.limit, 1, LIMITS.maxLineLimit),
        cursor: q.cursor,
      };
      return reply.headers(NO_STORE).send(await files.readText(q.path, opts));
    } catch (err) {
      return fail(reply, err);
    }
  });

  app.get('/file/bytes', { schema: readFileBytes, config: read }, async (req, reply) => {
    try {
      const q = req.query;
      const offset = ranged('offset', q.offset, 0, Number.MAX_SAFE_INTEGER) ?? 0;
      const maxBytes = ranged('maxBytes', q.maxBytes, 1, LIMITS.maxReadBytes) ?? LIMITS.defaultBytesWindow;
      return reply.headers(NO_STORE).send(await files.readBytes(q.path, offset, maxBytes));
    } catch (err) {
      return fail(reply, err);
    }
  });

  app.get('/stat', { schema: statFile, config: read }, async (req, reply) => {
    try {
      return reply.headers(NO_STORE).send(await files.stat(req.query.path));
    } catch (err) {
      return fail(reply, err);
    }
  });

  app.get('/list', { schema: listDir, config: read }, async (req, reply) => {
    try {
      return reply.headers(NO_STORE).send(await files.list(req.query.path, flag(req.query.includeIgnored)));
    } catch (err) {
      return fail(reply, err);
    }
  });

  app.get('/glob', { schema: globFiles, config: read }, async (req, reply) => {
    try {
      const { pattern, cwd, includeIgnored } = req.query;
      const maxResults =
        ranged('maxResults', req.query.maxResults, 1, LIMITS.maxGlobResults) ?? LIMITS.defaultGlobResults;
      return reply
        .headers(NO_STORE)
        .send(await files.glob(pattern, cwd === '' ? undefined : cwd, maxResults, flag(includeIgnored)));
    } catch (err) {
      return fail(reply, err);
    }
  });

  app.post('/file/write', { schema: writeFile, config: mutation }, async (req, reply) => {
    try {
      requireWrites();
      if (req.body.mode === 'replace' && req.body.expectedHash === undefined) {
        throw new FsError('parse_error', '`expectedHash` is required with `mode: "replace"`');
      }
      const out = await files.write(req.body);
      announce({ intent: 'write', route: 'POST /file/write', ...out });
      return reply
        .code(out.created ? 201 : 200)
        .headers(NO_STORE)
        .send(out);
    } catch (err) {
      return fail(reply, err);
    }
  });

  app.post('/file/edit', { schema: editFile, config: mutation }, async (req, reply) => {
    try {
      requireWrites();
      const out = await files.edit(req.body);
      announce({ intent: 'edit', route: 'POST /file/edit', ...out });
      return reply.headers(NO_STORE).send(out);
    } catch (err) {
      return fail(reply, err);
    }
  });

  // The upload's bytes, kept beside the request: the app makes every body a plain object.
  const uploads = new WeakMap<FastifyRequest, Buffer>();
  app.addContentTypeParser(
    'application/octet-stream',
    { parseAs: 'buffer', bodyLimit: LIMITS.maxUploadBytes },
    (req, body: Buffer, done) => {
      uploads.set(req, body);
      // What the idempotency fingerprint sees: a retry with other bytes is another request.
      done(null, { sha256: createHash('sha256').update(body).digest('hex') });
    },
  );

  app.post(
    '/file/upload',
    { schema: uploadFile, config: mutation, bodyLimit: LIMITS.maxUploadBytes },
    async (req, reply) => {
      try {
        requireWrites();
        const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
        const data = uploads.get(req);
        if (type !== 'application/octet-stream' || data === undefined) {
          throw new FsError('parse_error', 'file uploads require Content-Type: application/octet-stream');
        }
        const out = await files.upload(req.query.path, data);
        announce({ intent: 'write', route: 'POST /file/upload', ...out });
        return reply.code(201).headers(NO_STORE).send(out);
      } catch (err) {
        return fail(reply, err);
      }
    },
  );

  app.get('/workspace/git', { schema: gitStatus, config: read }, async () => git.status());

  app.get('/workspace/git/diff', { schema: gitDiff, config: read }, async (_req, reply) =>
    reply.headers(NO_STORE).send(await git.diff()),
  );

  app.get('/workspace/git/diff/file', { schema: gitDiffFile, config: read }, async (req, reply) =>
    reply.headers(NO_STORE).send(await git.diffFile(req.query.path, req.query.oldPath || undefined)),
  );

  app.get('/workspace/git/log', { schema: gitLog, config: read }, async (req, reply) => {
    const { limit, skip, range, all, search } = req.query;
    const out = await git.log({
      limit: Math.min(Math.max(intParam(limit, GIT_LIMITS.defaultLog), 1), GIT_LIMITS.maxLog),
      skip: Math.max(intParam(skip, 0), 0),
      range: range?.trim() || undefined,
      all: all === '1',
      search: search?.trim().slice(0, MAX_SEARCH_CHARS) || undefined,
    });
    return reply.headers(NO_STORE).send(out);
  });

  app.get('/workspace/git/log/commit', { schema: gitCommit, config: read }, async (req, reply) => {
    const { sha } = req.query;
    // Checked here rather than by the schema: a bad sha gets the qwen daemon's parse_error envelope.
    if (sha === undefined || !COMMIT_SHA.test(sha)) {
      return fail(reply, new FsError('parse_error', 'sha query parameter is required'));
    }
    return reply.headers(NO_STORE).send(await git.commit(sha));
  });

  app.get('/workspace/git/branches', { schema: gitBranches, config: read }, async (_req, reply) => {
    try {
      return reply.headers(NO_STORE).send(await git.branches());
    } catch (err) {
      if (!(err instanceof NotARepository)) throw err;
      return reply
        .code(404)
        .headers(NO_STORE)
        .send({ error: 'not_a_git_repository', code: 'not_a_git_repository', message: err.message });
    }
  });
};

export default workspaceRoutes;
