/**
 * The agent's file access (`fs/read_text_file`, `fs/write_text_file`), served
 * by the daemon and confined to the bound workspace: a path whose real
 * location (symlinks followed) falls outside it is refused.
 */
import { randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type {
  ReadTextFileRequest,
  ReadTextFileResponse,
  WriteTextFileRequest,
  WriteTextFileResponse,
} from '@agentclientprotocol/sdk';
import { isInside } from './workspace.js';

const READ_SIZE_CAP = 100 * 1024 * 1024;

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

function describeKind(st: import('node:fs').Stats): string {
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'character device';
  if (st.isBlockDevice()) return 'block device';
  if (st.isFIFO()) return 'named pipe (FIFO)';
  if (st.isSocket()) return 'socket';
  return 'non-regular file';
}

/**
 * A client that serves a session's files itself (an ACP client over `/acp`
 * that declared the `fs` capabilities: an editor, with its unsaved buffers).
 */
export interface FsClient {
  readTextFile?(req: ReadTextFileRequest): Promise<ReadTextFileResponse>;
  writeTextFile?(req: WriteTextFileRequest): Promise<WriteTextFileResponse>;
}

export class FsProxy {
  /** Per session, the client that serves its files now, if any. */
  private readonly clients = new Map<string, FsClient>();

  constructor(private readonly workspace: string) {}

  /**
   * Lets `client` serve the session's files (the workspace confinement still
   * applies: a path outside it never reaches the client); returns the undo,
   * which does nothing once another client took over.
   */
  serveBy(sessionId: string, client: FsClient): () => void {
    this.clients.set(sessionId, client);
    return () => {
      if (this.clients.get(sessionId) === client) this.clients.delete(sessionId);
    };
  }

  /** The real path `p` refers to, following symlinks, for a file that may not exist yet. */
  private async realTarget(p: string): Promise<string> {
    if (!path.isAbsolute(p)) throw new Error(`path must be absolute: ${JSON.stringify(p)}`);
    try {
      return await fs.realpath(p);
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
    }
    // A dangling symlink: write where it points.
    try {
      const link = await fs.readlink(p);
      return this.realTarget(path.resolve(path.dirname(p), link));
    } catch (err) {
      if (errno(err) !== 'ENOENT' && errno(err) !== 'EINVAL') throw err;
    }
    // A new file: its directory must resolve inside the workspace.
    const dir = await fs.realpath(path.dirname(p));
    return path.join(dir, path.basename(p));
  }

  private async confined(p: string): Promise<string> {
    const target = await this.realTarget(p);
    if (!isInside(this.workspace, target)) {
      throw new Error(`${JSON.stringify(p)} is outside the workspace ${JSON.stringify(this.workspace)}`);
    }
    return target;
  }

  async readTextFile(req: ReadTextFileRequest): Promise<ReadTextFileResponse> {
    if (req.limit !== undefined && req.limit !== null && req.limit <= 0) return { content: '' };
    const target = await this.confined(req.path);
    const client = this.clients.get(req.sessionId);
    if (client?.readTextFile) return client.readTextFile(req);
    const st = await fs.stat(target);
    if (!st.isFile()) {
      throw new Error(`readTextFile: ${req.path} is not a regular file (reported as ${describeKind(st)}).`);
    }
    if (st.size > READ_SIZE_CAP) {
      throw new Error(`readTextFile: ${req.path} is ${st.size} bytes, exceeds the ${READ_SIZE_CAP}-byte daemon cap.`);
    }
    const content = await fs.readFile(target, 'utf8');
    const hasLine = req.line !== undefined && req.line !== null;
    const hasLimit = req.limit !== undefined && req.limit !== null;
    if (!hasLine && !hasLimit) return { content };
    const lines = content.split('\n');
    const start = Math.max(0, (req.line ?? 1) - 1);
    const end = hasLimit ? start + (req.limit as number) : lines.length;
    return { content: lines.slice(start, end).join('\n') };
  }

  /** Atomic: a temp file beside the target, then rename; an existing file keeps its mode and owner. */
  async writeTextFile(req: WriteTextFileRequest): Promise<WriteTextFileResponse> {
    const target = await this.confined(req.path);
    const client = this.clients.get(req.sessionId);
    if (client?.writeTextFile) return client.writeTextFile(req);
    let mode = 0o600;
    let owner: { uid: number; gid: number } | undefined;
    try {
      const st = await fs.stat(target);
      mode = st.mode & 0o7777;
      owner = { uid: st.uid, gid: st.gid };
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
    }
    const tmp = `${target}.${process.pid}.${Date.now()}.${randomUUID()}.tmp`;
    try {
      await fs.writeFile(tmp, req.content, { encoding: 'utf8', flag: 'wx', mode });
      await fs.chmod(tmp, mode).catch(() => {});
      if (owner) await fs.chown(tmp, owner.uid, owner.gid).catch(() => {});
      await fs.rename(tmp, target);
    } catch (err) {
      await fs.unlink(tmp).catch(() => {});
      throw err;
    }
    return {};
  }
}
