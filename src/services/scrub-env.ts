/**
 * Removing a secret from this process's environment, as far as Linux allows.
 *
 * Deleting the variable from process.env (unsetenv) is not enough: another
 * process of the same user reads /proc/<pid>/environ, which the kernel serves
 * from the environment block the process was started with, and unsetenv never
 * touches that block. So on Linux the value is also overwritten in place:
 * /proc/self/stat gives the block's bounds (env_start and env_end, fields 50
 * and 51 of proc(5), counted from 1) and /proc/self/mem lets the process
 * write its own memory. The entry keeps its name and length, its value becomes
 * asterisks, so the block still reads as well-formed NAME=VALUE lines.
 */
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';

type ScrubOutcome =
  | { scrubbed: true }
  /** The variable is gone from `env`, but its value may still show in /proc/<pid>/environ. */
  | { scrubbed: false; reason: string };

/** 1-based field numbers of proc(5)'s /proc/<pid>/stat. */
const ENV_START_FIELD = 50;
const ENV_END_FIELD = 51;
/** The first field after the parenthesised command name is field 3 (state). */
const FIRST_FIELD_AFTER_COMM = 3;
/** A sanity bound on the block's size; Linux caps argv + environ far below this by default. */
const MAX_BLOCK_BYTES = 64 * 1024 * 1024;
const FILL = 0x2a; // '*'

/** [env_start, env_end) of this process, from /proc/self/stat. */
function environmentBlock(): { start: number; end: number } {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  // The command name may contain spaces and parentheses: count after the last ')'.
  const fields = stat
    .slice(stat.lastIndexOf(')') + 2)
    .trim()
    .split(' ');
  const start = Number(fields[ENV_START_FIELD - FIRST_FIELD_AFTER_COMM]);
  const end = Number(fields[ENV_END_FIELD - FIRST_FIELD_AFTER_COMM]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start <= 0 || end <= start) {
    throw new Error('no usable env_start/env_end in /proc/self/stat');
  }
  if (end - start > MAX_BLOCK_BYTES) throw new Error(`environment block of ${end - start} bytes`);
  return { start, end };
}

/**
 * Overwrites the value of every `name=` entry of the block with asterisks;
 * returns how many entries there were.
 */
function overwriteInBlock(name: string): number {
  const { start, end } = environmentBlock();
  const fd = openSync('/proc/self/mem', 'r+');
  try {
    const block = Buffer.alloc(end - start);
    const read = readSync(fd, block, 0, block.length, start);
    const prefix = Buffer.from(`${name}=`);
    let found = 0;
    for (let at = block.indexOf(prefix); at !== -1 && at < read; at = block.indexOf(prefix, at + 1)) {
      // Only at the start of an entry: not inside another variable's value.
      if (at > 0 && block[at - 1] !== 0) continue;
      const valueStart = at + prefix.length;
      const terminator = block.indexOf(0, valueStart);
      const valueEnd = terminator === -1 || terminator > read ? read : terminator;
      if (valueEnd > valueStart) {
        block.fill(FILL, valueStart, valueEnd);
        writeSync(fd, block, valueStart, valueEnd - valueStart, start + valueStart);
      }
      found++;
    }
    return found;
  } finally {
    closeSync(fd);
  }
}

/**
 * Deletes `name` from `env` and, on Linux, from the environment block that
 * /proc/<pid>/environ shows. Never throws: an outcome that is not `scrubbed`
 * tells why, so the caller can warn.
 */
export function scrubEnvironment(name: string, env: NodeJS.ProcessEnv, platform = process.platform): ScrubOutcome {
  const value = env[name];
  delete env[name];
  if (value === undefined) return { scrubbed: true };
  if (platform !== 'linux') return { scrubbed: false, reason: `cannot overwrite the environment on ${platform}` };
  try {
    overwriteInBlock(name);
    return { scrubbed: true };
  } catch (err) {
    return { scrubbed: false, reason: err instanceof Error ? err.message : String(err) };
  }
}
