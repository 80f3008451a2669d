// Small shared helpers.
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export interface WorkDir {
  root: string;
  workspace: string;
  dataDir: string;
  logDir: string;
}

/** A throw-away directory with a workspace, a data dir and a log dir. */
export function workDir(prefix: string): WorkDir {
  const root = mkdtempSync(join(tmpdir(), `acpd-bench-${prefix}-`));
  const dirs = { root, workspace: join(root, 'ws'), dataDir: join(root, 'data'), logDir: join(root, 'logs') };
  for (const d of [dirs.workspace, dirs.dataDir, dirs.logDir]) mkdirSync(d, { recursive: true });
  return dirs;
}

export function log(line: string): void {
  process.stderr.write(`${line}\n`);
}
