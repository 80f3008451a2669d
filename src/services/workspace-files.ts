/**
 * The workspace's files over HTTP (`/file`, `/file/bytes`, `/stat`, `/list`,
 * `/glob`, `/file/write`, `/file/edit`, `/file/upload`), with the qwen
 * daemon's answers and error kinds. Every path is confined to the workspace:
 * resolved with symlinks followed (a symlinked parent included), then checked
 * to fall inside it; devices, FIFOs and sockets are never opened; acpd's data
 * directory and `.git` are never written. Writes are atomic (a temp file
 * beside the target, then rename) and guarded by the content hash the client
 * last read (`expectedHash`).
 */
import { createHash, randomUUID } from 'node:crypto';
import { constants, promises as fs, type Stats } from 'node:fs';
import path from 'node:path';
import { glob } from 'tinyglobby';
import { isInside } from './workspace.js';
import { type IgnoreCategory, WorkspaceIgnore } from './workspace-ignore.js';

/** The qwen daemon's error kinds and the status each answers with. */
export const FS_ERROR_STATUS = {
  path_outside_workspace: 400,
  symlink_escape: 400,
  parse_error: 400,
  path_not_found: 404,
  binary_file: 422,
  file_too_large: 413,
  hash_mismatch: 409,
  file_already_exists: 409,
  text_not_found: 422,
  ambiguous_text_match: 422,
  permission_denied: 403,
  file_writes_disabled: 403,
  io_error: 503,
} as const;
export type FsErrorKind = keyof typeof FS_ERROR_STATUS;

export class FsError extends Error {
  readonly status: number;
  constructor(
    readonly kind: FsErrorKind,
    message: string,
    readonly extra: { hint?: string; currentHash?: string } = {},
  ) {
    super(message);
    this.name = 'FsError';
    this.status = FS_ERROR_STATUS[kind];
  }
}

/** The qwen daemon's limits. */
export const LIMITS = {
  /** A text read answers at most this many bytes, and reads whole files up to it. */
  maxReadBytes: 256 * 1024,
  /** A text read with a window (line, limit, maxBytes, cursor) scans files up to this size. */
  maxTextScanBytes: 8 * 1024 * 1024,
  defaultBytesWindow: 64 * 1024,
  maxLineLimit: 2000,
  maxListEntries: 2000,
  defaultGlobResults: 5000,
  maxGlobResults: 50_000,
  maxWriteBytes: 5 * 1024 * 1024,
  maxUploadBytes: 50 * 1024 * 1024,
} as const;

const BINARY_PROBE_BYTES = 4096;

type Intent = 'read' | 'write';

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** A Node error as a qwen kind (ENOENT → path_not_found, …); anything else passes through. */
export function asFsError(err: unknown): unknown {
  if (err instanceof FsError) return err;
  const message = err instanceof Error ? err.message : String(err);
  switch (errno(err)) {
    case 'ENOENT':
      return new FsError('path_not_found', message);
    case 'EACCES':
    case 'EPERM':
      return new FsError('permission_denied', message);
    case 'ELOOP':
      return new FsError('symlink_escape', message, { hint: 'a symlink chain forms a cycle' });
    case 'EISDIR':
    case 'ENOTDIR':
      return new FsError('parse_error', message);
    case 'ENOSPC':
    case 'EIO':
    case 'EBUSY':
    case 'EMFILE':
    case 'ENFILE':
    case 'ENAMETOOLONG':
      return new FsError('io_error', message);
    default:
      return err;
  }
}

export function hashOf(buf: Buffer): `sha256:${string}` {
  return `sha256:${createHash('sha256').update(buf).digest('hex')}`;
}

function looksBinary(buf: Buffer): boolean {
  return buf.subarray(0, BINARY_PROBE_BYTES).includes(0);
}

function kindOf(st: Stats | import('node:fs').Dirent): 'file' | 'directory' | 'symlink' | 'other' {
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isDirectory()) return 'directory';
  if (st.isFile()) return 'file';
  return 'other';
}

function assertRegular(st: Stats, input: string): void {
  if (st.isFile()) return;
  if (st.isDirectory()) throw new FsError('parse_error', `path is a directory: ${input}`);
  // A FIFO would block the read forever, a device would stream without end.
  throw new FsError('parse_error', `path is not a regular file: ${input}`, {
    hint: 'devices, FIFOs and sockets are never opened',
  });
}

interface Cursor {
  off: number;
  size: number;
  dev: string;
  ino: string;
}

const MAX_CURSOR_CHARS = 1024;

function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify({ v: 1, ...c }), 'utf8').toString('base64url');
}

function decodeCursor(raw: string): Cursor {
  const bad = () =>
    new FsError('parse_error', 'cursor is not a valid read cursor', {
      hint: 'pass a cursor returned by a previous read',
    });
  if (raw.length === 0 || raw.length > MAX_CURSOR_CHARS) throw bad();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  const c = parsed as Record<string, unknown> | null;
  if (
    typeof c !== 'object' ||
    c === null ||
    c.v !== 1 ||
    !Number.isSafeInteger(c.off) ||
    (c.off as number) < 0 ||
    !Number.isSafeInteger(c.size) ||
    typeof c.dev !== 'string' ||
    typeof c.ino !== 'string'
  ) {
    throw bad();
  }
  return { off: c.off as number, size: c.size as number, dev: c.dev, ino: c.ino };
}

/** UTF-8 bytes cut at `max` without splitting a character. */
function utf8Prefix(buf: Buffer, max: number): Buffer {
  if (buf.length <= max) return buf;
  let end = max;
  // Step back over continuation bytes (10xxxxxx) to a character start.
  while (end > 0 && ((buf[end] ?? 0) & 0xc0) === 0x80) end--;
  return buf.subarray(0, end);
}

export interface TextRead {
  kind: 'file';
  path: string;
  content: string;
  encoding: string;
  bom: boolean;
  lineEnding: 'crlf' | 'lf';
  sizeBytes: number;
  returnedBytes: number;
  truncated: boolean;
  /** The whole file's; not on a cursor page, which reads a window of a file the client already hashed. */
  hash?: string;
  /** Which kind of ignore rule matches the file (src/services/workspace-ignore.ts), or null. */
  matchedIgnore: IgnoreCategory | null;
  originalLineCount: number | null;
  nextCursor: string | null;
  hasMore: boolean;
}

export interface WriteEvent {
  intent: 'write' | 'edit';
  route: string;
  path: string;
  sizeBytes: number;
  hash: string;
}

export class WorkspaceFiles {
  private readonly ignored: WorkspaceIgnore;

  constructor(
    private readonly workspace: string,
    /** acpd's own directory: never written through these routes (it may lie inside the workspace). */
    private readonly dataDir: string,
  ) {
    this.ignored = new WorkspaceIgnore(workspace);
  }

  /** The ignore rule kind matching a file at `real`, with the rule files re-read when they changed. */
  private async fileIgnore(real: string): Promise<IgnoreCategory | null> {
    return (await this.ignored.refresh()).verdict(real, 'file');
  }

  /** `abs` relative to the workspace, with `/`, `.` for the root. */
  relative(abs: string): string {
    const rel = path.relative(this.workspace, abs);
    return rel === '' ? '.' : rel.split(path.sep).join('/');
  }

  /**
   * The real path of `input` (relative to the workspace, or absolute inside
   * it), symlinks followed, refused when it falls outside. For a write, the
   * target may not exist: its nearest existing ancestor is resolved instead,
   * and a dangling symlink is followed to where it would write.
   */
  async resolve(input: string, intent: Intent): Promise<string> {
    if (input.length === 0) throw new FsError('parse_error', 'path must be a non-empty string');
    if (input.includes('\0')) throw new FsError('parse_error', 'path must not contain NUL bytes');
    const absolute = path.resolve(this.workspace, input);
    if (!isInside(this.workspace, absolute)) {
      // An absolute path that reaches the workspace through a symlink is inside after all.
      if (path.isAbsolute(input)) {
        const real = await fs.realpath(absolute).catch(() => undefined);
        if (real !== undefined && isInside(this.workspace, real)) return this.resolve(real, intent);
      }
      throw new FsError('path_outside_workspace', `path escapes workspace: ${input}`);
    }
    let real: string;
    try {
      real = await fs.realpath(absolute);
    } catch (err) {
      if (errno(err) === 'ELOOP') throw new FsError('symlink_escape', `symlink loop for ${input}`);
      if (errno(err) !== 'ENOENT') throw asFsError(err);
      if (intent !== 'write') throw new FsError('path_not_found', `path does not exist: ${input}`);
      real = await this.resolveMissing(absolute, input);
    }
    if (!isInside(this.workspace, real)) {
      throw new FsError('symlink_escape', `symlink resolves outside workspace: ${input}`);
    }
    if (intent === 'write') this.assertWritable(real, input);
    return real;
  }

  /** Where a write to a path that does not exist yet would land. */
  private async resolveMissing(absolute: string, input: string): Promise<string> {
    // A dangling symlink writes where it points: follow it (bounded) to a path that does not exist.
    let cursor = absolute;
    for (let hop = 0; hop < 40; hop++) {
      let st: Stats;
      try {
        st = await fs.lstat(cursor);
      } catch (err) {
        if (errno(err) !== 'ENOENT' && errno(err) !== 'ENOTDIR') throw asFsError(err);
        return this.nearestAncestor(cursor, input);
      }
      if (!st.isSymbolicLink()) return this.nearestAncestor(cursor, input);
      const target = await fs.readlink(cursor);
      cursor = path.resolve(path.dirname(cursor), target);
    }
    throw new FsError('symlink_escape', `symlink chain too long for ${input}`);
  }

  private async nearestAncestor(absolute: string, input: string): Promise<string> {
    const tail: string[] = [];
    let current = absolute;
    for (;;) {
      try {
        const real = await fs.realpath(current);
        const st = await fs.stat(real);
        if (!st.isDirectory()) throw new FsError('parse_error', `a path component is not a directory: ${input}`);
        return path.join(real, ...tail);
      } catch (err) {
        if (err instanceof FsError) throw err;
        if (errno(err) !== 'ENOENT') throw asFsError(err);
      }
      const parent = path.dirname(current);
      if (parent === current) throw new FsError('path_not_found', `no existing ancestor for ${input}`);
      tail.unshift(path.basename(current));
      current = parent;
    }
  }

  private assertWritable(real: string, input: string): void {
    const dataDir = this.dataDir;
    if (isInside(dataDir, real)) {
      throw new FsError('permission_denied', `acpd's data directory is not writable: ${input}`);
    }
    const rel = path.relative(this.workspace, real).split(path.sep);
    // `.git` anywhere in the tree: a repository's internals (hooks, config) must not be planted over HTTP.
    if (rel.includes('.git')) throw new FsError('permission_denied', `.git internals are not writable: ${input}`);
  }

  /** The file's bytes, read once it is known to be a regular file (lstat after resolve: no FIFO ever opened). */
  private async readRegular(real: string, input: string, maxSize: number): Promise<{ buf: Buffer; st: Stats }> {
    const pre = await fs.lstat(real).catch((err: unknown) => {
      throw asFsError(err);
    });
    assertRegular(pre, input);
    if (pre.size > maxSize) {
      throw new FsError('file_too_large', `file of ${pre.size} bytes exceeds the read cap of ${maxSize} bytes`, {
        hint: 'use /file/bytes for byte windows',
      });
    }
    // O_NONBLOCK: should the file be swapped for a FIFO after the lstat, open does not hang.
    const fh = await fs.open(real, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const st = await fh.stat();
      assertRegular(st, input);
      if (st.ino !== pre.ino || st.dev !== pre.dev)
        throw new FsError('hash_mismatch', `file changed during read: ${input}`);
      const buf = await fh.readFile();
      return { buf, st };
    } finally {
      await fh.close();
    }
  }

  async readText(
    input: string,
    opts: { maxBytes?: number; line?: number; limit?: number; cursor?: string },
  ): Promise<TextRead> {
    if (opts.cursor !== undefined && opts.line !== undefined) {
      throw new FsError(
        'parse_error',
        'cursor and line are mutually exclusive; a cursor already encodes where to resume',
      );
    }
    const real = await this.resolve(input, 'read');
    const windowed =
      opts.cursor !== undefined || opts.line !== undefined || opts.limit !== undefined || opts.maxBytes !== undefined;
    const { buf, st } = await this.readRegular(real, input, windowed ? LIMITS.maxTextScanBytes : LIMITS.maxReadBytes);
    if (looksBinary(buf)) throw new FsError('binary_file', `binary file: ${input}`, { hint: 'use /file/bytes' });
    const bom = buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf;
    const bodyStart = bom ? 3 : 0;
    const text = buf.subarray(bodyStart).toString('utf8');
    const lineEnding = text.includes('\r\n') ? 'crlf' : 'lf';
    const maxOut = opts.maxBytes ?? LIMITS.maxReadBytes;

    let startByte = bodyStart;
    if (opts.cursor !== undefined) {
      const c = decodeCursor(opts.cursor);
      if (c.dev !== String(st.dev) || c.ino !== String(st.ino) || st.size < c.size) {
        throw new FsError('hash_mismatch', `cursor no longer matches the file it was issued for: ${input}`, {
          hint: 're-read the file from the beginning',
        });
      }
      if (c.off > buf.length) throw new FsError('parse_error', 'cursor points past the end of the file');
      startByte = c.off;
    }
    // The lines from startByte on; `line` skips lines first.
    let rest = buf.subarray(startByte);
    let lineOffset = 0;
    if (opts.line !== undefined) {
      for (let skipped = 0; skipped < opts.line - 1; skipped++) {
        const nl = rest.indexOf(0x0a);
        if (nl < 0) {
          rest = rest.subarray(rest.length);
          break;
        }
        rest = rest.subarray(nl + 1);
        lineOffset++;
      }
      startByte = buf.length - rest.length;
    }
    let taken = rest;
    let limitCut = false;
    if (opts.limit !== undefined) {
      let end = 0;
      for (let n = 0; n < opts.limit; n++) {
        const nl = rest.indexOf(0x0a, end);
        if (nl < 0) {
          end = rest.length;
          break;
        }
        end = nl + 1;
      }
      // The last line's newline is the separator to the next page, not content.
      limitCut = end < rest.length;
      taken = rest.subarray(0, limitCut && end > 0 ? end - 1 : end);
    }
    const out = utf8Prefix(taken, maxOut);
    const byteCut = out.length < taken.length;
    const content = out.toString('utf8');
    const hasMore = byteCut || limitCut;
    const next = startByte + out.length + (byteCut ? 0 : 1);
    const paged = opts.cursor !== undefined;
    return {
      kind: 'file',
      path: this.relative(real),
      content,
      encoding: 'utf-8',
      bom,
      lineEnding,
      sizeBytes: buf.length,
      returnedBytes: Buffer.byteLength(content, 'utf8'),
      // As the qwen daemon answers: a cursor page is a window (truncated, no hash, no line count).
      truncated: paged || hasMore || (opts.line !== undefined && lineOffset < opts.line - 1),
      ...(paged ? {} : { hash: hashOf(buf) }),
      matchedIgnore: await this.fileIgnore(real),
      originalLineCount: paged ? null : text.split('\n').length,
      // Pages follow lines: a read cut by maxBytes names no cursor (its end may split a line).
      nextCursor:
        hasMore && !byteCut && next < buf.length
          ? encodeCursor({ off: next, size: buf.length, dev: String(st.dev), ino: String(st.ino) })
          : null,
      hasMore,
    };
  }

  async readBytes(input: string, offset: number, maxBytes: number) {
    const real = await this.resolve(input, 'read');
    const pre = await fs.lstat(real);
    assertRegular(pre, input);
    const fh = await fs.open(real, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const st = await fh.stat();
      assertRegular(st, input);
      const want = Math.max(0, Math.min(maxBytes, st.size - offset));
      const buf = Buffer.alloc(want);
      const { bytesRead } = want > 0 ? await fh.read(buf, 0, want, offset) : { bytesRead: 0 };
      const got = buf.subarray(0, bytesRead);
      const whole = offset === 0 && got.length === st.size;
      return {
        kind: 'file_bytes' as const,
        path: this.relative(real),
        offset,
        sizeBytes: st.size,
        returnedBytes: got.length,
        truncated: !whole,
        contentBase64: got.toString('base64'),
        ...(whole ? { hash: hashOf(got) } : {}),
      };
    } finally {
      await fh.close();
    }
  }

  async stat(input: string) {
    const real = await this.resolve(input, 'read');
    const st = await fs.lstat(real);
    return {
      kind: 'stat' as const,
      path: this.relative(real),
      type: kindOf(st),
      sizeBytes: st.size,
      modifiedMs: st.mtimeMs,
    };
  }

  async list(input: string, includeIgnored = false) {
    const real = await this.resolve(input, 'read');
    const st = await fs.stat(real);
    if (!st.isDirectory()) throw new FsError('parse_error', `path is not a directory: ${input}`);
    const rules = await this.ignored.refresh();
    const entries: { name: string; kind: ReturnType<typeof kindOf>; ignored: boolean }[] = [];
    let truncated = false;
    const dir = await fs.opendir(real);
    for await (const d of dir) {
      const kind = kindOf(d);
      const ignored = rules.verdict(path.join(real, d.name), kind === 'directory' ? 'directory' : 'file') !== null;
      if (ignored && !includeIgnored) continue;
      if (entries.length >= LIMITS.maxListEntries) {
        truncated = true;
        break;
      }
      entries.push({ name: d.name, kind, ignored });
    }
    return { kind: 'list' as const, path: this.relative(real), entries, truncated, matchedIgnore: null };
  }

  async glob(pattern: string, cwd: string | undefined, maxResults: number, includeIgnored = false) {
    if (pattern.split(/[\\/]/).includes('..')) {
      throw new FsError('parse_error', `glob pattern may not contain '..' segments: ${pattern}`);
    }
    if (path.isAbsolute(pattern))
      throw new FsError('parse_error', `glob pattern must be workspace-relative: ${pattern}`);
    const root = cwd === undefined ? this.workspace : await this.resolve(cwd, 'read');
    const rules = await this.ignored.refresh();
    const started = performance.now();
    const matches: string[] = [];
    let truncated = false;
    // Symlinked directories are not walked; each hit is still resolved and kept only when inside.
    const hits = await glob(pattern, {
      cwd: root,
      dot: true,
      onlyFiles: false,
      followSymbolicLinks: false,
      expandDirectories: false,
      ignore: ['**/node_modules/**', '**/.git/**'],
    });
    for (const hit of hits.sort()) {
      let real: string;
      try {
        real = await fs.realpath(path.resolve(root, hit));
      } catch {
        continue;
      }
      if (!isInside(this.workspace, real)) continue;
      if (!includeIgnored) {
        const isDir = (await fs.lstat(real).catch(() => undefined))?.isDirectory() === true;
        if (rules.verdict(real, isDir ? 'directory' : 'file') !== null) continue;
      }
      if (matches.length >= maxResults) {
        truncated = true;
        break;
      }
      matches.push(this.relative(real));
    }
    return {
      kind: 'glob' as const,
      pattern,
      cwd: cwd ?? '',
      matches,
      count: matches.length,
      truncated,
      durationMs: Math.round(performance.now() - started),
    };
  }

  /** The current text and hash of a file a write replaces, or a 409 when the hash is stale. */
  private async current(real: string, input: string, expectedHash: string | undefined) {
    const { buf } = await this.readRegular(real, input, LIMITS.maxWriteBytes);
    const hash = hashOf(buf);
    if (expectedHash !== undefined && hash !== expectedHash) {
      throw new FsError('hash_mismatch', `expected ${expectedHash}, found ${hash}`, {
        hint: 're-read the file and retry with the latest hash',
        currentHash: hash,
      });
    }
    return buf;
  }

  /** Atomic: a temp file beside the target, then rename; `exclusive` refuses an existing target. */
  private async publish(real: string, data: Buffer, exclusive: boolean): Promise<void> {
    await fs.mkdir(path.dirname(real), { recursive: true });
    let mode = 0o644;
    try {
      const st = await fs.lstat(real);
      if (exclusive) throw new FsError('file_already_exists', `file already exists: ${this.relative(real)}`);
      mode = st.mode & 0o7777;
    } catch (err) {
      if (err instanceof FsError) throw err;
      if (errno(err) !== 'ENOENT') throw asFsError(err);
    }
    const tmp = path.join(path.dirname(real), `.${path.basename(real)}.${randomUUID()}.tmp`);
    try {
      await fs.writeFile(tmp, data, { flag: 'wx', mode });
      if (exclusive) {
        // link fails on an existing name, where rename would replace it.
        await fs.link(tmp, real).catch((err: unknown) => {
          if (errno(err) === 'EEXIST')
            throw new FsError('file_already_exists', `file already exists: ${this.relative(real)}`);
          throw err;
        });
        await fs.unlink(tmp);
      } else {
        await fs.rename(tmp, real);
      }
    } catch (err) {
      await fs.unlink(tmp).catch(() => {});
      throw asFsError(err);
    }
  }

  private encodeText(content: string, bom: boolean, lineEnding: 'crlf' | 'lf'): Buffer {
    const body = lineEnding === 'crlf' ? content.replace(/\r?\n/g, '\r\n') : content;
    const bytes = Buffer.from(body, 'utf8');
    const out = bom ? Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytes]) : bytes;
    if (out.length > LIMITS.maxWriteBytes) {
      throw new FsError(
        'file_too_large',
        `payload of ${out.length} bytes exceeds the write limit of ${LIMITS.maxWriteBytes} bytes`,
      );
    }
    return out;
  }

  async write(req: {
    path: string;
    content: string;
    mode: 'create' | 'replace';
    expectedHash?: string;
    bom?: boolean;
    lineEnding?: 'crlf' | 'lf';
  }) {
    const real = await this.resolve(req.path, 'write');
    let bom = req.bom ?? false;
    let lineEnding = req.lineEnding ?? 'lf';
    if (req.mode === 'replace') {
      const old = await this.current(real, req.path, req.expectedHash);
      bom = req.bom ?? (old[0] === 0xef && old[1] === 0xbb && old[2] === 0xbf);
      lineEnding = req.lineEnding ?? (old.includes('\r\n') ? 'crlf' : 'lf');
    }
    const data = this.encodeText(req.content, bom, lineEnding);
    await this.publish(real, data, req.mode === 'create');
    return {
      kind: 'file_write' as const,
      path: this.relative(real),
      mode: req.mode,
      created: req.mode === 'create',
      sizeBytes: data.length,
      hash: hashOf(data),
      encoding: 'utf-8',
      bom,
      lineEnding,
      matchedIgnore: await this.fileIgnore(real),
    };
  }

  async edit(req: { path: string; oldText: string; newText: string; expectedHash: string }) {
    const real = await this.resolve(req.path, 'write');
    const old = await this.current(real, req.path, req.expectedHash);
    if (looksBinary(old)) throw new FsError('binary_file', `binary file: ${req.path}`);
    const bom = old[0] === 0xef && old[1] === 0xbb && old[2] === 0xbf;
    const text = old.subarray(bom ? 3 : 0).toString('utf8');
    const lineEnding = text.includes('\r\n') ? 'crlf' : 'lf';
    if (req.oldText.length === 0) throw new FsError('parse_error', '`oldText` must not be empty');
    const at = text.indexOf(req.oldText);
    if (at < 0) throw new FsError('text_not_found', `oldText not found in ${req.path}`);
    if (text.indexOf(req.oldText, at + 1) >= 0) {
      throw new FsError('ambiguous_text_match', `oldText occurs more than once in ${req.path}`, {
        hint: 'include more context so that it matches once',
      });
    }
    const next = text.slice(0, at) + req.newText + text.slice(at + req.oldText.length);
    const body = Buffer.from(next, 'utf8');
    const data = bom ? Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), body]) : body;
    if (data.length > LIMITS.maxWriteBytes)
      throw new FsError('file_too_large', 'the edited file exceeds the write limit');
    await this.publish(real, data, false);
    return {
      kind: 'file_edit' as const,
      path: this.relative(real),
      replacements: 1 as const,
      sizeBytes: data.length,
      hash: hashOf(data),
      encoding: 'utf-8',
      bom,
      lineEnding,
      matchedIgnore: await this.fileIgnore(real),
    };
  }

  /** Never overwrites: an occupied name becomes `name (1).ext`, `name (2).ext`, … */
  async upload(input: string, data: Buffer) {
    const base = path.basename(input);
    if (input.endsWith('/') || base === '' || base === '.' || base === '..') {
      throw new FsError('parse_error', '`path` must name a file');
    }
    const dir = path.dirname(input);
    const dot = base.lastIndexOf('.');
    const [stem, ext] = dot > 0 ? [base.slice(0, dot), base.slice(dot)] : [base, ''];
    for (let n = 0; n < 1000; n++) {
      const name = n === 0 ? base : `${stem} (${n})${ext}`;
      const real = await this.resolve(path.join(dir, name), 'write');
      try {
        await this.publish(real, data, true);
      } catch (err) {
        if (err instanceof FsError && err.kind === 'file_already_exists') continue;
        throw err;
      }
      return { kind: 'file_upload' as const, path: this.relative(real), sizeBytes: data.length, hash: hashOf(data) };
    }
    throw new FsError('file_already_exists', `could not find a free name for ${JSON.stringify(base)}`);
  }
}
