/**
 * The workspace's files and git state (routes/workspace.ts), in the qwen
 * daemon's shapes: those its published client (`DaemonClient`) parses.
 */
import { type TOptional, type TSchema, Type } from '@sinclair/typebox';
import { errors } from './errors.js';
import { LIMITS } from '../services/workspace-files.js';
import { GIT_LIMITS, MAX_SEARCH_CHARS } from '../services/workspace-git.js';

const tags = ['workspace'];
const Hash = Type.String({
  pattern: '^sha256:[0-9a-f]{64}$',
  description: '`sha256:` and the hex SHA-256 of the bytes.',
});
const RelPath = Type.String({ description: 'Relative to the workspace, with `/`; `.` for the workspace itself.' });
const PathQuery = Type.String({
  minLength: 1,
  description: 'Relative to the workspace, or absolute inside it. Symlinks are followed and must stay inside.',
});
/** A whole number in a query string (the app does not coerce them); its range is checked by the route. */
const IntQuery = (description: string) => Type.String({ pattern: '^[0-9]{1,15}$', description });
const LineEnding = Type.Union([Type.Literal('crlf'), Type.Literal('lf')]);
const MatchedIgnore = Type.Union([Type.Literal('file'), Type.Literal('directory'), Type.Null()], {
  description:
    "Which kind of the workspace's ignore rules (root .gitignore, .qwenignore, .git/) matches the path: a file pattern, a directory pattern, or none.",
});

const IgnoredFlag = Type.String({
  description: '`1` or `true`: include what the ignore rules match, each entry marked `ignored`; otherwise left out.',
});

const readErrors = errors('fsRefused', 'fsNotFound', 'fsConflict', 'fsTooLarge', 'fsUnprocessable', 'fsDenied', 'fsIo');
const writeErrors = errors(
  'fsRefused',
  'fsNotFound',
  'fsConflict',
  'fsTooLarge',
  'fsUnprocessable',
  'fsDenied',
  'fsWritesDisabled',
  'fsIo',
);

export const readFile = {
  tags,
  operationId: 'readWorkspaceFile',
  summary: 'Read a text file, whole or a window of it (lines, bytes, or a cursor from the last page)',
  querystring: Type.Object({
    path: PathQuery,
    maxBytes: Type.Optional(IntQuery(`1 to ${LIMITS.maxReadBytes}.`)),
    line: Type.Optional(IntQuery('The first line to return (1-based).')),
    limit: Type.Optional(IntQuery(`Lines to return, 1 to ${LIMITS.maxLineLimit}.`)),
    cursor: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 1024,
        description: 'The `nextCursor` of the previous page (not with `line`).',
      }),
    ),
  }),
  response: {
    200: Type.Object({
      kind: Type.Literal('file'),
      path: RelPath,
      content: Type.String(),
      encoding: Type.String(),
      bom: Type.Boolean(),
      lineEnding: LineEnding,
      sizeBytes: Type.Integer({ description: "The whole file's size." }),
      returnedBytes: Type.Integer(),
      truncated: Type.Boolean(),
      hash: Type.Optional(Hash),
      matchedIgnore: MatchedIgnore,
      originalLineCount: Type.Union([Type.Integer(), Type.Null()], { description: 'null on a cursor page.' }),
      nextCursor: Type.Union([Type.String(), Type.Null()], {
        description: 'Where the next page starts; null at the end.',
      }),
      hasMore: Type.Boolean(),
    }),
    ...readErrors,
  },
};

export const readFileBytes = {
  tags,
  operationId: 'readWorkspaceFileBytes',
  summary: "A window of a file's bytes, as base64",
  querystring: Type.Object({
    path: PathQuery,
    offset: Type.Optional(IntQuery('The first byte.')),
    maxBytes: Type.Optional(IntQuery(`1 to ${LIMITS.maxReadBytes}; default ${LIMITS.defaultBytesWindow}.`)),
  }),
  response: {
    200: Type.Object({
      kind: Type.Literal('file_bytes'),
      path: RelPath,
      offset: Type.Integer(),
      sizeBytes: Type.Integer(),
      returnedBytes: Type.Integer(),
      truncated: Type.Boolean({ description: 'False only when the window is the whole file.' }),
      contentBase64: Type.String(),
      hash: Type.Optional(Hash),
    }),
    ...readErrors,
  },
};

const EntryKind = Type.Union([
  Type.Literal('file'),
  Type.Literal('directory'),
  Type.Literal('symlink'),
  Type.Literal('other'),
]);

export const statFile = {
  tags,
  operationId: 'fileStat',
  summary: 'What a path is (after symlinks), its size and modification time',
  querystring: Type.Object({ path: PathQuery }),
  response: {
    200: Type.Object({
      kind: Type.Literal('stat'),
      path: RelPath,
      type: EntryKind,
      sizeBytes: Type.Integer(),
      modifiedMs: Type.Number(),
    }),
    ...readErrors,
  },
};

export const listDir = {
  tags,
  operationId: 'dirList',
  summary: `A directory's entries (at most ${LIMITS.maxListEntries})`,
  querystring: Type.Object({ path: PathQuery, includeIgnored: Type.Optional(IgnoredFlag) }),
  response: {
    200: Type.Object({
      kind: Type.Literal('list'),
      path: RelPath,
      entries: Type.Array(Type.Object({ name: Type.String(), kind: EntryKind, ignored: Type.Boolean() })),
      truncated: Type.Boolean(),
      matchedIgnore: MatchedIgnore,
    }),
    ...readErrors,
  },
};

export const globFiles = {
  tags,
  operationId: 'glob',
  summary: 'Paths matching a glob pattern (relative, no `..`); hits that resolve outside are dropped',
  querystring: Type.Object({
    pattern: Type.String({ minLength: 1 }),
    cwd: Type.Optional(Type.String({ description: 'A directory inside the workspace to match from.' })),
    maxResults: Type.Optional(IntQuery(`1 to ${LIMITS.maxGlobResults}; default ${LIMITS.defaultGlobResults}.`)),
    includeIgnored: Type.Optional(IgnoredFlag),
  }),
  response: {
    200: Type.Object({
      kind: Type.Literal('glob'),
      pattern: Type.String(),
      cwd: Type.String(),
      matches: Type.Array(RelPath),
      count: Type.Integer(),
      truncated: Type.Boolean(),
      durationMs: Type.Integer(),
    }),
    ...readErrors,
  },
};

const writeAnswer = {
  path: RelPath,
  sizeBytes: Type.Integer(),
  hash: Hash,
  encoding: Type.String(),
  bom: Type.Boolean(),
  lineEnding: LineEnding,
  matchedIgnore: MatchedIgnore,
};

export const writeFile = {
  tags,
  operationId: 'writeWorkspaceFile',
  summary: 'Create a text file, or replace one whose hash the client read (`expectedHash`); with --allow-file-writes',
  body: Type.Object({
    path: Type.String({ minLength: 1 }),
    content: Type.String(),
    mode: Type.Union([Type.Literal('create'), Type.Literal('replace')]),
    expectedHash: Type.Optional(Hash),
    bom: Type.Optional(Type.Boolean()),
    encoding: Type.Optional(Type.Literal('utf-8')),
    lineEnding: Type.Optional(LineEnding),
  }),
  response: {
    200: Type.Object({
      kind: Type.Literal('file_write'),
      mode: Type.Union([Type.Literal('create'), Type.Literal('replace')]),
      created: Type.Boolean(),
      ...writeAnswer,
    }),
    201: Type.Object({
      kind: Type.Literal('file_write'),
      mode: Type.Union([Type.Literal('create'), Type.Literal('replace')]),
      created: Type.Boolean(),
      ...writeAnswer,
    }),
    ...writeErrors,
  },
};

export const editFile = {
  tags,
  operationId: 'editWorkspaceFile',
  summary: 'Replace the one occurrence of `oldText` in a file whose hash the client read; with --allow-file-writes',
  body: Type.Object({
    path: Type.String({ minLength: 1 }),
    oldText: Type.String({ minLength: 1 }),
    newText: Type.String(),
    expectedHash: Hash,
  }),
  response: {
    200: Type.Object({ kind: Type.Literal('file_edit'), replacements: Type.Literal(1), ...writeAnswer }),
    ...writeErrors,
  },
};

export const uploadFile = {
  tags,
  operationId: 'uploadWorkspaceFile',
  summary: `Store the request's bytes (application/octet-stream, at most ${LIMITS.maxUploadBytes} bytes) under a free name; with --allow-file-writes`,
  description:
    'Never overwrites: an occupied name becomes `name (1).ext`, `name (2).ext`, …; the answer names the file written.',
  querystring: Type.Object({ path: Type.String({ minLength: 1 }) }),
  response: {
    201: Type.Object({ kind: Type.Literal('file_upload'), path: RelPath, sizeBytes: Type.Integer(), hash: Hash }),
    ...writeErrors,
  },
};

// ---- git ----------------------------------------------------------------------

export const gitStatus = {
  tags,
  operationId: 'workspaceGit',
  summary: 'The branch, ahead/behind its upstream, and counts of changed files',
  description: 'Outside a repository: `branch: null` and none of the other fields.',
  querystring: Type.Object({ wait: Type.Optional(Type.String()) }),
  response: {
    200: Type.Object({
      v: Type.Literal(2),
      workspaceCwd: Type.String(),
      branch: Type.Union([Type.String(), Type.Null()]),
      detached: Type.Optional(Type.Boolean()),
      staged: Type.Optional(Type.Integer()),
      unstaged: Type.Optional(Type.Integer()),
      untracked: Type.Optional(Type.Integer()),
      conflicted: Type.Optional(Type.Integer()),
      hasUpstream: Type.Optional(Type.Boolean()),
      ahead: Type.Optional(Type.Integer()),
      behind: Type.Optional(Type.Integer()),
      stashCount: Type.Optional(Type.Integer()),
      computedAt: Type.Optional(Type.Number()),
    }),
  },
};

export const gitDiff = {
  tags,
  operationId: 'workspaceGitDiff',
  summary: `The working tree against HEAD: totals, and the first ${GIT_LIMITS.maxFiles} files with their line counts`,
  response: {
    200: Type.Object({
      v: Type.Literal(1),
      workspaceCwd: Type.String(),
      available: Type.Boolean({ description: 'False outside a repository.' }),
      filesCount: Type.Integer(),
      linesAdded: Type.Integer(),
      linesRemoved: Type.Integer(),
      files: Type.Array(
        Type.Object({
          path: Type.String(),
          oldPath: Type.Optional(Type.String()),
          added: Type.Integer(),
          removed: Type.Integer(),
          isBinary: Type.Boolean(),
          isUntracked: Type.Boolean(),
          isDeleted: Type.Boolean(),
          truncated: Type.Boolean(),
        }),
      ),
      hiddenCount: Type.Integer(),
    }),
  },
};

export const gitDiffFile = {
  tags,
  operationId: 'workspaceGitDiffFile',
  summary: `One file's hunks against HEAD (at most ${GIT_LIMITS.maxLinesPerFile} lines; \`truncated\` when cut)`,
  querystring: Type.Object({ path: Type.String({ minLength: 1 }), oldPath: Type.Optional(Type.String()) }),
  response: {
    200: Type.Object({
      v: Type.Literal(1),
      workspaceCwd: Type.String(),
      path: Type.String(),
      available: Type.Boolean(),
      hunks: Type.Array(
        Type.Object({
          oldStart: Type.Integer(),
          oldLines: Type.Integer(),
          newStart: Type.Integer(),
          newLines: Type.Integer(),
          lines: Type.Array(Type.String()),
        }),
      ),
      truncated: Type.Optional(Type.Literal(true)),
    }),
  },
};

const commitFields = {
  sha: Type.String(),
  shortSha: Type.String(),
  authorName: Type.String(),
  authorEmail: Type.String(),
  authorDate: Type.Integer({ description: 'Unix seconds.' }),
  subject: Type.String(),
  refs: Type.Optional(Type.String({ description: 'Its decorations (`HEAD -> main, tag: v1`), when it has any.' })),
  parents: Type.Array(Type.String()),
};

/** The same fields, each optional (absent from an `available: false` answer). */
function optional<T extends Record<string, TSchema>>(fields: T): { [K in keyof T]: TOptional<T[K]> } {
  return Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, Type.Optional(v)])) as {
    [K in keyof T]: TOptional<T[K]>;
  };
}

export const gitLog = {
  tags,
  operationId: 'workspaceGitLog',
  summary: `Commits, newest first, paged by \`limit\` (at most ${GIT_LIMITS.maxLog}) and \`skip\``,
  querystring: Type.Object({
    limit: Type.Optional(Type.String()),
    skip: Type.Optional(Type.String()),
    range: Type.Optional(Type.String()),
    all: Type.Optional(Type.String()),
    search: Type.Optional(
      Type.String({
        description: `Trimmed and cut to ${MAX_SEARCH_CHARS} characters; matches the message (case-insensitive, a fixed string), the author, or a sha prefix (4 to 40 hex digits).`,
      }),
    ),
  }),
  response: {
    200: Type.Object({
      v: Type.Literal(1),
      workspaceCwd: Type.String(),
      available: Type.Boolean(),
      entries: Type.Array(Type.Object(commitFields)),
      hasMore: Type.Boolean(),
    }),
  },
};

export const gitCommit = {
  tags,
  operationId: 'workspaceGitCommitDetail',
  summary: `One commit: its message and the files it changed (the first ${GIT_LIMITS.maxFiles}, with line counts)`,
  querystring: Type.Object({
    sha: Type.Optional(Type.String({ description: 'The commit: 7 to 40 hex digits.' })),
  }),
  response: {
    200: Type.Object({
      v: Type.Literal(1),
      workspaceCwd: Type.String(),
      available: Type.Boolean({
        description: 'False for a commit git does not know, or outside a repository (and nothing else).',
      }),
      ...optional(commitFields),
      body: Type.Optional(Type.String({ description: 'The message after the subject, its last newline cut.' })),
      files: Type.Optional(
        Type.Array(
          Type.Object({
            path: Type.String(),
            added: Type.Integer(),
            removed: Type.Integer(),
            isBinary: Type.Boolean(),
          }),
        ),
      ),
      filesCount: Type.Optional(Type.Integer()),
      linesAdded: Type.Optional(Type.Integer()),
      linesRemoved: Type.Optional(Type.Integer()),
      hiddenCount: Type.Optional(Type.Integer({ description: 'Files changed but not listed.' })),
    }),
    ...errors('gitInvalidSha'),
  },
};

const Branch = Type.Object({
  name: Type.String(),
  isHead: Type.Boolean(),
  upstream: Type.Optional(Type.String()),
  upstreamGone: Type.Optional(Type.Literal(true, { description: 'The upstream is configured but its ref is gone.' })),
  ahead: Type.Integer(),
  behind: Type.Integer(),
  pushTarget: Type.Optional(Type.String({ description: 'Where `git push` would push.' })),
  pushAhead: Type.Optional(Type.Integer()),
  pushBehind: Type.Optional(Type.Integer()),
  pushGone: Type.Optional(Type.Literal(true)),
  commitDate: Type.Integer({ description: "The tip commit's committer date, Unix seconds." }),
  commitSubject: Type.String(),
});

export const gitBranches = {
  tags,
  operationId: 'workspaceGitBranches',
  summary: 'The local and remote-tracking branches, the tags, the branches checked out recently, and HEAD',
  response: {
    200: Type.Object({
      v: Type.Literal(1),
      workspaceCwd: Type.String(),
      available: Type.Literal(true),
      local: Type.Array(Branch),
      remote: Type.Array(Branch),
      tags: Type.Array(
        Type.Object({
          name: Type.String(),
          date: Type.Integer({ description: 'Unix seconds.' }),
          subject: Type.String(),
        }),
      ),
      recent: Type.Array(Type.String(), { description: 'Branches checked out before the current one, newest first.' }),
      head: Type.String({ description: 'The current branch, or the short sha of a detached HEAD.' }),
      detached: Type.Boolean(),
    }),
    ...errors('gitNotRepository', 'fsIo'),
  },
};

// What each route's answers mean, in the document.
const DESCRIPTIONS: [{ description?: string; response: Record<number, unknown> }, string, string][] = [
  [
    readFile,
    'Text, decoded as UTF-8 (a BOM is reported, not returned); over the byte cap only with a window.',
    "The text asked for, with the whole file's hash (not on a cursor page).",
  ],
  [
    readFileBytes,
    'Any regular file, binary or not; `hash` only when the window is the whole file.',
    'The bytes asked for.',
  ],
  [statFile, 'Symlinks are followed; the answer names the real path.', 'The path.'],
  [listDir, 'Entries are not followed: a symlink is listed as one.', 'The entries.'],
  [globFiles, '`node_modules` and `.git` are not searched.', 'The matches, sorted.'],
  [
    writeFile,
    'Atomic (a temp file, then rename). `replace` needs the `hash` of the last read; a stale one is 409 `hash_mismatch` with `currentHash`. Each write sends `fs.access` to the live sessions.',
    '`replace`: the file written.',
  ],
  [
    editFile,
    'Atomic, with the same `expectedHash` check as a write. Sends `fs.access` to the live sessions.',
    'The file written.',
  ],
  [uploadFile, 'Sends `fs.access` to the live sessions.', 'The file written.'],
  [gitStatus, 'Outside a repository: `branch: null` and none of the other fields.', 'The status.'],
  [gitDiff, 'Untracked files count as added. `available: false` outside a repository.', 'The changed files.'],
  [gitDiffFile, 'A path that climbs out of the repository has no diff (`available: false`).', "The file's hunks."],
  [
    gitLog,
    '`range` (a revision or `a..b`), `all=1` (every branch and tag), `search` (messages, authors, a sha prefix; the hits merged, newest commit first). `available: false` outside a repository.',
    'One page of commits.',
  ],
  [
    gitCommit,
    'A merge is compared with its first parent, a root commit with the empty tree; renames count once, by the new path.',
    'The commit, or `available: false`.',
  ],
  [gitBranches, 'Read-only: nothing is checked out or created.', 'The branches.'],
];
for (const [schema, description, ok] of DESCRIPTIONS) {
  schema.description ??= description;
  for (const code of [200, 201]) {
    const answer = schema.response[code] as { description?: string } | undefined;
    if (answer) answer.description ??= code === 201 ? 'Created: the file written.' : ok;
  }
}
